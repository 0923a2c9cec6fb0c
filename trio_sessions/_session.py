"""The handle of one session: its identity, state, outcome and result."""

from __future__ import annotations

import enum
import math
from _thread import get_ident
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, final

import trio

from ._errors import SessionCancelled, SessionTimeout

__all__ = ["Outcome", "Session", "SessionState", "SessionsView", "session_number"]

if TYPE_CHECKING:
    # A default, so that a bare ``Session`` means ``Session[Any]`` and users'
    # own annotations stay valid under mypy --strict (PEP 696).
    from typing_extensions import TypeVar as _TypeVarWithDefault

    T = _TypeVarWithDefault("T", default=Any)
else:
    T = TypeVar("T")


class SessionState(enum.Enum):
    """Where a session is in its life: ``RUNNING`` until its outcome is decided."""

    RUNNING = "running"
    COMPLETED = "completed"


class Outcome(enum.Enum):
    """How a session ended; decided exactly once.

    ``SUCCESS``: the function returned. ``ERROR``: it raised an
    :exc:`Exception`. ``TIMEOUT``: its own deadline cancelled it (never counted
    as an error). ``CANCELLED``: shutdown or :meth:`Session.cancel` cancelled
    it, or it was interrupted by a ``BaseException`` such as
    :exc:`KeyboardInterrupt`, which then propagates out of the manager.
    """

    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"


def _foreign_thread_error() -> RuntimeError:
    # A session belongs to the Trio run of its manager; touching it from another
    # thread must fail loudly rather than corrupt state or hang silently.
    return RuntimeError(
        "a Session must be used from the Trio run of its manager; "
        "from another thread, call it through trio.from_thread.run()"
    )


def session_number(key: object) -> int | None:
    """The number of the session whose :attr:`Session.id` is exactly ``key``, or None.

    The inverse of ``f"s{number}"``: ``"s01"``, ``"s\u0661"`` (an Arabic-Indic
    one) or ``"s\u00b2"`` are no session's id, so they name no session.
    """
    if type(key) is not str or key[:1] != "s":
        return None
    digits = key[1:]
    if not (digits.isascii() and digits.isdigit()) or digits[0] == "0":
        return None
    return int(digits)


_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_reschedule = trio.lowlevel.reschedule
_CancelScope = trio.CancelScope
_INF = math.inf
_RUNNING = SessionState.RUNNING
_COMPLETED = SessionState.COMPLETED
_SUCCESS = Outcome.SUCCESS
_ERROR = Outcome.ERROR
_TIMEOUT = Outcome.TIMEOUT
_CANCELLED = Outcome.CANCELLED


@final
class Session(Generic[T]):
    """One admitted request: returned by :meth:`SessionManager.start_session`.

    Await :meth:`wait` for the function's result, or :meth:`cancel` it::

        session = await manager.start_session(handle, request, metadata={"client": ip})
        try:
            reply = await session.wait()
        except ts.SessionTimeout:
            reply = "too slow"

    Sessions are created only by the manager; every attribute is read-only.
    A session makes its own transitions (it is cancelled, it wakes its
    waiters); its task (or block) starts it, and the manager decides its
    outcome, once, and does the accounting around it in the same step.
    """

    __slots__ = (
        "__weakref__",
        "_cancel_reason",
        "_completed_at",
        "_created_at",
        "_done",
        "_linked_scope",
        "_metadata",
        "_metadata_bytes",
        "_name",
        "_number",
        "_outcome",
        "_result",
        "_scope",
        "_started_at",
        "_thread",
        "_timeout",
        "_waiter",
    )

    # Set when they happen, never before: slots left unset cost nothing at
    # admission (read them with getattr and a default).
    _started_at: float
    _completed_at: float
    _result: Any

    def __init__(
        self,
        number: int,
        name: str | None,
        metadata: Mapping[str, Any],
        metadata_bytes: int,
        timeout: float | None,
        created_at: float,
        thread: int,
    ) -> None:
        self._number = number
        self._thread = thread
        self._name = name
        self._metadata = metadata
        self._metadata_bytes = metadata_bytes
        self._timeout = timeout
        self._created_at = created_at
        self._outcome: Outcome | None = None
        self._scope: trio.CancelScope | None = None
        # Why cancel() was called: set only while the deadline had not yet passed,
        # so "cancelled" and "timed out" can never both be claimed.
        self._cancel_reason: str | None = None
        # The first waiter parks itself here and is rescheduled directly: a
        # request round trip (manager.run) then allocates no Event. Further
        # concurrent waiters share an Event, created only for them.
        self._waiter: trio.lowlevel.Task | None = None
        self._done: trio.Event | None = None
        # A scope cancelled when the session completes (see _cancel_when_done).
        self._linked_scope: trio.CancelScope | None = None

    def __repr__(self) -> str:
        outcome = "" if self._outcome is None else f" outcome={self._outcome.name}"
        return f"<Session {self.id} {self.state.name}{outcome}>"

    @property
    def id(self) -> str:
        """Identifier, unique among the sessions of this process (``"s1"``...)."""
        # Formatted on demand: most sessions are never asked for it.
        return f"s{self._number}"

    @property
    def name(self) -> str | None:
        """The ``name`` given to ``start_session``, for logs; ``None`` if none."""
        return self._name

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Read-only copy of the metadata taken at admission (empty if none)."""
        return self._metadata

    @property
    def metadata_bytes(self) -> int:
        """Size of :attr:`metadata` as compact UTF-8 JSON, counted at admission."""
        return self._metadata_bytes

    @property
    def timeout(self) -> float | None:
        """Seconds from :attr:`started_at` to this session's deadline, or ``None``."""
        return self._timeout

    @property
    def state(self) -> SessionState:
        """``RUNNING`` from admission until the outcome is decided, then ``COMPLETED``.

        Queued callers are not sessions yet, so there is no waiting state.
        """
        return _RUNNING if self._outcome is None else _COMPLETED

    @property
    def outcome(self) -> Outcome | None:
        """How the session ended, or ``None`` while it runs."""
        return self._outcome

    @property
    def created_at(self) -> float:
        """:func:`trio.current_time` at admission."""
        return self._created_at

    @property
    def started_at(self) -> float | None:
        """:func:`trio.current_time` when its task began to run, or ``None`` before."""
        return getattr(self, "_started_at", None)

    @property
    def completed_at(self) -> float | None:
        """:func:`trio.current_time` when the outcome was decided, else ``None``."""
        return getattr(self, "_completed_at", None)

    @property
    def duration(self) -> float | None:
        """Run time (``completed_at - started_at``) once completed, else ``None``."""
        if self._outcome is None:
            return None
        # Every session's task starts before it completes.
        return self._completed_at - self._started_at

    # -------------------------------------------------------------- transitions

    def _admit(self, now: float) -> None:
        """Admission is now: a caller that queued becomes a session only now."""
        self._created_at = now

    def _enter_scope(self, now: float) -> None:
        """Start an inline session: enter its deadline's scope in the caller's task."""
        self._started_at = now
        timeout = self._timeout
        scope = _CancelScope(deadline=_INF if timeout is None else now + timeout)
        self._scope = scope
        scope.__enter__()

    def _cancelled_from_outside(self, reason: str) -> None:
        """Its task is being cancelled from outside: say why, unless known."""
        if self._cancel_reason is None:
            self._cancel_reason = reason

    def _wake(self) -> None:
        """Its outcome is decided: wake every waiter, stop what waits on it.

        The manager decides the outcome (``_outcome``, ``_result``,
        ``_completed_at``) in the step the session ends, and calls this only
        when something waits: most sessions have no waiter by then.
        """
        waiter = self._waiter
        if waiter is not None:
            # The first waiter, parked by wait() or run(), is woken directly.
            self._waiter = None
            _reschedule(waiter)
        if self._done is not None:
            self._done.set()
        if self._linked_scope is not None:
            self._linked_scope.cancel()

    def _cancelled_outcome(self) -> Outcome:
        """The outcome of a cancelled run: its deadline's, or cancel()'s."""
        return _TIMEOUT if self._cancel_reason is None else _CANCELLED

    def cancel(self, reason: str | None = None) -> None:
        """Cancel this session; its outcome becomes ``CANCELLED``.

        Idempotent, never blocks, and does nothing once the session completed
        or once its own deadline has already passed (then it times out, as it
        would have anyway). ``reason`` ends up in the message of the
        :exc:`SessionCancelled` that :meth:`wait` raises::

            session.cancel("client disconnected")
        """
        if get_ident() != self._thread:
            raise _foreign_thread_error()
        if reason is not None and not isinstance(reason, str):
            raise TypeError(
                f"reason must be a str or None, not {type(reason).__name__}"
            )
        self._cancel(
            "cancelled by Session.cancel()"
            if reason is None
            else f"cancelled: {reason}"
        )

    @property
    def cancel_reason(self) -> str | None:
        """Why the session was cancelled, once it was; else ``None``."""
        return self._cancel_reason

    def _cancel(self, reason: str) -> bool:
        """Cancel for ``reason``; return whether this call is what cancelled it."""
        if self._outcome is not None or self._cancel_reason is not None:
            return False
        scope = self._scope
        if scope is None:
            # Not started yet: the task sees the reason and never runs fn.
            self._cancel_reason = reason
            return True
        if scope.cancel_called:
            return False  # its deadline already fired: it is timing out
        self._cancel_reason = reason
        scope.cancel()
        return True

    def _cancel_when_done(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` in the step this session completes (now, if it has).

        For code that waits on something else while the session runs, such as
        the middleware reading the client's messages: it stops when the
        session ends, however it ends, even if its function never ran.
        """
        if self._outcome is not None:
            scope.cancel()
        else:
            self._linked_scope = scope

    async def wait(self) -> T:
        """Wait for the session to complete and return what its function returned.

        Raises:
          Exception: whatever the function raised (outcome ``ERROR``).
          SessionTimeout: the session hit its deadline (outcome ``TIMEOUT``).
          SessionCancelled: the session was cancelled (outcome ``CANCELLED``).

        This is a checkpoint. Cancelling the *waiter* raises
        :exc:`trio.Cancelled` in the waiter and leaves the session running.
        """
        if get_ident() != self._thread:
            raise _foreign_thread_error()
        return await self._wait()

    async def _wait(self) -> T:
        """wait() without its thread check: for run(), on the manager's thread."""
        if self._outcome is None:
            if self._waiter is None and self._done is None:
                self._waiter = _current_task()
                await _wait_task_rescheduled(self._abort_wait)
            else:
                if self._done is None:
                    self._done = trio.Event()
                await self._done.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self._outcome is _SUCCESS:
            result: T = self._result
            return result
        return self._raise()

    def _abort_wait(self, raise_cancel: object) -> trio.lowlevel.Abort:
        # The parked waiter is being cancelled: it no longer waits.
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _raise(self) -> NoReturn:
        """Raise what an unsuccessful outcome means for its waiters."""
        if self._outcome is _ERROR:
            raise self._result
        # What the function raised while being cancelled, if anything, is the
        # cause of the timeout or cancellation.
        cause = self._result if isinstance(self._result, BaseException) else None
        if self._outcome is _TIMEOUT:
            raise SessionTimeout(
                f"session {self.id} hit its deadline of {self._timeout} seconds"
            ) from cause
        raise SessionCancelled(
            f"session {self.id} was {self._cancel_reason}"
        ) from cause


@final
class SessionsView(Mapping[str, "Session[Any]"]):
    """Read-only live view ``id -> Session`` over a manager's registry.

    The registry is keyed by session number; only a session's exact id finds
    it (see :func:`session_number`).
    """

    __slots__ = ("_by_number",)

    def __init__(self, by_number: dict[int, Session[Any]]) -> None:
        self._by_number = by_number

    def __getitem__(self, key: str) -> Session[Any]:
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
