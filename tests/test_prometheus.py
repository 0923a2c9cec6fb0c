"""SessionCollector: every statistic reaches Prometheus, one label per manager."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing
from hypercorn_server import running_server
from prometheus_client import CollectorRegistry, generate_latest, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import trio_sessions as ts
from trio_sessions.asgi import Message, Receive, Scope, Send, SessionMiddleware
from trio_sessions.prometheus import SessionCollector

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


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
    """Counters, gauges and summaries match manager.statistics() exactly."""
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry)
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

        durations = stats.durations
        assert value(samples, "trio_sessions_duration_seconds_count") == 6
        assert durations.mean is not None
        assert value(samples, "trio_sessions_duration_seconds_sum") == pytest.approx(
            durations.mean * 6
        )
        quantiles: tuple[tuple[str, float | None], ...] = (
            ("0.5", durations.p50),
            ("0.9", durations.p90),
            ("0.99", durations.p99),
        )
        for quantile, wanted in quantiles:
            assert value(
                samples, "trio_sessions_duration_seconds", quantile=quantile
            ) == pytest.approx(wanted)
        assert value(samples, "trio_sessions_duration_max_seconds") == pytest.approx(4)
        assert value(samples, "trio_sessions_wait_seconds_count") == 0


async def test_wait_times_are_exposed(autojump_clock: trio.testing.MockClock) -> None:
    """Queued admissions feed the wait summary and the waiting gauge."""
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
    assert value(
        samples, "trio_sessions_wait_seconds", quantile="0.5"
    ) == pytest.approx(2, rel=0.02)
    assert value(samples, "trio_sessions_wait_max_seconds") == pytest.approx(2)


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
