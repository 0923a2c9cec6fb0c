"""The session manager: the registry, its counters and statistics, and shutdown.

Every session is a task in the manager's own nursery holding one token of its
:class:`trio.CapacityLimiter` inside a cancel scope that carries its deadline
(:mod:`._task`); admission is :mod:`._admission`; shutdown drains inside a
deadline, then cancels (:mod:`._shutdown`). Nothing here polls, locks or uses
a thread, so nothing here can hang.
"""

from __future__ import annotations

import logging
import sys
from _thread import get_ident
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from types import MappingProxyType
from typing import Any, Final, final

import trio

from ._adaptive import LimitController
from ._admission import Admission, foreign_thread_error
from ._config import SessionConfig, resolve_config
from ._guard import AdmissionGuard
from ._latency import LatencyRecorder
from ._retry_after import RetryAfter
from ._scheduler import NO_KEYS, KeyStatistics, Scheduler
from ._session import Outcome, Session, SessionsView
from ._shutdown import Drain
from ._statistics import SessionStatistics, ShutdownReport
from ._task import INLINE_OUTSIDE_CANCEL_REASON, abort_reason, run_session, settle_exit
from ._validate import check_count, check_seconds

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["SessionManager", "open_session_manager"]

logger = logging.getLogger("trio_sessions")

_SUCCESS: Final = Outcome.SUCCESS
_ERROR: Final = Outcome.ERROR
_TIMEOUT: Final = Outcome.TIMEOUT


@final
class SessionManager(Admission):
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
        "_controller",
        "_default_timeout",
        "_drain",
        "_durations",
        "_failed",
        "_guard",
        "_guard_scope",
        "_guard_stopped",
        "_limit_changes",
        "_limiter",
        "_max_waiting",
        "_metadata_limit",
        "_now",
        "_nowait_limit",
        "_rejections",
        "_retry_after",
        "_session_task",
        "_sessions",
        "_sessions_view",
        "_settle_exit",
        "_spawn",
        "_succeeded",
        "_thread",
        "_timed_out",
        "_wait_times",
        "_waiter_scopes",
    )

    def __init__(
        self,
        config: SessionConfig,
        nursery: trio.Nursery,
        guard: AdmissionGuard | None = None,
        controller: LimitController | None = None,
    ) -> None:
        self._config = config
        self._guard = guard
        self._controller = controller
        limit = config.max_sessions if controller is None else _first_limit(controller)
        self._limit_changes = 0
        # Bound once, not per session: a bound method is an allocation.
        self._spawn = nursery.start_soon
        self._limiter = trio.CapacityLimiter(limit)
        # Sessions start_session_nowait may admit: the limit, or 0 once it
        # must refuse everyone (a guard to consult, or shutdown), so that its
        # gate is one comparison.
        self._nowait_limit = 0 if guard is not None else limit
        # Who gets a slot, when the limiter alone cannot say: made now if the
        # config asks for a queue, key limits or a reserve, or there is a
        # controller to feed, else at the first key= or priority=.
        self._scheduler = (
            Scheduler(self._limiter, config)
            if (
                config.max_waiting
                or config.max_sessions_per_key is not None
                or config.key_limits
                or config.reserved_share
                or controller is not None
            )
            else None
        )
        self._max_waiting = config.max_waiting
        # Whether admission can ever wait (a guard to ask, or a queue): if not,
        # _may_wait() need not even be called.
        self._can_wait = guard is not None or config.max_waiting > 0
        self._default_timeout = config.request_timeout
        self._admit_budget = config.max_metadata_bytes
        self._metadata_limit = config.max_session_metadata_bytes
        # Keyed by the session's number: its id string is only made on demand.
        self._sessions: dict[int, Session[Any]] = {}
        self._sessions_view = SessionsView(self._sessions)
        # Reading the run's clock directly skips two layers of lookups per
        # reading, three times per session.
        self._now = trio.lowlevel.current_clock().current_time
        # The task's fixed arguments in one partial, made once: two fewer
        # arguments to pass at each spawn.
        self._session_task = partial(
            run_session,
            self._settled,
            self._cancelled_from_outside,
            self._interrupted,
            self._now,
        )
        # How an inline session's block that exits raising is settled.
        self._settle_exit = partial(
            settle_exit,
            self._settled,
            self._cancelled_from_outside,
            self._interrupted,
            INLINE_OUTSIDE_CANCEL_REASON,
        )
        self._thread = get_ident()
        self._closed = False
        # Completed sessions by outcome.
        self._succeeded = self._failed = self._timed_out = self._cancelled = 0
        self._rejections = {
            "capacity": 0,
            "key_capacity": 0,
            "shutting_down": 0,
            "metadata": 0,
        }
        if guard is not None:
            self._rejections.update(dict.fromkeys(guard.reasons, 0))
        self._peak_active = 0
        self._metadata_bytes = 0
        self._peak_metadata_bytes = 0
        self._waiting = 0
        self._waiter_scopes: set[trio.CancelScope] = set()
        self._durations = LatencyRecorder()
        self._wait_times = LatencyRecorder()
        self._retry_after = RetryAfter(
            self._durations,
            self._now,
            self._current_limit,
            self._waiting_now,
            self._key_limit,
        )
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
    def max_sessions(self) -> int:
        """The capacity in force now: ``config.max_sessions`` until resized.

        With a ``controller``, the limit it chose last.
        """
        return self._current_limit()

    @property
    def controller(self) -> LimitController | None:
        """The :class:`LimitController` the manager was opened with, if any."""
        return self._controller

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
        keys: dict[str, KeyStatistics]
        if self._scheduler is None:
            keys, other_keys = {}, NO_KEYS
        else:
            keys, other_keys = self._scheduler.key_statistics()
        return SessionStatistics(
            max_sessions=self._current_limit(),
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
            limit_changes=self._limit_changes,
            # A fresh dict, so that attrs.asdict() (and JSON) reach its values.
            keys=keys,
            other_keys=other_keys,
        )

    def _current_limit(self) -> int:
        total = self._limiter.total_tokens
        assert isinstance(total, int)  # only ever set to ints
        return total

    def _waiting_now(self) -> int:
        return self._waiting

    def _key_limit(self, key: str) -> int | None:
        return None if self._scheduler is None else self._scheduler.key_limit(key)

    # ------------------------------------------------------------------ resize

    def resize(self, max_sessions: int) -> None:
        """Change the capacity to ``max_sessions``, at once and without cancelling.

        Up, queued callers take the new slots in this very step; down, no one
        is admitted until fewer than ``max_sessions`` run, and the running
        sessions finish as they would have::

            manager.resize(manager.max_sessions * 2)   # more workers came up

        Not a checkpoint. ``statistics().max_sessions`` is the new limit, and
        ``statistics().limit_changes`` counts each change.

        Raises:
          TypeError: ``max_sessions`` is not an int.
          ValueError: ``max_sessions`` is below 1.
          RuntimeError: the manager has a ``controller``, which sets its limit.
        """
        if get_ident() != self._thread:
            raise foreign_thread_error()
        check_count(max_sessions, "max_sessions", minimum=1)
        if self._controller is not None:
            raise RuntimeError(
                f"this manager's limit is set by its controller {self._controller!r}:"
                " resize() would be undone by the next session"
            )
        self._set_limit(max_sessions)

    def _set_limit(self, limit: int) -> None:
        if limit == self._limiter.total_tokens:
            return
        self._limiter.total_tokens = limit
        self._limit_changes += 1
        if self._nowait_limit:  # 0 stays 0: guarded, or closing
            self._nowait_limit = limit
        if self._scheduler is not None:
            self._scheduler.hand_over()

    def _follow(
        self,
        controller: LimitController,
        outcome: Outcome,
        duration: float,
        now: float,
    ) -> None:
        """Feed ``controller`` a completed session; take the limit it wants."""
        try:
            wanted = controller.on_sample(
                duration=duration,
                outcome=outcome,
                in_flight=len(self._sessions) + 1,
                now=now,
            )
            self._set_limit(_clamped(controller, wanted))
        except Exception:
            # A faulty controller must not break the bookkeeping of the session.
            logger.exception("trio_sessions: %r.on_sample() raised", controller)

    # --------------------------------------------------------------- settling

    def _settled(
        self,
        session: Session[Any],
        outcome: Outcome,
        result: Any,
    ) -> None:
        """The one settle callback: the session decides, the manager accounts.

        Its token, registry entry and metadata bytes are released in the same
        step as its outcome is decided.
        """
        now = self._now()
        # The session's own transition, spelled out here (a call saved on
        # every session): decided once, its waiters woken in this step.
        session._outcome = outcome
        session._result = result
        session._completed_at = now
        if (
            session._waiter is not None
            or session._done is not None
            or session._linked_scope is not None
        ):
            session._wake()
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
        duration = now - session._started_at
        self._durations.record(duration)
        if self._scheduler is not None:
            if self._controller is not None:
                self._follow(self._controller, outcome, duration, now)
            self._scheduler.released(session)
        if self._guard is not None:
            self._release_lease(self._guard, session)
        if self._drain.closing and not self._sessions:
            self._drain.last_settled(now)

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
            raise foreign_thread_error()
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

    def _cancelled_from_outside(self, session: Session[Any]) -> None:
        """A session's task is cancelled from outside; a drain counts it."""
        if self._drain.closing:
            self._drain.cancelled_from_outside(session)

    def _interrupted(self, session: Session[Any]) -> None:
        """A session was interrupted (KeyboardInterrupt...): shut down at once."""
        why = session.cancel_reason
        self._abort(f"cancelled because session {session.id} was {why}")

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


def _clamped(controller: LimitController, limit: int) -> int:
    """``limit`` within the controller's floor and ceiling (and at least 1)."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"{controller!r} chose a limit of {limit!r}, not an int")
    return max(1, controller.min_limit, min(limit, controller.max_limit))


def _first_limit(controller: LimitController) -> int:
    """The limit a manager with ``controller`` starts at."""
    return _clamped(controller, controller.limit)


@asynccontextmanager
async def open_session_manager(
    config: SessionConfig | None = None,
    *,
    guard: AdmissionGuard | None = None,
    controller: LimitController | None = None,
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
    :mod:`trio_sessions.redis`; see :class:`AdmissionGuard`. ``controller``
    sets the capacity from the sessions' run times and outcomes instead of
    ``max_sessions`` (see :class:`LimitController`)::

        controller = ts.AIMDController(min_limit=5, max_limit=200)
        async with ts.open_session_manager(controller=controller) as manager:
            ...

    Raises:
      TypeError, ValueError: a configuration field is invalid (the message
        names it).
    """
    config = resolve_config(config, overrides)
    if controller is not None and not isinstance(controller, LimitController):
        raise TypeError(
            f"controller must be a LimitController, not {type(controller).__name__}"
        )
    single: BaseException | None = None
    manager: SessionManager | None = None
    try:
        async with trio.open_nursery() as nursery:
            manager = SessionManager(config, nursery, guard, controller)
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
