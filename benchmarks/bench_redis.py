"""The fleet-wide Redis limit against its floor: one bare EVALSHA of its own script.

Measures, in one Trio run and interleaved round by round, admission through the
local limit alone and through :class:`RedisSessionLimit`, next to one bare
coredis ``EVALSHA`` of the library's acquire script and one bare ``PING``:
latency (p50/p99) one caller at a time, then latency and throughput with
``--callers`` (50) concurrent callers. It prints the ratios that matter: guard
over EVALSHA sequential p50 (one round trip, no more), guard over individual
EVALSHA throughput with 50 callers (coalesced acquires), and their p99s.

Uses ``--url``, else ``$TRIO_SESSIONS_REDIS_URL``, else starts a throwaway
``redis-server`` on a free loopback port; with none available it says so and
exits 0, so ``nox -s bench`` still passes on machines without Redis.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

import trio_sessions as ts

try:
    import coredis

    from trio_sessions.redis import RedisSessionLimit
    from trio_sessions.redis._scripts import ACQUIRE
except ImportError:  # pragma: no cover - coredis is in the "redis" extra
    RedisSessionLimit = None  # type: ignore[assignment,misc]

# One operation of a caller: its argument is the caller's own state.
Op = Callable[[dict[str, Any]], Awaitable[None]]
NAMES = ("local only", "guard", "EVALSHA", "PING")


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


def admission(manager: ts.SessionManager) -> Op:
    """Admit one session (timed), then let it complete (not timed)."""

    async def admit(state: dict[str, Any]) -> None:
        state["session"] = await manager.start_session(trio.sleep, 0)

    return admit


def bare_evalsha(client: Any, key: str, ttl_ms: int) -> Op:
    """The guard's steady-state call: add this caller's member, remove its last."""
    sha = hashlib.sha1(ACQUIRE.encode()).hexdigest()
    members = itertools.count()

    async def evalsha(state: dict[str, Any]) -> None:
        member = f"bare:{next(members)}"
        previous = state.get("member")
        released = [previous] if previous else []
        args = [1_000_000, ttl_ms, len(released), *released, member]
        await client.evalsha(sha, keys=[key], args=args)
        state["member"] = member

    return evalsha


def bare_ping(client: Any) -> Op:
    async def ping(state: dict[str, Any]) -> None:
        await client.ping()

    return ping


async def caller(op: Op, count: int, samples: list[float]) -> None:
    clock = time.perf_counter
    state: dict[str, Any] = {}
    for _ in range(count):
        started = clock()
        await op(state)
        samples.append(clock() - started)
        session = state.pop("session", None)
        if session is not None:
            await session.wait()


async def run_phase(op: Op, callers: int, count: int) -> tuple[list[float], float]:
    """``callers`` callers, ``count`` operations each; samples and wall seconds."""
    samples: list[float] = []
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller, op, count, samples)
    return samples, time.perf_counter() - started


def summary(samples: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": ordered[len(ordered) // 2] * 1e6,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6,
        "per_second": len(ordered) / seconds,
    }


async def bench(url: str, rounds: int, count: int, callers: int) -> dict[str, Any]:
    ttl = 10.0
    guard = RedisSessionLimit.from_url(
        url, limit=1_000_000, key=f"bench:{uuid.uuid4().hex}", ttl=ttl
    )
    bare = coredis.Redis.from_url(url, connect_timeout=1, stream_timeout=1)
    sequential: dict[str, tuple[list[float], float]] = {n: ([], 0.0) for n in NAMES}
    concurrent: dict[str, tuple[list[float], float]] = {n: ([], 0.0) for n in NAMES}
    async with (
        bare,
        ts.open_session_manager(max_sessions=1_000) as local_manager,
        ts.open_session_manager(max_sessions=1_000, guard=guard) as fleet_manager,
    ):
        ops = {
            "local only": admission(local_manager),
            "guard": admission(fleet_manager),
            "EVALSHA": bare_evalsha(bare, f"bench:{uuid.uuid4().hex}", int(ttl * 1e3)),
            "PING": bare_ping(bare),
        }
        for op in ops.values():  # warm up: connections, script cache
            await run_phase(op, callers, 5)
        before = guard.statistics()
        for _ in range(rounds):
            for phases, width in ((sequential, 1), (concurrent, callers)):
                for name, op in ops.items():
                    samples, seconds = await run_phase(op, width, count // width)
                    kept, total = phases[name]
                    phases[name] = (kept + samples, total + seconds)
        after = guard.statistics()
    result: dict[str, Any] = {
        "sequential": {n: summary(*sequential[n]) for n in NAMES},
        "concurrent": {n: summary(*concurrent[n]) for n in NAMES},
    }
    seq, con = result["sequential"], result["concurrent"]
    admitted = after.acquired - before.acquired
    result["ratios"] = {
        "guard_over_evalsha_seq_p50": seq["guard"]["p50_us"] / seq["EVALSHA"]["p50_us"],
        "guard_over_local_seq_p50": seq["guard"]["p50_us"]
        / seq["local only"]["p50_us"],
        "guard_over_evalsha_con_throughput": (
            con["guard"]["per_second"] / con["EVALSHA"]["per_second"]
        ),
        "guard_over_evalsha_con_p99": con["guard"]["p99_us"] / con["EVALSHA"]["p99_us"],
    }
    result["guard_calls"] = {
        "admissions": admitted,
        "acquire_calls": after.acquire_calls - before.acquire_calls,
        "release_calls": after.release_calls - before.release_calls,
    }
    return result


def report(result: dict[str, Any], callers: int) -> None:
    together = f"concurrent ({callers} callers)"
    print(f"{'':>12}  {'sequential (1 caller)':^30}  {together:^30}")
    print(f"{'':>12}  " + f"{'p50 us':>9} {'p99 us':>9} {'per s':>10}  " * 2)
    for name in NAMES:
        cells = ""
        for phase in ("sequential", "concurrent"):
            row = result[phase][name]
            cells += (
                f"{row['p50_us']:9.1f} {row['p99_us']:9.1f} {row['per_second']:10.0f}  "
            )
        print(f"{name:>12}  {cells}")
    ratios = result["ratios"]
    calls = result["guard_calls"]
    print(
        f"guard / EVALSHA, sequential p50:          "
        f"{ratios['guard_over_evalsha_seq_p50']:.2f}x  (target <= 1.2)"
    )
    print(
        f"guard / local only, sequential p50:       "
        f"{ratios['guard_over_local_seq_p50']:.1f}x"
    )
    print(
        f"guard / EVALSHA, {callers} callers, per second: "
        f"{ratios['guard_over_evalsha_con_throughput']:.2f}x  (target >= 2)"
    )
    print(
        f"guard / EVALSHA, {callers} callers, p99:        "
        f"{ratios['guard_over_evalsha_con_p99']:.2f}x"
    )
    print(
        f"guard calls: {calls['acquire_calls']} acquires and "
        f"{calls['release_calls']} lone releases for {calls['admissions']} admissions"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=os.environ.get("TRIO_SESSIONS_REDIS_URL"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=1_000, help="per round, phase")
    parser.add_argument("--callers", type=int, default=50, help="concurrent callers")
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
        result = trio.run(bench, url, args.rounds, args.count, args.callers)
    report(result, args.callers)
    if args.json:
        settings = {"rounds": args.rounds, "count": args.count, "callers": args.callers}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"settings": settings, **result}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
