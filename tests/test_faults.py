"""The fault matrix: every way a session's function can misbehave, in every phase.

Each fault is tried on a session admitted at once (``start_session``), through
``start_session_nowait``, and after queueing for a slot; afterwards the outcome,
every counter, the metadata bytes and the capacity tokens must be exactly right.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import pytest
import trio
import trio.testing
from session_helpers import (
    META,
    META_BYTES,
    MODES,
    SPAWNED_MODES,
    admit,
    expect,
    sleep_then,
)
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import check_invariants

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


class Boom(ValueError):
    """The ordinary failure a session function raises."""


@pytest.fixture
def stuck_log() -> Generator[list[tuple[float, logging.LogRecord]], None, None]:
    """Records ERROR messages of the "trio_sessions" logger with the Trio time."""
    records: list[tuple[float, logging.LogRecord]] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((trio.current_time(), record))

    handler = Handler(logging.ERROR)
    logger = logging.getLogger("trio_sessions")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# ---------------------------------------------------------------- ordinary exceptions


def group_of_booms() -> BaseException:
    return ExceptionGroup("two children failed", [Boom("a"), Boom("b")])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("delay", [0, 1])
@pytest.mark.parametrize(
    "make_error",
    [
        lambda: Boom("plain"),
        group_of_booms,
        lambda: trio.TooSlowError("fn's own fail_after"),
        lambda: ts.SessionTimeout("a child session timed out"),
        lambda: ts.SessionCancelled("a child session was cancelled"),
    ],
    ids=[
        "Boom",
        "ExceptionGroup",
        "TooSlowError",
        "SessionTimeout",
        "SessionCancelled",
    ],
)
async def test_exception_is_an_error(
    mode: str,
    delay: float,
    make_error: Callable[[], BaseException],
    autojump_clock: MockClock,
) -> None:
    """Any Exception fn raises, even a timeout-looking one, is ERROR, counted once."""
    error = make_error()

    async def fail() -> None:
        if delay:
            await trio.sleep(delay)
        raise error

    async with ts.open_session_manager(max_sessions=2, max_waiting=1) as manager:
        session, t0, blockers = await admit(manager, mode, fail)
        with pytest.raises(type(error)) as info:
            await session.wait()
        assert info.value is error
        assert session.outcome is ts.Outcome.ERROR
        assert (session.completed_at, session.duration) == (t0 + delay, delay)
        expect(manager, created=1 + blockers, succeeded=blockers, failed=1)
    assert trio.current_time() == t0 + delay


# ---------------------------------------------------------------------- BaseException


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "make_error", [KeyboardInterrupt, lambda: SystemExit(3)], ids=["KI", "SystemExit"]
)
async def test_base_exception_cancels_the_rest_and_propagates(
    mode: str, make_error: Callable[[], BaseException], autojump_clock: MockClock
) -> None:
    """KeyboardInterrupt/SystemExit cancel the other sessions, then leave the block."""
    error = make_error()

    async def interrupt() -> None:
        await trio.sleep(1)
        raise error

    with pytest.raises(type(error)) as info:
        async with ts.open_session_manager(
            max_sessions=2, max_waiting=1, shutdown_timeout=50
        ) as manager:
            session, t0, blockers = await admit(manager, mode, interrupt)
            bystander = manager.start_session_nowait(sleep_then, 10, metadata=META)
            await trio.sleep(20)
    assert info.value is error
    assert trio.current_time() == t0 + 1
    # Only Exceptions are ERRORs: the interrupted session counts as cancelled.
    assert session.outcome is ts.Outcome.CANCELLED
    assert session.cancel_reason == f"interrupted by {type(error).__name__}"
    assert bystander.outcome is ts.Outcome.CANCELLED
    assert bystander.completed_at == t0 + 1
    expect(manager, created=2 + blockers, succeeded=blockers, cancelled=2)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_base_exception_in_session_propagates(
    exc_type: type[BaseException], autojump_clock: MockClock
) -> None:
    """KeyboardInterrupt/SystemExit in a session cancel the others, propagate bare."""

    async def interrupt() -> None:
        await trio.sleep(1)
        raise exc_type

    with pytest.raises(exc_type):
        async with ts.open_session_manager() as manager:
            other = await manager.start_session(sleep_then, 100)
            interrupted = await manager.start_session(interrupt)
            await trio.sleep(50)
    assert trio.current_time() == 1
    assert other.outcome is ts.Outcome.CANCELLED
    # Only Exceptions are ERRORs: the interrupted session counts as cancelled.
    assert interrupted.outcome is ts.Outcome.CANCELLED
    assert interrupted.cancel_reason == f"interrupted by {exc_type.__name__}"
    stats = manager.statistics()
    assert (stats.active, stats.cancelled, stats.failed) == (0, 2, 0)


async def test_base_exception_refuses_the_queued_callers(
    autojump_clock: MockClock,
) -> None:
    """A caller queued behind a KeyboardInterrupt is refused: the manager is ending."""
    refused: list[ts.ShuttingDownError] = []

    async def interrupt() -> None:
        await trio.sleep(1)
        raise KeyboardInterrupt

    async def queued(manager: ts.SessionManager) -> None:
        # The interrupting session shuts the manager down in the step it ends,
        # before its freed token could admit anyone.
        try:
            await manager.start_session(sleep_then, 1, metadata=META)
        except ts.ShuttingDownError as exc:
            refused.append(exc)

    with pytest.raises(KeyboardInterrupt):
        async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
            manager.start_session_nowait(interrupt, metadata=META)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(queued, manager)
                await trio.testing.wait_all_tasks_blocked()
                expect(
                    manager, created=1, active=1, waiting=1, metadata_bytes=META_BYTES
                )
                await trio.sleep(20)
    assert trio.current_time() == 1
    assert len(refused) == 1
    expect(manager, created=1, cancelled=1, shutting_down=1)


# -------------------------------------------------------------- not an async function


def returns_int() -> int:
    return 42


def returns_none() -> None:
    return None


class Awaitable42:
    """An awaitable that is not a coroutine: trio refuses these too."""

    def __await__(self) -> Generator[Any, None, int]:  # pragma: no cover
        yield from ()  # never awaited
        return 42


async def agen() -> AsyncGenerator[int, None]:
    yield 1  # pragma: no cover - never iterated


# What fn is matters only to the forms that call it.
@pytest.mark.parametrize("mode", SPAWNED_MODES)
@pytest.mark.parametrize(
    "fn",
    [returns_int, returns_none, Awaitable42, agen, 42, None],
    ids=["sync-int", "sync-none", "awaitable", "async-generator", "int", "None"],
)
async def test_not_an_async_function_is_refused_at_admission(
    mode: str, fn: Any, autojump_clock: MockClock
) -> None:
    """A synchronous or non-coroutine fn is a TypeError at admission; nothing counts."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        with pytest.raises(TypeError, match="async function"):
            await admit(manager, mode, fn)
        blockers = 1 if mode == "waiting" else 0
        # A callable is only found out when called, after its wait for a slot.
        done = blockers if callable(fn) else 0
        assert trio.current_time() == done
        stats = expect(
            manager, created=blockers, succeeded=done, active=blockers - done
        )
        assert stats.peak_active == blockers
    expect(manager, created=blockers, succeeded=blockers)


# What fn is matters only to the forms that call it.
@pytest.mark.parametrize("mode", SPAWNED_MODES)
async def test_coroutine_object_is_refused_without_a_warning(
    mode: str, autojump_clock: MockClock
) -> None:
    """Passing fn() instead of fn is a TypeError and leaves no "never awaited"."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        coro = sleep_then(1)
        with pytest.raises(TypeError, match="not fn"):
            await admit(manager, mode, coro)  # type: ignore[arg-type]
        assert isinstance(coro, types.CoroutineType)
        assert coro.cr_frame is None  # closed, so no RuntimeWarning later
        blockers = 1 if mode == "waiting" else 0
        expect(manager, created=blockers, active=blockers)


# What fn is matters only to the forms that call it.
@pytest.mark.parametrize("mode", SPAWNED_MODES)
async def test_fn_raising_when_called_propagates_from_admission(
    mode: str, autojump_clock: MockClock
) -> None:
    """A sync fn that raises when called raises from start_session; no slot is kept."""

    def explode() -> Any:
        raise Boom("raised while called")

    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        with pytest.raises(Boom, match="raised while called"):
            await admit(manager, mode, explode)
        blockers = 1 if mode == "waiting" else 0
        assert trio.current_time() == blockers
        expect(manager, created=blockers, succeeded=blockers)
        assert await manager.run(sleep_then, 1, "ok") == "ok"


async def test_refused_queued_caller_is_not_in_wait_times(
    autojump_clock: MockClock,
) -> None:
    """wait_times counts sessions that queued, not callers refused after queueing."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        with pytest.raises(TypeError):
            await admit(manager, "waiting", returns_int)  # type: ignore[arg-type]
        stats = expect(manager, created=1, succeeded=1)
        assert stats.wait_times.count == 0


# ----------------------------------------------------------------- shielded and stuck


async def shielded(seconds: float) -> str:
    with trio.CancelScope(shield=True):
        await trio.sleep(seconds)
    return "finished regardless"


@pytest.mark.parametrize("mode", MODES)
async def test_shielded_session_is_reported_stuck_not_hung(
    mode: str,
    stuck_log: list[tuple[float, logging.LogRecord]],
    autojump_clock: MockClock,
) -> None:
    """shutdown() returns at drain + grace, naming the shielded session as stuck."""
    async with ts.open_session_manager(
        max_sessions=2, max_waiting=1, shutdown_timeout=50, shutdown_grace=3
    ) as manager:
        session, t0, blockers = await admit(manager, mode, shielded, 100)
        normal = manager.start_session_nowait(sleep_then, 10, metadata=META)
        report = await manager.shutdown(timeout=2)
        assert trio.current_time() == t0 + 2 + 3
        assert report == ts.ShutdownReport(
            initial_active=2,
            completed=0,
            cancelled=2,
            timeout_reached=True,
            duration=5,
            stuck=(session.id,),
        )
        assert normal.outcome is ts.Outcome.CANCELLED
        assert normal.completed_at == t0 + 2
        assert session.outcome is None
        expect(
            manager,
            created=2 + blockers,
            succeeded=blockers,
            cancelled=1,
            active=1,
            metadata_bytes=META_BYTES,
        )
        [(logged_at, record)] = stuck_log
        assert logged_at == t0 + 5
        assert record.levelno == logging.ERROR
        assert session.id in record.getMessage()
        assert await manager.shutdown() is report
    # The nursery, not shutdown(), waits for the shield: inherent to Trio.
    assert trio.current_time() == t0 + 100
    assert session.outcome is ts.Outcome.CANCELLED
    assert session.completed_at == t0 + 100
    expect(manager, created=2 + blockers, succeeded=blockers, cancelled=2)
    assert len(stuck_log) == 1


async def test_default_grace_is_one_second_when_leaving_the_block(
    stuck_log: list[tuple[float, logging.LogRecord]], autojump_clock: MockClock
) -> None:
    """Leaving the block reports a shielded session stuck at shutdown_timeout + 1 s."""
    async with ts.open_session_manager(shutdown_timeout=5) as manager:
        session = manager.start_session_nowait(shielded, 30, metadata=META)
    assert trio.current_time() == 30
    [(logged_at, record)] = stuck_log
    assert logged_at == 5 + 1
    assert session.id in record.getMessage()
    report = await manager.shutdown()
    assert (report.stuck, report.duration, report.cancelled) == ((session.id,), 6, 1)
    expect(manager, created=1, cancelled=1)


async def test_zero_grace_reports_only_shielded_sessions_stuck(
    stuck_log: list[tuple[float, logging.LogRecord]], autojump_clock: MockClock
) -> None:
    """With shutdown_grace=0, stuck names the shielded session, not the healthy one."""
    for _ in range(20):  # trio shuffles tasks woken together: try several orders
        async with ts.open_session_manager(shutdown_grace=0) as manager:
            start = trio.current_time()
            session = manager.start_session_nowait(shielded, 30)
            unwinding = manager.start_session_nowait(sleep_then, 30)
            report = await manager.shutdown(timeout=4)
            assert trio.current_time() == start + 4
            assert report.stuck == (session.id,)
            assert unwinding.outcome is ts.Outcome.CANCELLED
        assert stuck_log.pop()[0] == start + 4
        expect(manager, created=2, cancelled=2)


async def test_shield_that_ends_within_the_grace_is_not_stuck(
    stuck_log: list[tuple[float, logging.LogRecord]], autojump_clock: MockClock
) -> None:
    """A session that unwinds within the grace is cancelled normally, not stuck."""
    async with ts.open_session_manager(shutdown_grace=3) as manager:
        session = manager.start_session_nowait(shielded, 4, metadata=META)
        report = await manager.shutdown(timeout=2)
        assert trio.current_time() == 4
    assert report == ts.ShutdownReport(
        initial_active=1,
        completed=0,
        cancelled=1,
        timeout_reached=True,
        duration=4,
        stuck=(),
    )
    assert session.outcome is ts.Outcome.CANCELLED
    assert stuck_log == []
    expect(manager, created=1, cancelled=1)


# ------------------------------------------------------------- swallowed cancellation


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cause", ["timeout", "cancel", "shutdown"])
@pytest.mark.parametrize("then", ["return", "raise", "swallow-again"])
async def test_swallowed_cancellation_still_decides_the_outcome(
    mode: str, cause: str, then: str, autojump_clock: MockClock
) -> None:
    """fn that swallows Cancelled is still TIMEOUT or CANCELLED, counted once."""

    async def stubborn() -> str:
        for _ in range(3 if then == "swallow-again" else 1):
            # The fault under test: swallowing trio.Cancelled.
            with contextlib.suppress(trio.Cancelled):
                await trio.sleep(100)
        if then == "raise":
            raise Boom("converted the cancellation")
        return "pretends all is well"

    timeout = 2 if cause == "timeout" else None
    async with ts.open_session_manager(
        max_sessions=1, max_waiting=1, request_timeout=None
    ) as manager:
        session, t0, blockers = await admit(manager, mode, stubborn, timeout=timeout)
        if cause == "timeout":
            await trio.sleep(2)
        elif cause == "cancel":
            await trio.sleep(2)
            session.cancel()
        elif cause == "shutdown":
            report = await manager.shutdown(timeout=2)
            assert (report.cancelled, report.completed) == (1, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert session.completed_at == t0 + 2
        if cause == "timeout":
            assert session.outcome is ts.Outcome.TIMEOUT
            with pytest.raises(ts.SessionTimeout):
                await session.wait()
            expect(manager, created=1 + blockers, succeeded=blockers, timed_out=1)
        else:
            assert session.outcome is ts.Outcome.CANCELLED
            with pytest.raises(ts.SessionCancelled):
                await session.wait()
            expect(manager, created=1 + blockers, succeeded=blockers, cancelled=1)


async def test_swallowed_cancellation_still_counts_as_timeout(
    autojump_clock: MockClock,
) -> None:
    """A function that swallows its deadline's Cancelled is still a TIMEOUT."""

    async def stubborn() -> str:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            return "ignored"
        return "slept"

    async with ts.open_session_manager(request_timeout=1) as manager:
        session = await manager.start_session(stubborn)
        with pytest.raises(ts.SessionTimeout):
            await session.wait()
    assert manager.statistics().timed_out == 1


# --------------------------------------------------------------------- hooks (guards)


class FaultyGuard(ts.AdmissionGuard):
    """An admission guard whose every hook can be told to fail."""

    reasons = ("fleet_full",)

    def __init__(self) -> None:
        self.acquire_error: BaseException | None = None
        self.release_error: BaseException | None = None
        self.run_error: BaseException | None = None
        self.block_acquire = False
        self.held: set[str] = set()

    async def run(
        self,
        manager: ts.SessionManager,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started()
        await trio.sleep(1)
        if self.run_error is not None:
            raise self.run_error
        await trio.sleep_forever()

    async def acquire(self, session: ts.Session, deadline: float) -> None:
        await trio.lowlevel.checkpoint()
        if self.block_acquire:
            await trio.sleep_forever()
        if self.acquire_error is not None:
            raise self.acquire_error
        self.held.add(session.id)

    def release(self, session: ts.Session) -> None:
        self.held.discard(session.id)
        if self.release_error is not None:
            raise self.release_error


async def test_guard_release_raising_is_logged_and_ignored(
    stuck_log: list[tuple[float, logging.LogRecord]], autojump_clock: MockClock
) -> None:
    """An exception in a guard's release hook is logged; the bookkeeping holds."""
    guard = FaultyGuard()
    guard.release_error = RuntimeError("lease store down")
    async with ts.open_session_manager(guard=guard) as manager:
        ok = await manager.start_session(sleep_then, 1, "ok", metadata=META)
        bad = await manager.start_session(sleep_then, 2, metadata=META, timeout=1.5)
        assert await ok.wait() == "ok"
        with pytest.raises(ts.SessionTimeout):
            await bad.wait()
        stats = expect(manager, created=2, succeeded=1, timed_out=1)
        assert stats.rejections.get("fleet_full") == 0
    assert guard.held == set()
    assert [t for t, _ in stuck_log] == [1, 1.5]
    assert all("lease store down" in (r.exc_text or "") for _, r in stuck_log)


async def test_guard_acquire_raising_admits_nothing(
    autojump_clock: MockClock,
) -> None:
    """A guard's acquire failing frees the slot; a refusal is counted by its reason."""
    guard = FaultyGuard()
    async with ts.open_session_manager(guard=guard, max_sessions=1) as manager:
        guard.acquire_error = RuntimeError("guard crashed")
        with pytest.raises(RuntimeError, match="guard crashed"):
            await manager.start_session(sleep_then, 1, metadata=META)
        guard.acquire_error = ts.RejectedError("fleet is full", reason="fleet_full")
        with pytest.raises(ts.RejectedError, match="fleet is full"):
            await manager.start_session(sleep_then, 1, metadata=META)
        stats = expect(manager, created=0, other_rejections=1)
        assert stats.rejections["fleet_full"] == 1
        guard.acquire_error = None
        assert await manager.run(sleep_then, 1, "ok", metadata=META) == "ok"
        expect(manager, created=1, succeeded=1, other_rejections=1)


async def test_guard_acquire_cancelled_by_shutdown(autojump_clock: MockClock) -> None:
    """A caller stuck in a guard's acquire is refused when shutdown starts."""
    guard = FaultyGuard()
    guard.block_acquire = True
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await manager.start_session(sleep_then, 1, metadata=META)
        except ts.ShuttingDownError as exc:
            errors.append(exc)

    async with (
        ts.open_session_manager(guard=guard, max_waiting=1) as manager,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        # The local slot is taken first, then the guard's lease is awaited.
        assert check_invariants(manager).waiting == 1
        assert manager.statistics().active == 0  # the token is not a session yet
        await trio.sleep(2)
        await manager.shutdown()
    assert trio.current_time() == 2
    assert len(errors) == 1
    expect(manager, created=0, shutting_down=1)


async def test_guard_background_task_crashing_cancels_the_sessions(
    autojump_clock: MockClock,
) -> None:
    """A guard's run() raising cancels every session and leaves the block bare."""
    guard = FaultyGuard()
    guard.run_error = OSError("lost the lease store")
    with pytest.raises(OSError, match="lost the lease store"):
        async with ts.open_session_manager(guard=guard, shutdown_timeout=50) as manager:
            session = await manager.start_session(sleep_then, 10, metadata=META)
            await trio.sleep(20)
    assert trio.current_time() == 1
    assert session.outcome is ts.Outcome.CANCELLED
    expect(manager, created=1, cancelled=1)
    assert guard.held == set()
