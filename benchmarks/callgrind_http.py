"""Count the CPU instructions an HTTP server spends per request, under callgrind.

Runs each server variant of ``benchmarks/wrk_e2e.py`` on a loopback port under
``valgrind --tool=callgrind``:

- ``bare``: ``examples/http_server.py --no-middleware``, the app alone;
- ``middleware``: ``examples/http_server.py``, every request an inline session
  in the server's request task (the middleware's default);
- ``middleware-spawned``: ``examples/http_server.py --spawned``, every request
  a session in a task of its own (the middleware's ``inline=False``);
- ``floor``: ``benchmarks/http_floor.py``, the app with one extra Trio task per
  request, the least a spawned session per request can cost;
- ``floor-inline``: ``benchmarks/http_floor.py --inline``, one limiter token
  and one deadline scope per request in the server's task, the least an
  inline session can cost;
- ``floor-session``, where ``_harness.HTTP_VARIANTS`` has it:
  ``benchmarks/http_floor.py --session``, each request only in
  ``async with manager.session_nowait()``: the inline session's bookkeeping
  without the middleware's.

A plain blocking-socket client sends keep-alive ``GET /`` requests over four
connections, one request at a time (or, with ``--in-flight K``, over K
connections with a request outstanding on each, as ``wrk -cK`` loads a
server), and valgrind reports how many instructions the server executed in
all. (Under valgrind a request then takes about K x 50 ms, so a timer such as
the middleware's one-second disconnect watch fires where natively it would
not.) ``--simulate`` adds callgrind's simulated cache misses and branch
mispredicts per request: what costs time but no instructions. Each variant
runs twice, with two request counts; the difference of the totals divided by
the difference of the counts is the cost of one request, with start-up and
shutdown cancelled out. The ratios are
of instructions per request (the middleware's target: at most 1.06x bare's),
with the throughput ratio the servers would have if CPU-bound beside them, as
``wrk_e2e.py`` measures it. Unlike wrk's requests/s, which move by several
percent between runs on a shared machine, instruction counts repeat to within
about 0.1%, so small changes to the hot path show. Needs valgrind (Debian:
``apt-get install valgrind``); takes a few minutes, less with ``--jobs``
(servers measured side by side)::

    python benchmarks/callgrind_http.py [--variants bare middleware]
        [--counts 300 1300] [--jobs 2] [--in-flight 50] [--simulate]
        [--json callgrind.json]
"""

from __future__ import annotations

import argparse
import platform
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import _harness

ROOT = _harness.ROOT
# Capacity well above the four connections: measure the overhead, not refusals.
CAPACITY = 1000


class Ratio(NamedTuple):
    """``top`` / ``bottom`` instructions per request, at most ``bound`` if set."""

    top: str
    bottom: str
    bound: float | None = None


RATIOS = (
    Ratio("middleware", "bare", 1.06),
    Ratio("middleware-spawned", "bare"),
    Ratio("floor-inline", "bare"),
    Ratio("middleware", "floor-inline"),
    # With the floor-session variant (http_floor.py --session): the inline
    # session's own bookkeeping, and the middleware's beyond it.
    Ratio("floor-session", "floor-inline"),
    Ratio("middleware", "floor-session"),
    Ratio("floor", "bare"),
    Ratio("middleware-spawned", "floor"),
)
CONNECTIONS = 4
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
# Python runs many times slower under valgrind than natively.
START_TIMEOUT = 300.0
IO_TIMEOUT = 60.0


def receive(sock: socket.socket) -> None:
    """Read one whole ``200`` response from a keep-alive connection."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    if status_line.split()[1] != "200":
        raise RuntimeError(f"unexpected response: {status_line!r}")
    length = next(
        int(value)
        for name, _, value in (field.partition(":") for field in fields)
        if name.strip().lower() == "content-length"
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        body += chunk


def drive(port: int, requests: int, in_flight: int = 1) -> None:
    """Send ``requests`` requests over keep-alive sockets, ``in_flight`` at a time.

    One at a time, round-robin over CONNECTIONS sockets; or, with
    ``in_flight`` above 1, that many sockets with one request outstanding on
    each, the next sent as soon as its answer is read (as wrk loads a server).
    """
    sockets = [
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        for _ in range(max(CONNECTIONS, in_flight))
    ]
    try:
        if in_flight == 1:
            for i in range(requests):
                sockets[i % CONNECTIONS].sendall(REQUEST)
                receive(sockets[i % CONNECTIONS])
            return
        waiting = sockets[: min(in_flight, requests)]
        for sock in waiting:
            sock.sendall(REQUEST)
        sent = len(waiting)
        while waiting:
            ready, _, _ = select.select(waiting, [], [], IO_TIMEOUT)
            if not ready:
                raise RuntimeError("the server stopped answering")
            for sock in ready:
                receive(sock)
                if sent < requests:
                    sock.sendall(REQUEST)
                    sent += 1
                else:
                    waiting.remove(sock)
    finally:
        for sock in sockets:
            sock.close()


def read_port(process: subprocess.Popen[str]) -> int:
    """Wait for the server's ``listening on HOST:PORT`` line; return the port."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    line = process.stdout.readline() if ready else ""
    if not line.startswith("listening on "):
        raise RuntimeError(f"server did not start: {line!r}")
    return int(line.strip().rpartition(":")[2])


def count_instructions(
    valgrind: str,
    variant: str,
    requests: int,
    in_flight: int = 1,
    simulate: bool = False,
) -> dict[str, int]:
    """Run ``variant`` under callgrind, serve ``requests`` requests; the totals.

    ``instructions``, and with ``simulate`` the simulated cache misses and
    branch mispredicts (see :func:`_harness.summary`).
    """
    server = _harness.http_server_argv(variant, CAPACITY)
    argv = _harness.command(valgrind, *server, "--port", "0", simulate=simulate)
    # valgrind's summary goes to stderr, with whatever the server logs.
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=_harness.environment(),
        )
        try:
            drive(read_port(process), requests, in_flight)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        stderr.seek(0)
        log = stderr.read()
    return _harness.summary(log, variant, process.returncode)


def timed_count(
    valgrind: str, variant: str, requests: int, in_flight: int, simulate: bool
) -> dict[str, int]:
    """:func:`count_instructions`, reporting the total and the time on stderr."""
    started = time.monotonic()
    totals = count_instructions(valgrind, variant, requests, in_flight, simulate)
    elapsed = time.monotonic() - started
    print(
        f"  {variant} x {requests:,}: {totals['instructions']:,} instructions "
        f"({elapsed:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return totals


def machine(valgrind: str) -> dict[str, Any]:
    """What the numbers were measured with: instruction counts depend on versions."""
    return {
        **_harness.checkout(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "valgrind": _harness.version(valgrind),
        "versions": {
            name: version(name) for name in ("trio", "hypercorn", "trio-sessions")
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Needs valgrind (apt-get install valgrind).",
    )
    _harness.add_variants_option(parser)
    parser.add_argument(
        "--counts",
        nargs=2,
        type=int,
        default=[300, 1300],
        metavar=("A", "B"),
        help="request counts whose totals give the slope (default: 300 1300)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="servers to run at once; counts stay the same, time shrinks (default: 1)",
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        metavar="K",
        help="requests outstanding at once, each on a connection of its own, "
        "as wrk -cK loads a server (default: 1, over four connections in turn); "
        "under valgrind a request then takes about K x 50 ms, so timers such "
        "as the middleware's 1 s disconnect_watch fire as they would not natively",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="also simulate the caches and the branch predictor: misses and "
        "mispredicts per request (twice as slow)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    low, high = args.counts
    if not 0 <= low < high:
        parser.error("--counts needs 0 <= A < B")
    if min(args.jobs, args.in_flight) < 1:
        parser.error("--jobs and --in-flight need at least 1")
    args.variants = list(dict.fromkeys(args.variants))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    valgrind = _harness.require_valgrind()
    low, high = args.counts
    runs = [
        (variant, requests) for variant in args.variants for requests in (low, high)
    ]
    source = _harness.source_digest()
    _harness.cache_bytecode()
    totals = _harness.run_all(
        args.jobs,
        lambda run: timed_count(valgrind, *run, args.in_flight, args.simulate),
        runs,
    )
    changed = _harness.source_digest() != source
    results: dict[str, dict[str, Any]] = {}
    for variant in args.variants:
        counted = [totals[variant, requests] for requests in (low, high)]
        each = _harness.slopes((low, high), counted)
        results[variant] = {
            "runs": [
                {"requests": requests, **total}
                for requests, total in zip((low, high), counted, strict=True)
            ],
            "per_request": each.pop("instructions"),
            "simulated_per_request": each,
        }
    instructions: dict[str, float] = {}
    targets: dict[str, dict[str, Any]] = {}
    for ratio in RATIOS:
        if ratio.top in results and ratio.bottom in results:
            name = f"{ratio.top}/{ratio.bottom}"
            value = (
                results[ratio.top]["per_request"] / results[ratio.bottom]["per_request"]
            )
            instructions[name] = value
            if ratio.bound is not None:
                targets[name] = {"at_most": ratio.bound, "met": value <= ratio.bound}
    # As wrk_e2e.py's ratios: throughput of top over bottom if CPU-bound, so
    # below 1 when top costs more instructions per request.
    ratios = {name: 1 / value for name, value in instructions.items()}
    connections = max(CONNECTIONS, args.in_flight)
    print(
        f"callgrind: instructions per GET / over {connections} keep-alive "
        f"connections, {args.in_flight} in flight, slope between {low:,} and "
        f"{high:,} requests"
    )
    for variant, result in results.items():
        simulated = "".join(
            f", {value:,.0f} {event}"
            for event, value in result["simulated_per_request"].items()
        )
        print(
            f"  {variant:>18}: {result['per_request'] / 1000:,.1f} K per request"
            f"{simulated}"
        )
    for name, value in instructions.items():
        target = targets.get(name)
        verdict = (
            ""
            if target is None
            else f"; target <= {target['at_most']:.2f}x: "
            f"{'yes' if target['met'] else 'NO'}"
        )
        print(
            f"  {name:>29}: {value:.3f}x the instructions per request "
            f"(throughput if CPU-bound {1 / value:.3f}){verdict}"
        )
    if changed:
        print("WARNING: the source changed during the runs: run again")
    if args.json is not None:
        report = {
            "source": source,
            "source_changed_during_runs": changed,
            "settings": {
                "counts": [low, high],
                "connections": max(CONNECTIONS, args.in_flight),
                "in_flight": args.in_flight,
                "simulate": args.simulate,
                "jobs": args.jobs,
            },
            "machine": machine(valgrind),
            "variants": results,
            "instruction_ratios": instructions,
            "ratios": ratios,
            "targets": targets,
        }
        _harness.write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
