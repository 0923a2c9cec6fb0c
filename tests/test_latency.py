"""LatencySummary: quantiles within 2% and exact histogram buckets, in memory that
does not grow with count."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sessions._latency import DEFAULT_BUCKETS, LatencyRecorder

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


# Hand-written bucket layouts: any number with at most two significant digits
# from 1e-05 to 100000 is a bin edge.
edges = st.builds(
    lambda digits, exponent: float(f"{digits}e{exponent}"),
    st.integers(10, 99),
    st.integers(-6, 3),
)
# Values that land on edges, just beside them, and anywhere.
edge_values = st.one_of(
    edges,
    edges.map(lambda edge: math.nextafter(edge, math.inf)),
    edges.map(lambda edge: math.nextafter(edge, 0)),
    durations,
    st.floats(min_value=1e5, max_value=1e9),
)


@given(
    st.lists(edge_values, max_size=300),
    st.lists(edges, min_size=1, max_size=20, unique=True).map(sorted),
)
def test_buckets_are_exact(values: list[float], bounds: list[float]) -> None:
    """Every bucket counts exactly the values <= its bound, as Prometheus' le says."""
    recorder = LatencyRecorder()
    for value in values:
        recorder.record(value)
    summary = recorder.summary()
    expected = [(bound, sum(v <= bound for v in values)) for bound in bounds]
    assert summary.buckets(bounds) == (*expected, (math.inf, len(values)))
    assert math.isclose(summary.sum, math.fsum(values), rel_tol=1e-9, abs_tol=1e-9)
    # The sparse bins add up to the values within the last edge.
    assert sum(count for _, count in summary.bins) == sum(v <= 1e5 for v in values)


def test_default_buckets_are_prometheus_clients() -> None:
    """The default layout is prometheus_client's Histogram default, +Inf aside."""
    from prometheus_client import Histogram

    assert (*DEFAULT_BUCKETS, math.inf) == Histogram.DEFAULT_BUCKETS
    recorder = LatencyRecorder()
    for value in (0.005, 0.0051, 3.0, 11.0):
        recorder.record(value)
    cumulative = dict(recorder.summary().buckets())
    assert (cumulative[0.005], cumulative[0.01], cumulative[5.0]) == (1, 2, 3)
    assert (cumulative[10.0], cumulative[math.inf]) == (3, 4)


def test_empty_summary_has_zero_buckets() -> None:
    """Before any value every bucket is there, at zero (so rate() sees it start)."""
    summary = LatencyRecorder().summary()
    assert summary.sum == 0.0
    assert summary.bins == ()
    assert summary.buckets([0.1, 1]) == ((0.1, 0), (1.0, 0), (math.inf, 0))


@pytest.mark.parametrize(
    ("bounds", "error", "match"),
    [
        ([0.0033, 0.1], None, None),
        ([1, 2.5, math.inf], None, None),
        ([0.123], ValueError, "0.123 is not a bound the manager counts"),
        ([1e-6], ValueError, "1e-06 is not a bound"),
        ([2e5], ValueError, "200000.0 is not a bound"),
        ([0.1 + 0.2], ValueError, "0.30000000000000004"),
        ([1.0, 0.5], ValueError, "increasing order"),
        ([1.0, 1.0], ValueError, "increasing order"),
        (["1"], TypeError, "bounds must be numbers"),
        ([True], TypeError, "bounds must be numbers"),
    ],
)
def test_bounds_are_checked(
    bounds: list[Any], error: type[Exception] | None, match: str | None
) -> None:
    """Bounds must be bin edges, in increasing order; a trailing +Inf is allowed."""
    summary = LatencyRecorder().summary()
    if error is None:
        assert summary.buckets(bounds)[-1] == (math.inf, 0)
    else:
        with pytest.raises(error, match=re.escape(str(match))):
            summary.buckets(bounds)


def test_bins_are_fixed_memory() -> None:
    """The exact bins are one list whatever the count; the snapshot keeps only
    the non-empty ones."""
    recorder = LatencyRecorder()
    slots = len(recorder._counts)
    for i in range(100_000):
        recorder.record((i % 7) * 0.01 + 1e-6 * i)
    assert len(recorder._counts) == slots
    summary = recorder.summary()
    assert 0 < len(summary.bins) <= slots
    assert summary.bins == tuple(sorted(summary.bins))
    assert "bins" not in repr(summary)  # hundreds of pairs would drown the figures
