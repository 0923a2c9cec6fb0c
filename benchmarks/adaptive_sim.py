"""Adaptive concurrency, simulated: each controller against a backend with a knee.

``.venv/bin/python benchmarks/adaptive_sim.py [--quick] [--plot PATH]`` runs the
real manager under a ``MockClock`` (virtual time: seconds of wall time) in front of
a backend with ``knee`` workers, each request taking 10 ms of one worker (plus or
minus 20%), so latency is flat up to the knee and grows in proportion beyond it.
Requests arrive open-loop (Poisson) at 1.5 times what the first knee can serve,
each with a 50 ms deadline; the manager refuses what it has no slot for. Two
scenarios: the knee stays at 40, and the knee moves from 40 to 20 halfway.

For each controller, each phase: the median limit over the phase's second half
against the knee (target: within 20%), the goodput (successful sessions per
second) against the best of a sweep of fixed limits run on the same arrivals
(target: at least 90%), and the p99 latency of the phase's sessions against the
backend's unloaded p99 (target: at most 2x). ``--plot`` writes the limit and the
latency over time of every controller (needs matplotlib). A full run takes about
two minutes of CPU; ``--jobs 2`` spreads it over two processes.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import attrs
import trio
import trio.testing

import trio_sessions as ts

BASE = 0.010  # a request's mean work on one worker, seconds
JITTER = 0.2  # each request's work is uniform in BASE * (1 +- JITTER)
DEADLINE = 0.050  # every request's timeout
LOAD = 1.5  # arrivals per second, as a multiple of what the first knee serves
CEILING = 200  # the controllers' max_limit
SAMPLE_EVERY = 0.005  # how often the limit is read for the convergence figure
PLOT_BUCKET = 0.05  # the plot's latency is the p99 of each bucket of this width
PHASE = 2.0  # seconds of each phase
FIXED_LIMITS = [20, 30, 40, 60, 80, 120]

#: The AIMD controller's latency that counts as a loss: a quarter over the
#: unloaded mean, the latency this service is prepared to serve.
AIMD_SLOW_AFTER = 1.25 * BASE

UNJUDGED = frozenset({"aimd, timeouts only"})

TARGET_CONVERGENCE = 0.20
TARGET_GOODPUT = 0.90
TARGET_P99 = 2.0


@attrs.frozen
class Phase:
    """A stretch of the run during which the backend has ``knee`` workers."""

    knee: int
    duration: float


@attrs.frozen
class Scenario:
    """A named sequence of phases."""

    name: str
    phases: tuple[Phase, ...]

    @property
    def duration(self) -> float:
        return sum(phase.duration for phase in self.phases)

    def spans(self) -> list[tuple[float, float, Phase]]:
        """Each phase with its start and end time."""
        spans, start = [], 0.0
        for phase in self.phases:
            spans.append((start, start + phase.duration, phase))
            start += phase.duration
        return spans


def scenarios(phase: float) -> list[Scenario]:
    """The two scenarios, with phases of ``phase`` seconds."""
    return [
        Scenario("steady knee 40", (Phase(40, 2 * phase),)),
        Scenario("knee 40 -> 20", (Phase(40, phase), Phase(20, phase))),
    ]


@attrs.define
class Trace:
    """What one run saw: the limit over time and every session that completed."""

    limits: list[tuple[float, int]] = attrs.Factory(list)
    # (completed at, duration, succeeded)
    completions: list[tuple[float, float, bool]] = attrs.Factory(list)
    refused: int = 0


# A manager factory: given the run's deadline, opens the manager to measure.
Opener = Callable[[], Any]


def fixed(limit: int) -> Opener:
    """A manager with a fixed capacity."""
    return lambda: ts.open_session_manager(
        max_sessions=limit, request_timeout=DEADLINE, max_waiting=0
    )


def adaptive(make: Callable[[], ts.LimitController]) -> Opener:
    """A manager whose capacity a fresh controller from ``make`` decides."""
    return lambda: ts.open_session_manager(
        request_timeout=DEADLINE, max_waiting=0, controller=make()
    )


def contenders() -> dict[str, Callable[[], ts.LimitController]]:
    """Each controller, with its defaults but for the ceiling."""
    return {
        "aimd": lambda: ts.AIMDController(
            max_limit=CEILING, slow_after=AIMD_SLOW_AFTER
        ),
        # Shown, not judged: what AIMD does with no loss but the deadline.
        "aimd, timeouts only": lambda: ts.AIMDController(max_limit=CEILING),
        "gradient2": lambda: ts.Gradient2Controller(max_limit=CEILING),
        "vegas": lambda: ts.VegasController(max_limit=CEILING),
    }


# ------------------------------------------------------------------ the run


async def simulate(scenario: Scenario, open_manager: Opener, seed: int) -> Trace:
    """Offer the scenario's arrivals to one manager; record what happened."""
    trace = Trace()
    rng = random.Random(seed)
    workers = trio.CapacityLimiter(scenario.phases[0].knee)
    rate = LOAD * scenario.phases[0].knee / BASE
    end = scenario.duration
    now = trio.current_time

    async def request(work: float) -> None:
        started = now()
        succeeded = False
        try:
            async with workers:
                await trio.sleep(work)
            succeeded = True
        finally:
            finished = now()
            if finished <= end:
                trace.completions.append((finished, finished - started, succeeded))

    async def move_knee() -> None:
        for start, _, phase in scenario.spans()[1:]:
            await trio.sleep_until(start)
            # Fewer workers: the ones busy finish their request, as a shrinking
            # pool would (trio's limiter takes tokens back only as they return).
            workers.total_tokens = phase.knee

    async with open_manager() as manager:

        async def watch_limit() -> None:
            while True:
                trace.limits.append((now(), manager.statistics().max_sessions))
                await trio.sleep(SAMPLE_EVERY)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(move_knee)
            nursery.start_soon(watch_limit)
            arrival = rng.expovariate(rate)
            while arrival < end:
                await trio.sleep_until(arrival)
                work = BASE * rng.uniform(1 - JITTER, 1 + JITTER)
                try:
                    manager.start_session_nowait(request, work)
                except ts.CapacityError:
                    trace.refused += 1
                arrival += rng.expovariate(rate)
            nursery.cancel_scope.cancel()
    return trace


async def unloaded_p99(seed: int, requests: int) -> float:
    """The backend's p99 latency with one request at a time, through a manager."""
    rng = random.Random(seed)
    durations = []
    async with fixed(1)() as manager:
        for _ in range(requests):
            started = trio.current_time()
            await manager.run(trio.sleep, BASE * rng.uniform(1 - JITTER, 1 + JITTER))
            durations.append(trio.current_time() - started)
    return quantile(durations, 0.99)


def run_virtual(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh Trio run on virtual time."""
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


# ------------------------------------------------------------------ figures


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@attrs.frozen
class PhaseFigures:
    """One run's figures over one phase."""

    median_limit: float
    goodput: float
    p99: float


def phase_figures(trace: Trace, start: float, stop: float) -> PhaseFigures:
    """The run's figures over ``[start, stop)``."""
    middle = (start + stop) / 2
    limits = [limit for at, limit in trace.limits if middle <= at < stop]
    inside = [(d, ok) for at, d, ok in trace.completions if start <= at < stop]
    good = sum(ok for _, ok in inside)
    return PhaseFigures(
        median_limit=statistics.median(limits) if limits else math.nan,
        goodput=good / (stop - start),
        p99=quantile([d for d, _ in inside], 0.99) if inside else math.nan,
    )


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def report(
    scenario: Scenario,
    traces: dict[str, Trace],
    fixed_traces: dict[int, Trace],
    unloaded: float,
) -> list[bool]:
    """Print the scenario's table; return whether each target was met."""
    results: list[bool] = []
    print(f"\n== {scenario.name} ==")
    for index, (start, stop, phase) in enumerate(scenario.spans(), 1):
        fixed_figures = {
            limit: phase_figures(trace, start, stop)
            for limit, trace in fixed_traces.items()
        }
        best_limit = max(fixed_figures, key=lambda n: fixed_figures[n].goodput)
        best = fixed_figures[best_limit].goodput
        print(
            f"phase {index}: knee {phase.knee}, {start:g}-{stop:g} s; best fixed "
            f"limit {best_limit}: {best:,.0f}/s (fixed limits: "
            + ", ".join(f"{n}: {f.goodput:,.0f}/s" for n, f in fixed_figures.items())
            + ")"
        )
        print(
            f"  {'controller':<20} {'median limit':>13} {'vs knee':>8}   "
            f"{'goodput':>8} {'vs best':>8}   {'p99 ms':>7} {'vs unloaded':>11}"
        )
        for name, trace in traces.items():
            figures = phase_figures(trace, start, stop)
            convergence = figures.median_limit / phase.knee - 1
            share = figures.goodput / best
            ratio = figures.p99 / unloaded
            met = (
                abs(convergence) <= TARGET_CONVERGENCE,
                share >= TARGET_GOODPUT,
                ratio <= TARGET_P99,
            )
            if name in UNJUDGED:
                marks = ["", "", ""]
            else:
                results.extend(met)
                marks = [verdict(m) for m in met]
            print(
                f"  {name:<20} {figures.median_limit:>13.1f} {convergence:>+8.0%} "
                f"{marks[0]:<6} {figures.goodput:>6,.0f}/s {share:>8.0%} "
                f"{marks[1]:<6} {figures.p99 * 1e3:>5.1f} "
                f"{ratio:>10.2f}x {marks[2]}"
            )
    return results


# --------------------------------------------------------------------- plot


def plot(
    path: Path,
    runs: list[tuple[Scenario, dict[str, Trace]]],
    unloaded: float,
) -> None:
    """Write the limit and the p99 latency over time, per scenario and controller."""
    try:
        import matplotlib
    except ImportError:
        sys.exit("--plot needs matplotlib: .venv/bin/pip install matplotlib")
    matplotlib.use("svg" if path.suffix == ".svg" else "agg")
    # Reproducible SVG: no random ids, no date.
    matplotlib.rcParams["svg.hashsalt"] = "adaptive_sim"
    matplotlib.rcParams["svg.fonttype"] = "none"
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(
        2, len(runs), figsize=(6 * len(runs), 7), sharex="col", squeeze=False
    )
    for column, (scenario, traces) in enumerate(runs):
        top, bottom = axes[0][column], axes[1][column]
        knee_x, knee_y = [], []
        for start, stop, phase in scenario.spans():
            knee_x += [start, stop]
            knee_y += [phase.knee, phase.knee]
        top.plot(knee_x, knee_y, "k--", linewidth=1, label="knee")
        for name, trace in traces.items():
            if name in UNJUDGED:
                continue  # off the chart: its limit climbs to the deadline
            xs = [at for at, _ in trace.limits]
            top.step(xs, [n for _, n in trace.limits], where="post", label=name)
            buckets: dict[int, list[float]] = {}
            for at, duration, _ in trace.completions:
                buckets.setdefault(int(at / PLOT_BUCKET), []).append(duration)
            keys = sorted(buckets)
            bottom.plot(
                [(k + 0.5) * PLOT_BUCKET for k in keys],
                [quantile(buckets[k], 0.99) * 1e3 for k in keys],
                label=name,
                linewidth=1,
            )
        bottom.axhline(
            2 * unloaded * 1e3,
            color="k",
            linestyle="--",
            linewidth=1,
            label="2x unloaded p99",
        )
        top.set_title(scenario.name)
        top.set_ylabel("limit (sessions)")
        top.set_ylim(0, 100)
        bottom.set_ylabel(f"p99 latency per {PLOT_BUCKET * 1e3:g} ms (ms)")
        bottom.set_xlabel("virtual time (s)")
        bottom.set_ylim(0, DEADLINE * 1e3 * 1.1)
        top.legend(loc="upper right", fontsize="small")
        bottom.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, metadata={"Date": None} if path.suffix == ".svg" else None)
    print(f"\nplot written to {path}")


# --------------------------------------------------------------------- main


def run_one(scenario: Scenario, contender: int | str, seed: int) -> Trace:
    """One run: a fixed limit (an int) or a controller (its name)."""
    opener = (
        fixed(contender)
        if isinstance(contender, int)
        else adaptive(contenders()[contender])
    )
    trace: Trace = run_virtual(simulate, scenario, opener, seed)
    return trace


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="short phases, few fixed limits"
    )
    parser.add_argument("--plot", type=Path, help="write the plot here (SVG or PNG)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once, in worker processes"
    )
    args = parser.parse_args(argv)

    # --quick is a smoke test: too short to converge, so its verdicts mean little.
    phase = 0.05 if args.quick else PHASE
    limits = [40] if args.quick else FIXED_LIMITS
    began = time.perf_counter()
    unloaded = run_virtual(unloaded_p99, args.seed, 50 if args.quick else 2_000)
    print(
        f"backend: {BASE * 1e3:g} ms +-{JITTER:.0%} per request on `knee` workers; "
        f"deadline {DEADLINE * 1e3:g} ms; arrivals {LOAD:g}x the first knee's "
        f"capacity; unloaded p99 {unloaded * 1e3:.2f} ms"
    )
    every: list[int | str] = [*limits, *contenders()]
    plan = [(scenario, who) for scenario in scenarios(phase) for who in every]
    seeds = [args.seed] * len(plan)
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else nullcontext() as pool:
        runs_of = [s for s, _ in plan], [c for _, c in plan], seeds
        done = pool.map(run_one, *runs_of) if pool else map(run_one, *runs_of)
        traces = dict(zip([(s.name, c) for s, c in plan], done, strict=True))
    met: list[bool] = []
    runs = []
    for scenario in scenarios(phase):
        fixed_traces = {n: traces[scenario.name, n] for n in limits}
        controlled = {n: traces[scenario.name, n] for n in contenders()}
        met += report(scenario, controlled, fixed_traces, unloaded)
        runs.append((scenario, controlled))
    print(
        f"\n{sum(met)} of {len(met)} targets met "
        f"({time.perf_counter() - began:.1f} s of wall time)"
    )
    if args.plot is not None:
        plot(args.plot, runs, unloaded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
