"""Inline sessions: a session whose body runs in the caller's own task.

:class:`SessionBlock` is what :meth:`SessionManager.session` and
:meth:`SessionManager.session_nowait` return: entering it is admission, the
block's body is the session, and leaving it decides the outcome, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, final

from ._config import ConfigDefault
from ._metadata import MeasuredMetadata
from ._session import Outcome, Session

if TYPE_CHECKING:
    from ._admission import Admission

__all__ = ["SessionBlock", "exit_inline"]

_SUCCESS: Final = Outcome.SUCCESS
_ERROR: Final = Outcome.ERROR


@final
class SessionBlock:
    """An inline session: ``async with manager.session() as session:``.

    Entering it admits a session exactly as :meth:`SessionManager.start_session`
    does (or, from :meth:`SessionManager.session_nowait`, as
    :meth:`SessionManager.start_session_nowait` does) and returns its
    :class:`Session`; the body runs in the caller's own task, holding the
    session's capacity token, inside a cancel scope that carries its
    deadline. Leaving the block decides the outcome::

        async with manager.session(metadata={"path": path}, timeout=5) as session:
            reply = await handle(request)

    - the body returns: ``SUCCESS``;
    - it raises an :exc:`Exception`: ``ERROR``, and the exception propagates
      unchanged;
    - its deadline passes: ``TIMEOUT``, and :exc:`SessionTimeout` is raised
      from the block, as :func:`trio.fail_after` raises
      :exc:`trio.TooSlowError`;
    - :meth:`Session.cancel` or the manager's shutdown: ``CANCELLED``, and
      :exc:`SessionCancelled` is raised from the block;
    - the code around the block is cancelled: ``CANCELLED``, and the
      :exc:`trio.Cancelled` propagates untouched.

    A refused admission raises from the ``async with`` line and enters
    nothing. A block is entered once; make a new one for each session.
    """

    __slots__ = (
        "_key",
        "_manager",
        "_metadata",
        "_name",
        "_priority",
        "_session",
        "_timeout",
        "_wait",
    )

    def __init__(
        self,
        manager: Admission,
        metadata: Mapping[str, Any] | MeasuredMetadata | None,
        timeout: float | ConfigDefault | None,
        name: str | None,
        wait: bool,
        key: str | None = None,
        priority: int = 0,
    ) -> None:
        self._manager = manager
        self._metadata = metadata
        self._timeout = timeout
        self._name = name
        self._key = key
        self._priority = priority
        # Whether entering may wait for a slot (session()) or never yields
        # (session_nowait()).
        self._wait = wait
        self._session: Session[None] | None = None

    def __repr__(self) -> str:
        return f"<SessionBlock {self._session!r}>"

    async def __aenter__(self) -> Session[None]:
        if self._session is not None:
            raise RuntimeError(
                "a session block is entered once: call manager.session() "
                "again for another session"
            )
        manager = self._manager
        if self._wait:
            session = await manager._enter(
                self._metadata, self._timeout, self._name, self._key, self._priority
            )
        else:
            session = manager._enter_nowait(
                self._metadata, self._timeout, self._name, self._key, self._priority
            )
        self._session = session
        return session

    async def __aexit__(
        self,
        etype: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        session = self._session
        assert session is not None  # __aexit__ runs only after __aenter__ returned
        exit_inline(self._manager, session, exc)
        return False


def exit_inline(
    manager: Admission, session: Session[None], exc: BaseException | None
) -> None:
    """Leave an inline session's deadline scope and settle it, once.

    ``exc`` is what the body raised, or None. Returns when ``exc`` (if any)
    is to propagate as it is; raises :exc:`SessionTimeout` or
    :exc:`SessionCancelled` when the deadline or a cancellation ended the
    body. The one exit of :class:`SessionBlock`, and of the middleware,
    which calls it without an ``async with``: a block's object and its two
    coroutines cost about 6K instructions a session, a quarter of what an
    inline session costs over raw Trio (``bench_sessions.py``, ``raw_block``).
    """
    scope = session._scope
    assert scope is not None  # entered
    try:
        if exc is None:
            caught = scope.__exit__(None, None, None)
        else:
            caught = scope.__exit__(type(exc), exc, exc.__traceback__)
    except BaseException as remaining:
        # The scope took its own Cancelled out of a group and re-raised
        # the rest (or the block exited its scopes out of order).
        manager._settle_exit(session, remaining)
        if isinstance(remaining, Exception) and session._outcome is not _ERROR:
            session._raise()
        raise
    if exc is None or caught:
        if scope.cancel_called:
            # Its deadline or cancel() stopped the body (the scope caught
            # the Cancelled), or the body swallowed it: cancelled all the same.
            manager._settled(session, session._cancelled_outcome(), None)
            session._raise()
        manager._settled(session, _SUCCESS, None)
        return
    manager._settle_exit(session, exc)
    if isinstance(exc, Exception) and session._outcome is not _ERROR:
        # The body turned its cancellation into an error: the cancellation
        # decides, and the error is its cause.
        session._raise()
