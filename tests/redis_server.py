"""A real ``redis-server`` for tests: started on a free loopback port in a temp dir.

Tests skip when the binary is absent, unless ``CI`` is set: there a missing
server is a broken CI image, and fails loudly instead.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# How long a fresh server may take to answer PING before the test fails.
START_TIMEOUT = 10.0

# coredis 6.9 never closes the six anyio memory streams of a connection whose
# connect attempt fails (Redis down, or cancelled mid-connect), so collecting it
# warns. Tolerated by the tests that stop Redis on purpose, and nowhere else:
# they set ``pytestmark = pytest.mark.filterwarnings(UNCLOSED_STREAMS)`` and
# import ``collect_failed_connections``.
UNCLOSED_STREAMS = "ignore:Unclosed <MemoryObject:ResourceWarning"


@pytest.fixture(autouse=True)
def collect_failed_connections() -> Iterator[None]:
    """Collect such connections after each test, under the filter, before a
    later test's garbage collection would report them."""
    yield
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Unclosed <MemoryObject", category=ResourceWarning
        )
        gc.collect()


def require_redis() -> str:
    """Return the ``redis-server`` path once coredis imports; else skip (fail in CI)."""
    binary = shutil.which("redis-server")
    try:
        import coredis  # noqa: F401
    except ImportError:
        missing = "coredis is not installed (pip install -e '.[redis]')"
    else:
        if binary is not None:
            return binary
        missing = "redis-server is not installed (apt-get install redis-server)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{missing}, and CI is set: the CI image must provide it")
    pytest.skip(missing, allow_module_level=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process, without persistence, that tests can stop.

    ``stop()`` kills it (connections are refused), ``pause()`` freezes it with
    SIGSTOP (connections hang), and ``start()`` brings it back, empty, on the
    same port.
    """

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        """The ``redis://`` URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        assert self.process is None, "already running"
        log = (self.directory / "redis.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(
                    f"redis-server did not answer on port {self.port}:\n{tail[-2000:]}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (its data is lost); idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.paused:
            process.send_signal(signal.SIGCONT)
            self.paused = False
        process.kill()
        process.wait(timeout=10)

    def pause(self) -> None:
        """Freeze the server: it accepts connections but never answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False
