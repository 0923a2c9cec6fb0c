"""Line-delimited JSON over raw TCP (``trio.serve_tcp``): each request is a session.

A request is one JSON object per line, ``{"id": 1, "op": "echo", "params": ...}``
with ``op`` one of ``echo``, ``sleep`` (``params: {"seconds": N}``), ``fail`` or
``stats`` (not a session). Every answer is one JSON line: ``{"id": 1, "result": ...}``
or ``{"id": 1, "error": {"code": "capacity", "message": "..."}}``::

    python examples/tcp_json_server.py --port 9000
    printf '{"id": 1, "op": "echo", "params": "hi"}\\n' | nc -q 1 127.0.0.1 9000

A client that closes its connection cancels its request in flight.
SIGINT/SIGTERM drains, prints the shutdown report and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from functools import partial
from typing import Any

import attrs
import trio

import trio_sessions as ts

MAX_SLEEP = 600.0
RECEIVE_SIZE = 65_536


class BadRequest(Exception):
    """The request line is JSON but not a valid request."""


async def run_op(op: str, params: Any) -> Any:
    """The work one request asks for; runs as a session."""
    if op == "echo":
        return params
    if op == "sleep":
        seconds = params.get("seconds", 1) if isinstance(params, dict) else params
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise BadRequest("sleep needs params {'seconds': <number>}")
        await trio.sleep(min(max(float(seconds), 0.0), MAX_SLEEP))
        return {"slept": seconds}
    if op == "fail":
        raise RuntimeError("this op always fails")
    raise BadRequest(f"unknown op {op!r}")  # pragma: no cover - checked before


def encode(value: object) -> bytes:
    """One JSON answer line."""
    return json.dumps(value, separators=(",", ":"), default=dict).encode() + b"\n"


def error(request_id: object, code: str, message: str) -> bytes:
    """One JSON error line."""
    return encode({"id": request_id, "error": {"code": code, "message": message}})


class Server:
    """Serves connections; counts answers in flight so the drain can flush them."""

    OPS = frozenset({"echo", "sleep", "fail"})

    def __init__(self, manager: ts.SessionManager, max_line_bytes: int) -> None:
        self.manager = manager
        self.max_line_bytes = max_line_bytes
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no connection is between reading a request and answering it."""
        while self._in_flight:
            await self._idle.wait()

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection: read lines, answer each in order."""
        host, port = stream.socket.getpeername()[:2]
        peer = f"{host}:{port}"
        send_lines, receive_lines = trio.open_memory_channel[bytes | None](8)
        current: list[ts.Session] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_lines, stream, send_lines, current)
                async with receive_lines:
                    async for line in receive_lines:
                        self._in_flight += 1
                        self._idle = trio.Event()
                        try:
                            answer = await self._answer(line, peer, current)
                            await stream.send_all(answer)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            break  # the client went away (the reader saw it too)
                        finally:
                            self._in_flight -= 1
                            if not self._in_flight:
                                self._idle.set()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_lines(
        self,
        stream: trio.SocketStream,
        lines: trio.MemorySendChannel[bytes | None],
        current: list[ts.Session],
    ) -> None:
        """Split the byte stream into lines of bounded length; ``None`` = too long."""
        buffer = bytearray()
        skipping = False  # inside a line that was too long: drop it up to its newline
        async with lines:
            while True:
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    # The client closed the connection: whatever it asked is abandoned.
                    for session in current:
                        session.cancel()
                    return
                buffer += data
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        if len(buffer) > self.max_line_bytes:
                            if not skipping:
                                await lines.send(None)
                                skipping = True
                            buffer.clear()
                        break
                    line = bytes(buffer[:newline])
                    del buffer[: newline + 1]
                    if skipping:
                        skipping = False
                    elif len(line) > self.max_line_bytes:
                        await lines.send(None)
                    elif line.strip():
                        await lines.send(line)

    async def _answer(
        self, line: bytes | None, peer: str, current: list[ts.Session]
    ) -> bytes:
        if line is None:
            return error(
                None,
                "line_too_long",
                f"request line over {self.max_line_bytes} bytes, ignored",
            )
        try:
            request = json.loads(line)
        except ValueError as exc:
            return error(None, "bad_json", f"malformed JSON: {exc}")
        if not isinstance(request, dict):
            return error(None, "bad_request", "a request must be a JSON object")
        request_id = request.get("id")
        op = request.get("op")
        if op == "stats":
            return encode({"id": request_id, "result": self.stats()})
        if op not in self.OPS:
            return error(request_id, "bad_request", f"unknown op {op!r}")
        try:
            session = await self.manager.start_session(
                run_op, op, request.get("params"), metadata={"peer": peer, "op": op}
            )
        except ts.RejectedError as exc:
            return error(request_id, exc.reason, str(exc))
        current.append(session)
        try:
            result = await session.wait()
        except ts.SessionTimeout:
            return error(request_id, "timeout", "request timed out")
        except ts.SessionCancelled as exc:
            return error(request_id, "cancelled", str(exc))
        except BadRequest as exc:
            return error(request_id, "bad_request", str(exc))
        except Exception as exc:
            return error(request_id, "error", f"{type(exc).__name__}: {exc}")
        finally:
            current.remove(session)
        return encode({"id": request_id, "result": result})

    def stats(self) -> dict[str, Any]:
        """The manager's statistics as plain JSON values."""
        return json.loads(encode(attrs.asdict(self.manager.statistics())))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--max-sessions", type=int, default=100)
    parser.add_argument("--max-waiting", type=int, default=0)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--max-line-bytes", type=int, default=65_536)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then drain and print the shutdown report."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with ts.open_session_manager(
            max_sessions=args.max_sessions,
            max_waiting=args.max_waiting,
            request_timeout=None
            if math.isinf(args.request_timeout)
            else args.request_timeout,
            shutdown_timeout=args.shutdown_timeout,
        ) as manager:
            server = Server(manager, args.max_line_bytes)
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    partial(trio.serve_tcp, server.handle, args.port, host=args.host)
                )
                host, port = listeners[0].socket.getsockname()[:2]
                print(f"listening on {host}:{port}", flush=True)
                async for signum in signals:
                    print(
                        f"received {signal.Signals(signum).name}, draining", flush=True
                    )
                    break
                # Requests arriving from now on are answered "shutting_down".
                report = await manager.shutdown()
                with trio.move_on_after(2.0):
                    await server.wait_idle()  # the last answers reach their clients
                nursery.cancel_scope.cancel()
            print(f"shutdown report: {encode(attrs.asdict(report)).decode()}", end="")
            print(
                f"final statistics: {encode(server.stats()).decode()}",
                end="",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
