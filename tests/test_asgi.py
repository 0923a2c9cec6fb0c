"""SessionMiddleware driven in-process, as an ASGI server would drive it.

Timing behaviour (deadlines, drains, slow clients) runs under ``autojump_clock``;
Starlette is driven through httpx's ASGI transport, a real client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from session_helpers import compact_size
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import trio_sessions as ts
from trio_sessions._metadata import MeasuredMetadata
from trio_sessions.asgi import (
    Message,
    Receive,
    Scope,
    Send,
    SessionMiddleware,
)
from trio_sessions.testing import check_invariants

T = TypeVar("T")

# ------------------------------------------------------------------- harness


def only_in(mode: str) -> Callable[[T], T]:
    """Mark a test of one mode's own mechanics (the spawned mode's pump, the
    inline mode's disconnect watch): it runs only in ``mode``."""

    def mark(test: T) -> T:
        setattr(test, "middleware_modes", [mode])  # noqa: B010 - mypy allows this
        return test

    return mark


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test runs in both of the middleware's modes, inline and spawned."""
    if "middleware_mode" in metafunc.fixturenames:
        modes = getattr(metafunc.function, "middleware_modes", ["inline", "spawned"])
        metafunc.parametrize("middleware_mode", modes, indirect=True)


@pytest.fixture(autouse=True)
def middleware_mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """This module's ``SessionMiddleware``, in the mode the test runs in."""
    mode: str = request.param
    monkeypatch.setitem(
        globals(), "SessionMiddleware", partial(_Middleware, inline=mode == "inline")
    )
    return mode


_Middleware = SessionMiddleware


@attrs.define
class Response:
    """What the app sent back for one request."""

    messages: list[Message]

    @property
    def status(self) -> int | None:
        for message in self.messages:
            if message["type"] == "http.response.start":
                status: int = message["status"]
                return status
        return None

    @property
    def headers(self) -> dict[bytes, bytes]:
        for message in self.messages:
            if message["type"] == "http.response.start":
                return dict(message.get("headers", []))
        return {}

    @property
    def body(self) -> bytes:
        return b"".join(
            message.get("body", b"")
            for message in self.messages
            if message["type"] == "http.response.body"
        )


class Lifespan:
    """Runs an app's lifespan protocol in a task, one event at a time."""

    def __init__(self, app: Any, nursery: trio.Nursery) -> None:
        self._to_app, receive = trio.open_memory_channel[Message](1)
        send, self._from_app = trio.open_memory_channel[Message](1)
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        nursery.start_soon(app, scope, receive.receive, send.send)

    async def event(self, kind: str) -> Message:
        await self._to_app.send({"type": kind})
        return await self._from_app.receive()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[Lifespan]:
    """Start the app's lifespan, yield, then shut it down (as Hypercorn does)."""
    async with trio.open_nursery() as nursery:
        lifespan = Lifespan(app, nursery)
        assert (await lifespan.event("lifespan.startup"))["type"] == (
            "lifespan.startup.complete"
        )
        yield lifespan
        assert (await lifespan.event("lifespan.shutdown"))["type"] == (
            "lifespan.shutdown.complete"
        )


async def request(
    app: Any,
    path: str = "/",
    *,
    method: str = "GET",
    chunks: Iterable[bytes] = (b"",),
    chunk_delay: float = 0.0,
    headers: Iterable[tuple[bytes, bytes]] = (),
    disconnect: trio.Event | None = None,
    on_receive: Callable[[], None] | None = None,
    client: tuple[str, int] = ("127.0.0.1", 5000),
) -> Response:
    """One HTTP request; the client leaves when ``disconnect`` is set.

    ``on_receive`` runs in the middleware's first call of ``receive``: right
    after admission, before the session's task has run a step.
    """
    pending = list(chunks)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": list(headers),
        "client": client,
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> Message:
        nonlocal on_receive
        if on_receive is not None:
            hook, on_receive = on_receive, None
            hook()
        if pending:
            if chunk_delay:
                await trio.sleep(chunk_delay)
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending)}
        if disconnect is None:
            await trio.sleep_forever()
        else:
            await disconnect.wait()
        return {"type": "http.disconnect"}

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return Response(messages)


async def respond(send: Send, status: int = 200, body: bytes = b"hello") -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI callable without lifespan support."""
    assert scope["type"] == "http"
    await respond(send)


def sleeper(seconds: float) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await trio.sleep(seconds)
        await respond(send)

    return app


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await respond(send, body=body)


def counts(middleware: SessionMiddleware) -> dict[str, Any]:
    """The middleware's manager's counters, once its invariants are checked."""
    stats = check_invariants(middleware.manager)
    return {
        "created": stats.created,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "timed_out": stats.timed_out,
        "cancelled": stats.cancelled,
        "rejections": {k: v for k, v in stats.rejections.items() if v},
        "active": stats.active,
        "metadata_bytes": stats.metadata_bytes,
    }


def totals(**kwargs: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "created": 0,
        "succeeded": 0,
        "failed": 0,
        "timed_out": 0,
        "cancelled": 0,
        "rejections": {},
        "active": 0,
        "metadata_bytes": 0,
    }
    return {**base, **kwargs}


# --------------------------------------------------------------------- tests


async def test_each_request_is_a_session_with_request_metadata() -> None:
    """A request runs as a session whose metadata names its method, path and client."""
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        (session,) = middleware.manager.sessions.values()
        seen.append(dict(session.metadata))
        await respond(send)

    middleware = SessionMiddleware(app, max_sessions=4)
    assert middleware.statistics() is None
    async with serving(middleware):
        response = await request(middleware, "/items/7", method="POST")
        assert (response.status, response.body) == (200, b"hello")
        assert counts(middleware) == totals(created=1, succeeded=1)
    assert seen == [{"method": "POST", "path": "/items/7", "client": "127.0.0.1:5000"}]


async def test_capacity_refusal_is_503_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With every slot taken, a request gets 503 and a Retry-After header at once."""
    middleware = SessionMiddleware(sleeper(10), max_sessions=1, retry_after=7)
    async with serving(middleware), trio.open_nursery() as nursery:
        nursery.start_soon(request, middleware)
        await trio.testing.wait_all_tasks_blocked()
        response = await request(middleware)
        assert response.status == 503
        assert response.headers[b"retry-after"] == b"7"
        assert b"Maximum concurrent sessions reached" in response.body
    assert counts(middleware) == totals(
        created=1, succeeded=1, rejections={"capacity": 1}
    )


async def test_deadline_is_504(autojump_clock: trio.testing.MockClock) -> None:
    """A request that outlives request_timeout is answered 504 at the deadline."""
    middleware = SessionMiddleware(sleeper(10), request_timeout=2)
    async with serving(middleware):
        start = trio.current_time()
        response = await request(middleware)
        assert response.status == 504
        assert trio.current_time() - start == pytest.approx(2)
        assert counts(middleware) == totals(created=1, timed_out=1)


async def test_app_that_swallows_its_deadline_still_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app that catches its session's cancellation and returns is still
    answered 504, at the deadline, and counted as timed out."""

    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        # Swallowed: the session's deadline decides all the same.
        with contextlib.suppress(trio.Cancelled):
            await trio.sleep(10)

    middleware = SessionMiddleware(stubborn, request_timeout=2)
    async with serving(middleware):
        start = trio.current_time()
        response = await request(middleware)
        assert response.status == 504
        assert trio.current_time() - start == 2
        assert counts(middleware) == totals(created=1, timed_out=1)


async def test_deadline_after_response_started_adds_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once the response started, a deadline ends it without a second status."""

    async def streaming(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await trio.sleep_forever()

    middleware = SessionMiddleware(streaming, request_timeout=1)
    async with serving(middleware):
        response = await request(middleware)
    assert [m["type"] for m in response.messages] == [
        "http.response.start",
        "http.response.body",
    ]
    assert response.status == 200
    assert counts(middleware) == totals(created=1, timed_out=1)


async def test_drain_refuses_new_requests_and_finishes_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While draining, new requests get 503 + close and in-flight ones complete."""
    middleware = SessionMiddleware(sleeper(1), shutdown_timeout=5)
    results: list[Response] = []

    async def in_flight() -> None:
        results.append(await request(middleware))

    async with trio.open_nursery() as nursery:
        lifespan = Lifespan(middleware, nursery)
        await lifespan.event("lifespan.startup")
        nursery.start_soon(in_flight)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(lifespan.event, "lifespan.shutdown")
        await trio.testing.wait_all_tasks_blocked()
        assert middleware.draining
        refused = await request(middleware)
        assert refused.status == 503
        assert refused.headers[b"connection"] == b"close"
    (finished,) = results
    assert finished.status == 200
    assert finished.headers[b"connection"] == b"close"
    report = middleware.shutdown_report
    assert report is not None
    assert (report.initial_active, report.completed, report.cancelled) == (1, 1, 0)
    assert trio.current_time() == pytest.approx(1)
    assert counts(middleware) == totals(
        created=1, succeeded=1, rejections={"shutting_down": 1}
    )


async def test_drain_timeout_cancels_and_answers_503(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Requests still running when shutdown_timeout ends are cancelled and get 503."""
    middleware = SessionMiddleware(sleeper(100), shutdown_timeout=3)
    results: list[Response] = []

    async def in_flight() -> None:
        results.append(await request(middleware))

    async with serving(middleware), trio.open_nursery() as nursery:
        nursery.start_soon(in_flight)
        await trio.testing.wait_all_tasks_blocked()
        report = await middleware.shutdown()
    assert trio.current_time() == pytest.approx(3)
    assert (report.cancelled, report.timeout_reached) == (1, True)
    assert results[0].status == 503
    assert results[0].headers[b"connection"] == b"close"
    assert middleware.shutdown_report == report
    assert counts(middleware) == totals(created=1, cancelled=1)


async def test_client_disconnect_cancels_session_and_frees_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that leaves mid-request has its session cancelled and counted."""
    middleware = SessionMiddleware(sleeper(1000), max_sessions=1)
    gone = trio.Event()
    async with serving(middleware):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial_request(middleware, disconnect=gone))
            await trio.testing.wait_all_tasks_blocked()
            assert middleware.manager.statistics().active == 1
            gone.set()
        assert counts(middleware) == totals(created=1, cancelled=1)
        # The slot is free again.
        middleware.app = hello
        assert (await request(middleware)).status == 200


def test_request_metadata_for_any_client_form() -> None:
    """No client, a list or a tuple: the same metadata; the formatted are bounded."""
    middleware = _Middleware(hello)
    for client, peer in [(None, ""), (["h", 1], "h:1"), (("h", 1), "h:1")]:
        for _ in range(2):  # made, then found again
            metadata = middleware._metadata(
                {"method": "GET", "path": "/", "client": client}
            )
            assert isinstance(metadata, MeasuredMetadata)
            assert dict(metadata.mapping) == {
                "method": "GET",
                "path": "/",
                "client": peer,
            }
            assert metadata.size == compact_size(dict(metadata.mapping))
    for port in range(3000):
        middleware._metadata({"method": "GET", "path": "/", "client": ("h", port)})
    assert 0 < len(middleware._peers) <= 1024


# Mostly the characters JSON writes as themselves, and the few it escapes.
REQUEST_TEXT = st.text(
    st.one_of(st.sampled_from('"\\\x00\x1f\x7f\u00e9\u2028\ud800'), st.characters()),
    max_size=12,
) | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@given(method=REQUEST_TEXT, path=REQUEST_TEXT, host=REQUEST_TEXT)
def test_request_metadata_counts_its_compact_json_bytes(
    method: str, path: str, host: str
) -> None:
    """The metadata measured without encoding counts exactly API.md's bytes."""
    middleware = _Middleware(hello)
    scope = {"method": method, "path": path, "client": (host, 80)}
    metadata = middleware._metadata(scope)
    assert metadata is not None
    if isinstance(metadata, MeasuredMetadata):
        mapping: Any = metadata.mapping
        assert metadata.size == compact_size(dict(mapping))
    else:
        mapping = metadata
    assert dict(mapping) == {"method": method, "path": path, "client": f"{host}:80"}


@only_in("inline")
@pytest.mark.parametrize(
    ("watch", "cancelled_at"), [(1.0, 1.0), (0.25, 0.4), (None, None)]
)
async def test_inline_disconnect_watch_frees_the_slot_of_an_app_not_reading(
    watch: float | None,
    cancelled_at: float | None,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app busy without reading: a watcher sees the client leave once it lingers.

    The watch gives a request a watcher ``disconnect_watch`` seconds after
    it started: a client gone by then cancels its session at once (1 s), one
    leaving later when it leaves (0.4 s). With ``None`` nobody watches: the
    app runs on until it finishes.
    """
    middleware = SessionMiddleware(sleeper(10), max_sessions=1, disconnect_watch=watch)
    gone = trio.Event()
    async with serving(middleware):
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            # The answer, if any, goes to nobody: only the session's end counts.
            nursery.start_soon(partial(request, middleware, disconnect=gone))
            await trio.sleep(0.4)
            gone.set()
        ended = trio.current_time() - start
        if cancelled_at is None:
            assert ended == 10
            assert counts(middleware) == totals(created=1, succeeded=1)
        else:
            assert ended == cancelled_at
            assert counts(middleware) == totals(created=1, cancelled=1)


@only_in("inline")
async def test_one_watch_serves_requests_after_idle_spells(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The watch parks while nothing runs and watches the next request on time.

    One task for the manager's life: idle spells neither end it (to be
    started again, a task and a scope held by the drain each time) nor wake it.
    """
    middleware = SessionMiddleware(routed_app({"/busy": 10}), max_sessions=1)
    async with serving(middleware):
        manager = middleware.manager
        for _ in range(3):
            assert (await request(middleware)).status == 200
            await trio.sleep(5)  # idle: nothing to watch
        gone = trio.Event()
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(request, middleware, "/busy", disconnect=gone))
            await trio.sleep(0.4)
            gone.set()
        # Watched 1 s after it started: the client's leaving is seen then.
        assert trio.current_time() - start == 1
        assert counts(middleware) == totals(created=4, succeeded=3, cancelled=1)
        assert len(manager._drain._linked_scopes) == 1


@only_in("inline")
async def test_inline_app_reading_sees_the_disconnect_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app waiting in receive is cancelled the moment the client leaves.

    No watcher is needed for it: the watch finds it reading and looks again
    later, and the shutdown that follows is not held up by the watch.
    """

    async def listener(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        while (await receive())["type"] != "http.disconnect":
            pass
        await trio.sleep(100)  # never reached: the session is cancelled

    middleware = SessionMiddleware(listener, disconnect_watch=1)
    gone = trio.Event()
    async with serving(middleware):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial_request(middleware, disconnect=gone))
            await trio.sleep(2.5)
            gone.set()
        assert trio.current_time() == 2.5
        assert counts(middleware) == totals(created=1, cancelled=1)
        shutdown_at = trio.current_time()
    report = middleware.shutdown_report
    assert report is not None
    # The drain ended the watch: nothing waited out its idle second.
    assert trio.current_time() == shutdown_at
    assert report.duration == 0


@only_in("inline")
async def test_a_watched_request_reads_through_its_watcher(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A request the watch took over still gets its whole body through the watcher."""

    async def slow_echo(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await trio.sleep(3)  # lingers, not reading: a watcher starts at 1 s
        await echo(scope, receive, send)

    middleware = SessionMiddleware(slow_echo, disconnect_watch=1)
    async with serving(middleware):
        response = await request(
            middleware, method="POST", chunks=[b"ab", b"cd"], chunk_delay=0.5
        )
        assert (response.status, response.body) == (200, b"abcd")
        assert trio.current_time() == 3
        assert counts(middleware) == totals(created=1, succeeded=1)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("inline", "yes", TypeError),
        ("inline", None, TypeError),
        ("disconnect_watch", -1, ValueError),
        ("disconnect_watch", float("nan"), ValueError),
        ("disconnect_watch", "1", TypeError),
    ],
)
def test_bad_mode_options_are_refused_by_name(
    option: str, value: Any, error: type[Exception]
) -> None:
    """A wrong inline or disconnect_watch is refused at construction, by name."""
    with pytest.raises(error, match=option):
        given: dict[str, Any] = {option: value}
        _Middleware(hello, **given)


def partial_request(app: Any, **kwargs: Any) -> Any:
    async def run() -> None:
        response = await request(app, **kwargs)
        assert response.messages == []  # nobody to answer

    return run


async def test_disconnect_after_response_lets_app_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The end of the stream after a complete response does not cancel the app."""
    done = trio.Event()
    gone = trio.Event()

    async def background(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await respond(send)
        gone.set()
        await trio.sleep(1)  # work after the response, like a background task
        done.set()

    middleware = SessionMiddleware(background)
    async with serving(middleware):
        response = await request(middleware, disconnect=gone)
    assert response.status == 200
    assert done.is_set()
    assert counts(middleware) == totals(created=1, succeeded=1)


async def test_declared_oversize_body_is_413_before_admission() -> None:
    """A Content-Length over max_body_bytes is refused 413 without a session."""
    middleware = SessionMiddleware(echo, max_body_bytes=1000)
    async with serving(middleware):
        response = await request(
            middleware,
            method="POST",
            headers=[(b"content-length", b"2000")],
            chunks=[b"x" * 2000],
        )
    assert response.status == 413
    assert counts(middleware) == totals()


async def test_streamed_oversize_body_is_413_and_cancelled() -> None:
    """A chunked body growing past max_body_bytes cancels the session with 413."""
    middleware = SessionMiddleware(echo, max_body_bytes=1000)
    async with serving(middleware):
        response = await request(middleware, method="POST", chunks=[b"x" * 600] * 3)
        assert response.status == 413
        assert counts(middleware) == totals(created=1, cancelled=1)
        small = await request(middleware, method="POST", chunks=[b"x" * 600, b"y"])
        assert (small.status, small.body) == (200, b"x" * 600 + b"y")


async def test_slow_client_body_is_cut_off_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client trickling its body slower than request_timeout gets 504."""
    middleware = SessionMiddleware(echo, request_timeout=3)
    async with serving(middleware):
        response = await request(
            middleware, method="POST", chunks=[b"x"] * 10, chunk_delay=1
        )
    assert response.status == 504
    assert counts(middleware) == totals(created=1, timed_out=1)


@only_in("spawned")
async def test_unlimited_body_waits_for_the_app_to_catch_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without max_body_bytes, at most 16 chunks wait between server and app."""
    delivered: list[int] = []
    backlog: list[int] = []

    async def late_echo(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await trio.sleep(1)  # busy: the server's chunks pile up meanwhile
        backlog.append(len(delivered))
        await echo(scope, receive, send)

    chunks = [b"%02d" % i for i in range(40)]

    async def counting_receive() -> Message:
        if len(delivered) == len(chunks):
            await trio.sleep_forever()  # the client stays until the response
        delivered.append(1)
        more = len(delivered) < len(chunks)
        return {
            "type": "http.request",
            "body": chunks[len(delivered) - 1],
            "more_body": more,
        }

    middleware = SessionMiddleware(late_echo, max_body_bytes=None)
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    async with serving(middleware):
        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        await middleware(scope, counting_receive, send)
    assert backlog == [16]
    assert Response(messages).body == b"".join(chunks)
    assert counts(middleware) == totals(created=1, succeeded=1)


async def channel_request(
    app: Any,
    path: str = "/",
    *,
    queued_first: bool = True,
    leave: trio.Event | None = None,
) -> Response:
    """One request as Hypercorn's Trio worker makes it: messages on a memory channel.

    The server queues the request before the app runs (``queued_first``) or
    just after; once the response is complete, or when ``leave`` is set, it
    queues ``http.disconnect``.
    """
    to_app, from_server = trio.open_memory_channel[Message](10)
    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    messages: list[Message] = []
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)
        await trio.lowlevel.checkpoint()
        if message["type"] == "http.response.body" and not message.get("more_body"):
            await to_app.send({"type": "http.disconnect"})

    async def server_side() -> None:
        if not queued_first:
            await to_app.send(request)
        if leave is not None:
            await leave.wait()
            await to_app.send({"type": "http.disconnect"})

    async with trio.open_nursery() as nursery:
        if queued_first:
            to_app.send_nowait(request)
        nursery.start_soon(server_side)
        await app(scope, from_server.receive, send)
        nursery.cancel_scope.cancel()
    return Response(messages)


@pytest.mark.parametrize("queued_first", [True, False])
async def test_memory_channel_server_requests_complete(queued_first: bool) -> None:
    """With a Trio server's memory channel, a request queued early or late is served."""
    middleware = SessionMiddleware(echo)
    async with serving(middleware):
        for _ in range(3):
            response = await channel_request(middleware, queued_first=queued_first)
            assert response.status == 200
        assert counts(middleware) == totals(created=3, succeeded=3)


async def test_memory_channel_server_disconnect_cancels_session() -> None:
    """A disconnect on a Trio server's channel mid-request cancels the session."""
    middleware = SessionMiddleware(sleeper(1000), max_sessions=1)
    gone = trio.Event()
    async with serving(middleware):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(channel_request, middleware, leave=gone))
            await trio.testing.wait_all_tasks_blocked()
            assert middleware.manager.statistics().active == 1
            gone.set()
        assert counts(middleware) == totals(created=1, cancelled=1)


async def test_long_path_is_shortened_to_the_metadata_limit() -> None:
    """Metadata over max_session_metadata_bytes is shortened, never refused."""
    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        (session,) = middleware.manager.sessions.values()
        seen.append(session.metadata_bytes)
        await respond(send)

    middleware = SessionMiddleware(app, max_session_metadata_bytes=80)
    async with serving(middleware):
        response = await request(middleware, "/" + "é" * 500)
    assert response.status == 200
    assert 0 < seen[0] <= 80
    assert counts(middleware) == totals(created=1, succeeded=1)


@given(
    path=st.text(max_size=300),
    client=st.text(max_size=30),
    limit=st.integers(min_value=0, max_value=400),
)
def test_fit_metadata_always_fits(path: str, client: str, limit: int) -> None:
    """Shortened metadata fits the limit, keeping a prefix of the path."""
    seen: list[tuple[dict[str, Any], int]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        (session,) = middleware.manager.sessions.values()
        seen.append((dict(session.metadata), session.metadata_bytes))
        await respond(send)

    middleware = SessionMiddleware(app, max_session_metadata_bytes=limit)

    async def one_request() -> Response:
        async with serving(middleware):
            return await request(middleware, path, client=(client, 5000))

    response = trio.run(one_request)
    assert response.status == 200
    [(fitted, held)] = seen
    if held == 0:  # not even {} fits: the request runs without metadata
        assert limit < 2
        return
    size = len(json.dumps(fitted, separators=(",", ":"), ensure_ascii=False).encode())
    assert size == held <= limit
    assert path.startswith(fitted.get("path", ""))


async def test_exhausted_metadata_budget_runs_request_without_metadata() -> None:
    """Over max_metadata_bytes the request still runs, with empty metadata."""
    middleware = SessionMiddleware(hello, max_metadata_bytes=10)
    async with serving(middleware):
        response = await request(middleware)
    assert response.status == 200
    assert counts(middleware) == totals(
        created=1, succeeded=1, rejections={"metadata": 1}
    )


async def test_app_exception_propagates_and_counts_as_error() -> None:
    """An exception from the app reaches the server (which answers 500)."""

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        raise LookupError("no such thing")

    middleware = SessionMiddleware(broken)
    async with serving(middleware):
        with pytest.raises(LookupError, match="no such thing"):
            await request(middleware)
        assert counts(middleware) == totals(created=1, failed=1)


async def test_lifespan_is_forwarded_to_the_app() -> None:
    """The app's own startup and shutdown handlers run inside the manager's life."""
    events: list[tuple[str, bool]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append((message["type"], middleware.draining))
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    middleware = SessionMiddleware(app)
    async with serving(middleware):
        pass
    assert events == [("lifespan.startup", False), ("lifespan.shutdown", True)]
    assert middleware.manager.closing


async def test_app_startup_failure_is_reported() -> None:
    """lifespan.startup.failed from the app reaches the server with its message."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    middleware = SessionMiddleware(app)
    async with trio.open_nursery() as nursery:
        lifespan = Lifespan(middleware, nursery)
        answer = await lifespan.event("lifespan.startup")
    assert answer == {"type": "lifespan.startup.failed", "message": "no database"}
    assert middleware.manager.closing


async def test_requests_without_lifespan_raise_a_clear_error() -> None:
    """Without lifespan or a manager, the middleware says what is missing."""
    middleware = SessionMiddleware(hello)
    with pytest.raises(RuntimeError, match="lifespan"):
        await request(middleware)


async def test_given_manager_is_used_and_left_open() -> None:
    """With manager=, requests use it and the lifespan neither opens nor closes it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await respond(send)

    async with ts.open_session_manager(max_sessions=3) as manager:
        middleware = SessionMiddleware(app, manager=manager)
        async with serving(middleware):
            assert (await request(middleware)).status == 200
        assert not manager.closing
        assert manager.statistics().succeeded == 1
        assert middleware.config is manager.config


async def test_excluded_paths_and_websockets_bypass_sessions() -> None:
    """Paths in exclude_paths and non-HTTP scopes reach the app without a session."""
    scopes: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope["type"])
        if scope["type"] == "http":
            await respond(send)

    middleware = SessionMiddleware(app, exclude_paths={"/metrics"})
    async with serving(middleware):
        assert (await request(middleware, "/metrics")).status == 200

        async def nothing() -> Message:
            raise AssertionError("not called")  # pragma: no cover

        async def no_send(message: Message) -> None:
            raise AssertionError("not called")  # pragma: no cover

        await middleware({"type": "websocket", "path": "/ws"}, nothing, no_send)
        assert counts(middleware) == totals()
    assert scopes == ["lifespan", "http", "websocket"]


def test_constructor_validates_its_arguments() -> None:
    """Bad arguments raise TypeError or ValueError naming the problem."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass  # pragma: no cover

    with pytest.raises(ValueError, match="retry_after"):
        SessionMiddleware(app, retry_after=-1)
    with pytest.raises(TypeError, match="retry_after"):
        SessionMiddleware(app, retry_after=1.5)  # type: ignore[arg-type]
    assert SessionMiddleware(app, retry_after=None)._retry_after is None
    with pytest.raises(ValueError, match="max_body_bytes"):
        SessionMiddleware(app, max_body_bytes=-1)
    with pytest.raises(ValueError, match="max_sessions"):
        SessionMiddleware(app, max_sessions=0)
    with pytest.raises(TypeError):
        SessionMiddleware(app, max_sesions=3)
    config = ts.SessionConfig(max_sessions=5)
    assert SessionMiddleware(app, config, request_timeout=1).config == ts.SessionConfig(
        max_sessions=5, request_timeout=1
    )


async def test_storm_of_1000_requests_against_capacity_100(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """1,000 simultaneous requests at capacity 100: 100 served, 900 refused, no leak."""
    middleware = SessionMiddleware(sleeper(1), max_sessions=100)
    statuses: list[int | None] = []

    async def one() -> None:
        statuses.append((await request(middleware, "/storm")).status)

    async with serving(middleware), trio.open_nursery() as nursery:
        for _ in range(1000):
            nursery.start_soon(one)
    assert (statuses.count(200), statuses.count(503)) == (100, 900)
    stats = middleware.manager.statistics()
    assert (stats.active, stats.metadata_bytes, stats.peak_active) == (0, 0, 100)
    assert stats.created == stats.completed == stats.succeeded == 100
    assert stats.rejected == stats.rejections["capacity"] == 900


# ----------------------------------------------------------------- Starlette


async def test_starlette_app_behind_the_middleware(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A Starlette app (with its own lifespan) works behind the middleware."""
    lifespan_events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        lifespan_events.append("startup")
        yield
        lifespan_events.append("shutdown")

    async def total(request: Request) -> JSONResponse:
        numbers = await request.json()
        return JSONResponse({"total": sum(numbers)})

    async def missing(request: Request) -> JSONResponse:
        raise HTTPException(status_code=404, detail="nope")

    async def slow(request: Request) -> JSONResponse:
        await trio.sleep(10)
        return JSONResponse({})  # pragma: no cover

    starlette = Starlette(
        routes=[
            Route("/total", total, methods=["POST"]),
            Route("/missing", missing),
            Route("/slow", slow),
        ],
        lifespan=lifespan,
    )
    middleware = SessionMiddleware(starlette, request_timeout=0.5)
    async with serving(middleware):
        assert lifespan_events == ["startup"]
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:
            response = await client.post("/total", json=[1, 2, 3])
            assert response.json() == {"total": 6}
            assert (await client.get("/missing")).status_code == 404
            assert (await client.get("/slow")).status_code == 504
        assert counts(middleware) == totals(created=3, succeeded=2, timed_out=1)
    assert lifespan_events == ["startup", "shutdown"]


# ------------------------------------- keys, priorities and Retry-After from data


def routed_app(seconds: dict[str, float]) -> Any:
    """An app that takes ``seconds[path]`` (0 if absent) to answer each path."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await trio.sleep(seconds.get(scope["path"], 0))
        await respond(send)

    return app


# (More of them, in both modes, in tests/test_asgi_sharing.py.)


async def test_priority_function_orders_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Queued requests are admitted by priority, then in arrival order."""
    middleware = SessionMiddleware(
        routed_app({"/hold": 1, "/low": 1, "/high": 1}),
        max_sessions=1,
        max_waiting=2,
        priority=lambda scope: 5 if scope["path"] == "/high" else 0,
    )
    answered: dict[str, float] = {}

    async def get(path: str, at: float) -> None:
        await trio.sleep(at)
        assert (await request(middleware, path)).status == 200
        answered[path] = trio.current_time()

    async with serving(middleware), trio.open_nursery() as nursery:
        nursery.start_soon(get, "/hold", 0)
        nursery.start_soon(get, "/low", 0.1)
        nursery.start_soon(get, "/high", 0.2)
    # The slot frees at 1 s: /high, which came last, goes first.
    assert answered == {"/hold": 1, "/high": 2, "/low": 3}


async def refused_after_one(
    middleware: SessionMiddleware, seconds: float, slots: int
) -> Response:
    """Run one request of ``seconds``, fill the ``slots``, and return a refusal."""
    async with serving(middleware), trio.open_nursery() as nursery:
        assert (await request(middleware, "/quick")).status == 200
        assert trio.current_time() == seconds
        for _ in range(slots):
            nursery.start_soon(request, middleware, "/hold")
        await trio.testing.wait_all_tasks_blocked()
        response = await request(middleware)
        assert response.status == 503
        nursery.cancel_scope.cancel()
    return response


@pytest.mark.parametrize(
    ("seconds", "slots", "retry_after"),
    [(2.5, 1, b"3"), (3.0, 2, b"2"), (0.4, 1, b"1")],
)
async def test_retry_after_is_the_estimate_in_whole_seconds(
    seconds: float,
    slots: int,
    retry_after: bytes,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Retry-After is the refusal's estimate rounded up to seconds, at least 1.

    A slot frees about every ``run time / max_sessions`` seconds: 2.5 s
    rounds up to 3, 3 s over two slots is 1.5 and rounds up to 2, and 0.4 s
    is sent as 1 (RFC 9110 counts whole seconds).
    """
    middleware = SessionMiddleware(
        routed_app({"/quick": seconds, "/hold": 100}), max_sessions=slots
    )
    response = await refused_after_one(middleware, seconds, slots)
    assert response.headers[b"retry-after"] == retry_after


async def test_retry_after_of_a_full_key_is_its_run_time_over_its_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A key at its limit of 2 with 5 s sessions: a slot of it frees in 2.5 s."""
    middleware = SessionMiddleware(
        routed_app({"/quick": 5, "/hold": 100}),
        max_sessions=10,
        max_sessions_per_key=2,
        key=lambda scope: "tenant",
    )
    response = await refused_after_one(middleware, 5, 2)
    assert response.headers[b"retry-after"] == b"3"
    assert counts(middleware)["rejections"] == {"key_capacity": 1}


def failing(error: Exception) -> Callable[[Scope], Any]:
    def function(scope: Scope) -> Any:
        raise error

    return function


@pytest.mark.parametrize(
    ("option", "function", "logged"),
    [
        ("key", failing(KeyError("x-tenant")), "the key function raised"),
        ("key", lambda scope: 42, "the key function returned int (42), not a str"),
        ("priority", failing(ValueError("no")), "the priority function raised"),
        ("priority", lambda scope: True, "returned bool (True), not an int"),
    ],
)
async def test_a_failing_key_or_priority_is_logged_by_name(
    option: str,
    function: Callable[[Scope], Any],
    logged: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The log says which function failed, how, and for which request.

    (tests/test_asgi_sharing.py checks the 500 and that nothing is taken.)
    """
    given: dict[str, Any] = {option: function}
    middleware = SessionMiddleware(hello, max_sessions=1, **given)
    async with serving(middleware):
        with caplog.at_level(logging.ERROR, logger="trio_sessions.asgi"):
            response = await request(middleware, "/items")
        assert (response.status, response.body) == (500, b"Internal Server Error\n")
        assert counts(middleware) == totals()
        assert middleware.manager.statistics().rejected == 0
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged in record.getMessage()
    assert "GET /items" in record.getMessage()
    assert bool(record.exc_info) == logged.endswith("raised")


async def test_starlette_tenants_by_header_each_get_their_share(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Over a real client, a tenant at its limit gets 503 while another is served."""

    async def slow(request: Request) -> JSONResponse:
        await trio.sleep(3)
        return JSONResponse({"tenant": request.headers["x-tenant"]})

    def tenant(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-tenant":
                return str(value.decode("latin-1"))
        return None

    starlette = Starlette(routes=[Route("/slow", slow)])
    middleware = SessionMiddleware(
        starlette, max_sessions=10, max_sessions_per_key=1, key=tenant
    )
    results: dict[str, tuple[int, float]] = {}

    async with serving(middleware):
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:

            async def get(name: str, who: str, at: float) -> None:
                await trio.sleep(at)
                response = await client.get("/slow", headers={"x-tenant": who})
                results[name] = (response.status_code, trio.current_time())
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "1"

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get, "a1", "a", 0)
                nursery.start_soon(get, "a2", "a", 1)
                nursery.start_soon(get, "b1", "b", 1)
    assert results == {"a1": (200, 3), "a2": (503, 1), "b1": (200, 4)}
    stats = middleware.manager.statistics()
    assert stats.rejections["key_capacity"] == 1
    assert (stats.keys["a"].rejected, stats.keys["b"].rejected) == (1, 0)


class _Unavailable(ts.AdmissionGuard):
    """A guard whose backend is down: it refuses every session."""

    reasons = ("backend_unavailable",)

    async def acquire(self, session: ts.Session, deadline: float) -> None:
        await trio.lowlevel.checkpoint()
        raise ts.RejectedError("backend down", reason="backend_unavailable")

    def release(self, session: ts.Session) -> None:
        raise AssertionError("nothing was ever granted")  # pragma: no cover


async def test_guard_refusal_is_503_with_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A guard's refusal (backend down) is a 503 with Retry-After, counted."""
    app = SessionMiddleware(hello, guard=_Unavailable(), retry_after=3)
    async with serving(app):
        response = await request(app)
        assert response.status == 503
        assert response.headers[b"retry-after"] == b"3"
        assert b"backend_unavailable" in response.body
        assert counts(app) == totals(rejections={"backend_unavailable": 1})


# ------------------------------------------------- hardening: every request answered


def cancel_every_session(manager: ts.SessionManager) -> Callable[[], None]:
    def cancel() -> None:
        sessions = list(manager.sessions.values())
        assert sessions
        assert all(s.started_at is None for s in sessions)
        for session in sessions:
            session.cancel("by an admin")

    return cancel


@only_in("spawned")  # an inline session starts in the step it is admitted
async def test_session_cancelled_before_its_first_step_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A session cancelled before the app ran still answers 503 and frees its slot."""
    async with ts.open_session_manager(max_sessions=1) as manager:
        middleware = SessionMiddleware(hello, manager=manager)
        with trio.fail_after(5):
            response = await request(
                middleware, on_receive=cancel_every_session(manager)
            )
        assert response.status == 503
        assert response.body == b"Request cancelled\n"
        stats = manager.statistics()
        assert (stats.cancelled, stats.active, stats.metadata_bytes) == (1, 0, 0)
        # The slot is free: the next request runs.
        assert (await request(middleware)).status == 200


async def test_owner_shutdown_during_a_queued_admission_is_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The owner's shutdown(timeout=0) answers queued and running requests."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=5) as manager:
        middleware = SessionMiddleware(sleeper(10), manager=manager)
        responses: list[Response] = []

        async def client() -> None:
            responses.append(await request(middleware))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(client)
                await trio.testing.wait_all_tasks_blocked()
                assert manager.statistics().waiting == 2
                await manager.shutdown(timeout=0)
    assert [r.status for r in responses] == [503, 503, 503]
    stats = manager.statistics()
    assert (stats.cancelled, stats.rejections["shutting_down"], stats.active) == (
        1,
        2,
        0,
    )


@pytest.mark.parametrize("extension", ["pathsend", "zerocopysend"])
async def test_response_by_send_extension_completes_the_session(
    autojump_clock: trio.testing.MockClock, extension: str
) -> None:
    """A body sent with pathsend or zerocopysend is a complete response."""
    gone = trio.Event()
    background_done: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan support
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if extension == "pathsend":
            await send({"type": "http.response.pathsend", "path": "/etc/hostname"})
        else:
            await send({"type": "http.response.zerocopysend", "file": 3})
        gone.set()  # the server ends the stream once the response is out
        await trio.sleep(1)  # a background task, as FileResponse runs them
        background_done.append(True)

    middleware = SessionMiddleware(app)
    async with serving(middleware):
        response = await request(middleware, disconnect=gone)
        assert response.status == 200
        assert counts(middleware) == totals(created=1, succeeded=1)
    assert background_done == [True]


async def test_startup_failure_and_raise_reach_the_server() -> None:
    """startup.failed then raise, as Starlette's router does: forwarded, re-raised."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        raise ConnectionError("no database")

    middleware = SessionMiddleware(app)
    with trio.fail_after(5), pytest.RaisesGroup(ConnectionError):
        async with trio.open_nursery() as nursery:
            lifespan = Lifespan(middleware, nursery)
            answer = await lifespan.event("lifespan.startup")
            assert answer == {
                "type": "lifespan.startup.failed",
                "message": "no database",
            }
    assert middleware.manager.closing


async def test_shutdown_failure_and_raise_reach_the_server() -> None:
    """shutdown.failed then raise: forwarded, then the app's exception re-raised."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})
        raise OSError("flush failed")

    middleware = SessionMiddleware(app)
    with trio.fail_after(5), pytest.RaisesGroup(OSError):
        async with trio.open_nursery() as nursery:
            lifespan = Lifespan(middleware, nursery)
            assert (await lifespan.event("lifespan.startup"))["type"] == (
                "lifespan.startup.complete"
            )
            answer = await lifespan.event("lifespan.shutdown")
            assert answer == {
                "type": "lifespan.shutdown.failed",
                "message": "flush failed",
            }


async def test_app_raising_at_startup_is_logged_and_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An app that raises on the lifespan scope has no lifespan support: logged."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            raise KeyError("lifespan not supported")
        await respond(send)

    middleware = SessionMiddleware(app)
    with caplog.at_level(logging.WARNING, logger="trio_sessions.asgi"):
        async with serving(middleware):
            assert (await request(middleware)).status == 200
    assert "continuing without Lifespan support" in caplog.text
    assert "KeyError: 'lifespan not supported'" in caplog.text


def test_under_asyncio_the_middleware_says_it_needs_trio() -> None:
    """Called on asyncio, the middleware explains, for lifespan and for HTTP."""

    async def nothing() -> Message:
        return {"type": "lifespan.startup"}

    async def ignore(message: Message) -> None:
        pass

    middleware = SessionMiddleware(hello)
    for scope in ({"type": "lifespan"}, {"type": "http", "path": "/", "headers": []}):
        with pytest.raises(RuntimeError, match=r"runs on Trio.*backend='trio'"):
            asyncio.run(middleware(scope, nothing, ignore))


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("/metrics", True),
        ("/metrics/", True),
        ("/metrics/x", True),
        ("/metricsx", False),
        ("/other", False),
        ("/", False),
    ],
)
async def test_exclude_paths_match_as_a_mount_does(path: str, excluded: bool) -> None:
    """An excluded path covers itself, its trailing slash and everything below."""
    middleware = SessionMiddleware(hello, exclude_paths=["/metrics"])
    async with serving(middleware):
        assert (await request(middleware, path)).status == 200
        assert middleware.manager.statistics().created == (0 if excluded else 1)


async def test_excluding_the_root_excludes_every_path() -> None:
    """``exclude_paths=["/"]`` serves every request outside any session."""
    middleware = SessionMiddleware(hello, exclude_paths=["/"])
    async with serving(middleware):
        for path in ("/", "/a", "/a/b"):
            assert (await request(middleware, path)).status == 200
        assert middleware.manager.statistics().created == 0


def test_exclude_paths_are_validated() -> None:
    """A bare string or a path without '/' is refused with a clear error."""
    with pytest.raises(TypeError, match="not one str"):
        SessionMiddleware(hello, exclude_paths="/metrics")
    with pytest.raises(ValueError, match="must start with '/'"):
        SessionMiddleware(hello, exclude_paths=["metrics"])


async def test_slow_raise_after_startup_failed_is_still_raised(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app that answers startup.failed and raises later still has it raised."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "boom"})
        await trio.sleep(1)
        raise RuntimeError("startup error")

    middleware = SessionMiddleware(app, shutdown_timeout=0)
    with trio.fail_after(5), pytest.RaisesGroup(RuntimeError):
        async with trio.open_nursery() as nursery:
            lifespan = Lifespan(middleware, nursery)
            assert (await lifespan.event("lifespan.startup"))["type"] == (
                "lifespan.startup.failed"
            )


async def test_server_cancelling_the_lifespan_while_the_app_fails_ends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An app that answers startup.failed and never raises is cut off by the server."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "stuck"})
        await trio.sleep_forever()

    middleware = SessionMiddleware(app)
    with trio.move_on_after(1) as server_gave_up:
        async with trio.open_nursery() as nursery:
            lifespan = Lifespan(middleware, nursery)
            assert (await lifespan.event("lifespan.startup"))["type"] == (
                "lifespan.startup.failed"
            )
    assert server_gave_up.cancelled_caught
    assert trio.current_time() == 1
    assert middleware.manager.closing
