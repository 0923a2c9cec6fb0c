"""The ASGI lifespan: the manager's life around the wrapped app's own lifespan.

As Hypercorn keeps its lifespan in ``trio/lifespan.py``: :func:`serve_lifespan`
opens the manager, runs the app's lifespan inside it and passes its answers on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import final

import trio

from .._manager import SessionManager
from ._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["InnerLifespan", "serve_lifespan"]

logger = logging.getLogger("trio_sessions.asgi")


async def serve_lifespan(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    open_manager: Callable[[], AbstractAsyncContextManager[SessionManager]],
    opened: Callable[[SessionManager], None],
    drain: Callable[[], Awaitable[object]],
) -> None:
    """Open the manager around the app's own lifespan, passing its answers on.

    ``opened`` is told the manager once it is open; ``drain`` runs when the
    server asks for shutdown, before the app's own shutdown handler.

    The app's failures reach the server as they would from the bare app: a
    ``*.failed`` answer is forwarded, and the exception the app raised with
    it is raised again here. An app that raises at startup without answering
    has no lifespan support (the ASGI rule): its error is logged and the
    manager's own lifespan carries on.
    """
    message = await receive()
    if message["type"] != "lifespan.startup":  # pragma: no cover - server bug
        return
    inner = InnerLifespan(app, scope)
    failure: Message | None = None
    async with open_manager() as manager:
        opened(manager)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inner.run)
            reply = await inner.request("lifespan.startup")
            if reply is None and inner.error is not None:
                logger.warning(
                    "ASGI Framework Lifespan error, continuing without "
                    "Lifespan support (the app raised at lifespan startup)",
                    exc_info=inner.error,
                )
                inner.error = None
            if reply is not None and reply["type"] == "lifespan.startup.failed":
                failure = reply
            else:
                await send({"type": "lifespan.startup.complete"})
                while (await receive())["type"] != "lifespan.shutdown":
                    pass  # pragma: no cover - no other lifespan message exists
                await drain()
                reply = await inner.request("lifespan.shutdown")
                if reply is not None and reply["type"] != "lifespan.shutdown.complete":
                    failure = {**reply, "type": "lifespan.shutdown.failed"}
                elif inner.error is not None:
                    failure = {
                        "type": "lifespan.shutdown.failed",
                        "message": repr(inner.error),
                    }
            if failure is not None:
                # The app answers "failed" and then raises, as Starlette's
                # router does: let it finish, to raise what it raised. No
                # deadline of ours: the server bounds the lifespan, as it
                # would the bare app's.
                await inner.finished.wait()
            nursery.cancel_scope.cancel()
    if failure is None:
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": failure["type"], "message": str(failure.get("message", ""))})
    if inner.error is not None:
        raise inner.error


@final
class InnerLifespan:
    """Runs the wrapped app's own lifespan handler, if it has one, as a task."""

    __slots__ = (
        "_app",
        "_from_app",
        "_replies",
        "_requests",
        "_scope",
        "_to_app",
        "error",
        "finished",
    )

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self._app = app
        self._scope = scope
        self._to_app, self._requests = trio.open_memory_channel[Message](1)
        self._from_app, self._replies = trio.open_memory_channel[Message](1)
        self.error: Exception | None = None
        self.finished = trio.Event()

    async def run(self) -> None:
        try:
            async with self._from_app, self._requests:
                try:
                    await self._app(
                        self._scope, self._requests.receive, self._from_app.send
                    )
                except Exception as exc:
                    # Raised at startup without an answer: no lifespan support
                    # (the ASGI spec's rule); otherwise, a failure to report.
                    self.error = exc
        finally:
            self.finished.set()

    async def request(self, kind: str) -> Message | None:
        """Send a lifespan event to the app; return its answer (None: no support)."""
        try:
            await self._to_app.send({"type": kind})
            return await self._replies.receive()
        except (trio.EndOfChannel, trio.BrokenResourceError):
            return None
