"""The registry of scenarios, and :func:`run_loadtest`, which runs them one by one.

While a user's handler ignores cancellation, a watcher says what the run waits for.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any, final

import attrs
import trio

from ._accounting import (
    MetadataTrackingResult,
    MetricsAccuracyResult,
    metadata_tracking,
    metrics_accuracy,
)
from ._capacity import (
    CapacityLimitResult,
    ConcurrentSessionsResult,
    HeldSessionsResult,
    capacity_limit,
    concurrent_sessions,
    held_sessions,
)
from ._report import LoadTestReport, ScenarioResult
from ._scale import (
    ChurnResult,
    PerformanceBaselineResult,
    ScaleResult,
    performance_baseline,
    scale,
    sustained_churn,
)
from ._shutdown import GracefulShutdownResult, NoHangResult, graceful_shutdown, no_hang
from ._work import ProgressCallback, WatchedWork, Work

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

Scenario = Callable[..., Awaitable[ScenarioResult]]


@final
@attrs.frozen
class _Options:
    """The arguments of :func:`run_loadtest` that reach the scenarios."""

    sessions: int | None
    duration: float | None
    rate: float
    capacity: int
    iterations: int
    budget: float


def _no_options(options: _Options) -> Mapping[str, Any]:
    return {}


@final
@attrs.frozen
class _Entry:
    """One scenario as :func:`run_loadtest` runs it; named by its result."""

    scenario: Scenario
    result: type[ScenarioResult]
    options: Callable[[_Options], Mapping[str, Any]] = _no_options
    progress: bool = False
    standard: bool = True

    @property
    def name(self) -> str:
        return self.result.name


# Every scenario, in the order run_loadtest runs them; the standard ones first.
_ENTRIES = (
    _Entry(concurrent_sessions, ConcurrentSessionsResult),
    _Entry(held_sessions, HeldSessionsResult),
    _Entry(capacity_limit, CapacityLimitResult),
    _Entry(no_hang, NoHangResult),
    _Entry(graceful_shutdown, GracefulShutdownResult, progress=True),
    _Entry(metrics_accuracy, MetricsAccuracyResult),
    _Entry(metadata_tracking, MetadataTrackingResult),
    _Entry(
        performance_baseline,
        PerformanceBaselineResult,
        lambda run: {"iterations": run.iterations, "budget": run.budget},
    ),
    _Entry(
        scale,
        ScaleResult,
        lambda run: {"sessions": 10_000 if run.sessions is None else run.sessions},
        progress=True,
        standard=False,
    ),
    _Entry(
        sustained_churn,
        ChurnResult,
        lambda run: {
            "duration": 5.0 if run.duration is None else run.duration,
            "rate": run.rate,
            "capacity": run.capacity,
        },
        progress=True,
        standard=False,
    ),
)
_BY_NAME = {entry.name: entry for entry in _ENTRIES}

# Documented where the package face re-exports them.
SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {entry.name: entry.scenario for entry in _ENTRIES}
)
SCENARIO_NAMES = tuple(entry.name for entry in _ENTRIES if entry.standard)


def unknown_scenario(names: Iterable[str]) -> str:
    """The message that refuses ``names``, which are not in :data:`SCENARIOS`."""
    return f"unknown scenario {', '.join(names)}; choose from {', '.join(SCENARIOS)}"


async def run_loadtest(
    work: Work | None = None,
    *,
    only: Collection[str] | None = None,
    sessions: int | None = None,
    duration: float | None = None,
    rate: float = 1000.0,
    capacity: int = 200,
    iterations: int = 1000,
    budget: float = 0.001,
    progress: Callable[[str, int, int], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> LoadTestReport:
    """Run the eight standard scenarios, and the scale ones asked for, one by one.

    This is what ``trio-sessions loadtest`` runs; call it from a test to load
    test your own handler::

        async def test_my_handler_under_load():
            report = await loadtest.run_loadtest(my_handler)
            assert report.passed, report.problems

    Args:
      work: Async function every session awaits; :func:`simulated_work` by default.
      only: Names (from :data:`SCENARIO_NAMES`, ``"scale"``, ``"churn"``) of the
        scenarios to run; all eight standard ones by default.
      sessions: Also run :func:`scale` with this many sessions.
      duration: Also run :func:`sustained_churn` for this many seconds.
      rate: Target rate of :func:`sustained_churn`, in sessions per second.
      capacity: Capacity of :func:`sustained_churn`.
      iterations: Creations timed by :func:`performance_baseline`.
      budget: Largest average creation cost, in seconds, that
        :func:`performance_baseline` passes.
      progress: Called as ``progress(name, done, total)`` by the scenarios that
        can take a while (``"shutdown"``, ``"scale"``, ``"churn"``).
      notice: Called with a sentence, every 10 s, while the run waits for
        calls of ``work`` that were cancelled at their deadline and have not
        returned (a handler that ignores cancellation), and once more when
        they return.

    Each result ``work`` returns is dropped as soon as the call returns: the
    load test keeps nothing of it.

    Raises:
      ValueError: ``only`` names an unknown scenario.
    """
    if only is not None:
        unknown = sorted(set(only) - set(SCENARIOS))
        if unknown:
            raise ValueError(unknown_scenario(unknown))
    selected = set(SCENARIO_NAMES if only is None else only)
    if sessions is not None:
        selected.add(ScaleResult.name)
    if duration is not None:
        selected.add(ChurnResult.name)
    options = _Options(sessions, duration, rate, capacity, iterations, budget)
    watched = None if work is None else WatchedWork(work)

    def reporter(name: str) -> ProgressCallback | None:
        if progress is None:
            return None
        report_progress = progress
        return lambda done, total: report_progress(name, done, total)

    start = trio.current_time()
    results: list[ScenarioResult] = []
    try:
        async with trio.open_nursery() as nursery:
            watch = None
            if watched is not None and notice is not None:
                watch = _HandlerWatch(watched, notice)
                nursery.start_soon(watch.run)
            for entry in _ENTRIES:
                if entry.name not in selected:
                    continue
                if watched is not None:
                    watched.scenario = entry.name
                arguments = dict(entry.options(options))
                if entry.progress:
                    arguments["progress"] = reporter(entry.name)
                results.append(await entry.scenario(watched, **arguments))
                if watch is not None:
                    # A scenario ends only once every call of it has returned.
                    watch.going_on()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The watcher never raises: hand over the scenario's own exception
        # (a KeyboardInterrupt, say) as itself.
        if len(group.exceptions) != 1:
            raise
        raise group.exceptions[0] from None
    return LoadTestReport(results=tuple(results), elapsed=trio.current_time() - start)


# A cancelled call gets this long to unwind before the run says it is waiting.
_UNWIND_GRACE = 2.0
# How often the run repeats what it is still waiting for.
_NOTICE_EVERY = 10.0


def _waiting_notice(watched: WatchedWork, now: float) -> str | None:
    """What the run waits for, if a handler call outlived its deadline; else None."""
    overdue = [
        (started, deadline)
        for started, deadline in watched.calls.values()
        if now > deadline + _UNWIND_GRACE
    ]
    if overdue:
        started, deadline = min(overdue, key=lambda call: call[1])
        calls = "1 call" if len(overdue) == 1 else f"{len(overdue)} calls"
        return (
            f"scenario {watched.scenario!r} is waiting for {calls} of {watched.name}: "
            f"cancelled at {'its' if len(overdue) == 1 else 'their'} "
            f"{deadline - started:.3g} s deadline {now - deadline:.0f} s ago, "
            f"{'it has' if len(overdue) == 1 else 'they have'} not returned. "
            "The handler does not respond to cancellation (a shielded cancel "
            "scope, or a loop that never awaits?); the load test cannot go on "
            "until it returns."
        )
    return None


@final
class _HandlerWatch:
    """Says, every ``_NOTICE_EVERY`` seconds, what a stuck run is waiting for;
    and once the calls it told of have returned, that the run goes on."""

    def __init__(self, watched: WatchedWork, notice: Callable[[str], None]) -> None:
        self._watched = watched
        self._notice = notice
        # When the wait was last told of, and in which scenario: None if not.
        self._told_at: float | None = None
        self._told_in = ""

    async def run(self) -> None:
        while True:
            await trio.sleep(1.0)
            self._look(trio.current_time())

    def _look(self, now: float) -> None:
        message = _waiting_notice(self._watched, now)
        if message is None:
            self.going_on()
        elif self._told_at is None or now - self._told_at >= _NOTICE_EVERY:
            self._notice(message)
            self._told_at, self._told_in = now, self._watched.scenario

    def going_on(self) -> None:
        """The calls told of have returned (a scenario has ended): say so, once.

        The run calls it at the end of each scenario too, so that the line
        comes in the step the calls are back, whatever the order of the
        watch's tick and the calls' return in that step, and even if the run
        ends in it.
        """
        if self._told_at is not None:
            self._notice(
                f"scenario {self._told_in!r}: the handler calls returned, going on"
            )
            self._told_at = None
