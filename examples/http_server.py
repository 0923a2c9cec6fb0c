"""HTTP server: Hypercorn on Trio, every request a session of one manager.

The app and its serving loop are :mod:`trio_sessions.demo`, which
``trio-sessions serve`` runs too; this script adds the command line and the
optional fleet-wide limit. Endpoints: ``/`` (hello), ``/slow?seconds=N`` (try
timeouts), ``POST /echo`` (JSON echo), ``/error`` (raises), ``/metrics``
(Prometheus) and ``/healthz`` (503 while draining). SIGINT/SIGTERM drains,
prints the shutdown report, exits 0::

    python examples/http_server.py --port 8000 --max-sessions 100 --request-timeout 5
    curl -i 'http://127.0.0.1:8000/slow?seconds=10'     # 504 after 5 s
    curl http://127.0.0.1:8000/metrics | grep trio_sessions_

With ``--redis-url redis://127.0.0.1:6379/0 --fleet-limit 40`` every process
started that way shares one fleet-wide limit of 40 sessions (a
:class:`~trio_sessions.redis.RedisSessionLimit`), and ``/metrics`` adds the
``trio_sessions_fleet_*`` gauges; Prometheus sums ``trio_sessions_active`` and
``trio_sessions_fleet_leases_held`` over the fleet, and takes the ``max`` of
``trio_sessions_fleet_leases``, which every process reports alike.

Needs ``pip install trio-sessions[servers]`` (hypercorn, prometheus-client), and
``trio-sessions[redis]`` for ``--redis-url``.
"""

from __future__ import annotations

import argparse
import math
import sys

import trio

import trio_sessions as ts
from trio_sessions.demo import build_app, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--max-sessions", type=int, default=100)
    parser.add_argument("--max-waiting", type=int, default=0)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--max-body-bytes", type=int, default=1_048_576)
    parser.add_argument(
        "--redis-url",
        help="share a fleet-wide limit through this Redis, e.g. redis://127.0.0.1/0",
    )
    parser.add_argument(
        "--fleet-limit",
        type=int,
        default=100,
        help="sessions at once across every process using --redis-url",
    )
    parser.add_argument(
        "--no-middleware",
        action="store_true",
        help="serve the bare app (the baseline of the wrk benchmark)",
    )
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then drain and print the shutdown report."""
    config = ts.SessionConfig(
        max_sessions=args.max_sessions,
        max_waiting=args.max_waiting,
        request_timeout=None
        if math.isinf(args.request_timeout)
        else args.request_timeout,
        shutdown_timeout=args.shutdown_timeout,
    )
    guard = None
    if args.redis_url:
        from trio_sessions.redis import RedisSessionLimit

        guard = RedisSessionLimit.from_url(args.redis_url, limit=args.fleet_limit)
    app = build_app(
        config,
        use_middleware=not args.no_middleware,
        max_body_bytes=args.max_body_bytes,
        guard=guard,
    )
    return await serve(
        app, host=args.host, port=args.port, shutdown_timeout=args.shutdown_timeout
    )


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
