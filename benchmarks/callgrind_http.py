"""Count the CPU instructions an HTTP server spends per request, under callgrind.

Runs each server variant of ``benchmarks/wrk_e2e.py`` on a loopback port under
``valgrind --tool=callgrind``:

- ``bare``: ``examples/http_server.py --no-middleware``, the app alone;
- ``floor``: ``benchmarks/http_floor.py``, the app with one extra Trio task per
  request, the least a session per request can cost;
- ``middleware``: ``examples/http_server.py``, every request a session.

A plain blocking-socket client sends keep-alive ``GET /`` requests over four
connections, one request at a time, and valgrind reports how many instructions
the server executed in all. Each variant runs twice, with two request counts;
the difference of the totals divided by the difference of the counts is the
cost of one request, with start-up and shutdown cancelled out. The ratios are
those of ``wrk_e2e.py``: one server's throughput over another's if both were
CPU-bound, the inverse of their instructions per request. Unlike wrk's
requests/s, which move by several percent between runs on a shared machine,
instruction counts repeat to within about 0.1%, so small changes to the hot
path show. Needs valgrind (Debian: ``apt-get install valgrind``); takes a few
minutes, less with ``--jobs`` (servers measured side by side)::

    python benchmarks/callgrind_http.py [--variants bare middleware]
        [--counts 300 1300] [--jobs 2] [--json callgrind.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "http_server.py"
FLOOR = ROOT / "benchmarks" / "http_floor.py"
# Capacity well above the four connections: measure the overhead, not refusals.
VARIANTS: dict[str, tuple[Path, tuple[str, ...]]] = {
    "bare": (EXAMPLE, ("--no-middleware",)),
    "floor": (FLOOR, ("--max-sessions", "1000")),
    "middleware": (EXAMPLE, ("--max-sessions", "1000")),
}
RATIOS = (("middleware", "bare"), ("floor", "bare"), ("middleware", "floor"))
CONNECTIONS = 4
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
# Python runs many times slower under valgrind than natively.
START_TIMEOUT = 300.0
IO_TIMEOUT = 60.0


def find_valgrind() -> str:
    """Return valgrind's path, or exit with how to install it."""
    path = shutil.which("valgrind")
    if path is None:
        sys.exit("valgrind not found: apt-get install valgrind (Debian/Ubuntu)")
    return path


def fetch(sock: socket.socket) -> None:
    """Send one ``GET /`` on a keep-alive connection and read the whole response."""
    sock.sendall(REQUEST)
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


def drive(port: int, requests: int) -> None:
    """Send ``requests`` requests round-robin over CONNECTIONS keep-alive sockets."""
    sockets = [
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        for _ in range(CONNECTIONS)
    ]
    try:
        for i in range(requests):
            fetch(sockets[i % CONNECTIONS])
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


def count_instructions(valgrind: str, variant: str, requests: int) -> int:
    """Run ``variant`` under callgrind, serve ``requests`` requests; total Ir."""
    script, options = VARIANTS[variant]
    argv = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    argv += [sys.executable, str(script), "--port", "0", *options]
    # A fixed hash seed: the same dict and set layouts every run, one less
    # source of run-to-run differences (Trio shuffles its run queue anyway).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    # valgrind's summary goes to stderr, with whatever the server logs.
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
        try:
            drive(read_port(process), requests)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        stderr.seek(0)
        log = stderr.read()
    totals = re.findall(r"refs:\s+([\d,]+)", log)
    if process.returncode != 0 or not totals:
        tail = "\n".join(log.splitlines()[-20:])
        raise RuntimeError(
            f"{variant} exited with {process.returncode} and no total:\n{tail}"
        )
    return int(totals[-1].replace(",", ""))


def timed_count(valgrind: str, variant: str, requests: int) -> int:
    """:func:`count_instructions`, reporting the total and the time on stderr."""
    started = time.monotonic()
    total = count_instructions(valgrind, variant, requests)
    elapsed = time.monotonic() - started
    print(
        f"  {variant} x {requests:,}: {total:,} instructions ({elapsed:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return total


def machine(valgrind: str) -> dict[str, Any]:
    """What the numbers were measured with: instruction counts depend on versions."""
    found = subprocess.run(
        [valgrind, "--version"], capture_output=True, text=True, check=True
    )
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "valgrind": found.stdout.strip(),
        "versions": {
            name: version(name) for name in ("trio", "hypercorn", "trio-sessions")
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Needs valgrind (apt-get install valgrind).",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="servers to measure (default: all three)",
    )
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
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    low, high = args.counts
    if not 0 <= low < high:
        parser.error("--counts needs 0 <= A < B")
    if args.jobs < 1:
        parser.error("--jobs needs at least 1")
    args.variants = list(dict.fromkeys(args.variants))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    valgrind = find_valgrind()
    low, high = args.counts
    runs = [
        (variant, requests) for variant in args.variants for requests in (low, high)
    ]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        counted = pool.map(lambda run: timed_count(valgrind, *run), runs)
        totals = dict(zip(runs, counted, strict=True))
    results: dict[str, dict[str, Any]] = {}
    for variant in args.variants:
        slope = (totals[variant, high] - totals[variant, low]) / (high - low)
        results[variant] = {
            "runs": [
                {"requests": requests, "instructions": totals[variant, requests]}
                for requests in (low, high)
            ],
            "per_request": slope,
        }
    # As wrk_e2e.py's ratios: throughput of top over bottom if CPU-bound, so
    # below 1 when top costs more instructions per request.
    ratios = {
        f"{top}/{bottom}": results[bottom]["per_request"] / results[top]["per_request"]
        for top, bottom in RATIOS
        if top in results and bottom in results
    }
    print(
        f"callgrind: instructions per GET / over {CONNECTIONS} keep-alive "
        f"connections, slope between {low:,} and {high:,} requests"
    )
    for variant, result in results.items():
        print(f"  {variant:>10}: {result['per_request'] / 1000:,.0f} K per request")
    for name, ratio in ratios.items():
        print(
            f"  ratio {name:>17}: {ratio:.3f} "
            f"({1 / ratio:.3f}x the instructions per request)"
        )
    if args.json is not None:
        report = {
            "settings": {
                "counts": [low, high],
                "connections": CONNECTIONS,
                "jobs": args.jobs,
            },
            "machine": machine(valgrind),
            "variants": results,
            "ratios": ratios,
        }
        with args.json.open("w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
