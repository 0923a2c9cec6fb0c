"""The validated, immutable configuration of a session manager."""

from __future__ import annotations

import math
from typing import Any, final

import attrs

__all__ = ["SessionConfig"]


def _check_int(minimum: int, *, optional: bool = False) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            kind = "an int or None" if optional else "an int"
            raise TypeError(
                f"SessionConfig.{attribute.name} must be {kind}, "
                f"not {type(value).__name__} ({value!r})"
            )
        if value < minimum:
            raise ValueError(
                f"SessionConfig.{attribute.name} must be >= {minimum}, got {value!r}"
            )

    return check


def _check_seconds(*, optional: bool) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "a number of seconds or None" if optional else "a number of seconds"
            raise TypeError(
                f"SessionConfig.{attribute.name} must be {kind}, "
                f"not {type(value).__name__} ({value!r})"
            )
        if math.isnan(value) or value < 0:
            raise ValueError(
                f"SessionConfig.{attribute.name} must be >= 0 seconds, got {value!r}"
            )

    return check


@final
@attrs.frozen
class SessionConfig:
    """How many sessions a manager runs, for how long, and how it shuts down.

    Every field is validated at construction; a bad value raises
    :exc:`TypeError` or :exc:`ValueError` naming the field::

        config = ts.SessionConfig(max_sessions=50, request_timeout=10)
        async with ts.open_session_manager(config) as manager:
            ...

    Attributes:
      max_sessions: Sessions running at once (tokens of the manager's
        :class:`trio.CapacityLimiter`), at least 1.
      request_timeout: Default deadline of each session in seconds, counted from
        the start of its run; ``None`` means no deadline.
      shutdown_timeout: How long :meth:`SessionManager.shutdown` lets active
        sessions finish on their own before cancelling them.
      max_waiting: Sessions allowed to queue (FIFO) for a slot; 0 rejects at once.
      wait_timeout: Longest wait in that queue; ``None`` waits until a slot frees
        or shutdown starts.
      max_session_metadata_bytes: Largest metadata of one session, in bytes of
        compact UTF-8 JSON; ``None`` for no limit.
      max_metadata_bytes: Budget of metadata bytes over all live sessions;
        ``None`` for no limit.
      shutdown_grace: Extra seconds shutdown waits, after cancelling, for
        cancelled sessions to unwind before it reports the ones that shield
        themselves as stuck (see :attr:`ShutdownReport.stuck`).
    """

    max_sessions: int = attrs.field(default=200, validator=_check_int(1))
    request_timeout: float | None = attrs.field(
        default=30.0, validator=_check_seconds(optional=True)
    )
    shutdown_timeout: float = attrs.field(
        default=5.0, validator=_check_seconds(optional=False)
    )
    max_waiting: int = attrs.field(default=0, validator=_check_int(0))
    wait_timeout: float | None = attrs.field(
        default=None, validator=_check_seconds(optional=True)
    )
    max_session_metadata_bytes: int | None = attrs.field(
        default=10_240, validator=_check_int(0, optional=True)
    )
    max_metadata_bytes: int | None = attrs.field(
        default=None, validator=_check_int(0, optional=True)
    )
    shutdown_grace: float = attrs.field(
        default=1.0, validator=_check_seconds(optional=False)
    )
