"""The ``trio-sessions`` command: its parser, and ``main()``, which dispatches.

Each subcommand has its own module, ``_loadtest`` (with ``_render`` to show
its report) and ``_serve``; what they share is in ``_usage``. Their heavy
imports (rich, httptools, plotly, Hypercorn) wait until a run needs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from . import _loadtest, _serve
from ._usage import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    ArgumentParser,
    UsageError,
)

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``trio-sessions`` command and its subcommands."""
    parser = ArgumentParser(
        prog=PROG,
        description="Bounded, timed, drained and measured request sessions for Trio.",
        epilog=(
            "example: trio-sessions loadtest   (run 'trio-sessions loadtest --help' "
            "for its options)"
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=ArgumentParser
    )
    _loadtest.configure_parser(
        commands.add_parser(
            "loadtest", help="run the load-test scenarios and print a PASS/FAIL report"
        )
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
    _serve.configure_parser(serve)
    return parser


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
            return _serve.run(args)
        return _loadtest.run(args)
    except UsageError as exc:
        message = str(exc)
        if not message.startswith(PROG):
            message = f"{PROG}: error: {message}"
        print(message, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
