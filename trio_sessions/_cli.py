"""The ``trio-sessions`` command: argument parsing and rendering, nothing else.

The scenarios live in :mod:`trio_sessions.loadtest`; rich, when installed (the
``cli`` extra), draws the table, and a plain-text table stands in without it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import trio

from . import __version__, loadtest

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

PROG = "trio-sessions"

# Exit statuses: like pytest, 1 means "ran, and something failed".
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# The interpreter's own pip, which works as typed whatever `pip` is on PATH.
_INSTALL_HINT = f"{sys.executable} -m pip install 'trio-sessions[cli]'"

_LOADTEST_EXAMPLES = """\
examples:
  trio-sessions loadtest                      the eight scenarios, in a few seconds
  trio-sessions loadtest --json report.json   also write the report as JSON
  trio-sessions loadtest --json -             the JSON report on stdout, no table
  trio-sessions loadtest --sessions 100000    also hold 100,000 sessions at once
  trio-sessions loadtest --duration 30 --rate 2000
                                              also 30 s of churn at 2,000 sessions/s
  trio-sessions loadtest --handler myapp.handlers:handle_ping
                                              your async function as the work
  trio-sessions loadtest --url http://127.0.0.1:8000/healthz --concurrency 100
                                              drive a running HTTP server, such
                                              as 'trio-sessions serve --port 8000'

exit status: 0 when every scenario passed, 1 when one failed, 2 on a usage error.
"""


class _UsageError(Exception):
    """A bad argument found after parsing; reported with exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so main() returns a status."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise _UsageError(f"{self.prog}: error: {message}")


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
    known = (*loadtest.SCENARIO_NAMES, "scale", "churn")
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or repr(text)}; "
            f"choose from {', '.join(known)}"
        )
    return names


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL, got {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``trio-sessions`` command and its subcommands."""
    parser = _ArgumentParser(
        prog=PROG,
        description="Bounded, timed, drained and measured request sessions for Trio.",
        epilog=(
            "example: trio-sessions loadtest   (run 'trio-sessions loadtest --help' "
            "for its options)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_ArgumentParser
    )
    lt = commands.add_parser(
        "loadtest",
        help="run the load-test scenarios and print a PASS/FAIL report",
        description=(
            "Run load-test scenarios against a session manager and print a "
            "PASS/FAIL report with each scenario's figures. By default the eight "
            "standard scenarios run on simulated work (a 10 ms sleep) in a few "
            "seconds; --sessions and --duration add scale scenarios, --handler "
            "swaps in your own async function, and --url load-tests a running "
            "HTTP server instead."
        ),
        epilog=_LOADTEST_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
            "server with httpx and report latency percentiles, throughput and "
            "counts of 2xx / 503 / 504 / errors "
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
            f"{', '.join((*loadtest.SCENARIO_NAMES, 'scale', 'churn'))} "
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
        default=1000.0,
        metavar="PER_SECOND",
        help=(
            "target sessions per second of the churn scenario "
            "(default: 1000; example: --duration 60 --rate 5000)"
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
        help="requests in flight at once (default: 50; example: --concurrency 200)",
    )
    http.add_argument(
        "--requests",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="requests to send in all (default: 1000; example: --requests 10000)",
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
        "-q",
        "--quiet",
        action="store_true",
        help=(
            "print nothing but failures (on stderr); the exit status tells "
            "(example: trio-sessions loadtest -q && echo ok)"
        ),
    )
    serve = commands.add_parser(
        "serve",
        help="serve the example HTTP app (Hypercorn + SessionMiddleware)",
        description=(
            "Serve the HTTP example's ASGI app on Hypercorn, every request a "
            "session: /, /slow?seconds=N, POST /echo, /error, /metrics, /healthz. "
            "SIGINT/SIGTERM drains, prints the shutdown report and exits 0. "
            "Needs: pip install 'trio-sessions[servers]'."
        ),
        epilog="example: trio-sessions serve --port 8000 --max-sessions 100",
    )
    # Imported here so that loadtest never pays for the server's imports.
    from ._serve import configure_parser

    configure_parser(serve)
    return parser


def _load_handler(spec: str) -> loadtest.Work:
    """Import ``module:function``; check it is an async function of no arguments."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise _UsageError(
            "--handler expects MODULE:FUNCTION (like myapp.handlers:handle), "
            f"got {spec!r}"
        )
    # A console script does not put the current directory on sys.path; python -m does.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise _UsageError(
            f"--handler: cannot import module {module_name!r}: {exc}"
        ) from exc
    except Exception as exc:
        raise _UsageError(
            f"--handler: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _UsageError(
                f"--handler: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    is_async = inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(
        getattr(obj, "__call__", None)  # noqa: B004 - async callable objects count too
    )
    if not callable(obj) or not is_async:
        raise _UsageError(
            f"--handler: {spec} is not an async function (it is a "
            f"{type(obj).__name__}); define it with 'async def'"
        )
    try:
        inspect.signature(obj).bind()
    except TypeError:
        raise _UsageError(
            f"--handler: {spec} must be callable with no arguments"
        ) from None
    except ValueError:  # pragma: no cover - builtins without a signature
        pass
    handler: loadtest.Work = obj
    return handler


class _ProgressBars:
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


def _console(file: TextIO | None = None) -> Console:
    from rich.console import Console

    console = Console(file=file, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Rich assumes 80 columns in a pipe or file; a report read later in a
        # log or a README is easier to read one scenario per line.
        console = Console(file=file, highlight=False, width=120)
    return console


def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _summary(report: loadtest.LoadTestReport) -> tuple[bool, str]:
    passed = sum(result.passed for result in report.results)
    total = len(report.results)
    noun = "scenario" if total == 1 else "scenarios"
    if report.passed:
        return True, f"{'All ' if total > 1 else ''}{total} {noun} passed"
    return False, f"{total - passed} of {total} {noun} FAILED"


def _render_table(report: loadtest.LoadTestReport, work: str, console: Console) -> None:
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
    passed, summary = _summary(report)
    style = "bold green" if passed else "bold red"
    console.print(f"[{style}]{summary}[/] in {report.elapsed:.2f} s.")


def _plain_table(report: loadtest.LoadTestReport, work: str) -> str:
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
    _, summary = _summary(report)
    lines = [f"trio-sessions load test ({work})", "", head, rule, *body]
    lines += ["", f"{summary} in {report.elapsed:.2f} s."]
    return "".join(text + "\n" for text in lines)


def _print_table(report: loadtest.LoadTestReport, work: str, rich: bool) -> None:
    if not rich:
        sys.stdout.write(_plain_table(report, work))
        return
    console = _console()
    if console.is_terminal:
        _render_table(report, work, console)
    else:
        # In a pipe or a file, drop the padding rich adds to every line.
        with console.capture() as captured:
            _render_table(report, work, console)
        lines = captured.get().splitlines()
        sys.stdout.write("".join(line.rstrip() + "\n" for line in lines))


def _notice(message: str) -> None:
    print(f"{PROG} loadtest: {message}", file=sys.stderr, flush=True)


async def _run(
    args: argparse.Namespace,
    handler: loadtest.Work | None,
    progress: Callable[[str, int, int], None] | None,
    notice: Callable[[str], None],
) -> loadtest.LoadTestReport:
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
            timeout=args.timeout,
            progress=http_progress,
        )
        return loadtest.LoadTestReport(
            results=(result,), elapsed=trio.current_time() - start
        )
    return await loadtest.run_loadtest(
        handler,
        only=args.only,
        sessions=args.sessions,
        duration=args.duration,
        rate=args.rate,
        capacity=args.capacity,
        iterations=args.iterations,
        progress=progress,
        notice=notice,
    )


def _json_destination(path: str | None) -> str | None:
    """Check, before a run of minutes, that the report can be written there."""
    if path is None or path == "-":
        return path
    if os.path.isdir(path):
        raise _UsageError(f"--json: {path!r} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise _UsageError(f"--json: directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK):
        raise _UsageError(f"--json: cannot write to directory {directory!r}")
    return path


def _loadtest(args: argparse.Namespace) -> int:
    if args.url is not None:
        if args.sessions is not None or args.only is not None:
            raise _UsageError(
                f"{PROG} loadtest: error: --url runs the HTTP load only; "
                "it does not take --sessions or --only"
            )
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise _UsageError(
                f"{PROG}: --url needs httpx; install it with: {_INSTALL_HINT}"
            ) from None
    json_path = _json_destination(args.json)
    if json_path == "-" and args.quiet:
        raise _UsageError(
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
    rich = table and _have_rich()
    if not rich:
        report = trio.run(_run, args, handler, None, _notice)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        err = _console(sys.stderr)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )

        def notice(message: str) -> None:
            # Printed above the live progress bars, which rich then redraws.
            err.print(
                f"{PROG} loadtest: {message}",
                style="yellow",
                markup=False,
                soft_wrap=True,
            )

        with progress:
            report = trio.run(_run, args, handler, _ProgressBars(progress), notice)
    if json_path is not None:
        data = report.as_dict()
        data["work"] = work.removeprefix("work: ")
        text = json.dumps(data, indent=2) + "\n"
        if json_path == "-":
            sys.stdout.write(text)
        else:
            try:
                with open(json_path, "w", encoding="utf-8") as file:
                    file.write(text)
            except OSError as exc:
                print(f"{PROG}: cannot write the JSON report: {exc}", file=sys.stderr)
                return EXIT_USAGE
    if args.quiet:
        for problem in report.problems:
            print(f"FAIL {problem}", file=sys.stderr)
    elif table:
        _print_table(report, work, rich)
    return EXIT_OK if report.passed else EXIT_FAILED


def _subcommand(
    parser: argparse.ArgumentParser, command: str | None
) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command is not None:
            found: argparse.ArgumentParser = action.choices[command]
            return found
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``trio-sessions`` command with ``argv`` and return its exit status.

    ``trio-sessions loadtest`` runs the load-test scenarios of
    :mod:`trio_sessions.loadtest` and returns 0 when they all pass, 1 when
    one fails and 2 on a usage error; ``trio-sessions serve`` serves the
    example HTTP app until SIGINT/SIGTERM::

        raise SystemExit(main(["loadtest", "--json", "report.json"]))
    """
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            # Report it with the usage of the subcommand it was given to.
            _subcommand(parser, args.command).error(
                f"unrecognized arguments: {' '.join(unknown)}"
            )
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if args.command == "serve":
            from ._serve import run

            return run(args)
        return _loadtest(args)
    except _UsageError as exc:
        message = str(exc)
        if not message.startswith(PROG):
            message = f"{PROG}: error: {message}"
        print(message, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
