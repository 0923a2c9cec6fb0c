"""The HTTP load: a running server driven by a real client, :mod:`httpx`.

This is the only module of the load test that imports an HTTP client, and only
when :func:`http_load` runs: the scenarios need no extra.
"""

from __future__ import annotations

from typing import ClassVar, final

import attrs
import trio

from .. import LatencySummary
from .._latency import LatencyRecorder
from ._report import Checks, ScenarioResult, ms
from ._work import ProgressCallback


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
        return f"HTTP GET {self.url} x{self.concurrency}"

    def describe(self) -> str:
        lat = self.latency
        return (
            f"{self.requests:,} requests, {self.throughput:,.0f}/s; "
            f"2xx {self.success_2xx:,}, 503 {self.status_503:,}, "
            f"504 {self.status_504:,}, other {self.other_status:,}, "
            f"errors {self.errors:,}; p50 {ms(lat.p50)}, p90 {ms(lat.p90)}, "
            f"p99 {ms(lat.p99)}, max {ms(lat.max)}"
        )


def have_client() -> bool:
    """True when :mod:`httpx`, which :func:`http_load` needs, can be imported."""
    try:
        import httpx  # noqa: F401
    except ImportError:
        return False
    return True


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
    checks = Checks()
    checks.expect(
        counts["errors"] == 0,
        f"{counts['errors']} request{'' if counts['errors'] == 1 else 's'} failed"
        + ("" if first_error is None else f" (first: {first_error})"),
    )
    checks.expect(
        counts["other"] == 0, f"{counts['other']} responses neither 2xx, 503 nor 504"
    )
    checks.expect(sent > 0, "no request was sent")
    return HttpLoadResult(
        **checks.verdict(),
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
