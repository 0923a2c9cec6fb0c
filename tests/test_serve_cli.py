"""``trio-sessions serve`` as a real subprocess: it serves, then drains on SIGTERM."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import trio
from e2e_helpers import run_server


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
