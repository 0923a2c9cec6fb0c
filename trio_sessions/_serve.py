"""The ``trio-sessions serve`` subcommand: the demo app of :mod:`trio_sessions.demo`.

``configure_parser`` adds the options to the CLI's subparser; ``run`` serves until
SIGINT/SIGTERM, drains, prints the shutdown report and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys

import trio

from . import SessionConfig

__all__ = ["configure_parser", "run"]

_INSTALL_HINT = "trio-sessions serve needs: pip install 'trio-sessions[servers]'"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser``.

    ::

        parser = argparse.ArgumentParser(prog="trio-sessions serve")
        configure_parser(parser)
        sys.exit(run(parser.parse_args()))
    """
    parser.description = (
        "Serve the demo HTTP app (/, /slow?seconds=N, POST /echo, /error, "
        "/metrics, /healthz) on Hypercorn, every request a session."
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument(
        "--port", type=int, default=8000, help="0 picks a free port; default: 8000"
    )
    parser.add_argument(
        "--max-sessions", type=int, default=100, help="capacity; default: 100"
    )
    parser.add_argument(
        "--max-waiting",
        type=int,
        default=0,
        help="requests allowed to queue for a slot; default: 0",
    )
    parser.add_argument(
        "--wait-timeout",
        type=_seconds_or_none,
        default=None,
        help="longest wait in the queue, seconds or 'none'; default: none",
    )
    parser.add_argument(
        "--request-timeout",
        type=_seconds_or_none,
        default=30.0,
        help="per-request deadline, seconds or 'none'; default: 30",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="drain budget on SIGINT/SIGTERM, seconds; default: 5",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_048_576,
        help="largest request body; default: 1048576",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; return 0 after a drain, 2 on bad options.

    ::

        status = run(parser.parse_args(["--port", "0", "--max-sessions", "50"]))
    """
    try:
        config = SessionConfig(
            max_sessions=args.max_sessions,
            max_waiting=args.max_waiting,
            wait_timeout=args.wait_timeout,
            request_timeout=args.request_timeout,
            shutdown_timeout=args.shutdown_timeout,
        )
    except (TypeError, ValueError) as exc:
        print(f"trio-sessions serve: {exc}", file=sys.stderr)
        return 2
    try:
        import hypercorn  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError:
        print(_INSTALL_HINT, file=sys.stderr)
        return 2
    status: int = trio.run(_serve, args, config)
    return status


async def _serve(args: argparse.Namespace, config: SessionConfig) -> int:
    from .demo import build_app, serve

    app = build_app(config, max_body_bytes=args.max_body_bytes)
    return await serve(
        app, host=args.host, port=args.port, shutdown_timeout=config.shutdown_timeout
    )


def _seconds_or_none(text: str) -> float | None:
    if text.strip().lower() in {"none", "inf", "off"}:
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or 'none', got {text!r}"
        ) from None
