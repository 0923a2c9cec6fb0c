"""AdmissionGuard: a second gate at admission, released in the step a session ends."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import trio_sessions as ts


class SharedLimit(ts.AdmissionGuard):
    """A limit shared by several managers of one process, with waiting."""

    reasons = ("global_capacity",)

    def __init__(self, limit: int) -> None:
        self.limiter = trio.CapacityLimiter(limit)
        self.running = False
        self.stopped = False
        self.released: list[str] = []

    async def run(
        self,
        manager: ts.SessionManager,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.running = True
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.running = False
            self.stopped = True

    async def acquire(self, session: ts.Session, deadline: float) -> None:
        await trio.lowlevel.checkpoint()
        try:
            self.limiter.acquire_on_behalf_of_nowait(session)
        except trio.WouldBlock:
            pass
        else:
            return
        with trio.move_on_at(deadline):
            await self.limiter.acquire_on_behalf_of(session)
            return
        raise ts.CapacityError("global session limit reached", reason="global_capacity")

    def release(self, session: ts.Session) -> None:
        self.limiter.release_on_behalf_of(session)
        self.released.append(session.id)


async def hold(seconds: float) -> None:
    await trio.sleep(seconds)


async def test_guard_limits_across_managers(autojump_clock: MockClock) -> None:
    """Two managers sharing a guard admit only its limit, refusing with its reason."""
    guard = SharedLimit(2)
    async with (
        ts.open_session_manager(guard=guard) as first,
        ts.open_session_manager(guard=guard) as second,
    ):
        assert guard.running
        await first.start_session(hold, 1)
        await second.start_session(hold, 1)
        with pytest.raises(ts.CapacityError, match="global") as info:
            await second.start_session(hold, 1)
        assert info.value.reason == "global_capacity"
        stats = second.statistics()
        assert stats.rejections["global_capacity"] == 1
        assert stats.rejected == 1
        assert (stats.active, stats.created) == (1, 1)
        # The refused caller gave its local slot back.
        assert second.statistics().active == 1
    assert guard.limiter.borrowed_tokens == 0
    assert len(guard.released) == 2
    assert guard.stopped


async def test_guard_waits_with_wait_timeout(autojump_clock: MockClock) -> None:
    """With max_waiting, callers wait for the guard up to wait_timeout."""
    guard = SharedLimit(1)
    async with ts.open_session_manager(
        guard=guard, max_waiting=5, wait_timeout=3
    ) as manager:
        await manager.start_session(hold, 2)
        admitted = await manager.start_session(hold, 10)
        assert trio.current_time() == 2  # waited for the first to end
        assert admitted.created_at == 2  # admitted then, not when it queued
        with pytest.raises(ts.CapacityError, match="global"):
            await manager.start_session(hold, 1)
        assert trio.current_time() == 5
        stats = manager.statistics()
        assert stats.wait_times.count == 1
        assert stats.wait_times.max == 2
        assert stats.waiting == 0
        admitted.cancel()


async def test_shutdown_rejects_callers_waiting_on_the_guard(
    autojump_clock: MockClock,
) -> None:
    """A caller waiting on the guard gets ShuttingDownError when shutdown starts."""
    guard = SharedLimit(1)
    outcome: list[BaseException] = []

    async def caller(manager: ts.SessionManager) -> None:
        try:
            await manager.start_session(hold, 1)
        except ts.ShuttingDownError as exc:
            outcome.append(exc)

    async with ts.open_session_manager(guard=guard, max_waiting=5) as manager:
        await manager.start_session(hold, 4)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, manager)
            await trio.testing.wait_all_tasks_blocked()
            assert manager.statistics().waiting == 1
            await manager.shutdown()
    assert len(outcome) == 1
    stats = manager.statistics()
    assert (stats.created, stats.rejections["shutting_down"], stats.active) == (1, 1, 0)
    assert guard.limiter.borrowed_tokens == 0


async def test_nowait_refuses_with_a_guard(autojump_clock: MockClock) -> None:
    """start_session_nowait cannot consult a guard and says so."""
    async with ts.open_session_manager(guard=SharedLimit(1)) as manager:
        with pytest.raises(RuntimeError, match="admission guard"):
            manager.start_session_nowait(hold, 1)
        await manager.run(hold, 0)
    assert manager.statistics().created == 1


async def test_failing_release_is_logged_and_counts_stay_exact(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A guard whose release raises is logged; the session's bookkeeping is intact."""

    class Broken(SharedLimit):
        def release(self, session: ts.Session) -> None:
            super().release(session)
            raise OSError("backend gone")

    with caplog.at_level(logging.ERROR, logger="trio_sessions"):
        async with ts.open_session_manager(guard=Broken(3)) as manager:
            await manager.run(hold, 1)
    assert "backend gone" in caplog.text
    stats = manager.statistics()
    assert (stats.succeeded, stats.active, stats.metadata_bytes) == (1, 0, 0)


async def test_guard_refusal_releases_local_slot_for_others(
    autojump_clock: MockClock,
) -> None:
    """A session refused by the guard frees its local slot at once."""
    guard = SharedLimit(1)
    async with (
        ts.open_session_manager(guard=guard, max_sessions=1) as manager,
        ts.open_session_manager(guard=guard) as other,
    ):
        await other.start_session(hold, 5)
        with pytest.raises(ts.CapacityError):
            await manager.start_session(hold, 1)
        assert manager.statistics().active == 0
        # wait until the other ends: the local slot is free, the guard too
        await trio.sleep(5)
        await manager.run(hold, 1)
    assert math.isclose(trio.current_time(), 6)


async def test_guarded_manager_refuses_with_shutting_down_when_closed(
    autojump_clock: MockClock,
) -> None:
    """After its block, a guarded manager says it is closed, for both entry points."""
    async with ts.open_session_manager(guard=SharedLimit(1)) as manager:
        pass
    with pytest.raises(ts.ShuttingDownError, match="block has exited"):
        await manager.start_session(hold, 1)
    with pytest.raises(ts.ShuttingDownError, match="block has exited"):
        manager.start_session_nowait(hold, 1)
    assert manager.statistics().rejections["shutting_down"] == 2


class GrantFirst(ts.AdmissionGuard):
    """Grants its first lease only, then makes every caller wait until its deadline."""

    reasons = ("global_capacity",)

    def __init__(self, round_trip: float = 0.0) -> None:
        self.round_trip = round_trip
        self.granted = 0
        self.deadlines: list[float] = []

    async def acquire(self, session: ts.Session, deadline: float) -> None:
        await trio.sleep(self.round_trip)
        if not self.granted:
            self.granted = 1
            return
        self.deadlines.append(deadline)
        if deadline > -math.inf:
            await trio.sleep_until(deadline)
        raise ts.CapacityError("full", reason="global_capacity")

    def release(self, session: ts.Session) -> None:
        pass


async def test_wait_timeout_bounds_local_queue_and_guard_together(
    autojump_clock: MockClock,
) -> None:
    """A caller that queued locally and then waits on the guard gets one budget."""
    guard = GrantFirst()
    async with ts.open_session_manager(
        guard=guard, max_sessions=1, max_waiting=5, wait_timeout=3
    ) as manager:
        first = await manager.start_session(hold, 2)
        with pytest.raises(ts.CapacityError):
            # The local slot frees at t=2, then the guard makes it wait: the
            # whole wait ends at t=3, not 2 + 3.
            await manager.start_session(hold, 1)
        assert trio.current_time() == 3
        assert guard.deadlines == [3]
        await first.wait()


async def test_callers_that_may_not_queue_are_not_waiting(
    autojump_clock: MockClock,
) -> None:
    """With max_waiting=0, a caller's round trip to the guard is not a wait."""
    seen: list[int] = []

    class SlowTrip(SharedLimit):
        async def acquire(self, session: ts.Session, deadline: float) -> None:
            await trio.sleep(1)
            await super().acquire(session, deadline)

    guard = SlowTrip(10)
    async with ts.open_session_manager(guard=guard, max_waiting=0) as manager:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(manager.run, hold, 0)
            await trio.testing.wait_all_tasks_blocked()
            seen.append(manager.statistics().waiting)
        stats = manager.statistics()
    assert seen == [0]
    assert (stats.succeeded, stats.wait_times.count) == (3, 0)


async def test_shutdown_returns_once_the_guard_has_stopped(
    autojump_clock: MockClock,
) -> None:
    """Callers inside the guard at shutdown leave it before the guard stops."""
    order: list[str] = []

    class Recording(SharedLimit):
        async def run(
            self,
            manager: ts.SessionManager,
            *,
            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                order.append("guard stopped")

        async def acquire(self, session: ts.Session, deadline: float) -> None:
            try:
                await trio.sleep(5)  # a slow backend
            finally:
                order.append("caller left")

    async def refused(manager: ts.SessionManager) -> None:
        with pytest.raises(ts.ShuttingDownError):
            await manager.start_session(hold, 1)

    async with (
        ts.open_session_manager(guard=Recording(3)) as manager,
        trio.open_nursery() as nursery,
    ):
        for _ in range(3):
            nursery.start_soon(refused, manager)
        await trio.testing.wait_all_tasks_blocked()
        await manager.shutdown()
        order.append("shutdown returned")
    assert order == ["caller left"] * 3 + ["guard stopped", "shutdown returned"]


async def test_shutdown_cancelled_while_the_guard_stops_keeps_its_report(
    autojump_clock: MockClock,
) -> None:
    """Cancelled while waiting for a slow guard to stop: the guard still stops."""
    stopped_at: list[float] = []

    class SlowToStop(SharedLimit):
        async def run(
            self,
            manager: ts.SessionManager,
            *,
            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(5)  # flushing its last releases
                stopped_at.append(trio.current_time())

    async with ts.open_session_manager(guard=SlowToStop(3)) as manager:
        await manager.run(hold, 1)
        with trio.move_on_after(2) as waited:
            await manager.shutdown()
        assert waited.cancelled_caught  # cancelled while the guard stopped
        assert manager.closing
        assert trio.current_time() == 3
    # Leaving the block waits for the guard, which was not cut short.
    assert stopped_at == [6]
    report = await manager.shutdown()
    assert (report.initial_active, report.cancelled) == (0, 0)


class SlowAsk(ts.AdmissionGuard):
    """Grants every lease after ``seconds``, whether asked or waited for."""

    def __init__(self, seconds: float, bounded: bool) -> None:
        self.seconds = seconds
        self.bounded_asks = bounded  # type: ignore[misc]  # per instance, for the test
        self.granted: list[ts.Session] = []
        self.released: list[ts.Session] = []

    async def acquire(self, session: ts.Session, deadline: float) -> None:
        await trio.sleep(self.seconds)
        self.granted.append(session)

    def release(self, session: ts.Session) -> None:
        self.released.append(session)


@pytest.mark.parametrize(
    ("bounded", "refused_at"), [(True, 5.0), (False, 1.0)], ids=["bounded", "not"]
)
async def test_shutdown_during_an_ask_refuses_once_it_returns_if_bounded(
    bounded: bool, refused_at: float, autojump_clock: MockClock
) -> None:
    """A caller only asking (no queue) when shutdown starts is refused either way.

    With ``bounded_asks`` its ask has no cancel scope: it runs to its end
    (5 s), then the caller is refused and the lease it got goes back. Without,
    shutdown cancels the ask at once (1 s), and nothing was granted.
    """
    guard = SlowAsk(5, bounded)
    refusals: list[float] = []

    async def caller(manager: ts.SessionManager) -> None:
        with pytest.raises(ts.ShuttingDownError):
            await manager.start_session(hold, 1)
        refusals.append(trio.current_time())

    async with (
        ts.open_session_manager(guard=guard, max_waiting=0) as manager,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(caller, manager)
        await trio.sleep(1)
        report = await manager.shutdown()
        # No session to drain, and this guard's run() ended at startup.
        assert trio.current_time() == 1
    assert refusals == [refused_at]
    assert report.initial_active == 0
    assert guard.released == guard.granted
    assert len(guard.granted) == (1 if bounded else 0)
    stats = manager.statistics()
    assert (stats.created, stats.rejections["shutting_down"]) == (0, 1)
