"""Tests of the ``trio-sessions`` command, in-process and as a real subprocess.

Subprocess runs are few and bounded; the ``--url`` run drives a real server on
127.0.0.1, port 0, that this test process serves while the child runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypercorn_server import running_server

from trio_sessions import SessionConfig, __version__, loadtest
from trio_sessions._cli import build_parser, main
from trio_sessions.demo import build_app

SUBPROCESS_TIMEOUT = 60

HANDLERS = """
import trio

async def ok():
    await trio.sleep(0.001)

async def failing():
    await trio.sleep(0.001)
    raise RuntimeError("boom")

def sync_function():
    return None

async def needs_argument(request):
    return request

not_callable = 42

async def shielded():
    with trio.CancelScope(shield=True):
        await trio.sleep(25)
"""

# Runs the command in a Python where ``import rich`` fails, as after a plain
# ``pip install trio-sessions`` (rich comes with the ``cli`` extra).
WITHOUT_RICH = (
    "import sys; sys.modules['rich'] = None; "
    "from trio_sessions._cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def run_cli(
    *args: str, cwd: Path | None = None, rich: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trio_sessions ARGS`` in a subprocess and capture its output."""
    command = ["-m", "trio_sessions"] if rich else ["-c", WITHOUT_RICH]
    return subprocess.run(
        [sys.executable, *command, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


@pytest.fixture
def handlers_dir(tmp_path: Path) -> Path:
    """A directory holding ``cli_handlers.py``, a module of handlers good and bad."""
    (tmp_path / "cli_handlers.py").write_text(textwrap.dedent(HANDLERS))
    return tmp_path


@pytest.fixture
def in_handlers_dir(handlers_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make ``cli_handlers`` importable here, as from the current directory."""
    monkeypatch.chdir(handlers_dir)
    monkeypatch.syspath_prepend(str(handlers_dir))
    monkeypatch.delitem(sys.modules, "cli_handlers", raising=False)
    return handlers_dir


# ---------------------------------------------------------------- subprocess


def test_subprocess_default_run_passes_and_prints_json() -> None:
    """The default load test exits 0 and its --json report shows eight PASSes."""
    completed = run_cli("loadtest", "--json")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["passed"] is True
    assert [s["name"] for s in report["scenarios"]] == list(loadtest.SCENARIO_NAMES)
    assert all(scenario["passed"] for scenario in report["scenarios"])
    assert report["work"] == "simulated, 10 ms sleep"


def test_subprocess_failing_handler_exits_1(handlers_dir: Path) -> None:
    """A handler that raises makes the scenarios fail and the command exit 1."""
    completed = run_cli(
        "loadtest",
        "--handler",
        "cli_handlers:failing",
        "--only",
        "concurrent,capacity",
        "--json",
        cwd=handlers_dir,
    )
    assert completed.returncode == 1, completed.stderr
    report = json.loads(completed.stdout)
    assert report["passed"] is False
    assert [scenario["passed"] for scenario in report["scenarios"]] == [False, False]
    assert "RuntimeError: boom" in json.dumps(report["scenarios"][0]["problems"])


def test_subprocess_table_and_bad_handler() -> None:
    """The table names each scenario with PASS; an unimportable handler exits 2."""
    completed = run_cli("loadtest", "--only", "capacity,metrics")
    assert completed.returncode == 0, completed.stderr
    assert "capacity 50 full, 10 overflow" in completed.stdout
    assert completed.stdout.count("PASS") == 2
    assert "All 2 scenarios passed" in completed.stdout
    bad = run_cli("loadtest", "--handler", "no_such_module_here:handle")
    assert bad.returncode == 2
    assert "cannot import module 'no_such_module_here'" in bad.stderr
    assert bad.stdout == ""


def test_subprocess_help() -> None:
    """--help exits 0 and shows every option with examples."""
    completed = run_cli("loadtest", "--help")
    assert completed.returncode == 0
    for option in (
        "--handler",
        "--url",
        "--sessions",
        "--duration",
        "--json",
        "--quiet",
    ):
        assert option in completed.stdout
    assert "examples:" in completed.stdout


# ---------------------------------------------------------------- in process


def loadtest_options() -> list[argparse.Action]:
    """The options of the ``loadtest`` subcommand, --help excepted."""
    parser = build_parser()
    subparsers = next(
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    loadtest_parser = subparsers.choices["loadtest"]
    return [
        action
        for action in loadtest_parser._actions
        if action.option_strings and action.dest != "help"
    ]


@pytest.mark.parametrize("action", loadtest_options(), ids=lambda a: a.dest)
def test_every_option_has_an_example(action: argparse.Action) -> None:
    """Every loadtest option's help text gives an example."""
    assert action.help is not None
    assert "example: " in action.help


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json or --quiet the report is a table with PASS and a summary."""
    assert main(["loadtest", "--only", "held"]) == 0
    out = capsys.readouterr().out
    assert "100 sessions held at once" in out
    assert "PASS" in out
    assert "1 scenario passed" in out


def test_quiet_prints_nothing_on_success(capsys: pytest.CaptureFixture[str]) -> None:
    """--quiet prints nothing when every scenario passes."""
    assert main(["loadtest", "--quiet", "--only", "capacity"]) == 0
    assert capsys.readouterr() == ("", "")


def test_quiet_prints_failures(
    in_handlers_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--quiet prints each failed check on stderr, and nothing on stdout."""
    argv = ["loadtest", "-q", "--only", "held", "--handler", "cli_handlers:failing"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("FAIL held: ")


def test_table_shows_failures(
    in_handlers_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed scenario shows FAIL, the reason, and a FAILED summary."""
    argv = ["loadtest", "--only", "concurrent", "--handler", "cli_handlers:failing"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "RuntimeError: boom" in out
    assert "1 of 1 scenario FAILED" in out


def test_user_handler_passes(
    in_handlers_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A working handler passes the scenarios it is given."""
    argv = ["loadtest", "--json", "--only", "metrics", "--handler", "cli_handlers:ok"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True
    assert report["work"] == "cli_handlers:ok"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cli_handlers", "expects MODULE:FUNCTION"),
        (":ok", "expects MODULE:FUNCTION"),
        ("cli_handlers:missing", "has no attribute 'missing'"),
        ("cli_handlers:sync_function", "is not an async function"),
        ("cli_handlers:not_callable", "is not an async function"),
        ("cli_handlers:needs_argument", "must be callable with no arguments"),
        ("no_such_module_here:ok", "cannot import module 'no_such_module_here'"),
    ],
)
def test_bad_handler_exits_2(
    in_handlers_dir: Path,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    message: str,
) -> None:
    """A handler that cannot be used is a clear error with exit status 2."""
    assert main(["loadtest", "--handler", spec]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["loadtest", "--sessions", "0"],
        ["loadtest", "--duration", "-1"],
        ["loadtest", "--only", "nope"],
        ["loadtest", "--url", "ftp://example.invalid/"],
        ["loadtest", "--url", "http://127.0.0.1:1/", "--handler", "m:f"],
        ["loadtest", "--url", "http://127.0.0.1:1/", "--sessions", "10"],
        ["loadtest", "--json", "--quiet"],
        ["loadtest", "--html", "-"],
        ["loadtest", "--html", "/no/such/directory/report.html"],
        ["loadtest", "--url", "http://127.0.0.1:1/", "--processes", "0"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Missing commands and bad or conflicting options exit with status 2."""
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the package version."""
    with pytest.raises(SystemExit) as exc_info:
        main(["--version"])
    assert exc_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"trio-sessions {__version__}"


def test_table_without_rich_is_plain_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without rich the report is still a table, in plain text, with failures."""
    monkeypatch.setitem(sys.modules, "rich", None)
    assert main(["loadtest", "--only", "capacity,held"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "trio-sessions load test (work: simulated, 10 ms sleep)"
    assert lines[2].split() == ["#", "Scenario", "Result", "Figures"]
    assert set(lines[3].strip()) == {"-"}
    assert re.match(r" 1   100 sessions held at once +PASS +100/100 admitted", lines[4])
    assert re.match(r" 2   capacity 50 full, 10 overflow +PASS +10/10 rej", lines[5])
    assert lines[7].startswith("All 2 scenarios passed in ")
    assert "pip install" not in captured.err


def test_plain_table_shows_failures(
    in_handlers_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without rich a failed scenario shows FAIL, its reason under the figures."""
    monkeypatch.setitem(sys.modules, "rich", None)
    argv = ["loadtest", "--only", "concurrent", "--handler", "cli_handlers:failing"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(" 1 "))
    assert " FAIL " in row
    problem = next(line for line in out.splitlines() if "RuntimeError: boom" in line)
    assert problem.index("0/50") == row.index("0/50")
    assert "1 of 1 scenario FAILED in " in out


def test_subprocess_table_without_rich() -> None:
    """Where importing rich fails, ``loadtest`` prints the plain table and exits 0."""
    completed = run_cli("loadtest", "--only", "capacity,metrics", rich=False)
    assert completed.returncode == 0, completed.stderr
    assert "capacity 50 full, 10 overflow" in completed.stdout
    assert completed.stdout.count("PASS") == 2
    assert "All 2 scenarios passed" in completed.stdout
    assert completed.stderr == ""


def test_url_without_httptools_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without httptools, --url fails with the pip command of this interpreter."""
    monkeypatch.setitem(sys.modules, "httptools", None)
    assert main(["loadtest", "--url", "http://127.0.0.1:1/"]) == 2
    err = capsys.readouterr().err
    assert "--url needs httptools" in err
    assert f"{sys.executable} -m pip install 'trio-sessions[cli]'" in err


def test_html_without_plotly_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without plotly, --html fails before the run with the pip command to type."""
    monkeypatch.setitem(sys.modules, "plotly", None)
    path = tmp_path / "report.html"
    assert main(["loadtest", "--only", "capacity", "--html", str(path)]) == 2
    captured = capsys.readouterr()
    assert "--html needs plotly" in captured.err
    assert f"{sys.executable} -m pip install 'trio-sessions[report]'" in captured.err
    assert captured.out == ""
    assert not path.exists()


def test_html_writes_one_page_with_the_table_and_charts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--html PATH writes the table and four charts, and still prints the table."""
    path = tmp_path / "report.html"
    assert main(["loadtest", "--only", "held,capacity", "--html", str(path)]) == 0
    assert "All 2 scenarios passed" in capsys.readouterr().out
    page = path.read_text(encoding="utf-8")
    assert "100 sessions held at once" in page
    assert "All 2 scenarios passed" in page
    for chart in ("latency", "throughput", "active", "outcomes"):
        assert f'id="chart-{chart}"' in page
    # plotly.js is inlined, not fetched: the page has no script of its own source.
    assert "<script src" not in page


def test_json_works_without_rich(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json needs no rich."""
    monkeypatch.setitem(sys.modules, "rich", None)
    assert main(["loadtest", "--json", "--only", "capacity"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


# ---------------------------------------------------------------- --url


async def status_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering 200 on /, 503 on /busy."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    status = 503 if scope["path"] == "/busy" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def run_cli_async(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m trio_sessions ARGS`` as a child while this Trio run goes on."""
    with trio.fail_after(SUBPROCESS_TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "trio_sessions", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_subprocess_url_load() -> None:
    """--url drives a real local server and reports its 2xx and 503 counts in JSON."""
    async with running_server(status_app) as base:
        ok = await run_cli_async(
            "loadtest", "--url", f"{base}/", "--requests", "40", "--concurrency", "4"
        )
        busy = await run_cli_async(
            "loadtest", "--url", f"{base}/busy", "--requests", "10", "--json"
        )
        paced = await run_cli_async(
            "loadtest", "--url", f"{base}/", "--rate", "500", "--requests", "20",
            "--processes", "2", "--json",
        )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert b"PASS" in ok.stdout
    assert busy.returncode == 0, busy.stderr
    report = json.loads(busy.stdout)
    (http,) = report["scenarios"]
    assert http["name"] == "http"
    assert (http["requests"], http["status_503"], http["success_2xx"]) == (10, 10, 0)
    assert http["latency"]["count"] == 10
    assert report["work"] == f"GET {base}/busy"
    assert paced.returncode == 0, paced.stderr
    (http,) = json.loads(paced.stdout)["scenarios"]
    assert (http["rate"], http["processes"], http["requests"]) == (500, 2, 20)
    assert http["latency"]["count"] == 20
    assert http["latency"]["p999"] is not None
    assert sum(http["timeline"]["counts"]["2xx"]) == 20


# ---------------------------------------------------------------- --json PATH


def test_json_path_writes_the_report_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json PATH writes the JSON report there, and the table still prints."""
    path = tmp_path / "report.json"
    assert main(["loadtest", "--only", "held", "--json", str(path)]) == 0
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["passed"] is True
    assert [s["name"] for s in report["scenarios"]] == ["held"]
    assert "1 scenario passed" in capsys.readouterr().out


def test_json_path_with_quiet_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json PATH --quiet writes the file and prints nothing on success."""
    path = tmp_path / "report.json"
    assert main(["loadtest", "-q", "--only", "capacity", "--json", str(path)]) == 0
    assert json.loads(path.read_text(encoding="utf-8"))["passed"] is True
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("argv", [["--json", "-"], ["--json"]])
def test_json_dash_prints_json_on_stdout(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """--json - (or --json alone) prints the JSON report on stdout, no table."""
    assert main(["loadtest", "--only", "capacity", *argv]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


def test_json_path_in_a_missing_directory_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --json PATH that cannot be written is a usage error, before any scenario."""
    path = tmp_path / "missing" / "report.json"
    assert main(["loadtest", "--only", "capacity", "--json", str(path)]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err
    assert captured.out == ""
    assert main(["loadtest", "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_subprocess_json_path_as_the_readme_says(tmp_path: Path) -> None:
    """``loadtest --json report.json`` in a subprocess writes report.json."""
    completed = run_cli(
        "loadtest", "--only", "metadata", "--json", "report.json", cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr
    assert "PASS" in completed.stdout
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert report["scenarios"][0]["name"] == "metadata"


# ---------------------------------------------------------------- usage


def test_subprocess_unknown_option_shows_the_loadtest_usage() -> None:
    """An unknown flag after ``loadtest`` prints loadtest's usage, not the top one."""
    completed = run_cli("loadtest", "--no-such-flag")
    assert completed.returncode == 2
    assert completed.stderr.startswith("usage: trio-sessions loadtest ")
    assert (
        "trio-sessions loadtest: error: unrecognized arguments: --no-such-flag"
        in completed.stderr
    )
    assert completed.stdout == ""


async def test_help_examples_work_against_serve() -> None:
    """Every URL of ``loadtest --help`` is one that ``trio-sessions serve`` answers."""
    help_text = run_cli("loadtest", "--help").stdout
    urls = set(re.findall(r"http://127\.0\.0\.1:8000(/[^\s)]*)", help_text))
    assert "/healthz" in urls
    app = build_app(SessionConfig(max_sessions=10), max_body_bytes=1024)
    async with running_server(app) as base:
        for path in sorted(urls):
            completed = await run_cli_async(
                "loadtest", "--url", base + path, "--requests", "5", "--json"
            )
            assert completed.returncode == 0, (path, completed.stdout)
            (http,) = json.loads(completed.stdout)["scenarios"]
            assert http["success_2xx"] == 5, path


# ---------------------------------------------------------------- a stuck run


@pytest.mark.parametrize(
    "output", [["--json", "-"], [], ["--quiet"]], ids=["json", "table", "quiet"]
)
def test_run_says_what_it_waits_for(
    in_handlers_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    output: list[str],
) -> None:
    """A handler that ignores cancellation: stderr says, while it waits, on what."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    monkeypatch.setattr(trio, "run", functools.partial(trio.run, clock=clock))
    argv = ["loadtest", "--only", "concurrent", "--handler", "cli_handlers:shielded"]
    assert main([*argv, *output]) == 1
    err = [
        line
        for line in capsys.readouterr().err.splitlines()
        if not line.startswith("FAIL ")  # --quiet's report
    ]
    # Cancelled at the 10 s deadline, it returns at 25 s: told at 13 s and 23 s,
    # and that it goes on when they are back (in that step, whatever the
    # order of the watch's tick and the calls' return: it once flaked).
    assert err == [
        *(
            f"trio-sessions loadtest: scenario 'concurrent' is waiting for 50 calls "
            f"of cli_handlers:shielded: cancelled at their 10 s deadline {late} s "
            "ago, they have not returned. The handler does not respond to "
            "cancellation (a shielded cancel scope, or a loop that never awaits?); "
            "the load test cannot go on until it returns."
            for late in (3, 13)
        ),
        "trio-sessions loadtest: scenario 'concurrent': the handler calls returned,"
        " going on",
    ]
