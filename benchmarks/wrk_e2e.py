"""Drive examples/http_server.py with wrk, with and without SessionMiddleware.

Starts three contenders as subprocesses on loopback, alternates wrk runs
between them and prints requests/s and their ratios:

- ``bare``: the example's app alone (``--no-middleware``);
- ``floor``: the same app and server, each request handed to a task of its own
  holding a CapacityLimiter token under ``trio.move_on_after``
  (``benchmarks/http_floor.py``): the least a session per request can cost;
- ``middleware``: the example as shipped, every request a session.

``--max-cost`` fails the run when the middleware costs more than that many
percent of bare throughput::

    python benchmarks/wrk_e2e.py --duration 5 --rounds 3 [--install] [--max-cost 5]
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
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "http_server.py"
FLOOR = ROOT / "benchmarks" / "http_floor.py"
CONTENDERS = ("bare", "floor", "middleware")


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
def server(script: Path, *options: str) -> Iterator[tuple[int, int]]:
    """Run an HTTP server script on a free loopback port; yield (port, pid); stop it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", *options],
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--path", default="/")
    parser.add_argument("--install", action="store_true", help="apt-get install wrk")
    parser.add_argument(
        "--max-cost",
        type=float,
        default=None,
        help="fail if the middleware costs more than this many percent",
    )
    args = parser.parse_args()
    wrk = ensure_wrk(args.install)
    # Capacity above the connection count: measure the overhead, not refusals.
    capacity = str(max(1000, args.connections * 2))
    with (
        server(EXAMPLE, "--no-middleware") as bare,
        server(FLOOR, "--max-sessions", capacity) as floor,
        server(EXAMPLE, "--max-sessions", capacity) as wrapped,
    ):
        targets = {"bare": bare, "floor": floor, "middleware": wrapped}
        for target in targets.values():
            run_wrk(wrk, target, args)  # warm-up (imports, caches, TCP)
        rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        costs: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        for _ in range(args.rounds):
            for name, target in targets.items():
                rate, cost = run_wrk(wrk, target, args)
                rates[name].append(rate)
                costs[name].append(cost)
            time.sleep(0.5)
    rate = {name: statistics.median(values) for name, values in rates.items()}
    cpu = {name: statistics.median(values) for name, values in costs.items()}
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s {args.path}")
    for name, values in rates.items():
        runs = ", ".join(f"{value:,.0f}" for value in values)
        print(
            f"  {name:>10}: median {rate[name]:,.0f} req/s ({runs}); "
            f"server CPU {cpu[name]:,.0f} µs/request"
        )
    # Server CPU per request gives the throughput ratio of servers that are
    # CPU-bound, whatever wrk itself took of the shared cores.
    pairs = (("middleware", "bare"), ("floor", "bare"), ("middleware", "floor"))
    for top, bottom in pairs:
        ratio = rate[top] / rate[bottom]
        cpu_ratio = cpu[bottom] / cpu[top]
        print(
            f"  ratio {top + '/' + bottom:>17}: req/s {ratio:.3f} "
            f"(cost {100 * (1 - ratio):4.1f}%), CPU-bound {cpu_ratio:.3f} "
            f"(cost {100 * (1 - cpu_ratio):4.1f}%)"
        )
    ratio = rate["middleware"] / rate["bare"]
    if args.max_cost is not None and 100 * (1 - ratio) > args.max_cost:
        print(f"middleware costs more than {args.max_cost}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
