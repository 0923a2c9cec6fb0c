"""Line-delimited JSON over raw TCP (``trio.serve_listeners``): a session per request.

A request is one JSON object per line, ``{"id": 1, "op": "echo", "params": ...}``
with ``op`` one of ``echo``, ``sleep`` (``params: {"seconds": N}``, 0 to 600),
``fail`` or ``stats`` (not a session). Every answer is one JSON line:
``{"id": 1, "result": ...}`` or
``{"id": 1, "error": {"code": "capacity", "message": "..."}}``. Only standard
JSON is read and written: ``NaN``, ``Infinity`` or ``1e400`` get ``bad_json``::

    python examples/tcp_json_server.py --port 9000
    printf '{"id": 1, "op": "echo", "params": "hi"}\\n' | nc -q 1 127.0.0.1 9000

A client may shut down its sending side once it has sent its requests (as
``nc -q`` does) and still read the answers; the server then sends one space,
which JSON allows before a value, to find out whether it can still read. A
client that closed its connection can no longer read the answer: its request
in flight is cancelled.

The first SIGINT/SIGTERM drains and prints the shutdown report; a second one
cancels what is left at once, prints the report too and exits 130. Exit
status: 0 after a drain, 1 when the address cannot be bound, 2 on a bad
option, 130 when a second signal cut the drain short.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

import attrs
import trio

import trio_sessions as ts
from trio_sessions import _server_options as options
from trio_sessions import _wire as wire

PROG = "tcp_json_server.py"
RECEIVE_SIZE = 65_536


class BadRequest(Exception):
    """The request line is JSON but not a valid request."""


def check_params(op: str, params: Any) -> Any:
    """Refuse a request's params before it is admitted; return what ``run_op`` needs.

    Raises:
      BadRequest: the params do not fit the op.
    """
    if op != "sleep":
        return params
    seconds = params.get("seconds", 1) if isinstance(params, dict) else params
    try:
        return wire.sleep_seconds(seconds)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"sleep needs params {{'seconds': <number>}}: {exc}") from None


async def run_op(op: str, params: Any) -> Any:
    """The work one request asks for; runs as a session."""
    if op == "echo":
        return params
    if op == "sleep":
        await trio.sleep(params)
        return {"slept": params}
    if op == "fail":
        raise RuntimeError("this op always fails")
    raise BadRequest(f"unknown op {op!r}")  # pragma: no cover - checked before


def encode(value: object) -> bytes:
    """One JSON answer line."""
    return wire.dumps(value, separators=(",", ":"), default=dict).encode() + b"\n"


def error(request_id: object, code: str, message: str) -> bytes:
    """One JSON error line."""
    return encode({"id": request_id, "error": {"code": code, "message": message}})


@attrs.define
class Connection:
    """One client: its stream, the request it waits for, what is unanswered."""

    stream: trio.SocketStream
    scope: trio.CancelScope
    current: list[ts.Session] = attrs.Factory(list)
    unanswered: int = 0
    send_lock: trio.Lock = attrs.Factory(trio.Lock)

    async def send(self, data: bytes) -> None:
        """Send ``data`` whole, never interleaved with the probe."""
        async with self.send_lock:
            await self.stream.send_all(data)

    def abandon(self) -> None:
        """The client cannot read any more: cancel its request and stop serving it."""
        for session in self.current:
            session.cancel()
        self.scope.cancel()

    async def watch_after_eof(self) -> None:
        """After the client's end of stream, abandon it once it cannot read either.

        An end of stream does not tell a closed socket from a half-closed one
        (``shutdown(SHUT_WR)``) that still reads. One space, which JSON allows
        before a value, tells: a closed socket answers it with a reset, which
        ``SO_ERROR`` then shows.
        """
        if not self.unanswered:
            return
        try:
            await self.send(b" ")
            delay = 0.01
            while not self.stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                await trio.sleep(delay)
                delay = min(2 * delay, 1.0)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self.abandon()


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
        try:
            async with trio.open_nursery() as nursery:
                connection = Connection(stream, nursery.cancel_scope)
                nursery.start_soon(self._read_lines, connection, send_lines)
                async with receive_lines:
                    async for line in receive_lines:
                        self._in_flight += 1
                        self._idle = trio.Event()
                        try:
                            answer = await self._answer(line, peer, connection.current)
                            await connection.send(answer)
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            break  # the client cannot read the answers any more
                        finally:
                            connection.unanswered -= 1
                            self._in_flight -= 1
                            if not self._in_flight:
                                self._idle.set()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read_lines(
        self, connection: Connection, lines: trio.MemorySendChannel[bytes | None]
    ) -> None:
        """Split the byte stream into lines of bounded length; ``None`` = too long."""
        buffer = bytearray()
        skipping = False  # inside a line that was too long: drop it up to its newline
        async with lines:
            while True:
                try:
                    data = await connection.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    connection.abandon()  # reset: the client is gone
                    return
                if not data:
                    # No more requests; those read are still answered, if the
                    # client can read the answers.
                    await lines.aclose()
                    await connection.watch_after_eof()
                    return
                buffer += data
                while True:
                    newline = buffer.find(b"\n")
                    if newline < 0:
                        if len(buffer) > self.max_line_bytes:
                            if not skipping:
                                await self._send_line(connection, lines, None)
                                skipping = True
                            buffer.clear()
                        break
                    line = bytes(buffer[:newline])
                    del buffer[: newline + 1]
                    if skipping:
                        skipping = False
                    elif len(line) > self.max_line_bytes:
                        await self._send_line(connection, lines, None)
                    elif line.strip():
                        await self._send_line(connection, lines, line)

    @staticmethod
    async def _send_line(
        connection: Connection,
        lines: trio.MemorySendChannel[bytes | None],
        line: bytes | None,
    ) -> None:
        connection.unanswered += 1
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
            request = wire.loads(line)
        except ValueError as exc:  # not JSON, or NaN, Infinity, 1e400
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
            params = check_params(op, request.get("params"))
        except BadRequest as exc:
            return error(request_id, "bad_request", str(exc))
        try:
            session = await self.manager.start_session(
                run_op, op, params, metadata={"peer": peer, "op": op}
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
        except Exception as exc:
            return error(request_id, "error", f"{type(exc).__name__}: {exc}")
        finally:
            current.remove(session)
        return encode({"id": request_id, "result": result})

    def stats(self) -> dict[str, Any]:
        """The manager's statistics as plain JSON values."""
        stats: dict[str, Any] = wire.loads(
            encode(attrs.asdict(self.manager.statistics()))
        )
        return stats


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``trio-sessions serve``'s options, and the line limit."""
    parser, serving = options.example_parser(PROG, __doc__.splitlines()[0], port=9000)
    serving.add_argument(
        "--max-line-bytes",
        type=options.count("--max-line-bytes", 1),
        default=65_536,
        metavar="N",
        help="longest request line; longer ones get line_too_long; "
        "default: %(default)s",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; exit 2 with one line on a bad value."""
    return options.parse_checked(build_parser(), argv)


async def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then drain and print the shutdown report."""
    config = options.session_config(args)
    hurry = trio.CancelScope()  # what a second signal cancels: the drain
    async with options.open_signals(hurry) as signals:
        listeners = await options.listen_tcp(args.host, args.port)
        async with ts.open_session_manager(config) as manager:
            server = Server(manager, args.max_line_bytes)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, server.handle, listeners)
                host, port = listeners[0].socket.getsockname()[:2]
                print(f"listening on {host}:{port}", flush=True)
                with hurry:
                    await signals.wait()
                    first = options.signal_name(signals.received[0])
                    print(f"received {first}, draining", flush=True)
                    # Requests arriving from now on are answered "shutting_down".
                    await manager.shutdown()
                    with trio.move_on_after(2.0):
                        await server.wait_idle()  # the last answers go out
                nursery.cancel_scope.cancel()
            if hurry.cancelled_caught:
                print(options.forced_line(signals), flush=True)
            # The drain's report; after a second signal, the manager's own
            # cancelling of what was left, once it has unwound.
            report = await manager.shutdown()
        stats = attrs.asdict(manager.statistics())
        print(f"shutdown report: {encode(attrs.asdict(report)).decode()}", end="")
        print(f"final statistics: {encode(stats).decode()}", end="", flush=True)
    return options.EXIT_FORCED if hurry.cancelled_caught else options.EXIT_OK


if __name__ == "__main__":
    sys.exit(options.run(PROG, main, parse_args()))
