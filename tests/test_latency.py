"""LatencySummary: quantiles within 2%, in memory that does not grow with count."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from trio_sessions._latency import LatencyRecorder

durations = st.floats(min_value=0, max_value=1e5, allow_nan=False, allow_infinity=False)


def exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@given(st.lists(durations, min_size=1, max_size=300))
def test_quantiles_within_two_percent(values: list[float]) -> None:
    """Each quantile is within 2% of the exact nearest-rank quantile."""
    recorder = LatencyRecorder()
    for value in values:
        recorder.record(value)
    summary = recorder.summary()
    assert summary.count == len(values)
    assert summary.max == max(values)
    assert summary.min == min(values)
    assert summary.mean is not None
    assert math.isclose(summary.mean, math.fsum(values) / len(values), rel_tol=1e-9)
    for q, estimate in ((0.5, summary.p50), (0.9, summary.p90), (0.99, summary.p99)):
        exact = exact_quantile(values, q)
        assert estimate is not None
        assert abs(estimate - exact) <= 0.02 * exact + 1e-9, (q, estimate, exact)


def test_memory_is_independent_of_count() -> None:
    """A million more values in the same range add no buckets."""
    recorder = LatencyRecorder()
    for i in range(10_000):
        recorder.record(0.001 + (i % 1000) * 1e-5)
    buckets = len(recorder._buckets)
    for i in range(1_000_000):
        recorder.record(0.001 + (i % 1000) * 1e-5)
    assert len(recorder._buckets) == buckets
    # Log-spaced buckets: about ln(max / min) / ln(gamma) of them, here ~121.
    gamma = 1.01 / 0.99
    assert buckets <= math.ceil(math.log(0.01099 / 0.001) / math.log(gamma)) + 1
    assert recorder.count == 1_010_000


def test_empty_summary_has_no_figures() -> None:
    """Before any value, every figure but count is None."""
    summary = LatencyRecorder().summary()
    assert summary.count == 0
    assert summary.p50 is summary.mean is summary.max is None
