"""Redis under Sentinel for the fleet limit: a primary client that sees failovers.

:func:`sentinel_primary` builds the coredis client of
:meth:`RedisSessionLimit.from_sentinel`; its :class:`FailoverWatch` notes each
change of primary, after which the guard grants no lease for a quarantine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Iterable
from contextlib import asynccontextmanager
from typing import final

import coredis
import coredis.exceptions
import trio
from coredis.connection import TCPLocation
from coredis.pool import SentinelConnectionPool
from coredis.typing import Self

__all__ = ["FailoverWatch", "sentinel_primary"]

logger = logging.getLogger("trio_sessions.redis")


@final
class FailoverWatch:
    """When the primary last changed, and whether admission is still quarantined.

    A new primary may lack the last leases the old one acknowledged (Redis
    replicates asynchronously), while their sessions still run. Under
    ``on_unavailable="closed"`` each such session ends by ``ttl`` after the
    old primary's death at the latest, so granting nothing for ``ttl`` after
    the change is seen keeps the fleet within its limit.
    """

    __slots__ = ("changed_at", "changes", "quarantine")

    def __init__(self, quarantine: float) -> None:
        self.quarantine = quarantine
        # trio time from which the quarantine counts; None: no change seen.
        self.changed_at: float | None = None
        self.changes = 0

    def primary_changed(self, age: float = 0.0) -> None:
        """Note a primary that took over ``age`` seconds ago (0: just now)."""
        self.changes += 1
        self.changed_at = trio.current_time() - age
        if self.quarantine > age:
            logger.warning(
                "trio_sessions: the Redis primary changed; no new fleet leases "
                "for %.3g s (leases the old primary had not replicated may be lost)",
                self.quarantine - age,
            )

    def quarantined(self) -> str | None:
        """Why no lease may be granted now, or ``None`` if one may."""
        if self.changed_at is None:
            return None
        left = self.changed_at + self.quarantine - trio.current_time()
        if left <= 0:
            return None
        return (
            f"the Redis primary changed: no new leases for {left:.3g} s, "
            "until any lease lost in the failover has lapsed"
        )


class _PrimaryPool(SentinelConnectionPool):
    """The stock Sentinel pool, telling a :class:`FailoverWatch` of new primaries."""

    watch: FailoverWatch | None = None

    async def get_primary_location(self) -> TCPLocation:
        before = self.location
        location = await super().get_primary_location()
        if self.watch is not None:
            if before is None:
                # The first primary of this process: it may itself be new.
                age = await self._age(location)
                if age < self.watch.quarantine:
                    self.watch.primary_changed(age)
            elif location != before:
                self.watch.primary_changed()
        return location

    async def _age(self, location: TCPLocation) -> float:
        """Seconds since the sentinels took ``location`` as primary; 0 if unsure.

        Sentinel reports ``role-reported-time``: how long ago it recorded the
        current primary (reset by a failover, or by a restart of the sentinel,
        which errs on the safe side); a ``config-epoch`` of 0 means no failover
        ever happened.
        """
        sentinel = self.sentinel_manager.sentinels[0]  # the one that answered
        try:
            state = await sentinel.sentinel_master(self.service_name)
        except (coredis.exceptions.RedisError, OSError, TimeoutError):
            return 0.0
        ip, port = state.get("ip"), state.get("port")
        if (_text(ip), _text(port)) != (location.host, str(location.port)):
            return 0.0  # a failover under way
        if _text(state.get("config-epoch")) == "0":
            return math.inf  # the primary it was configured with: never promoted
        try:
            return max(0.0, int(_text(state["role-reported-time"])) / 1000)
        except (KeyError, ValueError):
            return 0.0


class _SentinelPrimary(coredis.Redis[bytes]):
    """A primary client that also holds its Sentinel's connections open."""

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        pool = self.connection_pool
        assert isinstance(pool, _PrimaryPool)
        async with pool.sentinel_manager, super().__asynccontextmanager__():
            yield self


def sentinel_primary(
    sentinels: coredis.Sentinel[bytes] | Iterable[tuple[str, int]],
    service_name: str,
    *,
    timeout: float,
    quarantine: float,
) -> tuple[coredis.Redis[bytes], FailoverWatch]:
    """A client of ``service_name``'s primary, as the sentinels name it, and its watch.

    ``sentinels`` is a :class:`coredis.Sentinel` (built with any password or
    TLS options), or the ``(host, port)`` of each sentinel; then every
    connection, to a sentinel or to Redis, connects and reads within ``timeout``.
    """
    if not isinstance(service_name, str) or not service_name:
        raise ValueError(f"service_name must be a non-empty str, got {service_name!r}")
    if isinstance(sentinels, coredis.Sentinel):
        sentinel = sentinels
    else:
        locations = [TCPLocation(str(host), int(port)) for host, port in sentinels]
        if not locations:
            raise ValueError("sentinels must name at least one (host, port)")
        sentinel = coredis.Sentinel(
            locations,
            sentinel_kwargs={"connect_timeout": timeout, "stream_timeout": timeout},
            connect_timeout=timeout,
            stream_timeout=timeout,
        )
    client = sentinel.primary_for(
        service_name,
        redis_class=_SentinelPrimary,
        connection_pool_class=_PrimaryPool,
        connect_timeout=timeout,
        stream_timeout=timeout,
    )
    watch = FailoverWatch(quarantine)
    pool = client.connection_pool
    assert isinstance(pool, _PrimaryPool)
    pool.watch = watch
    return client, watch


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
