"""Keep the benchmarks working: tiny counts, a request or two to the floor servers.

Everything a callgrind run executes is run here natively (``--run-one``, the
floor servers, the in-flight client), and the callgrind plumbing once on a
few lines of Python. The benchmarks' own runs under valgrind take a minute of
both cores (importing Trio alone takes 14 s there), and wrk's comparison of
two servers several seconds: ``nox -s bench_smoke`` runs them too, as does
``TRIO_SESSIONS_SLOW_BENCH=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from e2e_helpers import get, raw_http, run_server

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sessions.py"
FLOOR = BENCH.parent / "http_floor.py"
CALLGRIND = BENCH.parent / "callgrind_http.py"
WRK = BENCH.parent / "wrk_e2e.py"
SCENARIOS = {"burst", "request", "inline", "inline_wait", "reject", "memory"}
CONTENDERS = {
    "trio_sessions",
    "raw_trio",
    "raw_block",
    "users_trio",
    "anyio_trio",
    "asyncio",
}
# inline_wait's trio_sessions enters through a checkpoint, as `async with
# limiter:` does; every other scenario is measured against the leanest raw Trio.
REFERENCES = {name: "raw_trio" for name in SCENARIOS} | {"inline_wait": "users_trio"}
# The scenarios the issue-16 features are counted in, and the features.
FEATURE_SCENARIOS = {"burst", "request", "inline", "reject"}
FEATURES = {"per_key", "priority", "controller"}
# CI installs valgrind (.ci/run): there, a missing valgrind fails the test.
needs_valgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None
    and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="needs valgrind",
)
# The benchmarks' own runs under callgrind (a minute of both cores), and
# wrk's two-server comparison.
slow_bench = pytest.mark.skipif(
    not os.environ.get("TRIO_SESSIONS_SLOW_BENCH"),
    reason="slow: nox -s bench_smoke runs it (or TRIO_SESSIONS_SLOW_BENCH=1)",
)


def test_benchmark_runs_with_tiny_counts_and_writes_its_json(tmp_path: Path) -> None:
    """The benchmark runs end to end with tiny counts and writes the documented JSON."""
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(BENCH), "--rounds", "2", "--count", "5"]
    argv += ["--parked", "20", "--scale", "--throughput", "100", "--slots", "5"]
    argv += ["--no-callgrind", "--opcode-counts", "1", "2"]
    argv += ["--quiet", "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout
    assert "callgrind" not in done.stdout

    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["settings"]["count"] == 5
    assert report["settings"]["rounds"] == 2
    assert {"python", "cpu", "versions", "commit"} <= set(report["machine"])
    assert {row["scenario"] for row in report["results"]} == SCENARIOS
    for row in report["results"]:
        reference = REFERENCES[row["scenario"]]
        assert row["reference"] == reference
        assert set(row["samples"]) <= CONTENDERS
        assert {"trio_sessions", reference} <= set(row["samples"])
        for name, values in row["samples"].items():
            assert len(values) == 2
            assert row[name] == min(values) > 0
        assert row["ratio"] == row["trio_sessions"] / row[reference]
        # Only memory has a target on the wall clock; callgrind judges time.
        assert isinstance(row["met"], bool) == (row["scenario"] == "memory")
    inline = next(row for row in report["results"] if row["scenario"] == "inline")
    assert set(inline["samples"]) == CONTENDERS
    # Bytecode counts are deterministic: every scenario but memory, both sides.
    opcodes = report["opcodes"]
    assert set(opcodes) == SCENARIOS - {"memory"}
    for scenario, row in opcodes.items():
        reference = REFERENCES[scenario]
        assert row["reference"] == reference
        assert row["trio_sessions"] > 0
        assert row[reference] > 0
        assert row["ratio"] == row["trio_sessions"] / row[reference]
    assert report["settings"]["opcode_counts"] == [1, 2]
    assert "bytecode instructions per session" in done.stdout
    # Each feature configured, in each scenario of the default path it can
    # take: its count, and its cost over that path's.
    features = report["feature_opcodes"]
    assert set(features) == FEATURES
    assert "with one issue-16 feature configured" in done.stdout
    for name, entry in features.items():
        assert entry["configured"]
        assert "skipped" not in entry, f"{name}: {entry['skipped']}"
        assert set(entry["per_session"]) == set(entry["cost"]) == FEATURE_SCENARIOS
        for scenario, count in entry["per_session"].items():
            default = opcodes[scenario]["trio_sessions"]
            assert entry["cost"][scenario] == count - default
    assert "callgrind" not in report
    parked = report["scale"]["parked"]
    assert parked["sessions"] == 20
    assert set(parked["bytes_per_session"]) == {"trio_sessions", "raw_trio"}
    through = report["scale"]["throughput"]
    assert (through["sessions"], through["slots"]) == (100, 5)
    assert [mark["started"] for mark in through["traced_memory"]] == [10, 100]
    assert through["traced_memory"][-1]["completed"] == 100


@pytest.mark.parametrize(
    ("scenario", "ours", "theirs"),
    [
        ("burst", "start_session_nowait", "_raw_trio_task"),
        ("inline", "session_nowait", None),
        ("inline_wait", "session", "acquire_on_behalf_of"),
    ],
)
def test_breakdown_itemizes_the_difference_by_function(
    scenario: str, ours: str, theirs: str | None
) -> None:
    """--breakdown lists per-function bytecode counts of both sides of a scenario."""
    argv = [sys.executable, str(BENCH), "--breakdown", scenario]
    argv += ["--opcode-counts", "1", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header, _, *rows = done.stdout.splitlines()
    reference = REFERENCES[scenario]
    assert header.startswith(f"{scenario}: bytecode instructions per session")
    assert f"vs {reference}" in header
    # Rows end in file:function; both sides' counts are per session.
    counts = {row.rpartition(":")[2]: row.split()[1:3] for row in rows}
    # The session's entry point shows up, and so does the reference's own.
    assert float(counts[ours][0]) > 0
    if theirs is not None:
        assert float(counts[theirs][1]) > 0


def test_breakdown_itemizes_a_features_cost() -> None:
    """--breakdown with --feature sets the feature against the default path."""
    argv = [sys.executable, str(BENCH), "--breakdown", "burst"]
    argv += ["--feature", "per_key", "--opcode-counts", "1", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header, _, *rows = done.stdout.splitlines()
    assert header.startswith("burst: bytecode instructions per session, ")
    ours, _, theirs = header.partition(", ")[2].partition(" vs ")
    assert ours.startswith("trio_sessions+per_key ")
    assert theirs.startswith("trio_sessions ")
    # A key costs more than none, and the rows say where: differences in
    # functions of trio_sessions' own modules.
    assert float(ours.split()[1]) > float(theirs.split()[1])
    differences = [float(row.split()[0]) for row in rows if row.split()[3:]]
    assert max(differences) > 0
    assert any(row.split()[3].startswith("_") for row in rows)


@pytest.mark.parametrize(
    ("scenario", "contender"),
    [("inline", "trio_sessions"), ("inline", "raw_trio"), ("request", "users_trio")],
)
def test_run_one_runs_one_contender_and_prints_its_garbage(
    scenario: str, contender: str
) -> None:
    """The hidden entry point that callgrind counts runs one contender natively."""
    argv = [sys.executable, str(BENCH), "--run-one", scenario, contender, "20"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # What the cyclic collector freed at the end: a count, nothing else.
    assert done.stdout.strip().isdigit()


def test_run_one_refuses_a_contender_the_scenario_lacks() -> None:
    """--run-one names the scenario and contender it cannot run."""
    argv = [sys.executable, str(BENCH), "--run-one", "inline_wait", "raw_trio", "5"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no contender 'raw_trio' in 'inline_wait'" in done.stderr


# The callgrind plumbing both benchmarks share, on a loop of bare Python:
# valgrind's command line, its summary read back, two runs at once, the slope.
_LOOP_UNDER_CALLGRIND = """
import json, subprocess, sys
import _harness

valgrind = _harness.require_valgrind()

def count(n):
    # -S: no site import, a second less of start-up under valgrind.
    argv = _harness.command(valgrind, "-S", "-c", f"for _ in range({n}): pass")
    done = subprocess.run(
        argv, capture_output=True, text=True, env=_harness.environment()
    )
    return _harness.summary(done.stderr, f"loop x {n}", done.returncode)

counts = [int(n) for n in sys.argv[1:]]
totals = _harness.run_all(2, count, counts)
print(json.dumps(_harness.slopes(counts, [totals[n] for n in counts])))
"""


@needs_valgrind
def test_callgrind_plumbing_counts_a_loop_per_iteration() -> None:
    """Two tiny runs of Python under callgrind, side by side: the slope of their
    totals is a loop iteration's cost, start-up cancelled out."""
    argv = [sys.executable, "-c", _LOOP_UNDER_CALLGRIND, "1000", "21000"]
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    slopes = json.loads(done.stdout)
    # Without --simulate, only instructions; a few dozen per iteration of
    # CPython's eval loop, not the tens of millions of its start-up.
    assert set(slopes) == {"instructions"}
    assert 5 < slopes["instructions"] < 2000


async def test_callgrind_http_client_keeps_requests_in_flight(
    tmp_path: Path,
) -> None:
    """callgrind_http's client, natively against the inline floor: 40 requests,
    six outstanding at once on six connections, all answered."""
    drive = "import sys, callgrind_http\ncallgrind_http.drive(int(sys.argv[1]), 40, 6)"
    with trio.fail_after(60):
        async with run_server(
            [str(FLOOR), "--max-sessions", "6", "--inline"], tmp_path, name="floor"
        ) as server:
            env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
            done = await trio.run_process(
                [sys.executable, "-c", drive, str(server.port)],
                capture_stderr=True,
                check=False,
                env=env,
            )
            assert done.returncode == 0, done.stderr.decode()
            status, _, body = await raw_http(server.port, get("/"))
            assert (status, body) == (200, b"hello\n")
            server.signal(signal.SIGTERM)
            status, _ = await server.wait_exit()
            assert status == 0


@slow_bench
@needs_valgrind
def test_callgrind_mode_counts_instructions_per_session(tmp_path: Path) -> None:
    """--callgrind counts one contender at two tiny counts, in parallel, into JSON."""
    out = tmp_path / "bench.json"
    argv = [sys.executable, str(BENCH), "--scenario", "inline"]
    argv += ["--contender", "trio_sessions", "--rounds", "1", "--count", "5"]
    argv += ["--no-opcodes", "--callgrind", "--callgrind-counts", "2", "6"]
    argv += ["--jobs", "2", "--quiet", "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "callgrind: CPU instructions per session" in done.stdout

    callgrind = json.loads(out.read_text(encoding="utf-8"))["callgrind"]
    assert callgrind["settings"]["counts"] == [2, 6]
    assert callgrind["settings"]["valgrind"].startswith("valgrind")
    assert callgrind["source_changed_during_runs"] is False
    assert set(callgrind["per_session"]) == {"inline"}
    ours = callgrind["per_session"]["inline"]["trio_sessions"]
    assert [run["sessions"] for run in ours["runs"]] == [2, 6]
    low, high = (run["instructions"] for run in ours["runs"])
    assert ours["per_session"] == (high - low) / 4 > 0
    # Without --simulate (twice as slow), no simulated events.
    assert ours["simulated_per_session"] == {}
    # No reference was measured: no ratio to report.
    assert callgrind["comparisons"] == []


@pytest.mark.parametrize("form", [[], ["--inline"]], ids=["spawned", "inline"])
async def test_floor_server_serves_the_example_app(
    tmp_path: Path, form: list[str]
) -> None:
    """Both floor servers answer the example's app and exit cleanly."""
    with trio.fail_after(60):
        async with run_server(
            [str(FLOOR), "--max-sessions", "4", *form], tmp_path, name="floor"
        ) as server:
            status, _, body = await raw_http(server.port, get("/"))
            assert (status, body) == (200, b"hello\n")
            echo = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n"
            echo += b"Connection: close\r\n\r\n[1, 2]"
            status, _, body = await raw_http(server.port, echo)
            assert (status, json.loads(body)) == (200, {"echo": [1, 2]})
            server.signal(signal.SIGTERM)
            status, _ = await server.wait_exit()
            assert status == 0


async def _hold(port: int, statuses: list[int]) -> None:
    # Long enough for a request to find the token held, short enough to wait
    # for: a request cut off mid-way keeps the server from exiting for seconds.
    status, _, _ = await raw_http(port, get("/slow?seconds=0.5"))
    statuses.append(status)


async def test_inline_floor_refuses_beyond_its_tokens(tmp_path: Path) -> None:
    """The inline floor holds a token per request: with one held, the next gets 503."""
    with trio.fail_after(60):
        async with run_server(
            [str(FLOOR), "--max-sessions", "1", "--inline"], tmp_path, name="floor"
        ) as server:
            async with trio.open_nursery() as nursery:
                ended: list[int] = []
                nursery.start_soon(_hold, server.port, ended)
                for _ in range(500):
                    status, _, _ = await raw_http(server.port, get("/"))
                    if status == 503:
                        break
                    if ended:
                        # /slow came while / held the token, and was refused.
                        ended.clear()
                        nursery.start_soon(_hold, server.port, ended)
                    await trio.sleep(0.01)
                else:
                    pytest.fail("/ was never refused while /slow held the token")
            # The request holding the token was served, in full.
            assert ended == [200]
            server.signal(signal.SIGTERM)
            status, _ = await server.wait_exit()
            assert status == 0


@slow_bench
@needs_valgrind
def test_callgrind_benchmark_counts_instructions_per_request(tmp_path: Path) -> None:
    """The callgrind benchmark runs the inline floor with tiny counts, writes JSON."""
    out = tmp_path / "callgrind.json"
    argv = [sys.executable, str(CALLGRIND), "--variants", "floor-inline"]
    argv += ["--counts", "20", "40", "--jobs", "2", "--in-flight", "6"]
    argv += ["--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "K per request" in done.stdout

    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["settings"]["counts"] == [20, 40]
    # Six requests outstanding at once, each on a connection of its own.
    settings = report["settings"]
    assert settings["in_flight"] == settings["connections"] == 6
    assert set(report["variants"]) == {"floor-inline"}
    assert "commit" in report["machine"]
    floor = report["variants"]["floor-inline"]
    assert [run["requests"] for run in floor["runs"]] == [20, 40]
    assert floor["per_request"] > 0
    assert report["ratios"] == report["instruction_ratios"] == {}


def _wrk(tmp_path: Path, variants: list[str]) -> tuple[str, dict[str, Any]]:
    """Run wrk_e2e.py over ``variants``, a second each (and a second's warm-up)."""
    out = tmp_path / "wrk.json"
    argv = [sys.executable, str(WRK), "--variants", *variants]
    argv += ["--duration", "1", "--rounds", "1", "--connections", "4"]
    argv += ["--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert set(report["median_requests_per_second"]) == set(variants)
    assert all(rate > 0 for rate in report["median_requests_per_second"].values())
    return done.stdout, report


needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")


@needs_wrk
def test_wrk_benchmark_drives_the_inline_floor(tmp_path: Path) -> None:
    """wrk_e2e.py drives one variant for a second and reports its rate and CPU."""
    stdout, report = _wrk(tmp_path, ["floor-inline"])
    assert "floor-inline: median" in stdout
    assert report["server_cpu_us_per_request"]["floor-inline"] > 0
    assert report["ratios"] == {}


@slow_bench
@needs_wrk
def test_wrk_benchmark_compares_the_inline_floor_with_bare(tmp_path: Path) -> None:
    """wrk_e2e.py runs two of its variants for a second each and writes the ratio."""
    stdout, report = _wrk(tmp_path, ["bare", "floor-inline"])
    assert "floor-inline/bare" in stdout
    assert set(report["ratios"]) == {"floor-inline/bare"}
