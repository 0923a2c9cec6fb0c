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
from trio_sessions.testing import (
    check_invariants,
    hang_until_cancelled,
    ignore_cancellation_for,
)


@pytest.mark.session_manager(request_timeout=2)
async def test_deadline_times_out_exactly(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """A session times out exactly at its deadline; wait raises SessionTimeout."""
    session = await session_manager.start_session(hang_until_cancelled)
    with pytest.raises(ts.SessionTimeout) as info:
        await session.wait()
    assert trio.current_time() == 2
    assert isinstance(info.value, trio.TooSlowError)
    assert session.outcome is ts.Outcome.TIMEOUT
    stats = session_manager.statistics()
    assert (stats.timed_out, stats.failed) == (1, 0)


@pytest.mark.session_manager(request_timeout=1)
async def test_per_call_timeout_overrides_and_none_disables(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """timeout= overrides the default; None means no deadline."""
    short = await session_manager.start_session(sleep_then, 10, timeout=0.5)
    unbounded = await session_manager.start_session(sleep_then, 100, "ok", timeout=None)
    with pytest.raises(ts.SessionTimeout):
        await short.wait()
    assert trio.current_time() == 0.5
    assert await unbounded.wait() == "ok"
    assert trio.current_time() == 100


@pytest.mark.session_manager(max_sessions=1, max_waiting=1, request_timeout=2)
async def test_deadline_counts_from_start_of_run(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """The deadline runs from the start of the run, not from admission or queueing."""
    session_manager.start_session_nowait(sleep_then, 1)
    queued = await session_manager.start_session(sleep_then, 1.5, "ok")
    assert await queued.wait() == "ok"
    assert queued.started_at == 1
    assert trio.current_time() == 2.5


@pytest.mark.session_manager(max_sessions=1, request_timeout=2.5)
async def test_timed_out_work_stops_and_frees_its_slot(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """A timed-out session stops running and its slot is free at that instant."""
    steps: list[float] = []

    async def ticking() -> None:
        while True:
            steps.append(trio.current_time())
            await trio.sleep(1)

    session = await session_manager.start_session(ticking)
    with pytest.raises(ts.SessionTimeout):
        await session.wait()
    assert session_manager.statistics().active == 0
    await session_manager.run(trio.lowlevel.checkpoint)
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


@pytest.mark.session_manager(request_timeout=1)
async def test_session_ignoring_its_deadline_times_out_when_it_unwinds(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """A session shielded past its deadline is a TIMEOUT, settled when it unwinds."""
    session = await session_manager.start_session(ignore_cancellation_for, 3)
    with pytest.raises(ts.SessionTimeout):
        await session.wait()
    assert (session.completed_at, session.duration) == (3, 3)
    assert session_manager.statistics().timed_out == 1


# ------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.session_manager(max_sessions=2, max_waiting=1)
async def test_work_ending_exactly_at_the_deadline_times_out(
    mode: str, session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """The deadline is inclusive, as in trio.fail_after; a moment earlier succeeds."""
    exact, t0, blockers = await admit(session_manager, mode, sleep_then, 2, timeout=2)
    early = session_manager.start_session_nowait(sleep_then, 1.999, "early", timeout=2)
    with pytest.raises(ts.SessionTimeout):
        await exact.wait()
    assert exact.outcome is ts.Outcome.TIMEOUT
    assert (exact.completed_at, exact.duration) == (t0 + 2, 2)
    assert await early.wait() == "early"
    expect(session_manager, created=2 + blockers, succeeded=1 + blockers, timed_out=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.session_manager(max_sessions=1, max_waiting=1)
async def test_cancel_at_the_instant_the_deadline_fires_is_a_timeout(
    mode: str, session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """Session.cancel() in the step its deadline fires does nothing: timeout wins."""
    session, t0, blockers = await admit(
        session_manager, mode, sleep_then, 10, timeout=2
    )
    await trio.sleep(2)
    session.cancel("too late")
    session.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert session.outcome is ts.Outcome.TIMEOUT
    assert session.cancel_reason is None
    assert session.completed_at == t0 + 2
    expect(session_manager, created=1 + blockers, succeeded=blockers, timed_out=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.session_manager(max_sessions=1, max_waiting=1)
async def test_cancel_just_before_the_deadline_is_a_cancellation(
    mode: str, session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """Session.cancel() a moment before the deadline wins; the deadline then is moot."""
    session, t0, blockers = await admit(
        session_manager, mode, sleep_then, 10, timeout=2
    )
    await trio.sleep(1.5)
    session.cancel("client left")
    await trio.sleep(5)
    assert session.outcome is ts.Outcome.CANCELLED
    assert session.completed_at == t0 + 1.5
    with pytest.raises(ts.SessionCancelled, match="client left"):
        await session.wait()
    expect(session_manager, created=1 + blockers, succeeded=blockers, cancelled=1)


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
