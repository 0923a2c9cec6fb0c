"""The raw-Trio floor of SessionMiddleware: examples/http_server.py, task per request.

Serves the example's bare app exactly as ``examples/http_server.py`` does (same
Hypercorn config, same command line), but hands each HTTP request to a task in
a long-lived nursery holding a :class:`trio.CapacityLimiter` token under
:func:`trio.move_on_after`, while the server's request task waits on a
:class:`trio.Event`. That one extra task per request is what the middleware's
fixed design costs at least; ``benchmarks/wrk_e2e.py`` measures against it::

    python benchmarks/http_floor.py --port 8000 --max-sessions 1000
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "http_server.py"


def load_example() -> ModuleType:
    """Import ``examples/http_server.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location("http_server_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
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


def main() -> int:
    """Run the example's ``main`` with its app wrapped in :class:`TaskPerRequest`."""
    example = load_example()
    build_bare = example.build_app

    def build_app(config: Any, *, max_body_bytes: int, **_: Any) -> TaskPerRequest:
        bare = build_bare(config, use_middleware=False, max_body_bytes=max_body_bytes)
        return TaskPerRequest(bare, config.max_sessions, config.request_timeout)

    # main() looks build_app up in its module at call time: the server, its
    # config and its signal handling stay the example's own.
    example.build_app = build_app
    result: int = trio.run(example.main, example.parse_args())
    return result


if __name__ == "__main__":
    sys.exit(main())
