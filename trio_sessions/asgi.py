"""ASGI 3 middleware that runs every HTTP request as a session of a manager.

Refusals, deadlines and the drain become HTTP answers (503, 504, 413); the ASGI
lifespan opens and shuts down the manager. Needs nothing beyond Trio itself.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, final

import attrs
import trio

from . import (
    AdmissionGuard,
    CapacityError,
    MetadataError,
    Outcome,
    RejectedError,
    Session,
    SessionCancelled,
    SessionConfig,
    SessionManager,
    SessionStatistics,
    SessionTimeout,
    ShutdownReport,
    ShuttingDownError,
    open_session_manager,
)
from ._metadata import metadata_size

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send", "SessionMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SUCCESS = Outcome.SUCCESS

logger = logging.getLogger("trio_sessions.asgi")

# Messages that end a response unless they say more_body: the plain body and the
# two ASGI extensions that hand the body to the server (a file path, a file).
_FINAL_BODY = frozenset(
    {"http.response.body", "http.response.pathsend", "http.response.zerocopysend"}
)

# How many request-body messages may sit between the server and the app when no
# body limit bounds them in bytes.
_UNLIMITED_BODY_BUFFER = 16


@final
class SessionMiddleware:
    """Run every HTTP request of an ASGI app as one session of a manager.

    Wrap any ASGI 3 application; the server's lifespan events open the manager
    (with ``config`` or the same keyword overrides as :func:`open_session_manager`)
    and, at shutdown, drain it for ``shutdown_timeout`` before cancelling what is
    left::

        from trio_sessions.asgi import SessionMiddleware

        app = SessionMiddleware(app, max_sessions=100, request_timeout=10)
        await hypercorn.trio.serve(app, hypercorn.Config())

    Each request becomes a session whose metadata holds its method, path and
    client address (the path is shortened to fit ``max_session_metadata_bytes``).
    The protocol's answers:

    - no free slot (:exc:`CapacityError`): ``503`` with ``Retry-After``;
    - draining or closed (:exc:`ShuttingDownError`): ``503`` with ``Connection: close``;
    - the session's deadline (:exc:`SessionTimeout`): ``504`` if the response
      has not started; otherwise the response is cut short, which the server
      shows per protocol: under HTTP/1.1 Hypercorn closes the connection, under
      HTTP/2 it leaves that stream unfinished (the connection and its other
      streams go on) until its keep-alive timeout;
    - a body over ``max_body_bytes``: ``413`` (before admission when
      ``Content-Length`` says so, otherwise by cancelling the session);
    - the session cancelled (:meth:`Session.cancel`, or a drain that ran out
      of time) before the response started: ``503``, whatever instant the
      cancellation lands, even before the app's first step;
    - the client disconnecting: the session is cancelled (outcome
      ``CANCELLED``), which frees its slot at once; a response completed by
      ``http.response.pathsend`` or ``http.response.zerocopysend`` is complete
      like any other, so work after it (background tasks) goes on;
    - the app raising: the exception propagates to the server, which answers 500.

    The default body limit (1 MiB) makes the middleware visible to clients
    that send more: they get ``413`` where the bare app would have answered
    (Starlette's form parser, say, answers ``400``). Pass
    ``max_body_bytes=None`` for a wrapper that is transparent to bodies.

    Requests under an ``exclude_paths`` entry (health checks, ``/metrics``)
    and WebSocket connections go straight to the app, outside any session.
    An entry matches as a Starlette ``Mount`` does: ``"/metrics"`` excludes
    ``/metrics``, ``/metrics/`` and every path below it.

    The lifespan runs the app's own lifespan inside the manager's: a
    ``lifespan.startup.failed`` (or ``shutdown.failed``) from the app is
    passed to the server and the exception the app raised with it is raised
    again, as from the bare app; an app that raises at startup without
    answering has no lifespan support, which is logged (as Hypercorn logs it)
    while the manager's lifespan carries on. The middleware runs on Trio only:
    under asyncio it raises :exc:`RuntimeError` saying so (test it with
    Starlette's ``TestClient(app, backend="trio")``).

    Args:
      app: The ASGI 3 application to wrap.
      config: Configuration of the manager the lifespan opens.
      manager: An already open manager to use instead; the lifespan then
        neither opens nor shuts it down (its owner does).
      retry_after: Seconds sent in the ``Retry-After`` header of capacity refusals.
      max_body_bytes: Largest request body accepted, or ``None`` for no limit.
      exclude_paths: Paths served without a session, each with everything
        below it (see above).
      guard: An :class:`AdmissionGuard` for the manager the lifespan opens,
        such as the fleet-wide :class:`~trio_sessions.redis.RedisSessionLimit`;
        its refusals (``global_capacity``, ``backend_unavailable``) are answered
        with ``503`` and ``Retry-After``.
      **overrides: :class:`SessionConfig` fields, as for :func:`open_session_manager`.

    Raises:
      TypeError: if both ``manager`` and a configuration are given, or for an
        unknown configuration field.
      ValueError: for an invalid ``retry_after``, ``max_body_bytes`` or
        ``exclude_paths`` entry.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: SessionConfig | None = None,
        *,
        manager: SessionManager | None = None,
        retry_after: int = 1,
        max_body_bytes: int | None = 1_048_576,
        exclude_paths: Iterable[str] = (),
        guard: AdmissionGuard | None = None,
        **overrides: Any,
    ) -> None:
        if manager is not None and (config is not None or overrides):
            raise TypeError("SessionMiddleware takes a manager or a config, not both")
        if manager is not None and guard is not None:
            raise TypeError(
                "SessionMiddleware takes a guard only with the manager it opens: "
                "pass guard= to open_session_manager instead"
            )
        if manager is not None:
            config = manager.config
        elif config is None:
            config = SessionConfig(**overrides)
        elif overrides:
            config = attrs.evolve(config, **overrides)
        if isinstance(retry_after, bool) or not isinstance(retry_after, int):
            raise TypeError(f"retry_after must be an int, not {retry_after!r}")
        if retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, got {retry_after!r}")
        if max_body_bytes is not None and (
            isinstance(max_body_bytes, bool)
            or not isinstance(max_body_bytes, int)
            or max_body_bytes < 0
        ):
            raise ValueError(
                f"max_body_bytes must be an int >= 0 or None, got {max_body_bytes!r}"
            )
        self.app = app
        self.config: SessionConfig = config
        self._owns_manager = manager is None
        self._guard = guard
        self._manager: SessionManager | None = manager
        self._retry_after = str(retry_after).encode("ascii")
        self._max_body_bytes = max_body_bytes
        self._exclude_exact, self._exclude_prefixes = _exclusions(exclude_paths)
        self._draining = False
        self._shutdown_report: ShutdownReport | None = None

    @property
    def manager(self) -> SessionManager:
        """The manager running the requests, once the lifespan has started it.

        ::

            stats = middleware.manager.statistics()

        Raises:
          RuntimeError: before lifespan startup, when no manager was given.
        """
        if self._manager is None:
            _require_trio()
            raise RuntimeError(
                "SessionMiddleware has no manager yet: the server must run the "
                "ASGI lifespan protocol, or pass manager= to SessionMiddleware"
            )
        return self._manager

    def statistics(self) -> SessionStatistics | None:
        """The manager's statistics, or ``None`` before the lifespan opened it.

        Makes the middleware a source for
        :class:`trio_sessions.prometheus.SessionCollector`::

            collector.add("http", middleware)
        """
        manager = self._manager
        return None if manager is None else manager.statistics()

    @property
    def draining(self) -> bool:
        """True once shutdown has started: health checks should answer 503.

        ::

            status = 503 if middleware.draining else 200
        """
        manager = self._manager
        return self._draining or (manager is not None and manager.closing)

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The :class:`ShutdownReport` of the drain, or ``None`` before it ended.

        ::

            print(middleware.shutdown_report)
        """
        return self._shutdown_report

    async def shutdown(self, timeout: float | None = None) -> ShutdownReport:
        """Start draining now: refuse new requests, let in-flight ones finish.

        Calls :meth:`SessionManager.shutdown` (idempotent, so the lifespan's
        own shutdown later returns the same report). Use it from a signal
        handler *before* stopping the server, so that requests arriving during
        the drain get a clean ``503`` with ``Connection: close``::

            report = await middleware.shutdown()
            shutdown_event.set()  # now stop hypercorn

        Args:
          timeout: Drain budget in seconds; defaults to ``shutdown_timeout``.
        """
        self._draining = True
        report = await self.manager.shutdown(timeout)
        if self._shutdown_report is None:
            self._shutdown_report = report
        return report

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (``http``, ``lifespan`` or anything else)."""
        kind = scope["type"]
        if kind == "http" and not (
            # Every exclusion has a prefix: no exclusions cost one test.
            self._exclude_prefixes and self._excluded(scope["path"])
        ):
            await self._http(scope, receive, send)
        elif kind == "lifespan" and self._owns_manager:
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _excluded(self, path: str) -> bool:
        return path in self._exclude_exact or path.startswith(self._exclude_prefixes)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open the manager around the app's own lifespan, passing its answers on.

        The app's failures reach the server as they would from the bare app:
        a ``*.failed`` answer is forwarded, and the exception the app raised
        with it is raised again here. An app that raises at startup without
        answering has no lifespan support (the ASGI rule): its error is
        logged and the manager's own lifespan carries on.
        """
        _require_trio()
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - server bug
            return
        inner = _InnerLifespan(self.app, scope)
        failure: Message | None = None
        async with open_session_manager(self.config, guard=self._guard) as manager:
            self._manager = manager
            self._draining = False
            self._shutdown_report = None
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
                    await self.shutdown()
                    reply = await inner.request("lifespan.shutdown")
                    if (
                        reply is not None
                        and reply["type"] == "lifespan.shutdown.failed"
                    ):
                        failure = reply
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
        await send(
            {"type": failure["type"], "message": str(failure.get("message", ""))}
        )
        if inner.error is not None:
            raise inner.error

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = self.manager
        limit = self._max_body_bytes
        if limit is not None and _declared_length(scope) > limit:
            await self._reply(send, 413, b"Request body too large\n")
            return
        exchange = _Exchange(self, receive, send, limit)
        # Admission that cannot wait needs no checkpoint of its own: reading
        # the request below is one anyway.
        nowait = not manager._can_wait
        metadata = self._metadata(scope)
        while True:
            try:
                if nowait or not manager._may_wait():
                    session = manager.start_session_nowait(
                        self._run_app, scope, exchange, metadata=metadata
                    )
                else:
                    session = await manager.start_session(
                        self._run_app, scope, exchange, metadata=metadata
                    )
                break
            except CapacityError:
                await self._reply(
                    send,
                    503,
                    b"Maximum concurrent sessions reached\n",
                    [(b"retry-after", self._retry_after)],
                )
                return
            except ShuttingDownError:
                self._draining = True
                await self._reply(
                    send,
                    503,
                    b"Server is shutting down\n",
                    [(b"connection", b"close")],
                )
                return
            except MetadataError:
                if metadata is None:  # pragma: no cover - empty metadata always fits
                    raise
                # Only the budget over all live sessions can refuse our metadata
                # (it is shortened to the per-session limit); a request is worth
                # more than its bookkeeping, so run it without metadata.
                metadata = None
                continue
            except RejectedError as exc:
                # A guard's refusal (the fleet is full, or its backend is down):
                # like capacity, worth retrying shortly.
                await self._reply(
                    send,
                    503,
                    f"Service unavailable ({exc.reason})\n".encode(),
                    [(b"retry-after", self._retry_after)],
                )
                return
        # This task reads the server's messages for the app while the session
        # runs (so a disconnect is seen even when the app is not reading), until
        # the session completes, however it ends: even one cancelled before the
        # app's first step, which never runs the app, stops the pump and gets
        # its answer. A second task per request would cost more than the
        # session itself.
        done = exchange.done
        session._cancel_when_done(done)
        try:
            with done:
                await exchange.pump(session)
            if session.outcome is not _SUCCESS:  # usually decided by now
                await session.wait()
        except SessionTimeout:
            if not exchange.started:
                await self._reply(send, 504, b"Request timed out\n")
        except SessionCancelled:
            if exchange.disconnected:
                pass  # nobody left to answer
            elif exchange.too_large:
                if not exchange.started:
                    await self._reply(send, 413, b"Request body too large\n")
            elif not exchange.started:
                if self.draining:
                    await self._reply(
                        send,
                        503,
                        b"Server is shutting down\n",
                        [(b"connection", b"close")],
                    )
                else:
                    await self._reply(send, 503, b"Request cancelled\n")
        finally:
            if session.outcome is None:
                # Only still running if this request's own task is being
                # cancelled (the server is going away): take the session with it.
                session.cancel()

    async def _run_app(self, scope: Scope, exchange: _Exchange) -> None:
        await self.app(scope, exchange.receive, exchange.send)

    def _metadata(self, scope: Scope) -> dict[str, str] | None:
        client = scope.get("client")
        method = str(scope.get("method", ""))
        path = str(scope.get("path", ""))
        peer = f"{client[0]}:{client[1]}" if client else ""
        metadata = {"method": method, "path": path, "client": peer}
        limit = self.config.max_session_metadata_bytes
        # Each character is at most 6 bytes of JSON; skip measuring when it fits anyway.
        if limit is None or 6 * (len(method) + len(path) + len(peer)) + 40 <= limit:
            return metadata
        return _fit_metadata(metadata, limit)

    async def _reply(
        self,
        send: Send,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        all_headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
        ]
        if headers:
            all_headers.extend(headers)
        if self._draining and not any(name == b"connection" for name, _ in all_headers):
            all_headers.append((b"connection", b"close"))
        await send(
            {"type": "http.response.start", "status": status, "headers": all_headers}
        )
        await send({"type": "http.response.body", "body": body})


def _exclusions(paths: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact paths and prefixes excluded by ``paths``, as a ``Mount`` matches them.

    ``"/metrics"`` (or ``"/metrics/"``) excludes ``/metrics``, ``/metrics/`` and
    everything below, so Starlette's redirect from ``/metrics`` to ``/metrics/``
    and the mounted app's own paths all stay outside the sessions.
    """
    if isinstance(paths, str):
        raise TypeError("exclude_paths must be a collection of paths, not one str")
    exact: set[str] = set()
    prefixes: set[str] = set()
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"exclude_paths entries must start with '/', got {path!r}")
        base = path.rstrip("/")
        if not base:
            prefixes.add("/")  # "/" excludes every path
            continue
        exact.update((base, base + "/"))
        prefixes.add(base + "/")
    return frozenset(exact), tuple(sorted(prefixes))


def _require_trio() -> None:
    """Refuse, in words, to run on an event loop that is not Trio's."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise RuntimeError(
            "SessionMiddleware runs on Trio, but it was called outside a Trio "
            "run (on asyncio?): serve it with a Trio server (hypercorn -k trio) "
            "and test it with Starlette's TestClient(app, backend='trio')"
        ) from None


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _fit_metadata(metadata: dict[str, str], limit: int) -> dict[str, str] | None:
    """Shorten the path (then drop fields) until the metadata fits ``limit`` bytes."""

    size = metadata_size
    if size(metadata) <= limit:
        return metadata
    path = metadata["path"]
    short = {**metadata, "path": ""}
    if size(short) <= limit:
        # Binary search on the number of characters of the path that fit.
        low, high = 0, len(path)
        while low < high:
            middle = (low + high + 1) // 2
            if size({**metadata, "path": path[:middle]}) <= limit:
                low = middle
            else:
                high = middle - 1
        return {**metadata, "path": path[:low]}
    for field in ("client", "method", "path"):
        del short[field]
        if size(short) <= limit:
            return short
    return None


@final
class _Exchange:
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


@final
class _InnerLifespan:
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
