"""The HTTP/1.1 client of the load: httptools' parser on Trio's I/O, kept alive.

A :class:`Connection` sends one ``GET`` at a time and reads the whole answer;
a :class:`Target` is the parsed URL. Errors come out as :class:`RequestFailed`
with a sentence that says what went wrong; nothing here keeps figures.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
from typing import Protocol, final
from urllib.parse import quote, urlsplit

import attrs
import httptools
import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Connection", "RequestFailed", "Target"]

# One read takes what the kernel has, up to this: a small answer in one call.
_CHUNK = 65_536
_USER_AGENT = "trio-sessions-loadtest"
# The headers that say where an answer's body ends.
_FRAMING = (b"content-length", b"transfer-encoding")


@final
@attrs.frozen
class Target:
    """Where the requests go: scheme, host, port and the request target."""

    url: str
    https: bool
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """Parse an ``http://`` or ``https://`` URL.

        Raises:
          ValueError: another scheme, or no host.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # Spaces and non-ASCII characters cannot go in a request line as
        # they are: percent-encode them, and leave what is encoded already.
        path = quote(path, safe="!#$%&'()*+,/:;=?@[]~")
        return cls(url=url, https=https, host=parts.hostname, port=port, path=path)

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the host, and the port unless it is the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.https else 80
        return host if self.port == default else f"{host}:{self.port}"


@final
class RequestFailed(Exception):
    """A request got no complete response; ``kind`` and the message say why.

    ``kind`` is one of ``"connect"``, ``"closed"`` (the server closed the
    connection before the whole answer) and ``"protocol"`` (the answer was
    not HTTP/1.1). A client timeout is the caller's cancel scope, not this.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Stale(Exception):
    """A kept-alive connection was closed by the server before it read the request."""


@final
class Connection:
    """One HTTP/1.1 connection to ``target``, opened on first use and kept alive.

    ::

        connection = Connection(Target.parse("http://127.0.0.1:8000/"))
        status = await connection.get()
        await connection.aclose()

    The request is written once, as bytes; answers are parsed by httptools
    (llhttp, the parser of Node.js and of uvicorn), whose callbacks are the
    ``on_*`` methods below. After a failure, or an answer that closes the
    connection, the next :meth:`get` opens a new one.
    """

    __slots__ = (
        "_answered",
        "_framed",
        "_keep_alive",
        "_parser",
        "_request",
        "_ssl",
        "_status",
        "_stream",
        "_target",
    )

    def __init__(
        self, target: Target, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._target = target
        self._ssl = ssl_context
        self._stream: _Stream | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._request = (
            f"GET {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"
            f"User-Agent: {_USER_AGENT}\r\n\r\n"
        ).encode("ascii")
        # Of the answer being read: its status once its head is in, the
        # status again once all of it is, whether it says how long its body
        # is (else the body ends with the connection), and keep-alive.
        self._status = 0
        self._answered = 0
        self._framed = False
        self._keep_alive = True

    async def get(self) -> int:
        """Send ``GET`` and read the whole answer; return its status code.

        A request on a kept-alive connection that the server had closed
        while it was idle is sent again once, on a new connection, as
        browsers and urllib3 do for a ``GET``.

        Raises:
          RequestFailed: no complete answer (see its ``kind``).
        """
        try:
            try:
                return await self._exchange(reused=self._stream is not None)
            except _Stale:
                await self.aclose()
                # On a new connection, _exchange raises no _Stale.
                return await self._exchange(reused=False)
        except BaseException:
            await self.aclose()
            raise

    async def _exchange(self, reused: bool) -> int:
        if self._stream is None:
            self._stream = await self._connect()
        stream = self._stream
        try:
            await stream.send_all(self._request)
        except trio.BrokenResourceError as exc:
            if reused:
                raise _Stale from None
            raise _failure("closed", "sending the request", exc) from None
        self._status = self._answered = 0
        self._framed = False
        received = False
        while not self._answered:
            try:
                data = await stream.receive_some(_CHUNK)
            except trio.BrokenResourceError as exc:
                if reused and not received:
                    raise _Stale from None
                raise _failure("closed", "reading the answer", exc) from None
            if not data:
                if reused and not received:
                    raise _Stale
                if self._status and not self._framed:  # its body ends here
                    self._answered, self._keep_alive = self._status, False
                    break
                raise RequestFailed(
                    "closed", "the server closed the connection before the whole answer"
                )
            received = True
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise RequestFailed(
                    "protocol", f"not an HTTP/1.1 answer: {exc}"
                ) from None
        if not self._keep_alive:
            await self.aclose()
        return self._answered

    # httptools' callbacks, as it parses what feed_data gave it.

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header of the answer: note whether it frames the body."""
        if name.lower() in _FRAMING:
            self._framed = True

    def on_headers_complete(self) -> None:
        """The head of the answer is in: its status, and whether to keep alive."""
        self._status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        """The whole answer is in (an interim 1xx one does not count)."""
        if self._status >= 200:
            self._answered = self._status

    async def _connect(self) -> _Stream:
        target = self._target
        try:
            if target.https:
                context = self._ssl or ssl.create_default_context()
                return await trio.open_ssl_over_tcp_stream(
                    target.host, target.port, ssl_context=context, https_compatible=True
                )
            return await _TcpStream.connect(target.host, target.port)
        except OSError as exc:
            raise RequestFailed(
                "connect",
                f"cannot connect to {target.host}:{target.port}: {_reason(exc)}",
            ) from None

    async def aclose(self) -> None:
        """Close the connection, if open; the next :meth:`get` opens a new one."""
        stream, self._stream = self._stream, None
        # A new connection starts a new parse.
        self._parser = httptools.HttpResponseParser(self)
        if stream is not None:
            # As trio.aclose_forcefully does: close at once, not gracefully.
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.aclose()


class _Stream(Protocol):
    """What a connection reads and writes: a Trio stream, or a :class:`_TcpStream`."""

    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int) -> bytes | bytearray: ...

    async def aclose(self) -> None: ...


@final
class _TcpStream:
    """A TCP connection on a non-blocking socket, waited on with Trio's I/O.

    :class:`trio.SocketStream` with less between the request and the kernel:
    a request and its answer each take one system call when the socket is
    ready, and Trio's scheduler only when it is not. Measured against a fast
    local server, this takes about a fifth less CPU per request than
    :class:`trio.SocketStream`, which the load pays for on every request.
    """

    __slots__ = ("_socket",)

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    @classmethod
    async def connect(cls, host: str, port: int) -> _TcpStream:
        """Connect to the first address of ``host`` that answers.

        Raises:
          OSError: no address of ``host`` accepted the connection.
        """
        found = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"{host} has no address")
        for family, kind, proto, _, address in found:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                with contextlib.suppress(BlockingIOError):
                    sock.connect(address)
                await trio.lowlevel.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
            except BaseException as exc:
                sock.close()
                if not isinstance(exc, OSError):
                    raise
                error = exc
            else:
                return cls(sock)
        raise error

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data``, waiting for room as needed.

        Raises:
          trio.BrokenResourceError: the connection is broken.
        """
        sock = self._socket
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
            except OSError as exc:
                raise trio.BrokenResourceError from exc

    async def receive_some(self, max_bytes: int) -> bytes:
        """What has arrived, up to ``max_bytes``; ``b""`` once the peer closed.

        Raises:
          trio.BrokenResourceError: the connection is broken.
        """
        sock = self._socket
        while True:
            try:
                return sock.recv(max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
            except OSError as exc:
                raise trio.BrokenResourceError from exc

    async def aclose(self) -> None:
        """Close the socket, waking any task that waits on it."""
        trio.lowlevel.notify_closing(self._socket)
        self._socket.close()
        await trio.lowlevel.checkpoint()


def _failure(kind: str, doing: str, exc: BaseException) -> RequestFailed:
    return RequestFailed(kind, f"{doing}: {_reason(exc.__cause__ or exc)}")


def _reason(exc: BaseException) -> str:
    """The OS's reason behind ``exc``, found through Trio's wrappers and groups."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        elif isinstance(exc, OSError) and exc.errno:
            return os.strerror(exc.errno)
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            return str(exc) or type(exc).__name__
