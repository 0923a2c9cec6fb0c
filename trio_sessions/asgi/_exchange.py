"""One request's messages between the server and the app's session.

:class:`Exchange` passes the server's messages to the app, and notes how far
the app's response has got. For a session in a task of its own, the request's
task pumps the messages (so a client that leaves is seen while the app is
busy); for an inline session the app reads the server itself, until a
watcher task is started for a request that lingers (see ``disconnect_watch``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, final

import trio

from .._session import Session
from .._shutdown import Drain
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

_checkpoint = trio.lowlevel.checkpoint


@final
class _Queue:
    """The pump's side of an exchange: the messages read ahead for the app.

    A deque and parking lots, not a memory channel: the channel's machinery
    costs more than the whole hand-over. The lots are made only for a reader
    that has to wait: most never does.
    """

    __slots__ = ("arrived", "messages", "taken")

    def __init__(self) -> None:
        self.messages: deque[Message] = deque()
        self.arrived: trio.lowlevel.ParkingLot | None = None
        self.taken: trio.lowlevel.ParkingLot | None = None


@final
class Exchange:
    """One request's messages between the server and the app's session.

    Once :meth:`pump` runs (from the start for a spawned session; from
    :meth:`watch` on for an inline one), it reads the server's messages into a
    queue that the app's ``receive`` reads, so a client that leaves while the
    app is busy (not reading) is seen instead of holding its slot until the
    app finishes. Before that, the app's ``receive`` reads the server itself,
    and sees what the pump would. Either way a body over the middleware's
    ``max_body_bytes``, or a disconnect before the response is complete,
    cancels the session. The app's ``send`` passes through, noting whether a
    response began and whether it is complete.
    """

    # Made for every request: as few fields as the hot path needs, the
    # pump's in a _Queue made only when a pump starts.
    __slots__ = (
        "_drain",
        "_middleware",
        "_queue",
        "ended_by",
        "finished",
        "reading",
        "received",
        "server_receive",
        "server_send",
        "session",
        "started",
    )

    def __init__(
        self, middleware: SessionMiddleware, drain: Drain, receive: Receive, send: Send
    ) -> None:
        self._middleware = middleware
        # The manager's drain: while it runs, responses say Connection: close.
        self._drain = drain
        self.server_receive = receive
        # The middleware's own answers (503, 504...) go past the app's send.
        self.server_send = send
        # The pump's queue, once the pump reads the server for the app.
        self._queue: _Queue | None = None
        self.received = 0
        # What ended the session from the client's side: "disconnect" (it
        # left before the response was complete) or "too_large" (its body).
        self.ended_by: str | None = None
        self.started = False
        self.finished = False
        self.session: Session | None = None
        # The app is inside a read of the server (no watcher may start then).
        self.reading = False

    @property
    def disconnected(self) -> bool:
        """The client left before the response was complete."""
        return self.ended_by == "disconnect"

    @property
    def too_large(self) -> bool:
        """The request's body went over the middleware's ``max_body_bytes``."""
        return self.ended_by == "too_large"

    async def receive(self) -> Message:
        """The app's ``receive``: the next message from the server."""
        queue = self._queue
        if queue is None:
            self.reading = True
            try:
                message = await self.server_receive()
            finally:
                self.reading = False
            if self._ends_session(message):
                # The session was cancelled just now: that lands here.
                await _checkpoint()
            return message
        messages = queue.messages
        if messages:
            await _checkpoint()
        while not messages:
            if queue.arrived is None:
                queue.arrived = trio.lowlevel.ParkingLot()
            await queue.arrived.park()
        message = messages.popleft()
        if queue.taken is not None:
            queue.taken.unpark()
        return message

    def send(self, message: Message) -> Awaitable[None]:
        """The app's ``send``: to the server, noting the response's progress.

        A plain function returning the server's own awaitable: no coroutine
        of its own, so the app's every send and every resumption of the
        request's task while the server writes pass through one frame less.
        """
        kind = message["type"]
        if kind == "http.response.body":
            if "more_body" not in message or not message["more_body"]:
                self.finished = True
        elif kind == "http.response.start":
            self.started = True
            if self._drain.closing or self._middleware._draining:
                # Tell keep-alive clients to go elsewhere while we drain.
                headers = list(message.get("headers", ()))
                if not any(bytes(name).lower() == b"connection" for name, _ in headers):
                    headers.append((b"connection", b"close"))
                    message = {**message, "headers": headers}
        elif kind in _FINAL_BODY and not message.get("more_body", False):
            # The extensions that hand the body to the server; pathsend has
            # no more_body: it is always the whole body.
            self.finished = True
        return self.server_send(message)

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
            limit = self._middleware._max_body_bytes
            if limit is None or self.received <= limit:
                return False
            self.ended_by = "too_large"
        elif kind != "http.disconnect" or self.finished:
            return False
        else:
            self.ended_by = "disconnect"
        assert self.session is not None
        self.session.cancel()
        return True

    def start_pump(self, session: Session) -> trio.CancelScope:
        """From now on the pump reads the server for the app, until ``session`` ends.

        Returns the scope to run :meth:`pump` in: it is cancelled in the step
        the session completes, however it ends, even if the app never ran.
        """
        self.session = session
        self._queue = _Queue()
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
        queue = self._queue
        assert queue is not None  # start_pump made it
        limit = self._middleware._max_body_bytes
        messages = queue.messages
        receive = self.server_receive
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
            if self._ends_session(message) and self.ended_by == "too_large":
                return  # not for the app: its session is over
            messages.append(message)
            if queue.arrived is not None:
                queue.arrived.unpark()
            if message.get("type") == "http.disconnect":
                return
            # With a byte limit the buffer is bounded already; without one,
            # wait for the app to catch up.
            while limit is None and len(messages) >= _UNLIMITED_BODY_BUFFER:
                if queue.taken is None:
                    queue.taken = trio.lowlevel.ParkingLot()
                await queue.taken.park()
            message = await receive()
