"""SessionMiddleware: every HTTP request of an ASGI app as one session of a manager."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any, final

import trio

from .._config import CONFIG_DEFAULT, SessionConfig, resolve_config
from .._errors import (
    CapacityError,
    MetadataError,
    RejectedError,
    SessionCancelled,
    SessionTimeout,
    ShuttingDownError,
)
from .._guard import AdmissionGuard
from .._inline import exit_inline
from .._manager import SessionManager, open_session_manager
from .._metadata import MeasuredMetadata, metadata_size
from .._session import Outcome
from .._statistics import SessionStatistics, ShutdownReport
from .._validate import check_count, check_seconds
from ._exchange import Exchange
from ._lifespan import serve_lifespan
from ._request_metadata import fit_metadata
from ._types import ASGIApp, Receive, Scope, Send

__all__ = ["SessionMiddleware"]

logger = logging.getLogger("trio_sessions.asgi")

_SUCCESS = Outcome.SUCCESS
# Outcomes of an inline session that the middleware answers for: the app's own
# SessionTimeout or SessionCancelled (outcome ERROR) is the app's to answer.
_ANSWERED = frozenset({Outcome.SUCCESS, Outcome.ERROR})
# The bytes of {"method":"","path":"","client":""}: the metadata without its text.
_METADATA_FRAME = metadata_size({"method": "", "path": "", "client": ""})
# Client addresses formatted, at most this many kept (see _peer).
_PEERS_KEPT = 1024
# The JSON text of a str, with its quotes, as json.dumps(ensure_ascii=False)
# writes it (in C).
_escaped: Callable[[str], str] = encode_basestring


@final
class SessionMiddleware:
    """Run every HTTP request of an ASGI app as one session of a manager.

    Wrap any ASGI 3 application; the server's lifespan events open the manager
    (with ``config`` or the same keyword overrides as :func:`open_session_manager`)
    and, at shutdown, drain it for ``shutdown_timeout`` before cancelling what is
    left::

        from trio_sessions.asgi import SessionMiddleware
        from trio_sessions.signals import open_shutdown_signals

        app = SessionMiddleware(app, max_sessions=100, request_timeout=10)
        async with open_shutdown_signals() as signals:
            await hypercorn.trio.serve(app, config, shutdown_trigger=signals.wait)

    Without a ``shutdown_trigger``, ``hypercorn.trio.serve(app, config)``
    handles no SIGTERM: the process dies at once (exit status 143) and the
    requests in flight get an empty reply; nothing drains. With it, the first
    SIGINT or SIGTERM makes Hypercorn stop accepting, let the requests in
    flight finish within its ``graceful_timeout`` (make it at least
    ``shutdown_timeout``), then send the lifespan shutdown that drains the
    manager; a second signal cancels the server at once. See
    :doc:`/howto/sigterm`.

    Each request becomes a session (inline, in the server's own request
    task, unless ``inline=False``) whose metadata holds its method, path and
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
      ``CANCELLED``), which frees its slot: at once if the app reads its
      ``receive`` (or with ``inline=False``), else once the request has run
      ``disconnect_watch`` seconds; a response completed by
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
      retry_after: Seconds to send in every ``Retry-After`` header, instead
        of the manager's estimate; ``None`` (the default) sends the estimate of
        each capacity refusal (:attr:`CapacityError.retry_after
        <trio_sessions.CapacityError.retry_after>`, rounded up to whole
        seconds, at least 1) and 1 for a guard's refusal that has none.
      max_body_bytes: Largest request body accepted, or ``None`` for no limit.
      exclude_paths: Paths served without a session, each with everything
        below it (see above).
      guard: An :class:`AdmissionGuard` for the manager the lifespan opens,
        such as the fleet-wide :class:`~trio_sessions.redis.RedisSessionLimit`;
        its refusals (``global_capacity``, ``backend_unavailable``) are answered
        with ``503`` and ``Retry-After``.
      inline: Run each request's session inline, in the server's request
        task (the default); ``False`` runs it in a task of its own, while the
        request's task reads the server's messages for it.
      disconnect_watch: Seconds after which an inline request still running
        gets a watcher task that cancels its session if the client leaves
        (an app reading its ``receive`` sees that at once anyway); ``None``
        for no watch. See :doc:`/howto/asgi`.
      key: A function of the request's ASGI scope returning the key whose
        limit the request counts against (``max_sessions_per_key``,
        ``key_limits``), such as the client address or a tenant header, or
        ``None`` for no key; refusals because the key is full are ``503`` with
        ``Retry-After``, counted under ``"key_capacity"``.
      priority: A function of the scope returning the request's priority, an
        ``int`` (higher is admitted first; ``reserved_priority`` and above may
        use the ``reserved_share``). Should ``key`` or ``priority`` raise, or
        return the wrong type, the request is answered ``500`` (and logged)
        before admission: no slot is taken and nothing is counted.
      **overrides: :class:`SessionConfig` fields, as for :func:`open_session_manager`.

    Raises:
      TypeError: if both ``manager`` and a configuration are given, or for an
        unknown configuration field.
      TypeError: for a ``key`` or ``priority`` that is not callable.
      ValueError: for an invalid ``retry_after``, ``max_body_bytes``,
        ``disconnect_watch`` or ``exclude_paths`` entry.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: SessionConfig | None = None,
        *,
        manager: SessionManager | None = None,
        retry_after: int | None = None,
        max_body_bytes: int | None = 1_048_576,
        exclude_paths: Iterable[str] = (),
        guard: AdmissionGuard | None = None,
        inline: bool = True,
        disconnect_watch: float | None = 1.0,
        key: Callable[[Scope], str | None] | None = None,
        priority: Callable[[Scope], int] | None = None,
        **overrides: Any,
    ) -> None:
        if manager is not None and (config is not None or overrides):
            raise TypeError("SessionMiddleware takes a manager or a config, not both")
        if manager is not None and guard is not None:
            raise TypeError(
                "SessionMiddleware takes a guard only with the manager it opens: "
                "pass guard= to open_session_manager instead"
            )
        config = (
            manager.config if manager is not None else resolve_config(config, overrides)
        )
        check_count(retry_after, "retry_after", optional=True)
        for name, function in (("key", key), ("priority", priority)):
            if function is not None and not callable(function):
                raise TypeError(
                    f"{name} must be a function of the request's scope, or None, "
                    f"not {type(function).__name__} ({function!r})"
                )
        check_count(max_body_bytes, "max_body_bytes", optional=True)
        self.app = app
        self.config: SessionConfig = config
        self._owns_manager = manager is None
        self._guard = guard
        self._manager: SessionManager | None = manager
        self._retry_after = (
            None if retry_after is None else str(retry_after).encode("ascii")
        )
        self._key = key
        self._priority = priority
        # Whether a request needs either function: one test on the hot path.
        self._routed = key is not None or priority is not None
        self._max_body_bytes = max_body_bytes
        self._exclude_bases = _exclusions(exclude_paths)
        self._metadata_limit = config.max_session_metadata_bytes
        self._metadata_fits = (
            sys.maxsize if self._metadata_limit is None else self._metadata_limit
        )
        # Client address -> what _peer made of it.
        self._peers: dict[Any, tuple[str, int]] = {}
        if not isinstance(inline, bool):
            raise TypeError(f"inline must be a bool, not {type(inline).__name__}")
        self._inline = inline
        self._disconnect_watch = check_seconds(
            disconnect_watch, "disconnect_watch", optional=True
        )
        # Inline requests running, in order of start, each with when the
        # watch looks at it; and whether a task watches them.
        self._live: dict[Exchange, float] = {}
        # The watch is one task per manager, parked while nothing is live:
        # whether it must be woken (or started) for the next request, and
        # whether it runs.
        self._watch_idle = True
        self._watcher = False
        self._watch_lot = trio.lowlevel.ParkingLot()
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
        # The whole way of an ordinary request is in this one frame: every
        # coroutine between the server and the app costs at its creation and
        # again each time the request's task resumes.
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        # One test for most requests: only a path that starts like an
        # excluded one is looked at again.
        bases = self._exclude_bases
        if bases and scope["path"].startswith(bases) and _under(scope["path"], bases):
            await self.app(scope, receive, send)
            return
        manager = self._manager
        if manager is None:
            manager = self.manager  # raises, saying why
        limit = self._max_body_bytes
        if limit is not None:
            for name, value in scope.get("headers", ()):
                if name == b"content-length":
                    if _length(value) > limit:
                        await self._reply(send, 413, b"Request body too large\n")
                        return
                    break
        key: str | None = None
        priority = 0
        if self._routed:
            route = self._route(scope)
            if route is None:
                await self._reply(send, 500, b"Internal Server Error\n")
                return
            key, priority = route
        exchange = Exchange(self, manager._drain, receive, send)
        metadata = self._metadata(scope)
        if not self._inline:
            await self._serve_spawned(manager, scope, exchange, metadata, key, priority)
            return
        # The request as an inline session: the app runs in this, the
        # server's task. Entered and left without an ``async with`` (its
        # object and two coroutines would cost about 6K instructions a
        # request), by the same admission and the same exit as SessionBlock's.
        while True:
            try:
                # Admission that cannot wait needs no checkpoint of its own:
                # the app's first step, or the server's after it, is one
                # anyway. The metadata is measured already.
                if manager._can_wait and manager._may_wait(key, priority):
                    session = await manager._enter(
                        metadata, CONFIG_DEFAULT, None, key, priority
                    )
                else:
                    session = manager._enter_nowait(
                        metadata, CONFIG_DEFAULT, None, key, priority
                    )
                break
            except RejectedError as exc:
                if await self._refused(exchange, exc, metadata):
                    return
                metadata = None  # retry without it: see _refused
        watch = self._disconnect_watch
        try:
            try:
                exchange.session = session
                if watch is not None:
                    # Registered in order of start, so in order of when the
                    # watch looks at them; gone again at the end.
                    self._live[exchange] = session._started_at + watch
                    if self._watch_idle:
                        self._wake_watch(manager)
                await self.app(scope, exchange.receive, exchange.send)
            except BaseException as exc:
                exit_inline(manager, session, exc)
                raise
            exit_inline(manager, session, None)
        except (SessionTimeout, SessionCancelled) as exc:
            if session.outcome in _ANSWERED:
                raise  # the app's own (the outcome says who ended it)
            await self._answer_ending(exchange, exc)
        finally:
            if watch is not None:
                # Unless the watch has let it go (a watcher pumps for it).
                self._live.pop(exchange, None)

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._owns_manager:
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        _require_trio()
        await serve_lifespan(
            self.app,
            scope,
            receive,
            send,
            open_manager=lambda: open_session_manager(self.config, guard=self._guard),
            opened=self._opened,
            drain=self.shutdown,
        )

    def _opened(self, manager: SessionManager) -> None:
        self._manager = manager
        self._draining = False
        self._shutdown_report = None

    def _wake_watch(self, manager: SessionManager) -> None:
        """A request to watch, and the watch is parked: wake it, or start it."""
        self._watch_idle = False
        if self._watcher:
            self._watch_lot.unpark_all()
            return
        self._watcher = True
        scope = trio.CancelScope()
        # Nothing is left to watch once the drain has ended.
        manager._drain.cancel_when_drained(scope)
        manager._spawn(self._watch_lingering, manager, scope)

    async def _watch_lingering(
        self, manager: SessionManager, scope: trio.CancelScope
    ) -> None:
        """Give each inline request still running after ``disconnect_watch`` a watcher.

        Requests are looked at in the order they started, each once it is
        ``disconnect_watch`` seconds old: one whose app is not reading the
        server then gets a task that does, so that a client leaving cancels
        its session as in the spawned mode. Quick requests never cost a
        task, and are forgotten as they end. This task, one per manager,
        sleeps until the next request is due, parks while none runs (the
        next one wakes it) and ends with the drain: it wakes at most once
        per ``disconnect_watch`` seconds while requests come, never while
        none do.
        """
        after = self._disconnect_watch
        assert after is not None
        live = self._live
        try:
            with scope:
                while True:
                    if not live:
                        self._watch_idle = True
                        await self._watch_lot.park()
                        continue
                    # The oldest: a dict keeps the order of insertion.
                    oldest, due = next(iter(live.items()))
                    now = trio.current_time()
                    if now < due:
                        await trio.sleep_until(due)
                        continue
                    del live[oldest]
                    if oldest.reading:
                        # Its app is reading the server, so it sees a
                        # disconnect itself; look again later (at the end,
                        # which keeps the order of when each is due).
                        live[oldest] = now + after
                    else:
                        oldest.watch(manager._spawn)
        finally:
            self._watcher = False
            self._watch_idle = True

    async def _serve_spawned(
        self,
        manager: SessionManager,
        scope: Scope,
        exchange: Exchange,
        metadata: MeasuredMetadata | Mapping[str, str] | None,
        key: str | None,
        priority: int,
    ) -> None:
        """The request as a session in a task of its own; this task pumps for it."""
        # Admission that cannot wait needs no checkpoint of its own: reading
        # the request below is one anyway.
        nowait = not manager._can_wait
        if type(metadata) is MeasuredMetadata:
            metadata = metadata.mapping  # the public API measures it again
        while True:
            try:
                if nowait or not manager._may_wait(key, priority):
                    session = manager.start_session_nowait(
                        self._run_app,
                        scope,
                        exchange,
                        metadata=metadata,
                        key=key,
                        priority=priority,
                    )
                else:
                    session = await manager.start_session(
                        self._run_app,
                        scope,
                        exchange,
                        metadata=metadata,
                        key=key,
                        priority=priority,
                    )
                break
            except RejectedError as exc:
                if await self._refused(exchange, exc, metadata):
                    return
                metadata = None  # retry without it: see _refused
        # This task reads the server's messages for the app while the session
        # runs (so a disconnect is seen even when the app is not reading), until
        # the session completes, however it ends: even one cancelled before the
        # app's first step, which never runs the app, stops the pump and gets
        # its answer.
        try:
            with exchange.start_pump(session):
                await exchange.pump()
            if session.outcome is not _SUCCESS:  # usually decided by now
                await session.wait()
        except (SessionTimeout, SessionCancelled) as exc:
            await self._answer_ending(exchange, exc)
        finally:
            if session.outcome is None:
                # Only still running if this request's own task is being
                # cancelled (the server is going away): take the session with it.
                session.cancel()

    async def _refused(
        self, exchange: Exchange, exc: RejectedError, metadata: object
    ) -> bool:
        """Answer a refused admission; False if it is worth a retry without metadata.

        Only the budget over all live sessions can refuse the request's
        metadata (it is shortened to the per-session limit); a request is
        worth more than its bookkeeping, so it runs without metadata.
        """
        send = exchange.server_send
        if isinstance(exc, CapacityError):
            # This manager's capacity, the request's key's, or the fleet's.
            body = (
                b"Maximum concurrent sessions for this key reached\n"
                if exc.reason == "key_capacity"
                else b"Maximum concurrent sessions reached\n"
            )
            await self._reply(
                send, 503, body, [(b"retry-after", self._retry_after_for(exc))]
            )
        elif isinstance(exc, ShuttingDownError):
            self._draining = True
            await self._reply(
                send, 503, b"Server is shutting down\n", [(b"connection", b"close")]
            )
        elif isinstance(exc, MetadataError):
            if metadata is None:  # pragma: no cover - empty metadata always fits
                raise exc
            return False
        else:
            # A guard's refusal (the fleet is full, or its backend is down):
            # like capacity, worth retrying shortly.
            await self._reply(
                send,
                503,
                f"Service unavailable ({exc.reason})\n".encode(),
                [(b"retry-after", self._retry_after_for(exc))],
            )
        return True

    def _retry_after_for(self, exc: RejectedError) -> bytes:
        """The ``Retry-After`` of a refusal: whole seconds (RFC 9110), at least 1.

        The fixed ``retry_after`` if one was given; else the refusal's own
        estimate, rounded up; 1 for a refusal without one.
        """
        if self._retry_after is not None:
            return self._retry_after
        seconds = exc.retry_after if isinstance(exc, CapacityError) else None
        if seconds is None or not math.isfinite(seconds) or seconds <= 1:
            return b"1"
        return str(math.ceil(seconds)).encode("ascii")

    def _route(self, scope: Scope) -> tuple[str | None, int] | None:
        """The request's key and priority, from the functions given for them.

        None if one of them raised or returned the wrong type, which is logged
        here; the caller answers 500 before anything is admitted.
        """
        key: str | None = None
        priority = 0
        asking = "key"
        try:
            if self._key is not None:
                key = self._key(scope)
                if key is not None and not isinstance(key, str):
                    raise _Wrong(_wrong(key, "a str or None"))
            asking = "priority"
            if self._priority is not None:
                priority = self._priority(scope)
                if isinstance(priority, bool) or not isinstance(priority, int):
                    raise _Wrong(_wrong(priority, "an int"))
        except _Wrong as wrong:
            _route_failed(asking, scope, str(wrong))
            return None
        except Exception:
            _route_failed(asking, scope, "raised")
            return None
        return key, priority

    async def _answer_ending(
        self, exchange: Exchange, exc: SessionTimeout | SessionCancelled
    ) -> None:
        """Answer a request whose session timed out or was cancelled, if anyone can.

        Once the response has started, the server shows it cut short.
        """
        if exchange.started or exchange.ended_by == "disconnect":
            return  # too late to answer, or nobody left to answer
        send = exchange.server_send
        if isinstance(exc, SessionTimeout):
            await self._reply(send, 504, b"Request timed out\n")
        elif exchange.ended_by == "too_large":
            await self._reply(send, 413, b"Request body too large\n")
        elif self.draining:
            await self._reply(
                send, 503, b"Server is shutting down\n", [(b"connection", b"close")]
            )
        else:
            await self._reply(send, 503, b"Request cancelled\n")

    async def _run_app(self, scope: Scope, exchange: Exchange) -> None:
        await self.app(scope, exchange.receive, exchange.send)

    def _metadata(self, scope: Scope) -> MeasuredMetadata | dict[str, str] | None:
        """The request's method, path and client, as its session's metadata."""
        # ASGI gives the method and path as str.
        method: str = scope["method"]
        path: str = scope["path"]
        client = scope.get("client")
        try:
            # A keep-alive connection's requests share one client address.
            peer, size = self._peers[client]
        except (KeyError, TypeError):
            peer, size = self._peer(client)
        metadata = {"method": method, "path": path, "client": peer}
        text = method + path
        if size >= 0 and text.isascii():
            # JSON escapes ASCII one character at a time: the escaped text's
            # length, less its quotes, is what the method and path add to
            # the frame and the client. Counted, not encoded, and this fresh
            # dict needs no copy.
            size += len(_escaped(text))
            if size <= self._metadata_fits:
                return MeasuredMetadata(MappingProxyType(metadata), size)
        limit = self._metadata_limit
        # Each character is at most 6 bytes of JSON; skip measuring when it fits anyway.
        if limit is None or 6 * (len(text) + len(peer)) + 40 <= limit:
            return metadata
        return fit_metadata(metadata, limit)

    def _peer(self, client: Any) -> tuple[str, int]:
        """``client`` as ``host:port``, and the metadata's bytes without its
        method and path (-1 if the address is not ASCII)."""
        peer = f"{client[0]}:{client[1]}" if client else ""
        # The frame counts every value's quotes, and so do the escaped texts
        # of the client and (in _metadata) of the method and path: 4 too many.
        size = _METADATA_FRAME - 4 + len(_escaped(peer)) if peer.isascii() else -1
        if isinstance(client, tuple) or client is None:
            peers = self._peers
            if len(peers) >= _PEERS_KEPT:
                peers.clear()  # a bound, not a policy: most are found again
            # A tuple holding something unhashable is not kept.
            with contextlib.suppress(TypeError):
                peers[client] = (peer, size)
        return peer, size

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


def _exclusions(paths: Iterable[str]) -> tuple[str, ...]:
    """The excluded paths without their trailing slashes (``"/"`` is ``""``).

    See :func:`_under` for how they match.
    """
    if isinstance(paths, str):
        raise TypeError("exclude_paths must be a collection of paths, not one str")
    bases: set[str] = set()
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"exclude_paths entries must start with '/', got {path!r}")
        bases.add(path.rstrip("/"))
    return tuple(sorted(bases))


def _under(path: str, bases: tuple[str, ...]) -> bool:
    """Whether ``path`` is excluded by one of ``bases``, as a ``Mount`` matches.

    ``"/metrics"`` (or ``"/metrics/"``) excludes ``/metrics``, ``/metrics/`` and
    everything below, so Starlette's redirect from ``/metrics`` to ``/metrics/``
    and the mounted app's own paths all stay outside the sessions; it does not
    exclude ``/metricsx``. ``"/"`` excludes every path.
    """
    return any(path == base or path.startswith(base + "/") for base in bases)


class _Wrong(Exception):
    """A key or priority function returned a value of the wrong type."""


def _wrong(value: object, expected: str) -> str:
    return f"returned {type(value).__name__} ({value!r}), not {expected}"


def _route_failed(name: str, scope: Scope, what: str) -> None:
    """Log that the ``name`` function failed for the request of ``scope``."""
    logger.error(
        "trio_sessions: key= or priority= failed: the %s function %s for %s %s; "
        "the request was answered 500 without a session",
        name,
        what,
        scope.get("method", "?"),
        scope.get("path", "?"),
        # The traceback, when it raised.
        exc_info=what == "raised",
    )


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


def _length(value: bytes) -> int:
    """A ``Content-Length`` header's value; 0 if it is not a number."""
    try:
        return int(value)
    except ValueError:
        return 0
