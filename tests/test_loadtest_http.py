"""Tests of the HTTP load of trio_sessions.loadtest, against a real local server.

Each test serves an ASGI app on 127.0.0.1, port 0, inside ``fail_after``, and
drives it with :func:`loadtest.http_load`, on each of the two clients (the
epoll loop of plain HTTP on Linux, and Trio's streams of HTTPS and other
systems) where the test is about what both do. No test asserts on how fast
anything ran; the open-loop test checks a lower bound that causality sets,
whatever the machine's speed. The histogram and timeline tests need no server.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, final

import attrs
import pytest
import trio
from hypercorn_server import running_server

from trio_sessions import loadtest
from trio_sessions.loadtest import _epoll, _http
from trio_sessions.loadtest._client import Target

CLIENTS = ["epoll", "streams"] if _epoll.available() else ["streams"]

STALL = 0.3


def mixed_status_app() -> Callable[..., Awaitable[None]]:
    """An ASGI app answering 200, except every 10th request 503 and the next 504.

    ``/teapot`` answers 418, ``/hang`` never answers, ``/stall-first`` answers
    the first request after :data:`STALL` seconds and the others at once, and
    ``/close`` answers with ``Connection: close``.
    """
    count = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal count
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        status = 200
        headers = [(b"content-type", b"text/plain")]
        if scope["path"] == "/mixed":
            status = {3: 503, 7: 504}.get(count % 10, 200)
            count += 1
        elif scope["path"] == "/teapot":
            status = 418
        elif scope["path"] == "/hang":
            await trio.sleep_forever()
        elif scope["path"] == "/stall-first":
            count += 1
            if count == 1:
                await trio.sleep(STALL)
        elif scope["path"] == "/close":
            headers.append((b"connection", b"close"))
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": b"hello"})

    return app


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """Each client the load can run on, in turn."""
    name: str = request.param
    return name


def plan_of(url: str, client: str, **options: Any) -> _http.Plan:
    """The plan of ``http_load(url, **options)``, on ``client`` rather than auto."""
    arguments: dict[str, Any] = {
        "requests": 1000,
        "concurrency": 50,
        "duration": None,
        "rate": None,
        "processes": 1,
        "timeout": 10.0,
        **options,
    }
    return _http.make_plan(url, client=client, **arguments)


async def http_load(
    url: str,
    client: str,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> loadtest.HttpLoadResult:
    """``http_load(url, **options)``, on ``client`` rather than the automatic choice."""
    return await _http.run_plan(plan_of(url, client, **options), progress)


async def load_mixed(path: str, client: str, **options: Any) -> loadtest.HttpLoadResult:
    """The load of ``path`` on a new :func:`mixed_status_app`, bounded in time."""
    with trio.fail_after(60):
        async with running_server(mixed_status_app()) as base:
            return await http_load(base + path, client, **options)


async def test_http_load_counts_statuses() -> None:
    """Against a real local server, 2xx, 503 and 504 are counted exactly."""
    with trio.fail_after(30):
        async with running_server(mixed_status_app()) as base:
            seen: list[tuple[int, int]] = []
            result = await loadtest.http_load(
                f"{base}/mixed",
                requests=50,
                concurrency=5,
                progress=lambda done, total: seen.append((done, total)),
            )
    assert result.passed, result.problems
    assert result.requests == 50
    assert (result.success_2xx, result.status_503, result.status_504) == (40, 5, 5)
    assert (result.other_status, result.errors) == (0, 0)
    assert result.latency.count == 50
    assert result.throughput > 0
    assert seen[-1] == (50, 50)
    series = result.timeline
    assert sum(series.counts["2xx"]) == 40
    assert (sum(series.counts["503"]), sum(series.counts["504"])) == (5, 5)
    assert series.levels["in_flight"][-1] == 0


async def test_http_load_other_status_fails(client: str) -> None:
    """Responses other than 2xx, 503 and 504 fail the HTTP load."""
    result = await load_mixed("/teapot", client, requests=6, concurrency=2)
    assert not result.passed
    assert result.other_status == 6


async def test_http_load_for_a_duration(client: str) -> None:
    """With a duration, requests go on until it is over, then stop."""
    result = await load_mixed("/", client, duration=0.2, concurrency=2)
    assert result.passed, result.problems
    assert result.requests == result.success_2xx > 0


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_http_load_counts_connection_errors(client: str) -> None:
    """Requests to a closed port are counted as errors and fail the load."""
    with trio.fail_after(30):
        result = await http_load(
            f"http://127.0.0.1:{closed_port()}/", client, requests=4, concurrency=2
        )
    assert not result.passed
    assert result.errors == 4
    assert result.first_error is not None
    assert result.latency.count == 0


def only_error(result: loadtest.HttpLoadResult) -> str:
    """The sentence of the one request that failed (checked to be the only one)."""
    assert result.errors == 1
    assert result.first_error is not None
    return result.first_error


async def test_http_load_timeout_says_which_request_after_how_long(client: str) -> None:
    """A client timeout is reported with the request, its URL and the timeout."""
    result = await load_mixed("/hang", client, requests=1, concurrency=1, timeout=0.2)
    error = only_error(result)
    assert re.fullmatch(
        r"timeout on request 1 \(GET http://127\.0\.0\.1:\d+/hang\) after 0\.2\d s: "
        r"no answer within the 0\.2 s client timeout",
        error,
    ), error
    assert result.problems == (f"1 request failed (first: {result.first_error})",)


async def test_connection_error_names_the_request(client: str) -> None:
    """A refused connection says which request, after how long, and the OS error."""
    url = f"http://127.0.0.1:{closed_port()}/"
    with trio.fail_after(30):
        result = await http_load(url, client, requests=1, concurrency=1)
    assert result.first_error is not None
    port = url.split(":")[2][:-1]
    assert re.fullmatch(
        rf"connect error on request 1 \(GET {re.escape(url)}\) after \d+\.\d\d s: "
        rf"cannot connect to 127\.0\.0\.1:{port}: Connection refused",
        result.first_error,
    ), result.first_error


async def test_open_loop_counts_the_wait_from_the_intended_send_time(
    client: str,
) -> None:
    """A request due while the only connection is busy counts its wait in its latency.

    Requests are due every 10 ms; the first is answered after STALL seconds,
    and the nine due meanwhile wait for it: each latency, measured from when
    the request was due, is at least STALL minus its offset, however fast or
    slow the machine. Measured from when each was sent, they would be ~0.
    """
    result = await load_mixed(
        "/stall-first", client, requests=10, concurrency=1, rate=100
    )
    assert result.passed, result.problems
    assert (result.requests, result.success_2xx, result.rate) == (10, 10, 100)
    assert result.latency.count == 10
    assert result.latency.min is not None
    assert result.latency.min >= STALL - 9 / 100
    assert "at 100/s, 1 connections" in result.title


async def test_open_loop_sends_rate_times_duration(client: str) -> None:
    """With a rate and a duration, rate * duration requests are sent."""
    result = await load_mixed("/", client, rate=200, duration=0.1, concurrency=3)
    assert result.passed, result.problems
    assert result.requests == result.success_2xx == 20


async def test_processes_merge_counts_and_latencies_exactly(client: str) -> None:
    """Two client processes share the load; their counts and latencies add up."""
    result = await load_mixed("/mixed", client, requests=40, concurrency=4, processes=2)
    assert result.passed, result.problems
    assert result.processes == 2
    assert result.requests == 40
    assert (result.success_2xx, result.status_503, result.status_504) == (32, 4, 4)
    assert result.latency.count == 40
    assert sum(result.timeline.counts["2xx"]) == 32


async def test_open_loop_over_processes_sends_each_slot_once(client: str) -> None:
    """An open loop split over two processes sends every slot of the schedule once."""
    result = await load_mixed(
        "/", client, requests=21, rate=500, concurrency=4, processes=2
    )
    assert result.passed, result.problems
    assert result.requests == result.success_2xx == result.latency.count == 21


async def test_connection_close_answers_open_a_new_connection(client: str) -> None:
    """``Connection: close`` answers are read whole; the next request reconnects."""
    result = await load_mixed("/close", client, requests=5, concurrency=1)
    assert result.passed, result.problems
    assert result.success_2xx == 5


def answer_once_then_close(answer: bytes) -> Callable[[trio.SocketStream], Any]:
    """A handler that reads one request, writes ``answer`` and closes the connection.

    ``answer`` may say nothing of closing: the client learns only by reading.
    """

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return
            data += chunk
        await stream.send_all(answer)
        await stream.aclose()

    return handle


async def load_raw(
    client: str, answer: bytes, requests: int, path: str = "/"
) -> loadtest.HttpLoadResult:
    """``http_load`` of a raw server answering each connection once with ``answer``."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            handler = answer_once_then_close(answer)
            (listener,) = await nursery.start(
                partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
            )
            port = listener.socket.getsockname()[1]
            result = await http_load(
                f"http://127.0.0.1:{port}{path}",
                client,
                requests=requests,
                concurrency=1,
            )
            nursery.cancel_scope.cancel()
    return result


async def test_kept_alive_connection_the_server_closed_is_retried(client: str) -> None:
    """A GET on a kept-alive connection the server had closed is sent again."""
    result = await load_raw(
        client, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 3
    )
    assert result.passed, result.problems
    assert result.success_2xx == 3


async def test_chunked_and_close_delimited_bodies_are_read_whole(client: str) -> None:
    """A chunked body, and one that ends with the connection, are whole answers."""
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    result = await load_raw(client, chunked, 2)
    assert (result.success_2xx, result.errors) == (2, 0)
    result = await load_raw(client, b"HTTP/1.1 504 Timeout\r\n\r\nuntil the end", 2)
    assert (result.status_504, result.errors) == (2, 0)


async def test_cut_and_garbled_answers_are_errors(client: str) -> None:
    """An answer cut short, or not HTTP at all, is an error that says so."""
    cut = only_error(
        await load_raw(client, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok", 1)
    )
    assert re.fullmatch(
        r"connection closed on request 1 \(GET http://127\.0\.0\.1:\d+/\) after "
        r"\d+\.\d\d s: the server closed the connection before the whole answer",
        cut,
    ), cut
    # Closing answers, where llhttp cannot tell a length from the keep-alive:
    # a framed body cut short is an error, one that runs to the end is whole.
    for framing in (b"content-length: 10", b"transfer-encoding: chunked"):
        head = b"HTTP/1.1 200 OK\r\nconnection: close\r\n" + framing + b"\r\n\r\n"
        cut = only_error(await load_raw(client, head + b"5\r\nok", 1))
        assert "before the whole answer" in cut, cut
    closing = b"HTTP/1.0 200 OK\r\nconnection: close\r\n\r\nuntil the end"
    result = await load_raw(client, closing, 2)
    assert (result.success_2xx, result.errors) == (2, 0)
    garbled = only_error(await load_raw(client, b"SMTP ready\r\n\r\n", 1))
    assert garbled.startswith("protocol error on request 1 "), garbled
    assert "not an HTTP/1.1 answer" in garbled


def test_target_encodes_what_a_request_line_cannot_hold() -> None:
    """Spaces and non-ASCII characters are percent-encoded; escapes stay as they are."""
    target = Target.parse("http://example.test:8080/a b/é?q=1 2&r=%20")
    assert target.path == "/a%20b/%C3%A9?q=1%202&r=%20"
    assert target.host_header == "example.test:8080"
    assert Target.parse("https://example.test/").host_header == "example.test"
    with pytest.raises(ValueError, match="expected an http:// or https:// URL"):
        Target.parse("ftp://example.test/")


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_a_request_larger_than_the_socket_buffer_is_sent_whole(
    client: str,
) -> None:
    """A request the kernel takes in parts (a 2 MB URL) is sent whole, then answered."""
    result = await load_raw(client, OK, 2, "/" + "a" * 2_000_000)
    assert result.passed, result.problems
    assert result.success_2xx == 2


@final
class Resolver(trio.abc.HostnameResolver):
    """Resolves every name to ``answer``, or raises it: Trio's own resolver hook."""

    def __init__(self, answer: list[Any] | OSError) -> None:
        self._answer = answer

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[Any]:
        """``answer``, whatever was asked."""
        if isinstance(self._answer, OSError):
            raise self._answer
        return self._answer

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        """Not needed by the client."""
        raise NotImplementedError


async def test_an_address_that_refuses_is_passed_over_for_the_next(
    client: str,
) -> None:
    """A name with two addresses, the first refusing: requests go to the second."""
    with trio.fail_after(30):
        async with running_server(mixed_status_app()) as base:
            port = int(base.rpartition(":")[2])
            tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            addresses = [
                (*tcp, ("127.0.0.1", closed_port())),
                (*tcp, ("127.0.0.1", port)),
            ]
            trio.socket.set_custom_hostname_resolver(Resolver(addresses))
            result = await http_load(
                f"http://two.test:{port}/", client, requests=6, concurrency=2
            )
    assert result.passed, result.problems
    assert result.success_2xx == 6


async def test_a_name_that_does_not_resolve_is_a_connect_error(client: str) -> None:
    """A name that does not resolve fails every request, with the resolver's reason."""
    failure = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    trio.socket.set_custom_hostname_resolver(Resolver(failure))
    with trio.fail_after(30):
        result = await http_load(
            "http://nowhere.test/", client, requests=2, concurrency=1
        )
    assert result.errors == 2
    assert result.first_error is not None
    assert re.fullmatch(
        r"connect error on request 1 \(GET http://nowhere\.test/\) after \d+\.\d\d "
        r"s: cannot connect to nowhere\.test:80: Name or service not known",
        result.first_error,
    ), result.first_error


def test_auto_picks_the_epoll_loop_for_plain_http_where_there_is_epoll() -> None:
    """``auto`` is the epoll loop for http:// (where it runs), streams for https://."""
    plan = plan_of("http://127.0.0.1:1/", "auto")
    assert _http.client_for(plan) == ("epoll" if _epoll.available() else "streams")
    assert _http.client_for(attrs.evolve(plan, url="https://127.0.0.1:1/")) == (
        "streams"
    )
    assert _http.client_for(attrs.evolve(plan, client="streams")) == "streams"


@contextmanager
def threaded_server() -> Iterator[int]:
    """A keep-alive server answering :data:`OK`, in threads outside any Trio run.

    Yields its port; each connection has a thread, which ends when the
    client closes it, and the listener stops at the end.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            data = b""
            while chunk := conn.recv(65_536):
                data += chunk
                while b"\r\n\r\n" in data:
                    data = data.partition(b"\r\n\r\n")[2]
                    conn.sendall(OK)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(10)
        listener.close()


async def drive_loop(
    url: str, **options: Any
) -> tuple[_http.Tally, _epoll.LoopStatistics]:
    """The epoll loop's tally and statistics of a load of ``url``."""
    plan = plan_of(url, "epoll", **{"requests": 100, "concurrency": 4, **options})
    tally = _http.Tally()
    share = _http.Share(plan, trio.current_time(), tally)
    statistics = await _epoll.drive_epoll(
        share, Target.parse(url), plan.concurrency, plan.timeout
    )
    return tally, statistics


needs_epoll = pytest.mark.skipif(
    not _epoll.available(), reason="the epoll loop needs select.epoll (Linux)"
)


@needs_epoll
async def test_epoll_loop_waits_in_its_own_epoll_while_trio_has_nothing_to_do() -> None:
    """With its server outside the run, the loop waits in its own epoll.

    A task sleeping meanwhile still wakes: the loop waits no longer than
    Trio's next deadline.
    """
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    with threaded_server() as port, trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            tally, statistics = await drive_loop(
                f"http://127.0.0.1:{port}/", duration=0.3
            )
            nursery.cancel_scope.cancel()
    assert tally.counts["2xx"] == tally.sent > 0
    assert tally.counts["errors"] == 0
    assert statistics.held > 0
    assert ticks > 0


@needs_epoll
async def test_epoll_loop_waits_through_trio_while_other_tasks_wait_for_io() -> None:
    """With its server in the same run, waiting for I/O, the loop never holds Trio."""
    with trio.fail_after(30):
        async with running_server(mixed_status_app()) as base:
            tally, statistics = await drive_loop(f"{base}/", requests=50)
    assert tally.counts["2xx"] == tally.sent == 50
    assert statistics.held == 0
    assert statistics.yielded > 0
