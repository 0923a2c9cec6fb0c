"""What the fleet limit reports: its statistics and its refusal when Redis is down."""

from __future__ import annotations

from typing import final

import attrs

from .._errors import RejectedError

__all__ = ["BackendUnavailableError", "RedisLimitStatistics"]


@final
class BackendUnavailableError(RejectedError):
    """Redis did not answer, so the fleet-wide limit could not be checked.

    Raised at admission by a :class:`RedisSessionLimit` with
    ``on_unavailable="closed"`` (the default), and counted under the reason
    ``"backend_unavailable"``::

        try:
            await manager.run(handle, request)
        except BackendUnavailableError:
            return 503  # the fleet budget is unknown: refuse rather than overrun it
    """

    reason = "backend_unavailable"


@final
@attrs.frozen
class RedisLimitStatistics:
    """A snapshot of one :class:`RedisSessionLimit`: its leases and its view of Redis.

    ``global_count`` is the fleet's lease count as of the last reply from Redis
    (each admission and each renewal, at least every ``ttl / 3`` seconds), so it
    can be exported as a gauge without any I/O::

        fleet = guard.statistics().global_count  # None until Redis first answered

    Attributes:
      limit: the fleet-wide limit.
      key: the Redis key of the lease set.
      held: leases this process holds now.
      unleased: sessions of this process running without a lease (admitted
        while Redis was unreachable under ``on_unavailable="open"``, or whose
        lease was lost under that policy).
      global_count: leases held by the whole fleet at ``global_count_at``
        (``None`` before the first reply).
      global_count_at: :func:`trio.current_time` of that reply, or ``None``.
      available: whether the last call to Redis succeeded.
      acquired: leases granted, all time.
      refused_capacity: admissions refused because the fleet was full.
      refused_unavailable: admissions refused because Redis did not answer.
      admitted_unleased: admissions let through without a lease (policy "open").
      lost: leases found expired or removed before their session ended.
      backend_errors: calls to Redis that failed or timed out, all time.
      pending_releases: released leases not yet removed from Redis.
      acquire_calls: acquire scripts sent, all time; each admits a whole batch
        of callers and carries the releases waiting, so it is below
        ``acquired + refused_capacity`` under concurrency.
      release_calls: releases sent alone (no acquire came within
        ``release_delay`` to carry them), all time.
    """

    limit: int
    key: str
    held: int
    unleased: int
    global_count: int | None
    global_count_at: float | None
    available: bool
    acquired: int
    refused_capacity: int
    refused_unavailable: int
    admitted_unleased: int
    lost: int
    backend_errors: int
    pending_releases: int
    acquire_calls: int
    release_calls: int
