"""Scenarios 4-5: whole lifecycles end in time, and shutdown drains what runs.

Each scenario sits beside its result class.
"""

from __future__ import annotations

from typing import ClassVar, final

import attrs
import trio

from .. import SessionManager, ShuttingDownError
from .._latency import LatencyRecorder
from ._report import Checks, ScenarioResult, Tally, ms
from ._timeline import open_manager
from ._work import ProgressCallback, Work, config, resolve


@final
@attrs.frozen
class NoHangResult(ScenarioResult):
    """Result of :func:`no_hang`.

    Attributes:
      sessions: Concurrent lifecycles (admit, run, wait, complete).
      deadline: Seconds they all had, manager shutdown included.
      hung: True when the deadline expired first.
      succeeded: Lifecycles whose work returned.
      failed: Lifecycles that raised, timed out or were cancelled.
      total: Seconds from opening the manager to its shutdown returning.
      average: Mean seconds of one lifecycle, from ``run()`` called to returned.
    """

    name: ClassVar[str] = "no-hang"

    sessions: int
    deadline: float
    hung: bool
    succeeded: int
    failed: int
    total: float
    average: float | None

    @property
    def title(self) -> str:
        return f"no hang: {self.sessions} lifecycles, {self.deadline:g} s"

    def describe(self) -> str:
        hung = "HUNG; " if self.hung else ""
        return (
            f"{hung}{self.succeeded}/{self.sessions} ok; "
            f"total {ms(self.total)}, avg {ms(self.average)}"
        )


async def no_hang(
    work: Work | None = None, *, sessions: int = 75, deadline: float = 10.0
) -> NoHangResult:
    """Scenario 4: ``sessions`` concurrent full lifecycles finish inside ``deadline``.

    A manager is opened, ``sessions`` tasks each ``run()`` one session, and the
    manager shuts down, all inside :func:`trio.move_on_after`::

        result = await loadtest.no_hang(sessions=75, deadline=10)
        assert not result.hung

    Args:
      work: Async function each session awaits.
      sessions: Concurrent lifecycles.
      deadline: Seconds allowed for all of it.
    """
    work = resolve(work)
    start = trio.current_time()
    tally = Tally()
    lifetimes = LatencyRecorder()

    async def lifecycle(manager: SessionManager, index: int) -> None:
        began = trio.current_time()
        try:
            await manager.run(work, metadata={"lifecycle": index}, name=f"life-{index}")
        except Exception as exc:
            tally.fail(exc)
        else:
            tally.succeeded += 1
        lifetimes.record(trio.current_time() - began)

    active = 0
    with trio.move_on_after(deadline) as scope:
        async with (
            open_manager(config(sessions)) as manager,
            trio.open_nursery() as nursery,
        ):
            for index in range(sessions):
                nursery.start_soon(lifecycle, manager, index)
        active = manager.statistics().active
    total = trio.current_time() - start
    checks = Checks()
    checks.expect(
        not scope.cancelled_caught, f"still running after the {deadline:g} s deadline"
    )
    tally.expect_all(checks, sessions, "lifecycles")
    checks.expect(active == 0, f"{active} sessions still active after shutdown")
    return NoHangResult(
        **checks.verdict(),
        elapsed=total,
        sessions=sessions,
        deadline=deadline,
        hung=scope.cancelled_caught,
        succeeded=tally.succeeded,
        failed=tally.failed,
        total=total,
        average=lifetimes.summary().mean,
    )


@final
@attrs.frozen
class GracefulShutdownResult(ScenarioResult):
    """Result of :func:`graceful_shutdown`.

    Attributes:
      sessions: Sessions active when shutdown began.
      drain: Drain budget of the shutdown, in seconds.
      initial_active: ``ShutdownReport.initial_active``.
      final_active: ``statistics().active`` after shutdown returned.
      completed_during_shutdown: ``ShutdownReport.completed``.
      cancelled: ``ShutdownReport.cancelled``.
      timeout_reached: ``ShutdownReport.timeout_reached``.
      drain_time: ``ShutdownReport.duration``, in seconds.
      refused_while_draining: A session started during the drain got
        :exc:`ShuttingDownError`.
      succeeded: Sessions whose work returned.
    """

    name: ClassVar[str] = "shutdown"

    sessions: int
    drain: float
    initial_active: int
    final_active: int
    completed_during_shutdown: int
    cancelled: int
    timeout_reached: bool
    drain_time: float
    refused_while_draining: bool
    succeeded: int

    @property
    def title(self) -> str:
        return f"shutdown: {self.sessions} active, {self.drain:g} s drain"

    def describe(self) -> str:
        reached = "yes" if self.timeout_reached else "no"
        return (
            f"initial {self.initial_active}, final {self.final_active}, "
            f"completed {self.completed_during_shutdown} in {self.drain_time:.2f} s, "
            f"cancelled {self.cancelled}, timed out: {reached}"
        )


async def graceful_shutdown(
    work: Work | None = None,
    *,
    sessions: int = 20,
    interval: float = 0.1,
    drain: float = 5.0,
    progress: ProgressCallback | None = None,
) -> GracefulShutdownResult:
    """Scenario 5: shutdown drains ``sessions`` active sessions that finish one by one.

    Session ``i`` does ``work`` and then ends ``(i + 1) * interval`` seconds
    after the start, so with the defaults the drain takes about 2 s of its 5 s
    budget: every session must complete on its own, none be cancelled, and a
    session started during the drain must be refused::

        result = await loadtest.graceful_shutdown(sessions=20, interval=0.1)
        assert result.completed_during_shutdown == 20

    Args:
      work: Async function each session awaits first.
      sessions: Sessions active when shutdown begins.
      interval: Seconds between two sessions finishing.
      drain: Drain budget (``shutdown_timeout``) in seconds.
      progress: Called as ``progress(finished, sessions)`` as sessions end.
    """
    work = resolve(work)
    start = trio.current_time()
    finished = 0
    refused = False
    tally = Tally()

    async def staggered(finish_at: float) -> None:
        nonlocal finished
        try:
            await work()
            await trio.sleep_until(finish_at)
        finally:
            finished += 1
            if progress is not None:
                progress(finished, sessions)

    async def probe(manager: SessionManager) -> None:
        nonlocal refused
        await trio.sleep(interval / 2)
        try:
            late = await manager.start_session(work)
        except ShuttingDownError:
            refused = True
        else:  # pragma: no cover - only a broken manager admits while draining
            await Tally().wait(late)

    async with open_manager(config(sessions, shutdown_timeout=drain)) as manager:
        began = trio.current_time()
        started = [
            await manager.start_session(staggered, began + (index + 1) * interval)
            for index in range(sessions)
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe, manager)
            report = await manager.shutdown()
        final_active = manager.statistics().active
        for session in started:
            await tally.wait(session)
    checks = Checks()
    checks.expect(
        report.initial_active == sessions,
        f"{report.initial_active} active at shutdown, not {sessions}",
    )
    checks.expect(final_active == 0, f"{final_active} still active after shutdown")
    checks.expect(
        report.completed == sessions,
        f"{report.completed}/{sessions} completed during the drain",
    )
    checks.expect(
        report.cancelled == 0 and not report.timeout_reached,
        f"drain timed out, {report.cancelled} sessions cancelled",
    )
    checks.expect(refused, "a session started during the drain was not refused")
    tally.expect_all(checks, sessions)
    return GracefulShutdownResult(
        **checks.verdict(),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        drain=drain,
        initial_active=report.initial_active,
        final_active=final_active,
        completed_during_shutdown=report.completed,
        cancelled=report.cancelled,
        timeout_reached=report.timeout_reached,
        drain_time=report.duration,
        refused_while_draining=refused,
        succeeded=tally.succeeded,
    )
