"""Tests of the ``trio-sessions`` command, in-process and as a real subprocess.

Subprocess runs are few and bounded; the ``--url`` run drives a real server on
127.0.0.1, port 0, that this test process serves while the child runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn_server import running_server

from trio_sessions import __version__, loadtest
from trio_sessions._cli import build_parser, main

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
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trio_sessions ARGS`` in a subprocess and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "trio_sessions", *args],
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


def test_missing_rich_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without rich, the table output fails with the pip command that fixes it."""
    monkeypatch.setitem(sys.modules, "rich", None)
    assert main(["loadtest", "--only", "capacity"]) == 2
    assert "pip install 'trio-sessions[cli]'" in capsys.readouterr().err


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
    assert ok.returncode == 0, ok.stderr
    assert b"PASS" in ok.stdout
    assert busy.returncode == 0, busy.stderr
    report = json.loads(busy.stdout)
    (http,) = report["scenarios"]
    assert http["name"] == "http"
    assert (http["requests"], http["status_503"], http["success_2xx"]) == (10, 10, 0)
    assert http["latency"]["count"] == 10
    assert report["work"] == f"GET {base}/busy"
