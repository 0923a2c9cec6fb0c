"""The ``trio-sessions serve`` subcommand: the demo app of :mod:`trio_sessions.demo`.

``configure_parser`` adds the options (the example servers' own, see
:mod:`trio_sessions._server_options`) to the CLI's subparser; ``run`` serves
until SIGINT/SIGTERM, drains, prints the shutdown report and returns the status.
"""

from __future__ import annotations

import argparse
import sys

from .._server_options import (
    EPILOG,
    EXIT_USAGE,
    add_http_options,
    add_session_options,
    missing_extra,
    request_key,
    request_priority,
    session_config,
)
from .._server_options import run as run_server

__all__ = ["configure_parser", "run"]

PROG = "trio-sessions serve"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser``.

    ::

        parser = argparse.ArgumentParser(prog="trio-sessions serve")
        configure_parser(parser)
        sys.exit(run(parser.parse_args()))
    """
    parser.description = (
        "Serve the demo HTTP app (/, /slow?seconds=N, POST /echo, /error,\n"
        "/metrics, /healthz) on Hypercorn, every request a session.\n"
        "Needs: pip install 'trio-sessions[servers]'."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = f"{parser.epilog}\n\n{EPILOG}" if parser.epilog else EPILOG
    add_http_options(add_session_options(parser, port=8000))


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; return the status the epilog documents.

    0 after a drain, 1 when the address cannot be bound, 2 on bad options or
    a missing extra, 130 when a second signal cut the drain short::

        status = run(parser.parse_args(["--port", "0", "--max-sessions", "50"]))
    """
    try:
        session_config(args)
    except (TypeError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        import hypercorn  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        return missing_extra(PROG, exc)
    return run_server(PROG, _serve, args)


async def _serve(args: argparse.Namespace) -> int:
    from ..demo import build_app, serve

    config = session_config(args)
    app = build_app(
        config,
        max_body_bytes=args.max_body_bytes,
        inline=not args.spawned,
        key=request_key(args.key),
        priority=request_priority(args.priority_header),
    )
    return await serve(
        app, host=args.host, port=args.port, shutdown_timeout=config.shutdown_timeout
    )
