"""The lease set in Redis: every call the fleet limit makes, each bounded in time.

:class:`LeaseStore` speaks to Redis for :class:`RedisSessionLimit`; it raises
:exc:`Unavailable` for any call that fails or does not answer in ``op_timeout``,
and keeps the last fleet count Redis reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, final

import coredis.exceptions
import trio
from coredis.client import Client
from coredis.commands.script import Script

from ._scripts import ACQUIRE, BATCH, RENEW, SWEEP

__all__ = ["LeaseStore", "Unavailable"]

logger = logging.getLogger("trio_sessions.redis")


class Unavailable(Exception):
    """Redis failed to answer a call in time (internal; never escapes)."""


@final
class LeaseStore:
    """The sorted set ``key`` of live leases, at most ``limit`` of them."""

    __slots__ = (
        "_acquire",
        "_client",
        "_key",
        "_limit",
        "_op_timeout",
        "_renew",
        "_sweep",
        "_ttl_ms",
        "available",
        "backend_errors",
        "global_count",
        "global_count_at",
    )

    def __init__(
        self, client: Client[Any], key: str, limit: int, ttl: float, op_timeout: float
    ) -> None:
        self._client = client
        self._key = key
        self._limit = limit
        self._ttl_ms = max(1, round(ttl * 1000))
        self._op_timeout = op_timeout
        self._acquire: Script[Any] = client.register_script(ACQUIRE)
        self._renew: Script[Any] = client.register_script(RENEW)
        self._sweep: Script[Any] = client.register_script(SWEEP)
        self.available = True
        self.backend_errors = 0
        self.global_count: int | None = None
        self.global_count_at: float | None = None

    async def acquire(self, member: str) -> bool:
        """Add ``member`` if the set holds fewer than ``limit`` live leases."""
        granted, count = await self._call(
            self._acquire(keys=[self._key], args=[member, self._limit, self._ttl_ms]),
            "acquire",
        )
        self._observe(int(count))
        return bool(granted)

    async def renew(self, members: Sequence[str]) -> tuple[int, list[str]]:
        """Extend ``members``; return the fleet's count and the members lost."""
        count, lost = await self._call(
            self._renew(keys=[self._key], args=[self._ttl_ms, *members]), "renew"
        )
        self._observe(int(count))
        return int(count), [_text(member) for member in lost]

    async def remove(self, members: Sequence[str]) -> None:
        """Remove released ``members`` (at most BATCH of them)."""
        assert len(members) <= BATCH
        await self._call(self._client.zrem(self._key, list(members)), "release")

    async def sweep(self, prefix: str) -> None:
        """Remove every lease whose member starts with ``prefix``."""
        await self._call(
            self._sweep(keys=[self._key], args=[prefix]), "sweep at shutdown"
        )

    async def _call(self, request: Any, what: str) -> Any:
        """Await one Redis request within ``op_timeout``, or raise Unavailable."""
        try:
            with trio.move_on_after(self._op_timeout):
                reply = await request
                if not self.available:
                    logger.info("trio_sessions: Redis answers again (%s)", self._key)
                self.available = True
                return reply
            error = f"no reply from Redis within {self._op_timeout:g} s"
        except (coredis.exceptions.RedisError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.backend_errors += 1
        if self.available:
            logger.warning("trio_sessions: Redis %s failed: %s", what, error)
        self.available = False
        raise Unavailable(error)

    def _observe(self, count: int) -> None:
        self.global_count = count
        self.global_count_at = trio.current_time()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
