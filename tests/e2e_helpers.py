"""Start the example servers as real subprocesses on loopback and talk to them.

Every child is killed on the way out, whatever happened; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
STARTUP_TIMEOUT = 30.0
EXIT_TIMEOUT = 20.0


class Server:
    """A running example: its process, its port and its stdout, line by line."""

    def __init__(self, process: trio.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.port = 0
        self.lines: list[str] = []
        self._buffer = b""

    async def readline(self) -> str | None:
        """Return the next stdout line, or None at end of output."""
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            data = await self.process.stdout.receive_some(65_536)
            if not data:
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        text = line.decode()
        self.lines.append(text)
        return text

    def stderr(self) -> str:
        """What the child wrote to stderr so far (for failure messages)."""
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the child."""
        self.process.send_signal(signum)

    async def wait_exit(self) -> tuple[int, list[str]]:
        """Read stdout to its end and wait for the exit; return (status, new lines)."""
        first = len(self.lines)
        with trio.fail_after(EXIT_TIMEOUT):
            while await self.readline() is not None:
                pass
            status = await self.process.wait()
        return status, self.lines[first:]

    def report(self) -> dict[str, Any]:
        """The ``shutdown report: {...}`` the child printed on its way out."""
        return _json_after(self.lines, "shutdown report: ")

    def final_statistics(self) -> dict[str, Any]:
        """The ``final statistics: {...}`` the child printed on its way out."""
        return _json_after(self.lines, "final statistics: ")


def _json_after(lines: list[str], prefix: str) -> dict[str, Any]:
    for line in lines:
        if line.startswith(prefix):
            value: dict[str, Any] = json.loads(line[len(prefix) :])
            return value
    raise AssertionError(f"no {prefix!r} line in {lines!r}")


@asynccontextmanager
async def run_server(
    argv: list[str], tmp_path: Path, *, name: str = "server"
) -> AsyncIterator[Server]:
    """Run ``python argv... --port 0`` and yield it once it printed its port."""
    stderr_path = tmp_path / f"{name}.stderr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, *argv, "--host", "127.0.0.1", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=ROOT,
        )
    server = Server(process, stderr_path)
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            line = await server.readline()
        if line is None or not line.startswith("listening on "):
            raise AssertionError(f"bad first line {line!r}; stderr:\n{server.stderr()}")
        server.port = int(line.rpartition(":")[2])
        yield server
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


@asynccontextmanager
async def run_example(
    name: str, tmp_path: Path, *options: str
) -> AsyncIterator[Server]:
    """Run ``examples/<name>.py`` with ``options`` on a free loopback port."""
    async with run_server(
        [str(EXAMPLES / f"{name}.py"), *options], tmp_path, name=name
    ) as server:
        yield server


async def raw_http(
    port: int,
    request: bytes,
    *,
    read: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP/1.1 request (``Connection: close``); parse the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while read:
            chunk = await stream.receive_some(65_536)
            if not chunk:
                break
            data += chunk
    return parse_http(data)


def parse_http(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Split a whole HTTP/1.1 response into (status, headers, body)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def get(path: str) -> bytes:
    """A minimal GET request that closes the connection after the answer."""
    return f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()


class LineClient:
    """A raw Trio TCP client for the line-delimited JSON server."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""

    @classmethod
    async def connect(cls, port: int) -> LineClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, value: object) -> None:
        await self.stream.send_all(json.dumps(value).encode() + b"\n")

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            data = await self.stream.receive_some(65_536)
            if not data:
                raise EOFError("server closed the connection")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        value: dict[str, Any] = json.loads(line)
        return value

    async def call(self, value: object) -> dict[str, Any]:
        await self.send(value)
        return await self.receive()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def tcp_stats(port: int) -> dict[str, Any]:
    """The TCP example's statistics, over a fresh connection."""
    client = await LineClient.connect(port)
    try:
        answer = await client.call({"id": "stats", "op": "stats"})
    finally:
        await client.aclose()
    result: dict[str, Any] = answer["result"]
    return result


async def wait_until(probe: Any, predicate: Any, *, interval: float = 0.02) -> Any:
    """Poll ``await probe()`` until ``predicate(value)``; the caller bounds the time."""
    while True:
        value = await probe()
        if predicate(value):
            return value
        await trio.sleep(interval)


@asynccontextmanager
async def open_websocket(port: int) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client whose TCP stream is always closed.

    trio-websocket 0.12.2 leaves the client's socket open when the *server*
    starts the closing handshake, so the test owns the stream itself.
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/")
        try:
            yield ws
        finally:
            await ws.aclose()
            await stream.aclose()
