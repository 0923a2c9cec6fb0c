"""The ``trio-sessions serve`` subcommand: the HTTP example's app on Hypercorn.

``configure_parser`` adds the options to the CLI's subparser; ``run`` serves until
SIGINT/SIGTERM, drains, prints the shutdown report and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from . import SessionConfig
from .asgi import Message, Receive, Scope, Send, SessionMiddleware

__all__ = ["build_app", "configure_parser", "run"]

_MAX_SLEEP = 600.0
_INSTALL_HINT = "trio-sessions serve needs: pip install 'trio-sessions[servers]'"

App = Callable[[Scope, Receive, Send], Awaitable[None]]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser``.

    ::

        parser = argparse.ArgumentParser(prog="trio-sessions serve")
        configure_parser(parser)
        sys.exit(run(parser.parse_args()))
    """
    parser.description = (
        "Serve the demo HTTP app (/, /slow?seconds=N, POST /echo, /error, "
        "/metrics, /healthz) on Hypercorn, every request a session."
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument(
        "--port", type=int, default=8000, help="0 picks a free port; default: 8000"
    )
    parser.add_argument(
        "--max-sessions", type=int, default=100, help="capacity; default: 100"
    )
    parser.add_argument(
        "--max-waiting",
        type=int,
        default=0,
        help="requests allowed to queue for a slot; default: 0",
    )
    parser.add_argument(
        "--wait-timeout",
        type=_seconds_or_none,
        default=None,
        help="longest wait in the queue, seconds or 'none'; default: none",
    )
    parser.add_argument(
        "--request-timeout",
        type=_seconds_or_none,
        default=30.0,
        help="per-request deadline, seconds or 'none'; default: 30",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="drain budget on SIGINT/SIGTERM, seconds; default: 5",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_048_576,
        help="largest request body; default: 1048576",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; return 0 after a drain, 2 on bad options.

    ::

        status = run(parser.parse_args(["--port", "0", "--max-sessions", "50"]))
    """
    try:
        config = SessionConfig(
            max_sessions=args.max_sessions,
            max_waiting=args.max_waiting,
            wait_timeout=args.wait_timeout,
            request_timeout=args.request_timeout,
            shutdown_timeout=args.shutdown_timeout,
        )
    except (TypeError, ValueError) as exc:
        print(f"trio-sessions serve: {exc}", file=sys.stderr)
        return 2
    try:
        import hypercorn  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError:
        print(_INSTALL_HINT, file=sys.stderr)
        return 2
    status: int = trio.run(_serve, args, config)
    return status


def build_app(
    config: SessionConfig, *, max_body_bytes: int | None
) -> SessionMiddleware:
    """Return the demo app wrapped in :class:`SessionMiddleware`, with ``/metrics``.

    ::

        app = build_app(SessionConfig(max_sessions=10), max_body_bytes=65536)
        await hypercorn.trio.serve(app, hypercorn.Config())
    """
    from prometheus_client import CollectorRegistry, make_asgi_app

    from .prometheus import SessionCollector

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
            await _respond(send, 200, b"hello\n")
        elif path == "/slow":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            try:
                seconds = float(query.get("seconds", ["1"])[0])
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds <= _MAX_SLEEP:
                await _respond(send, 400, f"0 <= seconds <= {_MAX_SLEEP}\n".encode())
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
            if middleware.draining:
                headers = ((b"connection", b"close"),)
                await _respond(send, 503, b"draining\n", headers=headers)
            else:
                await _respond(send, 200, b"ok\n")
        else:
            await _respond(send, 404, b"not found\n")

    middleware = SessionMiddleware(
        app,
        config,
        max_body_bytes=max_body_bytes,
        exclude_paths={"/metrics", "/healthz"},
    )
    collector.add("http", middleware)
    return middleware


async def _serve(args: argparse.Namespace, config: SessionConfig) -> int:
    import hypercorn.config
    import hypercorn.trio

    app = build_app(config, max_body_bytes=args.max_body_bytes)
    server_config = hypercorn.config.Config()
    server_config.bind = [f"{args.host}:{args.port}"]
    server_config.accesslog = None
    server_config.backlog = 1024  # bursts of connections queue instead of failing
    # Sessions are drained before Hypercorn is told to stop, so its own grace
    # period only covers writing the last responses.
    server_config.graceful_timeout = 2.0
    server_config.shutdown_timeout = config.shutdown_timeout + 10.0
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
                name = signal.Signals(signum).name
                print(f"received {name}, draining", flush=True)
                break
            report = await app.shutdown()
            stop.set()
    print(f"shutdown report: {_to_json(report)}")
    print(f"final statistics: {_to_json(app.manager.statistics())}", flush=True)
    return 0


def _as_framework(app: SessionMiddleware) -> Any:
    # Hypercorn types the app with its own TypedDict scopes; ours are plain
    # mappings, which is what ASGI actually passes.
    return app


def _seconds_or_none(text: str) -> float | None:
    if text.strip().lower() in {"none", "inf", "off"}:
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or 'none', got {text!r}"
        ) from None


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
