"""The load test as one self-contained HTML page: the scenario table and charts.

The charts are plotly's (the ``report`` extra), with plotly.js inlined once,
so the file opens offline; :func:`render_html` builds the page, and this is the
only module that imports plotly.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

import attrs

from .. import SessionStatistics, __version__
from ._http import OUTCOMES, HttpLoadResult, importable
from ._report import LoadTestReport
from ._timeline import TimeSeries

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

__all__ = ["ScenarioRun", "have_plotly", "render_html", "summary"]

# One colour per outcome, on every chart: good green, refused amber, late
# purple, failed red, lost grey.
_COLOURS = {
    "2xx": "#2e9d52",
    "succeeded": "#2e9d52",
    "503": "#e8a33d",
    "rejected": "#e8a33d",
    "504": "#8a5cc2",
    "timed_out": "#8a5cc2",
    "other": "#d64541",
    "failed": "#d64541",
    "errors": "#7f8c8d",
    "cancelled": "#7f8c8d",
}
_LABELS = {
    "2xx": "2xx",
    "503": "503 (shed)",
    "504": "504 (deadline)",
    "other": "other status",
    "errors": "no response",
    "succeeded": "succeeded",
    "failed": "failed",
    "timed_out": "timed out",
    "cancelled": "cancelled",
    "rejected": "rejected",
}
_PERCENTILES = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"))


def have_plotly() -> bool:
    """True when plotly, which the HTML report draws its charts with, imports."""
    return importable("plotly")


@final
@attrs.frozen
class ScenarioRun:
    """What the charts of a scenario run need beyond its report.

    Attributes:
      series: Sessions over time, sampled by a :class:`~._timeline.ManagerWatch`.
      statistics: The final statistics of each scenario's manager, in the
        order the scenarios ran.
    """

    series: TimeSeries
    statistics: Sequence[SessionStatistics]


def summary(report: LoadTestReport) -> tuple[bool, str]:
    """Whether ``report`` passed, and the sentence that says so (without the time)."""
    passed = sum(result.passed for result in report.results)
    total = len(report.results)
    noun = "scenario" if total == 1 else "scenarios"
    if report.passed:
        return True, f"{'All ' if total > 1 else ''}{total} {noun} passed"
    return False, f"{total - passed} of {total} {noun} FAILED"


def render_html(
    report: LoadTestReport, work: str, run: ScenarioRun | None = None
) -> str:
    """The whole page: title, verdict, the scenario table, then the charts.

    ``run`` adds the scenario run's charts; an HTTP result brings its own.

    Raises:
      ModuleNotFoundError: plotly is not installed.
    """
    import plotly.offline

    figures: list[tuple[str, Figure]] = []
    for result in report.results:
        if isinstance(result, HttpLoadResult):
            figures += _http_figures(result)
    if run is not None:
        figures += _scenario_figures(report, run)
    charts = "\n".join(
        f'<section class="chart" data-chart="{name}">'
        + figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{name}",
            default_height="360px",
            config={"displaylogo": False, "responsive": True},
        )
        + "</section>"
        for name, figure in figures
    )
    passed, verdict = summary(report)
    title = f"trio-sessions load test ({work})"
    return _PAGE.format(
        title=html.escape(title),
        plotly=plotly.offline.get_plotlyjs(),
        style=_STYLE,
        verdict_class="pass" if passed else "fail",
        verdict=html.escape(f"{verdict} in {report.elapsed:.2f} s."),
        generated=html.escape(
            f"trio-sessions {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
        ),
        table=_table(report),
        charts=charts,
    )


def _table(report: LoadTestReport) -> str:
    rows = []
    for number, result in enumerate(report.results, 1):
        problems = "".join(
            f'<div class="problem">{html.escape(problem)}</div>'
            for problem in result.problems
        )
        verdict = "PASS" if result.passed else "FAIL"
        rows.append(
            f"<tr><td>{number}</td><td>{html.escape(result.title)}</td>"
            f'<td class="{verdict.lower()}">{verdict}</td>'
            f"<td>{html.escape(result.describe())}{problems}</td></tr>"
        )
    return (
        '<table class="scenarios"><thead><tr><th>#</th><th>Scenario</th>'
        "<th>Result</th><th>Figures</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _layout(
    title: str, x: str, y: str, *, log: bool = False, **more: Any
) -> dict[str, Any]:
    yaxis = {"type": "log"} if log else {"rangemode": "tozero"}
    return {
        "title": {"text": title, "x": 0.02},
        "template": "plotly_white",
        "xaxis": {"title": {"text": x}},
        "yaxis": {"title": {"text": y}, **yaxis},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 90},
        "legend": {"orientation": "h", "y": -0.3},
        **more,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _http_figures(result: HttpLoadResult) -> list[tuple[str, Figure]]:
    import plotly.graph_objects as go

    lat = result.latency
    names = ["p50", "p90", "p99", "p99.9", "max"]
    values = [_ms(v) for v in (lat.p50, lat.p90, lat.p99, lat.p999, lat.max)]
    latency = go.Figure(
        go.Bar(
            x=names,
            y=values,
            text=["-" if v is None else f"{v:.1f} ms" for v in values],
            textposition="outside",
            marker_color="#3b75af",
        ),
        layout=_layout(
            "Latency percentiles",
            f"percentile of {lat.count:,} responses"
            + (", from each one's intended send time" if result.rate else ""),
            "latency (ms)",
        ),
    )
    series = result.timeline
    times = series.times
    throughput = go.Figure(layout=_layout("Throughput", "time (s)", "responses/s"))
    for outcome in OUTCOMES:
        if any(series.counts[outcome]):
            throughput.add_trace(
                go.Scatter(
                    x=times,
                    y=series.rate(outcome),
                    name=_LABELS[outcome],
                    stackgroup="responses",
                    line={"color": _COLOURS[outcome]},
                )
            )
    in_flight = go.Figure(
        go.Scatter(
            x=times,
            y=series.levels["in_flight"],
            name="in flight",
            line={"color": "#3b75af", "shape": "hv"},
        ),
        layout=_layout("Requests in flight", "time (s)", "requests"),
    )
    counts = {
        "2xx": result.success_2xx,
        "503": result.status_503,
        "504": result.status_504,
        "other": result.other_status,
        "errors": result.errors,
    }
    outcomes = go.Figure(
        go.Bar(
            x=[_LABELS[name] for name in counts],
            y=list(counts.values()),
            text=[f"{count:,}" for count in counts.values()],
            textposition="outside",
            marker_color=[_COLOURS[name] for name in counts],
        ),
        layout=_layout("Outcomes", "response", "requests"),
    )
    return [
        ("latency", latency),
        ("throughput", throughput),
        ("active", in_flight),
        ("outcomes", outcomes),
    ]


def _scenario_figures(
    report: LoadTestReport, run: ScenarioRun
) -> list[tuple[str, Figure]]:
    import plotly.graph_objects as go

    # Each scenario opens one manager, in the order the report lists them.
    results = [r for r in report.results if not isinstance(r, HttpLoadResult)]
    if len(results) == len(run.statistics):
        names = [result.name for result in results]
    else:  # pragma: no cover - a scenario of a user's own that opens several
        names = [f"manager {index + 1}" for index in range(len(run.statistics))]
    latency = go.Figure(
        layout=_layout(
            "Session duration percentiles",
            "scenario",
            "duration (ms)",
            log=True,
            barmode="group",
        )
    )
    for field, label in (*_PERCENTILES, ("max", "max")):
        latency.add_trace(
            go.Bar(
                x=names,
                y=[_ms(getattr(s.durations, field)) for s in run.statistics],
                name=label,
            )
        )
    series = run.series
    times = series.times
    marks = list(zip(names, (at for at, _ in series.marks), strict=False))
    throughput = go.Figure(
        go.Scatter(
            x=times,
            y=series.rate("completed"),
            name="completed",
            line={"color": _COLOURS["succeeded"]},
        ),
        layout=_layout("Sessions completed per second", "time (s)", "sessions/s"),
    )
    active = go.Figure(layout=_layout("Active sessions", "time (s)", "sessions"))
    for level, colour in (("active", "#3b75af"), ("waiting", "#e8a33d")):
        active.add_trace(
            go.Scatter(
                x=times,
                y=series.levels[level],
                name=level,
                line={"color": colour, "shape": "hv"},
            )
        )
    for figure in (throughput, active):
        _mark_scenarios(figure, marks, times[-1] if times else 0.0)
    outcomes = go.Figure(
        layout=_layout("Outcomes by scenario", "scenario", "sessions", barmode="stack")
    )
    for field in ("succeeded", "failed", "timed_out", "cancelled", "rejected"):
        outcomes.add_trace(
            go.Bar(
                x=names,
                y=[getattr(s, field) for s in run.statistics],
                name=_LABELS[field],
                marker_color=_COLOURS[field],
            )
        )
    return [
        ("latency", latency),
        ("throughput", throughput),
        ("active", active),
        ("outcomes", outcomes),
    ]


def _mark_scenarios(
    figure: Figure, marks: Sequence[tuple[str, float]], span: float
) -> None:
    """A dotted line where each scenario starts; named where the name fits."""
    import plotly.graph_objects as go

    # Scenarios of a few milliseconds start closer than a label is wide:
    # the longest ones are named first, then any other that has room.
    starts = [at for _, at in marks]
    ends = [*starts[1:], span]
    lengths = {at: end - at for at, end in zip(starts, ends, strict=True)}
    named: list[float] = []
    for at in sorted(starts, key=lengths.__getitem__, reverse=True):
        if all(abs(at - other) > span / 40 for other in named):
            named.append(at)
    for name, at in marks:
        figure.add_vline(
            x=at,
            line={"dash": "dot", "color": "#999", "width": 1},
            annotation=(
                {"text": name, "textangle": -90, "font": {"size": 10}}
                if at in named
                else None
            ),
        )
    figure.add_trace(
        go.Scatter(
            x=[at for _, at in marks],
            y=[0] * len(marks),
            mode="markers",
            marker={"symbol": "triangle-up", "size": 9, "color": "#999"},
            hovertext=[f"{name} starts" for name, _ in marks],
            hoverinfo="text+x",
            name="scenario starts",
        )
    )


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 16px; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; }
.meta { color: #777; margin: 0 0 12px; }
.verdict { font-weight: 600; font-size: 16px; }
.verdict.pass, td.pass { color: #2e9d52; }
.verdict.fail, td.fail, .problem { color: #d64541; }
table.scenarios { border-collapse: collapse; width: 100%; margin: 12px 0 20px; }
table.scenarios th, table.scenarios td { text-align: left; padding: 5px 10px;
       border-bottom: 1px solid #e4e4e4; vertical-align: top; }
table.scenarios th { border-bottom: 2px solid #ccc; }
td.pass, td.fail { font-weight: 600; }
/* Two fixed columns: each chart is drawn as the page loads, at its final width. */
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
@media (max-width: 1000px) { .charts { grid-template-columns: minmax(0, 1fr); } }
.chart { border: 1px solid #e4e4e4; border-radius: 6px; padding: 4px; height: 370px; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
<script>{plotly}</script>
</head>
<body>
<h1>{title}</h1>
<p class="meta">{generated}</p>
<p class="verdict {verdict_class}">{verdict}</p>
{table}
<div class="charts">
{charts}
</div>
</body>
</html>
"""
