"""Admission latency with the fleet-wide Redis limit against the local limit alone.

Both managers run in the same Trio run, interleaved round by round, admitting
sessions one at a time; the ratio of the median admission latencies is printed.
Uses ``--url``, else ``$TRIO_SESSIONS_REDIS_URL``, else starts a throwaway
``redis-server`` on a free loopback port; with none available it says so and
exits 0, so ``nox -s bench`` still passes on machines without Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

import trio_sessions as ts

try:
    from trio_sessions.redis import RedisSessionLimit
except ImportError:  # pragma: no cover - coredis is in the "redis" extra
    RedisSessionLimit = None  # type: ignore[assignment,misc]


@contextmanager
def throwaway_server() -> Iterator[str | None]:
    """Yield the URL of a fresh ``redis-server``, or None if there is no binary."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        argv = [binary, "--bind", "127.0.0.1", "--port", str(port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", directory]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), 0.5) as conn:
                        conn.sendall(b"PING\r\n")
                        if conn.recv(16).startswith(b"+PONG"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {port}")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


async def admit(manager: ts.SessionManager, count: int) -> list[float]:
    """Admit ``count`` sessions one by one; return each admission's seconds."""
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        started = clock()
        session = await manager.start_session(trio.sleep, 0)
        samples.append(clock() - started)
        await session.wait()
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean_us": statistics.fmean(ordered) * 1e6,
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
    }


async def bench(url: str, rounds: int, count: int) -> dict[str, Any]:
    guard = RedisSessionLimit.from_url(
        url, limit=1_000, key=f"bench:{uuid.uuid4().hex}", ttl=10
    )
    local: list[float] = []
    fleet: list[float] = []
    async with (
        ts.open_session_manager(max_sessions=1_000) as local_manager,
        ts.open_session_manager(max_sessions=1_000, guard=guard) as fleet_manager,
    ):
        await admit(fleet_manager, 50)  # warm up: connection, script cache
        for _ in range(rounds):
            local += await admit(local_manager, count)
            fleet += await admit(fleet_manager, count)
    result: dict[str, Any] = {"local": summary(local), "redis": summary(fleet)}
    result["ratio_p50"] = result["redis"]["p50_us"] / result["local"]["p50_us"]
    result["ratio_mean"] = result["redis"]["mean_us"] / result["local"]["mean_us"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("TRIO_SESSIONS_REDIS_URL"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=1_000, help="per round")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if RedisSessionLimit is None:
        print("bench_redis: skipped, coredis is not installed (trio-sessions[redis])")
        return 0
    with throwaway_server() as started:
        url = args.url or started
        if url is None:
            print("bench_redis: skipped, no Redis (give --url or install redis-server)")
            return 0
        result = trio.run(bench, url, args.rounds, args.count)
    for name in ("local", "redis"):
        row = result[name]
        print(
            f"admission, {name:>5}: p50 {row['p50_us']:8.1f} us   "
            f"p99 {row['p99_us']:8.1f} us   mean {row['mean_us']:8.1f} us"
        )
    print(
        f"admission latency ratio, Redis limit / local only: "
        f"{result['ratio_p50']:.1f}x (p50), {result['ratio_mean']:.1f}x (mean)"
    )
    if args.json:
        settings = {"rounds": args.rounds, "count": args.count}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"settings": settings, **result}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
