"""``trio-sessions serve`` as a real subprocess: it serves, then drains on SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import trio
from e2e_helpers import run_server, wait_until


async def test_serve_subcommand_serves_and_drains(tmp_path: Path) -> None:
    """serve answers requests as sessions and exits 0 with its report on SIGTERM."""
    with trio.fail_after(60):
        async with run_server(
            ["-m", "trio_sessions", "serve", "--max-sessions", "3"], tmp_path
        ) as server:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base) as client:
                for _ in range(3):
                    response = await client.get("/")
                    assert (response.status_code, response.text) == (200, "hello\n")
                assert (await client.get("/healthz")).status_code == 200
            server.signal(signal.SIGTERM)
            status, lines = await server.wait_exit()
    assert status == 0, server.stderr()
    assert "received SIGTERM, draining" in lines
    stats = server.final_statistics()
    assert (stats["max_sessions"], stats["created"], stats["succeeded"]) == (3, 3, 3)
    assert server.report()["initial_active"] == 0


async def test_serve_limits_each_tenant_and_lets_priority_into_the_reserve(
    tmp_path: Path,
) -> None:
    """--key header:x-tenant, --max-sessions-per-key, --priority-header and
    --reserved-share, through a real HTTP client against the real server."""
    argv = ["-m", "trio_sessions", "serve", "--max-sessions", "4"]
    argv += ["--key", "header:x-tenant", "--max-sessions-per-key", "2"]
    argv += ["--priority-header", "x-priority", "--reserved-share", "0.25"]
    with trio.fail_after(60):
        async with (
            run_server(argv, tmp_path) as server,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client,
            trio.open_nursery() as nursery,
        ):
            release = "/slow?seconds=2"

            async def hold(tenant: str) -> None:
                await client.get(release, headers={"x-tenant": tenant})

            async def metrics() -> str:
                return (await client.get("/metrics")).text

            async def active(n: int) -> None:
                with trio.fail_after(10):
                    line = f'trio_sessions_active{{manager="http"}} {n}.0'
                    await wait_until(metrics, lambda text: line in text)

            for tenant in ("a", "a"):
                nursery.start_soon(hold, tenant)
            await active(2)
            full_key = await client.get("/", headers={"x-tenant": "a"})
            assert full_key.status_code == 503
            assert int(full_key.headers["retry-after"]) >= 1
            nursery.start_soon(hold, "b")
            await active(3)
            # One slot is left, and it is the reserve: a low-priority request
            # of another tenant is refused, a priority-1 one served.
            assert (await client.get("/", headers={"x-tenant": "c"})).status_code == 503
            served = await client.get("/", headers={"x-tenant": "c", "x-priority": "1"})
            assert served.status_code == 200
            server.signal(signal.SIGTERM)
            status, _ = await server.wait_exit()
    assert status == 0, server.stderr()
    stats = server.final_statistics()
    assert stats["rejections"]["key_capacity"] == 1
    assert stats["rejections"]["capacity"] == 1
