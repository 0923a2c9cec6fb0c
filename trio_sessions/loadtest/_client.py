"""The HTTP/1.1 client of the load: httptools' parser, the URL, and Trio's streams.

:class:`Answer` is what httptools has parsed of the answer being read, for
:class:`Connection` on Trio's streams (HTTPS, other systems), which
:func:`drive_streams` runs one task per connection; the epoll loop of
:mod:`._epoll` (plain HTTP on Linux) parses with its base, :class:`AnswerEnds`,
which takes no callback per header, and with an :class:`Answer` only the head
of an answer that the server's closing of the connection ends. Errors come out as
:class:`RequestFailed` with a sentence that says what went wrong.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import sys
from typing import TYPE_CHECKING, final
from urllib.parse import quote, urlsplit

import attrs
import httptools
import trio

if TYPE_CHECKING:
    from ._http import Share

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "Answer",
    "AnswerEnds",
    "Connection",
    "RequestFailed",
    "Target",
    "drive_streams",
    "not_http",
    "reason",
]

# One read takes what the kernel has, up to this: a small answer in one call.
CHUNK = 65_536
_USER_AGENT = "trio-sessions-loadtest"
# The headers that say where an answer's body ends.
_FRAMING = (b"content-length", b"transfer-encoding")
_FRAMING_LENGTHS = frozenset(len(name) for name in _FRAMING)


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

    @property
    def request(self) -> bytes:
        """The ``GET`` request, as the bytes every request of the load sends."""
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"User-Agent: {_USER_AGENT}\r\n\r\n"
        ).encode("ascii")


@final
class RequestFailed(Exception):
    """A request got no complete response; ``kind`` and the message say why.

    ``kind`` is one of ``"connect"``, ``"closed"`` (the server closed the
    connection before the whole answer) and ``"protocol"`` (the answer was
    not HTTP/1.1). A client timeout is not one of these: it is no answer.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class AnswerEnds:
    """What httptools (llhttp, the parser of Node.js and uvicorn) has read of an
    answer's status and end, with no callback per header.

    One per connection: :meth:`fresh` when the connection is new,
    :meth:`expect` before each request, then ``parser.feed_data`` with what
    arrives; once the whole answer is in, ``answered`` is its status (an
    interim 1xx answer does not count), and ``keep_alive`` says whether the
    connection may carry the next request. The ``on_*`` methods are
    httptools' callbacks. The epoll loop's connections are these.
    """

    __slots__ = ("answered", "keep_alive", "parser", "status")

    def fresh(self) -> None:
        """A new connection: a new parse."""
        self.parser = httptools.HttpResponseParser(self)
        self.keep_alive = True
        self.expect()

    def expect(self) -> None:
        """A request was sent: nothing of its answer is in yet."""
        # The status once the head is in; again in answered once all is.
        self.status = self.answered = 0

    def on_headers_complete(self) -> None:
        """The head of the answer is in: its status, and whether to keep alive."""
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        """The whole answer is in (an interim 1xx one does not count)."""
        if self.status >= 200:
            self.answered = self.status


class Answer(AnswerEnds):
    """:class:`AnswerEnds`, and whether the head says how long the body is.

    :meth:`feed` parses what arrives, raising :exc:`RequestFailed`; whether
    the body is framed is what :meth:`ended` needs when the server closes
    the connection.
    """

    __slots__ = ("framed",)

    def __init__(self) -> None:
        self.fresh()

    def expect(self) -> None:
        """A request was sent: nothing of its answer is in yet."""
        self.status = self.answered = 0
        # Whether the head says how long the body is (else it ends at EOF).
        self.framed = False

    def feed(self, data: bytes | bytearray) -> None:
        """Parse what arrived.

        Raises:
          RequestFailed: it is not an HTTP/1.1 answer (kind ``"protocol"``).
        """
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise not_http(exc) from None

    def ended(self) -> bool:
        """The server closed the connection: True when that ended a whole answer.

        That is a body without a length, which runs to the end of the
        connection; any other answer was cut short.
        """
        if self.status and not self.framed:
            self.answered, self.keep_alive = self.status, False
            return True
        return False

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header of the answer: note whether it frames the body."""
        # Most headers are neither, and a length check spares their lower().
        if len(name) in _FRAMING_LENGTHS and name.lower() in _FRAMING:
            self.framed = True


# What the server closing the connection before the answer's first byte
# looks like: it closed a kept-alive connection while it was idle.
CLOSED_ERRORS = (trio.BrokenResourceError, ConnectionError)


class _Stale(Exception):
    """A kept-alive connection was closed by the server before it read the request."""


@final
class Connection(Answer):
    """One HTTP/1.1 connection to ``target`` on Trio's streams, opened on first use.

    ::

        connection = Connection(Target.parse("https://example.test/"))
        status = await connection.get()
        await connection.aclose()

    After a failure, or an answer that closes the connection, the next
    :meth:`get` opens a new one.
    """

    __slots__ = ("_request", "_ssl", "_stream", "_target")

    def __init__(
        self, target: Target, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        super().__init__()
        self._target = target
        self._ssl = ssl_context
        self._stream: trio.abc.Stream | None = None
        self._request = target.request

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
        except CLOSED_ERRORS as exc:
            if reused:
                raise _Stale from None
            raise _failure("sending the request", exc) from None
        self.expect()
        received = False
        while not self.answered:
            try:
                data = await stream.receive_some(CHUNK)
            except CLOSED_ERRORS as exc:
                if reused and not received:
                    raise _Stale from None
                raise _failure("reading the answer", exc) from None
            if not data:
                if reused and not received:
                    raise _Stale
                if self.ended():
                    break
                raise RequestFailed("closed", CUT_SHORT)
            received = True
            self.feed(data)
        status = self.answered
        if not self.keep_alive:
            await self.aclose()  # which starts a new parse
        return status

    async def _connect(self) -> trio.abc.Stream:
        target = self._target
        try:
            if target.https:
                context = self._ssl or ssl.create_default_context()
                return await trio.open_ssl_over_tcp_stream(
                    target.host, target.port, ssl_context=context, https_compatible=True
                )
            return await trio.open_tcp_stream(target.host, target.port)
        except OSError as exc:
            raise RequestFailed("connect", cannot_connect(target, exc)) from None

    async def aclose(self) -> None:
        """Close the connection, if open; the next :meth:`get` opens a new one."""
        stream, self._stream = self._stream, None
        self.fresh()
        if stream is not None:
            await trio.aclose_forcefully(stream)


CUT_SHORT = "the server closed the connection before the whole answer"


async def drive_streams(
    share: Share, target: Target, concurrency: int, timeout: float
) -> None:
    """Send ``share``'s requests over ``concurrency`` :class:`Connection` tasks.

    Each task sends its next request once the last is answered; in an open
    loop it first takes the next slot of the schedule and sleeps until it is
    due. Each request has ``timeout`` seconds, from when it is sent.
    """

    async def connection() -> None:
        client = Connection(target)
        try:
            while share.due(trio.current_time()) < math.inf:
                number, began = share.claim(trio.current_time())
                if began > trio.current_time():
                    await trio.sleep_until(began)
                share.sending()
                answer: int | RequestFailed | None = None  # None: no answer in time
                with trio.move_on_after(timeout):
                    try:
                        answer = await client.get()
                    except RequestFailed as exc:
                        answer = exc
                if isinstance(answer, int):
                    share.answered(answer, began, trio.current_time())
                else:
                    share.failed(answer, number, began, trio.current_time())
        finally:
            await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(connection)


def not_http(exc: httptools.HttpParserError) -> RequestFailed:
    """The failure of an answer that httptools could not parse."""
    return RequestFailed("protocol", f"not an HTTP/1.1 answer: {exc}")


def cannot_connect(target: Target, exc: BaseException) -> str:
    """The sentence of a connection that failed to open."""
    return f"cannot connect to {target.host}:{target.port}: {reason(exc)}"


def _failure(doing: str, exc: BaseException) -> RequestFailed:
    return RequestFailed("closed", f"{doing}: {reason(exc)}")


def reason(exc: BaseException) -> str:
    """The OS's reason behind ``exc``, found through Trio's wrappers and groups."""
    while True:
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        elif isinstance(exc, socket.gaierror):
            return str(exc.strerror)
        elif isinstance(exc, OSError) and exc.errno:
            return os.strerror(exc.errno)
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        else:
            return str(exc) or type(exc).__name__
