"""The exceptions trio_sessions raises.

Every error derives from :class:`SessionError`; refusals at admission derive from
:class:`RejectedError` and carry the machine-readable ``reason`` that statistics count.
"""

from __future__ import annotations

from typing import final

import trio

CAPACITY_MESSAGE = "Maximum concurrent sessions reached"


class SessionError(Exception):
    """Base class of every error raised by trio_sessions.

    Catch it to handle anything this package refuses or reports::

        try:
            await manager.run(handler)
        except ts.SessionError as exc:
            log.warning("request not served: %s", exc)
    """


class RejectedError(SessionError):
    """A session was not admitted; nothing was spawned.

    ``reason`` is the key under which the refusal is counted in
    :attr:`SessionStatistics.rejections` (``"capacity"``, ``"shutting_down"``,
    ``"metadata"``).
    """

    #: Why the session was refused; each subclass sets its own default.
    reason: str = "rejected"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


@final
class CapacityError(RejectedError):
    """No slot was free: "Maximum concurrent sessions reached".

    Raised at once when the manager is full and ``max_waiting`` waiters already
    queue, when ``wait_timeout`` expires, and always by ``start_session_nowait``
    when no slot is free::

        try:
            manager.start_session_nowait(handler)
        except ts.CapacityError:
            return 503
    """

    reason = "capacity"

    def __init__(
        self, message: str = CAPACITY_MESSAGE, *, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)


def new_capacity_error() -> CapacityError:
    """``CapacityError()`` without running Python-level ``__init__`` code.

    Refusal at capacity is a hot path under overload; ``BaseException.__new__``
    already stores the message in ``args``, and ``reason`` is the class default.
    """
    return CapacityError.__new__(CapacityError, CAPACITY_MESSAGE)


@final
class ShuttingDownError(RejectedError):
    """The manager is draining or closed, so it admits nothing new."""

    reason = "shutting_down"


@final
class MetadataError(RejectedError):
    """Session metadata is not a JSON-encodable mapping, or is over a byte limit."""

    reason = "metadata"


@final
class SessionTimeout(SessionError, trio.TooSlowError):
    """The session hit its own deadline (outcome ``TIMEOUT``).

    It is a :exc:`trio.TooSlowError` too, so code written for
    :func:`trio.fail_after` handles it unchanged.
    """


@final
class SessionCancelled(SessionError):
    """The session was cancelled by shutdown or :meth:`Session.cancel`.

    Its outcome is ``CANCELLED``.

    It is an ordinary exception, never a :exc:`trio.Cancelled`: waiting on a
    cancelled session does not cancel the waiter.
    """
