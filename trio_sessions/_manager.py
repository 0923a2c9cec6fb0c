"""The session manager: admission, the session task, statistics and shutdown.

Every session is a task in the manager's own nursery holding one token of its
:class:`trio.CapacityLimiter` inside a cancel scope that carries its deadline.
Shutdown drains inside a deadline, then cancels. Nothing here polls, locks or
uses a thread, so nothing here can hang.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
from _thread import get_ident
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
)
from contextlib import asynccontextmanager
from types import CoroutineType, MappingProxyType
from typing import Any, Final, final

import attrs
import trio

from ._config import SessionConfig
from ._errors import (
    CapacityError,
    MetadataError,
    RejectedError,
    ShuttingDownError,
    new_capacity_error,
)
from ._guard import AdmissionGuard
from ._latency import LatencyRecorder
from ._metadata import EMPTY_METADATA, encode_metadata
from ._session import Outcome, Session, session_number
from ._statistics import SessionStatistics, ShutdownReport
from ._validate import check_seconds

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["SessionManager", "open_session_manager"]

logger = logging.getLogger("trio_sessions")

_SUCCESS: Final = Outcome.SUCCESS
_ERROR: Final = Outcome.ERROR
_TIMEOUT: Final = Outcome.TIMEOUT
_CANCELLED: Final = Outcome.CANCELLED

# Session ids are unique in the process, so logs of several managers never clash.
_next_number = itertools.count(1).__next__
_current_time = trio.current_time
_reschedule = trio.lowlevel.reschedule
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_CancelScope = trio.CancelScope
_INF = math.inf
_TASK_NAME = "trio_sessions.session"


class _UseConfig:
    """Sentinel type: "use the manager's configured request_timeout"."""

    def __repr__(self) -> str:
        return "<config default>"


_CONFIG_DEFAULT: Final = _UseConfig()

_SHUTDOWN_CANCEL_REASON = "cancelled by the manager's shutdown"
_OUTSIDE_CANCEL_REASON = "cancelled because the code around the manager was cancelled"


def _foreign_thread_error() -> RuntimeError:
    # The manager's state belongs to one Trio run; a call from a foreign thread
    # must fail loudly rather than corrupt counters silently or hang.
    return RuntimeError(
        "a SessionManager must be used from the Trio run that opened it; "
        "from another thread, call it through trio.from_thread.run()"
    )


def _check_timeout(timeout: object) -> float | None:
    return check_seconds(timeout, "timeout", optional=True)


def _interruption(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt, SystemExit... in ``exc``; None if it is only Cancelled.

    A session's nursery groups what its tasks raised; a group of Cancelled
    (with or without Exceptions beside them) is a cancellation, not the end
    of the program.
    """
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _interruption(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, (trio.Cancelled, Exception)):
        return None
    return exc


def _abort_reason(exc: BaseException) -> str:
    """Why sessions are cancelled when the code around the manager raises ``exc``."""
    if isinstance(exc, trio.Cancelled) or (
        isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[1] is None
    ):
        return _OUTSIDE_CANCEL_REASON
    return f"cancelled because the code around the manager raised {type(exc).__name__}"


def _non_cancelled(exc: BaseException) -> BaseException | None:
    """What a group raised besides Cancelled, or None (kept as the cause)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1]
    return None


def _not_callable(fn: object) -> TypeError:
    if isinstance(fn, Coroutine):
        # Close it so the mistake is reported once, not again as "never awaited".
        fn.close()
        return TypeError(
            f"start_session expected an async function, but got the coroutine "
            f"object {fn!r}, which is not a coroutine function: pass the function "
            "and its arguments, start_session(fn, *args), not fn(*args)"
        )
    return TypeError(f"start_session expected an async function, not {fn!r}")


def _not_a_coroutine(fn: object, result: object) -> TypeError:
    return TypeError(
        f"start_session expected an async function, but {fn!r} returned "
        f"{type(result).__name__}, not a coroutine: define it with 'async def'"
    )


@final
class _SessionsView(Mapping[str, Session]):
    """Read-only live view ``id -> Session`` over the manager's registry."""

    __slots__ = ("_by_number",)

    def __init__(self, by_number: dict[int, Session]) -> None:
        self._by_number = by_number

    def __getitem__(self, key: str) -> Session:
        number = session_number(key)
        if number is not None:
            session = self._by_number.get(number)
            if session is not None:
                return session
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (session.id for session in list(self._by_number.values()))

    def __len__(self) -> int:
        return len(self._by_number)

    def __repr__(self) -> str:
        return f"<sessions {sorted(self, key=lambda i: int(i[1:]))}>"


@final
class SessionManager:
    """Runs each request as a bounded, timed, drained and counted session.

    Get one from :func:`open_session_manager`; it is not constructed directly::

        async with ts.open_session_manager(max_sessions=50) as manager:
            reply = await manager.run(handle, request, timeout=5)

    The manager belongs to the Trio run that opened it: call it only from that
    run's tasks (from a worker thread, use :func:`trio.from_thread.run`).
    """

    __slots__ = (
        "_admit_budget",
        "_cancel_started_at",
        "_cancelled",
        "_closed",
        "_closing",
        "_config",
        "_default_timeout",
        "_drained",
        "_durations",
        "_failed",
        "_guard",
        "_guard_scope",
        "_guard_stopped",
        "_in_guard",
        "_limiter",
        "_max_waiting",
        "_metadata_bytes",
        "_now",
        "_nowait_limit",
        "_nursery",
        "_peak_active",
        "_peak_metadata_bytes",
        "_rejections",
        "_report",
        "_run_session",
        "_sessions",
        "_sessions_view",
        "_shutdown_cancelled",
        "_shutdown_deadline",
        "_shutdown_initial",
        "_shutdown_started_at",
        "_spawn",
        "_succeeded",
        "_thread",
        "_timed_out",
        "_timeout_reached",
        "_wait_times",
        "_waiter_scopes",
        "_waiting",
    )

    def __init__(
        self,
        config: SessionConfig,
        nursery: trio.Nursery,
        guard: AdmissionGuard | None = None,
    ) -> None:
        self._config = config
        self._guard = guard
        self._guard_scope: trio.CancelScope | None = None
        self._nursery = nursery
        # Bound once, not per session: a bound method is an allocation.
        self._spawn = nursery.start_soon
        self._run_session = self._run
        self._limiter = trio.CapacityLimiter(config.max_sessions)
        # Sessions start_session_nowait may admit: max_sessions, or 0 once it
        # must refuse everyone (a guard to consult, or shutdown), so that its
        # gate is one comparison.
        self._nowait_limit = 0 if guard is not None else config.max_sessions
        self._max_waiting = config.max_waiting
        self._default_timeout = config.request_timeout
        self._admit_budget = config.max_metadata_bytes
        # Keyed by the session's number: its id string is only made on demand.
        self._sessions: dict[int, Session] = {}
        self._sessions_view = _SessionsView(self._sessions)
        # Reading the run's clock directly skips two layers of lookups per
        # reading, three times per session.
        self._now = trio.lowlevel.current_clock().current_time
        self._thread = get_ident()
        self._closing = False
        self._closed = False
        # Completed sessions by outcome.
        self._succeeded = self._failed = self._timed_out = self._cancelled = 0
        self._rejections = {"capacity": 0, "shutting_down": 0, "metadata": 0}
        if guard is not None:
            self._rejections.update(dict.fromkeys(guard.reasons, 0))
        self._peak_active = 0
        self._metadata_bytes = 0
        self._peak_metadata_bytes = 0
        self._waiting = 0
        self._waiter_scopes: set[trio.CancelScope] = set()
        self._durations = LatencyRecorder()
        self._wait_times = LatencyRecorder()
        self._drained = trio.Event()
        self._guard_stopped = trio.Event()
        # Callers inside guard.acquire: the guard outlives the last of them.
        self._in_guard = 0
        if guard is None:
            self._guard_stopped.set()
        self._report: ShutdownReport | None = None
        self._shutdown_started_at = 0.0
        self._shutdown_deadline = math.inf
        self._shutdown_initial = 0
        self._shutdown_cancelled = 0
        self._cancel_started_at: float | None = None
        self._timeout_reached = False

    # ------------------------------------------------------------------ queries

    @property
    def config(self) -> SessionConfig:
        """The :class:`SessionConfig` this manager runs with."""
        return self._config

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Read-only live mapping ``id -> Session`` of admitted, running sessions.

        Queued callers are not sessions yet; they are counted in
        ``statistics().waiting``. A session leaves the mapping in the step
        it completes.
        """
        return self._sessions_view

    @property
    def guard(self) -> AdmissionGuard | None:
        """The :class:`AdmissionGuard` given to :func:`open_session_manager`, if any."""
        return self._guard

    @property
    def closing(self) -> bool:
        """True once shutdown has started: nothing new is admitted."""
        return self._closing

    def statistics(self) -> SessionStatistics:
        """Return a consistent :class:`SessionStatistics` snapshot of this manager.

        Never blocks and is not a checkpoint. Cost is independent of the
        number of sessions ever run.
        """
        succeeded = self._succeeded
        # Every admitted session is active or has exactly one outcome, so
        # "created" needs no counter of its own on the hot path.
        completed = self._succeeded + self._failed + self._timed_out + self._cancelled
        rejections = dict(self._rejections)
        return SessionStatistics(
            max_sessions=self._config.max_sessions,
            active=len(self._sessions),
            waiting=self._waiting,
            peak_active=self._peak_active,
            created=completed + len(self._sessions),
            completed=completed,
            succeeded=succeeded,
            failed=self._failed,
            timed_out=self._timed_out,
            cancelled=self._cancelled,
            rejected=sum(rejections.values()),
            rejections=MappingProxyType(rejections),
            success_rate=succeeded / completed if completed else None,
            metadata_bytes=self._metadata_bytes,
            peak_metadata_bytes=self._peak_metadata_bytes,
            durations=self._durations.summary(),
            wait_times=self._wait_times.summary(),
        )

    # ---------------------------------------------------------------- admission

    def start_session_nowait(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | _UseConfig | None = _CONFIG_DEFAULT,
        name: str | None = None,
    ) -> Session:
        """Admit a session at once, or raise without waiting and without spawning.

        The synchronous twin of :meth:`start_session`, like
        :meth:`trio.CapacityLimiter.acquire_on_behalf_of_nowait`: it never
        blocks and never yields, whatever ``max_waiting`` says, so it is the
        fast path for code that starts many sessions in a loop::

            for request in batch:
                try:
                    sessions.append(manager.start_session_nowait(handle, request))
                except ts.CapacityError:
                    overflow.append(request)

        Raises:
          CapacityError: no slot is free.
          ShuttingDownError: the manager is draining or closed.
          MetadataError: ``metadata`` is not a JSON-encodable mapping or is
            over a limit.
          TypeError: ``fn`` is not an async function, or an argument has the
            wrong type (nothing is admitted or counted).
          ValueError: ``timeout`` is negative or NaN.
        """
        # The one gate every caller without a queue goes through. Refusals at
        # capacity are a hot path under overload: one test, then _refusal.
        if (
            len(self._sessions) >= self._nowait_limit
            or not callable(fn)
            or get_ident() != self._thread
        ):
            raise self._refusal(fn)
        if timeout is _CONFIG_DEFAULT:
            seconds = self._default_timeout
        elif timeout.__class__ is float and timeout >= 0:
            seconds = timeout  # the common explicit case, checked inline
        else:
            seconds = _check_timeout(timeout)
        if metadata is None and name is None:
            # Nothing to check or measure: no call to _new_session.
            session = Session(
                _next_number(),
                None,
                EMPTY_METADATA,
                0,
                seconds,
                self._now(),
                self._thread,
            )
        else:
            session = self._new_session(metadata, seconds, name, self._now())
        try:
            self._limiter.acquire_on_behalf_of_nowait(session)
        except trio.WouldBlock:
            # A freed token was handed to a queued caller that has not run yet.
            self._rejections["capacity"] += 1
            raise new_capacity_error() from None
        return self._admit(session, fn, args)

    def _refusal(self, fn: object) -> Exception:
        """The error for a caller that cannot be admitted at once, counted."""
        if get_ident() != self._thread:
            return _foreign_thread_error()
        # A wrong fn is the caller's bug whatever the manager's state: a
        # TypeError, never counted as a refusal.
        if not callable(fn):
            return _not_callable(fn)
        if self._closing:
            return self._refuse_shutting_down()
        if self._guard is not None:
            return RuntimeError(
                "start_session_nowait cannot consult the manager's admission guard, "
                "which may need I/O: use 'await manager.start_session(...)'"
            )
        self._rejections["capacity"] += 1
        return new_capacity_error()

    async def start_session(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | _UseConfig | None = _CONFIG_DEFAULT,
        name: str | None = None,
    ) -> Session:
        """Admit a session running ``await fn(*args)`` and return its handle.

        The session runs in a task of the manager's nursery, holding one
        capacity token, inside a cancel scope whose deadline is ``timeout``
        seconds (default ``config.request_timeout``; ``None`` for none) from
        the start of its run. This returns once the session is registered;
        its task may not have run a step yet::

            session = await manager.start_session(handle, conn, metadata={"peer": peer})

        With no free slot and ``max_waiting > 0`` it queues (FIFO) for up to
        ``wait_timeout`` seconds. This is a checkpoint. If it is cancelled
        while queued nothing is admitted; once admitted, the session is
        returned even if the caller is being cancelled.

        Raises:
          CapacityError: no slot was free and the queue was full, or the wait
            timed out.
          ShuttingDownError: the manager is draining or closed (also raised in
            queued callers when shutdown starts).
          MetadataError: ``metadata`` is not a JSON-encodable mapping or is
            over a limit (checked before queueing).
          TypeError: ``fn`` is not an async function, or an argument has the
            wrong type (nothing is admitted or counted).
          ValueError: ``timeout`` is negative or NaN.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing or (
            self._guard is None
            and (self._limiter.available_tokens > 0 or self._config.max_waiting == 0)
        ):
            session = self.start_session_nowait(
                fn, *args, metadata=metadata, timeout=timeout, name=name
            )
            await trio.lowlevel.cancel_shielded_checkpoint()
            return session
        return await self._start_waiting(fn, args, metadata, timeout, name)

    async def run(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | _UseConfig | None = _CONFIG_DEFAULT,
        name: str | None = None,
    ) -> Any:
        """Run ``await fn(*args)`` as a session and return its result.

        Same as ``await (await manager.start_session(...)).wait()``::

            reply = await manager.run(handle, request, metadata={"path": path})

        Raises whatever :meth:`start_session` and :meth:`Session.wait` raise.
        This is a checkpoint; cancelling it stops the waiting, not the session.
        """
        if self._guard is not None or (
            self._max_waiting and not self._limiter.available_tokens
        ):
            session = await self.start_session(
                fn, *args, metadata=metadata, timeout=timeout, name=name
            )
            return await session.wait()
        # Fast path: admission cannot block, and the wait is the checkpoint.
        await _checkpoint_if_cancelled()
        session = self.start_session_nowait(
            fn, *args, metadata=metadata, timeout=timeout, name=name
        )
        # What wait() does, without its checks: the session's task has not run
        # yet, so this caller is its first waiter, woken directly by _finish.
        session._waiter = _current_task()
        await _wait_task_rescheduled(session._abort_wait)
        if session._outcome is _SUCCESS:
            return session._result
        return session._unwrap()

    async def _start_waiting(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        metadata: Mapping[str, Any] | None,
        timeout: float | _UseConfig | None,
        name: str | None,
    ) -> Session:
        """Admission that may wait: for a local slot, then for the guard's lease.

        ``wait_timeout`` bounds the whole wait: the local queue and the guard
        share one deadline.
        """
        if not callable(fn):
            raise _not_callable(fn)
        config = self._config
        limiter = self._limiter
        may_queue = config.max_waiting > 0 and self._waiting < config.max_waiting
        if limiter.available_tokens == 0 and not may_queue:
            # Refused before anything is built, as start_session_nowait does.
            self._rejections["capacity"] += 1
            raise new_capacity_error()
        queued_at = _current_time()
        seconds = self._default_timeout if timeout is _CONFIG_DEFAULT else timeout
        session = self._new_session(metadata, _check_timeout(seconds), name, queued_at)
        wait_timeout = config.wait_timeout
        deadline = math.inf if wait_timeout is None else queued_at + wait_timeout
        queued = limiter.available_tokens == 0
        if queued:
            await self._wait_for_slot(session, deadline)
        else:
            limiter.acquire_on_behalf_of_nowait(session)
        guard = self._guard
        if guard is not None:
            try:
                self._check_budget(session)
                await self._acquire_lease(
                    guard, session, deadline if may_queue else -math.inf
                )
            except BaseException:
                limiter.release_on_behalf_of(session)
                raise
        now = _current_time()
        # Admission is now, whatever the wait: created_at says so.
        session._created_at = now
        try:
            self._admit(session, fn, args)
        except BaseException:
            if guard is not None:
                self._release_lease(guard, session)
            raise
        # Only callers that queued and became sessions count in wait_times;
        # the guard's round trip is a wait only for a caller allowed to queue.
        if queued or (guard is not None and may_queue and now > queued_at):
            self._wait_times.record(now - queued_at)
        return session

    async def _acquire_lease(
        self, guard: AdmissionGuard, session: Session, deadline: float
    ) -> None:
        """Ask ``guard`` for a lease, waiting for room until ``deadline``.

        A caller that may queue (``deadline > -inf``) counts as waiting for the
        round trip; one that may not is only asking. Shutdown cancels this
        scope like a queued caller's, so no guard can hold admission open once
        draining has begun, and the guard is stopped only once every caller
        has left it (its releases are flushed after theirs).
        """
        counted = deadline > -math.inf
        scope = trio.CancelScope()
        if counted:
            self._waiting += 1
        self._waiter_scopes.add(scope)
        self._in_guard += 1
        granted = False
        try:
            with scope:
                await guard.acquire(session, deadline)
                granted = True
        except RejectedError as exc:
            self._rejections[exc.reason] = self._rejections.get(exc.reason, 0) + 1
            raise
        finally:
            if counted:
                self._waiting -= 1
            self._waiter_scopes.discard(scope)
            self._in_guard -= 1
            if self._closing:
                if granted:
                    self._release_lease(guard, session)
                self._stop_guard_if_idle()
        if self._closing:
            raise self._refuse_shutting_down()

    def _release_lease(self, guard: AdmissionGuard, session: Session) -> None:
        try:
            guard.release(session)
        except Exception:
            # A faulty guard must not break the bookkeeping of the session.
            logger.exception("trio_sessions: %r.release(%r) raised", guard, session)

    def _refuse_shutting_down(self) -> ShuttingDownError:
        self._rejections["shutting_down"] += 1
        if self._closed:
            return ShuttingDownError(
                "the session manager is closed: its 'async with' block has exited"
            )
        return ShuttingDownError("the session manager is shutting down")

    def _new_session(
        self,
        metadata: Mapping[str, Any] | None,
        seconds: float | None,
        name: str | None,
        now: float,
    ) -> Session:
        """A session with checked ``seconds``: check ``name``, measure ``metadata``."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if metadata is None:
            copy, size = EMPTY_METADATA, 0
        else:
            try:
                copy, size = encode_metadata(
                    metadata, self._config.max_session_metadata_bytes
                )
            except MetadataError:
                self._rejections["metadata"] += 1
                raise
        return Session(_next_number(), name, copy, size, seconds, now, self._thread)

    async def _wait_for_slot(self, session: Session, deadline: float) -> None:
        """Queue for a token on behalf of ``session``; return holding it, or raise."""
        scope = trio.CancelScope(deadline=deadline)
        self._waiting += 1
        self._waiter_scopes.add(scope)
        acquired = False
        try:
            with scope:
                await self._limiter.acquire_on_behalf_of(session)
                acquired = True
        finally:
            self._waiting -= 1
            self._waiter_scopes.discard(scope)
        # Shutdown may begin after a released token was handed to us but before
        # we ran again; it still wins, and the token goes back.
        if self._closing:
            if acquired:
                self._limiter.release_on_behalf_of(session)
            raise self._refuse_shutting_down()
        if not acquired:
            self._rejections["capacity"] += 1
            raise CapacityError(
                "Maximum concurrent sessions reached "
                f"(waited {self._config.wait_timeout} seconds)"
            )

    def _admit(
        self, session: Session, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> Session:
        """Register ``session`` (which holds a token) and spawn its task."""
        size = session._metadata_bytes
        try:
            if size and self._admit_budget is not None:
                self._check_budget(session)
            coro = fn(*args)
            if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
                raise _not_a_coroutine(fn, coro)
        except BaseException:
            self._limiter.release_on_behalf_of(session)
            raise
        sessions = self._sessions
        sessions[session._number] = session
        active = len(sessions)
        if active > self._peak_active:
            self._peak_active = active
        if size:
            total = self._metadata_bytes + size
            self._metadata_bytes = total
            if total > self._peak_metadata_bytes:
                self._peak_metadata_bytes = total
        # A str name spares trio formatting one from the function at each spawn.
        self._spawn(self._run_session, session, coro, name=session._name or _TASK_NAME)
        return session

    def _check_budget(self, session: Session) -> None:
        budget = self._admit_budget
        size = session._metadata_bytes
        total = self._metadata_bytes + size
        if budget is not None and total > budget:
            self._rejections["metadata"] += 1
            raise MetadataError(
                f"metadata of {size} bytes would bring the live total to "
                f"{total}, over max_metadata_bytes={budget}"
            )

    # ------------------------------------------------------------ session task

    async def _run(self, session: Session, coro: Coroutine[Any, Any, Any]) -> None:
        started = self._now()
        session._started_at = started
        if session._cancel_reason is not None:
            # Cancelled before its first step: fn never runs.
            coro.close()
            self._finish(session, _CANCELLED, None)
            return
        timeout = session._timeout
        scope = _CancelScope(deadline=_INF if timeout is None else started + timeout)
        session._scope = scope
        try:
            with scope:
                result = await coro
        except Exception as exc:
            if scope.cancel_called:
                # fn turned its cancellation into an error; the cancellation decides.
                self._finish(session, self._cancelled_outcome(session), exc)
            else:
                self._finish(session, _ERROR, exc)
        except trio.Cancelled:
            # Cancelled from outside this session's scope: the code around the
            # manager, or a BaseException in a sibling session.
            session._cancel_reason = session._cancel_reason or _OUTSIDE_CANCEL_REASON
            self._finish(session, _CANCELLED, None)
            raise
        except BaseException as exc:
            interruption = _interruption(exc)
            if interruption is None:
                # Only Cancelled, grouped by a nursery inside fn: still an
                # outside cancellation (what fn raised besides is its cause).
                session._cancel_reason = (
                    session._cancel_reason or _OUTSIDE_CANCEL_REASON
                )
                self._finish(session, _CANCELLED, _non_cancelled(exc))
                raise
            # KeyboardInterrupt, SystemExit...: not an error of the session but
            # the end of the program. Only Exceptions are ERRORs: this session
            # was interrupted, and the whole manager shuts down at once (queued
            # callers are refused, the other sessions cancelled) while the
            # exception propagates out of the manager's block.
            why = f"interrupted by {type(interruption).__name__}"
            session._cancel_reason = why
            self._finish(session, _CANCELLED, exc)
            self._abort(f"cancelled because session {session.id} was {why}")
            raise
        else:
            if scope.cancel_called:
                # fn swallowed its cancellation; it was still cancelled.
                self._finish(session, self._cancelled_outcome(session), None)
            else:
                self._finish(session, _SUCCESS, result)

    def _cancelled_outcome(self, session: Session) -> Outcome:
        return _TIMEOUT if session._cancel_reason is None else _CANCELLED

    def _finish(self, session: Session, outcome: Outcome, result: Any) -> None:
        """Decide the outcome and release everything the session held, in one step."""
        now = self._now()
        session._outcome = outcome
        session._result = result
        session._completed_at = now
        # The scope stays on the session: _cancel looks at the outcome first.
        self._limiter.release_on_behalf_of(session)
        del self._sessions[session._number]
        if session._metadata_bytes:
            self._metadata_bytes -= session._metadata_bytes
        # Identity tests: an Enum's __hash__ is Python code, too slow for here.
        if outcome is _SUCCESS:
            self._succeeded += 1
        elif outcome is _ERROR:
            self._failed += 1
        elif outcome is _TIMEOUT:
            self._timed_out += 1
        else:
            self._cancelled += 1
        self._durations.record(now - session._started_at)
        if self._guard is not None:
            self._release_lease(self._guard, session)
        waiter = session._waiter
        if waiter is not None:
            # The first waiter, parked by wait() or run(), is woken directly.
            session._waiter = None
            _reschedule(waiter)
        if session._done is not None:
            session._done.set()
        if session._linked_scope is not None:
            session._linked_scope.cancel()
        if self._closing and not self._sessions and self._report is None:
            self._finalize_shutdown(now, stuck=())

    # ---------------------------------------------------------------- shutdown

    async def shutdown(self, timeout: float | None = None) -> ShutdownReport:
        """Stop admitting, let active sessions finish, cancel the rest; report.

        1. New and queued callers get :exc:`ShuttingDownError` from now on.
        2. Active sessions get ``timeout`` seconds (default
           ``config.shutdown_timeout``) to complete on their own, inside
           :func:`trio.move_on_after`.
        3. Whatever still runs is cancelled (outcome ``CANCELLED``) and
           shutdown waits for it to unwind, up to ``config.shutdown_grace``
           seconds; sessions still running then shield themselves from
           cancellation and are reported in :attr:`ShutdownReport.stuck`
           (and logged), instead of hanging this call silently.

        ::

            report = await manager.shutdown(timeout=10)
            print(f"{report.completed} finished, {report.cancelled} cancelled")

        Idempotent: later (or concurrent) calls wait for the same shutdown and
        return the same report. Leaving the ``async with`` block calls it. If
        this call is cancelled, the remaining sessions are cancelled at once.
        This is a checkpoint.
        """
        if get_ident() != self._thread:
            raise _foreign_thread_error()
        if self._report is not None and self._guard_stopped.is_set():
            await trio.lowlevel.checkpoint()
            return self._report
        if not self._closing:
            drain = check_seconds(
                self._config.shutdown_timeout if timeout is None else timeout,
                "shutdown timeout",
            )
            assert drain is not None
            self._begin_shutdown(drain)
        try:
            with trio.CancelScope(deadline=self._shutdown_deadline):
                await self._drained.wait()
            if self._report is None:
                self._timeout_reached = True
                self._cancel_remaining()
                assert self._cancel_started_at is not None
                with trio.CancelScope(
                    deadline=self._cancel_started_at + self._config.shutdown_grace
                ):
                    await self._drained.wait()
                if self._report is None:
                    # Sessions cancelled above were rescheduled into the same
                    # batch as this task: yield once more so that each has had
                    # its unwinding step before any is called stuck.
                    await trio.lowlevel.cancel_shielded_checkpoint()
            if self._report is None:
                stuck = tuple(session.id for session in self._sessions.values())
                logger.error(
                    "trio_sessions: %d session(s) still running %.3g s after shutdown "
                    "cancelled them (they shield themselves from cancellation): %s",
                    len(stuck),
                    self._config.shutdown_grace,
                    ", ".join(stuck),
                )
                self._finalize_shutdown(_current_time(), stuck=stuck)
            if self._guard_scope is not None:
                # The guard gives back the last leases as it stops: once this
                # returns, it holds nothing for this manager.
                await self._guard_stopped.wait()
        except BaseException as exc:
            # Our caller is being cancelled (or worse): nobody is left to wait
            # out the drain, so end it now rather than leave sessions unbounded.
            self._cancel_remaining(_abort_reason(exc))
            raise
        assert self._report is not None
        return self._report

    def _begin_shutdown(self, drain: float) -> None:
        now = _current_time()
        self._closing = True
        self._nowait_limit = 0
        self._shutdown_started_at = now
        self._shutdown_deadline = now + drain
        self._shutdown_initial = len(self._sessions)
        for scope in self._waiter_scopes:
            scope.cancel()
        if not self._sessions:
            self._finalize_shutdown(now, stuck=())

    def _cancel_remaining(self, reason: str = _SHUTDOWN_CANCEL_REASON) -> None:
        if self._cancel_started_at is not None:
            return
        self._cancel_started_at = _current_time()
        # A session whose own deadline or Session.cancel() got there first is
        # ending on its own account: it counts as completed, not cancelled.
        self._shutdown_cancelled = sum(
            session._cancel(reason) for session in list(self._sessions.values())
        )

    def _finalize_shutdown(self, now: float, stuck: tuple[str, ...]) -> None:
        initial = self._shutdown_initial
        cancelled = self._shutdown_cancelled
        self._report = ShutdownReport(
            initial_active=initial,
            completed=initial - cancelled,
            cancelled=cancelled,
            timeout_reached=self._timeout_reached and cancelled > 0,
            duration=now - self._shutdown_started_at,
            stuck=stuck,
        )
        self._drained.set()
        self._stop_guard_if_idle()

    def _stop_guard_if_idle(self) -> None:
        """Stop the guard once drained and no caller is inside its acquire.

        Every session has released its lease by then, and every refused
        caller has handed back whatever its cancelled acquire left behind, so
        the guard's last flush sees all of them.
        """
        scope = self._guard_scope
        if scope is not None and self._report is not None and not self._in_guard:
            scope.cancel()

    async def _run_guard(
        self, guard: AdmissionGuard, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """The guard's background work, stopped by _stop_guard_if_idle."""
        self._guard_scope = trio.CancelScope()
        try:
            with self._guard_scope:
                await guard.run(self, task_status=task_status)
        finally:
            self._guard_stopped.set()

    def _abort(self, reason: str) -> None:
        """Shut down at once, cancelling the sessions for ``reason``."""
        if not self._closing:
            self._begin_shutdown(0.0)
        self._cancel_remaining(reason)


@asynccontextmanager
async def open_session_manager(
    config: SessionConfig | None = None,
    *,
    guard: AdmissionGuard | None = None,
    **overrides: Any,
) -> AsyncIterator[SessionManager]:
    """Open a :class:`SessionManager` whose sessions run in a nursery it owns.

    Pass a :class:`SessionConfig`, or its fields as keywords, or both (the
    keywords override the config's fields)::

        config = dict(max_sessions=50, request_timeout=10)
        async with ts.open_session_manager(**config) as manager:
            await manager.run(handle, request)

    Leaving the block normally calls :meth:`SessionManager.shutdown` (drain,
    then cancel). If the block raises or is cancelled, the sessions are
    cancelled at once, as a nursery would. A ``BaseException`` such as
    :exc:`KeyboardInterrupt` raised in a session cancels the other sessions
    and propagates out of the block, unwrapped from any exception group.

    ``guard`` adds a second admission check, such as the fleet-wide limit of
    :mod:`trio_sessions.redis`; see :class:`AdmissionGuard`.

    Raises:
      TypeError, ValueError: a configuration field is invalid (the message
        names it).
    """
    if config is None:
        config = SessionConfig(**overrides)
    elif not isinstance(config, SessionConfig):
        raise TypeError(
            f"config must be a SessionConfig or None, not {type(config).__name__}"
        )
    elif overrides:
        config = attrs.evolve(config, **overrides)
    single: BaseException | None = None
    manager: SessionManager | None = None
    try:
        async with trio.open_nursery() as nursery:
            manager = SessionManager(config, nursery, guard)
            if guard is not None:
                await nursery.start(manager._run_guard, guard)
            try:
                yield manager
            except BaseException as exc:
                manager._abort(_abort_reason(exc))
                raise
            await manager.shutdown()
    except BaseExceptionGroup as group:
        # A lone exception (the body's, or a session's KeyboardInterrupt) is
        # handed over as itself, as trio users expect from a context manager.
        if len(group.exceptions) != 1:
            raise
        single = group.exceptions[0]
    finally:
        if manager is not None:
            manager._closed = True
            manager._closing = True
    if single is not None:
        raise single
