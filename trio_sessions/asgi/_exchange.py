"""One request's messages between the server and the app's session.

:class:`Exchange` pumps the server's messages for the app in the request's own
task, so a client that leaves is seen while the app is busy, and notes how far
the app's response has got.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, final

import trio

from .._session import Session
from ._types import Message, Receive, Send

if TYPE_CHECKING:
    from ._middleware import SessionMiddleware

__all__ = ["Exchange"]

# Messages that end a response unless they say more_body: the plain body and the
# two ASGI extensions that hand the body to the server (a file path, a file).
_FINAL_BODY = frozenset(
    {"http.response.body", "http.response.pathsend", "http.response.zerocopysend"}
)

# How many request-body messages may sit between the server and the app when no
# body limit bounds them in bytes.
_UNLIMITED_BODY_BUFFER = 16


@final
class Exchange:
    """One request's messages between the server and the app's session.

    The request's own task pumps the server's messages into a queue that the
    app's ``receive`` reads, so a client that leaves while the app is busy (not
    reading) is seen at once instead of holding its slot until the app
    finishes. Buffered body bytes are bounded by ``limit``; beyond it the
    session is cancelled. The app's ``send`` passes through, noting whether a
    response began and whether it is complete.
    """

    __slots__ = (
        "_arrived",
        "_limit",
        "_middleware",
        "_queue",
        "_receive",
        "_send",
        "_taken",
        "disconnected",
        "done",
        "finished",
        "received",
        "started",
        "too_large",
    )

    def __init__(
        self,
        middleware: SessionMiddleware,
        receive: Receive,
        send: Send,
        limit: int | None,
    ) -> None:
        self._middleware = middleware
        self._receive = receive
        self._send = send
        self._limit = limit
        # Cancelled when the app returns: the pump stops reading for it.
        self.done = trio.CancelScope()
        # A deque and parking lots, not a memory channel: this is per request,
        # and the channel's machinery costs more than the whole hand-over. The
        # lots are made only for a reader that has to wait: most never does.
        self._queue: deque[Message] = deque()
        self._arrived: trio.lowlevel.ParkingLot | None = None
        self._taken: trio.lowlevel.ParkingLot | None = None
        self.received = 0
        self.disconnected = False
        self.too_large = False
        self.started = False
        self.finished = False

    async def receive(self) -> Message:
        """The app's ``receive``: the next message the pump read for it."""
        queue = self._queue
        if queue:
            await trio.lowlevel.checkpoint()
        while not queue:
            if self._arrived is None:
                self._arrived = trio.lowlevel.ParkingLot()
            await self._arrived.park()
        message = queue.popleft()
        if self._taken is not None:
            self._taken.unpark()
        return message

    async def send(self, message: Message) -> None:
        """The app's ``send``: to the server, noting the response's progress."""
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            if self._middleware.draining:
                # Tell keep-alive clients to go elsewhere while we drain.
                headers = list(message.get("headers", ()))
                if not any(bytes(name).lower() == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                    message = {**message, "headers": headers}
        elif kind in _FINAL_BODY and not message.get("more_body", False):
            # pathsend has no more_body: it is always the whole body.
            self.finished = True
        await self._send(message)

    async def pump(self, session: Session) -> None:
        """Read the server's messages until a disconnect or an oversize body."""
        limit = self._limit
        queue = self._queue
        receive = self._receive
        # A Trio server's first message (the request, or its first chunk)
        # is usually queued already in a memory channel: take it without
        # the channel's checkpoint, a whole trip through the scheduler.
        owner = getattr(receive, "__self__", None)
        if type(owner) is trio.MemoryReceiveChannel:
            try:
                message = owner.receive_nowait()
            except trio.WouldBlock:
                message = await receive()
        else:
            message = await receive()
        while True:
            kind = message.get("type")
            if kind == "http.request":
                self.received += len(message.get("body", b""))
                if limit is not None and self.received > limit:
                    self.too_large = True
                    session.cancel()
                    return
            elif kind == "http.disconnect":
                # Servers also report the end of the stream once the
                # response is complete; work the app does after that
                # (background tasks) is not abandoned by anyone, so it goes on.
                if not self.finished:
                    self.disconnected = True
                    session.cancel()
                queue.append(message)
                if self._arrived is not None:
                    self._arrived.unpark()
                return
            queue.append(message)
            if self._arrived is not None:
                self._arrived.unpark()
            # With a byte limit the buffer is bounded already; without one,
            # wait for the app to catch up.
            while limit is None and len(queue) >= _UNLIMITED_BODY_BUFFER:
                if self._taken is None:
                    self._taken = trio.lowlevel.ParkingLot()
                await self._taken.park()
            message = await receive()
