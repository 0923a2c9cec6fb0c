"""Tests of what the load test measures with: latency histograms and timelines.

The histogram is checked against exact quantiles (Hypothesis), the timeline
and the manager watch under ``autojump_clock``, so every interval is exact.
"""

from __future__ import annotations

import math
from functools import partial

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from test_latency import exact_quantile

from trio_sessions import loadtest
from trio_sessions.loadtest._histogram import QUANTILES, LatencyHistogram
from trio_sessions.loadtest._timeline import (
    ManagerWatch,
    Timeline,
    TimeSeries,
    run_sampled,
)

latencies = st.lists(
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False), min_size=1
)


@given(latencies)
def test_percentiles_are_within_the_bins_precision(values: list[float]) -> None:
    """Every percentile is within 0.8% (or 0.5 µs) of the exact one; max is exact."""
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    found = histogram.percentiles()
    assert found.count == len(values)
    assert (found.min, found.max) == (min(values), max(values))
    for name, q in QUANTILES.items():
        exact = exact_quantile(values, q)
        estimate = getattr(found, name)
        assert abs(estimate - exact) <= max(exact / 128, 0.5e-6) * 1.0001, name


@given(latencies, latencies)
def test_merged_histograms_are_the_histogram_of_all(
    first: list[float], second: list[float]
) -> None:
    """Two histograms merged, through their JSON form, equal one of every value."""
    one, other, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for value in first:
        one.record(value)
        both.record(value)
    for value in second:
        other.record(value)
        both.record(value)
    one.merge(LatencyHistogram.from_dict(other.as_dict()))
    merged, expected = one.percentiles(), both.percentiles()
    assert merged.count == expected.count
    assert (merged.p50, merged.p90, merged.p99, merged.p999, merged.max) == (
        expected.p50,
        expected.p90,
        expected.p99,
        expected.p999,
        expected.max,
    )
    assert math.isclose(merged.mean or 0, expected.mean or 0, abs_tol=1e-9)


def test_empty_histogram_has_no_figures() -> None:
    """With nothing recorded, every figure but the count is None."""
    found = LatencyHistogram.from_dict(LatencyHistogram().as_dict()).percentiles()
    assert found == loadtest.Percentiles(0, None, None, None, None, None, None, None)


def test_timeline_memory_is_bounded_and_keeps_the_totals() -> None:
    """Past 2048 intervals, pairs merge: counts still add up, the tick doubles."""
    timeline = Timeline(0.1, ["done"], ["level"])
    for index in range(5000):
        timeline.sample([index + 1], [index])
    series = timeline.series()
    assert series.intervals <= 2048
    assert sum(series.counts["done"]) == 5000
    assert series.levels["level"][-1] == 4999
    assert math.isclose(series.tick * series.intervals, timeline.end)
    assert series.tick >= 0.2


def test_merge_adds_series_and_coarsens_the_finer() -> None:
    """Series of two processes add up; a finer one is coarsened to the other's tick."""
    fine = TimeSeries(0.1, {"done": (1, 2, 3, 4)}, {"level": (1, 1, 2, 2)})
    coarse = TimeSeries(0.2, {"done": (10,)}, {"level": (5,)})
    merged = TimeSeries.merge([fine, coarse])
    assert merged.tick == 0.2
    assert merged.counts["done"] == (13, 7)
    assert merged.levels["level"] == (6, 2)
    assert merged.rate("done") == [65.0, 35.0]


async def test_sampler_closes_an_interval_every_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sampling 1.05 s at 0.1 s: ten whole intervals, and the one in progress."""
    timeline = Timeline(0.1, ["ticks"], ["now"])
    start = trio.current_time()
    readings = 0

    def read() -> tuple[list[int], list[int]]:
        nonlocal readings
        readings += 1
        return [readings], [round((trio.current_time() - start) * 1000)]

    await run_sampled(timeline, read, partial(trio.sleep, 1.05))
    series = timeline.series()
    assert series.intervals == 11
    assert series.counts["ticks"] == (1,) * 11
    assert series.levels["now"] == (*range(100, 1001, 100), 1050)


async def test_manager_watch_sees_each_scenario_manager(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The scenarios' managers are watched from their opening: counts add up."""
    watch = ManagerWatch()
    report = await watch.run(
        partial(loadtest.run_loadtest, only=["concurrent", "capacity"])
    )
    assert report.passed, report.problems
    assert len(watch.managers) == 2
    series = watch.series()
    assert [label for _, label in series.marks] == ["#1", "#2"]
    assert sum(series.counts["completed"]) == 50 + 50
    assert sum(series.counts["succeeded"]) == 100
    assert sum(series.counts["rejected"]) == 10
    assert series.levels["active"][-1] == 0
    assert max(series.levels["active"]) > 0
