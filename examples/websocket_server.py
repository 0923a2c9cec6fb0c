"""JSON-RPC 2.0 over WebSockets (trio-websocket): each ``tools/call`` is a session.

Methods: ``tools/list``, ``tools/call`` (``{"name": "echo" | "sleep" | "fail",
"arguments": {...}}``, ``sleep`` taking ``{"seconds": N}``, 0 to 600) and
``server/stats`` (not a session). Calls on one
connection run concurrently; refusals come back as JSON-RPC errors (-32001
capacity, -32002 shutting down, -32003 metadata, -32004 timeout, -32005
cancelled). Closing the connection cancels its calls in flight::

    python examples/websocket_server.py --port 8765
    # send: {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
    #        "params": {"name": "echo", "arguments": {"text": "hi"}}}

A batch (a JSON array of calls) gets an array of the answers, one per call
that is not a notification, as JSON-RPC 2.0 section 6 says; an ``id`` must be
a string, a number or null. Only standard JSON is read and written: ``NaN``,
``Infinity`` or ``1e400`` get -32700 (parse error).

The first SIGINT/SIGTERM drains, closes the connections with 1001 and prints
the shutdown report; a second one cancels what is left at once, prints the
report too and exits 130. Exit status: 0 after a drain, 1 when the address
cannot be bound, 2 on a bad option or a missing extra, 130 when a second
signal cut the drain short.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import attrs
import trio

import trio_sessions as ts
from trio_sessions import _server_options as options
from trio_sessions import _wire as wire

PROG = "websocket_server.py"

try:
    from trio_websocket import ConnectionClosed, WebSocketServer
except ImportError as exc:  # the [servers] extra is not installed
    sys.exit(options.missing_extra(PROG, exc))

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection, WebSocketRequest

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
REJECTION_CODES = {"capacity": -32001, "shutting_down": -32002, "metadata": -32003}
TIMEOUT = -32004
CANCELLED = -32005

TOOLS = [
    {"name": "echo", "description": "Return the arguments unchanged."},
    {"name": "sleep", "description": "Sleep arguments.seconds, then answer."},
    {"name": "fail", "description": "Always fail (a tool error)."},
]


class InvalidParams(Exception):
    """The call's params do not fit the tool."""


def check_arguments(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Refuse a call's arguments before it is admitted.

    Raises:
      InvalidParams: the arguments do not fit the tool.
    """
    if name not in {tool["name"] for tool in TOOLS}:
        raise InvalidParams(f"unknown tool {name!r}")
    if name == "sleep":
        try:
            wire.sleep_seconds(arguments.get("seconds", 1))
        except (TypeError, ValueError) as exc:
            raise InvalidParams(
                f"sleep needs arguments {{'seconds': <number>}}: {exc}"
            ) from None
    return arguments


async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
    """Run one tool; this is the session's function."""
    if name == "echo":
        return arguments
    if name == "sleep":
        seconds = arguments.get("seconds", 1)
        await trio.sleep(seconds)
        return {"slept": seconds}
    if name == "fail":
        raise RuntimeError("this tool always fails")
    raise InvalidParams(f"unknown tool {name!r}")  # pragma: no cover - checked before


def result(request_id: object, value: object) -> dict[str, Any]:
    """A JSON-RPC success response."""
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def is_valid_id(value: object) -> bool:
    """JSON-RPC 2.0 ids are strings, numbers or null (absent: a notification)."""
    if isinstance(value, bool):
        return False
    return value is None or isinstance(value, (str, int, float))


def failure(
    request_id: object, code: int, message: str, data: object = None
) -> dict[str, Any]:
    """A JSON-RPC error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


class Server:
    """Serves WebSocket connections; tracks them and the answers in flight."""

    def __init__(self, manager: ts.SessionManager) -> None:
        self.manager = manager
        self.connections: set[WebSocketConnection] = set()
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call is between its request and its answer."""
        while self._in_flight:
            await self._idle.wait()

    async def handle(self, request: WebSocketRequest) -> None:
        """Serve one connection: every message is a call, answered concurrently."""
        ws = await request.accept()
        self.connections.add(ws)
        remote = ws.remote
        peer = f"{getattr(remote, 'address', '?')}:{getattr(remote, 'port', '?')}"
        sessions: set[ts.Session] = set()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        message = await ws.get_message()
                    except ConnectionClosed:
                        break
                    self._in_flight += 1
                    self._idle = trio.Event()
                    nursery.start_soon(self._call, ws, message, peer, sessions)
                # The client is gone: nobody waits for these answers any more.
                for session in list(sessions):
                    session.cancel()
        finally:
            self.connections.discard(ws)

    async def _call(
        self,
        ws: WebSocketConnection,
        message: str | bytes,
        peer: str,
        sessions: set[ts.Session],
    ) -> None:
        try:
            answer = await self._answer(message, peer, sessions)
            if answer is not None:
                await ws.send_message(wire.dumps(answer, default=dict))
        except ConnectionClosed:
            pass
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _answer(
        self, message: str | bytes, peer: str, sessions: set[ts.Session]
    ) -> dict[str, Any] | list[dict[str, Any]] | None:
        try:
            request = wire.loads(message)
        except ValueError as exc:  # not JSON, or NaN, Infinity, 1e400
            return failure(None, PARSE_ERROR, "Parse error", str(exc))
        if isinstance(request, list):
            return await self._batch(request, peer, sessions)
        return await self._request(request, peer, sessions)

    async def _batch(
        self, requests: list[Any], peer: str, sessions: set[ts.Session]
    ) -> dict[str, Any] | list[dict[str, Any]] | None:
        """Answer each call of a batch, concurrently; notifications get no answer."""
        if not requests:
            return failure(None, INVALID_REQUEST, "Invalid Request", "empty batch")
        answers: list[dict[str, Any] | None] = [None] * len(requests)

        async def answer(index: int, request: Any) -> None:
            answers[index] = await self._request(request, peer, sessions)

        async with trio.open_nursery() as nursery:
            for index, request in enumerate(requests):
                nursery.start_soon(answer, index, request)
        # A batch of notifications only is answered with nothing at all.
        return [reply for reply in answers if reply is not None] or None

    async def _request(
        self, request: Any, peer: str, sessions: set[ts.Session]
    ) -> dict[str, Any] | None:
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
            or not is_valid_id(request.get("id"))
        ):
            return failure(None, INVALID_REQUEST, "Invalid Request")
        is_notification = "id" not in request
        request_id = request.get("id")
        method = request["method"]
        params = request.get("params", {})
        if method == "tools/list":
            answer = result(request_id, {"tools": TOOLS})
        elif method == "server/stats":
            answer = result(request_id, self.stats())
        elif method == "tools/call":
            answer = await self._tools_call(request_id, params, peer, sessions)
        else:
            answer = failure(request_id, METHOD_NOT_FOUND, "Method not found", method)
        return None if is_notification else answer

    async def _tools_call(
        self, request_id: object, params: object, peer: str, sessions: set[ts.Session]
    ) -> dict[str, Any]:
        if (
            not isinstance(params, dict)
            or not isinstance(params.get("name"), str)
            or not isinstance(params.get("arguments", {}), dict)
        ):
            return failure(
                request_id, INVALID_PARAMS, "Invalid params", "need name and arguments"
            )
        name = params["name"]
        try:
            arguments = check_arguments(name, params.get("arguments", {}))
        except InvalidParams as exc:
            return failure(request_id, INVALID_PARAMS, "Invalid params", str(exc))
        try:
            session = await self.manager.start_session(
                call_tool, name, arguments, metadata={"peer": peer, "tool": name[:64]}
            )
        except ts.RejectedError as exc:
            code = REJECTION_CODES.get(exc.reason, INTERNAL_ERROR)
            return failure(request_id, code, str(exc), {"reason": exc.reason})
        sessions.add(session)
        try:
            value = await session.wait()
        except ts.SessionTimeout:
            return failure(request_id, TIMEOUT, "Request timed out")
        except ts.SessionCancelled as exc:
            return failure(request_id, CANCELLED, "Request cancelled", str(exc))
        except InvalidParams as exc:
            return failure(request_id, INVALID_PARAMS, "Invalid params", str(exc))
        except Exception as exc:
            # A tool that fails answers with a result flagged isError (MCP style).
            text = f"{type(exc).__name__}: {exc}"
            return result(
                request_id,
                {"content": [{"type": "text", "text": text}], "isError": True},
            )
        finally:
            sessions.discard(session)
        text = wire.dumps(value)
        return result(
            request_id,
            {
                "content": [{"type": "text", "text": text}],
                "structuredContent": value,
                "isError": False,
            },
        )

    def stats(self) -> dict[str, Any]:
        """The manager's statistics as plain JSON values."""
        text = wire.dumps(attrs.asdict(self.manager.statistics()), default=dict)
        stats: dict[str, Any] = wire.loads(text)
        return stats


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``trio-sessions serve``'s options, and the message limit."""
    parser, serving = options.example_parser(PROG, __doc__.splitlines()[0], port=8765)
    serving.add_argument(
        "--max-message-bytes",
        type=options.count("--max-message-bytes", 1),
        default=65_536,
        metavar="N",
        help="largest message; a longer one closes the connection with 1009; "
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
            server = Server(manager)
            websocket_server = WebSocketServer(
                server.handle, listeners, max_message_size=args.max_message_bytes
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(websocket_server.run)
                host, port = listeners[0].socket.getsockname()[:2]
                print(f"listening on {host}:{port}", flush=True)
                with hurry:
                    await signals.wait()
                    first = options.signal_name(signals.received[0])
                    print(f"received {first}, draining", flush=True)
                    # Calls arriving from now on are answered -32002 (shutting down).
                    await manager.shutdown()
                    with trio.move_on_after(2.0):
                        await server.wait_idle()  # the last answers go out
                    with trio.move_on_after(2.0):
                        for ws in list(server.connections):
                            await ws.aclose(1001, "server shutting down")
                nursery.cancel_scope.cancel()
            if hurry.cancelled_caught:
                print(options.forced_line(signals), flush=True)
            # The drain's report; after a second signal, the manager's own
            # cancelling of what was left, once it has unwound.
            report = await manager.shutdown()
        stats = attrs.asdict(manager.statistics())
        print(f"shutdown report: {wire.dumps(attrs.asdict(report))}")
        print(f"final statistics: {wire.dumps(stats, default=dict)}", flush=True)
    return options.EXIT_FORCED if hurry.cancelled_caught else options.EXIT_OK


if __name__ == "__main__":
    sys.exit(options.run(PROG, main, parse_args()))
