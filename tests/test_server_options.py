"""In-process checks of what the servers share: options, standard JSON, sleep bounds.

The example scripts are loaded as modules (they are not a package), so their
parsers and request checks are tested without starting a process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio

from trio_sessions import SessionConfig, _wire
from trio_sessions._cli import _serve
from trio_sessions._server_options import EPILOG, EXIT_FORCED
from trio_sessions.demo import build_app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = ("http_server", "tcp_json_server", "websocket_server")
SHARED = {
    "--host",
    "--port",
    "--max-sessions",
    "--max-waiting",
    "--wait-timeout",
    "--request-timeout",
    "--shutdown-timeout",
}
NOT_JSON = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b'{"a": [1, -1e999]}']


def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_under_test", EXAMPLES / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trio-sessions serve")
    _serve.configure_parser(parser)
    return parser


def parsers() -> dict[str, argparse.ArgumentParser]:
    found = {name: load(name).build_parser() for name in NAMES}
    found["serve"] = serve_parser()
    return found


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


# ------------------------------------------------------------ one option set


def test_every_server_has_the_shared_options_with_help_and_defaults() -> None:
    """serve and the three examples take the same options, each with help text."""
    for name, parser in parsers().items():
        found = options_of(parser)
        assert set(found) >= SHARED, name
        for option, action in found.items():
            assert action.help, f"{name} {option} has no help"
            if action.default not in (None, False):
                assert "default:" in action.help, f"{name} {option}"
        assert (found["--request-timeout"].help or "").endswith("default: 30")
        assert parser.epilog is not None
        assert parser.epilog.endswith(EPILOG)  # the exit statuses, in --help
        assert "exit status:" in parser.format_help()


def test_shared_options_parse_alike_everywhere() -> None:
    """none, --wait-timeout and the rest mean the same to every server."""
    argv = ["--request-timeout", "none", "--wait-timeout", "2.5", "--max-waiting=3"]
    for name, parser in parsers().items():
        args = parser.parse_args(argv)
        assert args.request_timeout is None, name
        assert (args.wait_timeout, args.max_waiting) == (2.5, 3), name
        assert args.shutdown_timeout == 5.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-sessions", "0"], "argument --max-sessions: must be >= 1, got 0"),
        (["--max-waiting", "-1"], "argument --max-waiting: must be >= 0, got -1"),
        (["--request-timeout", "soon"], "must be seconds or 'none', got 'soon'"),
        (["--request-timeout", "-1"], "must be >= 0 seconds, got -1.0"),
        (["--shutdown-timeout", "none"], "must be a number of seconds, got 'none'"),
        (["--wait-timeout", "nan"], "must be >= 0 seconds, got nan"),
        (["--port", "70000"], "argument --port: must be <= 65535, got 70000"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad value exits 2 with one line naming the option, in every server."""
    for name, parser in parsers().items():
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        assert exited.value.code == 2, name
        err = capsys.readouterr().err
        assert message in err.splitlines()[-1], (name, err)
        assert "Traceback" not in err


def test_fleet_limit_needs_a_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    """--fleet-limit without --redis-url is refused, not silently ignored."""
    example = load("http_server")
    with pytest.raises(SystemExit) as exited:
        example.parse_args(["--fleet-limit", "5"])
    assert exited.value.code == 2
    assert "--fleet-limit needs --redis-url" in capsys.readouterr().err
    assert example.parse_args([]).fleet_limit is None


def test_serve_run_refuses_a_config_the_options_allowed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What only SessionConfig refuses is one line and status 2, nothing served."""
    args = serve_parser().parse_args([])
    args.max_sessions = 0  # as a caller building the Namespace by hand might
    assert _serve.run(args) == 2
    assert capsys.readouterr().err.strip().endswith("max_sessions must be >= 1, got 0")


# ------------------------------------------------------------- standard JSON


@pytest.mark.parametrize("data", NOT_JSON)
def test_non_standard_json_is_refused_at_parse_time(data: bytes) -> None:
    """NaN, Infinity and numbers that overflow to infinity are not JSON."""
    with pytest.raises(ValueError, match=r"not JSON|out of range"):
        _wire.loads(data)
    assert _wire.loads(b'{"a": [1.5, -2, 1e300, 10000000000000000000000]}') == {
        "a": [1.5, -2, 1e300, 10**22]
    }


def test_non_finite_numbers_are_never_written() -> None:
    """dumps refuses what json.dumps would write as NaN or Infinity."""
    for value in (math.nan, math.inf, {"x": [-math.inf]}):
        with pytest.raises(ValueError, match="JSON compliant"):
            _wire.dumps(value)


async def call_app(
    app: Any, method: str, path: str, body: bytes = b"", query: bytes = b""
) -> tuple[int, bytes]:
    """One HTTP request to an ASGI app, in process."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("data", NOT_JSON)
async def test_demo_echo_answers_400_to_non_standard_json(data: bytes) -> None:
    """POST /echo refuses NaN, Infinity and 1e400 with 400 instead of echoing them."""
    app = build_app(SessionConfig(), max_body_bytes=1024, use_middleware=False)
    status, body = await call_app(app, "POST", "/echo", data)
    assert status == 400
    assert "malformed JSON" in json.loads(body)["error"]
    status, body = await call_app(app, "POST", "/echo", b'{"n": 1e300}')
    assert (status, json.loads(body)) == (200, {"echo": {"n": 1e300}})


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (b"-1", b"seconds must be >= 0 seconds, got -1.0"),
        (b"nan", b"seconds must be >= 0 seconds, got nan"),
        (b"inf", b"seconds must be a finite number of seconds >= 0, got inf"),
        (b"1e400", b"seconds must be a finite number of seconds >= 0, got inf"),
        (b"601", b"seconds must be <= 600 seconds, got '601'"),
        (b"soon", b"seconds must be a number of seconds, got 'soon'"),
    ],
)
async def test_demo_slow_refuses_bad_seconds(seconds: bytes, message: bytes) -> None:
    """/slow checks its seconds with the project's one validator: 400 naming it."""
    app = build_app(SessionConfig(), max_body_bytes=1024, use_middleware=False)
    status, body = await call_app(app, "GET", "/slow", query=b"seconds=" + seconds)
    assert (status, body.strip()) == (400, message)


async def test_demo_slow_sleeps_what_it_is_asked(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A valid /slow sleeps exactly that long."""
    app = build_app(SessionConfig(), max_body_bytes=1024, use_middleware=False)
    start = trio.current_time()
    status, _ = await call_app(app, "GET", "/slow", query=b"seconds=2.5")
    assert (status, trio.current_time() - start) == (200, 2.5)


@pytest.mark.parametrize(
    "seconds", [-1, math.nan, math.inf, 10**400, 601, "1", True, None]
)
def test_tcp_and_websocket_sleep_refuse_what_slow_refuses(seconds: object) -> None:
    """The examples' sleep refuses the seconds /slow refuses, before admission."""
    tcp, websocket = load("tcp_json_server"), load("websocket_server")
    with pytest.raises(tcp.BadRequest, match="seconds"):
        tcp.check_params("sleep", {"seconds": seconds})
    with pytest.raises(websocket.InvalidParams, match="seconds"):
        websocket.check_arguments("sleep", {"seconds": seconds})
    assert tcp.check_params("sleep", {"seconds": 0}) == 0
    assert websocket.check_arguments("sleep", {"seconds": 600}) == {"seconds": 600}


def test_json_rpc_ids_are_strings_numbers_or_null() -> None:
    """An object, array or boolean id is not a JSON-RPC 2.0 id."""
    websocket = load("websocket_server")
    for good in ("a", 1, 1.5, None):
        assert websocket.is_valid_id(good)
    for bad in ({"a": 1}, [1], True):
        assert not websocket.is_valid_id(bad)


def test_the_epilog_documents_every_exit_status() -> None:
    """0, 1, 2 and 130 are each explained where --help shows them."""
    for status in ("0", "1", "2", str(EXIT_FORCED)):
        assert re.search(rf"\b{status}\b", EPILOG), status
