"""The ``trio-sessions loadtest`` subcommand: its options, and one run of them.

The scenarios are :mod:`trio_sessions.loadtest`'s; :mod:`._render` shows the report.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from .. import loadtest
from ..loadtest._html import ScenarioRun, have_plotly, render_html
from ..loadtest._http import have_client
from ..loadtest._runner import unknown_scenario
from ..loadtest._timeline import ManagerWatch
from . import _render
from ._usage import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, UsageError

# The interpreter's own pip, which works as typed whatever `pip` is on PATH.
_INSTALL_HINT = f"{sys.executable} -m pip install 'trio-sessions[cli]'"
_REPORT_HINT = f"{sys.executable} -m pip install 'trio-sessions[report]'"
# The churn scenario's rate when --rate is not given (with --url it is unset).
_CHURN_RATE = 1000.0

_EXAMPLES = """\
examples:
  trio-sessions loadtest                      the eight scenarios, in a few seconds
  trio-sessions loadtest --json report.json   also write the report as JSON
  trio-sessions loadtest --json -             the JSON report on stdout, no table
  trio-sessions loadtest --sessions 100000    also hold 100,000 sessions at once
  trio-sessions loadtest --duration 30 --rate 2000
                                              also 30 s of churn at 2,000 sessions/s
  trio-sessions loadtest --handler myapp.handlers:handle_ping
                                              your async function as the work
  trio-sessions loadtest --html report.html   also write an HTML page with charts
  trio-sessions loadtest --url http://127.0.0.1:8000/healthz --concurrency 100
                                              drive a running HTTP server, such
                                              as 'trio-sessions serve --port 8000'
  trio-sessions loadtest --url http://127.0.0.1:8000/ --rate 500 --duration 10
                                              500 requests/s on a fixed schedule,
                                              latency from each one's due time

exit status: 0 when every scenario passed, 1 when one failed, 2 on a usage error.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _scenario_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in loadtest.SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(unknown_scenario(unknown or [repr(text)]))
    return names


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL, got {text!r}"
        )
    return text


def configure_parser(lt: argparse.ArgumentParser) -> None:
    """Add the ``loadtest`` description, examples and options to ``lt``."""
    lt.description = (
        "Run load-test scenarios against a session manager and print a "
        "PASS/FAIL report with each scenario's figures. By default the eight "
        "standard scenarios run on simulated work (a 10 ms sleep) in a few "
        "seconds; --sessions and --duration add scale scenarios, --handler "
        "swaps in your own async function, and --url load-tests a running "
        "HTTP server instead; --html also writes the report as a page of "
        "charts."
    )
    lt.epilog = _EXAMPLES
    lt.formatter_class = argparse.RawDescriptionHelpFormatter
    work = lt.add_argument_group("what to load")
    target = work.add_mutually_exclusive_group()
    target.add_argument(
        "--handler",
        metavar="MODULE:FUNCTION",
        help=(
            "run the scenarios with this async function (called with no "
            "arguments) as every session's work, instead of a 10 ms sleep; "
            "the module is imported from the current directory or sys.path "
            "(example: --handler myapp.handlers:handle_ping)"
        ),
    )
    target.add_argument(
        "--url",
        type=_url,
        help=(
            "instead of the scenarios, send GET requests to a running HTTP "
            "server over --concurrency kept-alive HTTP/1.1 connections "
            "(httptools on Trio) and report latency percentiles (p50 to "
            "p99.9), throughput and counts of 2xx / 503 / 504 / errors "
            "(example: --url http://127.0.0.1:8000/healthz)"
        ),
    )
    scenarios = lt.add_argument_group("scenarios")
    scenarios.add_argument(
        "--only",
        type=_scenario_names,
        metavar="NAME[,NAME...]",
        help=(
            "run only these scenarios, from: "
            f"{', '.join(loadtest.SCENARIOS)} "
            "(example: --only capacity,shutdown)"
        ),
    )
    scenarios.add_argument(
        "--sessions",
        type=_positive_int,
        metavar="N",
        help=(
            "also run the scale scenario: N sessions held open at once "
            "(example: --sessions 100000)"
        ),
    )
    scenarios.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help=(
            "also run the churn scenario for this long, starting --rate "
            "sessions per second; with --url, send requests for this long "
            "instead of --requests (example: --duration 30)"
        ),
    )
    scenarios.add_argument(
        "--rate",
        type=_positive_float,
        metavar="PER_SECOND",
        help=(
            "sessions per second of the churn scenario (default: 1000); with "
            "--url, an open loop of this many requests per second instead of "
            "a closed one: request i is due i/RATE s after the start, waits "
            "for a free connection if none is, and its latency counts from "
            "when it was due (example: --duration 60 --rate 5000)"
        ),
    )
    scenarios.add_argument(
        "--capacity",
        type=_positive_int,
        default=200,
        metavar="N",
        help=(
            "max_sessions of the churn scenario's manager "
            "(default: 200; example: --capacity 1000)"
        ),
    )
    scenarios.add_argument(
        "--iterations",
        type=_positive_int,
        default=1000,
        metavar="N",
        help=(
            "session creations timed by the baseline scenario "
            "(default: 1000; example: --iterations 100000)"
        ),
    )
    http = lt.add_argument_group("HTTP load (with --url)")
    http.add_argument(
        "--concurrency",
        type=_positive_int,
        default=50,
        metavar="N",
        help=(
            "connections, each with one request in flight at a time; without "
            "--rate each sends its next request once answered "
            "(default: 50; example: --concurrency 200)"
        ),
    )
    http.add_argument(
        "--requests",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="requests to send in all (default: 1000; example: --requests 10000)",
    )
    http.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help=(
            "client processes sharing the connections and the schedule, for "
            "a load one core cannot send; their latencies are merged exactly "
            "(default: 1; example: --processes 2)"
        ),
    )
    http.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="client timeout of one request (default: 10; example: --timeout 2.5)",
    )
    output = lt.add_argument_group("output")
    output.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help=(
            "write the report as JSON to PATH, and still print the table; "
            "with - (or no PATH) print the JSON on stdout instead of the table "
            "(example: --json report.json)"
        ),
    )
    output.add_argument(
        "--html",
        metavar="PATH",
        help=(
            "also write the report as one self-contained HTML page: the table, "
            "and charts of latency percentiles, throughput and active sessions "
            "over time, and outcomes; needs trio-sessions[report] "
            "(example: --html report.html)"
        ),
    )
    output.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help=(
            "print nothing but failures (on stderr); the exit status tells "
            "(example: trio-sessions loadtest -q && echo ok)"
        ),
    )


def _load_handler(spec: str) -> loadtest.Work:
    """Import ``module:function``; check it is an async function of no arguments."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(
            "--handler expects MODULE:FUNCTION (like myapp.handlers:handle), "
            f"got {spec!r}"
        )
    # A console script does not put the current directory on sys.path; python -m does.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"--handler: cannot import module {module_name!r}: {exc}"
        ) from exc
    except Exception as exc:
        raise UsageError(
            f"--handler: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(
                f"--handler: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    is_async = inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - async callable objects count too
    )
    if not callable(obj) or not is_async:
        raise UsageError(
            f"--handler: {spec} is not an async function (it is a "
            f"{type(obj).__name__}); define it with 'async def'"
        )
    try:
        inspect.signature(obj).bind()
    except TypeError:
        raise UsageError(
            f"--handler: {spec} must be callable with no arguments"
        ) from None
    except ValueError:  # pragma: no cover - builtins without a signature
        pass
    handler: loadtest.Work = obj
    return handler


async def _run(
    args: argparse.Namespace,
    handler: loadtest.Work | None,
    progress: Callable[[str, int, int], None] | None,
    notice: Callable[[str], None],
) -> tuple[loadtest.LoadTestReport, ScenarioRun | None]:
    """Run the load; with --html, also what the charts of a scenario run need."""
    if args.url is not None:
        start = trio.current_time()
        http_progress = None
        if progress is not None:
            report_progress = progress

            def http_progress(done: int, total: int) -> None:
                report_progress("http", done, total)

        result = await loadtest.http_load(
            args.url,
            requests=args.requests,
            concurrency=args.concurrency,
            duration=args.duration,
            rate=args.rate,
            processes=args.processes,
            timeout=args.timeout,
            progress=http_progress,
        )
        report = loadtest.LoadTestReport(
            results=(result,), elapsed=trio.current_time() - start
        )
        return report, None
    scenarios = partial(
        loadtest.run_loadtest,
        handler,
        only=args.only,
        sessions=args.sessions,
        duration=args.duration,
        rate=_CHURN_RATE if args.rate is None else args.rate,
        capacity=args.capacity,
        iterations=args.iterations,
        progress=progress,
        notice=notice,
    )
    if args.html is None:
        return await scenarios(), None
    watch = ManagerWatch()
    report = await watch.run(scenarios)
    statistics = [manager.statistics() for manager in watch.managers]
    return report, ScenarioRun(watch.series(), statistics)


def _destination(option: str, path: str | None) -> str | None:
    """Check, before a run of minutes, that a report can be written there."""
    if path is None or path == "-":
        return path
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path!r} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{option}: directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{option}: cannot write to directory {directory!r}")
    return path


def _write(path: str, text: str, what: str) -> bool:
    """Write ``text`` to ``path``; say why not on stderr and return False."""
    try:
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        print(f"{PROG}: cannot write the {what}: {exc}", file=sys.stderr)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    """Run the load test ``args`` ask for, show its report, return the status."""
    if args.url is not None:
        if args.sessions is not None or args.only is not None:
            raise UsageError(
                f"{PROG} loadtest: error: --url runs the HTTP load only; "
                "it does not take --sessions or --only"
            )
        if not have_client():
            raise UsageError(
                f"{PROG}: --url needs httptools; install it with: {_INSTALL_HINT}"
            )
    json_path = _destination("--json", args.json)
    if args.html is not None:
        if args.html == "-":
            raise UsageError(f"{PROG} loadtest: error: --html needs a file name")
        _destination("--html", args.html)
        if not have_plotly():
            raise UsageError(
                f"{PROG}: --html needs plotly; install it with: {_REPORT_HINT}"
            )
    if json_path == "-" and args.quiet:
        raise UsageError(
            f"{PROG} loadtest: error: --json - prints the report on stdout and "
            "--quiet prints nothing there: choose one (or --json PATH --quiet)"
        )
    handler = None if args.handler is None else _load_handler(args.handler)
    if args.url is not None:
        work = f"GET {args.url}"
    elif args.handler is not None:
        work = f"work: {args.handler}"
    else:
        work = f"work: simulated, {loadtest.WORK_SECONDS * 1000:g} ms sleep"
    table = not (json_path == "-" or args.quiet)
    rich = table and _render.have_rich()
    if not rich:
        report, run_figures = trio.run(_run, args, handler, None, _render.notice)
    else:
        err = _render.console(sys.stderr)
        progress = _render.progress_bars(err)

        def notice(message: str) -> None:
            _render.rich_notice(err, message)

        with progress:
            report, run_figures = trio.run(
                _run, args, handler, _render.ProgressBars(progress), notice
            )
    if json_path is not None:
        data = report.as_dict()
        data["work"] = work.removeprefix("work: ")
        text = json.dumps(data, indent=2) + "\n"
        if json_path == "-":
            sys.stdout.write(text)
        elif not _write(json_path, text, "JSON report"):
            return EXIT_USAGE
    if args.html is not None:
        page = render_html(report, work.removeprefix("work: "), run_figures)
        if not _write(args.html, page, "HTML report"):
            return EXIT_USAGE
    if args.quiet:
        for problem in report.problems:
            print(f"FAIL {problem}", file=sys.stderr)
    elif table:
        _render.print_table(report, work, rich)
    return EXIT_OK if report.passed else EXIT_FAILED
