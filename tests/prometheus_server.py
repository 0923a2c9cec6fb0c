"""A real Prometheus for tests: ``promtool check metrics``, and a ``prometheus``
server on a free loopback port that scrapes given targets every second.

Tests skip when the binaries (Debian package ``prometheus``) are absent, unless
``CI`` is set: there a missing binary is a broken CI image, and fails loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from redis_server import free_port

# How long a fresh server may take to report ready before the test fails.
START_TIMEOUT = 30.0
SCRAPE_INTERVAL = "1s"
# How long a query may take to show what the last scrapes brought.
WAIT_TIMEOUT = 20.0


def require(binary: str) -> str:
    """Return the path of ``binary`` (from the ``prometheus`` package); else skip,
    or fail in CI."""
    path = shutil.which(binary)
    if path is not None:
        return path
    missing = f"{binary} is not installed (apt-get install prometheus)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{missing}, and CI is set: the CI image must provide it")
    pytest.skip(missing)


async def promtool_check(exposition: bytes) -> str:
    """Run ``promtool check metrics`` on a text exposition; return its complaints
    (empty when there are none)."""
    result = await trio.run_process(
        [require("promtool"), "check", "metrics"],
        stdin=exposition,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    complaints = (result.stdout + result.stderr).decode().strip()
    if result.returncode != 0 and not complaints:  # pragma: no cover - never seen
        complaints = f"promtool exited {result.returncode}"
    return complaints


class Prometheus:
    """A running server: its port and ``/api/v1/query``."""

    def __init__(self, port: int, client: httpx.AsyncClient) -> None:
        self.port = port
        self._client = client

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector ``promql`` evaluates to now (``data.result``)."""
        response = await self._client.get("/api/v1/query", params={"query": promql})
        body: dict[str, Any] = response.json()
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def scalar(self, promql: str) -> float | None:
        """The one value ``promql`` evaluates to, or None while it has none."""
        result = await self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    async def wait_for(
        self, promql: str, expected: float, timeout: float = WAIT_TIMEOUT
    ) -> None:
        """Poll until ``promql`` evaluates to ``expected``, as the next scrapes
        bring it; fail after ``timeout`` seconds with the last value seen."""
        seen = None
        with trio.move_on_after(timeout):
            while True:
                seen = await self.scalar(promql)
                if seen == expected:
                    return
                await trio.sleep(0.2)
        raise AssertionError(f"{promql} is {seen}, not {expected}, after {timeout} s")


def _config(targets: Sequence[str]) -> str:
    # JSON is YAML: no YAML library needed to write it.
    quoted = ", ".join(f'"{target}"' for target in targets)
    return (
        f'{{"global": {{"scrape_interval": "{SCRAPE_INTERVAL}",'
        f' "evaluation_interval": "{SCRAPE_INTERVAL}"}},'
        ' "scrape_configs": [{"job_name": "trio_sessions",'
        f' "scrape_timeout": "{SCRAPE_INTERVAL}",'
        f' "static_configs": [{{"targets": [{quoted}]}}]}}]}}\n'
    )


@asynccontextmanager
async def running_prometheus(
    tmp_path: Path, targets: Sequence[str]
) -> AsyncIterator[Prometheus]:
    """Run ``prometheus`` on 127.0.0.1, scraping ``targets`` (``host:port``) every
    second into a TSDB under ``tmp_path``; yield it once ready; kill it by PID."""
    binary = require("prometheus")
    config = tmp_path / "prometheus.json"
    config.write_text(_config(targets))
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Debian's defaults point at /etc/prometheus; nothing else is read.
                f"--web.console.templates={tmp_path}",
                f"--web.console.libraries={tmp_path}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=5.0
        ) as client:
            with trio.move_on_after(START_TIMEOUT):
                while process.poll() is None:
                    if await _ready(client):
                        break
                    await trio.sleep(0.1)
            if process.poll() is not None or not await _ready(client):
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"prometheus did not start on {port}:\n{tail}")
            yield Prometheus(port, client)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/-/ready")).status_code == 200
    except httpx.TransportError:
        return False
