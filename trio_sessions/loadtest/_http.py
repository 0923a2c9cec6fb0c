"""The HTTP load: a running server driven by a real client, closed or open loop.

:func:`http_load` sends ``GET`` requests over a fixed pool of kept-alive
connections (:mod:`._epoll` on Linux, :mod:`._client` on Trio's streams), from this
process or several (:mod:`._worker`), and merges what they measured exactly.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, final

import attrs
import trio

from ._histogram import LatencyHistogram, Percentiles
from ._report import Checks, ScenarioResult, ms
from ._timeline import Timeline, TimeSeries, run_sampled
from ._work import ProgressCallback

if TYPE_CHECKING:
    # Imported where it runs: the client needs httptools, the scenarios do not.
    from ._client import RequestFailed

__all__ = [
    "HttpLoadResult",
    "Plan",
    "Share",
    "Tally",
    "client_for",
    "drive",
    "have_client",
    "http_load",
    "make_plan",
    "run_plan",
]

# The timeline of a load: responses by kind per interval, requests in flight.
OUTCOMES = ("2xx", "503", "504", "other", "errors")
_TICK = 0.1
# A client busier than this, per process, was probably what limited the load.
_BUSY = 0.9


@final
@attrs.frozen
class HttpLoadResult(ScenarioResult):
    """Result of :func:`http_load`: a running HTTP server driven by a real client.

    Attributes:
      url: The URL requested (``GET``).
      concurrency: Connections, each with one request in flight at a time.
      rate: Requests per second of an open-loop load, each latency measured
        from the request's intended send time; ``None`` for a closed loop,
        where each connection sends its next request once answered.
      processes: Client processes that shared the load.
      requests: Requests sent.
      success_2xx: Responses with a 2xx status.
      status_503: ``503 Service Unavailable`` responses (load shed).
      status_504: ``504 Gateway Timeout`` responses (request deadline).
      other_status: Responses with any other status.
      errors: Requests that got no response (connection or protocol error,
        client timeout).
      first_error: The first error, if any: what went wrong, on which request
        (its number and URL), after how long, and why.
      throughput: Responses per second.
      client_cpu: CPU seconds the client's processes used during the load;
        near ``elapsed * processes``, the client, not the server, set the pace.
      latency: Latency of the requests that got a response.
      timeline: Responses per interval by kind (``2xx``, ``503``, ``504``,
        ``other``, ``errors``) and requests in flight (``in_flight``).
    """

    name: ClassVar[str] = "http"

    url: str
    concurrency: int
    rate: float | None
    processes: int
    requests: int
    success_2xx: int
    status_503: int
    status_504: int
    other_status: int
    errors: int
    first_error: str | None
    throughput: float
    client_cpu: float
    latency: Percentiles
    timeline: TimeSeries

    @property
    def title(self) -> str:
        if self.rate is None:
            return f"HTTP GET {self.url} x{self.concurrency}"
        return (
            f"HTTP GET {self.url} at {self.rate:,.0f}/s, {self.concurrency} connections"
        )

    @property
    def client_busy(self) -> float:
        """The share of its cores the client used: 1.0 when it had no time to wait."""
        budget = self.elapsed * self.processes
        return self.client_cpu / budget if budget > 0 else 0.0

    def describe(self) -> str:
        lat = self.latency
        busy = self.client_busy
        return (
            f"{self.requests:,} requests, {self.throughput:,.0f}/s; "
            f"2xx {self.success_2xx:,}, 503 {self.status_503:,}, "
            f"504 {self.status_504:,}, other {self.other_status:,}, "
            f"errors {self.errors:,}; p50 {ms(lat.p50)}, p90 {ms(lat.p90)}, "
            f"p99 {ms(lat.p99)}, p99.9 {ms(lat.p999)}, max {ms(lat.max)}; "
            f"client CPU {busy:.0%}"
            + (
                f" (the client set the pace: try --processes {self.processes + 1})"
                if busy > _BUSY
                else ""
            )
        )


def importable(module: str) -> bool:
    """True when ``module`` (an optional dependency) can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def have_client() -> bool:
    """True when httptools, which :func:`http_load` needs, can be imported."""
    return importable("httptools")


@final
@attrs.frozen
class Plan:
    """What one client process sends: its share of the load.

    In an open loop, process ``index`` of ``processes`` sends slots
    ``index``, ``index + processes``... of the ``requests`` slots, slot ``i``
    at ``i / rate`` seconds from the start. ``client`` is which client sends
    them: ``"epoll"`` (plain HTTP on Linux), ``"streams"`` (Trio's streams,
    one task per connection) or ``"auto"``, the first that can.
    """

    url: str
    concurrency: int
    requests: int
    duration: float | None
    rate: float | None
    timeout: float
    index: int = 0
    processes: int = 1
    client: str = "auto"

    def shares(self) -> list[Plan]:
        """This plan split over its ``processes``, one plan per process."""
        count = self.processes

        def share(total: int, index: int) -> int:
            return total // count + (index < total % count)

        return [
            attrs.evolve(
                self,
                concurrency=share(self.concurrency, index),
                requests=self.requests if self.rate else share(self.requests, index),
                index=index,
            )
            for index in range(count)
        ]


@final
class Tally:
    """What one process measured; merges with the others' exactly."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.sent = 0
        self.in_flight = 0
        self.latency = LatencyHistogram()
        # (seconds from the start, sentence) of the first request that failed.
        self.first_error: tuple[float, str] | None = None
        self.elapsed = 0.0
        self.cpu = 0.0
        self.timeline = Timeline(_TICK, OUTCOMES, ["in_flight"])
        self.series: TimeSeries | None = None

    def read(self) -> tuple[list[int], list[int]]:
        """Running totals and levels, for the sampler."""
        return list(self.counts.values()), [self.in_flight]

    def as_dict(self) -> dict[str, Any]:
        """JSON-encodable, for a worker process to hand over its tally."""
        return {
            "counts": self.counts,
            "sent": self.sent,
            "latency": self.latency.as_dict(),
            "first_error": self.first_error,
            "elapsed": self.elapsed,
            "cpu": self.cpu,
            "timeline": attrs.asdict(self.timeline.series()),
        }

    @classmethod
    def merge(cls, data: list[dict[str, Any]]) -> Tally:
        """One tally of the processes' :meth:`as_dict`."""
        tally = cls()
        for one in data:
            for outcome in OUTCOMES:
                tally.counts[outcome] += one["counts"][outcome]
            tally.sent += one["sent"]
            tally.latency.merge(LatencyHistogram.from_dict(one["latency"]))
            tally.elapsed = max(tally.elapsed, one["elapsed"])
            tally.cpu += one["cpu"]
            error = one["first_error"]
            if error is not None and (
                tally.first_error is None or error[0] < tally.first_error[0]
            ):
                tally.first_error = (error[0], error[1])
        tally.series = TimeSeries.merge(
            [TimeSeries.from_dict(one["timeline"]) for one in data]
        )
        return tally


@final
class Share:
    """One process's share of a plan as it runs: what is due, and what came back.

    Both clients ask :meth:`due` whether a request may go, :meth:`claim` it,
    say when it is :meth:`sending`, and report it :meth:`answered` or
    :meth:`failed`; the figures go into ``tally``. Times are on the Trio clock.
    """

    __slots__ = (
        "_claimed",
        "_counts",
        "_end",
        "_index",
        "_rate",
        "_record",
        "_requests",
        "_start",
        "_step",
        "_timeout",
        "_url",
        "tally",
    )

    def __init__(self, plan: Plan, start: float, tally: Tally) -> None:
        self.tally = tally
        self._counts = tally.counts
        self._record = tally.latency.record
        self._start = start
        self._end = None if plan.duration is None else start + plan.duration
        self._rate = plan.rate
        self._requests = plan.requests
        self._step = plan.processes
        self._index = plan.index
        self._claimed = 0
        self._url = plan.url
        self._timeout = plan.timeout

    def due(self, now: float) -> float:
        """When the next request is due: ``-inf`` at once, ``inf`` when none is left."""
        if self._rate is None:
            if self._end is None:
                return -math.inf if self._claimed < self._requests else math.inf
            return -math.inf if now < self._end else math.inf
        number = self._claimed * self._step + self._index
        if number >= self._requests:
            return math.inf
        return self._start + number / self._rate

    def claim(self, now: float) -> tuple[int, float]:
        """Take the next request: its number, and when its latency starts.

        In a closed loop that is ``now``; in an open loop, when it was due,
        so a request that waited for a free connection counts its wait.
        """
        number = self._claimed * self._step + self._index
        self._claimed += 1
        if self._rate is None:
            return number, now
        return number, self._start + number / self._rate

    def sending(self) -> None:
        """The claimed request goes out now."""
        tally = self.tally
        tally.sent += 1
        tally.in_flight += 1

    def claim_sending(self, now: float) -> tuple[int, float]:
        """:meth:`claim` and :meth:`sending` in one call, for a request sent at once."""
        number = self._claimed * self._step + self._index
        self._claimed += 1
        tally = self.tally
        tally.sent += 1
        tally.in_flight += 1
        if self._rate is None:
            return number, now
        return number, self._start + number / self._rate

    def answered(self, status: int, began: float, now: float) -> None:
        """A request that began at ``began`` got an answer with ``status``."""
        self.tally.in_flight -= 1
        self._record(now - began)
        if 200 <= status < 300:
            self._counts["2xx"] += 1
        elif status == 503 or status == 504:
            self._counts[str(status)] += 1
        else:
            self._counts["other"] += 1

    def failed(
        self, failure: RequestFailed | None, number: int, began: float, now: float
    ) -> None:
        """Request ``number`` got no answer: ``failure`` says why (None: timeout)."""
        tally = self.tally
        tally.in_flight -= 1
        self._counts["errors"] += 1
        if tally.first_error is not None:
            return
        if failure is None:
            kind = "timeout"
            detail = f"no answer within the {self._timeout:g} s client timeout"
        else:
            kind, detail = _KINDS[failure.kind], str(failure)
        request = f"request {number + 1} (GET {self._url})"
        # Seconds from the shared start: comparable across processes.
        tally.first_error = (
            now - self._start,
            f"{kind} on {request} after {now - began:.2f} s: {detail}",
        )


# How each kind of failure is named in the report's first error.
_KINDS = {
    "connect": "connect error",
    "closed": "connection closed",
    "protocol": "protocol error",
}


def client_for(plan: Plan) -> str:
    """The client ``plan`` runs on: its own, or for ``"auto"`` the fastest that can."""
    if plan.client != "auto":
        return plan.client
    from ._epoll import available

    https = plan.url.lower().startswith("https:")
    return "epoll" if available() and not https else "streams"


async def drive(
    plan: Plan,
    start: float,
    progress: Callable[[Tally], None] | None = None,
) -> Tally:
    """Send this process's share of ``plan``, from ``start`` on the Trio clock.

    ``progress(tally)`` is called at every sample of the timeline, and once
    at the end.
    """
    from ._client import Target, drive_streams
    from ._epoll import drive_epoll

    target = Target.parse(plan.url)
    tally = Tally()
    share = Share(plan, start, tally)
    client = drive_epoll if client_for(plan) == "epoll" else drive_streams

    def read() -> tuple[list[int], list[int]]:
        if progress is not None:
            progress(tally)
        return tally.read()

    async def run() -> None:
        await trio.sleep_until(start)
        await client(share, target, plan.concurrency, plan.timeout)

    cpu = time.process_time()
    await run_sampled(tally.timeline, read, run, start)
    tally.cpu = time.process_time() - cpu
    tally.elapsed = trio.current_time() - start
    tally.series = tally.timeline.series()
    return tally


async def http_load(
    url: str,
    *,
    requests: int = 1000,
    concurrency: int = 50,
    duration: float | None = None,
    rate: float | None = None,
    processes: int = 1,
    timeout: float = 10.0,
    progress: ProgressCallback | None = None,
) -> HttpLoadResult:
    """Drive a running HTTP server with ``GET url`` over ``concurrency`` connections.

    Uses httptools (the ``cli`` extra) on Trio's I/O. By default each connection
    sends its next request as soon as the last one is answered (a closed
    loop, like ``wrk``); with ``rate``, requests are sent on a fixed schedule
    (an open loop, like ``wrk2``): request ``i`` is due ``i / rate`` seconds
    after the start, goes out on the first free connection, and its latency
    runs from when it was due, so a server that falls behind shows it in the
    percentiles instead of slowing the load down. Passes when every request
    got a response whose status is 2xx, 503 (load shed) or 504 (deadline)::

        result = await loadtest.http_load("http://127.0.0.1:8000/", requests=5000)
        print(result.latency.p99, result.status_503)
        result = await loadtest.http_load(url, rate=2000, duration=10)
        print(result.latency.p999)

    On Linux, plain HTTP goes through one epoll of the client's own, waited
    on from a single task; while no other task of the run is runnable, woken
    or waiting for I/O, the client waits in that epoll rather than in
    Trio's scheduler (until Trio's next deadline, for at most 20 ms at a
    time), so that an answer costs a system call and a parse rather than a
    round of the scheduler. HTTPS, and other systems, use Trio's streams, a
    task per connection.

    Args:
      url: The URL to request.
      requests: Requests to send in all (ignored when ``duration`` is given).
      concurrency: Connections, each with at most one request in flight.
      duration: Send requests for this many seconds instead of a fixed
        number (with ``rate``: ``rate * duration`` requests).
      rate: Requests per second of an open loop; ``None`` for a closed loop.
      processes: Client processes sharing the connections and the schedule
        (each ``python -m trio_sessions.loadtest._worker``), for a load one
        core cannot send; their latencies and counts are merged exactly.
      timeout: Client timeout of one request, in seconds, from when it is sent.
      progress: Called as ``progress(done, total)`` every 0.1 s and at the
        end, in requests, or in milliseconds for a closed loop with
        ``duration``.

    Raises:
      ModuleNotFoundError: httptools is not installed.
      ValueError: ``url`` is not an http:// or https:// URL.
      RuntimeError: a client process failed.
    """
    plan = make_plan(
        url,
        requests=requests,
        concurrency=concurrency,
        duration=duration,
        rate=rate,
        processes=processes,
        timeout=timeout,
    )
    return await run_plan(plan, progress)


def make_plan(
    url: str,
    *,
    requests: int,
    concurrency: int,
    duration: float | None,
    rate: float | None,
    processes: int,
    timeout: float,
    client: str = "auto",
) -> Plan:
    """The :class:`Plan` of :func:`http_load`'s arguments (see there).

    Raises:
      ModuleNotFoundError: httptools is not installed.
      ValueError: ``url`` is not an http:// or https:// URL.
    """
    import httptools  # noqa: F401 - fail here, before any process starts

    from ._client import Target

    Target.parse(url)
    concurrency = max(concurrency, 1)
    if rate is not None and duration is not None:
        requests = max(round(rate * duration), 1)
        duration = None
    processes = max(1, min(processes, concurrency))
    return Plan(
        url, concurrency, requests, duration, rate, timeout, 0, processes, client
    )


async def run_plan(
    plan: Plan, progress: ProgressCallback | None = None
) -> HttpLoadResult:
    """Send ``plan`` from this process or its ``processes``; the result of it all."""
    duration = plan.duration
    total = plan.requests if duration is None else max(round(duration * 1000), 1)
    began = trio.current_time()

    def sent_so_far(sent: int) -> None:
        if progress is not None:
            done = sent if duration is None else (trio.current_time() - began) * 1000
            progress(min(round(done), total), total)

    if plan.processes == 1:
        tally = await drive(plan, began, lambda tally: sent_so_far(tally.sent))
    else:
        from ._worker import run_workers

        tally = await run_workers(plan, sent_so_far)
    return _result(plan, tally)


def _result(plan: Plan, tally: Tally) -> HttpLoadResult:
    counts = tally.counts
    errors = counts["errors"]
    first_error = None if tally.first_error is None else tally.first_error[1]
    checks = Checks()
    checks.expect(
        errors == 0,
        f"{errors} request{'' if errors == 1 else 's'} failed"
        + ("" if first_error is None else f" (first: {first_error})"),
    )
    checks.expect(
        counts["other"] == 0, f"{counts['other']} responses neither 2xx, 503 nor 504"
    )
    checks.expect(tally.sent > 0, "no request was sent")
    elapsed = tally.elapsed
    assert tally.series is not None
    return HttpLoadResult(
        **checks.verdict(),
        elapsed=elapsed,
        url=plan.url,
        concurrency=plan.concurrency,
        rate=plan.rate,
        processes=plan.processes,
        requests=tally.sent,
        success_2xx=counts["2xx"],
        status_503=counts["503"],
        status_504=counts["504"],
        other_status=counts["other"],
        errors=errors,
        first_error=first_error,
        throughput=(tally.sent - errors) / elapsed if elapsed > 0 else 0.0,
        client_cpu=tally.cpu,
        latency=tally.latency.percentiles(),
        timeline=tally.series,
    )
