"""Tutorial step 3: give every request a deadline; tell timeouts from errors."""

import json
from functools import partial

import trio

import trio_sessions as ts

PORT = 8000
CONFIG = ts.SessionConfig(max_sessions=100, request_timeout=2.0)


async def handle(line):
    """The application: parse a request, pretend to work on it, answer."""
    request = json.loads(line)
    await trio.sleep(request.get("delay", 0))
    return {"id": request.get("id"), "text": request.get("text", "").upper()}


async def answer(manager, line, peer):
    try:
        return await manager.run(handle, line, metadata={"peer": peer})
    except ts.RejectedError as exc:
        return {"error": exc.reason}
    except ts.SessionTimeout:
        return {"error": "timeout"}
    except Exception as exc:  # the application failed: a bad request, or a bug
        return {"error": repr(exc)}


async def serve_client(manager, stream):
    host, port = stream.socket.getpeername()[:2]
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            reply = await answer(manager, line, f"{host}:{port}")
            await stream.send_all(json.dumps(reply).encode() + b"\n")


async def main(port=PORT, *, task_status=trio.TASK_STATUS_IGNORED):
    async with ts.open_session_manager(CONFIG) as manager:
        await trio.serve_tcp(
            partial(serve_client, manager),
            port,
            host="127.0.0.1",
            task_status=task_status,
        )


if __name__ == "__main__":
    trio.run(main)
