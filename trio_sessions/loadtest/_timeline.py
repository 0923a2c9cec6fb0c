"""Figures over time: counts per interval and levels at each interval's end.

A :class:`Timeline` is filled by a sampler task every ``tick`` seconds, never by
the code it measures; :class:`TimeSeries` is its frozen, JSON-ready snapshot.
:func:`open_manager` lets the sampler of a scenario run see each manager opened.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, final

import attrs
import trio

from .. import SessionConfig, SessionManager, open_session_manager

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "ManagerWatch",
    "TimeSeries",
    "Timeline",
    "open_manager",
    "run_sampled",
    "sample_every",
]

_T = TypeVar("_T")

# Memory stays bounded: past this many intervals, pairs merge and the tick doubles.
_MAX_INTERVALS = 2048


@final
@attrs.frozen
class TimeSeries:
    """Figures over time, one value per interval of ``tick`` seconds.

    Attributes:
      tick: Length of every interval, in seconds.
      counts: Per name, how many events fell in each interval (responses,
        sessions completed...).
      levels: Per name, the level at the end of each interval (requests in
        flight, sessions active...).
      marks: ``(seconds from the start, label)`` of events to show on a chart,
        such as the start of each scenario.
    """

    tick: float
    counts: Mapping[str, Sequence[int]]
    levels: Mapping[str, Sequence[int]]
    marks: Sequence[tuple[float, str]] = ()

    @property
    def intervals(self) -> int:
        """Number of intervals."""
        return max((len(values) for values in self.counts.values()), default=0)

    @property
    def times(self) -> list[float]:
        """The end of each interval, in seconds from the start."""
        return [self.tick * (index + 1) for index in range(self.intervals)]

    def rate(self, name: str) -> list[float]:
        """``counts[name]`` per second, interval by interval."""
        return [count / self.tick for count in self.counts[name]]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimeSeries:
        """The series that ``attrs.asdict`` (or its JSON) described."""
        return cls(
            tick=float(data["tick"]),
            counts={name: tuple(values) for name, values in data["counts"].items()},
            levels={name: tuple(values) for name, values in data["levels"].items()},
            marks=tuple((float(at), str(label)) for at, label in data["marks"]),
        )

    @classmethod
    def merge(cls, series: Sequence[TimeSeries]) -> TimeSeries:
        """Add up series sampled on one grid, by several client processes.

        Counts add up; so do levels (a process that finished has nothing in
        flight). A finer series is first coarsened to the coarsest tick.
        """
        tick = max(one.tick for one in series)
        timelines = [Timeline.of(one) for one in series]
        for timeline in timelines:
            while timeline.tick < tick * 0.999:
                timeline.coarsen()
        length = max(map(len, timelines))
        return cls(
            tick=tick,
            counts={
                name: tuple(
                    sum(_at(t.counts[name], i) for t in timelines)
                    for i in range(length)
                )
                for name in series[0].counts
            },
            levels={
                name: tuple(
                    sum(_at(t.levels[name], i) for t in timelines)
                    for i in range(length)
                )
                for name in series[0].levels
            },
            marks=series[0].marks,
        )


def _at(values: Sequence[int], index: int) -> int:
    return values[index] if index < len(values) else 0


@final
class Timeline:
    """Builds a :class:`TimeSeries`, one interval at a time, in bounded memory.

    ::

        timeline = Timeline(0.1, ["responses"], ["in_flight"])
        timeline.sample([total_responses], [in_flight])   # every 0.1 s
        series = timeline.series()
    """

    def __init__(
        self, tick: float, counts: Sequence[str], levels: Sequence[str]
    ) -> None:
        self.tick = tick
        self.counts: dict[str, list[int]] = {name: [] for name in counts}
        self.levels: dict[str, list[int]] = {name: [] for name in levels}
        self.marks: list[tuple[float, str]] = []
        self._totals = [0] * len(self.counts)

    @classmethod
    def of(cls, series: TimeSeries) -> Timeline:
        """A timeline holding ``series``, to coarsen or extend."""
        timeline = cls(series.tick, list(series.counts), list(series.levels))
        for name, values in series.counts.items():
            timeline.counts[name].extend(values)
        for name, values in series.levels.items():
            timeline.levels[name].extend(values)
        timeline.marks.extend(series.marks)
        return timeline

    def __len__(self) -> int:
        return max(map(len, [*self.counts.values(), *self.levels.values()]), default=0)

    @property
    def end(self) -> float:
        """Seconds from the start to the end of the last interval."""
        return self.tick * len(self)

    def sample(self, totals: Sequence[int], levels: Sequence[int]) -> None:
        """Close an interval, from running ``totals`` and the ``levels`` now."""
        counts = [now - then for now, then in zip(totals, self._totals, strict=True)]
        self._totals = list(totals)
        self.append(counts, levels)

    def append(self, counts: Sequence[int], levels: Sequence[int]) -> None:
        """Close an interval with its own ``counts`` and the ``levels`` at its end."""
        for values, count in zip(self.counts.values(), counts, strict=True):
            values.append(count)
        for values, level in zip(self.levels.values(), levels, strict=True):
            values.append(level)
        if len(self) >= _MAX_INTERVALS:
            self.coarsen()

    def coarsen(self) -> None:
        """Merge intervals by pairs: counts add up, the later level stays."""
        for values in self.counts.values():
            values.extend([0] * (len(values) % 2))
            values[:] = map(sum, zip(values[::2], values[1::2], strict=True))
        for values in self.levels.values():
            values.extend(values[-1:] * (len(values) % 2))
            values[:] = values[1::2]
        self.tick *= 2

    def mark(self, at: float, label: str) -> None:
        """Note ``label`` at ``at`` seconds from the start."""
        self.marks.append((at, label))

    def series(self) -> TimeSeries:
        """The figures so far, frozen."""
        return TimeSeries(
            tick=self.tick,
            counts={name: tuple(values) for name, values in self.counts.items()},
            levels={name: tuple(values) for name, values in self.levels.items()},
            marks=tuple(self.marks),
        )


async def sample_every(
    timeline: Timeline,
    start: float,
    read: Callable[[], tuple[Sequence[int], Sequence[int]]],
) -> None:
    """Sample ``read()`` (running totals, levels) into ``timeline`` until cancelled.

    Each interval is closed at ``start + timeline.end + timeline.tick`` on the
    Trio clock, so the grid stays put when the timeline coarsens. Cancelled,
    it closes the interval in progress with what it holds so far.
    """
    try:
        while True:
            await trio.sleep_until(start + timeline.end + timeline.tick)
            timeline.sample(*read())
    finally:
        timeline.sample(*read())


async def run_sampled(
    timeline: Timeline,
    read: Callable[[], tuple[Sequence[int], Sequence[int]]],
    async_fn: Callable[[], Awaitable[_T]],
    start: float | None = None,
) -> _T:
    """Return ``await async_fn()``, sampling ``read()`` into ``timeline`` meanwhile.

    The intervals start at ``start`` on the Trio clock (by default, now);
    what ``async_fn`` raises comes out as itself, not in an exception group.
    """
    if start is None:
        start = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_every, timeline, start, read)
            result = await async_fn()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The sampler never raises: hand over async_fn's exception as itself.
        if len(group.exceptions) != 1:
            raise
        raise group.exceptions[0] from None
    return result


# The watch of the scenario run in progress, if one is sampling.
_watch: contextvars.ContextVar[ManagerWatch | None] = contextvars.ContextVar(
    "trio_sessions_loadtest_watch", default=None
)

# Totals and levels a ManagerWatch samples: SessionStatistics fields, summed.
MANAGER_COUNTS = (
    "completed",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "rejected",
)
MANAGER_LEVELS = ("active", "waiting")


@final
class ManagerWatch:
    """Samples every manager the scenarios open into one timeline, every ``tick``.

    Scenarios open their managers with :func:`open_manager`; during
    :meth:`run` each one is watched from the moment it opens::

        watch = ManagerWatch(tick=0.01)
        report = await watch.run(loadtest.run_loadtest)
        series, managers = watch.series(), watch.managers
    """

    def __init__(self, tick: float = 0.01) -> None:
        self.timeline = Timeline(tick, MANAGER_COUNTS, MANAGER_LEVELS)
        self.managers: list[SessionManager] = []
        self._start = 0.0

    def _read(self) -> tuple[list[int], list[int]]:
        stats = [manager.statistics() for manager in self.managers]
        return (
            [sum(getattr(s, name) for s in stats) for name in MANAGER_COUNTS],
            [sum(getattr(s, name) for s in stats) for name in MANAGER_LEVELS],
        )

    def add(self, manager: SessionManager) -> None:
        """Watch ``manager`` from now on; its opening is marked on the timeline."""
        self.managers.append(manager)
        self.timeline.mark(trio.current_time() - self._start, f"#{len(self.managers)}")

    async def run(self, async_fn: Callable[[], Awaitable[_T]]) -> _T:
        """Return ``await async_fn()``, watching the managers it opens."""
        self._start = trio.current_time()
        token = _watch.set(self)
        try:
            return await run_sampled(self.timeline, self._read, async_fn)
        finally:
            _watch.reset(token)

    def series(self) -> TimeSeries:
        """What was sampled."""
        return self.timeline.series()


@asynccontextmanager
async def open_manager(config: SessionConfig) -> AsyncIterator[SessionManager]:
    """:func:`~trio_sessions.open_session_manager`, watched if a run is sampling.

    The scenarios open their managers with it, so that ``--html`` can chart
    active sessions and completions over time without a cost in the manager.
    """
    async with open_session_manager(config) as manager:
        watch = _watch.get()
        if watch is not None:
            watch.add(manager)
        yield manager
