"""Fixed-memory latency summaries: a log-bucketed sketch with bounded relative error,
and exact counts per histogram bin for Prometheus-style buckets.

Memory depends on the range of the values (a few hundred buckets per decade at
most), never on how many values were recorded.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from itertools import compress, pairwise
from typing import final

import attrs

__all__ = ["DEFAULT_BUCKETS", "LatencySummary"]

# Relative accuracy of every quantile: a value v is reported within v * _ALPHA.
_ALPHA = 0.01
_GAMMA = (1 + _ALPHA) / (1 - _ALPHA)
_INV_LOG_GAMMA = 1 / math.log(_GAMMA)
# Below this (1 ns) a duration is indistinguishable from zero for any user.
_MIN_VALUE = 1e-9
_ceil = math.ceil
_log = math.log
_bisect = bisect_left

# The bin edges counted exactly: every number with at most two significant
# digits from 10 us to 100,000 s (0.005, 0.025, 0.075, 1.5, 30, 120 ...), so any
# bucket layout people write by hand is exact. Parsed from decimal strings, they
# are the very floats a user's literals are (float("75e-4") == 0.0075).
_BOUNDS: tuple[float, ...] = (
    *(
        float(f"{digits}e{exponent}")
        for exponent in range(-6, 4)
        for digits in range(10, 100)
    ),
    1e5,
)
_EDGES = frozenset(_BOUNDS)

# prometheus_client's own default (and OpenTelemetry's, in seconds): 5 ms to
# 10 s, the span of request latencies, so dashboards built for either fit.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


def check_buckets(buckets: Iterable[float], name: str = "buckets") -> tuple[float, ...]:
    """Return ``buckets`` as a tuple of floats once they are counted bin edges.

    A trailing ``inf`` is dropped (the ``+Inf`` bucket is always there).

    Raises:
      ValueError: a bound is not a bin edge, or the bounds are not increasing.
      TypeError: a bound is not a real number.
    """
    bounds = []
    for bound in buckets:
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise TypeError(f"{name} must be numbers, got {bound!r}")
        bounds.append(float(bound))
    if bounds and bounds[-1] == math.inf:
        bounds.pop()
    for bound in bounds:
        if bound not in _EDGES:
            raise ValueError(
                f"{name}: {bound!r} is not a bound the manager counts; use numbers"
                " with at most two significant digits from 1e-05 to 100000 seconds"
            )
    if any(low >= high for low, high in pairwise(bounds)):
        raise ValueError(f"{name} must be in increasing order, got {bounds!r}")
    return tuple(bounds)


@final
@attrs.frozen
class LatencySummary:
    """Count, sum, mean, quantiles, maximum and histogram of durations, in seconds.

    Quantiles are approximate, within 2% of the true value (1% by
    construction); ``count``, ``sum``, ``mean``, ``min``, ``max`` and the
    histogram (:meth:`buckets`) are exact. Every figure except ``count`` and
    ``sum`` is ``None`` while ``count == 0``::

        durations = manager.statistics().durations
        print(f"p99 {durations.p99 * 1000:.1f} ms over {durations.count}")
        fast = dict(durations.buckets([0.1]))[0.1]   # how many took <= 100 ms

    Attributes:
      count: Number of recorded durations.
      mean: Arithmetic mean.
      p50: Median.
      p90: 90th percentile.
      p99: 99th percentile.
      max: Largest duration.
      min: Smallest duration.
      sum: Sum of the durations.
      bins: The durations counted per bin, as ``(upper bound, count)`` pairs
        for the bins that hold any, in increasing order: a bin holds the values
        above the previous bin edge and at most its own. Bin edges are the
        numbers with at most two significant digits from 1e-05 to 100000;
        values beyond the last are in ``count`` only. Read it through
        :meth:`buckets`.
    """

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None
    min: float | None = None
    sum: float = 0.0
    bins: tuple[tuple[float, int], ...] = attrs.field(default=(), repr=False)

    def buckets(
        self, bounds: Iterable[float] = DEFAULT_BUCKETS
    ) -> tuple[tuple[float, int], ...]:
        """Return cumulative counts at ``bounds``, as Prometheus' ``le`` buckets.

        Each pair is ``(bound, number of durations <= bound)``, exactly; the
        last pair is ``(inf, count)``::

            for le, count in manager.statistics().durations.buckets([0.1, 1]):
                print(f"<= {le} s: {count}")

        Args:
          bounds: Increasing upper bounds in seconds, each a number with at
            most two significant digits from 1e-05 to 100000 (``0.005``,
            ``0.25``, ``1.5``, ``30``, ``120`` ...); the default is
            :data:`trio_sessions.prometheus.DEFAULT_BUCKETS`.

        Raises:
          ValueError: a bound is not one of those numbers, or the bounds are
            not increasing.
        """
        edges = check_buckets(bounds, "bounds")
        result = []
        bins = iter(self.bins)
        upper, count = next(bins, (math.inf, 0))
        seen = 0
        for edge in edges:
            while upper <= edge:
                seen += count
                upper, count = next(bins, (math.inf, 0))
            result.append((edge, seen))
        result.append((math.inf, self.count))
        return tuple(result)


class LatencyRecorder:
    """Accumulates durations in O(1) per value: in log-spaced buckets (a DDSketch)
    for the quantiles, and in exact bins for the histogram."""

    __slots__ = ("_buckets", "_counts", "_max", "_min", "_total", "_zeros")

    def __init__(self) -> None:
        self._buckets: defaultdict[int, int] = defaultdict(int)
        # One slot per bin edge, and the last for values beyond them all.
        self._counts = [0] * (len(_BOUNDS) + 1)
        self._zeros = 0
        self._total = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def count(self) -> int:
        """Number of values recorded (summed when asked: record() is the hot path)."""
        return sum(self._counts)

    @property
    def total(self) -> float:
        """Sum of the values recorded."""
        return self._total

    def record(self, value: float) -> None:
        self._total += value
        # bisect_left finds the first edge >= value: Prometheus' "le" exactly.
        self._counts[_bisect(_BOUNDS, value)] += 1
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        if value < _MIN_VALUE:
            self._zeros += 1
        else:
            # A defaultdict: the increment costs fewer bytecodes than .get().
            self._buckets[_ceil(_log(value) * _INV_LOG_GAMMA)] += 1

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
        counts = self._counts
        return LatencySummary(
            count=count,
            mean=self._total / count,
            p50=self.quantile(0.50, count),
            p90=self.quantile(0.90, count),
            p99=self.quantile(0.99, count),
            max=self._max,
            min=self._min,
            sum=self._total,
            # The non-empty bins, in C: compress() stops at the last edge, and
            # zip with it, so the overflow slot is left out (it is count minus
            # the rest).
            bins=tuple(
                zip(compress(_BOUNDS, counts), filter(None, counts), strict=False)
            ),
        )
