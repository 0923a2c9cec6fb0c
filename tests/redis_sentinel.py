"""A Redis replication group under Sentinel for tests: one primary, one replica,
three sentinels, each a process on a free loopback port in a temp dir.

Failover is tuned to be quick (``down-after-milliseconds`` 500, quorum 2).
Tests skip when the binaries are absent, unless ``CI`` is set.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from redis_server import free_port

SERVICE = "trio-sessions"
# How long a fresh group may take to be ready (replica synced, sentinels
# aware of the replica and of each other) before the test fails.
READY_TIMEOUT = 15.0
DOWN_AFTER_MS = 500


def require_sentinel() -> list[str]:
    """Return the command that starts a sentinel (given its config file last)."""
    server = shutil.which("redis-server")
    sentinel = shutil.which("redis-sentinel")
    try:
        import coredis  # noqa: F401
    except ImportError:
        missing = "coredis is not installed (pip install -e '.[redis]')"
    else:
        if server is not None and sentinel is not None:
            return [sentinel]
        missing = (
            "redis-server and redis-sentinel are not installed "
            "(apt-get install redis-server redis-sentinel)"
        )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{missing}, and CI is set: the CI image must provide them")
    pytest.skip(missing, allow_module_level=True)


def command(port: int, *words: str) -> list[str]:
    """Send one command and return its reply flattened to strings (bounded in time).

    An INFO reply comes back as its lines; an array as its items, in order.
    """
    (reply,) = commands(port, [words])
    return reply


def commands(port: int, requests: Sequence[Sequence[str]]) -> list[list[str]]:
    """Send several commands on one connection, in order; return their replies."""
    data = "".join(
        f"*{len(words)}\r\n"
        + "".join(f"${len(word.encode())}\r\n{word}\r\n" for word in words)
        for words in requests
    )
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(data.encode())
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed mid-reply")
            received += chunk
            replies: list[list[str]] = []
            position: int | None = 0
            while position is not None and len(replies) < len(requests):
                items: list[str] = []
                position = _parse(received, position, items)
                if position is not None:
                    replies.append(items)
            if len(replies) == len(requests):
                return replies


def _parse(data: bytes, at: int, items: list[str]) -> int | None:
    """Parse one RESP2 value at ``at`` into ``items``; its end, or None if partial."""
    end = data.find(b"\r\n", at)
    if end < 0:
        return None
    kind, head = data[at : at + 1], data[at + 1 : end].decode()
    if kind == b"$":
        size = int(head)
        if size < 0:
            items.append("")
            return end + 2
        if len(data) < end + 2 + size + 2:
            return None
        items.extend(data[end + 2 : end + 2 + size].decode().split("\r\n"))
        return end + 2 + size + 2
    if kind == b"*":
        position: int | None = end + 2
        for _ in range(max(0, int(head))):
            assert position is not None
            position = _parse(data, position, items)
            if position is None:
                return None
        return position
    items.append(head)  # +simple, -error, :integer
    return end + 2


class Node:
    """One process of the group (a Redis server or a sentinel)."""

    def __init__(self, name: str, directory: Path, argv: Sequence[str]) -> None:
        self.name = name
        self.port = free_port()
        self.directory = directory
        self.argv = list(argv)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        assert self.process is None, f"{self.name} already runs"
        log = (self.directory / f"{self.name}.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [*self.argv, "--port", str(self.port), *extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )

    def kill(self) -> None:
        """SIGKILL the process and reap it; idempotent."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def ask(self, *words: str) -> list[str]:
        """One command's reply, or [] if the node does not answer."""
        try:
            return command(self.port, *words)
        except OSError:
            return []

    def cut_replication(self) -> None:
        """Drop this primary's replicas and refuse new connections: writes
        from clients already connected are acknowledged, and replicated nowhere.
        """
        commands(
            self.port,
            [
                ["CONFIG", "SET", "maxclients", "1"],
                ["CLIENT", "KILL", "TYPE", "replica"],
            ],
        )

    def log(self) -> str:
        path = self.directory / f"{self.name}.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""


class SentinelGroup:
    """A primary, a replica and three sentinels watching service ``SERVICE``."""

    def __init__(self, sentinel_argv: Sequence[str], directory: Path) -> None:
        server = shutil.which("redis-server")
        assert server is not None
        common = [
            server,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            # Disk-based sync streams writes as soon as the replica has
            # loaded; a diskless one waits a second for its first ACK.
            "--repl-diskless-sync",
            "no",
        ]
        self.directory = directory
        self.servers = [Node(f"redis-{i}", directory, common) for i in range(2)]
        self.sentinels: list[Node] = []
        for i in range(3):
            config = directory / f"sentinel-{i}.conf"
            self.sentinels.append(
                Node(f"sentinel-{i}", directory, [*sentinel_argv, str(config)])
            )

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.sentinels]

    def start(self) -> None:
        """Start every node and wait (bounded) until failover is possible."""
        primary, replica = self.servers
        primary.start()
        replica.start("--replicaof", "127.0.0.1", str(primary.port))
        # Synced, and streaming writes: a probe written now reaches the replica.
        self._until(
            lambda: (
                primary.ask("SET", "probe", "1") == ["OK"]
                and replica.ask("GET", "probe") == ["1"]
            ),
            READY_TIMEOUT,
        )
        # Each sentinel is told of the replica and of its peers up front, as
        # its own rewritten config would: discovery takes seconds otherwise.
        ids = {node.name: secrets.token_hex(20) for node in self.sentinels}
        for node in self.sentinels:
            peers = "".join(
                f"sentinel known-sentinel {SERVICE} 127.0.0.1 {peer.port} "
                f"{ids[peer.name]}\n"
                for peer in self.sentinels
                if peer is not node
            )
            (self.directory / f"{node.name}.conf").write_text(
                f"bind 127.0.0.1\n"
                f"dir {self.directory}\n"
                f"sentinel myid {ids[node.name]}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                f"sentinel known-replica {SERVICE} 127.0.0.1 {replica.port}\n" + peers
            )
            node.start()
        for node in self.sentinels:
            self._until(functools.partial(self._knows_all, node), READY_TIMEOUT)

    def _knows_all(self, node: Node) -> bool:
        master = node.ask("SENTINEL", "MASTER", SERVICE)
        fields = dict(zip(master[::2], master[1::2], strict=False))
        return (
            fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2"
        )

    def primary(self) -> Node | None:
        """The node the sentinels name as primary, if they agree and it says so."""
        names = set()
        for node in self.sentinels:
            reply = node.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            names.add(reply[1] if len(reply) > 1 else None)
        if len(names) != 1:
            return None
        (port,) = names
        for server in self.servers:
            if (
                str(server.port) == port
                and server.process is not None
                and "role:master" in server.ask("INFO", "replication")
            ):
                return server
        return None

    def wait_for_primary(self, node: Node, timeout: float = READY_TIMEOUT) -> None:
        """Block until the sentinels name ``node`` primary, and it says so."""
        self._until(lambda: self.primary() is node, timeout)

    def stop(self) -> None:
        """SIGKILL every node that runs; idempotent."""
        for node in [*self.sentinels, *self.servers]:
            node.kill()

    def _until(self, predicate: Callable[[], object], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {node.name}\n{node.log()}"
                    for node in [*self.servers, *self.sentinels]
                )
                raise RuntimeError(f"the Sentinel group is not ready:\n{logs}")
            time.sleep(0.05)
