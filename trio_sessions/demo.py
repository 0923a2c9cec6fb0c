"""The demo HTTP app: Hypercorn on Trio, every request a session of one manager.

``trio-sessions serve`` and ``examples/http_server.py`` both run it. Endpoints:
``/`` (hello), ``/slow?seconds=N`` (try timeouts), ``POST /echo`` (JSON echo),
``/error`` (raises), ``/metrics`` (Prometheus) and ``/healthz`` (503 while
draining)::

    app = build_app(SessionConfig(max_sessions=100), max_body_bytes=1 << 20)
    status = trio.run(partial(serve, app, host="127.0.0.1", port=8000,
                              shutdown_timeout=5.0))

Needs ``pip install trio-sessions[servers]`` (hypercorn, prometheus-client).
"""

from __future__ import annotations

import json
import signal
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from . import AdmissionGuard, SessionConfig
from .asgi import ASGIApp, Message, Receive, Scope, Send, SessionMiddleware
from .prometheus import FleetSource

__all__ = ["MAX_SLEEP", "build_app", "serve"]

MAX_SLEEP = 600.0
"""The longest ``/slow`` accepts, in seconds."""


def build_app(
    config: SessionConfig,
    *,
    max_body_bytes: int | None,
    use_middleware: bool = True,
    guard: AdmissionGuard | None = None,
) -> ASGIApp:
    """Return the demo app, wrapped in :class:`~trio_sessions.asgi.SessionMiddleware`.

    ``/metrics`` exports the manager's statistics (and, with a ``guard`` that
    is also a :class:`~trio_sessions.prometheus.FleetSource`, such as a
    :class:`~trio_sessions.redis.RedisSessionLimit`, its fleet gauges);
    ``/metrics`` and ``/healthz`` run outside any session.
    ``use_middleware=False`` returns the bare app, the baseline of the
    benchmarks::

        app = build_app(SessionConfig(max_sessions=10), max_body_bytes=65536)
    """
    from prometheus_client import CollectorRegistry, make_asgi_app

    from .prometheus import SessionCollector

    middleware: SessionMiddleware | None = None
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry)
    metrics: ASGIApp = make_asgi_app(registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/":
            await _respond(send, 200, b"hello\n")
        elif path == "/slow":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            try:
                seconds = float(query.get("seconds", ["1"])[0])
            except ValueError:
                await _respond(send, 400, b"seconds must be a number\n")
                return
            if not 0 <= seconds <= MAX_SLEEP:
                await _respond(send, 400, f"0 <= seconds <= {MAX_SLEEP}\n".encode())
                return
            await trio.sleep(seconds)
            await _respond(send, 200, f"slept {seconds}\n".encode())
        elif path == "/echo" and scope["method"] == "POST":
            body = await _read_body(receive)
            try:
                value = json.loads(body)
            except ValueError as exc:
                await _respond_json(send, 400, {"error": f"malformed JSON: {exc}"})
                return
            await _respond_json(send, 200, {"echo": value})
        elif path == "/error":
            raise RuntimeError("this endpoint always fails")
        elif path == "/metrics":
            await metrics(scope, receive, send)
        elif path == "/healthz":
            if middleware is not None and middleware.draining:
                headers = ((b"connection", b"close"),)
                await _respond(send, 503, b"draining\n", headers=headers)
            else:
                await _respond(send, 200, b"ok\n")
        else:
            await _respond(send, 404, b"not found\n")

    if not use_middleware:
        return app
    middleware = SessionMiddleware(
        app,
        config,
        max_body_bytes=max_body_bytes,
        exclude_paths={"/metrics", "/healthz"},
        guard=guard,
    )
    collector.add("http", middleware)
    if isinstance(guard, FleetSource):
        collector.add_fleet("http", guard)
    return middleware


async def serve(app: ASGIApp, *, host: str, port: int, shutdown_timeout: float) -> int:
    """Serve ``app`` on Hypercorn until SIGINT/SIGTERM; drain, report, return 0.

    Prints ``listening on HOST:PORT`` once bound (port 0 picks a free one),
    then, for a :class:`~trio_sessions.asgi.SessionMiddleware`, drains its
    sessions for up to ``shutdown_timeout`` seconds before Hypercorn stops, and
    prints the shutdown report and the final statistics as JSON lines::

        status = await serve(app, host="127.0.0.1", port=0, shutdown_timeout=5.0)
    """
    import hypercorn.config
    import hypercorn.trio

    server_config = hypercorn.config.Config()
    server_config.bind = [f"{host}:{port}"]
    server_config.accesslog = None
    server_config.errorlog = "-"
    server_config.backlog = 1024  # bursts of connections queue instead of failing
    # Sessions are drained before Hypercorn is told to stop, so its own grace
    # period only has to cover writing the last responses.
    server_config.graceful_timeout = 2.0
    server_config.shutdown_timeout = shutdown_timeout + 10.0
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(
                    hypercorn.trio.serve,
                    _as_framework(app),
                    server_config,
                    shutdown_trigger=stop.wait,
                )
            )
            print(f"listening on {binds[0].removeprefix('http://')}", flush=True)
            async for signum in signals:
                print(f"received {signal.Signals(signum).name}, draining", flush=True)
                break
            if isinstance(app, SessionMiddleware):
                await app.shutdown()
            stop.set()
    if isinstance(app, SessionMiddleware):
        print(f"shutdown report: {_to_json(app.shutdown_report)}")
        print(f"final statistics: {_to_json(app.manager.statistics())}", flush=True)
    return 0


def _as_framework(app: ASGIApp) -> Any:
    # Hypercorn types the app with its own TypedDict scopes; ours are plain
    # mappings, which is what ASGI actually passes.
    return app


def _to_json(value: Any) -> str:
    return json.dumps(attrs.asdict(value), default=dict)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _respond_json(send: Send, status: int, value: object) -> None:
    await _respond(
        send, status, json.dumps(value).encode() + b"\n", b"application/json"
    )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise trio.BrokenResourceError("client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
