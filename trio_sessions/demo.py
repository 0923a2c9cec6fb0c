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

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from . import AdmissionGuard, SessionConfig, ShutdownReport
from ._server_options import (
    EXIT_FORCED,
    EXIT_OK,
    ListenError,
    cannot_listen,
    forced_line,
    open_signals,
    signal_name,
)
from ._wire import MAX_SLEEP, dumps, loads, parse_sleep
from .asgi import ASGIApp, Message, Receive, Scope, Send, SessionMiddleware
from .prometheus import FleetSource

__all__ = ["MAX_SLEEP", "build_app", "serve"]


def build_app(
    config: SessionConfig,
    *,
    max_body_bytes: int | None,
    use_middleware: bool = True,
    guard: AdmissionGuard | None = None,
    inline: bool = True,
    key: Callable[[Scope], str | None] | None = None,
    priority: Callable[[Scope], int] | None = None,
) -> ASGIApp:
    """Return the demo app, wrapped in :class:`~trio_sessions.asgi.SessionMiddleware`.

    ``/metrics`` exports the manager's statistics (and, with a ``guard`` that
    is also a :class:`~trio_sessions.prometheus.FleetSource`, such as a
    :class:`~trio_sessions.redis.RedisSessionLimit`, its fleet gauges);
    ``/metrics`` and ``/healthz`` run outside any session.
    ``use_middleware=False`` returns the bare app, the baseline of the
    benchmarks; ``inline=False`` runs each request's session in a task of its
    own, and ``key`` and ``priority`` classify the requests (see
    :class:`~trio_sessions.asgi.SessionMiddleware`)::

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
                seconds = parse_sleep(query.get("seconds", ["1"])[0])
            except ValueError as exc:
                await _respond(send, 400, f"{exc}\n".encode())
                return
            await trio.sleep(seconds)
            await _respond(send, 200, f"slept {seconds}\n".encode())
        elif path == "/echo" and scope["method"] == "POST":
            body = await _read_body(receive)
            try:
                value = loads(body)
            except ValueError as exc:  # not JSON, or NaN, Infinity, 1e400
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
        inline=inline,
        key=key,
        priority=priority,
    )
    collector.add("http", middleware)
    if isinstance(guard, FleetSource):
        collector.add_fleet("http", guard)
    return middleware


async def serve(app: ASGIApp, *, host: str, port: int, shutdown_timeout: float) -> int:
    """Serve ``app`` on Hypercorn until SIGINT/SIGTERM; drain, report, return 0.

    Prints ``listening on HOST:PORT`` once bound (port 0 picks a free one).
    On the first SIGINT or SIGTERM, for a
    :class:`~trio_sessions.asgi.SessionMiddleware`, it drains the sessions for
    up to ``shutdown_timeout`` seconds (new requests get 503) before Hypercorn
    stops; a second signal cancels whatever is left at once. Either way it
    prints the shutdown report and the final statistics as JSON lines, and
    returns 0 after a drain, 130 when a second signal cut it short::

        status = await serve(app, host="127.0.0.1", port=0, shutdown_timeout=5.0)

    Raises:
      OSError: ``host:port`` cannot be bound (in use, not a local address);
        the message names the address.
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
    stopped = trio.Event()
    hurry = trio.CancelScope()
    failure: ListenError | None = None

    async def run_server(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await hypercorn.trio.serve(
                _as_framework(app),
                server_config,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        finally:
            stopped.set()

    async with open_signals(hurry) as signals, trio.open_nursery() as nursery:
        try:
            binds: list[str] = await nursery.start(run_server)
        except Exception as exc:  # Hypercorn binds inside its nurseries
            failure = cannot_listen(host, port, exc)
            if failure is None:
                raise
        else:
            print(f"listening on {binds[0].removeprefix('http://')}", flush=True)
            with hurry:
                await signals.wait()
                first = signal_name(signals.received[0])
                print(f"received {first}, draining", flush=True)
                if isinstance(app, SessionMiddleware):
                    await app.shutdown()
                stop.set()
                await stopped.wait()
            if hurry.cancelled_caught:
                # The drain was cancelled, and with it the sessions left: stop
                # Hypercorn at once too, without its grace period.
                print(forced_line(signals), flush=True)
                nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    if isinstance(app, SessionMiddleware):
        report = await _report(app)
        if report is not None:
            print(f"shutdown report: {_to_json(report)}")
            print(f"final statistics: {_to_json(app.manager.statistics())}", flush=True)
    return EXIT_FORCED if hurry.cancelled_caught else EXIT_OK


async def _report(app: SessionMiddleware) -> ShutdownReport | None:
    if app.shutdown_report is not None:
        return app.shutdown_report
    # A second signal cancelled the drain, then the lifespan that would have
    # recorded its report: the manager still has it.
    try:
        manager = app.manager
    except RuntimeError:  # cancelled before the lifespan had started
        return None
    return await manager.shutdown()


def _as_framework(app: ASGIApp) -> Any:
    # Hypercorn types the app with its own TypedDict scopes; ours are plain
    # mappings, which is what ASGI actually passes.
    return app


def _to_json(value: Any) -> str:
    return dumps(attrs.asdict(value), default=dict)


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
    await _respond(send, status, dumps(value).encode() + b"\n", b"application/json")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise trio.BrokenResourceError("client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
