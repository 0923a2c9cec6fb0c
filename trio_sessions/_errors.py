"""The exceptions trio_sessions raises.

Every error derives from :class:`SessionError`; refusals at admission derive from
:class:`RejectedError` and carry the machine-readable ``reason`` that statistics count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import trio

if TYPE_CHECKING:
    from ._retry_after import RetryAfter

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
    when no slot is free; with ``reason == "key_capacity"`` when the caller's
    ``key=`` was at its own limit. :attr:`retry_after` says when to try again::

        try:
            manager.start_session_nowait(handler)
        except ts.CapacityError as exc:
            return 503, {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    """

    reason = "capacity"
    #: The key whose limit was reached (``reason == "key_capacity"``), else None.
    key: str | None = None
    # A refusal by a manager carries its estimator, read only if retry_after
    # is (refusing at capacity is a hot path under overload); one made by
    # hand carries the figure it was given.
    _retry_after: float | None = None
    _estimator: RetryAfter | None = None

    def __init__(
        self,
        message: str = CAPACITY_MESSAGE,
        *,
        reason: str | None = None,
        key: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        if key is not None:
            self.key = key
        if retry_after is not None:
            self._retry_after = retry_after

    @property
    def retry_after(self) -> float | None:
        """Seconds after which a slot should be free for a caller arriving now.

        The refusing manager's estimate, made when first read, from the
        recent sessions' run times, the callers queued and the limit (of the
        key, for ``"key_capacity"``); ``None`` for an error made by hand
        without one. Send it as ``Retry-After`` in whole seconds, at least 1.
        """
        if self._retry_after is None and self._estimator is not None:
            self._retry_after = self._estimator.estimate(self.key)
        return self._retry_after


def new_capacity_error(estimator: RetryAfter | None = None) -> CapacityError:
    """``CapacityError()`` without running Python-level ``__init__`` code.

    Refusal at capacity is a hot path under overload; ``BaseException.__new__``
    already stores the message in ``args``, and ``reason`` is the class default.
    """
    error = CapacityError.__new__(CapacityError, CAPACITY_MESSAGE)
    error._estimator = estimator
    return error


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
