"""The validated, immutable configuration of a session manager."""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, final

import attrs

from ._validate import check_count, check_seconds

__all__ = ["CONFIG_DEFAULT", "ConfigDefault", "SessionConfig", "resolve_config"]


@final
class ConfigDefault(enum.Enum):
    """The type of :data:`CONFIG_DEFAULT`, for annotations."""

    CONFIG_DEFAULT = "the manager's request_timeout"

    def __repr__(self) -> str:
        return "CONFIG_DEFAULT"


CONFIG_DEFAULT: Final = ConfigDefault.CONFIG_DEFAULT
"""The default of every ``timeout=`` argument: the manager's ``request_timeout``.

Pass it to say so explicitly, or ``None`` for no deadline::

    await manager.run(handle, request, timeout=ts.CONFIG_DEFAULT)
"""


def _count(minimum: int, *, optional: bool = False) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_count(
            value, f"SessionConfig.{attribute.name}", minimum=minimum, optional=optional
        )

    return check


def _seconds(*, optional: bool) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        check_seconds(value, f"SessionConfig.{attribute.name}", optional=optional)

    return check


def _key_limits(value: Any) -> Any:
    """A private read-only copy of a mapping of per-key limits (checked later)."""
    if isinstance(value, Mapping):
        return MappingProxyType(dict(value))
    return value


def _check_key_limits(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if not isinstance(value, Mapping):
        raise TypeError(
            "SessionConfig.key_limits must be a mapping of key to limit, "
            f"not {type(value).__name__}"
        )
    for key, limit in value.items():
        if not isinstance(key, str):
            raise TypeError(f"SessionConfig.key_limits: keys must be str, not {key!r}")
        check_count(limit, f"SessionConfig.key_limits[{key!r}]", minimum=1)


def _check_share(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"SessionConfig.reserved_share must be a number, not {value!r}")
    if not 0 <= value < 1:
        raise ValueError(
            f"SessionConfig.reserved_share must be >= 0 and < 1, got {value!r}"
        )


def _check_priority(
    instance: object, attribute: attrs.Attribute[Any], value: object
) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"SessionConfig.{attribute.name} must be an int, not {value!r}")


def _longer_than_any_deadline(value: Any) -> Any:
    """Store an int too large for a float as infinity, as check_seconds reads it."""
    if isinstance(value, int) and value > sys.float_info.max:
        return math.inf
    return value


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
      max_sessions_per_key: Sessions of one ``key=`` running at once (within
        ``max_sessions``); ``None`` for no limit per key.
      key_limits: Limits for named keys, overriding ``max_sessions_per_key``
        (``{"tenant-a": 20}``).
      tracked_keys: Keys reported by name in :attr:`SessionStatistics.keys`
        (the busiest); the others are added up under ``"other"``.
      reserved_share: Share of the capacity, from 0 to below 1, that only
        callers with ``priority >= reserved_priority`` may take, so health
        checks and paying customers get through a saturated manager.
      reserved_priority: The lowest ``priority=`` that may use the reserved share.
    """

    max_sessions: int = attrs.field(default=200, validator=_count(1))
    request_timeout: float | None = attrs.field(
        default=30.0,
        converter=_longer_than_any_deadline,
        validator=_seconds(optional=True),
    )
    shutdown_timeout: float = attrs.field(
        default=5.0,
        converter=_longer_than_any_deadline,
        validator=_seconds(optional=False),
    )
    max_waiting: int = attrs.field(default=0, validator=_count(0))
    wait_timeout: float | None = attrs.field(
        default=None,
        converter=_longer_than_any_deadline,
        validator=_seconds(optional=True),
    )
    max_session_metadata_bytes: int | None = attrs.field(
        default=10_240, validator=_count(0, optional=True)
    )
    max_metadata_bytes: int | None = attrs.field(
        default=None, validator=_count(0, optional=True)
    )
    shutdown_grace: float = attrs.field(
        default=1.0,
        converter=_longer_than_any_deadline,
        validator=_seconds(optional=False),
    )
    max_sessions_per_key: int | None = attrs.field(
        default=None, validator=_count(1, optional=True)
    )
    key_limits: Mapping[str, int] = attrs.field(
        factory=dict, converter=_key_limits, validator=_check_key_limits
    )
    tracked_keys: int = attrs.field(default=20, validator=_count(0))
    reserved_share: float = attrs.field(default=0.0, validator=_check_share)
    reserved_priority: int = attrs.field(default=1, validator=_check_priority)


def resolve_config(
    config: SessionConfig | None, overrides: Mapping[str, Any]
) -> SessionConfig:
    """The config that ``config`` plus keyword ``overrides`` describe, validated.

    ``open_session_manager`` and ``SessionMiddleware`` both take a config, its
    fields as keywords, or both (the keywords override the config's fields).

    Raises:
      TypeError: ``config`` is not a SessionConfig, or an unknown field.
      ValueError: a field's value is invalid (the message names it).
    """
    if config is None:
        return SessionConfig(**overrides)
    if not isinstance(config, SessionConfig):
        raise TypeError(
            f"config must be a SessionConfig or None, not {type(config).__name__}"
        )
    return attrs.evolve(config, **overrides) if overrides else config
