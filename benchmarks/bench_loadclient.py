"""The load client beside wrk: requests/s against the same servers, in one run.

Starts two servers of the demo app on loopback: ``trio-sessions serve`` (every
request a session of SessionMiddleware) and the same app bare
(``examples/http_server.py --no-middleware``, as ``serve`` has no such option).
Each round, against each server in turn, for the same duration, at 10, 50 and
100 connections: ``wrk -t1``, then ``trio-sessions loadtest --url`` (closed
loop). Prints the medians, each client's CPU per request and the server's, the
ratios to wrk and the goals (ours >= 0.8x wrk at 50 and 100; ours at 100 not
below ours at 10, beside wrk's own c100/c10), then open-loop runs (``--rate``)
at fractions of wrk's rate, with their p50/p90/p99/p99.9/max::

    python benchmarks/bench_loadclient.py --duration 3 --rounds 3 [--processes 2]

wrk, the client and the server share the machine's cores, so a client that
takes more CPU leaves less to the server: that is part of what is compared.
``--check`` exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from wrk_e2e import cpu_seconds, ensure_wrk
from wrk_e2e import server as start_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "http_server.py"
# The servers' arguments after the interpreter (wrk_e2e.server runs them).
SERVERS = {
    "middleware": ["-m", "trio_sessions", "serve"],
    "bare": [str(EXAMPLE), "--no-middleware"],
}
CONNECTIONS = (10, 50, 100)
GOAL = 0.8


def measured(command: list[str], server_pid: int) -> tuple[str, float, float]:
    """Run a client to its end: its output, its CPU seconds and the server's.

    The client's CPU is what this process's reaped children used meanwhile:
    the client and whatever it waited for (wrk's threads, our --processes).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = cpu_seconds(server_pid)
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False
    )
    server = cpu_seconds(server_pid) - server_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise RuntimeError(
            f"{command[:4]} failed: {completed.stderr or completed.stdout}"
        )
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return completed.stdout, client, server


class Run:
    """One client run: requests/s, and CPU µs per request of client and server."""

    def __init__(self, rate: float, requests: int, client: float, server: float):
        self.rate = rate
        self.client_us = 1e6 * client / max(requests, 1)
        self.server_us = 1e6 * server / max(requests, 1)


def run_wrk(wrk: str, port: int, pid: int, connections: int, duration: float) -> Run:
    """``wrk -t1 -cN`` for ``duration`` seconds."""
    url = f"http://127.0.0.1:{port}/"
    command = [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", url]
    out, client, server = measured(command, pid)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return Run(float(rate.group(1)), int(total.group(1)), client, server)


def run_ours(
    port: int,
    pid: int,
    connections: int,
    duration: float,
    processes: int,
    rate: float | None = None,
) -> tuple[Run, dict[str, float | None]]:
    """``trio-sessions loadtest --url`` for ``duration`` s; its run and latencies."""
    command = [
        sys.executable,
        "-m",
        "trio_sessions",
        "loadtest",
        "--url",
        f"http://127.0.0.1:{port}/",
        "--concurrency",
        str(connections),
        "--duration",
        f"{duration:g}",
        "--processes",
        str(processes),
        "--json",
        "-",
    ]
    if rate is not None:
        command += ["--rate", f"{rate:g}"]
    out, _, server = measured(command, pid)
    (http,) = json.loads(out)["scenarios"]
    if http["errors"] or http["other_status"]:
        print(f"  note: {http['problems']}", file=sys.stderr)
    # Its own count, without the start of Python and the imports.
    run = Run(http["throughput"], http["requests"], http["client_cpu"], server)
    return run, http["latency"]


def median(runs: list[Run]) -> Run:
    """The run of median requests/s (its CPU figures with it)."""
    return sorted(runs, key=lambda run: run.rate)[len(runs) // 2]


def paired(runs: dict[str, list[Run]], top: str, bottom: str) -> float:
    """The median over rounds of ``top``'s requests/s over ``bottom``'s."""
    ratios = [a.rate / b.rate for a, b in zip(runs[top], runs[bottom], strict=True)]
    return statistics.median(ratios)


def report(what: str, ratio: float, goal: float | None) -> bool:
    """Print ``ratio``, and whether it meets ``goal`` (if there is one)."""
    verdict = ""
    if goal is not None:
        verdict = f" ({'meets' if ratio >= goal else 'MISSES'} the goal: >= {goal:g})"
    print(f"  {what}: {ratio:.2f}{verdict}")
    return goal is None or ratio >= goal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender")
    parser.add_argument(
        "--processes", type=int, default=1, help="our client's --processes"
    )
    parser.add_argument(
        "--rates",
        default="0.5,0.9",
        help="open-loop rates, as fractions of wrk's c50 requests/s",
    )
    parser.add_argument("--install", action="store_true", help="apt-get install wrk")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal fails")
    args = parser.parse_args()
    wrk = ensure_wrk(args.install)
    contenders = [f"{client} c{c}" for client in ("wrk", "ours") for c in CONNECTIONS]
    results: dict[str, dict[str, list[Run]]] = {
        name: {contender: [] for contender in contenders} for name in SERVERS
    }
    ok = True
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(start_server(*argv, "--max-sessions", "1000"))
            for name, argv in SERVERS.items()
        }
        for port, pid in servers.values():
            run_wrk(wrk, port, pid, 50, 1.0)  # warm-up: imports, caches, TCP
        for _ in range(args.rounds):
            for name, (port, pid) in servers.items():
                for c in CONNECTIONS:
                    run = run_wrk(wrk, port, pid, c, args.duration)
                    results[name][f"wrk c{c}"].append(run)
                    run, _ = run_ours(port, pid, c, args.duration, args.processes)
                    results[name][f"ours c{c}"].append(run)
        cores = os.cpu_count()
        print(
            f"{args.rounds} rounds of {args.duration:g} s per client and server; "
            f"wrk -t1, ours with --processes {args.processes}; clients and "
            f"servers share {cores} cores, so a client's CPU is taken from its "
            "server: same server, same duration, wrk and ours back to back at "
            "each concurrency; ratios are the median of each round's ratio."
        )
        for name, (port, pid) in servers.items():
            medians = {c: median(runs) for c, runs in results[name].items()}
            print(f"\n{name} ({' '.join(SERVERS[name])}):")
            for contender, runs in results[name].items():
                m = medians[contender]
                each = ", ".join(f"{run.rate:,.0f}" for run in runs)
                print(
                    f"  {contender:>9}: median {m.rate:7,.0f} req/s ({each}); CPU "
                    f"per request: client {m.client_us:5,.0f} µs, "
                    f"server {m.server_us:5,.0f} µs"
                )
            # Ratios of runs made back to back, round by round, then their
            # median: the load of the shared machine drifts less in between.
            for c in CONNECTIONS:
                ratio = paired(results[name], f"ours c{c}", f"wrk c{c}")
                ok &= report(f"ours/wrk at c{c}", ratio, None if c == 10 else GOAL)
            for client in ("wrk", "ours"):
                ratio = paired(results[name], f"{client} c100", f"{client} c10")
                ok &= report(
                    f"{client} c100/c10", ratio, 1.0 if client == "ours" else None
                )
            rate = medians["wrk c50"].rate
            for fraction in (float(f) for f in args.rates.split(",")):
                target = fraction * rate
                _, lat = run_ours(port, pid, 50, args.duration, args.processes, target)
                figures = ", ".join(
                    f"{label} {1000 * (lat[key] or 0):.1f} ms"
                    for key, label in (
                        ("p50", "p50"),
                        ("p90", "p90"),
                        ("p99", "p99"),
                        ("p999", "p99.9"),
                        ("max", "max"),
                    )
                )
                print(
                    f"  open loop --rate {target:,.0f} ({fraction:.0%} of wrk c50), "
                    f"50 connections: {figures}"
                )
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
