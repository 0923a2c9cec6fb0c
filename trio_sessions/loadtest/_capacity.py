"""Scenarios 1-3: sessions run together, held together, and refused when full.

Each scenario sits beside its result class.
"""

from __future__ import annotations

from typing import ClassVar, final

import attrs
import trio

from .. import CapacityError, Session, SessionManager
from .._errors import CAPACITY_MESSAGE
from ._report import Checks, ScenarioResult, Tally, ms
from ._timeline import open_manager
from ._work import Gate, Work, config, resolve


@final
@attrs.frozen
class ConcurrentSessionsResult(ScenarioResult):
    """Result of :func:`concurrent_sessions`.

    Attributes:
      sessions: Sessions started at once.
      succeeded: Sessions whose work returned.
      failed: Sessions that raised, timed out or were cancelled.
      peak_active: Most sessions running at once.
      average: Mean run time of a session, in seconds (``None`` if none completed).
      minimum: Shortest run time.
      maximum: Longest run time.
    """

    name: ClassVar[str] = "concurrent"

    sessions: int
    succeeded: int
    failed: int
    peak_active: int
    average: float | None
    minimum: float | None
    maximum: float | None

    @property
    def title(self) -> str:
        return f"{self.sessions} concurrent sessions"

    def describe(self) -> str:
        return (
            f"{self.succeeded}/{self.sessions} ok; avg {ms(self.average)}, "
            f"min {ms(self.minimum)}, max {ms(self.maximum)}"
        )


async def concurrent_sessions(
    work: Work | None = None, *, sessions: int = 50
) -> ConcurrentSessionsResult:
    """Scenario 1: ``sessions`` concurrent sessions of ``work``; all must succeed.

    Figures are the average, minimum and maximum run time from
    :attr:`SessionStatistics.durations`::

        result = await loadtest.concurrent_sessions(my_handler, sessions=50)
        assert result.passed, result.problems

    Args:
      work: Async function each session awaits; :func:`simulated_work` by default.
      sessions: How many sessions start together.
    """
    work = resolve(work)
    start = trio.current_time()
    tally = Tally()
    async with open_manager(config(sessions)) as manager:
        started = [await manager.start_session(work) for _ in range(sessions)]
        for session in started:
            await tally.wait(session)
        stats = manager.statistics()
    checks = Checks()
    tally.expect_all(checks, sessions)
    checks.expect(
        stats.completed == sessions,
        f"statistics count {stats.completed} completed, not {sessions}",
    )
    return ConcurrentSessionsResult(
        **checks.verdict(),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        succeeded=tally.succeeded,
        failed=tally.failed,
        peak_active=stats.peak_active,
        average=stats.durations.mean,
        minimum=stats.durations.min,
        maximum=stats.durations.max,
    )


@final
@attrs.frozen
class HeldSessionsResult(ScenarioResult):
    """Result of :func:`held_sessions`.

    Attributes:
      sessions: Sessions started and held open together.
      admitted: Sessions the manager admitted.
      active_while_held: ``statistics().active`` while all were held.
      peak_active: ``statistics().peak_active`` after the run.
      succeeded: Sessions whose work returned after release.
      failed: Sessions that raised, timed out or were cancelled.
    """

    name: ClassVar[str] = "held"

    sessions: int
    admitted: int
    active_while_held: int
    peak_active: int
    succeeded: int
    failed: int

    @property
    def title(self) -> str:
        return f"{self.sessions} sessions held at once"

    def describe(self) -> str:
        return (
            f"{self.admitted}/{self.sessions} admitted, peak {self.peak_active}; "
            f"{self.succeeded}/{self.sessions} ok"
        )


async def held_sessions(
    work: Work | None = None, *, sessions: int = 100
) -> HeldSessionsResult:
    """Scenario 2: ``sessions`` sessions held open at once: all admitted, all at once.

    The sessions wait until every one of them is running, then do ``work``::

        result = await loadtest.held_sessions(sessions=100)
        assert result.peak_active == 100

    Args:
      work: Async function each session awaits once released.
      sessions: How many sessions are held together (also the capacity).
    """
    work = resolve(work)
    start = trio.current_time()
    gate = Gate(sessions)
    tally = Tally()
    async with open_manager(config(sessions)) as manager:
        started = [
            await manager.start_session(gate.hold_then, work) for _ in range(sessions)
        ]
        await gate.all_arrived.wait()
        active = manager.statistics().active
        gate.release.set()
        for session in started:
            await tally.wait(session)
        stats = manager.statistics()
    checks = Checks()
    checks.expect(
        stats.created == sessions, f"{stats.created}/{sessions} sessions admitted"
    )
    checks.expect(active == sessions, f"{active} active while held, not {sessions}")
    checks.expect(
        stats.peak_active == sessions, f"peak {stats.peak_active}, not {sessions}"
    )
    tally.expect_all(checks, sessions)
    return HeldSessionsResult(
        **checks.verdict(),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        admitted=stats.created,
        active_while_held=active,
        peak_active=stats.peak_active,
        succeeded=tally.succeeded,
        failed=tally.failed,
    )


@final
@attrs.frozen
class CapacityLimitResult(ScenarioResult):
    """Result of :func:`capacity_limit`.

    Attributes:
      capacity: ``max_sessions`` of the manager, all of it held.
      overflow: Concurrent attempts made while it was full.
      rejected: Attempts refused with :data:`CAPACITY_MESSAGE`.
      counted: ``statistics().rejections["capacity"]`` afterwards.
      active_while_full: ``statistics().active`` after the attempts.
      message: The message of the first rejection (``None`` if none).
      succeeded: Held sessions whose work returned after release.
      failed: Held sessions that raised, timed out or were cancelled.
    """

    name: ClassVar[str] = "capacity"

    capacity: int
    overflow: int
    rejected: int
    counted: int
    active_while_full: int
    message: str | None
    succeeded: int
    failed: int

    @property
    def title(self) -> str:
        return f"capacity {self.capacity} full, {self.overflow} overflow"

    def describe(self) -> str:
        return (
            f'{self.rejected}/{self.overflow} rejected ("{self.message}"), '
            f"{self.counted} counted"
        )


async def capacity_limit(
    work: Work | None = None, *, capacity: int = 50, overflow: int = 10
) -> CapacityLimitResult:
    """Scenario 3: with every slot held, ``overflow`` concurrent attempts are refused.

    Every attempt must raise :exc:`CapacityError` with :data:`CAPACITY_MESSAGE`,
    be counted under ``rejections["capacity"]``, and leave the held sessions
    untouched; those then do ``work`` and must succeed::

        result = await loadtest.capacity_limit(capacity=50, overflow=10)
        assert result.rejected == result.counted == 10

    Args:
      work: Async function the held sessions await once released.
      capacity: ``max_sessions`` of the manager.
      overflow: Attempts made, all at once, while it is full.
    """
    work = resolve(work)
    start = trio.current_time()
    gate = Gate(capacity)
    tally = Tally()
    rejected = 0
    admitted: list[Session] = []
    messages: list[str] = []

    async def attempt(manager: SessionManager) -> None:
        nonlocal rejected
        try:
            admitted.append(await manager.start_session(work))
        except CapacityError as exc:
            messages.append(str(exc))
            if str(exc) == CAPACITY_MESSAGE:
                rejected += 1

    async with open_manager(config(capacity, max_waiting=0)) as manager:
        held = [
            await manager.start_session(gate.hold_then, work) for _ in range(capacity)
        ]
        await gate.all_arrived.wait()
        async with trio.open_nursery() as nursery:
            for _ in range(overflow):
                nursery.start_soon(attempt, manager)
        stats = manager.statistics()
        gate.release.set()
        for session in held:
            await tally.wait(session)
        for session in admitted:
            await Tally().wait(session)
    counted = stats.rejections.get("capacity", 0)
    checks = Checks()
    checks.expect(
        rejected == overflow,
        f"{rejected}/{overflow} attempts rejected with {CAPACITY_MESSAGE!r}"
        + (f" ({len(admitted)} admitted over capacity)" if admitted else ""),
    )
    checks.expect(
        all(message == CAPACITY_MESSAGE for message in messages),
        f"rejection messages {sorted(set(messages))!r}",
    )
    checks.expect(counted == overflow, f"{counted} rejections counted, not {overflow}")
    checks.expect(
        stats.active == capacity, f"{stats.active} active while full, not {capacity}"
    )
    tally.expect_all(checks, capacity, "held sessions")
    return CapacityLimitResult(
        **checks.verdict(),
        elapsed=trio.current_time() - start,
        capacity=capacity,
        overflow=overflow,
        rejected=rejected,
        counted=counted,
        active_while_full=stats.active,
        message=messages[0] if messages else None,
        succeeded=tally.succeeded,
        failed=tally.failed,
    )
