"""How ``trio-sessions serve`` and the examples end: signals, bind failures, extras.

Each server runs as a real subprocess on loopback. A second signal during the
drain exits 130 with the report printed; a port that cannot be bound, a bad
option or a missing extra is one line on stderr and status 1 or 2, never a
traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from e2e_helpers import (
    EXAMPLES,
    ROOT,
    LineClient,
    Server,
    get,
    open_websocket,
    raw_http,
    run_server,
    tcp_stats,
    wait_until,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PROGRAMS = {
    "serve": ["-m", "trio_sessions", "serve"],
    "http_server": [str(EXAMPLES / "http_server.py")],
    "tcp_json_server": [str(EXAMPLES / "tcp_json_server.py")],
    "websocket_server": [str(EXAMPLES / "websocket_server.py")],
}
HTTP = ("serve", "http_server")


# ------------------------------------------------------------ second signal


async def http_active(port: int) -> int:
    _, _, body = await raw_http(port, get("/metrics"))
    for line in body.decode().splitlines():
        if line.startswith("trio_sessions_active{"):
            return int(float(line.rpartition(" ")[2]))
    raise AssertionError("no trio_sessions_active in /metrics")


async def websocket_active(port: int) -> int:
    async with open_websocket(port) as ws:
        await ws.send_message('{"jsonrpc": "2.0", "id": 0, "method": "server/stats"}')
        active: int = json.loads(await ws.get_message())["result"]["active"]
        return active


# Each server gets one of the two second signals: both are tested, on two each.
@pytest.mark.parametrize(
    ("name", "second"),
    [
        ("serve", signal.SIGINT),
        ("http_server", signal.SIGTERM),
        ("tcp_json_server", signal.SIGTERM),
        ("websocket_server", signal.SIGINT),
    ],
    ids=["serve-SIGINT", "http-SIGTERM", "tcp-SIGTERM", "websocket-SIGINT"],
)
async def test_second_signal_cancels_the_rest_and_exits_130(
    name: str, second: signal.Signals, tmp_path: Path
) -> None:
    """SIGTERM drains; a second signal cancels what is left, reports, exits 130."""
    closers: list[Callable[[], Awaitable[None]]] = []
    with trio.fail_after(60):
        async with (
            run_server(
                [*PROGRAMS[name], "--shutdown-timeout=30"], tmp_path, name=name
            ) as server,
            trio.open_nursery() as nursery,
        ):
            await hold(name, server, nursery, closers)
            server.signal(signal.SIGTERM)
            assert await server.readline() == "received SIGTERM, draining"
            start = trio.current_time()
            server.signal(second)
            status, lines = await server.wait_exit()
            elapsed = trio.current_time() - start
            for close in closers:
                await close()
            nursery.cancel_scope.cancel()
    assert status == 130, server.stderr()
    assert elapsed < 10  # not the 30 s drain
    assert f"received {second.name} again, cancelled what was left" in lines
    report = server.report()
    assert (report["initial_active"], report["cancelled"]) == (1, 1)
    assert server.final_statistics()["active"] == 0
    assert "Traceback" not in server.stderr()


async def hold(
    name: str,
    server: Server,
    nursery: trio.Nursery,
    closers: list[Callable[[], Awaitable[None]]],
) -> None:
    """Start one 60-second request on ``server`` and wait until it is a session."""
    if name in HTTP:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        closers.append(stream.aclose)
        await stream.send_all(get("/slow?seconds=60"))
        await wait_until(lambda: http_active(server.port), lambda n: n == 1)
    elif name == "tcp_json_server":
        client = await LineClient.connect(server.port)
        closers.append(client.aclose)
        await client.send({"id": 1, "op": "sleep", "params": {"seconds": 60}})
        await wait_until(lambda: tcp_stats(server.port), lambda s: s["active"] == 1)
    else:

        async def call(task_status: trio.TaskStatus[None]) -> None:
            async with open_websocket(server.port) as ws:
                await ws.send_message(
                    '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params":'
                    ' {"name": "sleep", "arguments": {"seconds": 60}}}'
                )
                task_status.started()
                try:
                    await ws.get_message()
                except Exception:
                    await trio.sleep_forever()

        await nursery.start(call)
        await wait_until(lambda: websocket_active(server.port), lambda n: n == 1)


# ------------------------------------------- one line, and the right status


async def run_to_exit(
    argv: list[str], *, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``python argv...`` to its end; return (status, stdout, stderr)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, *argv],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=environment,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@contextmanager
def busy_port() -> Iterator[int]:
    """A loopback port that something is already listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def all_programs(
    make_argv: Callable[[str], list[str]],
    *,
    env: dict[str, str] | None = None,
    names: list[str] | None = None,
) -> dict[str, tuple[int, str, str]]:
    """Run the programs with ``make_argv(name)`` at once; their results by name."""
    results: dict[str, tuple[int, str, str]] = {}

    async def one(name: str) -> None:
        results[name] = await run_to_exit(make_argv(name), env=env)

    async with trio.open_nursery() as nursery:
        for name in names or PROGRAMS:
            nursery.start_soon(one, name)
    return results


def one_line(stderr: str) -> str:
    """The one line a failed start printed (Hypercorn's own log lines aside)."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if "[INFO]" not in line]
    assert len(lines) == 1, stderr
    return lines[0]


async def test_a_port_in_use_is_one_line_and_status_1() -> None:
    """Every server says which address is in use, in one line, and exits 1."""
    with busy_port() as port:
        results = await all_programs(
            lambda name: [*PROGRAMS[name], "--host", "127.0.0.1", "--port", str(port)]
        )
    for name, (status, _, stderr) in results.items():
        assert status == 1, (name, stderr)
        line = one_line(stderr)
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line


async def test_an_address_that_is_not_local_is_one_line_and_status_1() -> None:
    """A host that is no address of this machine: one line, status 1."""
    results = await all_programs(
        lambda name: [*PROGRAMS[name], "--host", "192.0.2.1", "--port", "0"]
    )
    for name, (status, _, stderr) in results.items():
        assert status == 1, (name, stderr)
        assert "cannot listen on 192.0.2.1:0: " in one_line(stderr), name


async def test_bad_options_are_usage_errors_without_tracebacks() -> None:
    """--max-sessions 0: status 2, the option named, no traceback."""
    # (Every other bad value is checked in process: tests/test_server_options.py.)
    message = "argument --max-sessions: must be >= 1, got 0"
    results = await all_programs(lambda name: [*PROGRAMS[name], "--max-sessions=0"])
    for name, (status, _, stderr) in results.items():
        assert status == 2, (name, stderr)
        assert "Traceback" not in stderr
        assert stderr.splitlines()[-1].endswith(message), (name, stderr)


async def test_a_missing_extra_is_named_in_one_line(tmp_path: Path) -> None:
    """With only [cli] installed, each server names the extra to install: status 2."""
    for module in ("hypercorn", "prometheus_client", "trio_websocket"):
        package = tmp_path / module
        package.mkdir()
        message = f"No module named {module!r}"
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError({message!r}, name={module!r})\n"
        )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    # (The TCP example needs nothing but trio_sessions: it would serve.)
    results = await all_programs(
        lambda name: [*PROGRAMS[name], "--port=0"],
        env=env,
        names=["serve", "http_server", "websocket_server"],
    )
    for name, (status, _, stderr) in results.items():
        assert status == 2, (name, stderr)
        line = one_line(stderr)
        assert "needs: pip install 'trio-sessions[servers]'" in line, name
