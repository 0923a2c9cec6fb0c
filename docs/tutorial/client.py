"""A client for the tutorial server: send requests at once, then count the replies.

Usage: python client.py [COUNT [DELAY]]
"""

import collections
import json
import sys

import trio


async def ask(port, request, tally):
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(json.dumps(request).encode() + b"\n")
        buffer = b""
        while not buffer.endswith(b"\n"):
            chunk = await stream.receive_some()
            if not chunk:
                tally["hung up"] += 1
                return
            buffer += chunk
    tally[json.loads(buffer).get("error", "ok")] += 1


async def main(count=10, delay=0.0, port=8000):
    tally = collections.Counter()
    async with trio.open_nursery() as nursery:
        for i in range(count):
            request = {"id": i, "text": "hi", "delay": delay}
            nursery.start_soon(ask, port, request, tally)
    print(dict(tally))
    return tally


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    trio.run(main, count, delay)
