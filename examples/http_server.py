"""HTTP server: Hypercorn on Trio, every request a session of one manager.

The app and its serving loop are :mod:`trio_sessions.demo`, which
``trio-sessions serve`` runs too, with the same options; this script adds the
optional fleet-wide limit. Endpoints: ``/`` (hello), ``/slow?seconds=N`` (try
timeouts), ``POST /echo`` (JSON echo), ``/error`` (raises), ``/metrics``
(Prometheus) and ``/healthz`` (503 while draining)::

    python examples/http_server.py --port 8000 --max-sessions 100 --request-timeout 5
    curl -i 'http://127.0.0.1:8000/slow?seconds=10'     # 504 after 5 s
    curl http://127.0.0.1:8000/metrics | grep trio_sessions_

With ``--redis-url redis://127.0.0.1:6379/0 --fleet-limit 40`` every process
started that way shares one fleet-wide limit of 40 sessions (a
:class:`~trio_sessions.redis.RedisSessionLimit`), and ``/metrics`` adds the
``trio_sessions_fleet_*`` gauges; Prometheus sums ``trio_sessions_active`` and
``trio_sessions_fleet_leases_held`` over the fleet, and takes the ``max`` of
``trio_sessions_fleet_leases``, which every process reports alike.

The first SIGINT/SIGTERM drains and prints the shutdown report; a second one
cancels what is left at once, prints the report too and exits 130. Exit
status: 0 after a drain, 1 when the address cannot be bound, 2 on a bad option
or a missing extra, 130 when a second signal cut the drain short.

Needs ``pip install trio-sessions[servers]`` (hypercorn, prometheus-client), and
``trio-sessions[redis]`` for ``--redis-url``.
"""

from __future__ import annotations

import argparse
import sys

from trio_sessions import _server_options as options

PROG = "http_server.py"

try:
    from trio_sessions.demo import build_app, serve
except ImportError as exc:  # the [servers] extra is not installed
    sys.exit(options.missing_extra(PROG, exc))

DEFAULT_FLEET_LIMIT = 100


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``trio-sessions serve``'s options, and the fleet's."""
    parser, serving = options.example_parser(PROG, __doc__.splitlines()[0], port=8000)
    options.add_http_options(serving)
    serving.add_argument(
        "--no-middleware",
        action="store_true",
        help="serve the bare app (the baseline of the wrk benchmark)",
    )
    fleet = parser.add_argument_group("fleet-wide limit (needs trio-sessions[redis])")
    fleet.add_argument(
        "--redis-url",
        metavar="URL",
        help="share a fleet-wide limit through this Redis, e.g. redis://127.0.0.1/0",
    )
    fleet.add_argument(
        "--fleet-limit",
        type=options.count("--fleet-limit", 1),
        metavar="N",
        help="sessions at once across every process using --redis-url; "
        f"needs --redis-url; default: {DEFAULT_FLEET_LIMIT}",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; exit 2 with one line on a bad value."""
    parser = build_parser()
    args = options.parse_checked(parser, argv)
    if args.fleet_limit is not None and not args.redis_url:
        parser.error("--fleet-limit needs --redis-url (it is the Redis-held limit)")
    if args.redis_url:
        try:
            import coredis  # noqa: F401
        except ImportError as exc:
            sys.exit(options.missing_extra(PROG, exc, extra="redis"))
    return args


async def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then drain and print the shutdown report."""
    config = options.session_config(args)
    guard = None
    if args.redis_url:
        from trio_sessions.redis import RedisSessionLimit

        limit = DEFAULT_FLEET_LIMIT if args.fleet_limit is None else args.fleet_limit
        guard = RedisSessionLimit.from_url(args.redis_url, limit=limit)
    app = build_app(
        config,
        use_middleware=not args.no_middleware,
        max_body_bytes=args.max_body_bytes,
        inline=not args.spawned,
        guard=guard,
        key=options.request_key(args.key),
        priority=options.request_priority(args.priority_header),
    )
    return await serve(
        app, host=args.host, port=args.port, shutdown_timeout=config.shutdown_timeout
    )


if __name__ == "__main__":
    sys.exit(options.run(PROG, main, parse_args()))
