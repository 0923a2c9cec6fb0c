"""Tests of the HTTP load of trio_sessions.loadtest, against a real local server.

Each test serves an ASGI app on 127.0.0.1, port 0, inside ``fail_after``, and
drives it with :func:`loadtest.http_load`. No test asserts on wall-clock time.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn_server import running_server

from trio_sessions import loadtest


def mixed_status_app() -> Callable[..., Awaitable[None]]:
    """An ASGI app answering 200, except every 10th request 503 and the next 504.

    ``/teapot`` answers 418, and ``/hang`` never answers.
    """
    count = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal count
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        status = 200
        if scope["path"] == "/mixed":
            status = {3: 503, 7: 504}.get(count % 10, 200)
            count += 1
        elif scope["path"] == "/teapot":
            status = 418
        elif scope["path"] == "/hang":
            await trio.sleep_forever()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"hello"})

    return app


async def test_http_load_counts_statuses() -> None:
    """Against a real local server, 2xx, 503 and 504 are counted exactly."""
    with trio.fail_after(30):
        async with running_server(mixed_status_app()) as base:
            seen: list[tuple[int, int]] = []
            result = await loadtest.http_load(
                f"{base}/mixed",
                requests=50,
                concurrency=5,
                progress=lambda done, total: seen.append((done, total)),
            )
    assert result.passed, result.problems
    assert result.requests == 50
    assert (result.success_2xx, result.status_503, result.status_504) == (40, 5, 5)
    assert (result.other_status, result.errors) == (0, 0)
    assert result.latency.count == 50
    assert result.throughput > 0
    assert seen[-1] == (50, 50)


async def test_http_load_other_status_fails() -> None:
    """Responses other than 2xx, 503 and 504 fail the HTTP load."""
    with trio.fail_after(30):
        async with running_server(mixed_status_app()) as base:
            result = await loadtest.http_load(
                f"{base}/teapot", requests=6, concurrency=2
            )
    assert not result.passed
    assert result.other_status == 6


async def test_http_load_for_a_duration() -> None:
    """With a duration, requests go on until it is over, then stop."""
    with trio.fail_after(30):
        async with running_server(mixed_status_app()) as base:
            result = await loadtest.http_load(f"{base}/", duration=0.2, concurrency=2)
    assert result.passed, result.problems
    assert result.requests == result.success_2xx > 0


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_http_load_counts_connection_errors() -> None:
    """Requests to a closed port are counted as errors and fail the load."""
    with trio.fail_after(30):
        result = await loadtest.http_load(
            f"http://127.0.0.1:{closed_port()}/", requests=4, concurrency=2
        )
    assert not result.passed
    assert result.errors == 4
    assert result.first_error is not None
    assert result.latency.count == 0


async def test_http_load_timeout_says_which_request_after_how_long() -> None:
    """A client timeout is reported with the request, its URL and the timeout."""
    with trio.fail_after(30):
        async with running_server(mixed_status_app()) as base:
            result = await loadtest.http_load(
                f"{base}/hang", requests=1, concurrency=1, timeout=0.2
            )
    assert result.errors == 1
    assert result.first_error is not None
    assert re.fullmatch(
        rf"ReadTimeout on request 1 \(GET {re.escape(base)}/hang\) after 0\.2\d s: "
        r"no answer within the 0\.2 s client timeout",
        result.first_error,
    ), result.first_error
    assert result.problems == (f"1 request failed (first: {result.first_error})",)


async def test_connection_error_names_the_request() -> None:
    """A refused connection says which request, after how long, and the OS error."""
    url = f"http://127.0.0.1:{closed_port()}/"
    with trio.fail_after(30):
        result = await loadtest.http_load(url, requests=1, concurrency=1)
    assert result.first_error is not None
    assert result.first_error.startswith(
        f"ConnectError on request 1 (GET {url}) after "
    )
    assert result.first_error.endswith(f"127.0.0.1:{url.split(':')[2][:-1]} failed")
