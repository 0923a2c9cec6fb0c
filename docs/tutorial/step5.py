"""Tutorial step 5: queue briefly for a slot instead of refusing; watch the numbers."""

import json
import signal
from functools import partial

import trio

import trio_sessions as ts

PORT = 8000
CONFIG = ts.SessionConfig(
    max_sessions=100,
    max_waiting=200,
    wait_timeout=0.5,
    request_timeout=2.0,
    shutdown_timeout=5.0,
)


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
    except ts.SessionCancelled:
        return {"error": "cancelled"}
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


def summary(stats):
    p99 = "-" if stats.durations.p99 is None else f"{stats.durations.p99 * 1000:.0f} ms"
    return (
        f"{stats.active}/{stats.max_sessions} active, {stats.waiting} waiting, "
        f"{stats.succeeded} ok, {stats.failed} failed, {stats.timed_out} timed out, "
        f"{stats.rejected} rejected, p99 {p99}"
    )


async def log_statistics(manager, every=10.0):
    while True:
        await trio.sleep(every)
        print(summary(manager.statistics()))


async def main(port=PORT, *, task_status=trio.TASK_STATUS_IGNORED):
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with (
            ts.open_session_manager(CONFIG) as manager,
            trio.open_nursery() as connections,
        ):
            async with trio.open_nursery() as server:
                listeners = await server.start(
                    partial(
                        trio.serve_tcp,
                        partial(serve_client, manager),
                        port,
                        host="127.0.0.1",
                        handler_nursery=connections,
                    )
                )
                server.start_soon(log_statistics, manager)
                task_status.started(listeners)
                async for signum in signals:
                    print(f"{signal.Signals(signum).name}: shutting down")
                    break
                # 1. Stop accepting connections.
                server.cancel_scope.cancel()
            # 2. Refuse new requests, let those in flight finish, cancel the rest.
            report = await manager.shutdown()
            # 3. Give the last replies a second to go out, then hang up.
            connections.cancel_scope.deadline = trio.current_time() + 1
        print(summary(manager.statistics()))
    print(
        f"drained in {report.duration:.3f} s: {report.completed} completed, "
        f"{report.cancelled} cancelled"
    )


if __name__ == "__main__":
    trio.run(main)
