"""End to end: a real Prometheus scrapes two example HTTP servers under a known
load, and its HTTP API's fleet-wide counters, buckets and p99 match that load.

It takes about ten seconds (a Prometheus and two servers start, and the scrapes
come once a second), so it runs only where asked for: in ``nox -s e2e``, when
this file is named on the pytest command line, or with ``TRIO_SESSIONS_E2E=1``.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio
from e2e_helpers import EXAMPLES, run_server
from prometheus_server import promtool_check, running_prometheus

REQUEST_TIMEOUT = 0.55
# Each server's load: path -> (requests, status). Server "a" has the slow
# successes, "b" the timeouts, so the fleet's p99 exists in neither process
# alone: only histograms summed across the fleet find it.
LOAD: dict[str, dict[str, tuple[int, int]]] = {
    "a": {"/": (150, 200), "/slow?seconds=0.3": (10, 200), "/error": (4, 500)},
    "b": {"/": (150, 200), "/slow?seconds=30": (6, 504), "/error": (4, 500)},
}
OUTCOMES = {200: "success", 500: "error", 504: "timeout"}
CONCURRENCY = 16
# Every latency falls well inside one default bucket: "/" and "/error" take
# microseconds (<= 0.25 s), the 0.3 s sleeps are in (0.25, 0.5], the 0.55 s
# timeouts in (0.5, 0.75].
EXPECTED_BUCKETS = {"0.25": 308, "0.5": 318, "0.75": 324, "+Inf": 324}
BUCKETS = "trio_sessions_duration_seconds_bucket"


def server_argv() -> list[str]:
    """The HTTP example, with room for the whole load and a short deadline."""
    return [
        str(EXAMPLES / "http_server.py"),
        f"--request-timeout={REQUEST_TIMEOUT}",
        "--max-sessions=100",
    ]


@pytest.fixture(autouse=True)
def only_when_asked(request: pytest.FixtureRequest) -> None:
    """Skip unless this file was named on the command line or the env asks."""
    if os.environ.get("TRIO_SESSIONS_E2E"):
        return
    here = Path(__file__).resolve()
    params = request.config.invocation_params
    for arg in params.args:
        if (params.dir / arg.partition("::")[0]).resolve() == here:
            return
    pytest.skip("slow: nox -s e2e runs it (or name this file, or TRIO_SESSIONS_E2E=1)")


async def send_load(port: int, load: dict[str, tuple[int, int]]) -> Counter[int]:
    """Send every request of ``load``, interleaved, CONCURRENCY at a time;
    return the statuses received."""
    paths = [path for path, (count, _) in load.items() for _ in range(count)]
    # Mixed, so slow ones overlap fast ones as under real load; seeded, so
    # every run sends the same sequence.
    random.Random(len(paths)).shuffle(paths)
    statuses: Counter[int] = Counter()
    limiter = trio.CapacityLimiter(CONCURRENCY)
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client,
        trio.open_nursery() as nursery,
    ):

        async def one(path: str) -> None:
            async with limiter:
                statuses[(await client.get(path)).status_code] += 1

        for path in paths:
            nursery.start_soon(one, path)
    return statuses


async def test_fleet_histograms_through_a_real_prometheus(tmp_path: Path) -> None:
    """Prometheus' sums over two servers equal the load sent, bucket by bucket,
    and histogram_quantile(0.99) lands in the bucket of the true p99."""
    with trio.fail_after(90):
        async with (
            run_server(server_argv(), tmp_path, name="a") as a,
            run_server(server_argv(), tmp_path, name="b") as b,
            running_prometheus(
                tmp_path, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
            ) as prometheus,
        ):
            # Both targets scraped at zero first: rate() counts from there.
            await prometheus.wait_for('count(up{job="trio_sessions"} == 1)', 2)
            await prometheus.wait_for(f'count({BUCKETS}{{le="+Inf"}} == 0)', 2)

            sent: Counter[int] = Counter()
            async with trio.open_nursery() as nursery:

                async def load(port: int, name: str) -> None:
                    sent.update(await send_load(port, LOAD[name]))

                nursery.start_soon(load, a.port, "a")
                nursery.start_soon(load, b.port, "b")
            expected: Counter[str] = Counter()
            for server_load in LOAD.values():
                for count, status in server_load.values():
                    expected[OUTCOMES[status]] += count
            assert {OUTCOMES[status]: n for status, n in sent.items()} == expected

            total = sum(expected.values())
            await prometheus.wait_for("sum(trio_sessions_created_total)", total)
            # Both servers' last scrape is in: the completions too.
            await prometheus.wait_for(
                "sum(trio_sessions_duration_seconds_count)", total
            )
            for outcome in ("success", "error", "timeout", "cancelled"):
                assert await prometheus.scalar(
                    f'sum(trio_sessions_completed_total{{outcome="{outcome}"}})'
                ) == expected.get(outcome, 0)
            assert await prometheus.scalar("sum(trio_sessions_active)") == 0

            by_le = await prometheus.query(f"sum by (le) ({BUCKETS})")
            cumulative = {
                item["metric"]["le"]: float(item["value"][1]) for item in by_le
            }
            assert {le: cumulative[le] for le in EXPECTED_BUCKETS} == EXPECTED_BUCKETS

            # The true p99 of the 324 latencies is the 321st: a 0.55 s timeout.
            p99 = await prometheus.scalar(
                f"histogram_quantile(0.99, sum by (le) (rate({BUCKETS}[5m])))"
            )
            assert p99 is not None
            assert 0.5 < p99 <= 0.75, p99
            # Neither process alone has it: a's p99 is a 0.3 s sleep.
            alone = await prometheus.scalar(
                "histogram_quantile(0.99, sum by (le) "
                f'(rate({BUCKETS}{{instance="127.0.0.1:{a.port}"}}[5m])))'
            )
            assert alone is not None
            assert 0.25 < alone <= 0.5, alone
            p50 = await prometheus.scalar(
                f"histogram_quantile(0.5, sum by (le) (rate({BUCKETS}[5m])))"
            )
            assert p50 is not None
            assert p50 <= 0.25, p50

            # Shown when the test fails, or with -s.
            print(f"fleet p99 {p99:.3f} s, a's p99 {alone:.3f} s, p50 {p50:.4f} s;")
            print(f"buckets {cumulative}; sent {dict(sent)}")
            async with httpx.AsyncClient() as client:
                exposition = await client.get(f"http://127.0.0.1:{a.port}/metrics")
            assert await promtool_check(exposition.content) == ""
