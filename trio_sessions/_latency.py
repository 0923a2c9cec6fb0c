"""Fixed-memory latency summaries: a log-bucketed sketch with bounded relative error.

Memory depends on the range of the values (a few hundred buckets per decade at
most), never on how many values were recorded.
"""

from __future__ import annotations

import math
from typing import final

import attrs

__all__ = ["LatencySummary"]

# Relative accuracy of every quantile: a value v is reported within v * _ALPHA.
_ALPHA = 0.01
_GAMMA = (1 + _ALPHA) / (1 - _ALPHA)
_INV_LOG_GAMMA = 1 / math.log(_GAMMA)
# Below this (1 ns) a duration is indistinguishable from zero for any user.
_MIN_VALUE = 1e-9
_ceil = math.ceil
_log = math.log


@final
@attrs.frozen
class LatencySummary:
    """Count, mean, quantiles and maximum of a set of durations, in seconds.

    Quantiles are approximate, within 2% of the true value (1% by
    construction); ``count``, ``mean``, ``min`` and ``max`` are exact. Every
    figure except ``count`` is ``None`` while ``count == 0``::

        durations = manager.statistics().durations
        print(f"p99 {durations.p99 * 1000:.1f} ms over {durations.count}")

    Attributes:
      count: Number of recorded durations.
      mean: Arithmetic mean.
      p50: Median.
      p90: 90th percentile.
      p99: 99th percentile.
      max: Largest duration.
      min: Smallest duration.
    """

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    min: float | None = None


class LatencyRecorder:
    """Accumulates durations in log-spaced buckets (a DDSketch) in O(1) per value."""

    __slots__ = ("_buckets", "_max", "_min", "_total", "_zeros")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self._zeros = 0
        self._total = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def count(self) -> int:
        """Number of values recorded (summed when asked: record() is the hot path)."""
        return self._zeros + sum(self._buckets.values())

    def record(self, value: float) -> None:
        self._total += value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        if value < _MIN_VALUE:
            self._zeros += 1
        else:
            index = _ceil(_log(value) * _INV_LOG_GAMMA)
            buckets = self._buckets
            buckets[index] = buckets.get(index, 0) + 1

    def quantile(self, q: float, count: int | None = None) -> float | None:
        if count is None:
            count = self.count
        if count == 0:
            return None
        # Nearest rank: the smallest value with at least ceil(q * count) values <= it.
        rank = max(1, math.ceil(q * count))
        if rank <= self._zeros:
            return max(self._min, 0.0)
        seen = self._zeros
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                estimate = 2 * _GAMMA**index / (_GAMMA + 1)
                return min(max(estimate, self._min), self._max)
        return self._max  # pragma: no cover - the ranks always add up to count

    def summary(self) -> LatencySummary:
        count = self.count
        if count == 0:
            return LatencySummary(0, None, None, None, None, None, None)
        return LatencySummary(
            count=count,
            mean=self._total / count,
            p50=self.quantile(0.50, count),
            p90=self.quantile(0.90, count),
            p99=self.quantile(0.99, count),
            max=self._max,
            min=self._min,
        )
