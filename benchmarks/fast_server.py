"""A keep-alive HTTP/1.1 server on a bare epoll loop, fast enough not to set the pace.

Answers every request (``GET`` of any path) with the same short ``200 OK``, head
and body in one ``send``, and as many answers in one ``send`` as requests in one
``recv``. ``benchmarks/bench_loadclient.py`` drives it with wrk and with the load
client, to see what each client can send when the server is not what limits it
(Linux only: ``select.epoll``)::

    python benchmarks/fast_server.py --port 0
"""

from __future__ import annotations

import argparse
import select
import socket

ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
)
END = b"\r\n\r\n"


def serve(port: int) -> None:
    """Serve on ``127.0.0.1:port`` (0: a free port) until killed."""
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    listener.setblocking(False)
    print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    connections: dict[int, socket.socket] = {}
    # What each connection sent after its last whole request.
    pending: dict[int, bytes] = {}
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                accept(listener, poller, connections, pending)
                continue
            conn = connections[fd]
            try:
                data = conn.recv(65_536)
            except OSError:
                data = b""
            if not data:
                del connections[fd], pending[fd]
                conn.close()
                continue
            data = pending[fd] + data
            requests = data.count(END)
            if requests:
                data = data[data.rindex(END) + len(END) :]
                conn.send(ANSWER * requests)
            pending[fd] = data


def accept(
    listener: socket.socket,
    poller: select.epoll,
    connections: dict[int, socket.socket],
    pending: dict[int, bytes],
) -> None:
    """Take every connection waiting to be accepted."""
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connections[conn.fileno()] = conn
        pending[conn.fileno()] = b""
        poller.register(conn.fileno(), select.EPOLLIN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="0: a free port")
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
