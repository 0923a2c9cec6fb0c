"""Tutorial step 1: a bare Trio server that answers JSON lines."""

import json

import trio

PORT = 8000


async def handle(line):
    """The application: parse a request, pretend to work on it, answer."""
    request = json.loads(line)
    await trio.sleep(request.get("delay", 0))
    return {"id": request.get("id"), "text": request.get("text", "").upper()}


async def serve_client(stream):
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            reply = await handle(line)
            await stream.send_all(json.dumps(reply).encode() + b"\n")


async def main(port=PORT, *, task_status=trio.TASK_STATUS_IGNORED):
    await trio.serve_tcp(serve_client, port, host="127.0.0.1", task_status=task_status)


if __name__ == "__main__":
    trio.run(main)
