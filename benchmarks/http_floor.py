"""The raw-Trio floors of SessionMiddleware: examples/http_server.py, bare Trio around.

Serves the example's bare app exactly as ``examples/http_server.py`` does (same
Hypercorn config, same command line), wrapped in the least a session per
request can cost, in one of two forms:

- by default, the spawned floor (the middleware's ``inline=False``): each HTTP
  request is handed to a task in a long-lived nursery holding a
  :class:`trio.CapacityLimiter` token under :func:`trio.move_on_after`, while
  the server's request task waits on a :class:`trio.Event`;
- ``--inline``, the inline floor (the middleware's default): one limiter
  token and one :class:`trio.CancelScope` with the deadline per request, in
  the server's own request task, and nothing else;
- ``--session``, the inline session alone: each request in
  ``async with manager.session_nowait():`` of a manager the lifespan opens,
  with no metadata, no disconnect watch and no answers but a bare 503: what
  the middleware costs beyond it is the middleware's own.

``benchmarks/wrk_e2e.py`` and ``benchmarks/callgrind_http.py`` measure the
middleware against them::

    python benchmarks/http_floor.py --port 8000 --max-sessions 1000 [--inline|--session]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

import trio_sessions

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "http_server.py"


def load_example() -> ModuleType:
    """Import ``examples/http_server.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location("http_server_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def refuse(send: Any) -> None:
    """Answer 503, empty: what both floors do when no token is free."""
    await send({"type": "http.response.start", "status": 503, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class TaskPerRequest:
    """ASGI wrapper: run each HTTP request in a task of its own, as a session would.

    The lifespan opens the nursery the tasks run in; everything else but
    ``http`` goes straight to the app. No metadata, statistics, body watch,
    drain or error answers: only the Trio primitives a session is made of.
    """

    def __init__(self, app: Any, max_sessions: int, timeout: float | None) -> None:
        self.app = app
        self.limiter = trio.CapacityLimiter(max_sessions)
        self.timeout = math.inf if timeout is None else timeout
        self.nursery: trio.Nursery | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI connection."""
        if scope["type"] == "lifespan":
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self.app(scope, receive, send)
                nursery.cancel_scope.cancel()
            return
        if scope["type"] != "http" or self.nursery is None:
            await self.app(scope, receive, send)
            return
        done = trio.Event()
        try:
            self.limiter.acquire_on_behalf_of_nowait(done)
        except trio.WouldBlock:
            await refuse(send)
            return
        self.nursery.start_soon(self._run, scope, receive, send, done)
        await done.wait()

    async def _run(self, scope: Any, receive: Any, send: Any, done: trio.Event) -> None:
        try:
            with trio.move_on_after(self.timeout):
                await self.app(scope, receive, send)
        finally:
            self.limiter.release_on_behalf_of(done)
            done.set()


class InlinePerRequest:
    """ASGI wrapper: one token and one deadline per HTTP request, in its own task.

    The physical floor of an inline session: the server's request task takes
    a :class:`trio.CapacityLimiter` token and runs the app inside a
    :class:`trio.CancelScope` whose deadline is the timeout. Everything else
    but ``http`` goes straight to the app.
    """

    def __init__(self, app: Any, max_sessions: int, timeout: float | None) -> None:
        self.app = app
        self.limiter = trio.CapacityLimiter(max_sessions)
        self.timeout = math.inf if timeout is None else timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Each request its own borrower: a task may serve several in turn.
        token = object()
        try:
            self.limiter.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            await refuse(send)
            return
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.timeout):
                await self.app(scope, receive, send)
        finally:
            self.limiter.release_on_behalf_of(token)


class SessionPerRequest:
    """ASGI wrapper: each HTTP request an inline session of a manager, and no more.

    The lifespan opens the manager (the example's configuration); a refusal
    is a bare 503. Between the inline floor and the middleware: the session's
    own bookkeeping (its handle, the registry, the counters, the latency
    sketch, the outcome), without anything the middleware adds to it.
    """

    def __init__(self, app: Any, config: Any) -> None:
        self.app = app
        self.config = config
        self.manager: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Handle one ASGI connection."""
        if scope["type"] == "lifespan":
            async with trio_sessions.open_session_manager(self.config) as manager:
                self.manager = manager
                await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            async with self.manager.session_nowait():
                await self.app(scope, receive, send)
        except trio_sessions.CapacityError:
            await refuse(send)


def main(argv: list[str] | None = None) -> int:
    """Run the example's ``main`` with its app wrapped in a floor.

    ``--inline`` picks :class:`InlinePerRequest`, ``--session``
    :class:`SessionPerRequest`, otherwise :class:`TaskPerRequest`; every
    other option is the example's own.
    """
    floor = argparse.ArgumentParser(add_help=False)
    which = floor.add_mutually_exclusive_group()
    which.add_argument("--inline", action="store_true")
    which.add_argument("--session", action="store_true")
    ours, rest = floor.parse_known_args(argv)
    example = load_example()
    build_bare = example.build_app

    def build_app(config: Any, *, max_body_bytes: int, **_: Any) -> Any:
        bare = build_bare(config, use_middleware=False, max_body_bytes=max_body_bytes)
        if ours.session:
            return SessionPerRequest(bare, config)
        wrapper = InlinePerRequest if ours.inline else TaskPerRequest
        return wrapper(bare, config.max_sessions, config.request_timeout)

    # main() looks build_app up in its module at call time: the server, its
    # config and its signal handling stay the example's own.
    setattr(example, "build_app", build_app)  # noqa: B010 - a module's global
    result: int = trio.run(example.main, example.parse_args(rest))
    return result


if __name__ == "__main__":
    sys.exit(main())
