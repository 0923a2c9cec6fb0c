"""Latency histograms of the HTTP load that merge exactly across client processes.

:class:`LatencyHistogram` counts microseconds in log-linear bins, as HdrHistogram
does; two of them add bin by bin, so the percentiles of a load driven by several
processes are those of all their requests. :class:`Percentiles` is what it reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, final

import attrs

__all__ = ["LatencyHistogram", "Percentiles"]

# Each power of two above 2 * _HALF µs is split into _HALF bins: every value is
# reported within 1 / (2 * _HALF), under 0.8%, of the truth; below, bins are
# 1 µs wide, and a value is reported within 0.5 µs.
_SHIFT = 6
_HALF = 1 << _SHIFT
_LINEAR = 2 * _HALF


def _middle(index: int) -> float:
    """The middle of bin ``index``, in microseconds."""
    if index < _LINEAR:
        return index + 0.5
    exponent = (index >> _SHIFT) - 1
    low = (index - (exponent << _SHIFT)) << exponent
    return low + (1 << exponent) / 2


@final
@attrs.frozen
class Percentiles:
    """Count, mean and percentiles of request latencies, in seconds.

    Percentiles are within 0.8% (or 0.5 µs) of the true value (the
    histogram's bins);
    ``count``, ``mean``, ``min`` and ``max`` are exact. Every figure except
    ``count`` is ``None`` while ``count == 0``::

        print(f"p99.9 {result.latency.p999 * 1000:.1f} ms")

    Attributes:
      count: Requests measured.
      mean: Arithmetic mean.
      min: Fastest.
      p50: Median.
      p90: 90th percentile.
      p99: 99th percentile.
      p999: 99.9th percentile.
      max: Slowest.
    """

    count: int
    mean: float | None
    min: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    p999: float | None
    max: float | None


# The quantiles Percentiles reports, by field name.
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "p999": 0.999}


@final
class LatencyHistogram:
    """Latencies in log-linear microsecond bins: O(1) to record, exact to merge.

    ::

        histogram = LatencyHistogram()
        histogram.record(0.0042)
        histogram.merge(LatencyHistogram.from_dict(other.as_dict()))
        print(histogram.percentiles().p99)
    """

    __slots__ = ("_bins", "_count", "_max", "_min", "_total")

    def __init__(self) -> None:
        self._bins: dict[int, int] = {}
        self._count = 0
        self._total = 0.0
        self._min = math.inf
        self._max = -math.inf

    @property
    def count(self) -> int:
        """Latencies recorded."""
        return self._count

    def record(self, seconds: float) -> None:
        """Count one latency (negative ones, from clock steps, count as 0)."""
        seconds = max(seconds, 0.0)
        self._count += 1
        self._total += seconds
        if seconds < self._min:
            self._min = seconds
        if seconds > self._max:
            self._max = seconds
        # The bin of the value in microseconds, here rather than in a function
        # of its own: this runs once per request of the HTTP load.
        micros = int(seconds * 1e6)
        if micros < _LINEAR:
            index = micros
        else:
            exponent = micros.bit_length() - _SHIFT - 1
            index = (exponent << _SHIFT) + (micros >> exponent)
        bins = self._bins
        bins[index] = bins.get(index, 0) + 1

    def merge(self, other: LatencyHistogram) -> None:
        """Add every latency ``other`` recorded to this histogram."""
        for index, count in other._bins.items():
            self._bins[index] = self._bins.get(index, 0) + count
        self._count += other._count
        self._total += other._total
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def quantile(self, q: float) -> float | None:
        """The smallest recorded latency with at least ``q`` of them at or under it."""
        if self._count == 0:
            return None
        rank = max(1, math.ceil(q * self._count))
        seen = 0
        for index in sorted(self._bins):
            seen += self._bins[index]
            if seen >= rank:
                return min(max(_middle(index) / 1e6, self._min), self._max)
        return self._max  # pragma: no cover - the bins add up to the count

    def percentiles(self) -> Percentiles:
        """The figures of every latency recorded so far."""
        if self._count == 0:
            return Percentiles(0, None, None, None, None, None, None, None)
        found = {name: self.quantile(q) for name, q in QUANTILES.items()}
        return Percentiles(
            count=self._count,
            mean=self._total / self._count,
            min=self._min,
            max=self._max,
            **found,
        )

    def as_dict(self) -> dict[str, Any]:
        """The histogram as JSON-encodable data, for :meth:`from_dict`."""
        return {
            "bins": [[index, count] for index, count in sorted(self._bins.items())],
            "total": self._total,
            "min": self._min if self._count else None,
            "max": self._max if self._count else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """The histogram that :meth:`as_dict` described."""
        histogram = cls()
        histogram._bins = {int(index): int(count) for index, count in data["bins"]}
        histogram._count = sum(histogram._bins.values())
        histogram._total = float(data["total"])
        if histogram._count:
            histogram._min = float(data["min"])
            histogram._max = float(data["max"])
        return histogram
