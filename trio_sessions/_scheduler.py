"""Who gets the next slot: the queue by priority, limits per key, the reserved share.

A manager that queues callers, limits keys, reserves a share of its capacity
or follows a limit controller admits through a :class:`Scheduler`; one that
does none of these admits through its limiter alone, and pays for nothing here.
"""

from __future__ import annotations

import itertools
import math
from bisect import insort
from collections.abc import Mapping
from typing import Any, Final, Literal, final

import attrs
import trio

from ._config import SessionConfig
from ._session import Session

__all__ = ["NO_KEYS", "KeyStatistics", "Scheduler"]

Blocker = Literal["capacity", "key_capacity"] | None
_CAPACITY: Final = "capacity"
_KEY_CAPACITY: Final = "key_capacity"


@final
@attrs.frozen
class KeyStatistics:
    """The sessions of one ``key=`` (or of all the keys not tracked by name).

    Found in :attr:`SessionStatistics.keys` and
    :attr:`SessionStatistics.other_keys`::

        tenant = manager.statistics().keys.get("tenant-a")
        if tenant is not None:
            print(f"tenant-a: {tenant.active} running, {tenant.rejected} refused")

    Attributes:
      active: Sessions of the key running now.
      admitted: Sessions of the key admitted since it was tracked.
      rejected: Callers of the key refused because it was at its limit
        (``"key_capacity"``), since it was tracked.
    """

    active: int
    admitted: int
    rejected: int


NO_KEYS: Final = KeyStatistics(0, 0, 0)


@final
class _Waiter:
    """A caller queued for a slot, on behalf of its session."""

    __slots__ = ("key", "priority", "session", "task")

    def __init__(self, session: Session[Any], key: str | None, priority: int) -> None:
        self.session = session
        self.key = key
        self.priority = priority
        self.task = trio.lowlevel.current_task()


@final
class _KeyTable:
    """Admitted and refused counts of the busiest keys, in bounded memory.

    At most ``size`` keys are counted by name; when a new key comes and the
    table is full, the quietest key's counts move to :attr:`other` and the
    newcomer takes its place (busy keys stay, one-off keys churn), so the
    counts over all keys always add up.
    """

    __slots__ = ("_size", "other", "tracked")

    def __init__(self, size: int) -> None:
        self._size = size
        self.tracked: dict[str, list[int]] = {}
        self.other = [0, 0]

    def counts(self, key: str) -> list[int]:
        """The ``[admitted, rejected]`` counts of ``key``, tracked from now if new."""
        counts = self.tracked.get(key)
        if counts is not None:
            return counts
        if not self._size:
            return self.other
        tracked = self.tracked
        if len(tracked) >= self._size:
            quietest = min(tracked, key=lambda name: sum(tracked[name]))
            admitted, rejected = tracked.pop(quietest)
            self.other[0] += admitted
            self.other[1] += rejected
        counts = tracked[key] = [0, 0]
        return counts


@final
class Scheduler:
    """Decides which caller takes a token of the manager's limiter, and when.

    Queued callers are handed a token, in the step one frees, by priority
    (higher first) and then in arrival order, skipping a caller whose key is
    at its limit; a caller below ``reserved_priority`` may not take the last
    ``reserved_share`` of the capacity. Checking and taking happen in one
    step of Trio's single-threaded scheduler, so no key can ever go over its
    limit and the keys together never over the manager's.
    """

    __slots__ = (
        "_active_by_key",
        "_key_limits",
        "_key_of",
        "_keys",
        "_limiter",
        "_order",
        "_per_key",
        "_queue",
        "_reserved_priority",
        "_share",
    )

    def __init__(self, limiter: trio.CapacityLimiter, config: SessionConfig) -> None:
        self._limiter = limiter
        self._per_key = config.max_sessions_per_key
        self._key_limits: Mapping[str, int] = config.key_limits
        self._share = config.reserved_share
        self._reserved_priority = config.reserved_priority
        # (-priority, arrival, waiter): sorted, so the first is served first.
        self._queue: list[tuple[int, int, _Waiter]] = []
        self._order = itertools.count()
        # Only keys with sessions running: memory bounded by the active count.
        self._active_by_key: dict[str, int] = {}
        self._key_of: dict[int, str] = {}
        self._keys = _KeyTable(config.tracked_keys)

    def reserved(self) -> int:
        """Tokens only high-priority callers may take now (never all of them)."""
        total = self._limiter.total_tokens
        assert isinstance(total, int)
        if not self._share:
            return 0
        return min(total - 1, math.ceil(total * self._share))

    def blocker(self, key: str | None, priority: int) -> Blocker:
        """Why a caller of ``key`` and ``priority`` may not take a token now, if so."""
        limiter = self._limiter
        free = limiter.available_tokens
        if free <= 0:
            return _CAPACITY
        if (
            self._share
            and priority < self._reserved_priority
            and free <= self.reserved()
        ):
            return _CAPACITY
        if key is not None:
            limit = self._key_limits.get(key, self._per_key)
            if limit is not None and self._active_by_key.get(key, 0) >= limit:
                return _KEY_CAPACITY
        return None

    def key_limit(self, key: str) -> int | None:
        """The limit of ``key``'s sessions, if it has one."""
        return self._key_limits.get(key, self._per_key)

    def take(self, session: Session[Any], key: str | None) -> None:
        """Give ``session`` a token, which :meth:`blocker` said it may take."""
        self._limiter.acquire_on_behalf_of_nowait(session)
        if key is not None:
            self._active_by_key[key] = self._active_by_key.get(key, 0) + 1
            self._key_of[session._number] = key
            self._keys.counts(key)[0] += 1

    def refused(self, key: str | None) -> None:
        """Count a refusal of a caller because its key was at its limit."""
        if key is not None:
            self._keys.counts(key)[1] += 1

    def released(self, session: Session[Any]) -> None:
        """``session`` gave its token back: uncount it, and serve the queue."""
        key = self._key_of.pop(session._number, None)
        if key is not None:
            left = self._active_by_key[key] - 1
            if left:
                self._active_by_key[key] = left
            else:
                del self._active_by_key[key]
        if self._queue:
            self.hand_over()

    def hand_over(self) -> None:
        """Give free tokens to queued callers, by priority, then arrival."""
        queue = self._queue
        index = 0
        while index < len(queue):
            waiter = queue[index][2]
            why = self.blocker(waiter.key, waiter.priority)
            if why is _KEY_CAPACITY:
                index += 1  # its key is full: the callers behind it may go
                continue
            if why is not None:
                # No token, or only reserved ones and every caller behind has
                # a priority no higher than this one's.
                return
            del queue[index]
            self.take(waiter.session, waiter.key)
            trio.lowlevel.reschedule(waiter.task)

    async def wait(self, session: Session[Any], key: str | None, priority: int) -> None:
        """Queue until handed a token on behalf of ``session``; a checkpoint.

        Cancelled while queued, it leaves the queue holding nothing.
        """
        entry = (-priority, next(self._order), _Waiter(session, key, priority))
        insort(self._queue, entry)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._queue.remove(entry)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def key_statistics(self) -> tuple[dict[str, KeyStatistics], KeyStatistics]:
        """The tracked keys' statistics, and those of all the others added up."""
        active = self._active_by_key
        named = {
            key: KeyStatistics(active.get(key, 0), admitted, rejected)
            for key, (admitted, rejected) in self._keys.tracked.items()
        }
        others_active = sum(active.values()) - sum(s.active for s in named.values())
        admitted, rejected = self._keys.other
        return named, KeyStatistics(others_active, admitted, rejected)
