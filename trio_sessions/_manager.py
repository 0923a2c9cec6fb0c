"""The session manager: the registry, its counters and statistics, and admission.

Every session is a task in the manager's own nursery holding one token of its
:class:`trio.CapacityLimiter` inside a cancel scope that carries its deadline
(:mod:`._task`); shutdown drains inside a deadline, then cancels
(:mod:`._shutdown`). Nothing here polls, locks or uses a thread, so nothing
here can hang.
"""

from __future__ import annotations

import itertools
import logging
import math
import sys
from _thread import get_ident
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from functools import partial
from types import CoroutineType, MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import trio

from ._config import CONFIG_DEFAULT, ConfigDefault, SessionConfig, resolve_config
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
from ._session import Outcome, Session, SessionsView
from ._shutdown import Drain
from ._statistics import SessionStatistics, ShutdownReport
from ._task import abort_reason, run_session
from ._validate import check_seconds

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from typing import TypeVarTuple, Unpack

    ArgsT = TypeVarTuple("ArgsT")

__all__ = ["SessionManager", "open_session_manager"]

logger = logging.getLogger("trio_sessions")

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

_SUCCESS: Final = Outcome.SUCCESS
_ERROR: Final = Outcome.ERROR
_TIMEOUT: Final = Outcome.TIMEOUT

# Session ids are unique in the process, so logs of several managers never clash.
_next_number = itertools.count(1).__next__
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_TASK_NAME = "trio_sessions.session"


def _foreign_thread_error() -> RuntimeError:
    # The manager's state belongs to one Trio run; a call from a foreign thread
    # must fail loudly rather than corrupt counters silently or hang.
    return RuntimeError(
        "a SessionManager must be used from the Trio run that opened it; "
        "from another thread, call it through trio.from_thread.run()"
    )


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
        "_can_wait",
        "_cancelled",
        "_closed",
        "_config",
        "_default_timeout",
        "_drain",
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
        "_peak_active",
        "_peak_metadata_bytes",
        "_rejections",
        "_session_task",
        "_sessions",
        "_sessions_view",
        "_spawn",
        "_succeeded",
        "_thread",
        "_timed_out",
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
        # Bound once, not per session: a bound method is an allocation.
        self._spawn = nursery.start_soon
        self._limiter = trio.CapacityLimiter(config.max_sessions)
        # Sessions start_session_nowait may admit: max_sessions, or 0 once it
        # must refuse everyone (a guard to consult, or shutdown), so that its
        # gate is one comparison.
        self._nowait_limit = 0 if guard is not None else config.max_sessions
        self._max_waiting = config.max_waiting
        # Whether admission can ever wait (a guard to ask, or a queue): if not,
        # _may_wait() need not even be called.
        self._can_wait = guard is not None or config.max_waiting > 0
        self._default_timeout = config.request_timeout
        self._admit_budget = config.max_metadata_bytes
        # Keyed by the session's number: its id string is only made on demand.
        self._sessions: dict[int, Session[Any]] = {}
        self._sessions_view = SessionsView(self._sessions)
        # Reading the run's clock directly skips two layers of lookups per
        # reading, three times per session.
        self._now = trio.lowlevel.current_clock().current_time
        # The task's fixed arguments in one partial, made once: two fewer
        # arguments to pass at each spawn.
        self._session_task = partial(run_session, self._settled, self._now)
        self._thread = get_ident()
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
        self._drain = Drain(
            self._sessions,
            self._waiter_scopes,
            config.shutdown_grace,
            on_drained=self._stop_guard_if_idle,
        )
        # Callers inside guard.acquire: the guard outlives the last of them.
        self._in_guard = 0
        self._guard_scope = trio.CancelScope()
        self._guard_stopped = trio.Event()
        if guard is None:
            self._guard_stopped.set()

    # ------------------------------------------------------------------ queries

    @property
    def config(self) -> SessionConfig:
        """The :class:`SessionConfig` this manager runs with."""
        return self._config

    @property
    def sessions(self) -> Mapping[str, Session[Any]]:
        """Read-only live mapping ``id -> Session`` of admitted, running sessions.

        Queued callers are not sessions yet; they are counted in
        ``statistics().waiting``. A session leaves the mapping in the step
        it completes. Only a session's exact :attr:`Session.id` finds it.
        """
        return self._sessions_view

    @property
    def guard(self) -> AdmissionGuard | None:
        """The :class:`AdmissionGuard` given to :func:`open_session_manager`, if any."""
        return self._guard

    @property
    def closing(self) -> bool:
        """True once shutdown has started: nothing new is admitted."""
        return self._drain.closing

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
        fn: Callable[[Unpack[ArgsT]], Awaitable[T]],
        *args: Unpack[ArgsT],
        metadata: Mapping[str, Any] | None = None,
        timeout: float | ConfigDefault | None = CONFIG_DEFAULT,
        name: str | None = None,
    ) -> Session[T]:
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
        if timeout is CONFIG_DEFAULT:
            seconds = self._default_timeout
        elif timeout.__class__ is float and timeout >= 0:
            seconds = timeout  # the common explicit case, checked inline
        else:
            seconds = check_seconds(timeout, "timeout", optional=True)
        if metadata is None and name is None:
            # Nothing to check or measure: no call to _new_session.
            session: Session[T] = Session(
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
            raise self._refuse("capacity", new_capacity_error()) from None
        return self._admit(session, fn, args)

    def _refusal(self, fn: object) -> Exception:
        """Why the nowait gate turns a caller away: the error, counted if a refusal."""
        if get_ident() != self._thread:
            return _foreign_thread_error()
        # A wrong fn is the caller's bug whatever the manager's state: a
        # TypeError, never counted as a refusal.
        if not callable(fn):
            return _not_callable(fn)
        if self._drain.closing:
            return self._refuse_shutting_down()
        if self._guard is not None:
            return RuntimeError(
                "start_session_nowait cannot consult the manager's admission guard, "
                "which may need I/O: use 'await manager.start_session(...)'"
            )
        # The overload hot path: counted here, not through _refuse, which
        # would cost it 10 of its 77 instructions (bench_sessions --opcodes).
        self._rejections["capacity"] += 1
        return new_capacity_error()

    def _refuse(self, reason: str, error: E) -> E:
        """Count a refusal for ``reason``: every refusal but the hot one passes here.

        (A caller refused at once at capacity is counted in :meth:`_refusal`.)
        """
        self._rejections[reason] = self._rejections.get(reason, 0) + 1
        return error

    def _refuse_shutting_down(self) -> ShuttingDownError:
        if self._closed:
            message = "the session manager is closed: its 'async with' block has exited"
        else:
            message = "the session manager is shutting down"
        return self._refuse("shutting_down", ShuttingDownError(message))

    def _may_wait(self) -> bool:
        """Whether admission may have to wait now: the one place that decides.

        It may when a guard must be asked (which may need I/O), or when no
        slot is free and callers may queue for one. Never, if :attr:`_can_wait`
        is false (no guard, no queue): callers test that first, for free.
        """
        return self._guard is not None or bool(
            self._max_waiting and not self._limiter.available_tokens
        )

    async def start_session(
        self,
        fn: Callable[[Unpack[ArgsT]], Awaitable[T]],
        *args: Unpack[ArgsT],
        metadata: Mapping[str, Any] | None = None,
        timeout: float | ConfigDefault | None = CONFIG_DEFAULT,
        name: str | None = None,
    ) -> Session[T]:
        """Admit a session running ``await fn(*args)`` and return its handle.

        The session runs in a task of the manager's nursery, holding one
        capacity token, inside a cancel scope whose deadline is ``timeout``
        seconds (default ``config.request_timeout``; ``None`` for none) from
        the start of its run. This returns once the session is registered;
        its task may not have run a step yet::

            session = await manager.start_session(handle, conn, metadata={"peer": peer})

        With no free slot and ``max_waiting > 0`` it queues (FIFO) for up to
        ``wait_timeout`` seconds in all (local queue and guard together).
        This is a checkpoint. If it is cancelled while queued nothing is
        admitted; once admitted, the session is returned even if the caller
        is being cancelled.

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
        await _checkpoint_if_cancelled()
        if self._drain.closing or not (self._can_wait and self._may_wait()):
            session = self.start_session_nowait(
                fn, *args, metadata=metadata, timeout=timeout, name=name
            )
            await trio.lowlevel.cancel_shielded_checkpoint()
            return session
        return await self._start_waiting(fn, args, metadata, timeout, name)

    async def run(
        self,
        fn: Callable[[Unpack[ArgsT]], Awaitable[T]],
        *args: Unpack[ArgsT],
        metadata: Mapping[str, Any] | None = None,
        timeout: float | ConfigDefault | None = CONFIG_DEFAULT,
        name: str | None = None,
    ) -> T:
        """Run ``await fn(*args)`` as a session and return its result.

        Same as ``await (await manager.start_session(...)).wait()``::

            reply = await manager.run(handle, request, metadata={"path": path})

        Raises whatever :meth:`start_session` and :meth:`Session.wait` raise.
        This is a checkpoint; cancelling it stops the waiting, not the session.
        """
        if self._can_wait and self._may_wait():
            session = await self.start_session(
                fn, *args, metadata=metadata, timeout=timeout, name=name
            )
        else:
            # Admission cannot block here, and the wait below is the checkpoint.
            await _checkpoint_if_cancelled()
            session = self.start_session_nowait(
                fn, *args, metadata=metadata, timeout=timeout, name=name
            )
        return await session._wait()

    async def _start_waiting(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        metadata: Mapping[str, Any] | None,
        timeout: float | ConfigDefault | None,
        name: str | None,
    ) -> Session[T]:
        """Admission that may wait: for a local slot, then for the guard's lease.

        ``wait_timeout`` bounds the whole wait: the local queue and the guard
        share one deadline.
        """
        if not callable(fn):
            raise _not_callable(fn)
        limiter = self._limiter
        may_queue = self._max_waiting > self._waiting
        if limiter.available_tokens == 0 and not may_queue:
            # Refused before anything is built, as start_session_nowait does.
            raise self._refuse("capacity", new_capacity_error())
        queued_at = trio.current_time()
        seconds = self._default_timeout if timeout is CONFIG_DEFAULT else timeout
        session: Session[T] = self._new_session(
            metadata, check_seconds(seconds, "timeout", optional=True), name, queued_at
        )
        wait_timeout = self._config.wait_timeout
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
        now = trio.current_time()
        session._admit(now)
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

    async def _wait_for_slot(self, session: Session[Any], deadline: float) -> None:
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
        if self._drain.closing:
            if acquired:
                self._limiter.release_on_behalf_of(session)
            raise self._refuse_shutting_down()
        if not acquired:
            waited = self._config.wait_timeout
            raise self._refuse(
                "capacity",
                CapacityError(
                    f"Maximum concurrent sessions reached (waited {waited} seconds)"
                ),
            )

    async def _acquire_lease(
        self, guard: AdmissionGuard, session: Session[Any], deadline: float
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
            self._refuse(exc.reason, exc)
            raise
        finally:
            if counted:
                self._waiting -= 1
            self._waiter_scopes.discard(scope)
            self._in_guard -= 1
            if granted and self._drain.closing:
                self._release_lease(guard, session)
            self._stop_guard_if_idle()
        if self._drain.closing:
            raise self._refuse_shutting_down()

    def _release_lease(self, guard: AdmissionGuard, session: Session[Any]) -> None:
        try:
            guard.release(session)
        except Exception:
            # A faulty guard must not break the bookkeeping of the session.
            logger.exception("trio_sessions: %r.release(%r) raised", guard, session)

    def _new_session(
        self,
        metadata: Mapping[str, Any] | None,
        seconds: float | None,
        name: str | None,
        now: float,
    ) -> Session[T]:
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
            except MetadataError as exc:
                self._refuse("metadata", exc)
                raise
        return Session(_next_number(), name, copy, size, seconds, now, self._thread)

    def _admit(
        self,
        session: Session[T],
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
    ) -> Session[T]:
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
        self._spawn(self._session_task, session, coro, name=session._name or _TASK_NAME)
        return session

    def _check_budget(self, session: Session[Any]) -> None:
        budget = self._admit_budget
        size = session._metadata_bytes
        total = self._metadata_bytes + size
        if budget is not None and total > budget:
            raise self._refuse(
                "metadata",
                MetadataError(
                    f"metadata of {size} bytes would bring the live total to "
                    f"{total}, over max_metadata_bytes={budget}"
                ),
            )

    # --------------------------------------------------------------- settling

    def _settled(
        self,
        session: Session[Any],
        outcome: Outcome,
        result: Any,
        interrupted: bool = False,
    ) -> None:
        """The one settle callback: the session decides, the manager accounts.

        Its token, registry entry and metadata bytes are released in the same
        step as its outcome is decided.
        """
        now = self._now()
        duration = session._settle(outcome, result, now)
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
        self._durations.record(duration)
        if self._guard is not None:
            self._release_lease(self._guard, session)
        if interrupted:
            why = session.cancel_reason
            self._abort(f"cancelled because session {session.id} was {why}")
        if self._drain.closing:
            self._drain.session_settled(now)

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
        4. With a guard, it returns once the guard has stopped, having given
           back every lease of this manager.

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
        drain = self._drain
        if drain.report is not None and self._guard_stopped.is_set():
            await trio.lowlevel.checkpoint()
            return drain.report
        if not drain.closing:
            seconds = check_seconds(
                self._config.shutdown_timeout if timeout is None else timeout,
                "shutdown timeout",
            )
            assert seconds is not None
            self._nowait_limit = 0
            drain.begin(seconds)
        try:
            report = await drain.run()
            # The guard gives back the last leases as it stops: once this
            # returns, it holds nothing for this manager.
            await self._guard_stopped.wait()
        except BaseException as exc:
            # Our caller is being cancelled (or worse): nobody is left to wait
            # out the drain, so end it now rather than leave sessions unbounded.
            drain.cancel_remaining(abort_reason(exc))
            raise
        return report

    def _abort(self, reason: str) -> None:
        """Shut down at once, cancelling the sessions for ``reason``."""
        if not self._drain.closing:
            self._nowait_limit = 0
            self._drain.begin(0.0)
        self._drain.cancel_remaining(reason)

    def _close(self) -> None:
        """The ``async with`` block has exited: refuse everyone from now on."""
        self._closed = True
        self._nowait_limit = 0
        self._drain.closing = True

    async def _run_guard(
        self, guard: AdmissionGuard, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """The guard's background work, from before the body until the drain."""
        try:
            with self._guard_scope:
                await guard.run(self, task_status=task_status)
        finally:
            self._guard_stopped.set()

    def _stop_guard_if_idle(self) -> None:
        """Stop the guard once drained and no caller is left inside its acquire.

        Every session has released its lease by then, and every refused caller
        has handed back what its cancelled acquire left behind, so the guard's
        last act sees all of them.
        """
        if self._drain.report is not None and not self._in_guard:
            self._guard_scope.cancel()


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
    config = resolve_config(config, overrides)
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
                manager._abort(abort_reason(exc))
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
            manager._close()
    if single is not None:
        raise single
