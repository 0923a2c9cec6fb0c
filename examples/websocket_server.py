"""JSON-RPC 2.0 over WebSockets (trio-websocket): each ``tools/call`` is a session.

Methods: ``tools/list``, ``tools/call`` (``{"name": "echo" | "sleep" | "fail",
"arguments": {...}}``) and ``server/stats`` (not a session). Calls on one
connection run concurrently; refusals come back as JSON-RPC errors (-32001
capacity, -32002 shutting down, -32003 metadata, -32004 timeout, -32005
cancelled). Closing the connection cancels its calls in flight::

    python examples/websocket_server.py --port 8765
    # send: {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
    #        "params": {"name": "echo", "arguments": {"text": "hi"}}}

SIGINT/SIGTERM drains, closes connections with 1001, prints the report, exits 0.
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
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

import trio_sessions as ts

MAX_SLEEP = 600.0

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


async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
    """Run one tool; this is the session's function."""
    if name == "echo":
        return arguments
    if name == "sleep":
        seconds = arguments.get("seconds", 1)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise InvalidParams("sleep needs arguments {'seconds': <number>}")
        await trio.sleep(min(max(float(seconds), 0.0), MAX_SLEEP))
        return {"slept": seconds}
    if name == "fail":
        raise RuntimeError("this tool always fails")
    raise InvalidParams(f"unknown tool {name!r}")


def result(request_id: object, value: object) -> dict[str, Any]:
    """A JSON-RPC success response."""
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


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
                await ws.send_message(json.dumps(answer, default=dict))
        except ConnectionClosed:
            pass
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _answer(
        self, message: str | bytes, peer: str, sessions: set[ts.Session]
    ) -> dict[str, Any] | None:
        try:
            request = json.loads(message)
        except ValueError as exc:
            return failure(None, PARSE_ERROR, "Parse error", str(exc))
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
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
            session = await self.manager.start_session(
                call_tool,
                name,
                params.get("arguments", {}),
                metadata={"peer": peer, "tool": name[:64]},
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
        text = json.dumps(value)
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
        text = json.dumps(attrs.asdict(self.manager.statistics()), default=dict)
        return json.loads(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--max-sessions", type=int, default=100)
    parser.add_argument("--max-waiting", type=int, default=0)
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument("--max-message-bytes", type=int, default=65_536)
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
            server = Server(manager)
            async with trio.open_nursery() as nursery:
                websocket_server = await nursery.start(
                    partial(
                        serve_websocket,
                        server.handle,
                        args.host,
                        args.port,
                        None,
                        max_message_size=args.max_message_bytes,
                    )
                )
                print(f"listening on {args.host}:{websocket_server.port}", flush=True)
                async for signum in signals:
                    print(
                        f"received {signal.Signals(signum).name}, draining", flush=True
                    )
                    break
                # Calls arriving from now on are answered -32002 (shutting down).
                report = await manager.shutdown()
                with trio.move_on_after(2.0):
                    await server.wait_idle()  # the last answers reach their clients
                with trio.move_on_after(2.0):
                    for ws in list(server.connections):
                        await ws.aclose(1001, "server shutting down")
                nursery.cancel_scope.cancel()
            print(f"shutdown report: {json.dumps(attrs.asdict(report))}")
            print(f"final statistics: {json.dumps(server.stats())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args()))
