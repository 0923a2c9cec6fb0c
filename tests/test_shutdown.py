"""Shutdown: the drain, the cancellation after it, the report, and the block's end.

Also what happens when the code around the manager is cancelled or raises.
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
    fail_after_sleep,
    sleep_then,
    with_own_nursery,
)
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import (
    check_invariants,
    ignore_cancellation_for,
    wait_for_active,
)


@pytest.mark.session_manager(shutdown_timeout=3)
async def test_shutdown_drains_then_cancels(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """Shutdown lets sessions finish within its timeout and cancels the rest."""
    quick = await session_manager.start_session(sleep_then, 1)
    slow = await session_manager.start_session(sleep_then, 10)
    report = await session_manager.shutdown()
    assert trio.current_time() == 3
    assert report == ts.ShutdownReport(
        initial_active=2, completed=1, cancelled=1, timeout_reached=True, duration=3
    )
    assert quick.outcome is ts.Outcome.SUCCESS
    assert slow.outcome is ts.Outcome.CANCELLED
    with pytest.raises(ts.SessionCancelled, match="shutdown"):
        await slow.wait()


async def test_shutdown_with_nothing_running(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """Shutting down an idle manager reports zeros and no timeout."""
    report = await session_manager.shutdown(timeout=10)
    assert report == ts.ShutdownReport(0, 0, 0, False, 0.0)
    assert trio.current_time() == 0


async def test_shutdown_is_idempotent_and_concurrent_calls_agree(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """Concurrent and later shutdown calls all return the first call's report."""
    reports: list[ts.ShutdownReport] = []

    async def shut(manager: ts.SessionManager, timeout: float) -> None:
        reports.append(await manager.shutdown(timeout))

    session_manager.start_session_nowait(sleep_then, 10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shut, session_manager, 2)
        await trio.sleep(0.5)
        nursery.start_soon(shut, session_manager, 100)
    reports.append(await session_manager.shutdown(0))
    assert len(reports) == 3
    assert all(report is reports[0] for report in reports)
    assert reports[0].duration == 2
    assert reports[0].timeout_reached


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_shutdowns_share_one_report(
    mode: str, autojump_clock: MockClock
) -> None:
    """A second shutdown during the first waits for it and returns the same report."""
    reports: list[ts.ShutdownReport] = []

    async def shut(timeout: float) -> None:
        reports.append(await manager.shutdown(timeout=timeout))
        assert trio.current_time() == t0 + 2

    async with ts.open_session_manager(max_sessions=2, max_waiting=1) as manager:
        session, t0, blockers = await admit(manager, mode, sleep_then, 10)
        quick = manager.start_session_nowait(sleep_then, 1, metadata=META)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shut, 2)
            await trio.sleep(0.5)
            nursery.start_soon(shut, 7)
    assert trio.current_time() == t0 + 2
    assert len(reports) == 2
    assert reports[0] is reports[1]
    assert reports[0] == ts.ShutdownReport(
        initial_active=2, completed=1, cancelled=1, timeout_reached=True, duration=2
    )
    assert (quick.outcome, session.outcome) == (
        ts.Outcome.SUCCESS,
        ts.Outcome.CANCELLED,
    )
    expect(manager, created=2 + blockers, succeeded=1 + blockers, cancelled=1)


@pytest.mark.session_manager(shutdown_timeout=10)
async def test_cancelling_one_of_two_shutdowns_cancels_the_sessions_at_once(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """If one concurrent shutdown caller is cancelled, both see the sessions end now."""
    slow = session_manager.start_session_nowait(sleep_then, 100, metadata=META)
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(1):
            nursery.start_soon(session_manager.shutdown)
            await session_manager.shutdown()
    assert trio.current_time() == 1
    assert slow.outcome is ts.Outcome.CANCELLED
    report = await session_manager.shutdown()
    assert (report.initial_active, report.cancelled, report.completed) == (1, 1, 0)
    assert report.duration == 1
    expect(session_manager, created=1, cancelled=1)


async def test_rejects_new_sessions_while_draining(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """During the drain new sessions are refused with ShuttingDownError, counted."""
    session_manager.start_session_nowait(sleep_then, 2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session_manager.shutdown)
        await trio.sleep(1)
        assert session_manager.closing
        with pytest.raises(ts.ShuttingDownError, match="shutting down"):
            await session_manager.start_session(sleep_then, 1)
        with pytest.raises(ts.ShuttingDownError):
            session_manager.start_session_nowait(sleep_then, 1)
    stats = session_manager.statistics()
    assert (stats.rejections["shutting_down"], stats.succeeded) == (2, 1)


@pytest.mark.session_manager(max_sessions=1, max_waiting=5)
async def test_shutdown_rejects_waiters(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """Callers queued for a slot get ShuttingDownError when shutdown starts."""
    errors: list[BaseException] = []

    async def caller(manager: ts.SessionManager) -> None:
        try:
            await manager.start_session(sleep_then, 1)
        except ts.ShuttingDownError as exc:
            errors.append(exc)

    session_manager.start_session_nowait(sleep_then, 2)
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(caller, session_manager)
        await wait_for_active(session_manager, 1, waiting=3)
        report = await session_manager.shutdown()
    stats = check_invariants(session_manager)
    assert len(errors) == 3
    assert (stats.rejections["shutting_down"], stats.waiting, stats.created) == (
        3,
        0,
        1,
    )
    assert report.initial_active == 1
    assert report.duration == 2


async def test_shutdown_from_inside_a_session_drains_then_cancels_its_caller(
    autojump_clock: MockClock,
) -> None:
    """A session calling shutdown() waits out the drain, then is cancelled itself."""
    seen: list[str] = []

    async def admin() -> None:
        try:
            await manager.shutdown(timeout=2)
        except trio.Cancelled:
            seen.append(f"cancelled at {trio.current_time()}")
            raise

    async with ts.open_session_manager(max_sessions=3) as manager:
        caller = manager.start_session_nowait(admin, metadata=META)
        other = manager.start_session_nowait(sleep_then, 1, metadata=META)
        await trio.sleep(0.5)
        with pytest.raises(ts.ShuttingDownError):
            manager.start_session_nowait(sleep_then, 1)
        report = await manager.shutdown()
        assert trio.current_time() == 2
    assert seen == ["cancelled at 2.0"]
    assert caller.outcome is ts.Outcome.CANCELLED
    assert other.outcome is ts.Outcome.SUCCESS
    assert report == ts.ShutdownReport(
        initial_active=2, completed=1, cancelled=1, timeout_reached=True, duration=2
    )
    expect(manager, created=2, succeeded=1, cancelled=1, shutting_down=1)


@pytest.mark.session_manager(shutdown_timeout=5)
async def test_report_adds_up_when_sessions_cancel_themselves_during_drain(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """completed + cancelled == initial_active whatever happens during the drain."""
    first = session_manager.start_session_nowait(sleep_then, 100)
    session_manager.start_session_nowait(sleep_then, 2, timeout=1)
    session_manager.start_session_nowait(fail_after_sleep, 3)
    session_manager.start_session_nowait(sleep_then, 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session_manager.shutdown)
        await trio.sleep(0.5)
        first.cancel()
    report = await session_manager.shutdown()
    assert report.initial_active == 4
    assert (report.completed, report.cancelled) == (3, 1)
    assert report.completed + report.cancelled == report.initial_active
    stats = check_invariants(session_manager)
    assert (stats.cancelled, stats.timed_out, stats.failed) == (2, 1, 1)


@pytest.mark.session_manager(shutdown_timeout=1, shutdown_grace=5)
async def test_shutdown_waits_for_cancelled_sessions_to_unwind(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """A session slow to unwind holds shutdown past its timeout, within the grace."""
    stubborn = await session_manager.start_session(ignore_cancellation_for, 4)
    quick = await session_manager.start_session(ignore_cancellation_for, 0.5)
    report = await session_manager.shutdown()
    assert trio.current_time() == 4
    assert (stubborn.outcome, stubborn.completed_at) == (ts.Outcome.CANCELLED, 4)
    assert quick.outcome is ts.Outcome.SUCCESS
    assert report == ts.ShutdownReport(
        initial_active=2, completed=1, cancelled=1, timeout_reached=True, duration=4
    )


async def test_drain_deadline_and_session_deadline_at_the_same_instant(
    autojump_clock: MockClock,
) -> None:
    """A session timing out as the drain ends is a timeout in the report too."""
    for _ in range(30):  # trio shuffles tasks woken together: try several orders
        async with ts.open_session_manager(request_timeout=None) as manager:
            session = manager.start_session_nowait(sleep_then, 10, timeout=2)
            start = trio.current_time()
            report = await manager.shutdown(timeout=2)
        assert trio.current_time() == start + 2
        assert session.outcome is ts.Outcome.TIMEOUT
        assert (report.completed, report.cancelled) == (1, 0)
        assert not report.timeout_reached
        expect(manager, created=1, timed_out=1)


async def test_use_after_exit_is_a_clear_error(autojump_clock: MockClock) -> None:
    """A manager used after its block exited raises ShuttingDownError saying so."""
    async with ts.open_session_manager() as manager:
        pass
    with pytest.raises(ts.ShuttingDownError, match="block has exited"):
        await manager.start_session(trio.lowlevel.checkpoint)
    with pytest.raises(ts.ShuttingDownError, match="block has exited"):
        manager.start_session_nowait(trio.lowlevel.checkpoint)
    report = await manager.shutdown()
    assert report.initial_active == 0


# ------------------------------------------------------------------ leaving the block


async def test_leaving_the_block_drains_with_configured_timeout(
    autojump_clock: MockClock,
) -> None:
    """Leaving the block shuts down with config.shutdown_timeout."""
    async with ts.open_session_manager(shutdown_timeout=4) as manager:
        session = await manager.start_session(sleep_then, 100)
    assert trio.current_time() == 4
    assert session.outcome is ts.Outcome.CANCELLED


async def test_body_exception_cancels_sessions_and_is_not_wrapped(
    autojump_clock: MockClock,
) -> None:
    """An exception in the block cancels the sessions at once and propagates bare."""
    with pytest.raises(LookupError, match="body failed"):
        async with ts.open_session_manager(shutdown_timeout=50) as manager:
            session = await manager.start_session(sleep_then, 100)
            await trio.sleep(1)
            raise LookupError("body failed")
    assert trio.current_time() == 1
    assert session.outcome is ts.Outcome.CANCELLED


async def test_outside_cancellation_cancels_sessions_at_once(
    autojump_clock: MockClock,
) -> None:
    """Cancelling the code around the manager cancels sessions without a drain."""
    with trio.move_on_after(1):
        async with ts.open_session_manager(shutdown_timeout=50) as manager:
            session = await manager.start_session(sleep_then, 100)
            await trio.sleep_forever()
    assert trio.current_time() == 1
    assert session.outcome is ts.Outcome.CANCELLED
    stats = manager.statistics()
    assert (stats.cancelled, stats.active) == (1, 0)


async def test_outside_cancel_of_a_session_with_its_own_nursery(
    autojump_clock: MockClock,
) -> None:
    """A group of Cancelled is an outside cancellation, not an interruption."""
    sessions: list[ts.Session] = []
    with trio.move_on_after(1):
        async with ts.open_session_manager() as manager:
            sessions.append(await manager.start_session(with_own_nursery, 5))
            sessions.append(await manager.start_session(trio.sleep, 5))
            await trio.sleep(5)
    reasons = {session.cancel_reason for session in sessions}
    assert reasons == {"cancelled because the code around the manager was cancelled"}
    assert [session.outcome for session in sessions] == [ts.Outcome.CANCELLED] * 2
    stats = check_invariants(manager)
    assert (stats.cancelled, stats.active) == (2, 0)


@pytest.mark.parametrize("how", ["outer-cancel", "outer-scope"])
async def test_cancelled_from_outside_mid_admission(
    how: str, autojump_clock: MockClock
) -> None:
    """Cancelling the manager's nursery mid-admission admits and leaks nothing."""
    queued: list[str] = []

    async def caller(manager: ts.SessionManager) -> None:
        try:
            await manager.start_session(sleep_then, 1, metadata=META)
        except trio.Cancelled:
            queued.append("cancelled")
            raise

    with trio.move_on_after(1 if how == "outer-scope" else 100) as outer:
        async with ts.open_session_manager(
            max_sessions=1, max_waiting=2, shutdown_timeout=50
        ) as manager:
            running = manager.start_session_nowait(sleep_then, 10, metadata=META)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller, manager)
                nursery.start_soon(caller, manager)
                await trio.testing.wait_all_tasks_blocked()
                expect(
                    manager,
                    created=1,
                    active=1,
                    waiting=2,
                    metadata_bytes=META_BYTES,
                )
                if how == "outer-cancel":
                    await trio.sleep(1)
                    outer.cancel()
                await trio.sleep(50)
    assert outer.cancelled_caught
    assert trio.current_time() == 1
    assert queued == ["cancelled", "cancelled"]
    assert running.outcome is ts.Outcome.CANCELLED
    assert running.completed_at == 1
    expect(manager, created=1, cancelled=1)
    with pytest.raises(ts.ShuttingDownError):
        manager.start_session_nowait(sleep_then, 1)


async def test_waiter_handed_a_slot_as_the_nursery_is_cancelled(
    autojump_clock: MockClock,
) -> None:
    """A token handed to a queued caller in the step of cancellation goes back."""

    async def caller() -> None:
        await manager.start_session(sleep_then, 1, metadata=META)

    async def release_and_cancel() -> None:
        holder.cancel()
        await trio.lowlevel.checkpoint()
        outer.cancel()

    with trio.CancelScope() as outer:
        async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
            holder = manager.start_session_nowait(sleep_then, 10, metadata=META)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller)
                await trio.testing.wait_all_tasks_blocked()
                await trio.sleep(1)
                await release_and_cancel()
                await trio.sleep(50)
    assert trio.current_time() == 1
    stats = manager.statistics()
    assert stats.active == 0
    assert stats.metadata_bytes == 0
    assert stats.created == stats.completed == stats.cancelled
    assert stats.rejected == 0
