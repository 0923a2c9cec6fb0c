"""Load-test scenarios for a session manager, as a library that pytest can call too.

Each scenario is an async function returning a frozen result with ``passed`` and
its figures; :func:`run_loadtest` runs them all, ``trio-sessions loadtest`` renders.
"""

from __future__ import annotations

import gc
import json
import math
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar, final

import attrs
import trio

from . import (
    CapacityError,
    LatencySummary,
    Outcome,
    Session,
    SessionCancelled,
    SessionConfig,
    SessionManager,
    SessionTimeout,
    ShuttingDownError,
    open_session_manager,
)
from ._latency import LatencyRecorder

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "CAPACITY_MESSAGE",
    "SCENARIO_NAMES",
    "WORK_SECONDS",
    "CapacityLimitResult",
    "ChurnResult",
    "ConcurrentSessionsResult",
    "GracefulShutdownResult",
    "HeldSessionsResult",
    "HttpLoadResult",
    "LoadTestReport",
    "MetadataTrackingResult",
    "MetricsAccuracyResult",
    "NoHangResult",
    "PerformanceBaselineResult",
    "ProgressCallback",
    "ScaleResult",
    "ScenarioResult",
    "Work",
    "capacity_limit",
    "concurrent_sessions",
    "graceful_shutdown",
    "held_sessions",
    "http_load",
    "metadata_tracking",
    "metrics_accuracy",
    "no_hang",
    "performance_baseline",
    "run_loadtest",
    "scale",
    "simulated_work",
    "sustained_churn",
]

Work = Callable[[], Awaitable[object]]
"""The work a session does: an async function called with no arguments."""

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while a long scenario runs."""

WORK_SECONDS = 0.01
"""How long :func:`simulated_work` takes: 10 ms."""

CAPACITY_MESSAGE = "Maximum concurrent sessions reached"
"""The message every capacity rejection must carry."""

SCENARIO_NAMES = (
    "concurrent",
    "held",
    "capacity",
    "no-hang",
    "shutdown",
    "metrics",
    "metadata",
    "baseline",
)
"""Names of the eight standard scenarios, in the order :func:`run_loadtest` runs them.

The scale scenarios ``"scale"`` and ``"churn"`` run only when asked for.
"""

# A hung user handler must turn into a failed scenario, not a hung load test.
_SESSION_TIMEOUT = 10.0


async def simulated_work() -> None:
    """The built-in work of every scenario: sleep for :data:`WORK_SECONDS`."""
    await trio.sleep(WORK_SECONDS)


# ---------------------------------------------------------------- results


@attrs.frozen
class ScenarioResult:
    """What every scenario result has: whether it passed, why not, and how long it took.

    Each scenario returns a final subclass that adds its own figures::

        result = await loadtest.capacity_limit()
        assert result.passed, result.problems

    Attributes:
      passed: True when every check of the scenario held.
      problems: One sentence per check that failed (empty when ``passed``).
      elapsed: Seconds the scenario took on the Trio clock.
    """

    name: ClassVar[str] = "scenario"

    passed: bool
    problems: tuple[str, ...]
    elapsed: float

    @property
    def title(self) -> str:
        """A one-line description of what the scenario does, with its parameters."""
        return self.name

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        return ""

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON-encodable data, with ``name`` and ``title``."""
        data: dict[str, Any] = {"name": self.name, "title": self.title}
        data.update(attrs.asdict(self))
        return data


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
        """A one-line description of what the scenario does, with its parameters."""
        return f"{self.sessions} concurrent sessions"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        return (
            f"{self.succeeded}/{self.sessions} ok; avg {_ms(self.average)}, "
            f"min {_ms(self.minimum)}, max {_ms(self.maximum)}"
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
        """A one-line description of what the scenario does, with its parameters."""
        return f"{self.sessions} sessions held at once"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        return (
            f"{self.admitted}/{self.sessions} admitted, peak {self.peak_active}; "
            f"{self.succeeded}/{self.sessions} ok"
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
        """A one-line description of what the scenario does, with its parameters."""
        return f"capacity {self.capacity} full, {self.overflow} overflow"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        return (
            f'{self.rejected}/{self.overflow} rejected ("{self.message}"), '
            f"{self.counted} counted"
        )


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
        """A one-line description of what the scenario does, with its parameters."""
        return f"no hang: {self.sessions} lifecycles, {self.deadline:g} s"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        hung = "HUNG; " if self.hung else ""
        return (
            f"{hung}{self.succeeded}/{self.sessions} ok; "
            f"total {_ms(self.total)}, avg {_ms(self.average)}"
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
        """A one-line description of what the scenario does, with its parameters."""
        return f"shutdown: {self.sessions} active, {self.drain:g} s drain"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        reached = "yes" if self.timeout_reached else "no"
        return (
            f"initial {self.initial_active}, final {self.final_active}, "
            f"completed {self.completed_during_shutdown} in {self.drain_time:.2f} s, "
            f"cancelled {self.cancelled}, timed out: {reached}"
        )


@final
@attrs.frozen
class MetricsAccuracyResult(ScenarioResult):
    """Result of :func:`metrics_accuracy`: observed counts beside expected ones.

    Attributes:
      sessions: Sessions run with a planned outcome each.
      created: ``statistics().created``.
      completed: ``statistics().completed``.
      succeeded: ``statistics().succeeded``.
      failed: ``statistics().failed``.
      timed_out: ``statistics().timed_out``.
      cancelled: ``statistics().cancelled``.
      success_rate: ``statistics().success_rate``.
      expected_succeeded: Sessions planned to succeed.
      expected_failed: Sessions planned to raise.
      expected_timed_out: Sessions planned to hit their deadline.
      expected_cancelled: Sessions planned to be cancelled.
      expected_success_rate: ``expected_succeeded / sessions``.
      mismatched: Sessions whose outcome, or whose ``wait()`` result, was not
        the planned one.
    """

    name: ClassVar[str] = "metrics"

    sessions: int
    created: int
    completed: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    success_rate: float | None
    expected_succeeded: int
    expected_failed: int
    expected_timed_out: int
    expected_cancelled: int
    expected_success_rate: float
    mismatched: int

    @property
    def title(self) -> str:
        """A one-line description of what the scenario does, with its parameters."""
        return f"metrics: {self.sessions} sessions, known mix"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        observed = (self.succeeded, self.failed, self.timed_out, self.cancelled)
        expected = (
            self.expected_succeeded,
            self.expected_failed,
            self.expected_timed_out,
            self.expected_cancelled,
        )
        verdict = (
            "as planned"
            if observed == expected
            else "planned " + "/".join(map(str, expected))
        )
        return (
            f"ok {self.succeeded}, error {self.failed}, timeout {self.timed_out}, "
            f"cancelled {self.cancelled}, {verdict}; "
            f"success {_percent(self.success_rate)}"
        )


@final
@attrs.frozen
class MetadataTrackingResult(ScenarioResult):
    """Result of :func:`metadata_tracking`.

    The byte figures are ``statistics().metadata_bytes`` at each stage.

    Attributes:
      sessions: Sessions admitted, each with larger metadata than the last.
      bytes_up: Bytes held once all were admitted.
      expected_up: Sum of the sizes of all their metadata.
      bytes_half: Bytes held once the first half completed.
      expected_half: Sum of the sizes of the second half's metadata.
      bytes_zero: Bytes held once all completed.
      peak_bytes: ``statistics().peak_metadata_bytes``.
      mismeasured: Sessions whose ``metadata_bytes`` was not the expected size.
      leaked: Session objects still alive, or still listed by the manager,
        after they completed and the scenario dropped them.
      succeeded: Sessions whose work returned.
    """

    name: ClassVar[str] = "metadata"

    sessions: int
    bytes_up: int
    expected_up: int
    bytes_half: int
    expected_half: int
    bytes_zero: int
    peak_bytes: int
    mismeasured: int
    leaked: int
    succeeded: int

    @property
    def title(self) -> str:
        """A one-line description of what the scenario does, with its parameters."""
        return f"metadata: {self.sessions} sessions, growing"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        return (
            f"bytes up {self.bytes_up:,}, half {self.bytes_half:,}, "
            f"end {self.bytes_zero}; peak {self.peak_bytes:,}; "
            f"{self.leaked} leaked"
        )


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
        """A one-line description of what the scenario does, with its parameters."""
        return f"baseline: {self.iterations:,} creations"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        return (
            f"avg {_us(self.average)}, min {_us(self.minimum)}, "
            f"max {_us(self.maximum)}, p99 {_us(self.p99)}"
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
        """A one-line description of what the scenario does, with its parameters."""
        return f"scale: {self.sessions:,} sessions at once"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
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
        """A one-line description of what the scenario does, with its parameters."""
        return f"churn: {self.target_rate:,.0f}/s for {self.duration:g} s"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        return (
            f"{self.admitted:,}/{self.attempted:,} admitted "
            f"({self.achieved_rate:,.0f}/s), {self.rejected} rejected, "
            f"{self.succeeded:,} succeeded, peak {self.peak_active}; "
            f"p50 {_ms(self.p50)}, p99 {_ms(self.p99)}"
        )


@final
@attrs.frozen
class HttpLoadResult(ScenarioResult):
    """Result of :func:`http_load`: a running HTTP server driven by a real client.

    Attributes:
      url: The URL requested (``GET``).
      concurrency: Requests in flight at once.
      requests: Requests sent.
      success_2xx: Responses with a 2xx status.
      status_503: ``503 Service Unavailable`` responses (load shed).
      status_504: ``504 Gateway Timeout`` responses (request deadline).
      other_status: Responses with any other status.
      errors: Requests that got no response (connection or protocol error,
        client timeout).
      first_error: The first error, if any: its type, which request (its
        number and URL), after how long, and why.
      throughput: Responses per second.
      latency: Latency of the requests that got a response.
    """

    name: ClassVar[str] = "http"

    url: str
    concurrency: int
    requests: int
    success_2xx: int
    status_503: int
    status_504: int
    other_status: int
    errors: int
    first_error: str | None
    throughput: float
    latency: LatencySummary

    @property
    def title(self) -> str:
        """A one-line description of what the scenario does, with its parameters."""
        return f"HTTP GET {self.url} x{self.concurrency}"

    def describe(self) -> str:
        """The scenario's figures, as one line for people."""
        lat = self.latency
        return (
            f"{self.requests:,} requests, {self.throughput:,.0f}/s; "
            f"2xx {self.success_2xx:,}, 503 {self.status_503:,}, "
            f"504 {self.status_504:,}, other {self.other_status:,}, "
            f"errors {self.errors:,}; p50 {_ms(lat.p50)}, p90 {_ms(lat.p90)}, "
            f"p99 {_ms(lat.p99)}, max {_ms(lat.max)}"
        )


@final
@attrs.frozen
class LoadTestReport:
    """All the scenario results of one load test, from :func:`run_loadtest`::

        report = await loadtest.run_loadtest(my_handler)
        assert report.passed, report.problems

    Attributes:
      results: One result per scenario, in the order they ran.
      elapsed: Seconds the whole run took on the Trio clock.
    """

    results: tuple[ScenarioResult, ...]
    elapsed: float

    @property
    def passed(self) -> bool:
        """True when every scenario passed."""
        return all(result.passed for result in self.results)

    @property
    def problems(self) -> list[str]:
        """Every failed check, as ``"scenario: problem"``."""
        return [
            f"{result.name}: {problem}"
            for result in self.results
            for problem in result.problems
        ]

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-encodable data."""
        return {
            "passed": self.passed,
            "elapsed": self.elapsed,
            "scenarios": [result.as_dict() for result in self.results],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as a JSON document."""
        return json.dumps(self.as_dict(), indent=indent)


# ---------------------------------------------------------------- helpers


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else _ms(seconds)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _expect(problems: list[str], ok: bool, problem: str) -> None:
    if not ok:
        problems.append(problem)


class _Tally:
    """Counts how sessions ended, keeping only the first error's description."""

    def __init__(self) -> None:
        self.succeeded = 0
        self.failed = 0
        self.first_error: str | None = None

    async def wait(self, session: Session) -> None:
        try:
            await session.wait()
        except Exception as exc:
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"{type(exc).__name__}: {exc}"
        else:
            self.succeeded += 1

    def expect_all(
        self, problems: list[str], total: int, what: str = "sessions"
    ) -> None:
        if self.succeeded != total:
            detail = "" if self.first_error is None else f" (first: {self.first_error})"
            problems.append(
                f"{self.succeeded}/{total} {what} succeeded, "
                f"{self.failed} failed{detail}"
            )


class _Gate:
    """Holds sessions open until released, and tells when all of them arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.all_arrived = trio.Event()
        self.release = trio.Event()
        if expected <= 0:
            self.all_arrived.set()

    async def hold_then(self, work: Work) -> None:
        self.arrived += 1
        if self.arrived >= self.expected:
            self.all_arrived.set()
        await self.release.wait()
        await work()


def _config(max_sessions: int, **fields: Any) -> SessionConfig:
    fields.setdefault("request_timeout", _SESSION_TIMEOUT)
    return SessionConfig(max_sessions=max_sessions, **fields)


def _work(work: Work | None) -> Work:
    if work is None:
        return simulated_work
    return work if isinstance(work, _WatchedWork) else _WatchedWork(work)


class _WatchedWork:
    """A user's handler as the scenarios run it: results dropped, calls tracked.

    The load test measures the handler, so it keeps nothing the handler
    returns: each result is dropped the moment the call returns, and memory
    stays bounded by the calls in flight, whatever the results weigh. The
    calls in flight are kept (start and deadline) so that a run waiting on a
    handler that ignores cancellation can say so while it waits.
    """

    def __init__(self, work: Work) -> None:
        self.work = work
        self.name = _callable_name(work)
        self.calls: dict[int, tuple[float, float]] = {}
        self.scenario = ""
        self._count = 0

    async def __call__(self) -> None:
        key = self._count
        self._count += 1
        self.calls[key] = (trio.current_time(), trio.current_effective_deadline())
        try:
            await self.work()  # the result is dropped here, as soon as it exists
        finally:
            del self.calls[key]


def _callable_name(work: object) -> str:
    module = getattr(work, "__module__", None)
    name = getattr(work, "__qualname__", None) or type(work).__qualname__
    return f"{module}:{name}" if module else name


# A cancelled call gets this long to unwind before the run says it is waiting.
_UNWIND_GRACE = 2.0
# How often the run repeats what it is still waiting for.
_NOTICE_EVERY = 10.0


def _waiting_notice(watched: _WatchedWork, now: float) -> str | None:
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


async def _watch_handler(watched: _WatchedWork, notice: Callable[[str], None]) -> None:
    """Say, every ``_NOTICE_EVERY`` seconds, what a stuck run is waiting for."""
    last: float | None = None
    waited_in = ""
    while True:
        await trio.sleep(1.0)
        now = trio.current_time()
        message = _waiting_notice(watched, now)
        if message is None:
            if last is not None:
                notice(f"scenario {waited_in!r}: the handler calls returned, going on")
            last = None
        elif last is None or now - last >= _NOTICE_EVERY:
            notice(message)
            last, waited_in = now, watched.scenario


# ---------------------------------------------------------------- scenarios


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
    work = _work(work)
    start = trio.current_time()
    tally = _Tally()
    async with open_session_manager(_config(sessions)) as manager:
        started = [await manager.start_session(work) for _ in range(sessions)]
        for session in started:
            await tally.wait(session)
        stats = manager.statistics()
    problems: list[str] = []
    tally.expect_all(problems, sessions)
    _expect(
        problems,
        stats.completed == sessions,
        f"statistics count {stats.completed} completed, not {sessions}",
    )
    return ConcurrentSessionsResult(
        passed=not problems,
        problems=tuple(problems),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        succeeded=tally.succeeded,
        failed=tally.failed,
        peak_active=stats.peak_active,
        average=stats.durations.mean,
        minimum=stats.durations.min,
        maximum=stats.durations.max,
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
    work = _work(work)
    start = trio.current_time()
    gate = _Gate(sessions)
    tally = _Tally()
    async with open_session_manager(_config(sessions)) as manager:
        started = [
            await manager.start_session(gate.hold_then, work) for _ in range(sessions)
        ]
        await gate.all_arrived.wait()
        active = manager.statistics().active
        gate.release.set()
        for session in started:
            await tally.wait(session)
        stats = manager.statistics()
    problems: list[str] = []
    _expect(
        problems,
        stats.created == sessions,
        f"{stats.created}/{sessions} sessions admitted",
    )
    _expect(problems, active == sessions, f"{active} active while held, not {sessions}")
    _expect(
        problems,
        stats.peak_active == sessions,
        f"peak {stats.peak_active}, not {sessions}",
    )
    tally.expect_all(problems, sessions)
    return HeldSessionsResult(
        passed=not problems,
        problems=tuple(problems),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        admitted=stats.created,
        active_while_held=active,
        peak_active=stats.peak_active,
        succeeded=tally.succeeded,
        failed=tally.failed,
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
    work = _work(work)
    start = trio.current_time()
    gate = _Gate(capacity)
    tally = _Tally()
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

    async with open_session_manager(_config(capacity, max_waiting=0)) as manager:
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
            await _Tally().wait(session)
    counted = stats.rejections.get("capacity", 0)
    problems: list[str] = []
    _expect(
        problems,
        rejected == overflow,
        f"{rejected}/{overflow} attempts rejected with {CAPACITY_MESSAGE!r}"
        + (f" ({len(admitted)} admitted over capacity)" if admitted else ""),
    )
    _expect(
        problems,
        all(message == CAPACITY_MESSAGE for message in messages),
        f"rejection messages {sorted(set(messages))!r}",
    )
    _expect(
        problems, counted == overflow, f"{counted} rejections counted, not {overflow}"
    )
    _expect(
        problems,
        stats.active == capacity,
        f"{stats.active} active while full, not {capacity}",
    )
    tally.expect_all(problems, capacity, "held sessions")
    return CapacityLimitResult(
        passed=not problems,
        problems=tuple(problems),
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
    work = _work(work)
    start = trio.current_time()
    tally = _Tally()
    lifetimes = LatencyRecorder()

    async def lifecycle(manager: SessionManager, index: int) -> None:
        began = trio.current_time()
        try:
            await manager.run(work, metadata={"lifecycle": index}, name=f"life-{index}")
        except Exception as exc:
            tally.failed += 1
            if tally.first_error is None:
                tally.first_error = f"{type(exc).__name__}: {exc}"
        else:
            tally.succeeded += 1
        lifetimes.record(trio.current_time() - began)

    active = 0
    with trio.move_on_after(deadline) as scope:
        async with (
            open_session_manager(_config(sessions)) as manager,
            trio.open_nursery() as nursery,
        ):
            for index in range(sessions):
                nursery.start_soon(lifecycle, manager, index)
        active = manager.statistics().active
    total = trio.current_time() - start
    problems: list[str] = []
    _expect(
        problems,
        not scope.cancelled_caught,
        f"still running after the {deadline:g} s deadline",
    )
    tally.expect_all(problems, sessions, "lifecycles")
    _expect(problems, active == 0, f"{active} sessions still active after shutdown")
    return NoHangResult(
        passed=not problems,
        problems=tuple(problems),
        elapsed=total,
        sessions=sessions,
        deadline=deadline,
        hung=scope.cancelled_caught,
        succeeded=tally.succeeded,
        failed=tally.failed,
        total=total,
        average=lifetimes.summary().mean,
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
    work = _work(work)
    start = trio.current_time()
    finished = 0
    refused = False
    tally = _Tally()

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
            await _Tally().wait(late)

    config = _config(sessions, shutdown_timeout=drain)
    async with open_session_manager(config) as manager:
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
    problems: list[str] = []
    _expect(
        problems,
        report.initial_active == sessions,
        f"{report.initial_active} active at shutdown, not {sessions}",
    )
    _expect(problems, final_active == 0, f"{final_active} still active after shutdown")
    _expect(
        problems,
        report.completed == sessions,
        f"{report.completed}/{sessions} completed during the drain",
    )
    _expect(
        problems,
        report.cancelled == 0 and not report.timeout_reached,
        f"drain timed out, {report.cancelled} sessions cancelled",
    )
    _expect(problems, refused, "a session started during the drain was not refused")
    tally.expect_all(problems, sessions)
    return GracefulShutdownResult(
        passed=not problems,
        problems=tuple(problems),
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


class _PlannedFailure(Exception):
    """The exception a metrics-accuracy session raises on purpose."""


async def _then_raise(work: Work) -> None:
    await work()
    raise _PlannedFailure("planned failure")


async def _then_hang(work: Work) -> None:
    await work()
    await trio.sleep_forever()


# The mix of metrics_accuracy, repeated: 6 succeed, 3 raise, 2 time out, 1 cancelled.
_MIX = (
    Outcome.SUCCESS,
    Outcome.ERROR,
    Outcome.SUCCESS,
    Outcome.TIMEOUT,
    Outcome.SUCCESS,
    Outcome.ERROR,
    Outcome.SUCCESS,
    Outcome.CANCELLED,
    Outcome.SUCCESS,
    Outcome.TIMEOUT,
    Outcome.SUCCESS,
    Outcome.ERROR,
)

_EXPECTED_RAISE: Mapping[Outcome, type[BaseException] | None] = {
    Outcome.SUCCESS: None,
    Outcome.ERROR: _PlannedFailure,
    Outcome.TIMEOUT: SessionTimeout,
    Outcome.CANCELLED: SessionCancelled,
}


async def _observe(session: Session, planned: Outcome) -> bool:
    """Wait for ``session``; true when it ended, and ``wait()`` behaved, as planned."""
    raised: type[BaseException] | None = None
    try:
        await session.wait()
    except Exception as exc:
        raised = type(exc)
    return session.outcome is planned and raised is _EXPECTED_RAISE[planned]


async def metrics_accuracy(
    work: Work | None = None, *, sessions: int = 60, timeout: float = 0.05
) -> MetricsAccuracyResult:
    """Scenario 6: sessions with a known outcome mix are counted exactly.

    Out of every 12 sessions, 6 do ``work`` and return, 3 do it and raise, 2
    do it and then hang past a ``timeout``-second deadline, and 1 does it and
    hangs until :meth:`Session.cancel`. The statistics must match the plan
    exactly, success rate included (``0.5`` with the defaults)::

        result = await loadtest.metrics_accuracy(sessions=60)
        assert (result.succeeded, result.failed) == (30, 15)

    Args:
      work: Async function each session awaits first.
      sessions: Sessions in the mix.
      timeout: Deadline, in seconds, of the sessions planned to time out.
    """
    work = _work(work)
    start = trio.current_time()
    plan = [_MIX[index % len(_MIX)] for index in range(sessions)]
    mismatched = 0
    async with open_session_manager(_config(max(sessions, 1))) as manager:
        started: list[tuple[Outcome, Session]] = []
        for planned in plan:
            if planned is Outcome.SUCCESS:
                session = await manager.start_session(work)
            elif planned is Outcome.ERROR:
                session = await manager.start_session(_then_raise, work)
            elif planned is Outcome.TIMEOUT:
                session = await manager.start_session(_then_hang, work, timeout=timeout)
            else:
                session = await manager.start_session(_then_hang, work, timeout=None)
            started.append((planned, session))
        # Cancel last, so the cancelled sessions are cancelled mid-hang, not mid-work.
        for planned, session in started:
            if planned is not Outcome.CANCELLED and not await _observe(
                session, planned
            ):
                mismatched += 1
        for planned, session in started:
            if planned is Outcome.CANCELLED:
                session.cancel()
                if not await _observe(session, planned):
                    mismatched += 1
        stats = manager.statistics()
    expected = {outcome: plan.count(outcome) for outcome in Outcome}
    expected_rate = expected[Outcome.SUCCESS] / sessions if sessions else 0.0
    observed = {
        Outcome.SUCCESS: stats.succeeded,
        Outcome.ERROR: stats.failed,
        Outcome.TIMEOUT: stats.timed_out,
        Outcome.CANCELLED: stats.cancelled,
    }
    problems: list[str] = []
    for outcome in Outcome:
        _expect(
            problems,
            observed[outcome] == expected[outcome],
            f"{observed[outcome]} counted {outcome.name}, expected {expected[outcome]}",
        )
    _expect(
        problems,
        stats.created == sessions and stats.completed == sessions,
        f"{stats.created} created / {stats.completed} completed, expected {sessions}",
    )
    _expect(
        problems,
        sessions == 0 or stats.success_rate == expected_rate,
        f"success rate {stats.success_rate!r}, expected {expected_rate!r}",
    )
    _expect(problems, stats.rejected == 0, f"{stats.rejected} sessions rejected")
    _expect(
        problems,
        mismatched == 0,
        f"{mismatched} sessions did not end (or wait() did not raise) as planned",
    )
    return MetricsAccuracyResult(
        passed=not problems,
        problems=tuple(problems),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        created=stats.created,
        completed=stats.completed,
        succeeded=stats.succeeded,
        failed=stats.failed,
        timed_out=stats.timed_out,
        cancelled=stats.cancelled,
        success_rate=stats.success_rate,
        expected_succeeded=expected[Outcome.SUCCESS],
        expected_failed=expected[Outcome.ERROR],
        expected_timed_out=expected[Outcome.TIMEOUT],
        expected_cancelled=expected[Outcome.CANCELLED],
        expected_success_rate=expected_rate,
        mismatched=mismatched,
    )


def _metadata_size(metadata: Mapping[str, Any]) -> int:
    # The formula of the API contract, computed independently of the manager.
    text = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8"))


async def _release_and_wait(
    release: trio.Event, sessions: Sequence[Session], tally: _Tally
) -> None:
    release.set()
    for session in sessions:
        await tally.wait(session)


async def metadata_tracking(
    work: Work | None = None, *, sessions: int = 30, step: int = 32
) -> MetadataTrackingResult:
    """Scenario 7: metadata bytes go up, down by half, to zero, and nothing leaks.

    Session ``i`` carries metadata with a payload of ``(i + 1) * step``
    characters (some of them non-ASCII) and is held open. The manager's byte
    count must equal the sum of the sizes while all are held, the second
    half's sum once the first half completed, and zero at the end; afterwards
    no session object may survive::

        result = await loadtest.metadata_tracking(sessions=30)
        assert result.bytes_zero == 0 and result.leaked == 0

    Args:
      work: Async function each session awaits once released.
      sessions: Sessions admitted.
      step: Payload growth, in characters, from one session to the next.
    """
    work = _work(work)
    start = trio.current_time()
    tally = _Tally()
    first, second = trio.Event(), trio.Event()
    half = sessions // 2

    async def hold_then(release: trio.Event) -> None:
        await release.wait()
        await work()

    metadata = [
        {
            "session": index,
            "client": "load-é",
            "payload": "x·" * ((index + 1) * step // 2),
        }
        for index in range(sessions)
    ]
    sizes = [_metadata_size(item) for item in metadata]
    limit = max(sizes, default=0)
    config = _config(max(sessions, 1), max_session_metadata_bytes=limit)
    references: list[weakref.ref[Session]] = []
    async with open_session_manager(config) as manager:
        started = [
            await manager.start_session(
                hold_then, first if index < half else second, metadata=item
            )
            for index, item in enumerate(metadata)
        ]
        # Metadata is copied at admission: mutating the caller's dicts changes nothing.
        for item in metadata:
            item["payload"] = ""
        mismeasured = sum(
            session.metadata_bytes != size
            for session, size in zip(started, sizes, strict=True)
        )
        bytes_up = manager.statistics().metadata_bytes
        await _release_and_wait(first, started[:half], tally)
        bytes_half = manager.statistics().metadata_bytes
        await _release_and_wait(second, started[half:], tally)
        stats = manager.statistics()
        listed = len(manager.sessions)
        references = [weakref.ref(session) for session in started]
        del started
    gc.collect()
    leaked = listed + sum(ref() is not None for ref in references)
    expected_up = sum(sizes)
    expected_half = sum(sizes[half:])
    problems: list[str] = []
    _expect(problems, mismeasured == 0, f"{mismeasured} sessions mismeasured")
    _expect(
        problems,
        bytes_up == expected_up,
        f"{bytes_up} bytes up, expected {expected_up}",
    )
    _expect(
        problems,
        bytes_half == expected_half,
        f"{bytes_half} bytes at half, expected {expected_half}",
    )
    _expect(
        problems,
        stats.metadata_bytes == 0,
        f"{stats.metadata_bytes} bytes left at the end",
    )
    _expect(
        problems,
        stats.peak_metadata_bytes == expected_up,
        f"peak {stats.peak_metadata_bytes} bytes, expected {expected_up}",
    )
    _expect(problems, leaked == 0, f"{leaked} sessions leaked")
    tally.expect_all(problems, sessions)
    return MetadataTrackingResult(
        passed=not problems,
        problems=tuple(problems),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        bytes_up=bytes_up,
        expected_up=expected_up,
        bytes_half=bytes_half,
        expected_half=expected_half,
        bytes_zero=stats.metadata_bytes,
        peak_bytes=stats.peak_metadata_bytes,
        mismeasured=mismeasured,
        leaked=leaked,
        succeeded=tally.succeeded,
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
    work = _work(work)
    iterations = max(iterations, 1)
    start = trio.current_time()
    tally = _Tally()
    costs: list[float] = []
    perf_counter = time.perf_counter
    async with open_session_manager(_config(iterations)) as manager:
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
    problems: list[str] = []
    _expect(
        problems,
        average <= budget,
        f"average creation {_us(average)}, over the {_us(budget)} budget",
    )
    tally.expect_all(problems, iterations)
    return PerformanceBaselineResult(
        passed=not problems,
        problems=tuple(problems),
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
    work = _work(work)
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
    config = _config(sessions, request_timeout=None, shutdown_timeout=0)
    work_deadline = max(_SESSION_TIMEOUT, sessions / 1000)
    async with open_session_manager(config) as manager:
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
    problems: list[str] = []
    _expect(
        problems,
        active == sessions and stats.created == sessions,
        f"{active} active while held, {stats.created} admitted, not {sessions}",
    )
    _expect(
        problems,
        stats.peak_active == sessions,
        f"peak {stats.peak_active}, not {sessions}",
    )
    _expect(
        problems,
        still_running == 0,
        f"{still_running} sessions still running {work_deadline:g} s "
        "after release (cancelled)",
    )
    _expect(
        problems,
        stats.succeeded == sessions,
        f"{stats.succeeded}/{sessions} sessions succeeded",
    )
    return ScaleResult(
        passed=not problems,
        problems=tuple(problems),
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
    work = _work(work)
    start = trio.current_time()
    target = max(round(rate * duration), 0)
    attempted = rejected = 0
    duration_ms = max(round(duration * 1000), 1)
    async with open_session_manager(_config(capacity)) as manager:
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
    problems: list[str] = []
    _expect(
        problems, rejected == 0, f"{rejected} sessions rejected at capacity {capacity}"
    )
    _expect(
        problems,
        achieved >= 0.95 * rate,
        f"admitted {achieved:,.0f}/s, under 95% of the {rate:,.0f}/s target",
    )
    _expect(
        problems,
        stats.succeeded == admitted,
        f"{stats.succeeded}/{admitted} sessions succeeded",
    )
    return ChurnResult(
        passed=not problems,
        problems=tuple(problems),
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


async def http_load(
    url: str,
    *,
    requests: int = 1000,
    concurrency: int = 50,
    duration: float | None = None,
    timeout: float = 10.0,
    progress: ProgressCallback | None = None,
) -> HttpLoadResult:
    """Drive a running HTTP server with ``concurrency`` concurrent ``GET url`` requests.

    Uses :mod:`httpx` (the ``cli`` extra) under Trio. Passes when every request
    got a response whose status is 2xx, 503 (load shed) or 504 (deadline)::

        result = await loadtest.http_load("http://127.0.0.1:8000/", requests=5000)
        print(result.latency.p99, result.status_503)

    Args:
      url: The URL to request.
      requests: Requests to send in all (ignored when ``duration`` is given).
      concurrency: Requests in flight at once.
      duration: Send requests for this many seconds instead of a fixed number.
      timeout: Client timeout of one request, in seconds.
      progress: Called as ``progress(done, total)`` after each response, in
        requests, or in milliseconds when ``duration`` is given.

    Raises:
      ModuleNotFoundError: httpx is not installed.
    """
    import httpx

    concurrency = max(concurrency, 1)
    latency = LatencyRecorder()
    counts = {"2xx": 0, "503": 0, "504": 0, "other": 0, "errors": 0}
    sent = 0
    first_error: str | None = None
    start = trio.current_time()
    end = None if duration is None else start + duration
    total = requests if duration is None else max(round(duration * 1000), 1)
    done = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent, first_error, done
        while True:
            began = trio.current_time()
            if (end is None and sent >= requests) or (end is not None and began >= end):
                return
            sent += 1
            number = sent
            try:
                response = await client.get(url)
            except (httpx.HTTPError, OSError) as exc:
                counts["errors"] += 1
                if first_error is None:
                    waited = trio.current_time() - began
                    if isinstance(exc, httpx.TimeoutException):
                        detail = f"no answer within the {timeout:g} s client timeout"
                    else:
                        detail = str(exc) or "no detail given"
                    first_error = (
                        f"{type(exc).__name__} on request {number} (GET {url}) "
                        f"after {waited:.2f} s: {detail}"
                    )
            else:
                latency.record(trio.current_time() - began)
                status = response.status_code
                if 200 <= status < 300:
                    counts["2xx"] += 1
                elif status in (503, 504):
                    counts[str(status)] += 1
                else:
                    counts["other"] += 1
            if progress is not None:
                done = (
                    sent if end is None else round((trio.current_time() - start) * 1000)
                )
                progress(min(done, total), total)

    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency
    )
    async with (
        httpx.AsyncClient(timeout=timeout, limits=limits) as client,
        trio.open_nursery() as nursery,
    ):
        for _ in range(concurrency):
            nursery.start_soon(worker, client)
    elapsed = trio.current_time() - start
    responses = sent - counts["errors"]
    problems: list[str] = []
    _expect(
        problems,
        counts["errors"] == 0,
        f"{counts['errors']} request{'' if counts['errors'] == 1 else 's'} failed"
        + ("" if first_error is None else f" (first: {first_error})"),
    )
    _expect(
        problems,
        counts["other"] == 0,
        f"{counts['other']} responses neither 2xx, 503 nor 504",
    )
    _expect(problems, sent > 0, "no request was sent")
    return HttpLoadResult(
        passed=not problems,
        problems=tuple(problems),
        elapsed=elapsed,
        url=url,
        concurrency=concurrency,
        requests=sent,
        success_2xx=counts["2xx"],
        status_503=counts["503"],
        status_504=counts["504"],
        other_status=counts["other"],
        errors=counts["errors"],
        first_error=first_error,
        throughput=responses / elapsed if elapsed > 0 else 0.0,
        latency=latency.summary(),
    )


# ---------------------------------------------------------------- all of them


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
    known = (*SCENARIO_NAMES, "scale", "churn")
    if only is not None:
        unknown = sorted(set(only) - set(known))
        if unknown:
            raise ValueError(
                f"unknown scenario {', '.join(unknown)}; choose from {', '.join(known)}"
            )
    selected = set(SCENARIO_NAMES if only is None else only)
    if sessions is not None:
        selected.add("scale")
    if duration is not None:
        selected.add("churn")
    watched = None if work is None else _WatchedWork(work)
    work = watched

    def reporter(name: str) -> ProgressCallback | None:
        if progress is None:
            return None
        report_progress = progress
        return lambda done, total: report_progress(name, done, total)

    scenarios: dict[str, Callable[[], Awaitable[ScenarioResult]]] = {
        "concurrent": lambda: concurrent_sessions(work),
        "held": lambda: held_sessions(work),
        "capacity": lambda: capacity_limit(work),
        "no-hang": lambda: no_hang(work),
        "shutdown": lambda: graceful_shutdown(work, progress=reporter("shutdown")),
        "metrics": lambda: metrics_accuracy(work),
        "metadata": lambda: metadata_tracking(work),
        "baseline": lambda: performance_baseline(
            work, iterations=iterations, budget=budget
        ),
        "scale": lambda: scale(
            work,
            sessions=10_000 if sessions is None else sessions,
            progress=reporter("scale"),
        ),
        "churn": lambda: sustained_churn(
            work,
            duration=5.0 if duration is None else duration,
            rate=rate,
            capacity=capacity,
            progress=reporter("churn"),
        ),
    }
    start = trio.current_time()
    results: list[ScenarioResult] = []
    try:
        async with trio.open_nursery() as nursery:
            if watched is not None and notice is not None:
                nursery.start_soon(_watch_handler, watched, notice)
            for name in known:
                if name in selected:
                    if watched is not None:
                        watched.scenario = name
                    results.append(await scenarios[name]())
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The watcher never raises: hand over the scenario's own exception
        # (a KeyboardInterrupt, say) as itself.
        if len(group.exceptions) != 1:
            raise
        raise group.exceptions[0] from None
    return LoadTestReport(results=tuple(results), elapsed=trio.current_time() - start)
