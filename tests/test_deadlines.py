"""Deadlines: request_timeout, the per-call timeout=, and what a TIMEOUT is.

When a session's own deadline fires, what it is counted as, and how it races
with Session.cancel() at the boundary.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from session_helpers import (
    META,
    META_BYTES,
    MODES,
    admit,
    expect,
    sleep_then,
    with_own_nursery,
)
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import check_invariants


async def test_deadline_times_out_exactly(autojump_clock: MockClock) -> None:
    """A session times out exactly at its deadline; wait raises SessionTimeout."""
    async with ts.open_session_manager(request_timeout=2) as manager:
        session = await manager.start_session(sleep_then, 10)
        with pytest.raises(ts.SessionTimeout) as info:
            await session.wait()
        assert trio.current_time() == 2
    assert isinstance(info.value, trio.TooSlowError)
    assert session.outcome is ts.Outcome.TIMEOUT
    stats = manager.statistics()
    assert (stats.timed_out, stats.failed) == (1, 0)


async def test_per_call_timeout_overrides_and_none_disables(
    autojump_clock: MockClock,
) -> None:
    """timeout= overrides the default; None means no deadline."""
    async with ts.open_session_manager(request_timeout=1) as manager:
        short = await manager.start_session(sleep_then, 10, timeout=0.5)
        unbounded = await manager.start_session(sleep_then, 100, "ok", timeout=None)
        with pytest.raises(ts.SessionTimeout):
            await short.wait()
        assert trio.current_time() == 0.5
        assert await unbounded.wait() == "ok"
        assert trio.current_time() == 100


async def test_deadline_counts_from_start_of_run(autojump_clock: MockClock) -> None:
    """The deadline runs from the start of the run, not from admission or queueing."""
    async with ts.open_session_manager(
        max_sessions=1, max_waiting=1, request_timeout=2
    ) as manager:
        manager.start_session_nowait(sleep_then, 1)
        queued = await manager.start_session(sleep_then, 1.5, "ok")
        assert await queued.wait() == "ok"
        assert queued.started_at == 1
        assert trio.current_time() == 2.5


async def test_timed_out_work_stops_and_frees_its_slot(
    autojump_clock: MockClock,
) -> None:
    """A timed-out session stops running and its slot is free at that instant."""
    steps: list[float] = []

    async def ticking() -> None:
        while True:
            steps.append(trio.current_time())
            await trio.sleep(1)

    async with ts.open_session_manager(max_sessions=1, request_timeout=2.5) as manager:
        session = await manager.start_session(ticking)
        with pytest.raises(ts.SessionTimeout):
            await session.wait()
        assert manager.statistics().active == 0
        await manager.run(trio.lowlevel.checkpoint)
        await trio.sleep(5)
    assert steps == [0, 1, 2]


async def test_session_nursery_cancelled_by_its_own_deadline_times_out(
    autojump_clock: MockClock,
) -> None:
    """A session's own deadline through its nursery is still a TIMEOUT."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.SessionTimeout):
            await manager.run(with_own_nursery, 5, timeout=1)
    assert check_invariants(manager).timed_out == 1


# ------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize("mode", MODES)
async def test_work_ending_exactly_at_the_deadline_times_out(
    mode: str, autojump_clock: MockClock
) -> None:
    """The deadline is inclusive, as in trio.fail_after; a moment earlier succeeds."""
    async with ts.open_session_manager(max_sessions=2, max_waiting=1) as manager:
        exact, t0, blockers = await admit(manager, mode, sleep_then, 2, timeout=2)
        early = manager.start_session_nowait(sleep_then, 1.999, "early", timeout=2)
        with pytest.raises(ts.SessionTimeout):
            await exact.wait()
        assert exact.outcome is ts.Outcome.TIMEOUT
        assert (exact.completed_at, exact.duration) == (t0 + 2, 2)
        assert await early.wait() == "early"
        expect(manager, created=2 + blockers, succeeded=1 + blockers, timed_out=1)


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_at_the_instant_the_deadline_fires_is_a_timeout(
    mode: str, autojump_clock: MockClock
) -> None:
    """Session.cancel() in the step its deadline fires does nothing: timeout wins."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        session, t0, blockers = await admit(manager, mode, sleep_then, 10, timeout=2)
        await trio.sleep(2)
        session.cancel("too late")
        session.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert session.outcome is ts.Outcome.TIMEOUT
        assert session.cancel_reason is None
        assert session.completed_at == t0 + 2
        expect(manager, created=1 + blockers, succeeded=blockers, timed_out=1)


@pytest.mark.parametrize("mode", MODES)
async def test_cancel_just_before_the_deadline_is_a_cancellation(
    mode: str, autojump_clock: MockClock
) -> None:
    """Session.cancel() a moment before the deadline wins; the deadline then is moot."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        session, t0, blockers = await admit(manager, mode, sleep_then, 10, timeout=2)
        await trio.sleep(1.5)
        session.cancel("client left")
        await trio.sleep(5)
        assert session.outcome is ts.Outcome.CANCELLED
        assert session.completed_at == t0 + 1.5
        with pytest.raises(ts.SessionCancelled, match="client left"):
            await session.wait()
        expect(manager, created=1 + blockers, succeeded=blockers, cancelled=1)


async def test_cancel_while_unwinding_from_a_timeout_keeps_the_timeout(
    autojump_clock: MockClock,
) -> None:
    """cancel() while a timed-out session still unwinds changes nothing: TIMEOUT."""

    async def slow_cleanup() -> None:
        try:
            await trio.sleep(100)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(3)

    async with ts.open_session_manager() as manager:
        session = manager.start_session_nowait(slow_cleanup, metadata=META, timeout=2)
        await trio.sleep(3)
        assert session.outcome is None
        session.cancel()
        expect(manager, created=1, active=1, metadata_bytes=META_BYTES)
        with pytest.raises(ts.SessionTimeout):
            await session.wait()
        assert session.completed_at == 5
        assert session.cancel_reason is None
        expect(manager, created=1, timed_out=1)
