"""Side-by-side benchmark: trio_sessions against the raw Trio primitives it is built on.

Every contender does the same job (admit, spawn, deadline, release) in its own event
loop; contenders are interleaved round by round and the best round is kept. Time
on a shared machine is noisy, so the Python bytecode instructions each session
executes are counted too (``--opcodes``, on by default): that figure is exactly
reproducible. Run ``python benchmarks/bench_sessions.py --help`` (or ``nox -s bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import json
import os
import platform
import pstats
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypedDict

import trio
import trio.testing

import trio_sessions as ts

try:
    import anyio
    import anyio.lowlevel
except ImportError:  # pragma: no cover - anyio is in the "bench" extra
    anyio = None  # type: ignore[assignment]

# Long enough never to fire: the deadline is set up and torn down, never reached.
TIMEOUT: Final = 30.0

TRIO_SESSIONS: Final = "trio_sessions"
RAW_TRIO: Final = "raw_trio"
ANYIO_TRIO: Final = "anyio_trio"
ASYNCIO: Final = "asyncio"
CONTENDERS: Final = (TRIO_SESSIONS, RAW_TRIO, ANYIO_TRIO, ASYNCIO)

# Scenario -> (unit, target ratio trio_sessions / raw_trio).
TARGETS: Final = {
    "burst": ("us/session", 1.10),
    "request": ("us/session", 1.05),
    "reject": ("us/session", 2.0),
    "memory": ("bytes/session", 1.10),
}

_HAS_ASYNCIO_TASKGROUP: Final = sys.version_info >= (3, 11)


class _Refused(Exception):
    """asyncio has no non-blocking acquire: the asyncio contender raises this."""


# ----------------------------------------------------------------- the work


async def trio_work() -> None:
    """One checkpoint: the smallest unit of work that really schedules."""
    await trio.lowlevel.checkpoint()


async def anyio_work() -> None:
    """One checkpoint, through anyio's API."""
    await anyio.lowlevel.checkpoint()


async def asyncio_work() -> None:
    """One trip through the asyncio event loop."""
    await asyncio.sleep(0)


@contextmanager
def _timed_region(disable_gc: bool) -> Iterator[None]:
    # The same treatment for every contender: collect first, then optionally
    # keep the collector out of the timed region.
    gc.collect()
    if disable_gc:
        gc.disable()
    try:
        yield
    finally:
        if disable_gc:
            gc.enable()


def _elapsed(start: int) -> float:
    return (time.perf_counter_ns() - start) / 1e9


# ------------------------------------------------------------------- burst
#
# N sessions started back to back, all admitted, each awaiting one checkpoint.
# Timed from the first admission until every task has been joined.


def burst_trio_sessions(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        async with ts.open_session_manager(
            max_sessions=n, request_timeout=TIMEOUT
        ) as manager:
            start_nowait = manager.start_session_nowait
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    start_nowait(trio_work, timeout=TIMEOUT)
                # Leaving the block drains: shutdown() wakes on the last completion.
        return _elapsed(start)

    return trio.run(main)


async def _raw_trio_task(
    limiter: trio.CapacityLimiter, token: object, fn: Callable[[], Awaitable[object]]
) -> None:
    try:
        with trio.move_on_after(TIMEOUT):
            await fn()
    finally:
        limiter.release_on_behalf_of(token)


def burst_raw_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = trio.CapacityLimiter(n)
        async with trio.open_nursery() as nursery:
            start_soon = nursery.start_soon
            acquire = limiter.acquire_on_behalf_of_nowait
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    token = object()
                    acquire(token)
                    start_soon(_raw_trio_task, limiter, token, trio_work)
        return _elapsed(start)

    return trio.run(main)


async def _anyio_task(
    limiter: anyio.CapacityLimiter, token: object, fn: Callable[[], Awaitable[object]]
) -> None:
    try:
        with anyio.move_on_after(TIMEOUT):
            await fn()
    finally:
        limiter.release_on_behalf_of(token)


def burst_anyio_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = anyio.CapacityLimiter(n)
        async with anyio.create_task_group() as tg:
            start_soon = tg.start_soon
            acquire = limiter.acquire_on_behalf_of_nowait
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    token = object()
                    acquire(token)
                    start_soon(_anyio_task, limiter, token, anyio_work)
        return _elapsed(start)

    result: float = anyio.run(main, backend="trio")
    return result


async def _asyncio_task(
    semaphore: asyncio.Semaphore, fn: Callable[[], Awaitable[object]]
) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            await fn()
    finally:
        semaphore.release()


def _asyncio_acquire_nowait(semaphore: asyncio.Semaphore) -> None:
    # Semaphore has no acquire_nowait; this is what acquire() does when a
    # permit is free, without creating and driving a coroutine.
    if semaphore.locked():
        raise _Refused
    semaphore._value -= 1


def burst_asyncio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        semaphore = asyncio.Semaphore(n)
        async with asyncio.TaskGroup() as tg:
            create_task = tg.create_task
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    _asyncio_acquire_nowait(semaphore)
                    create_task(_asyncio_task(semaphore, asyncio_work))
        return _elapsed(start)

    return asyncio.run(main())


# ----------------------------------------------------------------- request
#
# One caller, N sequential round trips: admit, spawn into a long-lived
# nursery, run under a deadline, hand the result back, wake the caller.


def request_trio_sessions(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        async with ts.open_session_manager(
            max_sessions=1000, request_timeout=TIMEOUT
        ) as manager:
            run = manager.run
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    await run(trio_work, timeout=TIMEOUT)
                elapsed = _elapsed(start)
        return elapsed

    return trio.run(main)


class _Box:
    """Where a raw runner leaves its result for the caller."""

    __slots__ = ("done", "error", "value")

    def __init__(self, done: Any) -> None:
        self.done = done
        self.value: object = None
        self.error: Exception | None = None


async def _raw_trio_runner(
    limiter: trio.CapacityLimiter,
    token: object,
    fn: Callable[[], Awaitable[object]],
    box: _Box,
) -> None:
    try:
        with trio.move_on_after(TIMEOUT):
            box.value = await fn()
    except Exception as exc:
        box.error = exc
    finally:
        limiter.release_on_behalf_of(token)
        box.done.set()


def request_raw_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = trio.CapacityLimiter(1000)
        async with trio.open_nursery() as nursery:
            # The round trip is written out in the loop: the leanest raw caller.
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    token = object()
                    limiter.acquire_on_behalf_of_nowait(token)
                    box = _Box(trio.Event())
                    nursery.start_soon(_raw_trio_runner, limiter, token, trio_work, box)
                    await box.done.wait()
                    if box.error is not None:
                        raise box.error
                elapsed = _elapsed(start)
        return elapsed

    return trio.run(main)


async def _anyio_runner(
    limiter: anyio.CapacityLimiter,
    token: object,
    fn: Callable[[], Awaitable[object]],
    box: _Box,
) -> None:
    try:
        with anyio.move_on_after(TIMEOUT):
            box.value = await fn()
    except Exception as exc:
        box.error = exc
    finally:
        limiter.release_on_behalf_of(token)
        box.done.set()


def request_anyio_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = anyio.CapacityLimiter(1000)
        async with anyio.create_task_group() as tg:
            # The round trip is written out in the loop: the leanest raw caller.
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    token = object()
                    limiter.acquire_on_behalf_of_nowait(token)
                    box = _Box(anyio.Event())
                    tg.start_soon(_anyio_runner, limiter, token, anyio_work, box)
                    await box.done.wait()
                    if box.error is not None:
                        raise box.error
                elapsed = _elapsed(start)
        return elapsed

    result: float = anyio.run(main, backend="trio")
    return result


async def _asyncio_runner(
    semaphore: asyncio.Semaphore, fn: Callable[[], Awaitable[object]]
) -> object:
    try:
        async with asyncio.timeout(TIMEOUT):
            return await fn()
    finally:
        semaphore.release()


def request_asyncio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        semaphore = asyncio.Semaphore(1000)
        async with asyncio.TaskGroup() as tg:
            # asyncio hands a task's result back through the task itself.
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    _asyncio_acquire_nowait(semaphore)
                    await tg.create_task(_asyncio_runner(semaphore, asyncio_work))
                elapsed = _elapsed(start)
        return elapsed

    return asyncio.run(main())


# ------------------------------------------------------------------ reject
#
# N refused admissions with every slot taken. Each refused request is its own
# borrower, as it would be in a server.


def reject_trio_sessions(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        release = trio.Event()
        async with ts.open_session_manager(
            max_sessions=1, request_timeout=TIMEOUT
        ) as manager:
            manager.start_session_nowait(release.wait)
            start_nowait = manager.start_session_nowait
            refused = 0
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    try:
                        start_nowait(trio_work, timeout=TIMEOUT)
                    except ts.CapacityError:
                        refused += 1
                elapsed = _elapsed(start)
            release.set()
        assert refused == n
        return elapsed

    return trio.run(main)


def reject_raw_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = trio.CapacityLimiter(1)
        limiter.acquire_on_behalf_of_nowait(object())
        acquire = limiter.acquire_on_behalf_of_nowait
        refused = 0
        with _timed_region(disable_gc):
            start = time.perf_counter_ns()
            for _ in range(n):
                try:
                    acquire(object())
                except trio.WouldBlock:
                    refused += 1
            elapsed = _elapsed(start)
        assert refused == n
        return elapsed

    return trio.run(main)


def reject_anyio_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = anyio.CapacityLimiter(1)
        limiter.acquire_on_behalf_of_nowait(object())
        acquire = limiter.acquire_on_behalf_of_nowait
        refused = 0
        with _timed_region(disable_gc):
            start = time.perf_counter_ns()
            for _ in range(n):
                try:
                    acquire(object())
                except anyio.WouldBlock:
                    refused += 1
            elapsed = _elapsed(start)
        assert refused == n
        return elapsed

    result: float = anyio.run(main, backend="trio")
    return result


def reject_asyncio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        semaphore = asyncio.Semaphore(1)
        _asyncio_acquire_nowait(semaphore)
        refused = 0
        with _timed_region(disable_gc):
            start = time.perf_counter_ns()
            for _ in range(n):
                try:
                    _asyncio_acquire_nowait(semaphore)
                except _Refused:
                    refused += 1
            elapsed = _elapsed(start)
        assert refused == n
        return elapsed

    return asyncio.run(main())


# ------------------------------------------------------------------ memory
#
# Bytes per parked session: N sessions admitted and blocked on one shared
# Event, measured with tracemalloc against the moment before the first admission.


def _traced_now() -> int:
    return tracemalloc.get_traced_memory()[0]


def memory_trio_sessions(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        release = trio.Event()
        async with ts.open_session_manager(
            max_sessions=n, request_timeout=TIMEOUT
        ) as manager:
            start_nowait = manager.start_session_nowait
            gc.collect()
            tracemalloc.start()
            try:
                base = _traced_now()
                for _ in range(n):
                    start_nowait(release.wait, timeout=TIMEOUT)
                await trio.testing.wait_all_tasks_blocked()
                used = _traced_now() - base
            finally:
                tracemalloc.stop()
            release.set()
        return used / n

    return trio.run(main)


def memory_raw_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        release = trio.Event()
        limiter = trio.CapacityLimiter(n)
        async with trio.open_nursery() as nursery:
            start_soon = nursery.start_soon
            acquire = limiter.acquire_on_behalf_of_nowait
            gc.collect()
            tracemalloc.start()
            try:
                base = _traced_now()
                for _ in range(n):
                    token = object()
                    acquire(token)
                    start_soon(_raw_trio_task, limiter, token, release.wait)
                await trio.testing.wait_all_tasks_blocked()
                used = _traced_now() - base
            finally:
                tracemalloc.stop()
            release.set()
        return used / n

    return trio.run(main)


def memory_anyio_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        release = anyio.Event()
        limiter = anyio.CapacityLimiter(n)
        async with anyio.create_task_group() as tg:
            start_soon = tg.start_soon
            acquire = limiter.acquire_on_behalf_of_nowait
            gc.collect()
            tracemalloc.start()
            try:
                base = _traced_now()
                for _ in range(n):
                    token = object()
                    acquire(token)
                    start_soon(_anyio_task, limiter, token, release.wait)
                await trio.testing.wait_all_tasks_blocked()
                used = _traced_now() - base
            finally:
                tracemalloc.stop()
            release.set()
        return used / n

    result: float = anyio.run(main, backend="trio")
    return result


def memory_asyncio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        release = asyncio.Event()
        semaphore = asyncio.Semaphore(n)
        async with asyncio.TaskGroup() as tg:
            create_task = tg.create_task
            gc.collect()
            tracemalloc.start()
            try:
                base = _traced_now()
                for _ in range(n):
                    _asyncio_acquire_nowait(semaphore)
                    create_task(_asyncio_task(semaphore, release.wait))
                # Each task runs its first step in the next loop pass and parks.
                for _ in range(3):
                    await asyncio.sleep(0)
                used = _traced_now() - base
            finally:
                tracemalloc.stop()
            release.set()
        return used / n

    return asyncio.run(main())


# ------------------------------------------------------------------- scale


def admit_parked_trio_sessions(n: int, disable_gc: bool) -> float:
    """Seconds from the first admission until all ``n`` sessions are parked."""

    async def main() -> float:
        release = trio.Event()
        async with ts.open_session_manager(
            max_sessions=n, request_timeout=TIMEOUT
        ) as manager:
            start_nowait = manager.start_session_nowait
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    start_nowait(release.wait, timeout=TIMEOUT)
                await trio.testing.wait_all_tasks_blocked()
                elapsed = _elapsed(start)
            assert manager.statistics().active == n
            release.set()
        return elapsed

    return trio.run(main)


def admit_parked_raw_trio(n: int, disable_gc: bool) -> float:
    """Seconds from the first spawn until all ``n`` raw tasks are parked."""

    async def main() -> float:
        release = trio.Event()
        limiter = trio.CapacityLimiter(n)
        async with trio.open_nursery() as nursery:
            start_soon = nursery.start_soon
            acquire = limiter.acquire_on_behalf_of_nowait
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    token = object()
                    acquire(token)
                    start_soon(_raw_trio_task, limiter, token, release.wait)
                await trio.testing.wait_all_tasks_blocked()
                elapsed = _elapsed(start)
            release.set()
        return elapsed

    return trio.run(main)


class MemoryMark(TypedDict):
    """Traced memory once ``started`` sessions had been admitted."""

    started: int
    completed: int
    current: int
    peak: int


def throughput_trio_sessions(
    n: int, slots: int, disable_gc: bool, marks: Sequence[int] = ()
) -> tuple[float, int, list[MemoryMark]]:
    """Push ``n`` sessions through ``slots`` slots from one producer.

    The producer fills every free slot without yielding, then queues for the
    next one, so the manager runs at full capacity in waves. Returns the
    seconds, the peak of active sessions, and the memory marks: with
    ``marks``, tracemalloc runs (so the time is not representative) and the
    current and peak traced memory are taken once that many sessions have been
    admitted, and once more when all ``n`` have completed.
    """
    memory: list[MemoryMark] = []
    peak_active = 0

    def mark(manager: ts.SessionManager, started: int) -> None:
        current, peak = tracemalloc.get_traced_memory()
        completed = manager.statistics().completed
        memory.append(
            {
                "started": started,
                "completed": completed,
                "current": current,
                "peak": peak,
            }
        )

    async def main() -> float:
        nonlocal peak_active
        async with ts.open_session_manager(
            max_sessions=slots, max_waiting=1, request_timeout=TIMEOUT
        ) as manager:
            start_session = manager.start_session
            start_nowait = manager.start_session_nowait
            active = manager.sessions
            at = set(marks)
            if marks:
                gc.collect()
                tracemalloc.start()
            with _timed_region(disable_gc and not marks):
                start = time.perf_counter_ns()
                for i in range(1, n + 1):
                    if len(active) < slots:
                        start_nowait(trio_work, timeout=TIMEOUT)
                    else:
                        await start_session(trio_work, timeout=TIMEOUT)
                    if i in at:
                        mark(manager, i)
                await manager.shutdown()
                elapsed = _elapsed(start)
            if marks:
                mark(manager, n)
                tracemalloc.stop()
            peak_active = manager.statistics().peak_active
        return elapsed

    seconds = trio.run(main)
    return seconds, peak_active, memory


def throughput_raw_trio(n: int, slots: int, disable_gc: bool) -> float:
    """The raw equivalent: fill every free token, then queue for the next one."""

    async def main() -> float:
        limiter = trio.CapacityLimiter(slots)
        async with trio.open_nursery() as nursery:
            start_soon = nursery.start_soon
            acquire = limiter.acquire_on_behalf_of
            acquire_nowait = limiter.acquire_on_behalf_of_nowait
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    token = object()
                    if limiter.available_tokens:
                        acquire_nowait(token)
                    else:
                        await acquire(token)
                    start_soon(_raw_trio_task, limiter, token, trio_work)
        return _elapsed(start)

    return trio.run(main)


# ----------------------------------------------------------------- harness

Measure = Callable[[int, bool], float]


def scenarios() -> dict[str, dict[str, Measure]]:
    """Scenario -> contender -> measurement; contenders absent here are skipped."""
    table: dict[str, dict[str, Measure]] = {
        "burst": {TRIO_SESSIONS: burst_trio_sessions, RAW_TRIO: burst_raw_trio},
        "request": {TRIO_SESSIONS: request_trio_sessions, RAW_TRIO: request_raw_trio},
        "reject": {TRIO_SESSIONS: reject_trio_sessions, RAW_TRIO: reject_raw_trio},
        "memory": {TRIO_SESSIONS: memory_trio_sessions, RAW_TRIO: memory_raw_trio},
    }
    if anyio is not None:
        table["burst"][ANYIO_TRIO] = burst_anyio_trio
        table["request"][ANYIO_TRIO] = request_anyio_trio
        table["reject"][ANYIO_TRIO] = reject_anyio_trio
        table["memory"][ANYIO_TRIO] = memory_anyio_trio
    if _HAS_ASYNCIO_TASKGROUP:
        table["burst"][ASYNCIO] = burst_asyncio
        table["request"][ASYNCIO] = request_asyncio
        table["reject"][ASYNCIO] = reject_asyncio
        table["memory"][ASYNCIO] = memory_asyncio
    return table


def _per_session(scenario: str, value: float, n: int) -> float:
    # Times are seconds for the whole run; memory is already per session.
    return value if scenario == "memory" else value / n * 1e6


_T0 = time.perf_counter()


def _log(quiet: bool, message: str) -> None:
    if not quiet:
        print(
            f"[{time.perf_counter() - _T0:6.1f}s] {message}",
            file=sys.stderr,
            flush=True,
        )


def run_main_scenarios(
    rounds: int,
    count: int,
    disable_gc: bool,
    quiet: bool,
    memory_rounds: int = 2,
    only: Sequence[str] = (),
) -> dict[str, dict[str, list[float]]]:
    """Interleave every contender round by round; return every sample per session.

    tracemalloc is slow and its figures barely move between rounds, so memory is
    measured in the first ``memory_rounds`` rounds only.
    """
    table = {k: v for k, v in scenarios().items() if not only or k in only}
    samples: dict[str, dict[str, list[float]]] = {
        scenario: {name: [] for name in contenders}
        for scenario, contenders in table.items()
    }
    for round_ in range(rounds):
        for scenario, contenders in table.items():
            if scenario == "memory" and round_ >= memory_rounds:
                continue
            names = list(contenders)
            # Rotate the order each round, so no contender always runs first.
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                raw = contenders[name](count, disable_gc)
                value = _per_session(scenario, raw, count)
                samples[scenario][name].append(value)
                _log(
                    quiet,
                    f"round {round_ + 1}/{rounds} {scenario:8} {name:14} {value:10.3f}",
                )
    return samples


def summarize(samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Best (minimum) of the rounds per contender, the ratio and the verdict."""
    rows: list[dict[str, Any]] = []
    for scenario, by_name in samples.items():
        unit, target = TARGETS[scenario]
        best = {name: min(values) for name, values in by_name.items() if values}
        ratio = best[TRIO_SESSIONS] / best[RAW_TRIO]
        rows.append(
            {
                "scenario": scenario,
                "unit": unit,
                **{name: best.get(name) for name in CONTENDERS},
                "ratio": ratio,
                "target": target,
                "met": ratio <= target,
                "samples": by_name,
            }
        )
    return rows


# Sessions per run for the bytecode count: the per-session figure is the slope
# between the two, so setup and teardown (opening the manager...) cancel out.
_OPCODE_COUNTS: Final = (200, 400)


def count_opcodes(measure: Measure, n: int) -> Counter[str]:
    """Python bytecode instructions executed by ``measure(n)`` (gc off), by function.

    Deterministic, unlike time on a shared machine: every instruction of
    trio_sessions, Trio and the benchmark's own code, none of CPython's C code.
    """
    executed: Counter[str] = Counter()

    def trace(frame: Any, event: str, arg: object) -> Any:
        if event == "opcode":
            code = frame.f_code
            executed[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        else:
            frame.f_trace_opcodes = True
        return trace

    sys.settrace(trace)
    try:
        measure(n, True)
    finally:
        sys.settrace(None)
    return executed


def opcodes_per_session(measure: Measure) -> Counter[str]:
    """Bytecode instructions per session, by function: the slope between two counts."""
    small, large = _OPCODE_COUNTS
    slope = count_opcodes(measure, large)
    slope.subtract(count_opcodes(measure, small))
    return Counter({name: n / (large - small) for name, n in slope.items() if n})


def breakdown(scenario: str, top: int = 25) -> str:
    """Where trio_sessions and raw Trio differ, function by function, per session."""
    contenders = scenarios()[scenario]
    ours = opcodes_per_session(contenders[TRIO_SESSIONS])
    raw = opcodes_per_session(contenders[RAW_TRIO])
    rows = sorted(set(ours) | set(raw), key=lambda name: -abs(ours[name] - raw[name]))
    lines = [
        f"{scenario}: bytecode instructions per session, trio_sessions "
        f"{ours.total():.0f} vs raw trio {raw.total():.0f}",
        f"{'difference':>10}  {'ours':>6}  {'raw':>6}  function",
    ]
    for name in rows[:top]:
        difference = ours[name] - raw[name]
        lines.append(
            f"{difference:+10.1f}  {ours[name]:6.1f}  {raw[name]:6.1f}  {name}"
        )
    return "\n".join(lines)


def run_opcodes(only: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """Bytecode instructions per session: trio_sessions and raw Trio, per scenario."""
    result: dict[str, dict[str, float]] = {}
    for scenario, contenders in scenarios().items():
        if scenario == "memory" or (only and scenario not in only):
            continue
        per_session = {
            name: opcodes_per_session(contenders[name]).total()
            for name in (TRIO_SESSIONS, RAW_TRIO)
        }
        per_session["ratio"] = per_session[TRIO_SESSIONS] / per_session[RAW_TRIO]
        result[scenario] = per_session
    return result


def run_scale(
    parked: int,
    throughput: int,
    slots: int,
    with_throughput: bool,
    rounds: int,
    disable_gc: bool,
    quiet: bool,
) -> dict[str, Any]:
    """Many parked sessions at once; optionally a long run through few slots."""
    admit: dict[str, list[float]] = {TRIO_SESSIONS: [], RAW_TRIO: []}
    measures: dict[str, Measure] = {
        TRIO_SESSIONS: admit_parked_trio_sessions,
        RAW_TRIO: admit_parked_raw_trio,
    }
    for round_ in range(rounds):
        names = list(measures)[round_ % 2 :] + list(measures)[: round_ % 2]
        for name in names:
            admit[name].append(measures[name](parked, disable_gc) / parked * 1e6)
            _log(quiet, f"scale {parked} parked: admit {name} {admit[name][-1]:.3f} us")
    memory = {
        TRIO_SESSIONS: memory_trio_sessions(parked, disable_gc),
        RAW_TRIO: memory_raw_trio(parked, disable_gc),
    }
    _log(quiet, f"scale {parked} parked: bytes/session {memory}")
    result: dict[str, Any] = {
        "parked": {
            "sessions": parked,
            "admit_us_per_session": {k: min(v) for k, v in admit.items()},
            "admit_ratio": min(admit[TRIO_SESSIONS]) / min(admit[RAW_TRIO]),
            "bytes_per_session": memory,
            "memory_ratio": memory[TRIO_SESSIONS] / memory[RAW_TRIO],
            "samples": admit,
        }
    }
    if with_throughput:
        seconds, peak_active, _ = throughput_trio_sessions(
            throughput, slots, disable_gc
        )
        _log(
            quiet, f"scale {throughput} through {slots}: trio_sessions {seconds:.2f} s"
        )
        raw_seconds = throughput_raw_trio(throughput, slots, disable_gc)
        _log(quiet, f"scale {throughput} through {slots}: raw_trio {raw_seconds:.2f} s")
        first = max(1, throughput // 10)
        _, _, marks = throughput_trio_sessions(throughput, slots, disable_gc, [first])
        _log(quiet, f"scale {throughput} through {slots}: memory {marks}")
        result["throughput"] = {
            "sessions": throughput,
            "slots": slots,
            "sessions_per_second": {
                TRIO_SESSIONS: throughput / seconds,
                RAW_TRIO: throughput / raw_seconds,
            },
            "ratio": seconds / raw_seconds,
            "peak_active": peak_active,
            "traced_memory": marks,
        }
    return result


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"trio": trio.__version__, "trio_sessions": _version("trio-sessions")}
    if anyio is not None:
        versions["anyio"] = _version("anyio")
    return {
        "source": _source_digest(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def _source_digest() -> str:
    """Which trio_sessions was measured: a digest of its private modules' source."""
    package = Path(ts.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.glob("_*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if unit == "bytes/session" else f"{value:.2f}"


def format_report(report: dict[str, Any]) -> str:
    """The plain-text table (and the scale figures) that the command prints."""
    header = (
        "scenario",
        "unit",
        "trio_sessions",
        "raw trio",
        "anyio/trio",
        "asyncio",
        "ratio",
        "target",
        "met?",
    )
    lines: list[tuple[str, ...]] = [header]
    if not report["results"]:
        lines = []
    for row in report["results"]:
        unit = row["unit"]
        lines.append(
            (
                row["scenario"],
                unit,
                *(_fmt(row[name], unit) for name in CONTENDERS),
                f"{row['ratio']:.3f}",
                f"<= {row['target']:.2f}",
                "yes" if row["met"] else "NO",
            )
        )
    out = []
    if lines:
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            cells = [
                cell.ljust(width) if i < 2 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ]
            out.append("  ".join(cells).rstrip())
        out.insert(1, "-" * len(out[0]))
    for check in report["checks"]:
        verdict = "yes" if check["met"] else "NO"
        value = f"{check['value']:.3f}"
        out.append(f"{check['name']}: {value} (target {check['target']}) {verdict}")
    settings = report["settings"]
    if lines:
        out.append(
            f"trio_sessions source {report['machine']['source']}; "
            f"count {settings['count']}, best of {settings['rounds']} interleaved "
            f"rounds ({settings['memory_rounds']} for memory); gc "
            f"{'disabled' if settings['disable_gc'] else 'enabled'} in timed "
            "regions, gc.collect() before each; ratio = trio_sessions / raw trio"
        )
    opcodes = report.get("opcodes")
    if opcodes:
        out.append("")
        out.append(
            "bytecode instructions per session (deterministic: sys.settrace "
            f"opcode events, slope {_OPCODE_COUNTS[0]} -> {_OPCODE_COUNTS[1]} "
            "sessions):"
        )
        for scenario, row in opcodes.items():
            out.append(
                f"  {scenario:8} trio_sessions {row[TRIO_SESSIONS]:7.0f}  raw trio "
                f"{row[RAW_TRIO]:7.0f}  ratio {row['ratio']:.3f}"
            )
    scale = report.get("scale")
    if scale:
        parked = scale["parked"]
        admit = parked["admit_us_per_session"]
        memory = parked["bytes_per_session"]
        out.append("")
        out.append(
            f"scale: {parked['sessions']:,} parked sessions: admit "
            f"{admit[TRIO_SESSIONS]:.2f} us/session (raw trio {admit[RAW_TRIO]:.2f}, "
            f"ratio {parked['admit_ratio']:.3f}); memory {memory[TRIO_SESSIONS]:.0f} "
            f"bytes/session (raw trio {memory[RAW_TRIO]:.0f}, "
            f"ratio {parked['memory_ratio']:.3f})"
        )
        through = scale.get("throughput")
        if through:
            rate = through["sessions_per_second"]
            out.append(
                f"scale: {through['sessions']:,} sessions through "
                f"{through['slots']:,} slots (peak active {through['peak_active']:,}): "
                f"{rate[TRIO_SESSIONS]:,.0f} sessions/s "
                f"(raw trio {rate[RAW_TRIO]:,.0f}, time ratio {through['ratio']:.3f})"
            )
            for mark in through["traced_memory"]:
                out.append(
                    f"  traced memory after {mark['started']:,} admitted "
                    f"({mark['completed']:,} completed): current "
                    f"{mark['current'] / 1e6:.2f} MB, peak {mark['peak'] / 1e6:.2f} MB"
                )
    return "\n".join(out)


def profile(scenario: str, contender: str, count: int, limit: int) -> str:
    """cProfile one contender of ``scenario``; the top functions by own time.

    The collector is off while profiling: a collection would be charged to
    whichever function happened to allocate, and drown the real costs.
    """
    measure = scenarios()[scenario][contender]
    profiler = cProfile.Profile()
    gc.collect()
    gc.disable()
    try:
        profiler.enable()
        measure(count, False)
        profiler.disable()
    finally:
        gc.enable()
    from io import StringIO

    stream = StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(limit)
    return stream.getvalue()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="trio_sessions vs raw Trio, anyio on Trio and asyncio."
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--count", type=int, default=20_000, help="sessions per run")
    parser.add_argument(
        "--memory-rounds", type=int, default=2, help="rounds that measure memory"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument(
        "--scale",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also push --throughput sessions through --slots slots (slow)",
    )
    parser.add_argument(
        "--parked", type=int, default=100_000, help="parked sessions (0: skip)"
    )
    parser.add_argument(
        "--throughput", type=int, default=1_000_000, help="sessions for --scale"
    )
    parser.add_argument(
        "--slots", type=int, default=1_000, help="max_sessions for --scale"
    )
    parser.add_argument(
        "--disable-gc",
        action="store_true",
        help="disable the garbage collector inside every timed region",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(TARGETS),
        help="cProfile one contender of one scenario instead (gc off)",
    )
    parser.add_argument(
        "--contender",
        choices=CONTENDERS,
        default=TRIO_SESSIONS,
        help="the contender that --profile profiles",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*sorted(TARGETS), "scale"],
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--opcodes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also count bytecode instructions per session (deterministic)",
    )
    parser.add_argument(
        "--breakdown",
        choices=["burst", "reject", "request"],
        help="print bytecode instructions per session by function instead",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if min(args.rounds, args.count, args.memory_rounds) < 1:
        parser.error("--rounds, --count and --memory-rounds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write the JSON; 0 on success."""
    args = parse_args(argv)
    if args.profile:
        print(profile(args.profile, args.contender, args.count, 30))
        return 0
    if args.breakdown:
        print(breakdown(args.breakdown))
        return 0
    started = time.perf_counter()
    chosen = set(args.scenario or [*TARGETS, "scale"])
    main_scenarios = [name for name in TARGETS if name in chosen]
    samples = (
        run_main_scenarios(
            args.rounds,
            args.count,
            args.disable_gc,
            args.quiet,
            args.memory_rounds,
            main_scenarios,
        )
        if main_scenarios
        else {}
    )
    results = summarize(samples)
    by_scenario = {row["scenario"]: row for row in results}
    checks = []
    burst = by_scenario.get("burst", {})
    if burst.get(ANYIO_TRIO) is not None:
        value = burst[TRIO_SESSIONS] / burst[ANYIO_TRIO]
        checks.append(
            {
                "name": "burst: trio_sessions / anyio on trio",
                "value": value,
                "target": "< 1.0",
                "met": value < 1.0,
            }
        )
    report: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(
            ["python", "benchmarks/bench_sessions.py", *(argv or sys.argv[1:])]
        ),
        "settings": {
            "rounds": args.rounds,
            "count": args.count,
            "disable_gc": args.disable_gc,
            "timeout": TIMEOUT,
            "memory_rounds": min(args.rounds, args.memory_rounds),
            "statistic": "min over rounds",
        },
        "results": results,
        "checks": checks,
    }
    if args.opcodes and main_scenarios:
        report["opcodes"] = run_opcodes(main_scenarios)
    if "scale" in chosen and args.parked > 0:
        report["scale"] = run_scale(
            args.parked,
            args.throughput,
            args.slots,
            args.scale,
            min(args.rounds, 2),
            args.disable_gc,
            args.quiet,
        )
    report["wall_seconds"] = time.perf_counter() - started
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
