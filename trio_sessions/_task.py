"""The body of a session's task: run the function in its scope, say how it ended.

:func:`run_session` is what the manager spawns for each session; it leaves the
accounting to the manager's settle callback. :func:`settle_exit` classifies
every way a run can end by an exception (raised, timed out, cancelled from
inside or outside, interrupted), for session tasks and inline sessions alike.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

import trio

from ._session import Outcome, Session

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "INLINE_OUTSIDE_CANCEL_REASON",
    "OUTSIDE_CANCEL_REASON",
    "Settle",
    "abort_reason",
    "run_session",
    "settle_exit",
]

Settle = Callable[["Session[Any]", Outcome, Any], None]
"""The manager's accounting for a session whose outcome is decided."""

OUTSIDE_CANCEL_REASON: Final = (
    "cancelled because the code around the manager was cancelled"
)
INLINE_OUTSIDE_CANCEL_REASON: Final = (
    "cancelled because the code around its block was cancelled"
)

_CancelScope = trio.CancelScope
_INF: Final = math.inf
_SUCCESS: Final = Outcome.SUCCESS
_ERROR: Final = Outcome.ERROR
_CANCELLED: Final = Outcome.CANCELLED


async def run_session(
    settle: Settle,
    outside: Callable[[Session[Any]], None],
    interrupted: Callable[[Session[Any]], None],
    now: Callable[[], float],
    session: Session[Any],
    coro: Coroutine[Any, Any, Any],
) -> None:
    """Run ``coro`` as ``session``: in its deadline's scope, settled exactly once.

    The manager hears of the rare endings apart from the accounting:
    ``outside`` just before settling a session cancelled from outside (a
    drain in progress counts it as cancelled), ``interrupted`` after settling
    one ended by a KeyboardInterrupt or SystemExit (the whole manager shuts
    down at once).
    """
    # The session's start, spelled out (a call fewer per session).
    started = session._started_at = now()
    if session._cancel_reason is not None:
        # Cancelled before its first step: fn never runs.
        coro.close()
        settle(session, _CANCELLED, None)
        return
    timeout = session._timeout
    scope = session._scope = _CancelScope(
        deadline=_INF if timeout is None else started + timeout
    )
    try:
        with scope:
            result = await coro
    except BaseException as exc:
        settle_exit(settle, outside, interrupted, OUTSIDE_CANCEL_REASON, session, exc)
        if not isinstance(exc, Exception):
            raise
    else:
        if scope.cancel_called:
            # fn swallowed its cancellation; it was still cancelled.
            settle(session, session._cancelled_outcome(), None)
        else:
            settle(session, _SUCCESS, result)


def settle_exit(
    settle: Settle,
    outside: Callable[[Session[Any]], None],
    interrupted: Callable[[Session[Any]], None],
    outside_reason: str,
    session: Session[Any],
    exc: BaseException,
) -> None:
    """Settle ``session``, whose deadline's scope has exited raising ``exc``.

    The one classification of an ending by an exception, for a session task
    and for an inline session's block alike (its scope has already caught
    its own cancellation, so ``exc`` is what got past it). ``outside_reason``
    says what surrounds the session: the manager, or the block's own task.
    """
    if isinstance(exc, Exception):
        if session._scope is not None and session._scope.cancel_called:
            # fn turned its cancellation into an error; the cancellation decides.
            settle(session, session._cancelled_outcome(), exc)
        else:
            settle(session, _ERROR, exc)
        return
    if isinstance(exc, trio.Cancelled):
        # Cancelled from outside this session's scope: the code around the
        # manager (or the block), or a BaseException in a sibling session.
        session._cancelled_from_outside(outside_reason)
        outside(session)
        settle(session, _CANCELLED, None)
        return
    interruption = _interruption(exc)
    if interruption is None:
        # Only Cancelled, grouped by a nursery inside fn: still an outside
        # cancellation (what fn raised besides is its cause).
        session._cancelled_from_outside(outside_reason)
        outside(session)
        settle(session, _CANCELLED, _non_cancelled(exc))
        return
    # KeyboardInterrupt, SystemExit...: not an error of the session but the
    # end of the program. Only Exceptions are ERRORs: this session was
    # interrupted, and the whole manager shuts down at once (queued callers
    # are refused, the other sessions cancelled) while the exception
    # propagates out of the manager's block.
    session._cancelled_from_outside(f"interrupted by {type(interruption).__name__}")
    settle(session, _CANCELLED, exc)
    interrupted(session)


def abort_reason(exc: BaseException) -> str:
    """Why sessions are cancelled when the code around the manager raises ``exc``."""
    if isinstance(exc, trio.Cancelled) or (
        isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[1] is None
    ):
        return OUTSIDE_CANCEL_REASON
    return f"cancelled because the code around the manager raised {type(exc).__name__}"


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


def _non_cancelled(exc: BaseException) -> BaseException | None:
    """What a group raised besides Cancelled, or None (kept as the cause)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1]
    return None
