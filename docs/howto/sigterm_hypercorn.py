"""Serve an ASGI app on Hypercorn: drain on SIGTERM or Ctrl+C, hurry on a second one.

Run it, start ``curl 'http://127.0.0.1:8000/?seconds=3'``, then send the
process a SIGTERM: the request finishes, then the server stops and prints the
shutdown report. A second SIGTERM or Ctrl+C cancels what is left and exits 130.
"""

import sys

import hypercorn.config
import hypercorn.trio
import trio

from trio_sessions.asgi import SessionMiddleware
from trio_sessions.signals import open_shutdown_signals


async def slow_hello(scope, receive, send):
    """The application: answers after ?seconds=N (default 0)."""
    if scope["type"] != "http":
        return
    query = scope["query_string"].decode()
    await trio.sleep(float(query.removeprefix("seconds=") or 0))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello\n"})


app = SessionMiddleware(slow_hello, max_sessions=100, shutdown_timeout=10)


async def main(port=8000):
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    # After the signal, Hypercorn lets requests in flight finish for this long
    # before the lifespan shutdown drains the middleware: give it the drain's.
    config.graceful_timeout = 10
    async with open_shutdown_signals() as signals:
        await hypercorn.trio.serve(app, config, shutdown_trigger=signals.wait)
    if signals.forced:  # the whole server was cancelled, the lifespan too
        print("a second signal cut the drain short", flush=True)
        return 130
    print("shutdown report:", app.shutdown_report, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, *map(int, sys.argv[1:])))
