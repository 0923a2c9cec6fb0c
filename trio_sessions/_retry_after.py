"""When to try again: a manager's estimate of how soon a slot frees.

:class:`RetryAfter` reads the manager's recent run times, its queue and its
limit only when a refusal's :attr:`~trio_sessions.CapacityError.retry_after`
is read, so refusing costs nothing more than before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

from ._latency import LatencyRecorder

__all__ = ["RetryAfter"]

# The run times that count are those of the sessions completed over the last
# one to two windows: recent enough to follow a changing workload, enough of
# them to be steady.
WINDOW = 5.0
# With no session completed yet, the best guess there is.
UNKNOWN = 1.0


@final
class RetryAfter:
    """Estimates when a slot frees, from recent run times, the queue and the limit.

    A slot frees on average every ``mean run time / limit`` seconds (Little's
    law: ``limit`` sessions in service, each for its run time), so a caller
    arriving behind ``waiting`` queued ones should find one after about
    ``(waiting + 1) * mean / limit``; for a key at its limit, after about
    ``mean / key limit``.
    """

    __slots__ = ("_durations", "_key_limit", "_limit", "_marks", "_now", "_waiting")

    def __init__(
        self,
        durations: LatencyRecorder,
        now: Callable[[], float],
        limit: Callable[[], int],
        waiting: Callable[[], int],
        key_limit: Callable[[str], int | None],
    ) -> None:
        self._durations = durations
        self._now = now
        self._limit = limit
        self._waiting = waiting
        self._key_limit = key_limit
        # (time, count, total) of the recorder at the start of the last two
        # windows: the mean since the older one is the recent mean.
        self._marks = [(now(), 0, 0.0), (now(), 0, 0.0)]

    def recent_mean(self) -> float:
        """The mean run time of the sessions completed in the last one to two windows.

        Falls back to the mean of all of them if none completed lately, and to
        one second if none ever did.
        """
        now = self._now()
        count = self._durations.count
        total = self._durations.total
        older, newer = self._marks
        if now - newer[0] >= WINDOW:
            older, newer = self._marks = [newer, (now, count, total)]
        recent = count - older[1]
        if recent > 0:
            return (total - older[2]) / recent
        return total / count if count else UNKNOWN

    def estimate(self, key: str | None = None) -> float:
        """Seconds until a slot should free for a caller (of ``key``) arriving now."""
        mean = self.recent_mean()
        if key is not None:
            key_limit = self._key_limit(key)
            if key_limit is not None:
                return mean / key_limit
        return mean * (self._waiting() + 1) / self._limit()
