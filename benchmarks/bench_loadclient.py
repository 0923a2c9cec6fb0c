"""The load client beside wrk: requests/s against the same servers, in one run.

Starts three servers on loopback: ``trio-sessions serve`` (the demo app, every
request a session of SessionMiddleware), the same app bare
(``examples/http_server.py --no-middleware``, as ``serve`` has no such option)
and ``benchmarks/fast_server.py`` (a bare epoll loop, fast enough that the
client, not the server, sets the pace). Each round, against each server in
turn, for the same duration, at 10, 50 and 100 connections: ``wrk -t1`` and
``trio-sessions loadtest --url`` (closed loop), back to back, in turns first.
Prints the machine's load at the start and the end, the medians, each
client's CPU per request and the server's, how busy the server was, the
ratios to wrk (the median of each round's ratio, and their range) and the
goals against the two demo servers (ours >= 0.8x wrk at 50 and 100; ours at
100 not below ours at 10, beside wrk's own c100/c10, with what sets it: the
server's CPU per request at c100 over c10 with each client, ours over wrk's
in server and client CPU, ours c100/c10 over wrk's, and whose the miss is),
then open-loop runs (``--rate``) at fractions of wrk's rate, with their
p50/p90/p99/p99.9/max::

    python benchmarks/bench_loadclient.py --duration 3 --rounds 3 [--processes 2]
        [--servers middleware,bare,fast]

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
FAST = ROOT / "benchmarks" / "fast_server.py"
# The servers' arguments after the interpreter (wrk_e2e.server runs them).
SERVERS = {
    "middleware": ["-m", "trio_sessions", "serve", "--max-sessions", "1000"],
    "bare": [str(EXAMPLE), "--no-middleware", "--max-sessions", "1000"],
    "fast": [str(FAST)],
}
# The servers the goals are about; the fast one shows the clients' own limits.
GOAL_SERVERS = ("middleware", "bare")
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
    """One client run: requests/s, CPU µs per request of client and server.

    ``server_busy`` is the share of a core the server used while the requests
    ran (its CPU over the requests' time, requests / rate): near 1.0, the
    server, not the client, set the pace, and its CPU per request the rate.
    ``client_busy`` is the client's; where the two add up to about 1.0, the
    machine gave both about one core between them.
    """

    def __init__(self, rate: float, requests: int, client: float, server: float):
        self.rate = rate
        self.client_us = 1e6 * client / max(requests, 1)
        self.server_us = 1e6 * server / max(requests, 1)
        self.server_busy = self.server_us * rate / 1e6
        self.client_busy = self.client_us * rate / 1e6


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


def paired(runs: dict[str, list[Run]], top: str, bottom: str) -> list[float]:
    """Round by round, ``top``'s requests/s over ``bottom``'s."""
    return [a.rate / b.rate for a, b in zip(runs[top], runs[bottom], strict=True)]


def report(what: str, ratios: list[float], goal: float | None) -> bool:
    """Print the median of ``ratios``, their range, and whether it meets ``goal``."""
    ratio = statistics.median(ratios)
    verdict = ""
    if goal is not None:
        verdict = f"; {'meets' if ratio >= goal else 'MISSES'} the goal: >= {goal:g}"
    spread = f"rounds {min(ratios):.2f} to {max(ratios):.2f}"
    print(f"  {what}: {ratio:.2f} ({spread}{verdict})")
    return goal is None or ratio >= goal


def whose(medians: dict[str, Run], scaling: dict[str, list[float]]) -> None:
    """Print what sets c100/c10: the server's CPU per request, and each client's.

    Each contender's figures are those of its median run. The client cannot
    get more requests/s out of a server busy all the time than its CPU per
    request allows; what the client adds shows beside wrk, which drove the
    same server in the same rounds: the server's CPU per request with ours
    over with wrk, and ours c100/c10 over wrk's, round by round.
    """
    rise = {
        client: medians[f"{client} c100"].server_us / medians[f"{client} c10"].server_us
        for client in ("wrk", "ours")
    }
    print(
        f"  server CPU per request, c100 over c10: with wrk {rise['wrk']:.2f}, "
        f"with ours {rise['ours']:.2f}"
    )
    for c in (10, 100):
        ours, wrk = medians[f"ours c{c}"], medians[f"wrk c{c}"]
        print(
            f"  at c{c}, ours over wrk: server CPU per request "
            f"{ours.server_us / wrk.server_us:.2f}, client CPU per request "
            f"{ours.client_us / wrk.client_us:.2f} "
            f"({ours.client_us:,.0f} µs / {wrk.client_us:,.0f} µs)"
        )
    relative = [
        ours / wrk for ours, wrk in zip(scaling["ours"], scaling["wrk"], strict=True)
    ]
    report("ours c100/c10 over wrk c100/c10", relative, None)
    ours_ratio = statistics.median(scaling["ours"])
    if ours_ratio >= 1.0:
        return
    wrk_ratio = statistics.median(scaling["wrk"])
    own = statistics.median(relative)
    clients = (medians["ours c10"].client_us, medians["ours c100"].client_us)
    if wrk_ratio < 1.0 and rise["ours"] > 1.0 and own >= 0.9:
        print(
            f"  so the miss is the server's: its CPU per request rose "
            f"{rise['ours']:.2f}x from c10 to c100 with ours ({rise['wrk']:.2f}x "
            f"with wrk), ours from {clients[0]:,.0f} to {clients[1]:,.0f} µs; wrk "
            f"got {wrk_ratio:.2f} of its c10 rate at c100 from it, ours {own:.2f}x that"
        )
    else:
        print(
            f"  so the client has a share in the miss: ours c100/c10 was {own:.2f}x "
            f"wrk's ({wrk_ratio:.2f})"
        )


def load() -> str:
    """The machine's load averages, and its cores."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min; {os.cpu_count()} cores)"


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
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"the servers to drive, from {', '.join(SERVERS)}",
    )
    parser.add_argument("--install", action="store_true", help="apt-get install wrk")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal fails")
    args = parser.parse_args()
    names = [name for name in args.servers.split(",") if name]
    unknown = sorted(set(names) - set(SERVERS))
    if unknown:
        parser.error(f"unknown server {', '.join(unknown)}; from {', '.join(SERVERS)}")
    wrk = ensure_wrk(args.install)
    contenders = [f"{client} c{c}" for client in ("wrk", "ours") for c in CONNECTIONS]
    results: dict[str, dict[str, list[Run]]] = {
        name: {contender: [] for contender in contenders} for name in names
    }
    ok = True
    load_at_start = load()
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(start_server(*SERVERS[name])) for name in names
        }
        for port, pid in servers.values():
            run_wrk(wrk, port, pid, 50, 1.0)  # warm-up: imports, caches, TCP
        for round_ in range(args.rounds):
            for name, (port, pid) in servers.items():
                for c in CONNECTIONS:
                    # Each first in turn: neither has the server warmer.
                    for client in ("wrk", "ours")[:: 1 if round_ % 2 else -1]:
                        if client == "wrk":
                            run = run_wrk(wrk, port, pid, c, args.duration)
                        else:
                            run, _ = run_ours(
                                port, pid, c, args.duration, args.processes
                            )
                        results[name][f"{client} c{c}"].append(run)
        print(
            f"{args.rounds} rounds of {args.duration:g} s per client and server; "
            f"wrk -t1, ours with --processes {args.processes}; clients and "
            f"servers share {os.cpu_count()} cores, so a client's CPU is taken "
            "from its server: same server, same duration, wrk and ours back to "
            "back at each concurrency, in turns first; ratios are the median of "
            "each round's ratio."
        )
        print(f"machine load at the start: {load_at_start}")
        print(f"machine load after the closed-loop rounds: {load()}")
        for name, (port, pid) in servers.items():
            medians = {c: median(runs) for c, runs in results[name].items()}
            print(f"\n{name} ({' '.join(SERVERS[name])}):")
            for contender, runs in results[name].items():
                m = medians[contender]
                each = ", ".join(f"{run.rate:,.0f}" for run in runs)
                print(
                    f"  {contender:>9}: median {m.rate:7,.0f} req/s ({each}); CPU "
                    f"per request: client {m.client_us:5,.0f} µs, "
                    f"server {m.server_us:5,.0f} µs; busy: server "
                    f"{m.server_busy:4.0%}, client {m.client_busy:4.0%}"
                )
            goals = name in GOAL_SERVERS
            # Ratios of runs made back to back, round by round, then their
            # median: the load of the shared machine drifts less in between.
            for c in CONNECTIONS:
                ratios = paired(results[name], f"ours c{c}", f"wrk c{c}")
                goal = GOAL if goals and c != 10 else None
                ok &= report(f"ours/wrk at c{c}", ratios, goal)
            scaling = {}
            for client in ("wrk", "ours"):
                ratios = paired(results[name], f"{client} c100", f"{client} c10")
                goal = 1.0 if goals and client == "ours" else None
                ok &= report(f"{client} c100/c10", ratios, goal)
                scaling[client] = ratios
            if goals:
                whose(medians, scaling)
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
    print(f"\nmachine load at the end: {load()}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
