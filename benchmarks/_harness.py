"""What the benchmarks share: callgrind counts, the HTTP servers, the checkout.

``bench_sessions.py --callgrind`` and ``callgrind_http.py`` count the CPU
instructions of Python subprocesses under valgrind's callgrind: the command
line, the environment that makes runs repeat, the total read from valgrind's
summary, and the slope between two runs of different sizes are here; so are
the HTTP server variants that ``callgrind_http.py`` and ``wrk_e2e.py`` compare,
and the record of which code a run measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import argparse

ROOT = Path(__file__).resolve().parent.parent

EXAMPLE = ROOT / "examples" / "http_server.py"
FLOOR = ROOT / "benchmarks" / "http_floor.py"
# The HTTP servers compared: variant -> (script, options). All but bare get a
# capacity (http_server_argv).
HTTP_VARIANTS: dict[str, tuple[Path, tuple[str, ...]]] = {
    "bare": (EXAMPLE, ("--no-middleware",)),
    "middleware": (EXAMPLE, ()),
    "middleware-spawned": (EXAMPLE, ("--spawned",)),
    "floor": (FLOOR, ()),
    "floor-inline": (FLOOR, ("--inline",)),
    # The inline session alone: between the floor and the middleware.
    "floor-session": (FLOOR, ("--session",)),
}

Run = TypeVar("Run")
Result = TypeVar("Result")


def http_server_argv(variant: str, capacity: int) -> list[str]:
    """The script and options of HTTP ``variant``, with ``capacity`` sessions."""
    script, options = HTTP_VARIANTS[variant]
    sized = () if variant == "bare" else ("--max-sessions", str(capacity))
    return [str(script), *sized, *options]


def add_variants_option(parser: argparse.ArgumentParser) -> None:
    """``--variants``: the HTTP servers to measure, all by default."""
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(HTTP_VARIANTS),
        default=list(HTTP_VARIANTS),
        help="servers to measure (default: all)",
    )


def find_valgrind() -> str | None:
    """valgrind's path, or None when it is not installed."""
    return shutil.which("valgrind")


def require_valgrind() -> str:
    """valgrind's path, or exit with how to install it."""
    path = find_valgrind()
    if path is None:
        sys.exit("valgrind not found: apt-get install valgrind (Debian/Ubuntu)")
    return path


# What --cache-sim=yes and --branch-sim=yes add to valgrind's summary: events
# that cost time but no instructions (name -> pattern of its total).
SIMULATED = {
    "D1 misses": r"D1\s+misses:\s+([\d,]+)",
    "LL misses": r"LL misses:\s+([\d,]+)",
    "mispredicts": r"Mispredicts:\s+([\d,]+)",
}


def command(valgrind: str, *argv: str, simulate: bool = False) -> list[str]:
    """``python *argv`` under callgrind, which writes no profile, only its summary.

    With ``simulate``, callgrind also simulates the caches and the branch
    predictor (about twice as slow) and sums their misses (:data:`SIMULATED`).
    """
    options = ["--cache-sim=yes", "--branch-sim=yes"] if simulate else []
    return [
        valgrind,
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        *options,
        sys.executable,
        *argv,
    ]


def environment(*paths: Path) -> dict[str, str]:
    """The environment of a counted run: ``paths`` and the checkout importable."""
    path = os.pathsep.join(str(p) for p in (*paths, ROOT))
    # A fixed hash seed: the same dict and set layouts every run, one less
    # source of run-to-run differences (Trio shuffles its run queue anyway).
    env = {**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": "0"}
    # Let the runs cache bytecode: compiling every module again under
    # valgrind costs seconds per run (the same in both runs of a slope).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def cache_bytecode() -> None:
    """Compile the checkout's modules, so that no counted run compiles one.

    The counted runs may write bytecode caches (:func:`environment`): without
    this, the first run to import a module edited since its last compilation
    would pay for compiling it, and a slope between a run that paid and one
    that did not would be off by that much.
    """
    dirs = [str(ROOT / name) for name in ("trio_sessions", "benchmarks", "examples")]
    # A module that does not compile fails its counted run, with its error.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *dirs], capture_output=True
    )


def summary(log: str, what: str, returncode: int) -> dict[str, int]:
    """valgrind's totals from its stderr ``log``; raise if the run failed.

    ``instructions`` (the ``I refs:`` line), and those of :data:`SIMULATED`
    that the run simulated.
    """
    found = re.findall(r"I\s+refs:\s+([\d,]+)", log)
    if returncode != 0 or not found:
        tail = "\n".join(log.splitlines()[-20:])
        raise RuntimeError(f"{what} exited with {returncode} and no total:\n{tail}")
    totals = {"instructions": int(found[-1].replace(",", ""))}
    for name, pattern in SIMULATED.items():
        simulated = re.findall(pattern, log)
        if simulated:
            totals[name] = int(simulated[-1].replace(",", ""))
    return totals


def slope(counts: Sequence[int], totals: Sequence[int]) -> float:
    """Instructions per unit between two runs: start-up and shutdown cancel out."""
    (low, high), (low_total, high_total) = counts, totals
    return (high_total - low_total) / (high - low)


def slopes(
    counts: Sequence[int], summaries: Sequence[dict[str, int]]
) -> dict[str, float]:
    """:func:`slope` of every total two :func:`summary` results share."""
    low, high = summaries
    return {
        event: slope(counts, [low[event], high[event]])
        for event in low
        if event in high
    }


def run_all(
    jobs: int, count: Callable[[Run], Result], runs: Iterable[Run]
) -> dict[Run, Result]:
    """``count(run)`` for every run, ``jobs`` of them at once; run -> result."""
    runs = list(runs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(zip(runs, pool.map(count, runs), strict=True))


def version(valgrind: str) -> str:
    """``valgrind --version``: instruction counts depend on it."""
    found = subprocess.run(
        [valgrind, "--version"], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


def source_digest() -> str:
    """A digest of the library's and the benchmarks' source, to see it change."""
    digest = hashlib.sha256()
    for path in sorted(
        [*ROOT.glob("trio_sessions/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    ):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def checkout() -> dict[str, Any]:
    """The checkout's commit, and whether trio_sessions differs from it."""

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *argv], capture_output=True, text=True
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    return {
        "commit": commit,
        "trio_sessions_modified": bool(git("status", "--porcelain", "trio_sessions")),
    }


def write_json(path: Path | str, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` as indented JSON."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
