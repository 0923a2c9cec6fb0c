"""A ``prometheus_client`` collector that exposes every session statistic.

Each manager's series carry a ``manager`` label, so several managers in one
process stay apart; latencies are histograms, so a fleet's add up. Needs
``pip install trio-sessions[prometheus]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Literal, Protocol, cast, final, runtime_checkable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import REGISTRY, CollectorRegistry
from prometheus_client.utils import floatToGoString

from . import KeyStatistics, LatencySummary, SessionStatistics
from ._latency import DEFAULT_BUCKETS, check_buckets

__all__ = [
    "DEFAULT_BUCKETS",
    "FleetSource",
    "FleetStatistics",
    "SessionCollector",
    "StatisticsSource",
]

_OUTCOMES = (
    ("success", "succeeded"),
    ("error", "failed"),
    ("timeout", "timed_out"),
    ("cancelled", "cancelled"),
)
_QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))
# The ``key`` label of the keys not tracked by name, added up.
_OTHER_KEYS = "other"
# The ``le`` labels exactly as prometheus_client's own Histogram writes them
# ("0.005", "1.0", "+Inf"); the function is untyped there.
_le = cast(Callable[[float], str], floatToGoString)


class StatisticsSource(Protocol):
    """Anything with a ``statistics()`` method: a :class:`SessionManager`, or a
    :class:`~trio_sessions.asgi.SessionMiddleware` (``None`` before its lifespan
    started, and then skipped).

    ::

        collector.add("http", middleware)
    """

    def statistics(self) -> SessionStatistics | None: ...


class FleetStatistics(Protocol):
    """What a fleet-wide limit reports.

    :class:`~trio_sessions.redis.RedisLimitStatistics` is one.
    """

    @property
    def limit(self) -> int: ...
    @property
    def key(self) -> str: ...
    @property
    def held(self) -> int: ...
    @property
    def global_count(self) -> int | None: ...
    @property
    def available(self) -> bool: ...


@runtime_checkable
class FleetSource(Protocol):
    """A fleet-wide limit with a ``statistics()`` snapshot read without I/O.

    ::

        collector.add_fleet("http", guard)  # a RedisSessionLimit
    """

    def statistics(self) -> FleetStatistics: ...


@final
class SessionCollector:
    """Expose the statistics of named managers to Prometheus.

    Every :class:`SessionStatistics` field becomes a metric, labelled
    ``manager="<name>"``; counters end in ``_total``::

        from trio_sessions.prometheus import SessionCollector

        collector = SessionCollector()        # registers with the default REGISTRY
        async with ts.open_session_manager() as manager:
            collector.add("api", manager)
            ...                               # /metrics now shows trio_sessions_*

    Metrics (``<ns>`` is ``namespace``):

    - ``<ns>_created_total``: sessions admitted;
    - ``<ns>_completed_total{outcome}``: completed sessions by outcome
      (``success``, ``error``, ``timeout``, ``cancelled``);
    - ``<ns>_rejected_total{reason}``: refusals by reason (``capacity``,
      ``key_capacity``, ``shutting_down``, ``metadata``, ...);
    - ``<ns>_limit_changes_total``: times the capacity changed, by
      :meth:`~trio_sessions.SessionManager.resize` or a controller;
    - gauges ``<ns>_active``, ``<ns>_waiting``, ``<ns>_max_sessions`` (the
      capacity in force), ``<ns>_peak_active``, ``<ns>_metadata_bytes``,
      ``<ns>_peak_metadata_bytes`` and ``<ns>_success_ratio`` (absent until a
      session completed);
    - per ``key=``, once a manager has seen one, labelled ``key`` too:
      ``<ns>_key_active`` (gauge), ``<ns>_key_admitted_total`` and
      ``<ns>_key_rejected_total`` (refused because the key was at its limit),
      for the busiest ``tracked_keys`` keys by name and the rest added up
      under ``key="other"`` (a key named ``"other"`` is counted there too),
      so there are at most ``tracked_keys + 1`` series of each per manager;
    - histograms ``<ns>_duration_seconds`` (run time of completed sessions)
      and ``<ns>_wait_seconds`` (time queued, by sessions that waited):
      ``_bucket{le}``, ``_sum`` and ``_count`` series, with the bounds of
      ``buckets``; with ``latency="summary"``, summaries of the same names
      with quantiles 0.5, 0.9 and 0.99 instead;
    - gauges ``<ns>_duration_max_seconds`` and ``<ns>_wait_max_seconds``.

    The bucket counts are exact, not estimated: the manager counts every
    duration in fine bins whose edges are every number with at most two
    significant digits from 1e-05 to 100000 seconds, and ``buckets`` may be
    any increasing choice of those. Histograms from many processes add up
    (``histogram_quantile(0.99, sum by (le) (rate(..._bucket[5m])))``), which
    the summaries' quantiles do not.

    Fleet-wide limits added with :meth:`add_fleet` add gauges labelled
    ``manager`` and ``key``: ``<ns>_fleet_leases`` (leases held by the whole
    fleet, as last seen: every process reports the same figure, so aggregate
    it with ``max``, not ``sum``), ``<ns>_fleet_leases_held`` (this process's
    share: ``sum`` over the fleet), ``<ns>_fleet_limit`` and
    ``<ns>_fleet_backend_up`` (1 while the backend answers).

    A manager belongs to one Trio run: scrape from that run's thread (an ASGI
    ``/metrics`` endpoint such as :func:`prometheus_client.make_asgi_app` does),
    not from ``prometheus_client.start_http_server``'s thread.

    Args:
      sources: Initial ``name -> manager`` mapping.
      namespace: Prefix of every metric name.
      registry: Registry to register with, or ``None`` to register yourself.
      buckets: Upper bounds of the histograms' buckets, in seconds, increasing
        (``+Inf`` is always added); the default, :data:`DEFAULT_BUCKETS`, is
        ``prometheus_client``'s: 5 ms to 10 s.
      latency: ``"histogram"`` (the default), or ``"summary"`` for the
        per-process quantile summaries of earlier releases.

    Raises:
      ValueError: a bucket bound is not one the manager counts, the bounds
        are not increasing, or ``latency`` is neither kind.
      TypeError: a bucket bound is not a number.
    """

    def __init__(
        self,
        sources: Mapping[str, StatisticsSource] | None = None,
        *,
        namespace: str = "trio_sessions",
        registry: CollectorRegistry | None = REGISTRY,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        latency: Literal["histogram", "summary"] = "histogram",
    ) -> None:
        if latency not in ("histogram", "summary"):
            raise ValueError(
                f"latency must be 'histogram' or 'summary', got {latency!r}"
            )
        self._buckets = check_buckets(buckets)
        self._latency = latency
        self._namespace = namespace
        self._sources: dict[str, StatisticsSource] = {}
        self._fleets: dict[str, FleetSource] = {}
        for name, source in (sources or {}).items():
            self.add(name, source)
        if registry is not None:
            registry.register(self)

    def add(self, name: str, source: StatisticsSource) -> None:
        """Expose ``source`` under the label ``manager=name``.

        ::

            collector.add("websocket", manager)

        Raises:
          ValueError: if ``name`` is already used.
        """
        if name in self._sources:
            raise ValueError(f"a manager named {name!r} is already collected")
        self._sources[name] = source

    def add_fleet(self, name: str, fleet: FleetSource) -> None:
        """Expose the fleet-wide limit ``fleet`` of the manager named ``name``.

        ::

            guard = RedisSessionLimit.from_url("redis://127.0.0.1/0", limit=40)
            collector.add_fleet("http", guard)

        Raises:
          ValueError: if ``name`` already has a fleet limit.
        """
        if name in self._fleets:
            raise ValueError(f"a fleet limit named {name!r} is already collected")
        self._fleets[name] = fleet

    def remove(self, name: str) -> None:
        """Stop exposing the manager named ``name``.

        ::

            collector.remove("websocket")

        Raises:
          KeyError: if no manager has that name.
        """
        del self._sources[name]
        self._fleets.pop(name, None)

    def describe(self) -> Iterable[Metric]:
        """Return the metric families, without samples (for the registry)."""
        return [*self._families([]), *self._fleet_families([])]

    def collect(self) -> Iterable[Metric]:
        """Return every metric family with one sample set per manager."""
        snapshots = []
        for name, source in list(self._sources.items()):
            statistics = source.statistics()
            if statistics is not None:
                snapshots.append((name, statistics))
        fleets = [(name, fleet.statistics()) for name, fleet in self._fleets.items()]
        return [*self._families(snapshots), *self._fleet_families(fleets)]

    def _fleet_families(
        self, snapshots: list[tuple[str, FleetStatistics]]
    ) -> Iterator[Metric]:
        ns = self._namespace
        gauges = (
            ("fleet_leases", "Leases held by the whole fleet (aggregate with max)."),
            ("fleet_leases_held", "Leases held by this process."),
            ("fleet_limit", "The fleet-wide session limit."),
            ("fleet_backend_up", "1 while the fleet's backend answers, else 0."),
        )
        families = {
            metric: GaugeMetricFamily(
                f"{ns}_{metric}", documentation, labels=["manager", "key"]
            )
            for metric, documentation in gauges
        }
        for name, stats in snapshots:
            labels = [name, stats.key]
            if stats.global_count is not None:
                families["fleet_leases"].add_metric(labels, stats.global_count)
            families["fleet_leases_held"].add_metric(labels, stats.held)
            families["fleet_limit"].add_metric(labels, stats.limit)
            families["fleet_backend_up"].add_metric(labels, 1 if stats.available else 0)
        yield from families.values()

    def _families(
        self, snapshots: list[tuple[str, SessionStatistics]]
    ) -> Iterator[Metric]:
        ns = self._namespace

        created = CounterMetricFamily(
            f"{ns}_created", "Sessions admitted.", labels=["manager"]
        )
        completed = CounterMetricFamily(
            f"{ns}_completed",
            "Sessions completed, by outcome.",
            labels=["manager", "outcome"],
        )
        rejected = CounterMetricFamily(
            f"{ns}_rejected",
            "Sessions refused admission, by reason.",
            labels=["manager", "reason"],
        )
        limit_changes = CounterMetricFamily(
            f"{ns}_limit_changes",
            "Times the capacity changed, by resize() or a controller.",
            labels=["manager"],
        )
        for name, stats in snapshots:
            created.add_metric([name], stats.created)
            for outcome, field in _OUTCOMES:
                completed.add_metric([name, outcome], getattr(stats, field))
            for reason, count in sorted(stats.rejections.items()):
                rejected.add_metric([name, reason], count)
            limit_changes.add_metric([name], stats.limit_changes)
        yield created
        yield completed
        yield rejected
        yield limit_changes

        gauges = (
            ("active", "Sessions admitted and not yet completed.", "active"),
            ("waiting", "Callers queued for a slot.", "waiting"),
            (
                "max_sessions",
                "The capacity in force: configured, resized or a controller's.",
                "max_sessions",
            ),
            ("peak_active", "Highest number of active sessions seen.", "peak_active"),
            (
                "metadata_bytes",
                "Metadata bytes held by live sessions.",
                "metadata_bytes",
            ),
            (
                "peak_metadata_bytes",
                "Highest metadata bytes held at once.",
                "peak_metadata_bytes",
            ),
            ("success_ratio", "Succeeded / completed sessions.", "success_rate"),
        )
        for metric, documentation, field in gauges:
            gauge = GaugeMetricFamily(
                f"{ns}_{metric}", documentation, labels=["manager"]
            )
            for name, stats in snapshots:
                value = getattr(stats, field)
                if value is not None:
                    gauge.add_metric([name], value)
            yield gauge

        yield from _key_families(ns, snapshots)

        latencies = (
            ("duration", "Run time of completed sessions.", "durations"),
            ("wait", "Time queued for a slot, by sessions that waited.", "wait_times"),
        )
        for metric, documentation, field in latencies:
            name = f"{ns}_{metric}_seconds"
            family = (
                HistogramMetricFamily(name, documentation, labels=["manager"])
                if self._latency == "histogram"
                else SummaryMetricFamily(name, documentation, labels=["manager"])
            )
            largest = GaugeMetricFamily(
                f"{ns}_{metric}_max_seconds",
                f"Longest {metric} observed, in seconds.",
                labels=["manager"],
            )
            for manager, stats in snapshots:
                latency: LatencySummary = getattr(stats, field)
                if isinstance(family, HistogramMetricFamily):
                    family.add_metric(
                        [manager],
                        [
                            (_le(bound), count)
                            for bound, count in latency.buckets(self._buckets)
                        ],
                        latency.sum,
                    )
                else:
                    _add_quantiles(family, manager, latency)
                if latency.max is not None:
                    largest.add_metric([manager], latency.max)
            yield family
            yield largest


def _key_families(
    ns: str, snapshots: list[tuple[str, SessionStatistics]]
) -> Iterator[Metric]:
    """The per-key series: a gauge of running sessions and two counters."""
    labels = ["manager", "key"]
    active = GaugeMetricFamily(
        f"{ns}_key_active", "Sessions running now, by key.", labels=labels
    )
    admitted = CounterMetricFamily(
        f"{ns}_key_admitted", "Sessions admitted, by key.", labels=labels
    )
    rejected = CounterMetricFamily(
        f"{ns}_key_rejected",
        "Callers refused because their key was at its limit, by key.",
        labels=labels,
    )
    for manager, stats in snapshots:
        for key, counts in _by_key(stats):
            active.add_metric([manager, key], counts.active)
            admitted.add_metric([manager, key], counts.admitted)
            rejected.add_metric([manager, key], counts.rejected)
    yield active
    yield admitted
    yield rejected


def _by_key(stats: SessionStatistics) -> list[tuple[str, KeyStatistics]]:
    """The tracked keys and ``"other"``; nothing for a manager that saw no key.

    A key named ``"other"`` is added to the untracked ones: two series with
    one label set would make the whole exposition invalid. Each key's counts
    start when it is tracked (its series restarts if it was folded into
    ``"other"`` and comes back, which ``rate()`` reads as a counter reset);
    ``"other"`` only grows, so the sum over keys is a counter throughout.
    """
    other = stats.other_keys
    named = dict(stats.keys)
    if not named and not (other.active or other.admitted or other.rejected):
        return []
    clash = named.pop(_OTHER_KEYS, None)
    if clash is not None:
        other = KeyStatistics(
            other.active + clash.active,
            other.admitted + clash.admitted,
            other.rejected + clash.rejected,
        )
    return [*sorted(named.items()), (_OTHER_KEYS, other)]


def _add_quantiles(
    summary: SummaryMetricFamily, manager: str, latency: LatencySummary
) -> None:
    summary.add_metric([manager], latency.count, latency.sum)
    for quantile, attribute in _QUANTILES:
        value = getattr(latency, attribute)
        if value is not None:
            summary.add_sample(
                summary.name, {"manager": manager, "quantile": quantile}, value
            )
