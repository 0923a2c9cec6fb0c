"""The documentation's code runs: every tutorial step and every how-to snippet.

Real I/O stays on 127.0.0.1 with port 0 and under ``trio.fail_after``; anything
that only involves time runs under ``autojump_clock``, so the suite takes
milliseconds of wall time.
"""

from __future__ import annotations

import ast
import functools
import html
import importlib.util
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_sessions as ts
from trio_sessions.asgi import Receive, Scope, Send

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

DOCS = Path(__file__).resolve().parent.parent / "docs"
STEPS = [1, 2, 3, 4, 5]
# The steps that stop on SIGTERM instead of running until cancelled.
DRAINING_STEPS = [4, 5]
IO_TIMEOUT = 10
# os.kill(pid, SIGTERM) terminates the process outright on Windows.
needs_sigterm = pytest.mark.skipif(
    sys.platform == "win32", reason="the tutorial's servers stop on SIGTERM"
)


def load_step(number: int | str) -> ModuleType:
    """Import ``docs/tutorial/step<number>.py`` (or ``client.py``) as a module."""
    stem = f"step{number}" if isinstance(number, int) else number
    path = DOCS / "tutorial" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"tutorial_{stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Client:
    """A JSON-lines client of the tutorial server."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, listeners: list[trio.SocketListener]) -> Client:
        port = listeners[0].socket.getsockname()[1]
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, request: dict[str, Any] | bytes) -> None:
        line = request if isinstance(request, bytes) else json.dumps(request).encode()
        await self.stream.send_all(line + b"\n")

    async def receive(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some()
            assert chunk, "the server hung up"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply


async def stop(nursery: trio.Nursery, number: int) -> None:
    """Stop a running tutorial server the way that step expects."""
    if number in DRAINING_STEPS:
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        nursery.cancel_scope.cancel()


@needs_sigterm
@pytest.mark.parametrize("number", STEPS)
async def test_step_answers_over_tcp(number: int) -> None:
    """Each tutorial step serves JSON lines on a real socket, then stops cleanly."""
    step = load_step(number)
    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(step.main, 0)
            client = await Client.connect(listeners)
            async with client.stream:
                await client.send({"id": 1, "text": "hello"})
                assert await client.receive() == {"id": 1, "text": "HELLO"}
                await client.send({"id": 2, "text": "again"})
                assert await client.receive() == {"id": 2, "text": "AGAIN"}
            port = listeners[0].socket.getsockname()[1]
            tally = await load_step("client").main(count=3, port=port)
            assert tally == {"ok": 3}
            await stop(nursery, number)


@pytest.mark.parametrize("number", [1, 2])
async def test_bad_request_kills_early_steps(number: int) -> None:
    """Steps 1 and 2 crash on a malformed line, as the tutorial says."""
    step = load_step(number)
    with trio.fail_after(IO_TIMEOUT):
        try:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(step.main, 0)
                client = await Client.connect(listeners)
                async with client.stream:
                    await client.send(b"not json")
                    await trio.sleep_forever()
        except BaseExceptionGroup as group:
            matched, rest = group.split(json.JSONDecodeError)
            assert matched is not None
            assert rest is None
        else:  # pragma: no cover
            pytest.fail("the server survived a malformed line")


@needs_sigterm
@pytest.mark.parametrize("number", [3, 4, 5])
async def test_bad_request_gets_an_error_reply(number: int) -> None:
    """From step 3 on, a malformed line gets an error reply and the server lives."""
    step = load_step(number)
    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(step.main, 0)
            client = await Client.connect(listeners)
            async with client.stream:
                await client.send(b"not json")
                reply = await client.receive()
                assert reply["error"].startswith("JSONDecodeError(")
                await client.send({"id": 3, "text": "still here"})
                assert await client.receive() == {"id": 3, "text": "STILL HERE"}
            await stop(nursery, number)


@pytest.mark.parametrize("number", [2, 3, 4, 5])
async def test_request_over_capacity_is_refused(
    number: int, autojump_clock: trio.testing.MockClock
) -> None:
    """With every slot busy, ``answer`` replies with the rejection reason."""
    step = load_step(number)
    async with (
        ts.open_session_manager(max_sessions=1, request_timeout=None) as manager,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(step.answer, manager, b'{"delay": 10}', "peer")
        await trio.testing.wait_all_tasks_blocked()
        reply = await step.answer(manager, b'{"id": 2}', "peer")
        assert reply == {"error": "capacity"}


@pytest.mark.parametrize("number", [3, 4, 5])
async def test_slow_request_times_out(
    number: int, autojump_clock: trio.testing.MockClock
) -> None:
    """A request slower than ``request_timeout`` gets a timeout reply at 2 s."""
    step = load_step(number)
    async with ts.open_session_manager(step.CONFIG) as manager:
        reply = await step.answer(manager, b'{"id": 1, "delay": 60}', "peer")
        assert reply == {"error": "timeout"}
        assert trio.current_time() == step.CONFIG.request_timeout
        assert manager.statistics().timed_out == 1
        assert manager.statistics().failed == 0


async def test_step5_queues_instead_of_refusing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """In step 5 a request that finds no free slot waits for one."""
    step = load_step(5)
    config = step.CONFIG
    async with (
        ts.open_session_manager(config, max_sessions=1) as manager,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(step.answer, manager, b'{"delay": 0.25}', "peer")
        await trio.testing.wait_all_tasks_blocked()
        assert await step.answer(manager, b'{"id": 2}', "peer") == {
            "id": 2,
            "text": "",
        }
        assert trio.current_time() == 0.25
        assert manager.statistics().wait_times.count == 1


@pytest.mark.parametrize("number", [4, 5])
async def test_shutdown_cancels_what_outlives_the_drain(
    number: int, autojump_clock: trio.testing.MockClock
) -> None:
    """A request still running when the drain ends gets a cancelled reply."""
    step = load_step(number)
    replies = []

    async def ask() -> None:
        replies.append(await step.answer(manager, b'{"delay": 60}', "peer"))

    async with ts.open_session_manager(step.CONFIG, request_timeout=None) as manager:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            report = await manager.shutdown()
        assert replies == [{"error": "cancelled"}]
        assert report.cancelled == 1
        assert report.timeout_reached
        assert trio.current_time() == step.CONFIG.shutdown_timeout


@needs_sigterm
@pytest.mark.parametrize("number", DRAINING_STEPS)
async def test_sigterm_drains_the_request_in_flight(
    number: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On SIGTERM the server lets the request in flight finish and answer."""
    step = load_step(number)
    started = trio.Event()
    release = trio.Event()
    original = step.handle

    async def gated_handle(line: bytes) -> Any:
        started.set()
        await release.wait()
        return await original(line)

    monkeypatch.setattr(step, "handle", gated_handle)
    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(step.main, 0)
            client = await Client.connect(listeners)
            async with client.stream:
                await client.send({"id": 7, "text": "in flight"})
                await started.wait()
                os.kill(os.getpid(), signal.SIGTERM)
                await trio.testing.wait_all_tasks_blocked()
                assert "SIGTERM: shutting down" in capsys.readouterr().out
                release.set()
                assert await client.receive() == {"id": 7, "text": "IN FLIGHT"}
    out = capsys.readouterr().out
    assert "1 completed, 0 cancelled" in out
    if number == 5:
        assert "0/100 active, 0 waiting, 1 ok, 0 failed" in out


def test_step5_summary_formats_empty_and_busy_statistics() -> None:
    """Step 5's summary line reads well before and after the first session."""
    step = load_step(5)

    async def main() -> tuple[str, str]:
        async with ts.open_session_manager() as manager:
            before = step.summary(manager.statistics())
            await manager.run(trio.sleep, 0.02)
            return before, step.summary(manager.statistics())

    before, after = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert before.endswith("p99 -")
    assert after.endswith("p99 20 ms")


# ------------------------------------------------------------ how-to snippets

SNIPPET_PAGES = [DOCS / "index.rst", *sorted((DOCS / "howto").glob("*.rst"))]
_CODE_BLOCK = re.compile(r"^(\s*)\.\. code-block:: (\w+)\s*$")
_OPTION = re.compile(r"^\s+:[\w-]+:")


def code_blocks(path: Path) -> list[tuple[int, str, str]]:
    """Return ``(line, language, code)`` for each ``.. code-block::`` of a page."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _CODE_BLOCK.match(lines[i])
        i += 1
        if not match:
            continue
        start, indent, language = i, len(match.group(1)), match.group(2)
        while i < len(lines) and _OPTION.match(lines[i]):
            i += 1
        body = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        blocks.append((start, language, code))
    return blocks


def snippets() -> list[Any]:
    """Every Python block of the pages, with the text block that shows its output."""
    params = []
    for path in SNIPPET_PAGES:
        blocks = code_blocks(path)
        for index, (line, language, code) in enumerate(blocks):
            if language != "python":
                continue
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            output = following[2] if following and following[1] == "text" else None
            name = f"{path.relative_to(DOCS)}:{line}"
            params.append(pytest.param(name, code, output, id=name))
    return params


def run_snippet(name: str, code: str) -> dict[str, Any]:
    """Execute a snippet in a fresh namespace, and return that namespace."""
    namespace: dict[str, Any] = {"__name__": "docs_snippet"}
    exec(compile(code, name, "exec"), namespace)
    return namespace


@pytest.mark.parametrize(("name", "code", "output"), snippets())
def test_snippet(
    name: str,
    code: str,
    output: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each Python block of the how-to pages runs, and prints what the page shows."""
    if "os.kill" in code and sys.platform == "win32":  # pragma: no cover
        pytest.skip("the snippet stops on SIGTERM")
    if "trio.run(main)" in code:
        clock = trio.testing.MockClock(autojump_threshold=0)
        monkeypatch.setattr(trio, "run", functools.partial(trio.run, clock=clock))
        run_snippet(name, code)
        if output is not None:
            assert capsys.readouterr().out == output
        return
    if "async def test_" not in code:
        # A fragment: it must be valid Python, but has nothing to run on its own.
        compile(code, name, "exec")
        assert output is None, "only complete programs can show their output"
        return
    namespace = run_snippet(name, code)
    tests = [
        value
        for key, value in namespace.items()
        if key.startswith("test_") and inspect.iscoroutinefunction(value)
    ]
    assert tests
    for test in tests:
        clock = trio.testing.MockClock(autojump_threshold=0)
        trio.run(functools.partial(test, autojump_clock=clock), clock=clock)
    assert output is None, "only complete programs can show their output"


def test_every_howto_page_runs_code() -> None:
    """Each how-to page has at least one snippet that actually runs."""
    for path in SNIPPET_PAGES:
        runnable = [
            code
            for _, language, code in code_blocks(path)
            if language == "python"
            and ("trio.run(main)" in code or "async def test_" in code)
        ]
        assert runnable, f"{path.name} has no runnable snippet"


def test_reference_lists_every_public_name() -> None:
    """``docs/reference.rst`` documents every name in ``trio_sessions.__all__``."""
    text = (DOCS / "reference.rst").read_text(encoding="utf-8")
    # A name may carry its own signature: ``.. autoclass:: SessionBlock()``.
    documented = set(
        re.findall(r"^\.\. auto\w+:: (\w+)(?:\(.*\))?\s*$", text, re.MULTILINE)
    )
    assert set(ts.__all__) <= documented


# ---------------------------------------------------------------- rendered docs


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML docs, built as the README says (offline, warnings are errors)."""
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    out = tmp_path_factory.mktemp("html")
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "sphinx", "-E", "-a", "-W", "-n", "--keep-going"),
            *("-q", "-b", "html", str(DOCS), str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return out


_SIGNATURE = re.compile(r'<dt class="sig sig-object py"[^>]*>(.*?)</dt>', re.S)


def rendered_signatures(page: Path) -> list[str]:
    """The text of every signature on a built page, as a reader sees it."""
    signatures = []
    for match in _SIGNATURE.finditer(page.read_text(encoding="utf-8")):
        text = html.unescape(re.sub(r"<[^>]+>", "", match.group(1)))
        signatures.append(" ".join(text.replace("¶", "").split()))
    return signatures


def test_rendered_reference_is_readable(built_docs: Path) -> None:
    """The reference shows no attrs internals, no ``~module`` prefixes, no sentinels."""
    reference = built_docs / "reference.html"
    text = html.unescape(re.sub(r"<[^>]+>", "", reference.read_text("utf-8")))
    for unreadable in (
        "attr_dict",
        "~collections",
        "~typing",
        "~trio",
        "TypeAliasForwardRef",
        "[[...]",
        "_UseConfig",
        "_CONFIG_DEFAULT",
        "(*args, **kwargs)",
    ):
        assert unreadable not in text, unreadable


def test_rendered_config_shows_every_default(built_docs: Path) -> None:
    """SessionConfig's signature shows each field's type and default value."""
    (config,) = [
        sig
        for sig in rendered_signatures(built_docs / "reference.html")
        if sig.startswith("class trio_sessions.SessionConfig(")
    ]
    params = config.removeprefix("class trio_sessions.SessionConfig(").rstrip(")")
    # Split at the commas between parameters, not those inside brackets.
    assert re.split(r", (?![^\[]*\])", params) == [
        "max_sessions: int = 200",
        "request_timeout: float | None = 30.0",
        "shutdown_timeout: float = 5.0",
        "max_waiting: int = 0",
        "wait_timeout: float | None = None",
        "max_session_metadata_bytes: int | None = 10_240",
        "max_metadata_bytes: int | None = None",
        "shutdown_grace: float = 1.0",
        "max_sessions_per_key: int | None = None",
        "key_limits: Mapping[str, int] = dict()",
        "tracked_keys: int = 20",
        "reserved_share: float = 0.0",
        "reserved_priority: int = 1",
    ]
    assert all(field.name in params for field in attrs.fields(ts.SessionConfig))


def test_rendered_signatures_are_python(built_docs: Path) -> None:
    """Every signature of the reference reads as Python: a def with those parameters."""
    signatures = rendered_signatures(built_docs / "reference.html")
    assert len(signatures) > 100
    checked = 0
    for signature in signatures:
        head, _, rest = signature.partition("(")
        if not rest or " = " in head:
            continue  # an attribute, a property, a Protocol, a constant
        params, _, returns = rest.rpartition(")")
        source = f"def f({params}) -> {returns.removeprefix(' → ') or 'None'}: pass"
        try:
            ast.parse(source)
        except SyntaxError:  # pragma: no cover - the failure message
            pytest.fail(f"not Python: {signature}")
        checked += 1
    assert checked > 50
    manager_run = next(s for s in signatures if s.startswith("async run(fn"))
    # Typed: the result is what fn returns; the default is a public name.
    assert "fn: Callable[[Unpack[ArgsT]], Awaitable[T]]" in manager_run
    assert "timeout: float | ConfigDefault | None = CONFIG_DEFAULT" in manager_run
    assert manager_run.endswith("→ T")


# ---------------------------------------------------------------- commands

ROOT = DOCS.parent
# pip or nox typed bare: they run whatever is first on PATH, not the venv's.
_BARE_COMMAND = re.compile(r"(?<![/\w.-])(?<!-m )(?:pip install|nox -s|nox(?=`))")


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(path, id=str(path.relative_to(ROOT)))
        for path in [
            ROOT / "README.md",
            *sorted(DOCS.glob("*.rst")),
            *sorted((DOCS / "howto").glob("*.rst")),
        ]
    ],
)
def test_commands_name_the_venv_tools(page: Path) -> None:
    """README and docs write ``.venv/bin/pip`` and ``.venv/bin/nox``, not bare names."""
    bare = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text("utf-8").splitlines(), 1)
        if _BARE_COMMAND.search(line)
    ]
    assert bare == []


# ---------------------------------------------------------------- the ASGI page


def test_pages_that_wrap_an_app_say_what_the_body_limit_does() -> None:
    """Every page wrapping an app in SessionMiddleware says how to lift the limit."""
    pages = [ROOT / "README.md", *sorted(DOCS.glob("**/*.rst"))]
    wrapping = [
        page for page in pages if "SessionMiddleware(" in page.read_text("utf-8")
    ]
    assert DOCS / "howto" / "asgi.rst" in wrapping
    for page in wrapping:
        text = " ".join(page.read_text("utf-8").split())
        assert "max_body_bytes=None" in text, page.name
        assert "413" in text, page.name
    asgi = " ".join((DOCS / "howto" / "asgi.rst").read_text("utf-8").split())
    assert "**HTTP/1.1**: the connection is closed" in asgi
    assert "**HTTP/2** (Hypercorn): the stream is *not* reset" in asgi
    assert "``keep_alive_timeout``" in asgi


async def partial_response(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app whose ``/partial`` starts a response and then stalls."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/partial":
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await trio.sleep_forever()
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("http2", [False, True], ids=["HTTP/1.1", "HTTP/2"])
async def test_deadline_mid_response_as_the_asgi_page_says(http2: bool) -> None:
    """HTTP/1.1 closes the connection; HTTP/2 keeps the stream, other streams go on."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("h2")
    hypercorn_config = pytest.importorskip("hypercorn.config")
    hypercorn_trio = pytest.importorskip("hypercorn.trio")
    from trio_sessions.asgi import SessionMiddleware

    app = SessionMiddleware(partial_response, request_timeout=0.1)
    config = hypercorn_config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    config.keep_alive_timeout = 1.0
    events: list[str] = []
    with trio.fail_after(IO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                functools.partial(
                    hypercorn_trio.serve,
                    app,
                    config,
                    shutdown_trigger=trio.Event().wait,
                )
            )
            client = httpx.AsyncClient(http1=not http2, http2=http2, timeout=IO_TIMEOUT)
            async with client:

                async def cut_off() -> None:
                    async with client.stream("GET", f"{binds[0]}/partial") as response:
                        events.append(f"{response.http_version} {response.status_code}")
                        with pytest.raises(httpx.RemoteProtocolError) as exc_info:
                            async for _ in response.aiter_bytes():
                                pass
                    events.append(f"cut off: {exc_info.value}")

                async def other() -> None:
                    # Nothing to wait on but the statistics: poll them.
                    while app.manager.statistics().timed_out == 0:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    stats = app.manager.statistics()
                    events.append(f"timed out, {stats.active} active")
                    response = await client.get(f"{binds[0]}/")
                    events.append(f"other: {response.http_version} {response.text}")

                async with trio.open_nursery() as requests:
                    requests.start_soon(cut_off)
                    requests.start_soon(other)
            nursery.cancel_scope.cancel()
    if http2:
        # The stream outlived the deadline, and the other request, then the idle
        # connection was closed at Hypercorn's keep-alive timeout.
        assert events == [
            "HTTP/2 200",
            "timed out, 0 active",
            "other: HTTP/2 ok",
            "cut off: Server disconnected",
        ]
    else:
        # The connection was closed at the deadline; the next request opened another.
        assert events[0] == "HTTP/1.1 200"
        assert "timed out, 0 active" in events
        (cut,) = [event for event in events if event.startswith("cut off: ")]
        assert cut.startswith("cut off: peer closed connection without sending")
        assert events[-1] == "other: HTTP/1.1 ok"
