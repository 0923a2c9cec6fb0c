"""A fleet member for tests/test_redis.py: one process sharing a Redis session limit.

``attempts`` makes N admission attempts with short work once told "go" on stdin
and prints a JSON summary; ``hold`` takes N leases, says "ready" and keeps them
until it is killed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys

import trio

import trio_sessions as ts
from trio_sessions.redis import RedisSessionLimit


async def work() -> None:
    await trio.sleep(random.uniform(0.05, 0.15))


async def attempts(guard: RedisSessionLimit, count: int) -> None:
    admitted = 0
    rejected: dict[str, int] = {}

    async def attempt() -> None:
        nonlocal admitted
        try:
            await manager.run(work)
        except ts.RejectedError as exc:
            rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
        else:
            admitted += 1

    async with ts.open_session_manager(
        max_sessions=30, max_waiting=10, wait_timeout=0.1, guard=guard
    ) as manager:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(attempt)
                await trio.sleep(0.002)
        stats = manager.statistics()
    print(
        json.dumps(
            {
                "admitted": admitted,
                "rejected": rejected,
                "succeeded": stats.succeeded,
                "rejections": dict(stats.rejections),
            }
        ),
        flush=True,
    )


async def hold(guard: RedisSessionLimit, count: int) -> None:
    async with ts.open_session_manager(max_sessions=count, guard=guard) as manager:
        for _ in range(count):
            await manager.start_session(trio.sleep_forever, timeout=None)
        print("ready", flush=True)
        await trio.sleep_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["attempts", "hold"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()
    guard = RedisSessionLimit.from_url(
        args.url, limit=args.limit, key=args.key, ttl=args.ttl, op_timeout=0.5
    )
    run = attempts if args.mode == "attempts" else hold
    trio.run(run, guard, args.count)


if __name__ == "__main__":
    main()
