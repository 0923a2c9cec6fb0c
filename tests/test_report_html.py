"""The HTML report in a real headless Chromium: every chart draws, offline, cleanly.

Each test writes the report of a small, quick run (an HTTP load of a local
server on 127.0.0.1, port 0; a few scenarios through the CLI), opens it with
:mod:`chromium`, and checks that each chart drew its SVG and its traces, that
the page logged no error and requested nothing but itself, and that the
screenshot (``report.png`` in the test's tmp_path) shows something in every
chart's box. Skipped without Chromium, except where ``CI`` is set.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from chromium import Page, open_page, require_chromium
from hypercorn_server import running_server
from test_loadtest_http import mixed_status_app

from trio_sessions import loadtest
from trio_sessions._cli import main
from trio_sessions.loadtest._html import render_html

CHARTS = ["latency", "throughput", "active", "outcomes"]
HEIGHT = 1600

# Resolves once plotly has drawn every chart (or after 10 s, with what it
# has), with what each chart holds and how tall the page is.
DRAWN = """new Promise((resolve) => {
  let tries = 0;
  const look = () => {
    const charts = [...document.querySelectorAll("section.chart")].map((chart) => ({
      name: chart.dataset.chart,
      svgs: chart.querySelectorAll("svg.main-svg").length,
      traces: chart.querySelectorAll(".cartesianlayer .trace").length,
      paths: [...chart.querySelectorAll(".cartesianlayer .trace path")].filter(
        (path) => (path.getAttribute("d") || "").length > 8
      ).length,
    }));
    const drawn = charts.length && charts.every((c) => c.svgs && c.traces);
    if (drawn || ++tries > 200) {
      resolve({ charts, height: document.documentElement.scrollHeight });
    } else {
      setTimeout(look, 50);
    }
  };
  look();
})"""


def check_drawn(page: Page) -> None:
    """Every chart drew, the page fits the screenshot, nothing failed or was fetched."""
    assert page.errors == []
    assert page.requests == []
    found: dict[str, Any] = page.found
    charts = found["charts"]
    assert [chart["name"] for chart in charts] == CHARTS
    for chart in charts:
        assert chart["svgs"] > 0, chart
        assert chart["traces"] > 0, chart
        assert chart["paths"] > 0, chart
    assert found["height"] <= HEIGHT
    # A blank box has one colour; a chart has axes, text, lines and fills.
    assert len(page.colours) == len(CHARTS)
    assert min(page.colours) > 20, page.colours


async def test_http_report_renders_in_chromium(tmp_path: Path) -> None:
    """The report of an open-loop HTTP load draws its four charts."""
    require_chromium()
    with trio.fail_after(60):
        async with running_server(mixed_status_app()) as base:
            result = await loadtest.http_load(
                f"{base}/mixed", requests=200, concurrency=4, rate=400
            )
    assert result.passed, result.problems
    report = loadtest.LoadTestReport(results=(result,), elapsed=result.elapsed)
    path = tmp_path / "report.html"
    await trio.Path(path).write_text(
        render_html(report, f"GET {base}/mixed"), encoding="utf-8"
    )
    page = await open_page(
        path, DRAWN, tmp_path / "report.png", regions="section.chart", height=HEIGHT
    )
    check_drawn(page)


def test_scenario_report_renders_in_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``loadtest --html`` of a scenario run writes a page whose charts draw."""
    require_chromium()
    path = tmp_path / "report.html"
    argv = ["loadtest", "-q", "--only", "held,capacity,metrics", "--html", str(path)]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""
    page = trio.run(
        partial(
            open_page,
            path,
            DRAWN,
            tmp_path / "report.png",
            regions="section.chart",
            height=HEIGHT,
        )
    )
    check_drawn(page)
