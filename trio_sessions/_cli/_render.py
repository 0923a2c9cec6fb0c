"""How ``trio-sessions loadtest`` shows a report: a rich table, or its plain twin.

rich, when installed (the ``cli`` extra), draws the table and the progress
bars; without it a plain-text table with the same columns stands in.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

from ..loadtest import LoadTestReport
from ..loadtest._html import summary
from ._usage import PROG

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


def have_rich() -> bool:
    """True when rich can be imported."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def console(file: TextIO | None = None) -> Console:
    """A rich console on ``file``, 120 columns wide when it is not a terminal."""
    from rich.console import Console

    found = Console(file=file, highlight=False)
    if not found.is_terminal and "COLUMNS" not in os.environ:
        # Rich assumes 80 columns in a pipe or file; a report read later in a
        # log or a README is easier to read one scenario per line.
        found = Console(file=file, highlight=False, width=120)
    return found


class ProgressBars:
    """Rich progress bars on stderr, shown only for scenarios running over a second."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._titles = {
            "shutdown": "graceful shutdown",
            "scale": "scale",
            "churn": "sustained churn",
            "http": "HTTP load",
        }

    def __call__(self, name: str, done: int, total: int) -> None:
        now = time.monotonic()
        task = self._tasks.get(name)
        if task is None:
            self._started[name] = now
            task = self._progress.add_task(
                self._titles.get(name, name), total=total, visible=False
            )
            self._tasks[name] = task
        visible = now - self._started[name] > 1.0 and done < total
        self._progress.update(task, completed=done, total=total, visible=visible)


def progress_bars(err: Console) -> Progress:
    """The live progress display on ``err``; drawn only on a terminal."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


def notice(message: str) -> None:
    """Print a notice of the run on stderr, where rich is not in charge."""
    print(f"{PROG} loadtest: {message}", file=sys.stderr, flush=True)


def rich_notice(err: Console, message: str) -> None:
    """Print a notice above the live progress bars, which rich then redraws."""
    err.print(
        f"{PROG} loadtest: {message}", style="yellow", markup=False, soft_wrap=True
    )


def _render_table(report: LoadTestReport, work: str, console: Console) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"trio-sessions load test ({work})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("#", justify="right", style="dim")
    table.add_column("Scenario")
    table.add_column("Result")
    table.add_column("Figures")
    for number, result in enumerate(report.results, 1):
        verdict = (
            Text("PASS", style="bold green")
            if result.passed
            else Text("FAIL", style="bold red")
        )
        figures = Text(result.describe())
        for problem in result.problems:
            figures.append("\n" + problem, style="red")
        table.add_row(str(number), result.title, verdict, figures)
    console.print(table)
    passed, verdict_line = summary(report)
    style = "bold green" if passed else "bold red"
    console.print(f"[{style}]{verdict_line}[/] in {report.elapsed:.2f} s.")


def plain_table(report: LoadTestReport, work: str) -> str:
    """The report as the rich table's plain-text twin, for when rich is missing."""
    header = ("#", "Scenario", "Result", "Figures")
    rows = [
        (str(number), result.title, "PASS" if result.passed else "FAIL")
        for number, result in enumerate(report.results, 1)
    ]
    widths = [max(len(row[i]) for row in [header[:3], *rows]) for i in range(3)]
    indent = " " * (sum(widths) + 3 * len(widths) + 1)

    def line(cells: tuple[str, ...], figures: str) -> str:
        number, title, verdict = cells
        return (
            f" {number:>{widths[0]}}   {title:<{widths[1]}}   "
            f"{verdict:<{widths[2]}}   {figures}"
        ).rstrip()

    body: list[str] = []
    for cells, result in zip(rows, report.results, strict=True):
        body.append(line(cells, result.describe()))
        body.extend(indent + problem for problem in result.problems)
    head = line(header[:3], header[3])
    rule = " " + "-" * (max(map(len, [head, *body])) - 1)
    _, verdict_line = summary(report)
    lines = [f"trio-sessions load test ({work})", "", head, rule, *body]
    lines += ["", f"{verdict_line} in {report.elapsed:.2f} s."]
    return "".join(text + "\n" for text in lines)


def print_table(report: LoadTestReport, work: str, rich: bool) -> None:
    """Print the report on stdout: rich's table, or the plain one without rich."""
    if not rich:
        sys.stdout.write(plain_table(report, work))
        return
    out = console()
    if out.is_terminal:
        _render_table(report, work, out)
    else:
        # In a pipe or a file, drop the padding rich adds to every line.
        with out.capture() as captured:
            _render_table(report, work, out)
        lines = captured.get().splitlines()
        sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))
