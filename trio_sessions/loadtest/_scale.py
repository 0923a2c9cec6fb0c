"""Scenario 8 and the scale scenarios: the cost of one admission, and many at once.

:func:`performance_baseline` times single admissions; :func:`scale` holds
100,000 sessions open together; :func:`sustained_churn` admits at a steady rate.
Their admission loops are measured, so they stay as lean as they are.
"""

from __future__ import annotations

import math
import sys
import time
from typing import ClassVar, final

import attrs
import trio

from .. import CapacityError, Session
from ._report import Checks, ScenarioResult, Tally, ms, us
from ._timeline import open_manager
from ._work import SESSION_TIMEOUT, ProgressCallback, Work, config, resolve


@final
@attrs.frozen
class PerformanceBaselineResult(ScenarioResult):
    """Result of :func:`performance_baseline`: the cost of admitting one session.

    Times are wall-clock seconds of ``start_session_nowait`` calls.

    Attributes:
      iterations: Sessions created.
      average: Mean cost of one creation.
      minimum: Cheapest creation.
      maximum: Dearest creation.
      p99: 99th percentile of the cost.
      per_second: Creations per second at the average cost.
      budget: The largest average cost that passes.
      succeeded: Created sessions whose work returned.
    """

    name: ClassVar[str] = "baseline"

    iterations: int
    average: float
    minimum: float
    maximum: float
    p99: float
    per_second: float
    budget: float
    succeeded: int

    @property
    def title(self) -> str:
        return f"baseline: {self.iterations:,} creations"

    def describe(self) -> str:
        return (
            f"avg {us(self.average)}, min {us(self.minimum)}, "
            f"max {us(self.maximum)}, p99 {us(self.p99)}"
        )


async def performance_baseline(
    work: Work | None = None, *, iterations: int = 1000, budget: float = 0.001
) -> PerformanceBaselineResult:
    """Scenario 8: the cost of creating a session, over ``iterations`` creations.

    Each :meth:`SessionManager.start_session_nowait` call is timed with
    :func:`time.perf_counter` (a CPU cost, which a mock Trio clock would hide);
    the average must stay under ``budget`` seconds, and every created session
    must then succeed::

        result = await loadtest.performance_baseline(iterations=1000)
        print(f"{result.average * 1e6:.1f} µs per session")

    Args:
      work: Async function each created session awaits.
      iterations: Sessions created (also the capacity).
      budget: Largest average creation cost, in seconds, that passes.
    """
    work = resolve(work)
    iterations = max(iterations, 1)
    start = trio.current_time()
    tally = Tally()
    costs: list[float] = []
    perf_counter = time.perf_counter
    async with open_manager(config(iterations)) as manager:
        started: list[Session] = []
        for _ in range(iterations):
            before = perf_counter()
            session = manager.start_session_nowait(work)
            costs.append(perf_counter() - before)
            started.append(session)
        for session in started:
            await tally.wait(session)
    costs.sort()
    average = math.fsum(costs) / len(costs)
    checks = Checks()
    checks.expect(
        average <= budget,
        f"average creation {us(average)}, over the {us(budget)} budget",
    )
    tally.expect_all(checks, iterations)
    return PerformanceBaselineResult(
        **checks.verdict(),
        elapsed=trio.current_time() - start,
        iterations=iterations,
        average=average,
        minimum=costs[0],
        maximum=costs[-1],
        p99=costs[min(len(costs) - 1, math.ceil(0.99 * len(costs)) - 1)],
        per_second=1 / average if average > 0 else math.inf,
        budget=budget,
        succeeded=tally.succeeded,
    )


@final
@attrs.frozen
class ScaleResult(ScenarioResult):
    """Result of :func:`scale`.

    Attributes:
      sessions: Sessions started and held open together.
      admitted: Sessions the manager admitted.
      peak_active: ``statistics().peak_active``.
      succeeded: Sessions whose work returned after release.
      failed: Sessions that raised, timed out or were cancelled.
      admit_time: Seconds until all were admitted and running.
      work_time: Seconds from their release until all completed.
      total: Seconds until all completed.
      per_second: Sessions completed per second over ``total``.
      peak_rss_mb: Peak resident memory of the process in MiB (``None`` where
        the platform cannot tell).
    """

    name: ClassVar[str] = "scale"

    sessions: int
    admitted: int
    peak_active: int
    succeeded: int
    failed: int
    admit_time: float
    work_time: float
    total: float
    per_second: float
    peak_rss_mb: float | None

    @property
    def title(self) -> str:
        return f"scale: {self.sessions:,} sessions at once"

    def describe(self) -> str:
        rss = (
            ""
            if self.peak_rss_mb is None
            else f", peak RSS {self.peak_rss_mb:,.0f} MiB"
        )
        return (
            f"{self.admitted:,} admitted and running in {self.admit_time:.2f} s, "
            f"peak {self.peak_active:,}; {self.succeeded:,} succeeded "
            f"{self.work_time:.2f} s after release; total {self.total:.2f} s "
            f"({self.per_second:,.0f}/s){rss}"
        )


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


_PROGRESS_EVERY = 1000


async def scale(
    work: Work | None = None,
    *,
    sessions: int = 10_000,
    progress: ProgressCallback | None = None,
) -> ScaleResult:
    """Scale scenario: ``sessions`` sessions (10,000 or 100,000…) held open at once.

    Sessions are admitted with :meth:`SessionManager.start_session_nowait`,
    held until every one of them runs, then released to do ``work``; all must
    be admitted and succeed. Only counters are kept, not the sessions::

        result = await loadtest.scale(sessions=100_000)
        assert result.peak_active == 100_000

    Sessions have no deadline of their own, since holding 100,000 of them
    open takes a while; instead, all of them must complete within 10 seconds
    of their release (1 ms per session beyond 10,000 sessions), or the rest
    are cancelled and the scenario fails.

    Args:
      work: Async function each session awaits once released.
      sessions: Sessions held together (also the capacity).
      progress: Called as ``progress(done, 3 * sessions)``: sessions admitted,
        then sessions running, then sessions completed.
    """
    work = resolve(work)
    sessions = max(sessions, 1)
    total_steps = 3 * sessions
    start = trio.current_time()
    admitted = arrived = ended = 0
    all_arrived, release, all_ended = trio.Event(), trio.Event(), trio.Event()

    def step() -> None:
        # Admissions, arrivals and completions interleave: count them together.
        if progress is not None:
            done = admitted + arrived + ended
            if done % _PROGRESS_EVERY == 0:
                progress(done, total_steps)

    async def held() -> None:
        nonlocal arrived, ended
        try:
            arrived += 1
            step()
            if arrived == sessions:
                all_arrived.set()
            await release.wait()
            await work()
        finally:
            ended += 1
            step()
            if ended == sessions:
                all_ended.set()

    # Holding 100,000 sessions open takes a while, so the sessions get no deadline
    # of their own: one deadline on the whole work phase bounds a hung handler, and
    # a zero drain cancels whatever it left running.
    manager_config = config(sessions, request_timeout=None, shutdown_timeout=0)
    work_deadline = max(SESSION_TIMEOUT, sessions / 1000)
    async with open_manager(manager_config) as manager:
        while admitted < sessions:
            manager.start_session_nowait(held)
            admitted += 1
            step()
            if admitted % _PROGRESS_EVERY == 0:
                # Let Ctrl+C in, even while admitting 100,000 sessions.
                await trio.lowlevel.checkpoint()
        await all_arrived.wait()
        admit_time = trio.current_time() - start
        active = manager.statistics().active
        released = trio.current_time()
        release.set()
        with trio.move_on_after(work_deadline):
            await all_ended.wait()
        work_time = trio.current_time() - released
        still_running = sessions - ended
    stats = manager.statistics()
    total = trio.current_time() - start
    if progress is not None:
        progress(total_steps, total_steps)
    checks = Checks()
    checks.expect(
        active == sessions and stats.created == sessions,
        f"{active} active while held, {stats.created} admitted, not {sessions}",
    )
    checks.expect(
        stats.peak_active == sessions, f"peak {stats.peak_active}, not {sessions}"
    )
    checks.expect(
        still_running == 0,
        f"{still_running} sessions still running {work_deadline:g} s "
        "after release (cancelled)",
    )
    checks.expect(
        stats.succeeded == sessions, f"{stats.succeeded}/{sessions} sessions succeeded"
    )
    return ScaleResult(
        **checks.verdict(),
        elapsed=total,
        sessions=sessions,
        admitted=stats.created,
        peak_active=stats.peak_active,
        succeeded=stats.succeeded,
        failed=stats.completed - stats.succeeded,
        admit_time=admit_time,
        work_time=work_time,
        total=total,
        per_second=sessions / total if total > 0 else math.inf,
        peak_rss_mb=_peak_rss_mb(),
    )


@final
@attrs.frozen
class ChurnResult(ScenarioResult):
    """Result of :func:`sustained_churn`.

    Attributes:
      duration: Seconds of load.
      target_rate: Sessions per second asked for.
      capacity: ``max_sessions`` of the manager.
      attempted: Sessions the load generator tried to start.
      admitted: Sessions admitted.
      rejected: Sessions refused (capacity).
      achieved_rate: Sessions admitted per second of load.
      succeeded: Sessions whose work returned.
      failed: Sessions that raised, timed out or were cancelled.
      peak_active: ``statistics().peak_active``.
      p50: Median run time of a session, in seconds.
      p99: 99th percentile of the run time.
    """

    name: ClassVar[str] = "churn"

    duration: float
    target_rate: float
    capacity: int
    attempted: int
    admitted: int
    rejected: int
    achieved_rate: float
    succeeded: int
    failed: int
    peak_active: int
    p50: float | None
    p99: float | None

    @property
    def title(self) -> str:
        return f"churn: {self.target_rate:,.0f}/s for {self.duration:g} s"

    def describe(self) -> str:
        return (
            f"{self.admitted:,}/{self.attempted:,} admitted "
            f"({self.achieved_rate:,.0f}/s), {self.rejected} rejected, "
            f"{self.succeeded:,} succeeded, peak {self.peak_active}; "
            f"p50 {ms(self.p50)}, p99 {ms(self.p99)}"
        )


_TICK = 0.01


async def sustained_churn(
    work: Work | None = None,
    *,
    duration: float = 5.0,
    rate: float = 1000.0,
    capacity: int = 200,
    progress: ProgressCallback | None = None,
) -> ChurnResult:
    """Scale scenario: start ``rate`` sessions per second for ``duration`` seconds.

    Every 10 ms the load generator starts the sessions that are due, with
    :meth:`SessionManager.start_session_nowait`; none may be rejected or
    fail, and the admitted rate must reach 95% of ``rate``::

        result = await loadtest.sustained_churn(duration=10, rate=2000)
        assert result.rejected == 0

    Args:
      work: Async function each session awaits.
      duration: Seconds of load.
      rate: Target sessions per second.
      capacity: ``max_sessions`` of the manager.
      progress: Called as ``progress(elapsed_ms, duration_ms)`` every tick.
    """
    work = resolve(work)
    start = trio.current_time()
    target = max(round(rate * duration), 0)
    attempted = rejected = 0
    duration_ms = max(round(duration * 1000), 1)
    async with open_manager(config(capacity)) as manager:
        began = trio.current_time()
        while True:
            elapsed = trio.current_time() - began
            due = (
                target
                if elapsed >= duration
                else min(target, math.floor(rate * elapsed))
            )
            while attempted < due:
                attempted += 1
                try:
                    manager.start_session_nowait(work)
                except CapacityError:
                    rejected += 1
            if progress is not None:
                progress(min(round(elapsed * 1000), duration_ms), duration_ms)
            if attempted >= target:
                break
            await trio.sleep(_TICK)
        load_time = max(trio.current_time() - began, duration)
    stats = manager.statistics()
    admitted = stats.created
    achieved = admitted / load_time if load_time > 0 else 0.0
    checks = Checks()
    checks.expect(rejected == 0, f"{rejected} sessions rejected at capacity {capacity}")
    checks.expect(
        achieved >= 0.95 * rate,
        f"admitted {achieved:,.0f}/s, under 95% of the {rate:,.0f}/s target",
    )
    checks.expect(
        stats.succeeded == admitted, f"{stats.succeeded}/{admitted} sessions succeeded"
    )
    return ChurnResult(
        **checks.verdict(),
        elapsed=trio.current_time() - start,
        duration=duration,
        target_rate=rate,
        capacity=capacity,
        attempted=attempted,
        admitted=admitted,
        rejected=rejected,
        achieved_rate=achieved,
        succeeded=stats.succeeded,
        failed=stats.completed - stats.succeeded,
        peak_active=stats.peak_active,
        p50=stats.durations.p50,
        p99=stats.durations.p99,
    )
