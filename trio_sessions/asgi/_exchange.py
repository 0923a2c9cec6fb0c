"""One request's messages between the server and the app's session.

:class:`Exchange` passes the server's messages to the app, and notes how far
the app's response has got. For a session in a task of its own, the request's
task pumps the messages (so a client that leaves is seen while the app is
busy); for an inline session the app reads the server itself, until a
watcher task is started for a request that lingers (see ``disconnect_watch``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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

# The queue of an exchange that has no pump: never appended to.
_NO_MESSAGES: deque[Message] = deque(maxlen=0)

# How many request-body messages may sit between the server and the app when no
# body limit bounds them in bytes.
_UNLIMITED_BODY_BUFFER = 16


@final
class Exchange:
    """One request's messages between the server and the app's session.

    Once :meth:`pump` runs (from the start for a spawned session; from
    :meth:`watch` on for an inline one), it reads the server's messages into a
    queue that the app's ``receive`` reads, so a client that leaves while the
    app is busy (not reading) is seen instead of holding its slot until the
    app finishes. Before that, the app's ``receive`` reads the server itself,
    and sees what the pump would. Either way a body over ``limit`` bytes, or
    a disconnect before the response is complete, cancels the session. The
    app's ``send`` passes through, noting whether a response began and
    whether it is complete.
    """

    __slots__ = (
        "_arrived",
        "_limit",
        "_middleware",
        "_pumping",
        "_queue",
        "_receive",
        "_send",
        "_taken",
        "disconnected",
        "finished",
        "over",
        "reading",
        "received",
        "send_to_server",
        "session",
        "started",
        "too_large",
        "watch_at",
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
        # The middleware's own answers (503, 504...) go past the app's send.
        self.send_to_server = send
        self._limit = limit
        # A deque and parking lots, not a memory channel: this is per request,
        # and the channel's machinery costs more than the whole hand-over. The
        # lots are made only for a reader that has to wait: most never does.
        self._queue: deque[Message] = _NO_MESSAGES
        self._arrived: trio.lowlevel.ParkingLot | None = None
        self._taken: trio.lowlevel.ParkingLot | None = None
        self.received = 0
        self.disconnected = False
        self.too_large = False
        self.started = False
        self.finished = False
        # Whether the pump reads the server for the app (else the app does).
        self._pumping = False
        self.session: Session | None = None
        # The app is inside a read of the server (no watcher may start then).
        self.reading = False
        # The request is answered and its session over (the watch skips it).
        self.over = False
        # When the disconnect watch looks at this request (inline only).
        self.watch_at = 0.0

    async def receive(self) -> Message:
        """The app's ``receive``: the next message from the server."""
        if not self._pumping:
            self.reading = True
            try:
                message = await self._receive()
            finally:
                self.reading = False
            if self._ends_session(message):
                # The session was cancelled just now: that lands here.
                await trio.lowlevel.checkpoint()
            return message
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

    def _ends_session(self, message: Message) -> bool:
        """Note ``message`` from the server; True if it cancelled the session.

        A body over the limit does; so does a disconnect before the response
        is complete. Servers also report the end of the stream once the
        response is complete; work the app does after that (background
        tasks) is not abandoned by anyone, so it goes on.
        """
        kind = message.get("type")
        if kind == "http.request":
            self.received += len(message.get("body", b""))
            if self._limit is None or self.received <= self._limit:
                return False
            self.too_large = True
        elif kind != "http.disconnect" or self.finished:
            return False
        else:
            self.disconnected = True
        assert self.session is not None
        self.session.cancel()
        return True

    def start_pump(self, session: Session) -> trio.CancelScope:
        """From now on the pump reads the server for the app, until ``session`` ends.

        Returns the scope to run :meth:`pump` in: it is cancelled in the step
        the session completes, however it ends, even if the app never ran.
        """
        self.session = session
        self._pumping = True
        self._queue = deque()
        done = trio.CancelScope()
        session._cancel_when_done(done)
        return done

    def watch(self, spawn: Callable[..., object]) -> None:
        """Start pumping for an inline session's app in a task of its own.

        The task ends with the session, however it ends. Only while the app
        is not reading the server itself (``reading`` is false).
        """
        assert self.session is not None
        assert not self.reading
        spawn(self._watch, self.start_pump(self.session))

    async def _watch(self, done: trio.CancelScope) -> None:
        with done:
            await self.pump()

    async def pump(self) -> None:
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
            if self._ends_session(message) and self.too_large:
                return  # not for the app: its session is over
            queue.append(message)
            if self._arrived is not None:
                self._arrived.unpark()
            if message.get("type") == "http.disconnect":
                return
            # With a byte limit the buffer is bounded already; without one,
            # wait for the app to catch up.
            while limit is None and len(queue) >= _UNLIMITED_BODY_BUFFER:
                if self._taken is None:
                    self._taken = trio.lowlevel.ParkingLot()
                await self._taken.park()
            message = await receive()
