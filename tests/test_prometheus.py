"""SessionCollector: every statistic reaches Prometheus, one label per manager;
latencies as exact histograms that add up across managers, promtool-clean."""

from __future__ import annotations

import math
from typing import Literal

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypercorn_server import running_server
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import promtool_check
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import trio_sessions as ts
from trio_sessions.asgi import Message, Receive, Scope, Send, SessionMiddleware
from trio_sessions.prometheus import DEFAULT_BUCKETS, SessionCollector
from trio_sessions.redis import RedisSessionLimit

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# A fleet limit for its gauges only: nothing listens there, nothing connects.
UNUSED_REDIS = "redis://127.0.0.1:1/0"


def scrape(registry: CollectorRegistry) -> Samples:
    """Render the registry as text and parse it back, as Prometheus would."""
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, manager: str = "api", **labels: str) -> float:
    return samples[(name, tuple(sorted({"manager": manager, **labels}.items())))]


def buckets(samples: Samples, name: str, manager: str = "api") -> dict[float, float]:
    """The ``le -> count`` buckets of histogram ``name`` for one manager."""
    found = {}
    for (sample, labels), count in samples.items():
        tags = dict(labels)
        if sample == f"{name}_bucket" and tags["manager"] == manager:
            found[float(tags["le"])] = count
    return found


async def sleep_then(seconds: float) -> None:
    await trio.sleep(seconds)


async def fail() -> None:
    raise ValueError("boom")


async def run_mix(manager: ts.SessionManager) -> None:
    """Three successes, an error, a timeout, a cancellation and a refusal."""
    for seconds in (1, 2, 3):
        await manager.run(sleep_then, seconds)
    with pytest.raises(ValueError, match="boom"):
        await manager.run(fail)
    with pytest.raises(ts.SessionTimeout):
        await manager.run(sleep_then, 100, timeout=4)
    session = await manager.start_session(sleep_then, 100, metadata={"who": "me"})
    # Still running at the scrape; shutdown cancels it when the test ends.
    await manager.start_session(sleep_then, 100, metadata={"who": "you"})
    with pytest.raises(ts.CapacityError):
        await manager.start_session(sleep_then, 1)
    session.cancel()
    with pytest.raises(ts.SessionCancelled):
        await session.wait()


async def test_every_statistic_is_exposed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Counters, gauges and histograms match manager.statistics() exactly."""
    registry = CollectorRegistry()
    # Bounds between the run times (0, 0, 1, 2, 3 and 4 s), none on one.
    collector = SessionCollector(registry=registry, buckets=[0.5, 1.5, 2.5, 3.5, 5])
    async with ts.open_session_manager(max_sessions=2) as manager:
        collector.add("api", manager)
        await run_mix(manager)
        stats = manager.statistics()
        samples = scrape(registry)

        assert value(samples, "trio_sessions_created_total") == stats.created == 7
        for outcome, expected in (
            ("success", 3),
            ("error", 1),
            ("timeout", 1),
            ("cancelled", 1),
        ):
            assert (
                value(samples, "trio_sessions_completed_total", outcome=outcome)
                == expected
            )
        for reason, count in stats.rejections.items():
            assert (
                value(samples, "trio_sessions_rejected_total", reason=reason) == count
            )
        assert value(samples, "trio_sessions_rejected_total", reason="capacity") == 1
        assert value(samples, "trio_sessions_active") == stats.active == 1
        assert value(samples, "trio_sessions_waiting") == 0
        assert value(samples, "trio_sessions_max_sessions") == 2
        assert value(samples, "trio_sessions_peak_active") == 2
        assert value(samples, "trio_sessions_metadata_bytes") == stats.metadata_bytes
        assert stats.metadata_bytes > 0
        assert (
            value(samples, "trio_sessions_peak_metadata_bytes")
            == stats.peak_metadata_bytes
        )
        assert value(samples, "trio_sessions_success_ratio") == pytest.approx(0.5)

        assert value(samples, "trio_sessions_duration_seconds_count") == 6
        assert value(samples, "trio_sessions_duration_seconds_sum") == pytest.approx(
            stats.durations.sum
        )
        assert stats.durations.sum == pytest.approx(10)
        # The error and the cancellation took no time; then 1, 2, 3, and the
        # timeout's 4 s.
        assert buckets(samples, "trio_sessions_duration_seconds") == {
            0.5: 2,
            1.5: 3,
            2.5: 4,
            3.5: 5,
            5.0: 6,
            math.inf: 6,
        }
        assert ("trio_sessions_duration_seconds", ()) not in samples  # no quantiles
        assert value(samples, "trio_sessions_duration_max_seconds") == pytest.approx(4)
        assert value(samples, "trio_sessions_wait_seconds_count") == 0
        assert set(buckets(samples, "trio_sessions_wait_seconds").values()) == {0}


async def test_wait_times_are_exposed(autojump_clock: trio.testing.MockClock) -> None:
    """Queued admissions feed the wait histogram and the waiting gauge."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry)
    async with (
        ts.open_session_manager(max_sessions=1, max_waiting=1) as manager,
        trio.open_nursery() as nursery,
    ):
        collector.add("api", manager)
        nursery.start_soon(manager.run, sleep_then, 2)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(manager.run, sleep_then, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert value(scrape(registry), "trio_sessions_waiting") == 1
    samples = scrape(registry)
    assert value(samples, "trio_sessions_wait_seconds_count") == 1
    assert value(samples, "trio_sessions_wait_seconds_sum") == pytest.approx(2)
    waits = buckets(samples, "trio_sessions_wait_seconds")
    assert list(waits) == [*DEFAULT_BUCKETS, math.inf]
    assert (waits[1.0], waits[2.5], waits[math.inf]) == (0, 1, 1)
    assert value(samples, "trio_sessions_wait_max_seconds") == pytest.approx(2)


async def test_summary_is_an_option(autojump_clock: trio.testing.MockClock) -> None:
    """latency="summary" exports the quantile summaries of earlier releases."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry, latency="summary")
    async with ts.open_session_manager() as manager:
        collector.add("api", manager)
        for seconds in (1, 2, 3):
            await manager.run(sleep_then, seconds)
        durations = manager.statistics().durations
        samples = scrape(registry)
    assert value(samples, "trio_sessions_duration_seconds_count") == 3
    assert value(samples, "trio_sessions_duration_seconds_sum") == pytest.approx(6)
    for quantile, wanted in (
        ("0.5", durations.p50),
        ("0.9", durations.p90),
        ("0.99", durations.p99),
    ):
        assert value(
            samples, "trio_sessions_duration_seconds", quantile=quantile
        ) == pytest.approx(wanted)
    assert buckets(samples, "trio_sessions_duration_seconds") == {}
    with pytest.raises(ValueError, match="latency must be 'histogram' or 'summary'"):
        SessionCollector(registry=None, latency="quantiles")  # type: ignore[arg-type]


async def test_histograms_add_up_across_managers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Summed by le, two managers' buckets are exactly those of all their sessions:
    what Prometheus does with a fleet's histograms."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry, buckets=[0.1, 0.25, 1, 2.5])
    runs = {"first": (0.1, 0.2, 0.3), "second": (0.25, 2.0, 3.0, 0.05)}
    async with (
        ts.open_session_manager() as first,
        ts.open_session_manager() as second,
    ):
        managers = {"first": first, "second": second}
        for name, manager in managers.items():
            collector.add(name, manager)
            for seconds in runs[name]:
                await manager.run(sleep_then, seconds)
        samples = scrape(registry)
    fleet = buckets(samples, "trio_sessions_duration_seconds", "first")
    for le, count in buckets(
        samples, "trio_sessions_duration_seconds", "second"
    ).items():
        fleet[le] += count
    everything = [seconds for times in runs.values() for seconds in times]
    assert fleet == {
        le: sum(seconds <= le for seconds in everything)
        for le in (0.1, 0.25, 1.0, 2.5, math.inf)
    }


@pytest.mark.parametrize(
    ("bounds", "error", "match"),
    [
        ([0.005, 0.0123], ValueError, "buckets: 0.0123 is not a bound"),
        ([1, 0.5], ValueError, "buckets must be in increasing order"),
        ([None], TypeError, "buckets must be numbers"),
    ],
)
def test_buckets_are_checked_at_construction(
    bounds: list[object], error: type[Exception], match: str
) -> None:
    """A bound the manager does not count is refused before any scrape."""
    with pytest.raises(error, match=match):
        SessionCollector(registry=None, buckets=bounds)  # type: ignore[arg-type]


async def test_the_limit_in_force_and_its_changes_are_exposed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """max_sessions follows resize(); limit_changes_total counts each change."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry)
    async with ts.open_session_manager(max_sessions=2) as manager:
        collector.add("api", manager)
        samples = scrape(registry)
        assert value(samples, "trio_sessions_max_sessions") == 2
        assert value(samples, "trio_sessions_limit_changes_total") == 0
        manager.resize(5)
        manager.resize(3)
        samples = scrape(registry)
        assert value(samples, "trio_sessions_max_sessions") == 3
        assert value(samples, "trio_sessions_limit_changes_total") == 2
        stats = manager.statistics()
        assert (stats.max_sessions, stats.limit_changes) == (3, 2)


async def test_a_controllers_limit_is_exposed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The limit a controller chose is the gauge, and its change is counted."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry)
    # One session slower than slow_after is a loss: the limit halves, 8 -> 4.
    controller = ts.AIMDController(
        initial_limit=8, min_limit=1, max_limit=8, backoff_ratio=0.5, slow_after=1
    )
    async with ts.open_session_manager(controller=controller) as manager:
        collector.add("api", manager)
        assert value(scrape(registry), "trio_sessions_max_sessions") == 8
        await manager.run(sleep_then, 2)
        samples = scrape(registry)
        assert value(samples, "trio_sessions_max_sessions") == 4
        assert value(samples, "trio_sessions_limit_changes_total") == 1


def key_series(samples: Samples, manager: str = "api") -> dict[str, tuple[float, ...]]:
    """``key -> (active, admitted, rejected)`` as exported for one manager."""
    found: dict[str, list[float]] = {}
    names = (
        "trio_sessions_key_active",
        "trio_sessions_key_admitted_total",
        "trio_sessions_key_rejected_total",
    )
    for (sample, labels), count in samples.items():
        tags = dict(labels)
        if sample in names and tags["manager"] == manager:
            found.setdefault(tags["key"], [0, 0, 0])[names.index(sample)] = count
    return {key: tuple(counts) for key, counts in found.items()}


async def run_keyed(manager: ts.SessionManager) -> None:
    """Keys a and b hold a session each; a is refused a second; c comes third.

    With two keys tracked, c takes the place of the quietest (b, one session
    to a's two callers): b's counts fold into "other".
    """
    await manager.start_session(sleep_then, 100, key="a")
    await manager.start_session(sleep_then, 100, key="b")
    with pytest.raises(ts.CapacityError) as refused:
        await manager.start_session(sleep_then, 1, key="a")
    assert refused.value.reason == "key_capacity"
    await manager.start_session(sleep_then, 100, key="c")


async def test_per_key_statistics_are_exposed_by_label(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The tracked keys by name and the rest as key="other", exactly as
    statistics() has them; nothing per key until a key is seen."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry)
    async with ts.open_session_manager(
        max_sessions=10, max_sessions_per_key=1, tracked_keys=2
    ) as manager:
        collector.add("api", manager)
        await manager.run(sleep_then, 0)
        assert key_series(scrape(registry)) == {}
        await run_keyed(manager)
        samples = scrape(registry)
        stats = manager.statistics()
        assert key_series(samples) == {
            "a": (1, 1, 1),
            "c": (1, 1, 0),
            "other": (1, 1, 0),
        }
        assert key_series(samples) == {
            **{key: attrs.astuple(counts) for key, counts in stats.keys.items()},
            "other": attrs.astuple(stats.other_keys),
        }
        assert (
            value(samples, "trio_sessions_rejected_total", reason="key_capacity") == 1
        )
        manager.statistics()


async def test_a_key_named_other_is_counted_with_the_untracked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A key called "other" shares the series of the untracked keys: one label
    set, one series, so the exposition stays valid."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry)
    async with ts.open_session_manager(tracked_keys=2) as manager:
        collector.add("api", manager)
        await manager.start_session(sleep_then, 100, key="other")
        for key in ("other", "y", "z"):
            await manager.run(sleep_then, 0, key=key)
        stats = manager.statistics()
        # z took the place of the quieter y, whose counts were folded.
        assert set(stats.keys) == {"other", "z"}
        assert attrs.astuple(stats.other_keys) == (0, 1, 0)
        samples = scrape(registry)
        assert key_series(samples) == {"z": (0, 1, 0), "other": (1, 3, 0)}
        assert await promtool_check(generate_latest(registry)) == ""


@pytest.mark.parametrize("latency", ["histogram", "summary"])
async def test_exposition_passes_promtool(
    latency: Literal["histogram", "summary"],
    autojump_clock: trio.testing.MockClock,
) -> None:
    """promtool check metrics finds nothing to say about any series, fleet gauges
    included, in either latency kind."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry, latency=latency)
    async with ts.open_session_manager(max_sessions=2) as manager:
        collector.add("api", manager)
        # Built, never connected: its statistics need no I/O.
        collector.add_fleet("api", RedisSessionLimit.from_url(UNUSED_REDIS, limit=4))
        await run_mix(manager)
        manager.resize(3)
        async with ts.open_session_manager(
            max_sessions_per_key=1, tracked_keys=2
        ) as keyed:
            collector.add("keyed", keyed)
            await run_keyed(keyed)
            assert key_series(scrape(registry), "keyed")
            assert await promtool_check(generate_latest(registry)) == ""


async def test_managers_stay_apart_by_label() -> None:
    """Two managers in one registry get their own series, told apart by `manager`."""
    registry = CollectorRegistry()
    async with (
        ts.open_session_manager(max_sessions=3) as first,
        ts.open_session_manager(max_sessions=5) as second,
    ):
        SessionCollector({"first": first, "second": second}, registry=registry)
        await first.run(sleep_then, 0)
        for _ in range(2):
            await second.run(sleep_then, 0)
        samples = scrape(registry)
    assert value(samples, "trio_sessions_max_sessions", "first") == 3
    assert value(samples, "trio_sessions_max_sessions", "second") == 5
    assert value(samples, "trio_sessions_created_total", "first") == 1
    assert value(samples, "trio_sessions_created_total", "second") == 2


async def test_names_are_unique_and_removable() -> None:
    """A name is used once; remove() drops its series; namespace renames metrics."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry, namespace="app_sessions")
    async with ts.open_session_manager() as manager:
        collector.add("api", manager)
        with pytest.raises(ValueError, match="api"):
            collector.add("api", manager)
        assert value(scrape(registry), "app_sessions_active") == 0
        collector.remove("api")
        assert not any(name.startswith("app_") for name, _ in scrape(registry))
        with pytest.raises(KeyError):
            collector.remove("api")


def test_registration_is_optional_and_names_collide_once() -> None:
    """registry=None registers nothing; two collectors with one namespace collide."""
    registry = CollectorRegistry()
    SessionCollector(registry=None)
    assert scrape(registry) == {}
    SessionCollector(registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        SessionCollector(registry=registry)
    SessionCollector(registry=registry, namespace="other")


async def test_middleware_is_a_source_once_started() -> None:
    """A SessionMiddleware exports nothing before its lifespan, its manager after."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass  # pragma: no cover

    registry = CollectorRegistry()
    middleware = SessionMiddleware(app, max_sessions=9)
    SessionCollector({"http": middleware}, registry=registry)
    assert ("trio_sessions_active", (("manager", "http"),)) not in scrape(registry)

    to_app, receive = trio.open_memory_channel[Message](1)
    sent: list[str] = []

    async def send(message: Message) -> None:
        sent.append(message["type"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(middleware, {"type": "lifespan"}, receive.receive, send)
        await to_app.send({"type": "lifespan.startup"})
        await trio.testing.wait_all_tasks_blocked()
        assert value(scrape(registry), "trio_sessions_max_sessions", "http") == 9
        await to_app.send({"type": "lifespan.shutdown"})
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_the_howto_recipe_keeps_the_scrape_out_of_sessions() -> None:
    """The how-to's Mount + exclude_paths, behind Hypercorn: at capacity, /metrics
    still answers (through Starlette's redirect to /metrics/), uncounted."""
    entered, release = trio.Event(), trio.Event()

    async def slow(request: Request) -> PlainTextResponse:
        entered.set()
        await release.wait()
        return PlainTextResponse("done")

    registry = CollectorRegistry()
    # As written in docs/howto/prometheus.rst, with a capacity of one.
    routes = Starlette(
        routes=[
            Route("/slow", slow),
            Mount("/metrics", app=make_asgi_app(registry=registry)),
        ]
    )
    app = SessionMiddleware(routes, max_sessions=1, exclude_paths=["/metrics"])
    SessionCollector({"http": app}, registry=registry)
    with trio.fail_after(10):
        async with (
            running_server(app) as base,
            httpx.AsyncClient(base_url=base) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(client.get, "/slow")
            await entered.wait()
            assert (await client.get("/slow")).status_code == 503  # full
            scrape = await client.get("/metrics", follow_redirects=True)
            assert scrape.status_code == 200
            assert "trio_sessions_active" in scrape.text
            release.set()
        stats = app.manager.statistics()
    assert (stats.created, stats.rejections["capacity"]) == (1, 1)
