"""open_shutdown_signals: the first signal drains, a second cancels, none kills.

The unit tests raise real signals in this process (the handler is installed
while they do); the Hypercorn recipe of docs/howto/sigterm.rst runs as a real
subprocess on a free loopback port.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from trio_sessions import signals as ts_signals
from trio_sessions.signals import open_shutdown_signals

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "docs" / "howto" / "sigterm_hypercorn.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def test_public_names_are_exported_once_and_documented() -> None:
    """trio_sessions.signals exports its names, each documented, as its own."""
    assert ts_signals.__all__ == sorted(set(ts_signals.__all__))
    for name in ts_signals.__all__:
        obj = getattr(ts_signals, name)
        assert inspect.getdoc(obj), name
        assert obj.__module__ == "trio_sessions.signals", name
    assert "open_shutdown_signals" in (ROOT / "docs" / "reference.rst").read_text()


async def test_first_signal_wakes_wait_second_cancels_the_block() -> None:
    """SIGTERM returns from wait(); a second one cancels the block, caught there."""
    reached_end = False
    async with open_shutdown_signals() as signals:
        signal.raise_signal(signal.SIGTERM)
        await signals.wait()
        assert signals.received == (signal.SIGTERM,)
        assert not signals.forced
        signal.raise_signal(signal.SIGINT)
        await trio.sleep_forever()
        reached_end = True  # pragma: no cover
    assert not reached_end
    assert signals.forced
    assert signals.cancel_scope.cancelled_caught
    assert signals.received == (signal.SIGTERM, signal.SIGINT)


async def test_two_quick_signals_are_two(autojump_clock: trio.abc.Clock) -> None:
    """Two SIGTERMs before the loop runs again still count as two."""
    async with open_shutdown_signals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        await trio.sleep(1)
    assert signals.received == (signal.SIGTERM, signal.SIGTERM)
    assert signals.forced


async def test_a_given_scope_is_what_the_second_signal_cancels() -> None:
    """With cancel_scope=, only that scope is cancelled; the block goes on."""
    hurry = trio.CancelScope()
    after = False
    async with open_shutdown_signals(signal.SIGUSR1, cancel_scope=hurry) as signals:
        signal.raise_signal(signal.SIGUSR1)
        await signals.wait()
        with hurry:
            signal.raise_signal(signal.SIGUSR1)
            await trio.sleep_forever()
        after = True
    assert after
    assert hurry.cancelled_caught
    assert signals.cancel_scope is hurry


async def test_handlers_are_restored_and_no_signal_is_redelivered() -> None:
    """On the way out the previous handler is back, and no caught signal reaches it."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        async with open_shutdown_signals(signal.SIGUSR1) as signals:
            signal.raise_signal(signal.SIGUSR1)
            signal.raise_signal(signal.SIGUSR1)
            signal.raise_signal(signal.SIGUSR1)
        # The loop had not run the deliveries yet: they still count, later.
        await trio.testing.wait_all_tasks_blocked()
        assert seen == []
        assert len(signals.received) == 3
        signal.raise_signal(signal.SIGUSR1)
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


async def test_outside_the_main_thread_is_refused() -> None:
    """Only the main thread can handle signals: a clear RuntimeError elsewhere."""

    def in_thread() -> None:
        async def body() -> None:
            async with open_shutdown_signals():
                pass  # pragma: no cover

        with pytest.raises(RuntimeError, match="main thread"):
            trio.run(body)

    await trio.to_thread.run_sync(in_thread)


# ------------------------------------------------- the Hypercorn recipe, for real


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def get_when_up(port: int, path: str) -> bytes:
    """Send one GET once the server accepts connections; return the raw answer."""
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
            continue
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some(65_536):
                data += chunk
            return data


async def test_hypercorn_recipe_drains_on_sigterm(tmp_path: Path) -> None:
    """The how-to's shutdown_trigger recipe lets the request in flight finish.

    The bare ``hypercorn.trio.serve(app, config)`` dies at once with status 143
    instead, and the request gets an empty reply.
    """
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "stderr").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(RECIPE), str(port)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    try:
        with trio.fail_after(30):
            await get_when_up(port, "/")  # up, and the lifespan has started
            answers: list[bytes] = []

            async def slow() -> None:
                answers.append(await get_when_up(port, "/?seconds=0.5"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                await trio.sleep(0.2)  # the request is in flight
                process.send_signal(signal.SIGTERM)
            assert process.stdout is not None
            output = b""
            while chunk := await process.stdout.receive_some(65_536):
                output += chunk
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
    assert answers[0].startswith(b"HTTP/1.1 200"), answers
    assert b"hello\n" in answers[0]
    assert status == 0, (tmp_path / "stderr").read_text()
    assert b"shutdown report: ShutdownReport(initial_active=0" in output
