"""Admission: whether a caller becomes a session now, waits for a slot, or is refused.

:class:`Admission` holds the manager's entry points (``start_session_nowait``,
``start_session``, ``run``) and everything they decide: the nowait gate, the
FIFO wait for a slot and for a guard's lease, metadata accounting and the one
place that counts a refusal. :class:`~trio_sessions.SessionManager` is built
on it, with the registry, the counters and the shutdown.
"""

from __future__ import annotations

import itertools
import logging
import math
from _thread import get_ident
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import trio

from ._config import CONFIG_DEFAULT, ConfigDefault, SessionConfig
from ._errors import (
    CAPACITY_MESSAGE,
    CapacityError,
    MetadataError,
    RejectedError,
    ShuttingDownError,
    new_capacity_error,
)
from ._guard import AdmissionGuard
from ._inline import SessionBlock
from ._latency import LatencyRecorder
from ._metadata import (
    EMPTY_METADATA,
    MeasuredMetadata,
    encode_metadata,
    over_limit_error,
)
from ._retry_after import RetryAfter
from ._scheduler import Scheduler
from ._session import Outcome, Session
from ._shutdown import Drain
from ._validate import check_seconds

if TYPE_CHECKING:
    from typing import TypeVarTuple, Unpack

    ArgsT = TypeVarTuple("ArgsT")

__all__ = ["Admission", "foreign_thread_error"]

logger = logging.getLogger("trio_sessions")

T = TypeVar("T")
E = TypeVar("E", bound=Exception)
# A session's metadata as admission takes it: as given, or measured already.
Metadata = Mapping[str, Any] | MeasuredMetadata | None

# Session ids are unique in the process, so logs of several managers never clash.
_next_number = itertools.count(1).__next__
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_CancelScope = trio.CancelScope
_INF: Final = math.inf
# An exception without its Python-level __init__ (see new_capacity_error).
_new_exception = CapacityError.__new__
_TASK_NAME = "trio_sessions.session"
# The default priority=, compared by identity (CPython shares the int 0).
_NO_PRIORITY: Final = 0


def foreign_thread_error() -> RuntimeError:
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


class Admission:
    """The admission half of :class:`~trio_sessions.SessionManager`.

    Its state is the manager's (declared here, set in the manager's
    ``__init__``): a limiter of ``max_sessions`` tokens, the registry of
    sessions by number, the refusal counters, and the queue of waiters, whose
    cancel scopes the drain cancels when shutdown starts.
    """

    # What admission writes lives here; what it only reads, the manager's.
    __slots__ = (
        "_in_guard",
        "_metadata_bytes",
        "_peak_active",
        "_peak_metadata_bytes",
        "_scheduler",
        "_waiting",
    )

    _config: SessionConfig
    _guard: AdmissionGuard | None
    _limiter: trio.CapacityLimiter
    _sessions: dict[int, Session[Any]]
    _drain: Drain
    _thread: int
    _closed: bool
    _now: Callable[[], float]
    _spawn: Callable[..., None]
    _session_task: partial[Any]
    _nowait_limit: int
    _can_wait: bool
    _max_waiting: int
    _default_timeout: float | None
    _admit_budget: int | None
    _metadata_limit: int | None
    _rejections: dict[str, int]
    _waiting: int
    _waiter_scopes: set[trio.CancelScope]
    _in_guard: int
    _peak_active: int
    _metadata_bytes: int
    _peak_metadata_bytes: int
    _wait_times: LatencyRecorder
    _scheduler: Scheduler | None
    _retry_after: RetryAfter

    # The manager's: stop the guard once drained and no caller is inside it;
    # settle a session (an inline block's exit settles its own).
    _stop_guard_if_idle: Callable[[], None]
    _settled: Callable[[Session[Any], Outcome, Any], None]
    _settle_exit: Callable[[Session[Any], BaseException], None]

    def start_session_nowait(
        self,
        fn: Callable[[Unpack[ArgsT]], Awaitable[T]],
        *args: Unpack[ArgsT],
        metadata: Mapping[str, Any] | None = None,
        timeout: float | ConfigDefault | None = CONFIG_DEFAULT,
        name: str | None = None,
        key: str | None = None,
        priority: int = 0,
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
        return self._start_nowait(fn, args, metadata, timeout, name, key, priority)

    def _start_nowait(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        metadata: Mapping[str, Any] | None,
        timeout: float | ConfigDefault | None,
        name: str | None,
        key: str | None,
        priority: int,
    ) -> Session[T]:
        """:meth:`start_session_nowait`, its arguments passed as they came.

        What every form that admits at once and spawns calls: passing
        ``*args`` on with keywords would build a tuple and a dict per session
        (the request round trip's largest single cost, callgrind).
        """
        # The one gate every caller without a queue goes through. Refusals at
        # capacity are a hot path under overload: one test, then _refusal.
        if (
            len(self._sessions) >= self._nowait_limit
            or not callable(fn)
            or get_ident() != self._thread
        ):
            raise self._refusal(fn)
        # The coroutine first: a wrong fn is refused before anything is taken.
        coro = fn(*args)
        if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
            raise _not_a_coroutine(fn, coro)
        try:
            session: Session[T] = self._admit_now(
                metadata, timeout, name, key, priority
            )
        except BaseException:
            coro.close()
            raise
        # A str name spares trio formatting one from the function at each spawn.
        self._spawn(self._session_task, session, coro, name=session._name or _TASK_NAME)
        return session

    def _admit_now(
        self,
        metadata: Metadata,
        timeout: float | ConfigDefault | None,
        name: str | None,
        key: str | None,
        priority: int,
    ) -> Session[Any]:
        """Admit a new session at once, or refuse: both nowait forms' admission.

        Its caller has passed the gate (a slot may be free, on this thread);
        the session returned holds a token and is registered.
        """
        if timeout is CONFIG_DEFAULT:
            seconds = self._default_timeout
        elif timeout.__class__ is float and timeout >= 0:
            seconds = timeout  # the common explicit case, checked inline
        else:
            seconds = check_seconds(timeout, "timeout", optional=True)
        if metadata is None and name is None:
            # Nothing to check or measure: no call to _new_session.
            session: Session[Any] = Session(
                _next_number(),
                None,
                EMPTY_METADATA,
                0,
                seconds,
                self._now(),
                self._thread,
            )
        elif (
            type(metadata) is MeasuredMetadata
            and name is None
            and (self._metadata_limit is None or metadata.size <= self._metadata_limit)
        ):
            # Measured, and within the limit, already (the middleware's).
            session = Session(
                _next_number(),
                None,
                metadata.mapping,
                metadata.size,
                seconds,
                self._now(),
                self._thread,
            )
        else:
            session = self._new_session(metadata, seconds, name, self._now())
        # By identity: a bool or a float 0 takes the slow way, which refuses it.
        if key is None and priority is _NO_PRIORITY and self._scheduler is None:
            try:
                self._limiter.acquire_on_behalf_of_nowait(session)
            except trio.WouldBlock:
                # A freed token was handed to a queued caller not yet run.
                raise self._refuse("capacity", self._capacity_error()) from None
        else:
            scheduler = self._scheduler_for(key, priority)
            blocker = scheduler.blocker(key, priority)
            if blocker is not None:
                raise self._refuse_blocked(blocker, key)
            scheduler.take(session, key)
        if session._metadata_bytes:
            self._register(session)  # with its bytes, against the budget
        else:
            # The hot path of _register, spelled out: no bytes to count.
            sessions = self._sessions
            sessions[session._number] = session
            if len(sessions) > self._peak_active:
                self._peak_active = len(sessions)
        return session

    def session(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | ConfigDefault | None = CONFIG_DEFAULT,
        name: str | None = None,
        key: str | None = None,
        priority: int = 0,
    ) -> SessionBlock:
        """An inline session: its body runs in the caller's own task.

        Entering the block is admission, exactly as :meth:`start_session`
        (refused at once, or queued FIFO within ``max_waiting`` and
        ``wait_timeout``; the same errors and counters), and a checkpoint;
        the body holds one capacity token for its whole extent, inside a
        cancel scope whose deadline is ``timeout`` seconds from its start::

            async with manager.session(metadata={"path": path}, timeout=5):
                reply = await handle(request)

        Choose it for request handlers that already have a task (the
        server's); choose :meth:`start_session` for fire-and-forget work and
        fan-out. How the block ends is in :class:`SessionBlock`. A refused
        admission raises from the ``async with`` line and enters nothing.

        Raises:
          CapacityError: no slot was free and the queue was full, or the wait
            timed out.
          ShuttingDownError: the manager is draining or closed.
          MetadataError: ``metadata`` is not a JSON-encodable mapping or is
            over a limit.
          TypeError: an argument has the wrong type.
          ValueError: ``timeout`` is negative or NaN.
        """
        return SessionBlock(self, metadata, timeout, name, True, key, priority)

    def session_nowait(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | ConfigDefault | None = CONFIG_DEFAULT,
        name: str | None = None,
        key: str | None = None,
        priority: int = 0,
    ) -> SessionBlock:
        """An inline session admitted at once or refused, never waiting.

        The twin of :meth:`session` as :meth:`start_session_nowait` is of
        :meth:`start_session`: entering it never blocks and never yields,
        whatever ``max_waiting`` says, so it is the fast path for a handler
        that would rather refuse than queue::

            try:
                async with manager.session_nowait(timeout=5):
                    reply = await handle(request)
            except ts.CapacityError:
                reply = "busy, try again"

        Raises:
          CapacityError: no slot is free.
          ShuttingDownError: the manager is draining or closed.
          MetadataError: ``metadata`` is not a JSON-encodable mapping or is
            over a limit.
          TypeError: an argument has the wrong type.
          ValueError: ``timeout`` is negative or NaN.
        """
        return SessionBlock(self, metadata, timeout, name, False, key, priority)

    async def _enter(
        self,
        metadata: Metadata,
        timeout: float | ConfigDefault | None,
        name: str | None,
        key: str | None,
        priority: int,
    ) -> Session[None]:
        """Enter an inline session as :meth:`start_session` admits: may wait."""
        await _checkpoint_if_cancelled()
        if self._drain.closing or not (
            self._can_wait and self._may_wait(key, priority)
        ):
            session = self._enter_nowait(metadata, timeout, name, key, priority)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return session
        session, waited = await self._wait_for_admission(
            metadata, timeout, name, key, priority
        )
        try:
            self._enter_admitted(session)
        except BaseException:
            self._release_lease_if_guarded(session)
            raise
        if waited is not None:
            self._wait_times.record(waited)
        return session

    def _enter_nowait(
        self,
        metadata: Metadata,
        timeout: float | ConfigDefault | None,
        name: str | None,
        key: str | None,
        priority: int,
    ) -> Session[None]:
        """Enter an inline session now, or raise: the gate of the nowait forms."""
        if len(self._sessions) >= self._nowait_limit or get_ident() != self._thread:
            if get_ident() != self._thread:
                raise foreign_thread_error()
            raise self._gate_refusal("session_nowait", "async with manager.session()")
        session: Session[None] = self._admit_now(metadata, timeout, name, key, priority)
        # Admitted and started in the same step: one reading of the clock, and
        # Session._enter_scope spelled out (a call fewer per inline session).
        started = session._started_at = session._created_at
        seconds = session._timeout
        scope = session._scope = _CancelScope(
            deadline=_INF if seconds is None else started + seconds
        )
        scope.__enter__()
        return session

    def _enter_admitted(self, session: Session[None]) -> Session[None]:
        """Register ``session`` (holding its token) and enter its deadline's scope."""
        self._register(session)
        session._enter_scope(self._now())
        return session

    def _refusal(self, fn: object) -> Exception:
        """Why the nowait gate turns a caller away: the error, counted if a refusal."""
        if get_ident() != self._thread:
            return foreign_thread_error()
        # A wrong fn is the caller's bug whatever the manager's state: a
        # TypeError, never counted as a refusal.
        if not callable(fn):
            return _not_callable(fn)
        if not self._nowait_limit:
            # Closing or guarded: the gate admits nobody.
            return self._gate_refusal(
                "start_session_nowait", "await manager.start_session(...)"
            )
        # At capacity, the overload hot path: counted and made here, not
        # through calls (new_capacity_error, spelled out).
        self._rejections["capacity"] += 1
        error = _new_exception(CapacityError, CAPACITY_MESSAGE)
        error._estimator = self._retry_after
        return error

    def _gate_refusal(self, form: str, instead: str) -> Exception:
        """Why the gate of the nowait ``form`` refuses a well-formed caller."""
        if self._drain.closing:
            return self._refuse_shutting_down()
        if self._guard is not None:
            return RuntimeError(
                f"{form} cannot consult the manager's admission guard, "
                f"which may need I/O: use '{instead}'"
            )
        # The overload hot path: counted here, not through _refuse, which
        # would cost it 10 of its 77 instructions (bench_sessions --opcodes).
        self._rejections["capacity"] += 1
        return new_capacity_error(self._retry_after)

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

    def _capacity_error(self) -> CapacityError:
        return new_capacity_error(self._retry_after)

    def _refuse_blocked(self, blocker: str, key: str | None) -> CapacityError:
        """Count and return the refusal of a caller the scheduler may not admit now."""
        if blocker == "key_capacity":
            assert key is not None
            assert self._scheduler is not None
            self._scheduler.refused(key)
            error = CapacityError(
                f"Maximum concurrent sessions for key {key!r} reached "
                f"({self._scheduler.key_limit(key)})",
                reason="key_capacity",
                key=key,
            )
            error._estimator = self._retry_after
            return self._refuse("key_capacity", error)
        return self._refuse("capacity", self._capacity_error())

    def _scheduler_for(self, key: str | None, priority: int) -> Scheduler:
        """The scheduler, made at the first ``key=`` or ``priority=``; checks both."""
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key must be a str or None, not {type(key).__name__}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, not {type(priority).__name__}")
        if self._scheduler is None:
            self._scheduler = Scheduler(self._limiter, self._config)
        return self._scheduler

    def _blocker(self, key: str | None, priority: int) -> str | None:
        """Why a caller may not take a slot now ("capacity", "key_capacity"), if so."""
        if key is None and priority is _NO_PRIORITY and self._scheduler is None:
            return "capacity" if self._limiter.available_tokens <= 0 else None
        return self._scheduler_for(key, priority).blocker(key, priority)

    def _take(self, session: Session[Any], key: str | None) -> None:
        """Give ``session`` the token :meth:`_blocker` said was free for it."""
        if self._scheduler is None:
            self._limiter.acquire_on_behalf_of_nowait(session)
        else:
            self._scheduler.take(session, key)

    def _release_token(self, session: Session[Any]) -> None:
        """Give back the token of a session admission failed after taking it."""
        self._limiter.release_on_behalf_of(session)
        if self._scheduler is not None:
            self._scheduler.released(session)

    def _may_wait(self, key: str | None = None, priority: int = 0) -> bool:
        """Whether admission may have to wait now: the one place that decides.

        It may when a guard must be asked (which may need I/O), or when no
        slot is free for this caller and callers may queue for one. Never, if
        :attr:`_can_wait` is false (no guard, no queue): callers test that
        first, for free.
        """
        return self._guard is not None or bool(
            self._max_waiting and self._blocker(key, priority) is not None
        )

    async def start_session(
        self,
        fn: Callable[[Unpack[ArgsT]], Awaitable[T]],
        *args: Unpack[ArgsT],
        metadata: Mapping[str, Any] | None = None,
        timeout: float | ConfigDefault | None = CONFIG_DEFAULT,
        name: str | None = None,
        key: str | None = None,
        priority: int = 0,
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
        if self._drain.closing or not (
            self._can_wait and self._may_wait(key, priority)
        ):
            session = self._start_nowait(
                fn, args, metadata, timeout, name, key, priority
            )
            await trio.lowlevel.cancel_shielded_checkpoint()
            return session
        return await self._start_waiting(
            fn, args, metadata, timeout, name, key, priority
        )

    async def run(
        self,
        fn: Callable[[Unpack[ArgsT]], Awaitable[T]],
        *args: Unpack[ArgsT],
        metadata: Mapping[str, Any] | None = None,
        timeout: float | ConfigDefault | None = CONFIG_DEFAULT,
        name: str | None = None,
        key: str | None = None,
        priority: int = 0,
    ) -> T:
        """Run ``await fn(*args)`` as a session and return its result.

        Same as ``await (await manager.start_session(...)).wait()``::

            reply = await manager.run(handle, request, metadata={"path": path})

        Raises whatever :meth:`start_session` and :meth:`Session.wait` raise.
        This is a checkpoint; cancelling it stops the waiting, not the session.
        """
        if self._can_wait and self._may_wait(key, priority):
            session = await self.start_session(
                fn,
                *args,
                metadata=metadata,
                timeout=timeout,
                name=name,
                key=key,
                priority=priority,
            )
        else:
            # Admission cannot block here, and the wait below is the checkpoint.
            await _checkpoint_if_cancelled()
            session = self._start_nowait(
                fn, args, metadata, timeout, name, key, priority
            )
        return await session._wait()

    async def _start_waiting(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        metadata: Mapping[str, Any] | None,
        timeout: float | ConfigDefault | None,
        name: str | None,
        key: str | None,
        priority: int,
    ) -> Session[T]:
        """Admission that may wait, then the session's task."""
        if not callable(fn):
            raise _not_callable(fn)
        session, waited = await self._wait_for_admission(
            metadata, timeout, name, key, priority
        )
        try:
            self._admit(session, fn, args)
        except BaseException:
            self._release_lease_if_guarded(session)
            raise
        if waited is not None:
            self._wait_times.record(waited)
        return session

    async def _wait_for_admission(
        self,
        metadata: Metadata,
        timeout: float | ConfigDefault | None,
        name: str | None,
        key: str | None,
        priority: int,
    ) -> tuple[Session[Any], float | None]:
        """Admission that may wait: for a local slot, then for the guard's lease.

        Returns the session, holding its token (and lease), not registered
        yet, with how long it waited if that counts in ``wait_times`` (only
        callers that queued; the guard's round trip is a wait only for a
        caller allowed to queue), else None. ``wait_timeout`` bounds the
        whole wait: the local queue and the guard share one deadline.
        """
        may_queue = self._max_waiting > self._waiting
        blocker = self._blocker(key, priority)
        if blocker is not None and not may_queue:
            # Refused before anything is built, as the nowait forms do.
            raise self._refuse_blocked(blocker, key)
        queued_at = trio.current_time()
        if timeout is CONFIG_DEFAULT:
            seconds = self._default_timeout  # checked with the config
        else:
            seconds = check_seconds(timeout, "timeout", optional=True)
        session: Session[Any] = self._new_session(metadata, seconds, name, queued_at)
        wait_timeout = self._config.wait_timeout
        deadline = math.inf if wait_timeout is None else queued_at + wait_timeout
        queued = blocker is not None
        if queued:
            await self._wait_for_slot(session, deadline, key, priority)
        else:
            self._take(session, key)
        guard = self._guard
        if guard is not None:
            try:
                self._check_budget(session)
                await self._acquire_lease(
                    guard, session, deadline if may_queue else -math.inf
                )
            except BaseException:
                self._release_token(session)
                raise
        now = trio.current_time()
        session._admit(now)
        if queued or (guard is not None and may_queue and now > queued_at):
            return session, now - queued_at
        return session, None

    async def _wait_for_slot(
        self, session: Session[Any], deadline: float, key: str | None, priority: int
    ) -> None:
        """Queue for a token on behalf of ``session``; return holding it, or raise."""
        # Queueing is possible only with max_waiting > 0, which makes one.
        scheduler = self._scheduler
        assert scheduler is not None
        scope = trio.CancelScope(deadline=deadline)
        self._waiting += 1
        self._waiter_scopes.add(scope)
        acquired = False
        try:
            with scope:
                await scheduler.wait(session, key, priority)
                acquired = True
        finally:
            self._waiting -= 1
            self._waiter_scopes.discard(scope)
        # Shutdown may begin after a released token was handed to us but before
        # we ran again; it still wins, and the token goes back.
        if self._drain.closing:
            if acquired:
                self._release_token(session)
            raise self._refuse_shutting_down()
        if not acquired:
            waited = self._config.wait_timeout
            if key is not None and scheduler.blocker(key, priority) == "key_capacity":
                raise self._refuse_blocked("key_capacity", key)
            error = CapacityError(
                f"Maximum concurrent sessions reached (waited {waited} seconds)"
            )
            error._estimator = self._retry_after
            raise self._refuse("capacity", error)

    async def _acquire_lease(
        self, guard: AdmissionGuard, session: Session[Any], deadline: float
    ) -> None:
        """Ask ``guard`` for a lease, waiting for room until ``deadline``.

        A caller that may queue (``deadline > -inf``) counts as waiting for the
        round trip, and shutdown cancels its scope like a queued caller's, so
        no guard can hold admission open once draining has begun. One that may
        not is only asking: if the guard says its asks are bounded
        (:attr:`AdmissionGuard.bounded_asks`, as the Redis guard's are by its
        I/O timeout), it gets no scope (entering one costs about a fifth of a
        guarded admission's CPU), and once it returns, shutdown refuses it.
        Either way the guard is stopped only once every caller has left it
        (its releases are flushed after theirs).
        """
        counted = deadline > -math.inf
        scope = None if not counted and guard.bounded_asks else trio.CancelScope()
        if counted:
            self._waiting += 1
        if scope is not None:
            self._waiter_scopes.add(scope)
        self._in_guard += 1
        granted = False
        try:
            if scope is None:
                await guard.acquire(session, deadline)
                granted = True
            else:
                with scope:
                    await guard.acquire(session, deadline)
                    granted = True
        except RejectedError as exc:
            self._refuse(exc.reason, exc)
            raise
        finally:
            if counted:
                self._waiting -= 1
            if scope is not None:
                self._waiter_scopes.discard(scope)
            self._in_guard -= 1
            if granted and self._drain.closing:
                self._release_lease(guard, session)
            self._stop_guard_if_idle()
        if self._drain.closing:
            raise self._refuse_shutting_down()

    def _release_lease_if_guarded(self, session: Session[Any]) -> None:
        # Admission failed after the guard granted a lease: give it back.
        if self._guard is not None:
            self._release_lease(self._guard, session)

    def _release_lease(self, guard: AdmissionGuard, session: Session[Any]) -> None:
        try:
            guard.release(session)
        except Exception:
            # A faulty guard must not break the bookkeeping of the session.
            logger.exception("trio_sessions: %r.release(%r) raised", guard, session)

    def _new_session(
        self,
        metadata: Metadata,
        seconds: float | None,
        name: str | None,
        now: float,
    ) -> Session[T]:
        """A session with checked ``seconds``: check ``name``, measure ``metadata``."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if metadata is None:
            copy, size = EMPTY_METADATA, 0
        elif type(metadata) is MeasuredMetadata:
            copy, size = metadata.mapping, metadata.size
            limit = self._metadata_limit
            if limit is not None and size > limit:
                raise self._refuse("metadata", over_limit_error(size, limit))
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
        try:
            coro = _coroutine_of(fn, args)
        except BaseException:
            self._release_token(session)
            raise
        try:
            self._register(session)
        except BaseException:
            coro.close()
            raise
        self._spawn(self._session_task, session, coro, name=session._name or _TASK_NAME)
        return session

    def _register(self, session: Session[Any]) -> None:
        """Put ``session``, which holds a token, in the registry, or refuse it.

        Its metadata must fit the budget over all live sessions; if not, its
        token goes back and it is refused.
        """
        size = session._metadata_bytes
        if size:
            total = self._metadata_bytes + size
            if self._admit_budget is not None and total > self._admit_budget:
                self._release_token(session)
                raise self._over_budget(size, total)
            self._metadata_bytes = total
            if total > self._peak_metadata_bytes:
                self._peak_metadata_bytes = total
        sessions = self._sessions
        sessions[session._number] = session
        active = len(sessions)
        if active > self._peak_active:
            self._peak_active = active

    def _check_budget(self, session: Session[Any]) -> None:
        """Refuse ``session`` now if its metadata would go over the budget."""
        size = session._metadata_bytes
        total = self._metadata_bytes + size
        if self._admit_budget is not None and total > self._admit_budget:
            raise self._over_budget(size, total)

    def _over_budget(self, size: int, total: int) -> MetadataError:
        return self._refuse(
            "metadata",
            MetadataError(
                f"metadata of {size} bytes would bring the live total to "
                f"{total}, over max_metadata_bytes={self._admit_budget}"
            ),
        )


def _coroutine_of(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    """``fn(*args)``, which must be a coroutine: what a session task runs."""
    coro = fn(*args)
    if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
        raise _not_a_coroutine(fn, coro)
    return coro
