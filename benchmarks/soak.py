"""The soak: a million sessions of mixed outcomes through one manager, memory watched.

``python benchmarks/soak.py [--sessions N]`` (or ``nox -s soak``) runs rounds of
successes, errors, timeouts, swallowed timeouts, cancellations, queued callers and
refusals under a MockClock, checks every counter exactly, and prints the bytes
tracemalloc sees live after warm-up and at the end: they must not grow.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
import tracemalloc
from typing import Any

import attrs
import trio
import trio.testing

import trio_sessions as ts

MAX_SESSIONS = 50
MAX_WAITING = 4
META = {"client": "soak", "route": "/ünïcode"}
BIG_META = {"blob": "x" * 200}
#: Bytes the live total may grow by after warm-up before the soak fails: a
#: leak of even one small object per session would exceed it many times over.
GROWTH_LIMIT = 16 * 1024


@attrs.frozen
class Mix:
    """What one round admits, per kind.

    The first wave fills every slot; once its instant sessions are gone a
    second wave refills them, so the queued callers always find the manager
    full and really wait (trio runs tasks woken together in varying order).
    """

    immediate: int = 10  # returns before its first checkpoint
    cancel_early: int = 4  # cancelled before its first step
    succeed: int = 10  # returns after 1 ms
    fail: int = 8  # raises after 1 ms
    timeout: int = 8  # hits its 2 ms deadline
    swallow: int = 6  # swallows its deadline's Cancelled and returns
    cancel_late: int = 4  # cancelled 1 ms into its run
    refill: int = 14  # second wave: returns after 1 ms
    queued: int = MAX_WAITING  # waits 1 ms for a slot, then returns at once
    over_capacity: int = 2  # refused: CapacityError
    over_metadata: int = 2  # refused: MetadataError

    @property
    def first_wave(self) -> int:
        return (
            self.immediate
            + self.cancel_early
            + self.succeed
            + self.fail
            + self.timeout
            + self.swallow
            + self.cancel_late
        )

    @property
    def admitted(self) -> int:
        return self.first_wave + self.refill + self.queued


MIX = Mix()
assert MIX.first_wave == MAX_SESSIONS, "the first wave must fill every slot"
assert MIX.refill == MIX.immediate + MIX.cancel_early, "the refill must too"


@attrs.frozen
class SoakResult:
    """Figures of one soak run."""

    sessions: int
    rounds: int
    warmup_rounds: int
    bytes_after_warmup: int
    bytes_at_end: int
    peak_bytes: int
    seconds: float
    statistics: ts.SessionStatistics

    @property
    def growth(self) -> int:
        return self.bytes_at_end - self.bytes_after_warmup


async def immediate() -> str:
    return "ok"


async def succeed() -> str:
    await trio.sleep(0.001)
    return "ok"


async def fail() -> None:
    await trio.sleep(0.001)
    raise ValueError("soak failure")


async def sleep_long() -> None:
    # No deadline of its own: a cancelled trio.sleep(1) would leave a stale
    # entry in trio's deadline heap for a simulated second, blurring the figures.
    await trio.sleep_forever()


async def swallow() -> str:
    try:
        await trio.sleep_forever()
    except trio.Cancelled:
        return "pretended to finish"
    raise AssertionError("the deadline did not fire")  # pragma: no cover


async def one_round(manager: ts.SessionManager) -> None:
    """Admit one round's mix and return once every session of it completed."""
    start = manager.start_session_nowait
    for _ in range(MIX.over_metadata):
        try:
            start(immediate, metadata=BIG_META)
        except ts.MetadataError:
            pass
        else:  # pragma: no cover
            raise AssertionError("oversized metadata was admitted")
    for _ in range(MIX.immediate):
        start(immediate, metadata=META)
    for _ in range(MIX.cancel_early):
        start(sleep_long, metadata=META).cancel()
    for _ in range(MIX.succeed):
        start(succeed, metadata=META)
    for _ in range(MIX.fail):
        start(fail, metadata=META)
    for _ in range(MIX.timeout):
        start(sleep_long, metadata=META, timeout=0.002)
    for _ in range(MIX.swallow):
        start(swallow, metadata=META, timeout=0.002)
    late = [start(sleep_long, metadata=META) for _ in range(MIX.cancel_late)]
    for _ in range(MIX.over_capacity):
        try:
            start(immediate)
        except ts.CapacityError:
            pass
        else:  # pragma: no cover
            raise AssertionError("a full manager admitted a session")
    await trio.testing.wait_all_tasks_blocked()
    for _ in range(MIX.refill):
        start(succeed, metadata=META)
    async with trio.open_nursery() as nursery:
        for _ in range(MIX.queued):
            nursery.start_soon(manager.start_session, immediate)
        await trio.sleep(0.001)
        for session in late:
            session.cancel()
    del late
    # Every session left ends at its deadline, 2 ms into the round.
    await trio.sleep(0.002)
    assert not manager.sessions, "a session outlived its round"


def _traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _soak(
    rounds: int, warmup_rounds: int
) -> tuple[int, int, ts.SessionStatistics]:
    async with ts.open_session_manager(
        max_sessions=MAX_SESSIONS,
        max_waiting=MAX_WAITING,
        request_timeout=None,
        max_session_metadata_bytes=100,
    ) as manager:
        for _ in range(warmup_rounds):
            await one_round(manager)
        after_warmup = _traced_bytes()
        for _ in range(rounds - warmup_rounds):
            await one_round(manager)
        at_end = _traced_bytes()
        stats = manager.statistics()
    return after_warmup, at_end, stats


def expected_counts(rounds: int) -> dict[str, Any]:
    """Every counter a soak of ``rounds`` rounds must end with, exactly."""
    created = rounds * MIX.admitted
    return {
        "created": created,
        "completed": created,
        "active": 0,
        "waiting": 0,
        "succeeded": rounds * (MIX.immediate + MIX.succeed + MIX.refill + MIX.queued),
        "failed": rounds * MIX.fail,
        "timed_out": rounds * (MIX.timeout + MIX.swallow),
        "cancelled": rounds * (MIX.cancel_early + MIX.cancel_late),
        "rejected": rounds * (MIX.over_capacity + MIX.over_metadata),
        "rejections": {
            "capacity": rounds * MIX.over_capacity,
            "key_capacity": 0,
            "shutting_down": 0,
            "metadata": rounds * MIX.over_metadata,
        },
        "metadata_bytes": 0,
        "peak_active": MAX_SESSIONS,
        "durations.count": created,
        "wait_times.count": rounds * MIX.queued,
    }


def actual_counts(stats: ts.SessionStatistics) -> dict[str, Any]:
    """The same figures, read from a statistics snapshot."""
    return {
        "created": stats.created,
        "completed": stats.completed,
        "active": stats.active,
        "waiting": stats.waiting,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "timed_out": stats.timed_out,
        "cancelled": stats.cancelled,
        "rejected": stats.rejected,
        "rejections": dict(stats.rejections),
        "metadata_bytes": stats.metadata_bytes,
        "peak_active": stats.peak_active,
        "durations.count": stats.durations.count,
        "wait_times.count": stats.wait_times.count,
    }


def run_soak(sessions: int, warmup_fraction: float = 0.1) -> SoakResult:
    """Run at least ``sessions`` sessions in whole rounds; return the figures."""
    rounds = max(2, math.ceil(sessions / MIX.admitted))
    warmup_rounds = max(1, int(rounds * warmup_fraction))
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    began = time.perf_counter()
    try:
        after_warmup, at_end, stats = trio.run(
            _soak,
            rounds,
            warmup_rounds,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return SoakResult(
        sessions=rounds * MIX.admitted,
        rounds=rounds,
        warmup_rounds=warmup_rounds,
        bytes_after_warmup=after_warmup,
        bytes_at_end=at_end,
        peak_bytes=peak,
        seconds=time.perf_counter() - began,
        statistics=stats,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of rounds")
    args = parser.parse_args(argv)
    result = run_soak(args.sessions, args.warmup)
    stats = result.statistics
    print(
        f"soak: {result.sessions:,} sessions in {result.rounds:,} rounds "
        f"({result.warmup_rounds:,} warm-up) in {result.seconds:.1f} s wall time"
    )
    print(
        f"  outcomes: {stats.succeeded:,} succeeded, {stats.failed:,} failed, "
        f"{stats.timed_out:,} timed out, {stats.cancelled:,} cancelled; "
        f"{stats.rejected:,} rejected {dict(stats.rejections)}"
    )
    print(f"  tracemalloc bytes after warm-up: {result.bytes_after_warmup:,}")
    print(f"  tracemalloc bytes at the end:    {result.bytes_at_end:,}")
    print(f"  growth after warm-up:            {result.growth:+,} bytes")
    print(f"  peak traced bytes:               {result.peak_bytes:,}")
    ok = True
    wanted = expected_counts(result.rounds)
    actual = actual_counts(stats)
    if actual != wanted:
        ok = False
        wrong = {k: (actual[k], wanted[k]) for k in wanted if actual[k] != wanted[k]}
        print(f"FAIL: counters (actual, expected): {wrong}")
    if result.growth > GROWTH_LIMIT:
        ok = False
        print(f"FAIL: memory grew by {result.growth:,} bytes (limit {GROWTH_LIMIT:,})")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
