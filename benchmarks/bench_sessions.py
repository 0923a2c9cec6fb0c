"""Side-by-side benchmark: trio_sessions against the raw Trio primitives it is built on.

Every contender does the same job (admit, spawn or not, deadline, release) in its
own event loop. The primary figure is the CPU instructions each session costs,
counted by valgrind's callgrind (``--callgrind``, on when valgrind is installed):
each (scenario, contender) runs in a subprocess under callgrind at two session
counts, and the slope between the totals is the cost of one session, which
repeats to within a fraction of a percent. Wall-clock time is measured beside it
(contenders interleaved round by round, best round kept; it moves by several
percent on a shared machine), and so are the Python bytecode instructions per
session (``--opcodes``), which weigh every opcode the same but can be itemized
by function (``--breakdown``). Run ``python benchmarks/bench_sessions.py --help``
(or ``nox -s bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import hashlib
import inspect
import os
import platform
import pstats
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import CodeType
from typing import Any, Final, NamedTuple, TypedDict, TypeVar, cast, final

import _harness
import attrs
import trio

import trio_sessions as ts

try:
    import anyio
    import anyio.lowlevel
except ImportError:  # pragma: no cover - anyio is in the "bench" extra
    anyio = None  # type: ignore[assignment]

# Long enough never to fire: the deadline is set up and torn down, never reached.
TIMEOUT: Final = 30.0

TRIO_SESSIONS: Final = "trio_sessions"
# The leanest hand-written Trio that does the same job: the floor.
RAW_TRIO: Final = "raw_trio"
# The same job as users write it: ``async with limiter:`` and ``move_on_after``.
USERS_TRIO: Final = "users_trio"
# The leanest raw inline code inside the least an ``async with`` API costs
# (an object made by a call with keywords, two coroutines): the inline form's
# floor.
RAW_BLOCK: Final = "raw_block"
ANYIO_TRIO: Final = "anyio_trio"
ASYNCIO: Final = "asyncio"
CONTENDERS: Final = (
    TRIO_SESSIONS,
    RAW_TRIO,
    RAW_BLOCK,
    USERS_TRIO,
    ANYIO_TRIO,
    ASYNCIO,
)
# The contenders counted under callgrind: those the targets compare.
CALLGRIND_CONTENDERS: Final = (TRIO_SESSIONS, RAW_TRIO, RAW_BLOCK, USERS_TRIO)


class Scenario(NamedTuple):
    """A scenario's unit, and the contender trio_sessions' ratio divides by."""

    unit: str
    reference: str


SCENARIOS: Final = {
    "burst": Scenario("us/session", RAW_TRIO),
    "request": Scenario("us/session", RAW_TRIO),
    "inline": Scenario("us/session", RAW_TRIO),
    # Both enter through a checkpoint; the leanest raw form does not.
    "inline_wait": Scenario("us/session", USERS_TRIO),
    "reject": Scenario("us/session", RAW_TRIO),
    "memory": Scenario("bytes/session", RAW_TRIO),
}
# Traced memory repeats to the byte: its target stays on the wall-clock table.
MEMORY_TARGET: Final = 1.10


class Comparison(NamedTuple):
    """trio_sessions / ``reference`` in ``scenario``, by instructions per session."""

    scenario: str
    reference: str
    # None: the ratio is reported, against no target.
    bound: float | None = None
    # The ratio must be below ``bound``, rather than at most ``bound``.
    strict: bool = False

    def met(self, ratio: float) -> bool | None:
        """Whether ``ratio`` meets the target; None when there is none."""
        if self.bound is None:
            return None
        return ratio < self.bound if self.strict else ratio <= self.bound

    def target(self) -> str:
        """The target as printed: ``<= 1.06``, ``< 1.00`` or ``-``."""
        if self.bound is None:
            return "-"
        return f"{'<' if self.strict else '<='} {self.bound:.2f}"


# The targets of the inline-sessions issue, by callgrind instructions.
COMPARISONS: Final = (
    Comparison("burst", RAW_TRIO, 1.06),
    Comparison("burst", USERS_TRIO),
    Comparison("request", RAW_TRIO, 1.02),
    Comparison("request", USERS_TRIO),
    Comparison("inline", RAW_TRIO, 1.10),
    Comparison("inline", USERS_TRIO, 1.0, strict=True),
    Comparison("inline", RAW_BLOCK),
    Comparison("inline_wait", USERS_TRIO),
    Comparison("reject", RAW_TRIO, 2.0),
)

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


# ------------------------------------------------------- issue-16 features
#
# trio_sessions' side of burst, request, inline and reject takes an optional
# Feature: the same loop, with one feature of the adaptive-concurrency issue
# configured. The loop's bytecode is the default path's: the admission
# keywords are bound with functools.partial, which runs no bytecode, and the
# manager's options are set up outside the loop, so the slope cancels them.


class Feature(NamedTuple):
    """One feature of issue 16, as the bytecode count configures it."""

    name: str
    # How it is configured, as printed.
    configured: str
    # The manager's options for a scenario of ``capacity`` sessions.
    options: Callable[[int], dict[str, Any]]
    # The keywords every admission passes.
    admission: Mapping[str, object]


def _aimd(capacity: int) -> dict[str, Any]:
    from trio_sessions._adaptive import AIMDController

    # Started at its ceiling, the scenario's capacity: it is fed every
    # completion but never resizes, so what is counted is the feeding.
    controller = AIMDController(initial_limit=capacity, min_limit=1, max_limit=capacity)
    return {"controller": controller}


FEATURES: Final = (
    Feature(
        "per_key",
        'key="k", max_sessions_per_key=capacity',
        lambda capacity: {"max_sessions_per_key": capacity},
        {"key": "k"},
    ),
    Feature(
        "priority",
        "priority=1, reserved_share=0.1",
        lambda capacity: {"reserved_share": 0.1},
        {"priority": 1},
    ),
    Feature(
        "controller",
        "controller=AIMDController(initial_limit=max_limit=capacity)",
        _aimd,
        {},
    ),
)
FEATURE_NAMES: Final = tuple(feature.name for feature in FEATURES)

_Admit = TypeVar("_Admit", bound=Callable[..., Any])


def _options(feature: Feature | None, capacity: int) -> dict[str, Any]:
    """The manager options ``feature`` needs (none for the default path)."""
    return {} if feature is None else feature.options(capacity)


def _admission(admit: _Admit, feature: Feature | None) -> _Admit:
    """``admit`` with ``feature``'s keywords bound, or ``admit`` itself."""
    if feature is None or not feature.admission:
        return admit
    return cast(_Admit, functools.partial(admit, **feature.admission))


def feature_missing(feature: Feature) -> str | None:
    """Why this trio_sessions cannot run ``feature``, or None when it can."""
    try:
        options = feature.options(1)
    except ImportError as exc:
        return f"not in this trio_sessions ({exc})"
    known = {field.name for field in attrs.fields(ts.SessionConfig)}
    known |= set(inspect.signature(ts.open_session_manager).parameters)
    admit = inspect.signature(ts.SessionManager.start_session_nowait).parameters
    unknown = [name for name in options if name not in known]
    unknown += [name for name in feature.admission if name not in admit]
    if unknown:
        return f"not in this trio_sessions (no {', '.join(unknown)})"
    return None


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


def _import_testing() -> None:
    """Import trio.testing before a measurement that parks sessions.

    trio.testing imports pytest, seconds of start-up under valgrind: only the
    scenarios that park sessions import it, and before they measure, or the
    first one would be charged megabytes (tracemalloc) or the whole import
    (the clock).
    """
    import trio.testing  # noqa: F401


async def _all_blocked() -> None:
    from trio.testing import wait_all_tasks_blocked

    await wait_all_tasks_blocked()


def _elapsed(start: int) -> float:
    return (time.perf_counter_ns() - start) / 1e9


# ------------------------------------------------------------------- burst
#
# N sessions started back to back, all admitted, each awaiting one checkpoint.
# Timed from the first admission until every task has been joined.


def burst_trio_sessions(
    n: int, disable_gc: bool, feature: Feature | None = None
) -> float:
    async def main() -> float:
        async with ts.open_session_manager(
            max_sessions=n, request_timeout=TIMEOUT, **_options(feature, n)
        ) as manager:
            start_nowait = _admission(manager.start_session_nowait, feature)
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


async def _users_trio_task(
    limiter: trio.CapacityLimiter, fn: Callable[[], Awaitable[object]]
) -> None:
    async with limiter:
        with trio.move_on_after(TIMEOUT):
            await fn()


def burst_users_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = trio.CapacityLimiter(n)
        async with trio.open_nursery() as nursery:
            start_soon = nursery.start_soon
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    start_soon(_users_trio_task, limiter, trio_work)
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


def request_trio_sessions(
    n: int, disable_gc: bool, feature: Feature | None = None
) -> float:
    async def main() -> float:
        async with ts.open_session_manager(
            max_sessions=1000, request_timeout=TIMEOUT, **_options(feature, 1000)
        ) as manager:
            run = _admission(manager.run, feature)
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


async def _users_trio_runner(
    limiter: trio.CapacityLimiter, fn: Callable[[], Awaitable[object]], box: _Box
) -> None:
    try:
        async with limiter:
            with trio.move_on_after(TIMEOUT):
                box.value = await fn()
    except Exception as exc:
        box.error = exc
    finally:
        box.done.set()


def request_users_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = trio.CapacityLimiter(1000)
        async with trio.open_nursery() as nursery:
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    box = _Box(trio.Event())
                    nursery.start_soon(_users_trio_runner, limiter, trio_work, box)
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


# ------------------------------------------------------------------ inline
#
# One task, N sequential inline round trips: admit, run the body under a
# deadline in the caller's own task, release. ``inline`` enters with
# session_nowait(), which never yields; ``inline_wait`` with session(), whose
# entry is a checkpoint, as ``async with limiter:`` is.


def _inline_trio_sessions(
    n: int, disable_gc: bool, wait: bool, feature: Feature | None = None
) -> float:
    async def main() -> float:
        async with ts.open_session_manager(
            max_sessions=1000, request_timeout=TIMEOUT, **_options(feature, 1000)
        ) as manager:
            session = _admission(
                manager.session if wait else manager.session_nowait, feature
            )
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    async with session(timeout=TIMEOUT):
                        await trio_work()
                elapsed = _elapsed(start)
        return elapsed

    return trio.run(main)


def inline_trio_sessions(
    n: int, disable_gc: bool, feature: Feature | None = None
) -> float:
    return _inline_trio_sessions(n, disable_gc, wait=False, feature=feature)


def inline_wait_trio_sessions(n: int, disable_gc: bool) -> float:
    return _inline_trio_sessions(n, disable_gc, wait=True)


def inline_raw_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = trio.CapacityLimiter(1000)
        acquire = limiter.acquire_on_behalf_of_nowait
        release = limiter.release_on_behalf_of
        with _timed_region(disable_gc):
            start = time.perf_counter_ns()
            for _ in range(n):
                # One borrower per round trip, as each request of a server is.
                token = object()
                acquire(token)
                try:
                    with trio.CancelScope(deadline=trio.current_time() + TIMEOUT):
                        await trio_work()
                finally:
                    release(token)
            elapsed = _elapsed(start)
        return elapsed

    return trio.run(main)


@final
class _RawBlock:
    """The leanest raw inline code as an async context manager, and no more."""

    __slots__ = ("_limiter", "_scope", "_timeout", "_token")

    def __init__(self, limiter: trio.CapacityLimiter, timeout: float) -> None:
        self._limiter = limiter
        self._timeout = timeout

    async def __aenter__(self) -> trio.CancelScope:
        token = self._token = object()
        self._limiter.acquire_on_behalf_of_nowait(token)
        scope = self._scope = trio.CancelScope(
            deadline=trio.current_time() + self._timeout
        )
        scope.__enter__()
        return scope

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        try:
            return self._scope.__exit__(*exc_info)
        finally:
            self._limiter.release_on_behalf_of(self._token)


def inline_raw_block(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = trio.CapacityLimiter(1000)

        # Made by a call with keywords, as manager.session_nowait(timeout=...).
        def block(*, timeout: float) -> _RawBlock:
            return _RawBlock(limiter, timeout)

        with _timed_region(disable_gc):
            start = time.perf_counter_ns()
            for _ in range(n):
                async with block(timeout=TIMEOUT):
                    await trio_work()
            elapsed = _elapsed(start)
        return elapsed

    return trio.run(main)


def inline_users_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = trio.CapacityLimiter(1000)
        with _timed_region(disable_gc):
            start = time.perf_counter_ns()
            for _ in range(n):
                async with limiter:
                    with trio.move_on_after(TIMEOUT):
                        await trio_work()
            elapsed = _elapsed(start)
        return elapsed

    return trio.run(main)


def inline_anyio_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        limiter = anyio.CapacityLimiter(1000)
        with _timed_region(disable_gc):
            start = time.perf_counter_ns()
            for _ in range(n):
                async with limiter:
                    with anyio.move_on_after(TIMEOUT):
                        await anyio_work()
            elapsed = _elapsed(start)
        return elapsed

    result: float = anyio.run(main, backend="trio")
    return result


def inline_asyncio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        semaphore = asyncio.Semaphore(1000)
        with _timed_region(disable_gc):
            start = time.perf_counter_ns()
            for _ in range(n):
                async with semaphore, asyncio.timeout(TIMEOUT):
                    await asyncio_work()
            elapsed = _elapsed(start)
        return elapsed

    return asyncio.run(main())


# ------------------------------------------------------------------ reject
#
# N refused admissions with every slot taken. Each refused request is its own
# borrower, as it would be in a server.


def reject_trio_sessions(
    n: int, disable_gc: bool, feature: Feature | None = None
) -> float:
    async def main() -> float:
        release = trio.Event()
        async with ts.open_session_manager(
            max_sessions=1, request_timeout=TIMEOUT, **_options(feature, 1)
        ) as manager:
            start_nowait = _admission(manager.start_session_nowait, feature)
            # The one slot, taken as the refused callers ask: with a key
            # limit, their key is full too.
            start_nowait(release.wait)
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
        _import_testing()
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
                await _all_blocked()
                used = _traced_now() - base
            finally:
                tracemalloc.stop()
            release.set()
        return used / n

    return trio.run(main)


def memory_raw_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        _import_testing()
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
                await _all_blocked()
                used = _traced_now() - base
            finally:
                tracemalloc.stop()
            release.set()
        return used / n

    return trio.run(main)


def memory_anyio_trio(n: int, disable_gc: bool) -> float:
    async def main() -> float:
        _import_testing()
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
                await _all_blocked()
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
        _import_testing()
        release = trio.Event()
        async with ts.open_session_manager(
            max_sessions=n, request_timeout=TIMEOUT
        ) as manager:
            start_nowait = manager.start_session_nowait
            with _timed_region(disable_gc):
                start = time.perf_counter_ns()
                for _ in range(n):
                    start_nowait(release.wait, timeout=TIMEOUT)
                await _all_blocked()
                elapsed = _elapsed(start)
            assert manager.statistics().active == n
            release.set()
        return elapsed

    return trio.run(main)


def admit_parked_raw_trio(n: int, disable_gc: bool) -> float:
    """Seconds from the first spawn until all ``n`` raw tasks are parked."""

    async def main() -> float:
        _import_testing()
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
                await _all_blocked()
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
        "burst": {
            TRIO_SESSIONS: burst_trio_sessions,
            RAW_TRIO: burst_raw_trio,
            USERS_TRIO: burst_users_trio,
        },
        "request": {
            TRIO_SESSIONS: request_trio_sessions,
            RAW_TRIO: request_raw_trio,
            USERS_TRIO: request_users_trio,
        },
        "inline": {
            TRIO_SESSIONS: inline_trio_sessions,
            RAW_TRIO: inline_raw_trio,
            RAW_BLOCK: inline_raw_block,
            USERS_TRIO: inline_users_trio,
        },
        "inline_wait": {
            TRIO_SESSIONS: inline_wait_trio_sessions,
            USERS_TRIO: inline_users_trio,
        },
        "reject": {TRIO_SESSIONS: reject_trio_sessions, RAW_TRIO: reject_raw_trio},
        "memory": {TRIO_SESSIONS: memory_trio_sessions, RAW_TRIO: memory_raw_trio},
    }
    if anyio is not None:
        table["burst"][ANYIO_TRIO] = burst_anyio_trio
        table["request"][ANYIO_TRIO] = request_anyio_trio
        table["inline"][ANYIO_TRIO] = inline_anyio_trio
        table["reject"][ANYIO_TRIO] = reject_anyio_trio
        table["memory"][ANYIO_TRIO] = memory_anyio_trio
    if _HAS_ASYNCIO_TASKGROUP:
        table["burst"][ASYNCIO] = burst_asyncio
        table["request"][ASYNCIO] = request_asyncio
        table["inline"][ASYNCIO] = inline_asyncio
        table["reject"][ASYNCIO] = reject_asyncio
        table["memory"][ASYNCIO] = memory_asyncio
    return table


def selected(
    only: Sequence[str] = (), contenders: Sequence[str] = ()
) -> dict[str, dict[str, Measure]]:
    """:func:`scenarios`, cut down to ``only`` and ``contenders`` (empty: all)."""
    return {
        scenario: {
            name: measure
            for name, measure in table.items()
            if not contenders or name in contenders
        }
        for scenario, table in scenarios().items()
        if not only or scenario in only
    }


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
    contenders: Sequence[str] = (),
) -> dict[str, dict[str, list[float]]]:
    """Interleave every contender round by round; return every sample per session.

    tracemalloc is slow and its figures barely move between rounds, so memory is
    measured in the first ``memory_rounds`` rounds only.
    """
    table = selected(only, contenders)
    samples: dict[str, dict[str, list[float]]] = {
        scenario: {name: [] for name in measures}
        for scenario, measures in table.items()
    }
    for round_ in range(rounds):
        for scenario, measures in table.items():
            if scenario == "memory" and round_ >= memory_rounds:
                continue
            names = list(measures)
            # Rotate the order each round, so no contender always runs first.
            shift = round_ % max(1, len(names))
            for name in names[shift:] + names[:shift]:
                raw = measures[name](count, disable_gc)
                value = _per_session(scenario, raw, count)
                samples[scenario][name].append(value)
                _log(
                    quiet,
                    f"round {round_ + 1}/{rounds} {scenario:11} {name:14} "
                    f"{value:10.3f}",
                )
    return samples


def _ratio(values: dict[str, Any], reference: str) -> float | None:
    """trio_sessions / ``reference``, or None when either was not measured."""
    ours, theirs = values.get(TRIO_SESSIONS), values.get(reference)
    return None if ours is None or theirs is None else ours / theirs


def summarize(samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Best (minimum) of the rounds per contender, the ratio and the verdict.

    Only memory has a target here: the time targets are judged by the
    instruction counts (:func:`run_callgrind`), which repeat; times do not.
    """
    rows: list[dict[str, Any]] = []
    for scenario, by_name in samples.items():
        unit, reference = SCENARIOS[scenario]
        best = {name: min(values) for name, values in by_name.items() if values}
        ratio = _ratio(best, reference)
        target = MEMORY_TARGET if scenario == "memory" else None
        rows.append(
            {
                "scenario": scenario,
                "unit": unit,
                **{name: best.get(name) for name in CONTENDERS},
                "reference": reference,
                "ratio": ratio,
                "target": target,
                "met": None if target is None or ratio is None else ratio <= target,
                "samples": by_name,
            }
        )
    return rows


# Sessions per run for the bytecode count: the per-session figure is the slope
# between the two, so setup and teardown (opening the manager...) cancel out.
OPCODE_COUNTS: Final = (200, 400)


def count_opcodes(measure: Measure, n: int) -> Counter[str]:
    """Python bytecode instructions executed by ``measure(n)`` (gc off), by function.

    Deterministic, unlike time on a shared machine: every instruction of
    trio_sessions, Trio and the benchmark's own code, none of CPython's C code.
    """
    # Counted by code object, named afterwards: the trace function runs once
    # per opcode, so it does no more than one dictionary update.
    executed: Counter[CodeType] = Counter()

    def trace(frame: Any, event: str, arg: object) -> Any:
        if event == "opcode":
            executed[frame.f_code] += 1
        else:
            frame.f_trace_opcodes = True
        return trace

    sys.settrace(trace)
    try:
        measure(n, True)
    finally:
        sys.settrace(None)
    by_name: Counter[str] = Counter()
    for code, count in executed.items():
        by_name[f"{Path(code.co_filename).name}:{code.co_name}"] += count
    return by_name


def opcodes_per_session(
    measure: Measure, counts: Sequence[int] = OPCODE_COUNTS
) -> Counter[str]:
    """Bytecode instructions per session, by function: the slope between two counts."""
    small, large = counts
    slope = count_opcodes(measure, large)
    slope.subtract(count_opcodes(measure, small))
    return Counter({name: n / (large - small) for name, n in slope.items() if n})


def breakdown(
    scenario: str,
    counts: Sequence[int] = OPCODE_COUNTS,
    top: int = 25,
    feature: Feature | None = None,
) -> str:
    """Where trio_sessions and its reference differ, by function, per session.

    With ``feature``, where trio_sessions with that feature configured
    differs from its default path.
    """
    contenders = scenarios()[scenario]
    if feature is None:
        reference = SCENARIOS[scenario].reference
        ours = opcodes_per_session(contenders[TRIO_SESSIONS], counts)
        theirs = opcodes_per_session(contenders[reference], counts)
    else:
        reference = TRIO_SESSIONS
        ours = opcodes_per_session(with_feature(scenario, feature), counts)
        theirs = opcodes_per_session(contenders[TRIO_SESSIONS], counts)
    name = TRIO_SESSIONS if feature is None else f"{TRIO_SESSIONS}+{feature.name}"
    rows = sorted(
        set(ours) | set(theirs), key=lambda name: -abs(ours[name] - theirs[name])
    )
    lines = [
        f"{scenario}: bytecode instructions per session, {name} "
        f"{ours.total():.0f} vs {reference} {theirs.total():.0f}",
        f"{'difference':>10}  {'ours':>6}  {'theirs':>6}  function",
    ]
    for name in rows[:top]:
        difference = ours[name] - theirs[name]
        lines.append(
            f"{difference:+10.1f}  {ours[name]:6.1f}  {theirs[name]:6.1f}  {name}"
        )
    return "\n".join(lines)


def run_opcodes(
    only: Sequence[str] = (),
    contenders: Sequence[str] = (),
    counts: Sequence[int] = OPCODE_COUNTS,
) -> dict[str, dict[str, Any]]:
    """Bytecode instructions per session of trio_sessions and of its reference."""
    result: dict[str, dict[str, Any]] = {}
    for scenario, measures in selected(only, contenders).items():
        reference = SCENARIOS[scenario].reference
        if scenario == "memory" or not {TRIO_SESSIONS, reference} <= set(measures):
            continue
        row: dict[str, Any] = {
            name: opcodes_per_session(measures[name], counts).total()
            for name in (TRIO_SESSIONS, reference)
        }
        row["reference"] = reference
        row["ratio"] = _ratio(row, reference)
        result[scenario] = row
    return result


# trio_sessions' measurement of each scenario that takes a Feature.
FEATURE_SCENARIOS: Final[dict[str, Callable[..., float]]] = {
    "burst": burst_trio_sessions,
    "request": request_trio_sessions,
    "inline": inline_trio_sessions,
    "reject": reject_trio_sessions,
}


def with_feature(scenario: str, feature: Feature) -> Measure:
    """trio_sessions' side of ``scenario`` with ``feature`` configured."""
    return functools.partial(FEATURE_SCENARIOS[scenario], feature=feature)


def run_feature_opcodes(
    features: Sequence[Feature] = FEATURES,
    only: Sequence[str] = (),
    counts: Sequence[int] = OPCODE_COUNTS,
    defaults: Mapping[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Bytecode instructions per session with each feature configured.

    For every feature: its count per scenario and the cost over trio_sessions'
    default path (``defaults``: scenario -> count, as :func:`run_opcodes`
    found; counted here when absent), or why it was skipped.
    """
    chosen = [name for name in FEATURE_SCENARIOS if not only or name in only]
    baseline = dict(defaults or {})
    result: dict[str, dict[str, Any]] = {}
    for feature in features:
        entry: dict[str, Any] = {"configured": feature.configured}
        result[feature.name] = entry
        missing = feature_missing(feature)
        if missing is not None:
            entry["skipped"] = missing
            continue
        entry["per_session"], entry["cost"] = {}, {}
        for scenario in chosen:
            if scenario not in baseline:
                default = scenarios()[scenario][TRIO_SESSIONS]
                baseline[scenario] = opcodes_per_session(default, counts).total()
            measure = with_feature(scenario, feature)
            count = opcodes_per_session(measure, counts).total()
            entry["per_session"][scenario] = count
            entry["cost"][scenario] = count - baseline[scenario]
    return result


# ---------------------------------------------------------------- callgrind
#
# Each (scenario, contender) runs in a subprocess of this script under
# callgrind (--run-one), at two session counts; the slope between the two
# totals is the cost of one session, with start-up, imports and teardown
# cancelled out.

CALLGRIND_COUNTS: Final = (200, 1200)
# Python runs some fifty times slower under valgrind than natively.
CALLGRIND_TIMEOUT: Final = 900.0


def run_one(scenario: str, contender: str, sessions: int) -> None:
    """The subprocess that callgrind counts: one contender, ``sessions`` sessions.

    Prints the number of objects the cyclic collector freed at the end, and
    exits without the interpreter's finalization.
    """
    measure = scenarios()[scenario][contender]
    # The collector stays off while the sessions run: a collection due at a
    # threshold would land in one run of a slope and not the other, and move
    # the figure by percents. One full collection at the end charges every
    # session the cyclic garbage it left, the same way in every run.
    gc.disable()
    measure(sessions, False)
    freed = gc.collect()
    print(freed, flush=True)
    # Finalization costs the same in every run: skip it, it only takes time.
    os._exit(0)


def _count_one(
    valgrind: str,
    scenario: str,
    contender: str,
    sessions: int,
    quiet: bool,
    simulate: bool,
) -> tuple[dict[str, int], int]:
    """valgrind's totals (and the cyclic garbage) of one ``--run-one``."""
    here = Path(__file__).resolve()
    # Run as a module, not as a script: a module's bytecode is cached, a
    # script is compiled again every run (a second under valgrind).
    argv = ["-m", here.stem, "--run-one", scenario, contender, str(sessions)]
    started = time.monotonic()
    done = subprocess.run(
        _harness.command(valgrind, *argv, simulate=simulate),
        capture_output=True,
        text=True,
        env=_harness.environment(here.parent),
        timeout=CALLGRIND_TIMEOUT * (2 if simulate else 1),
    )
    totals = _harness.summary(
        done.stderr, f"{scenario} {contender} x {sessions}", done.returncode
    )
    freed = int(done.stdout.split()[-1])
    _log(
        quiet,
        f"callgrind {scenario:11} {contender:14} x {sessions:,}: "
        f"{totals['instructions']:,} instructions "
        f"({time.monotonic() - started:.0f} s)",
    )
    return totals, freed


def run_callgrind(
    valgrind: str,
    counts: Sequence[int] = CALLGRIND_COUNTS,
    jobs: int = 1,
    only: Sequence[str] = (),
    contenders: Sequence[str] = (),
    quiet: bool = True,
    simulate: bool = False,
) -> dict[str, Any]:
    """Callgrind instructions per session of every Trio contender; the targets.

    With ``simulate``, also the simulated cache misses and branch mispredicts
    per session: what costs time beyond the instructions.
    """
    table = selected(only, contenders)
    # One count per function: inline_wait's users_trio is inline's.
    first: dict[Measure, tuple[str, str]] = {}
    counted_as: dict[tuple[str, str], tuple[str, str]] = {}
    for scenario, measures in table.items():
        for name in CALLGRIND_CONTENDERS:
            if scenario != "memory" and name in measures:
                key = first.setdefault(measures[name], (scenario, name))
                counted_as[scenario, name] = key
    runs = [(*key, n) for key in dict.fromkeys(counted_as.values()) for n in counts]
    source = _harness.source_digest()
    _harness.cache_bytecode()
    counted = _harness.run_all(
        jobs, lambda run: _count_one(valgrind, *run, quiet, simulate), runs
    )
    changed = _harness.source_digest() != source
    if changed:
        _log(False, "callgrind: the source changed during the runs: run again")
    per_session: dict[str, dict[str, dict[str, Any]]] = {}
    for (scenario, name), key in counted_as.items():
        summaries = [counted[(*key, n)][0] for n in counts]
        freed = [counted[(*key, n)][1] for n in counts]
        each = _harness.slopes(counts, summaries)
        per_session.setdefault(scenario, {})[name] = {
            "runs": [
                {"sessions": n, **summary}
                for n, summary in zip(counts, summaries, strict=True)
            ],
            "per_session": each.pop("instructions"),
            "garbage_per_session": _harness.slope(counts, freed),
            "simulated_per_session": each,
        }
    comparisons = []
    for comparison in COMPARISONS:
        measured = per_session.get(comparison.scenario, {})
        ratio = _ratio(
            {name: row["per_session"] for name, row in measured.items()},
            comparison.reference,
        )
        if ratio is not None:
            comparisons.append(
                {
                    "scenario": comparison.scenario,
                    "contender": TRIO_SESSIONS,
                    "reference": comparison.reference,
                    "ratio": ratio,
                    "target": comparison.target(),
                    "met": comparison.met(ratio),
                }
            )
    return {
        "settings": {
            "counts": list(counts),
            "jobs": jobs,
            "valgrind": _harness.version(valgrind),
            "gc": "off while running; one full collection at the end",
            "PYTHONHASHSEED": 0,
            "simulate": simulate,
        },
        "source": source,
        "source_changed_during_runs": changed,
        "per_session": per_session,
        "comparisons": comparisons,
    }


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
        **_harness.checkout(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if unit == "bytes/session" else f"{value:.2f}"


def _verdict(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "NO"


def _columns(lines: list[tuple[str, ...]], left: int) -> list[str]:
    """Align ``lines`` (the first is the header): ``left`` columns flush left."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for line in lines:
        cells = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "-" * max(len(line) for line in out))
    return out


def format_callgrind(result: dict[str, Any]) -> list[str]:
    """The instruction table: every contender, and trio_sessions' ratios."""
    settings = result["settings"]
    low, high = settings["counts"]
    simulated = list(_harness.SIMULATED) if settings["simulate"] else []
    lines: list[tuple[str, ...]] = [
        (
            "scenario",
            "contender",
            "instr/session",
            "garbage",
            *simulated,
            "reference",
            "ratio",
            "target",
            "met?",
        )
    ]
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for comparison in result["comparisons"]:
        by_scenario.setdefault(comparison["scenario"], []).append(comparison)
    for scenario, measured in result["per_session"].items():
        reference = SCENARIOS[scenario].reference
        for name, row in measured.items():
            cells = (
                scenario,
                name,
                f"{row['per_session']:,.0f}",
                f"{row['garbage_per_session']:.1f}",
                *(f"{row['simulated_per_session'][e]:,.0f}" for e in simulated),
            )
            if name == TRIO_SESSIONS and by_scenario.get(scenario):
                for comparison in by_scenario[scenario]:
                    lines.append(
                        (
                            *cells,
                            comparison["reference"],
                            f"{comparison['ratio']:.3f}",
                            comparison["target"],
                            _verdict(comparison["met"]),
                        )
                    )
            elif name != reference and reference in measured:
                ratio = row["per_session"] / measured[reference]["per_session"]
                lines.append((*cells, reference, f"{ratio:.3f}", "-", "-"))
            else:
                lines.append((*cells, "", "", "", ""))
    simulation = (
        "; D1/LL misses and mispredicts per session from callgrind's cache "
        "and branch simulation"
        if simulated
        else ""
    )
    return [
        "callgrind: CPU instructions per session (the primary figure; slope "
        f"between {low:,} and {high:,} sessions, {settings['valgrind']}, "
        "PYTHONHASHSEED=0; gc off while running, then one full collection: "
        f"'garbage' is the objects per session it freed{simulation})",
        *_columns(lines, 2),
        *(
            ["WARNING: the source changed during the runs: run again"]
            if result["source_changed_during_runs"]
            else []
        ),
    ]


def format_report(report: dict[str, Any]) -> str:
    """The plain-text tables (and the scale figures) that the command prints."""
    out = []
    if report.get("callgrind"):
        out += format_callgrind(report["callgrind"])
        out.append("")
    header = (
        "scenario",
        "unit",
        "trio_sessions",
        "raw trio",
        "raw block",
        "users' trio",
        "anyio/trio",
        "asyncio",
        "reference",
        "ratio",
        "target",
        "met?",
    )
    lines: list[tuple[str, ...]] = [header]
    for row in report["results"]:
        unit = row["unit"]
        lines.append(
            (
                row["scenario"],
                unit,
                *(_fmt(row[name], unit) for name in CONTENDERS),
                row["reference"],
                "-" if row["ratio"] is None else f"{row['ratio']:.3f}",
                "-" if row["target"] is None else f"<= {row['target']:.2f}",
                _verdict(row["met"]),
            )
        )
    if report["results"]:
        out.append(
            "wall clock: microseconds per session (memory: bytes per session, "
            "tracemalloc); ratio = trio_sessions / reference"
        )
        out += _columns(lines, 2)
    for check in report["checks"]:
        verdict = "yes" if check["met"] else "NO"
        value = f"{check['value']:.3f}"
        out.append(f"{check['name']}: {value} (target {check['target']}) {verdict}")
    settings = report["settings"]
    if report["results"]:
        out.append(
            f"trio_sessions source {report['machine']['source']}; "
            f"count {settings['count']}, best of {settings['rounds']} interleaved "
            f"rounds ({settings['memory_rounds']} for memory); gc "
            f"{'disabled' if settings['disable_gc'] else 'enabled'} in timed "
            "regions, gc.collect() before each"
        )
    opcodes = report.get("opcodes")
    if opcodes:
        low, high = settings["opcode_counts"]
        out.append("")
        out.append(
            "bytecode instructions per session (sys.settrace opcode events, "
            f"slope {low} -> {high} sessions; every opcode weighs the same):"
        )
        for scenario, row in opcodes.items():
            reference = row["reference"]
            out.append(
                f"  {scenario:11} trio_sessions {row[TRIO_SESSIONS]:7.0f}  "
                f"{reference} {row[reference]:7.0f}  ratio {row['ratio']:.3f}"
            )
    features = report.get("feature_opcodes")
    if features:
        out.append("")
        out += _format_features(features)
    scale = report.get("scale")
    if scale:
        out += _format_scale(scale)
    return "\n".join(out)


def _format_features(features: dict[str, dict[str, Any]]) -> list[str]:
    """The cost of each issue-16 feature, configured, over the default path."""
    chosen = [
        scenario
        for scenario in FEATURE_SCENARIOS
        if any(scenario in entry.get("cost", {}) for entry in features.values())
    ]
    lines: list[tuple[str, ...]] = [("feature", *chosen, "configured as")]
    skipped = []
    for name, entry in features.items():
        if "skipped" in entry:
            skipped.append(f"  {name}: skipped, {entry['skipped']}")
            continue
        per_session, cost = entry["per_session"], entry["cost"]
        cells = (
            f"{per_session[scenario]:.0f} ({round(cost[scenario]):+d})"
            for scenario in chosen
        )
        lines.append((name, *cells, entry["configured"]))
    table = [f"  {line}" for line in _columns(lines, 1)] if len(lines) > 1 else []
    return [
        "bytecode instructions per session of trio_sessions with one issue-16 "
        "feature configured (in brackets: its cost over the default path above):",
        *table,
        *skipped,
    ]


def _format_scale(scale: dict[str, Any]) -> list[str]:
    parked = scale["parked"]
    admit = parked["admit_us_per_session"]
    memory = parked["bytes_per_session"]
    out = [
        "",
        f"scale: {parked['sessions']:,} parked sessions: admit "
        f"{admit[TRIO_SESSIONS]:.2f} us/session (raw trio {admit[RAW_TRIO]:.2f}, "
        f"ratio {parked['admit_ratio']:.3f}); memory {memory[TRIO_SESSIONS]:.0f} "
        f"bytes/session (raw trio {memory[RAW_TRIO]:.0f}, "
        f"ratio {parked['memory_ratio']:.3f})",
    ]
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
    return out


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


def _counts(value: str) -> int:
    count = int(value)
    if count < 0:
        raise argparse.ArgumentTypeError("a count is >= 0")
    return count


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="trio_sessions vs raw Trio, anyio on Trio and asyncio: "
        "callgrind instructions, wall clock and bytecode counts per session."
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
        choices=[name for name in SCENARIOS if name != "memory"],
        help="cProfile one contender of one scenario instead (gc off)",
    )
    parser.add_argument(
        "--contender",
        action="append",
        choices=CONTENDERS,
        help="measure only this contender (repeatable; default: all); "
        "--profile profiles the first (default: trio_sessions)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, "scale"],
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--callgrind",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="count CPU instructions per session under valgrind's callgrind, "
        "the primary figure (default: on when valgrind is installed)",
    )
    parser.add_argument(
        "--callgrind-counts",
        nargs=2,
        type=_counts,
        default=list(CALLGRIND_COUNTS),
        metavar=("A", "B"),
        help="session counts whose totals give the slope "
        f"(default: {CALLGRIND_COUNTS[0]} {CALLGRIND_COUNTS[1]})",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="with --callgrind, also simulate the caches and the branch "
        "predictor: misses and mispredicts per session (twice as slow)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="callgrind subprocesses at once (default: 2); the counts do not "
        "depend on it",
    )
    parser.add_argument(
        "--opcodes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also count bytecode instructions per session (deterministic)",
    )
    parser.add_argument(
        "--opcode-counts",
        nargs=2,
        type=_counts,
        default=list(OPCODE_COUNTS),
        metavar=("A", "B"),
        help="session counts of the bytecode slope "
        f"(default: {OPCODE_COUNTS[0]} {OPCODE_COUNTS[1]})",
    )
    parser.add_argument(
        "--features",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --opcodes, also count trio_sessions with each issue-16 "
        "feature configured (per-key limits, priority with a reserved share, "
        "a limit controller) and print its cost over the default path",
    )
    parser.add_argument(
        "--feature",
        action="append",
        choices=FEATURE_NAMES,
        help="count only this feature (repeatable; default: all); with "
        "--breakdown, itemize the first against the default path",
    )
    parser.add_argument(
        "--breakdown",
        choices=[name for name in SCENARIOS if name != "memory"],
        help="print bytecode instructions per session by function instead",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    # The subprocess that --callgrind counts: SCENARIO CONTENDER SESSIONS.
    parser.add_argument("--run-one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rounds, args.count, args.memory_rounds, args.jobs) < 1:
        parser.error("--rounds, --count, --memory-rounds and --jobs must be >= 1")
    for option in ("callgrind_counts", "opcode_counts"):
        low, high = getattr(args, option)
        if low >= high:
            parser.error(f"--{option.replace('_', '-')} needs A < B")
    if args.run_one:
        scenario, contender, sessions = args.run_one
        if contender not in scenarios().get(scenario, {}) or not sessions.isdigit():
            parser.error(f"--run-one: no contender {contender!r} in {scenario!r}")
    args.contender = list(dict.fromkeys(args.contender or ()))
    by_name = {feature.name: feature for feature in FEATURES}
    given = [by_name[name] for name in dict.fromkeys(args.feature or ())]
    if args.breakdown and given and args.breakdown not in FEATURE_SCENARIOS:
        parser.error(f"--breakdown {args.breakdown} takes no --feature")
    # --breakdown itemizes one feature, if named; the count takes them all.
    args.breakdown_feature = given[0] if given else None
    args.feature = given or list(FEATURES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables, write the JSON; 0 on success."""
    args = parse_args(argv)
    if args.run_one:
        scenario, contender, sessions = args.run_one
        run_one(scenario, contender, int(sessions))
    if args.profile:
        contender = args.contender[0] if args.contender else TRIO_SESSIONS
        print(profile(args.profile, contender, args.count, 30))
        return 0
    if args.breakdown:
        feature = args.breakdown_feature
        if feature is not None and (missing := feature_missing(feature)):
            print(f"--feature {feature.name}: {missing}", file=sys.stderr)
            return 2
        print(breakdown(args.breakdown, args.opcode_counts, feature=feature))
        return 0
    valgrind = _harness.find_valgrind()
    if args.callgrind is None:
        args.callgrind = valgrind is not None
    if args.callgrind and valgrind is None:
        _harness.require_valgrind()
    started = time.perf_counter()
    chosen = set(args.scenario or [*SCENARIOS, "scale"])
    main_scenarios = [name for name in SCENARIOS if name in chosen]
    samples = (
        run_main_scenarios(
            args.rounds,
            args.count,
            args.disable_gc,
            args.quiet,
            args.memory_rounds,
            main_scenarios,
            args.contender,
        )
        if main_scenarios
        else {}
    )
    results = summarize(samples)
    by_scenario = {row["scenario"]: row for row in results}
    checks = []
    burst = by_scenario.get("burst", {})
    if burst.get(ANYIO_TRIO) is not None and burst.get(TRIO_SESSIONS) is not None:
        value = burst[TRIO_SESSIONS] / burst[ANYIO_TRIO]
        checks.append(
            {
                "name": "burst (wall clock): trio_sessions / anyio on trio",
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
            "opcode_counts": args.opcode_counts,
        },
        "results": results,
        "checks": checks,
    }
    if args.opcodes and main_scenarios:
        report["opcodes"] = run_opcodes(
            main_scenarios, args.contender, args.opcode_counts
        )
        featured = [name for name in main_scenarios if name in FEATURE_SCENARIOS]
        if args.features and featured:
            report["feature_opcodes"] = run_feature_opcodes(
                args.feature,
                featured,
                args.opcode_counts,
                {
                    scenario: row[TRIO_SESSIONS]
                    for scenario, row in report["opcodes"].items()
                },
            )
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
    # Last, on its own: callgrind's subprocesses would slow the timed rounds.
    if args.callgrind and main_scenarios:
        assert valgrind is not None
        report["callgrind"] = run_callgrind(
            valgrind,
            args.callgrind_counts,
            args.jobs,
            main_scenarios,
            args.contender,
            args.quiet,
            args.simulate,
        )
    report["wall_seconds"] = time.perf_counter() - started
    print(format_report(report))
    if args.json:
        _harness.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
