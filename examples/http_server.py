"""HTTP server: Hypercorn on Trio, every request a session of one manager.

Endpoints: ``/`` (hello), ``/slow?seconds=N`` (try timeouts), ``POST /echo``
(JSON echo), ``/error`` (raises), ``/metrics`` (Prometheus) and ``/healthz``
(503 while draining). SIGINT/SIGTERM drains, prints the shutdown report, exits 0::

    python examples/http_server.py --port 8000 --max-sessions 100 --request-timeout 5
    curl -i 'http://127.0.0.1:8000/slow?seconds=10'     # 504 after 5 s
    curl http://127.0.0.1:8000/metrics | grep trio_sessions_

With ``--redis-url redis://127.0.0.1:6379/0 --fleet-limit 40`` every process
started that way shares one fleet-wide limit of 40 sessions (a
:class:`~trio_sessions.redis.RedisSessionLimit`), and ``/metrics`` adds the
``trio_sessions_fleet_*`` gauges; Prometheus sums ``trio_sessions_active`` and
``trio_sessions_fleet_leases_held`` over the fleet, and takes the ``max`` of
``trio_sessions_fleet_leases``, which every process reports alike.

Needs ``pip install trio-sessions[servers]`` (hypercorn, prometheus-client), and
``trio-sessions[redis]`` for ``--redis-url``.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from prometheus_client import CollectorRegistry, make_asgi_app

import trio_sessions as ts
from trio_sessions.asgi import SessionMiddleware
from trio_sessions.prometheus import SessionCollector

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_SLEEP = 600.0


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Send a complete response with a body of known length."""
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


async def respond_json(send: Send, status: int, value: object) -> None:
    """Send ``value`` as a JSON response."""
    body = json.dumps(value).encode() + b"\n"
    await respond(send, status, body, b"application/json")


async def read_body(receive: Receive) -> bytes:
    """Read the whole request body (the middleware bounds its size)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise trio.BrokenResourceError("client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def build_app(
    config: ts.SessionConfig,
    *,
    use_middleware: bool = True,
    max_body_bytes: int,
    guard: Any = None,
) -> App:
    """Return the demo ASGI app, wrapped in the session middleware.

    ``guard``, if given, is a fleet-wide limit (a ``RedisSessionLimit``) that
    the middleware's manager consults, and whose gauges ``/metrics`` exports.
    """
    middleware: SessionMiddleware | None = None
    registry = CollectorRegistry()
    collector = SessionCollector(registry=registry)
    metrics: App = make_asgi_app(registry)

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
            await respond(send, 200, b"hello\n")
        elif path == "/slow":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            try:
                seconds = float(query.get("seconds", ["1"])[0])
            except ValueError:
                await respond(send, 400, b"seconds must be a number\n")
                return
            if not 0 <= seconds <= MAX_SLEEP:
                await respond(send, 400, f"0 <= seconds <= {MAX_SLEEP}\n".encode())
                return
            await trio.sleep(seconds)
            await respond(send, 200, f"slept {seconds}\n".encode())
        elif path == "/echo" and scope["method"] == "POST":
            body = await read_body(receive)
            try:
                value = json.loads(body)
            except ValueError as exc:
                await respond_json(send, 400, {"error": f"malformed JSON: {exc}"})
                return
            await respond_json(send, 200, {"echo": value})
        elif path == "/error":
            raise RuntimeError("this endpoint always fails")
        elif path == "/metrics":
            await metrics(scope, receive, send)
        elif path == "/healthz":
            if middleware is not None and middleware.draining:
                await respond(
                    send, 503, b"draining\n", headers=((b"connection", b"close"),)
                )
            else:
                await respond(send, 200, b"ok\n")
        else:
            await respond(send, 404, b"not found\n")

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
    if guard is not None:
        collector.add_fleet("http", guard)
    return middleware


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--max-sessions", type=int, default=100)
    parser.add_argument("--max-waiting", type=int, default=0)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--max-body-bytes", type=int, default=1_048_576)
    parser.add_argument(
        "--redis-url",
        help="share a fleet-wide limit through this Redis, e.g. redis://127.0.0.1/0",
    )
    parser.add_argument(
        "--fleet-limit",
        type=int,
        default=100,
        help="sessions at once across every process using --redis-url",
    )
    parser.add_argument(
        "--no-middleware",
        action="store_true",
        help="serve the bare app (the baseline of the wrk benchmark)",
    )
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then drain and print the shutdown report."""
    config = ts.SessionConfig(
        max_sessions=args.max_sessions,
        max_waiting=args.max_waiting,
        request_timeout=None
        if math.isinf(args.request_timeout)
        else args.request_timeout,
        shutdown_timeout=args.shutdown_timeout,
    )
    guard = None
    if args.redis_url:
        from trio_sessions.redis import RedisSessionLimit

        guard = RedisSessionLimit.from_url(args.redis_url, limit=args.fleet_limit)
    app = build_app(
        config,
        use_middleware=not args.no_middleware,
        max_body_bytes=args.max_body_bytes,
        guard=guard,
    )
    server_config = hypercorn.config.Config()
    server_config.bind = [f"{args.host}:{args.port}"]
    server_config.accesslog = None
    server_config.backlog = 1024  # bursts of connections queue instead of failing
    server_config.errorlog = "-"
    # Sessions are drained before Hypercorn is told to stop, so its own grace
    # period only has to cover writing the last responses.
    server_config.graceful_timeout = 2.0
    server_config.shutdown_timeout = args.shutdown_timeout + 10.0
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(
                    hypercorn.trio.serve, app, server_config, shutdown_trigger=stop.wait
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
        report = app.shutdown_report
        print(f"shutdown report: {json.dumps(attrs.asdict(report))}", flush=True)
        statistics = app.manager.statistics()
        print(
            f"final statistics: {json.dumps(attrs.asdict(statistics), default=dict)}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
