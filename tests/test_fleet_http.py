"""The HTTP example sharing a fleet-wide limit through a real redis-server.

Two example processes share a limit of 2: the third concurrent request, on
either process, is refused with 503, and ``/metrics`` exports the fleet gauges.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from e2e_helpers import run_example
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer, require_redis

REDIS_SERVER = require_redis()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(REDIS_SERVER, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_two_processes_share_one_fleet_limit(
    tmp_path: Path, redis: RedisServer
) -> None:
    """A fleet limit of 2 holds across two processes; /metrics shows the leases."""
    options = ("--redis-url", redis.url, "--fleet-limit", "2", "--max-sessions", "10")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with trio.fail_after(60):
        async with (
            run_example("http_server", tmp_path / "a", *options) as first,
            run_example("http_server", tmp_path / "b", *options) as second,
        ):
            clients = [
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}")
                for server in (first, second)
            ]
            statuses: list[int] = []

            async def slow(client: httpx.AsyncClient) -> None:
                response = await client.get("/slow", params={"seconds": 1})
                statuses.append(response.status_code)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow, clients[0])
                nursery.start_soon(slow, clients[1])
                await trio.sleep(0.4)  # both admitted and holding their leases
                refused = await clients[1].get("/")
                metrics = (await clients[1].get("/metrics")).text
            for client in clients:
                await client.aclose()
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert sorted(statuses) == [200, 200]
    key = (("key", "trio_sessions:leases"), ("manager", "http"))
    assert samples(metrics, "trio_sessions_fleet_leases")[key] == 2
    assert samples(metrics, "trio_sessions_fleet_leases_held")[key] == 1
    assert samples(metrics, "trio_sessions_fleet_limit")[key] == 2
    assert samples(metrics, "trio_sessions_fleet_backend_up")[key] == 1
    rejected = samples(metrics, "trio_sessions_rejected_total")
    assert rejected[(("manager", "http"), ("reason", "global_capacity"))] == 1
