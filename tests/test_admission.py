"""Admission: start_session and start_session_nowait, capacity, the FIFO queue.

Who gets a slot, when, and who is refused with CapacityError; sessions that
start sessions on their own manager.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from session_helpers import (
    META,
    META_BYTES,
    expect,
    sleep_then,
)
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import check_invariants, wait_for_active


async def test_start_session_is_a_checkpoint(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """start_session checkpoints, like every async function of Trio's own API."""
    with trio.testing.assert_checkpoints():
        await session_manager.start_session(trio.lowlevel.checkpoint)


async def test_start_session_cancelled_before_admission_admits_nothing(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """A caller cancelled on entry to start_session is not admitted."""
    with trio.CancelScope() as scope:
        scope.cancel()
        await session_manager.start_session(trio.lowlevel.checkpoint)
    assert scope.cancelled_caught
    assert session_manager.statistics().created == 0


async def test_start_session_nowait_never_yields(autojump_clock: MockClock) -> None:
    """start_session_nowait is synchronous: it admits or raises without a checkpoint."""
    release = trio.Event()
    async with ts.open_session_manager(max_sessions=1, max_waiting=5) as manager:
        with trio.testing.assert_no_checkpoints():
            manager.start_session_nowait(release.wait)
            with pytest.raises(ts.CapacityError):
                manager.start_session_nowait(release.wait)
        release.set()
    assert manager.statistics().rejections["capacity"] == 1


@pytest.mark.session_manager(max_sessions=1)
async def test_rejects_at_once_without_waiting(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """With max_waiting=0 a full manager refuses immediately, at the same instant."""
    release = trio.Event()
    await session_manager.start_session(release.wait)
    with pytest.raises(ts.CapacityError, match="Maximum concurrent sessions"):
        await session_manager.start_session(release.wait)
    assert trio.current_time() == 0
    release.set()


@pytest.mark.session_manager(max_sessions=1, max_waiting=10)
async def test_nowait_ignores_max_waiting(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """start_session_nowait refuses when full even though the queue has room."""
    release = trio.Event()
    session_manager.start_session_nowait(release.wait)
    with pytest.raises(ts.CapacityError):
        session_manager.start_session_nowait(release.wait)
    release.set()


# ---------------------------------------------------------------------------- waiting


async def test_waiters_are_admitted_in_fifo_order(autojump_clock: MockClock) -> None:
    """Queued callers are admitted in arrival order as slots free up."""
    admitted: list[int] = []

    async def caller(manager: ts.SessionManager, i: int) -> None:
        await manager.start_session(sleep_then, 1)
        admitted.append(i)

    async with ts.open_session_manager(max_sessions=1, max_waiting=3) as manager:
        await manager.start_session(sleep_then, 1)
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(caller, manager, i)
                await trio.sleep(0.1)  # separate arrivals in time
            assert manager.statistics().waiting == 3
        stats = manager.statistics()
    assert admitted == [0, 1, 2]
    assert trio.current_time() == pytest.approx(4)
    assert stats.wait_times.count == 3
    assert stats.wait_times.max == pytest.approx(
        2.8
    )  # third: queued at 0.2, admitted at 3


async def test_queue_overflow_and_wait_timeout_are_capacity_errors(
    autojump_clock: MockClock,
) -> None:
    """Waiters beyond max_waiting, and waits that time out, get CapacityError."""
    release = trio.Event()
    outcomes: list[tuple[str, float]] = []

    async def caller(manager: ts.SessionManager) -> None:
        try:
            await manager.start_session(release.wait)
        except ts.CapacityError:
            outcomes.append(("rejected", trio.current_time()))

    async with ts.open_session_manager(
        max_sessions=1, max_waiting=2, wait_timeout=3
    ) as manager:
        manager.start_session_nowait(release.wait)
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(caller, manager)
        stats = check_invariants(manager)
        release.set()
    # The third was refused at once; the two queued ones timed out at 3 s.
    assert outcomes == [("rejected", 0), ("rejected", 3), ("rejected", 3)]
    assert (stats.waiting, stats.rejections["capacity"], stats.created) == (0, 3, 1)


@pytest.mark.session_manager(max_sessions=1, max_waiting=1)
async def test_cancelled_waiter_leaves_the_queue(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """A queued caller that is cancelled leaves the queue without taking a slot."""
    release = trio.Event()
    session_manager.start_session_nowait(release.wait)
    with trio.move_on_after(1):
        await session_manager.start_session(release.wait)
    stats = check_invariants(session_manager)
    assert (stats.waiting, stats.created, stats.rejected) == (0, 1, 0)
    release.set()
    await session_manager.run(trio.lowlevel.checkpoint)


@pytest.mark.session_manager(
    max_sessions=1, max_waiting=1, max_session_metadata_bytes=10
)
async def test_full_queue_refuses_before_reading_metadata(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """With slots and queue full, even oversize metadata is a capacity refusal."""
    release = trio.Event()
    session_manager.start_session_nowait(release.wait)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session_manager.run, release.wait)
        await wait_for_active(session_manager, 1, waiting=1)
        with pytest.raises(ts.CapacityError):
            await session_manager.start_session(release.wait, metadata={"x": "y" * 20})
        stats = check_invariants(session_manager)
        assert stats.rejections == {
            "capacity": 1,
            "key_capacity": 0,
            "shutting_down": 0,
            "metadata": 0,
        }
        release.set()


@pytest.mark.session_manager(max_sessions=1, max_waiting=1)
async def test_created_at_of_a_queued_session_is_its_admission(
    session_manager: ts.SessionManager, autojump_clock: MockClock
) -> None:
    """A session that queued was created when it was admitted, not when it queued."""
    await session_manager.start_session(trio.sleep, 2)
    session = await session_manager.start_session(trio.sleep, 1)
    assert session.created_at == 2 == trio.current_time()
    assert session_manager.statistics().wait_times.max == 2


# -------------------------------------------------------------------- nested sessions


async def test_session_starting_a_session_with_room(autojump_clock: MockClock) -> None:
    """A session may start and await another on the same manager when a slot is free."""

    async def parent() -> str:
        child = await manager.start_session(sleep_then, 1, "child", metadata=META)
        return f"parent of {await child.wait()}"

    async with ts.open_session_manager(max_sessions=2) as manager:
        session = manager.start_session_nowait(parent, metadata=META)
        assert await session.wait() == "parent of child"
        assert trio.current_time() == 1
        stats = expect(manager, created=2, succeeded=2)
        assert stats.peak_metadata_bytes == 2 * META_BYTES


async def test_session_starting_a_session_when_full_is_refused(
    autojump_clock: MockClock,
) -> None:
    """With its own slot the last one and no queue, the child is a CapacityError."""

    async def parent() -> None:
        await manager.start_session(sleep_then, 1)

    async with ts.open_session_manager(max_sessions=1) as manager:
        session = manager.start_session_nowait(parent, metadata=META)
        with pytest.raises(ts.CapacityError):
            await session.wait()
        expect(manager, created=1, failed=1, capacity=1)


async def test_session_queueing_behind_itself_times_out(
    autojump_clock: MockClock,
) -> None:
    """A session queueing for its own slot gets CapacityError at wait_timeout."""

    async def parent() -> None:
        await manager.start_session(sleep_then, 1)

    async with ts.open_session_manager(
        max_sessions=1, max_waiting=1, wait_timeout=3
    ) as manager:
        session = manager.start_session_nowait(parent, metadata=META)
        with pytest.raises(ts.CapacityError):
            await session.wait()
        assert session.completed_at == 3
        expect(manager, created=1, failed=1, capacity=1)


async def test_session_queueing_behind_itself_is_freed_by_shutdown(
    autojump_clock: MockClock,
) -> None:
    """A session queued forever behind itself gets ShuttingDownError; no deadlock."""

    async def parent() -> None:
        await manager.start_session(sleep_then, 1)

    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        session = manager.start_session_nowait(parent, metadata=META)
        await trio.sleep(4)
        expect(manager, created=1, active=1, waiting=1, metadata_bytes=META_BYTES)
        report = await manager.shutdown(timeout=10)
        assert trio.current_time() == 4
    assert session.outcome is ts.Outcome.ERROR
    with pytest.raises(ts.ShuttingDownError):
        await session.wait()
    assert report == ts.ShutdownReport(
        initial_active=1, completed=1, cancelled=0, timeout_reached=False, duration=0
    )
    expect(manager, created=1, failed=1, shutting_down=1)
