"""Drive examples/http_server.py with wrk, with and without SessionMiddleware.

Starts the server variants as subprocesses on loopback, alternates wrk runs
between them and prints the median requests/s of the rounds and their ratios:

- ``bare``: the example's app alone (``--no-middleware``);
- ``middleware``: the example as shipped, every request an inline session in
  the server's request task (the middleware's default);
- ``middleware-spawned``: ``--spawned``, every request a session in a task of
  its own (the middleware's ``inline=False``);
- ``floor``: the same app and server, each request handed to a task of its own
  holding a CapacityLimiter token under ``trio.move_on_after``
  (``benchmarks/http_floor.py``): the least a spawned session can cost;
- ``floor-inline``: one limiter token and one deadline scope per request in
  the server's task (``http_floor.py --inline``): the least an inline session
  can cost;
- ``floor-session``, where ``_harness.HTTP_VARIANTS`` has it: each request
  only in ``async with manager.session_nowait()`` (``http_floor.py
  --session``), the inline session without the middleware.

The middleware's target is at least 0.94x bare's requests/s under
``wrk -t1 -c50``; ``--max-cost`` fails the run when the middleware costs more
than that many percent of bare throughput::

    python benchmarks/wrk_e2e.py --duration 5 --rounds 3 [--install] [--max-cost 6]
        [--variants bare middleware] [--json wrk.json]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import _harness

ROOT = _harness.ROOT
# (top, bottom, least top/bottom requests/s): the ratios printed.
RATIOS: tuple[tuple[str, str, float | None], ...] = (
    ("middleware", "bare", 0.94),
    ("middleware-spawned", "bare", None),
    ("floor-inline", "bare", None),
    ("middleware", "floor-inline", None),
    # With the floor-session variant (http_floor.py --session).
    ("floor-session", "floor-inline", None),
    ("middleware", "floor-session", None),
    ("floor", "bare", None),
    ("middleware-spawned", "floor", None),
)


def ensure_wrk(install: bool) -> str:
    """Return wrk's path, installing the Debian package first if asked and missing."""
    path = shutil.which("wrk")
    if path is None and install:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env
        )
        path = shutil.which("wrk")
    if path is None:
        sys.exit("wrk not found: apt-get install wrk (or pass --install)")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(*argv: str) -> Iterator[tuple[int, int]]:
    """Run ``python *argv`` on a free loopback port; yield (port, pid); stop it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, *argv, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"server did not start: {line!r}")
        yield int(line.strip().rpartition(":")[2]), process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_wrk(
    wrk: str, target: tuple[int, int], args: argparse.Namespace
) -> tuple[float, float]:
    """One wrk run; return its requests/s and the server's CPU µs per request."""
    port, pid = target
    cpu_before = cpu_seconds(pid)
    result = subprocess.run(
        [
            wrk,
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            f"http://127.0.0.1:{port}{args.path}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    cpu = cpu_seconds(pid) - cpu_before
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    total = re.search(r"(\d+) requests in", result.stdout)
    if rate is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{result.stdout}")
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        print(result.stdout, file=sys.stderr)
    return float(rate.group(1)), 1e6 * cpu / max(1, int(total.group(1)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--path", default="/")
    parser.add_argument("--install", action="store_true", help="apt-get install wrk")
    _harness.add_variants_option(parser)
    parser.add_argument(
        "--max-cost",
        type=float,
        default=None,
        help="fail if the middleware costs more than this many percent",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if min(args.duration, args.rounds, args.threads, args.connections) < 1:
        parser.error("--duration, --rounds, --threads and --connections must be >= 1")
    args.variants = list(dict.fromkeys(args.variants))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = ensure_wrk(args.install)
    # Capacity above the connection count: measure the overhead, not refusals.
    capacity = max(1000, args.connections * 2)
    rates: dict[str, list[float]] = {name: [] for name in args.variants}
    costs: dict[str, list[float]] = {name: [] for name in args.variants}
    with ExitStack() as servers:
        targets = {}
        for name in args.variants:
            argv = _harness.http_server_argv(name, capacity)
            targets[name] = servers.enter_context(server(*argv))
        for target in targets.values():
            run_wrk(wrk, target, args)  # warm-up (imports, caches, TCP)
        names = list(targets)
        for round_ in range(args.rounds):
            # Rotate the order each round, so no variant always runs first
            # (or always right after the same neighbour).
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                rate, cost = run_wrk(wrk, targets[name], args)
                rates[name].append(rate)
                costs[name].append(cost)
            time.sleep(0.5)
    median = {name: statistics.median(values) for name, values in rates.items()}
    cpu = {name: statistics.median(values) for name, values in costs.items()}
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s {args.path}: "
        f"median of {args.rounds} rounds"
    )
    for name, values in rates.items():
        runs = ", ".join(f"{value:,.0f}" for value in values)
        print(
            f"  {name:>18}: median {median[name]:,.0f} req/s ({runs}); "
            f"server CPU {cpu[name]:,.0f} µs/request"
        )
    # Server CPU per request gives the throughput ratio of servers that are
    # CPU-bound, whatever wrk itself took of the shared cores.
    ratios: dict[str, dict[str, Any]] = {}
    for top, bottom, least in RATIOS:
        if top not in median or bottom not in median:
            continue
        ratio = median[top] / median[bottom]
        cpu_ratio = cpu[bottom] / cpu[top]
        name = f"{top}/{bottom}"
        ratios[name] = {"requests_per_second": ratio, "cpu_bound": cpu_ratio}
        verdict = ""
        if least is not None:
            met = ratio >= least
            ratios[name]["target"] = {"at_least": least, "met": met}
            verdict = f"; target >= {least:.2f}: {'yes' if met else 'NO'}"
        print(
            f"  ratio {name:>29}: req/s {ratio:.3f} "
            f"(cost {100 * (1 - ratio):4.1f}%), CPU-bound {cpu_ratio:.3f} "
            f"(cost {100 * (1 - cpu_ratio):4.1f}%){verdict}"
        )
    if args.json is not None:
        report = {
            "command": " ".join(["python", "benchmarks/wrk_e2e.py", *sys.argv[1:]]),
            "machine": {**_harness.checkout(), "cpus": os.cpu_count()},
            "settings": {
                key: getattr(args, key)
                for key in ("duration", "rounds", "threads", "connections", "path")
            },
            "requests_per_second": rates,
            "median_requests_per_second": median,
            "server_cpu_us_per_request": cpu,
            "ratios": ratios,
        }
        _harness.write_json(args.json, report)
    if args.max_cost is not None and "middleware/bare" in ratios:
        ratio = ratios["middleware/bare"]["requests_per_second"]
        if 100 * (1 - ratio) > args.max_cost:
            print(f"middleware costs more than {args.max_cost}%", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
