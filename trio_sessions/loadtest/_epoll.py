"""The load's client for plain HTTP on Linux: every connection in one epoll of its own.

One task sends and reads on all of a process's connections, each registered once
(level-triggered) in an epoll that the task waits on through Trio, or, while Trio
has nothing else to do, directly: an answer costs a system call and a parse.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import select
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, final

import attrs
import httptools
import trio

from ._client import (
    CUT_SHORT,
    Answer,
    AnswerEnds,
    RequestFailed,
    Target,
    cannot_connect,
    not_http,
    reason,
)

if TYPE_CHECKING:
    from ._http import Share

__all__ = ["LoopStatistics", "available", "drive_epoll"]

# The longest the loop keeps Trio's scheduler out while it waits in its own
# epoll or goes from answer to answer: other tasks (the sampler), Trio's I/O
# and a cancellation get their turn at least this often.
HOLD = 0.02
# Tasks that wait to read in any Trio run: Trio's own, which runs what
# run_sync_soon() queues, on its wake-up socket. One more is another task's.
_TRIO_READERS = 1
# One read takes what the kernel has, up to this: a small answer in one call.
_CHUNK = 65_536
# The module imports everywhere (its available() says where it runs).
_READ = select.EPOLLIN if hasattr(select, "EPOLLIN") else 1
_WRITE = select.EPOLLOUT if hasattr(select, "EPOLLOUT") else 4


def available() -> bool:
    """True where this client runs: where Python has ``select.epoll`` (Linux)."""
    return hasattr(select, "epoll")


@final
@attrs.frozen
class LoopStatistics:
    """How the loop waited, for the tests and the curious.

    Attributes:
      held: Waits in its own epoll, with Trio's scheduler held out.
      yielded: Turns it gave Trio's scheduler: waits through Trio, checkpoints.
    """

    held: int
    yielded: int


@final
class _Link(AnswerEnds):
    """One kept-alive connection of the loop, the request it carries, and its answer.

    The answer is parsed as :class:`~._client.AnswerEnds` parses it, with no
    callback per header (and none of the two strings made for each): whether
    the body is framed matters only when the server closes the connection
    before the answer is whole, and then :meth:`ended` reads it again from
    the head, which the link keeps until it is in.
    """

    __slots__ = (
        "address",
        "began",
        "connecting",
        "error",
        "fd",
        "head",
        "number",
        "reused",
        "sock",
        "token",
        "unsent",
        "writing",
    )

    def __init__(self, error: OSError) -> None:
        self.sock: socket.socket | None = None
        self.fd = -1
        # The request carried: a number unique in the loop (0: none), its
        # number in the report, and when its latency started.
        self.token = 0
        self.number = 0
        self.began = 0.0
        # Whether the connection carried a request before this one: a
        # kept-alive connection closed before a byte of the answer came back
        # (nothing in head) was closed idle, and is retried.
        self.reused = False
        self.connecting = False
        self.unsent = b""
        self.writing = False
        # The next address to try, and why the last attempt failed.
        self.address = 0
        self.error = error
        self.fresh()

    def expect(self) -> None:
        """A request goes out: nothing of its answer is in yet."""
        # The status once the head is in; again in answered once all is;
        # what arrived until the head was in (b"": nothing yet).
        self.status = self.answered = 0
        self.head = b""

    def ended(self) -> bool:
        """The server closed the connection: True when that ended a whole answer.

        That is a body without a length, which runs to the end of the
        connection; any other answer was cut short. llhttp keeps alive only
        a connection whose answer needs no end of the connection to end; for
        one it does not, the head says whether the body had a length.
        """
        if not self.status or self.keep_alive:
            return False
        again = Answer()
        try:
            again.parser.feed_data(self.head)
        except httptools.HttpParserError:
            return False
        if again.framed:
            return False
        self.answered = self.status
        return True


@final
class _Woken(trio.abc.Instrument):
    """Notes whether Trio woke a task other than ``mine``."""

    __slots__ = ("_mine", "_woken")

    def __init__(self, mine: trio.lowlevel.Task) -> None:
        self._mine = mine
        self._woken = False

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        """Trio's hook: ``task`` was woken."""
        if task is not self._mine:
            self._woken = True

    def woken(self) -> bool:
        """Whether another task was woken since the last call."""
        woken, self._woken = self._woken, False
        return woken


# What connect() takes, as getaddrinfo() found it: family, type, protocol, address.
Address = tuple[int, int, int, Any]


@final
class _Loop:
    """The connections of one process, each carrying one request at a time."""

    def __init__(
        self,
        share: Share,
        target: Target,
        concurrency: int,
        timeout: float,
        addresses: list[Address],
        error: OSError,
    ) -> None:
        self._share = share
        self._target = target
        self._request = target.request
        self._timeout = timeout
        self._addresses = addresses
        self._poller = select.epoll()
        # By file descriptor, every link with a socket open.
        self._open: dict[int, _Link] = {}
        self._idle = [_Link(error) for _ in range(concurrency)]
        self._busy = 0
        # Links whose request waits for a connection to open: opened between
        # two waits, never while a batch of events is handled, so that a new
        # socket cannot take the number of one that still has events in it.
        self._reconnect: list[_Link] = []
        # (deadline, token, link) in the order sent, so deadlines ascend.
        self._deadlines: deque[tuple[float, int, _Link]] = deque()
        self._tokens = itertools.count(1)
        # The end of the current turn of waiting in its own epoll; whether
        # Trio had no task queued at the loop's last turn; who else woke.
        self._hold_until = -math.inf
        self._offset = trio.current_time() - time.perf_counter()
        self._settled = False
        self._watch = _Woken(trio.lowlevel.current_task())
        self.held = 0
        self.yielded = 0

    async def run(self) -> None:
        """Send the share's requests and read their answers, to the last one."""
        trio.lowlevel.add_instrument(self._watch)
        try:
            await self._run()
        finally:
            trio.lowlevel.remove_instrument(self._watch)

    async def _run(self) -> None:
        share = self._share
        idle = self._idle
        deadlines = self._deadlines
        links = self._open
        poll = self._poller.poll
        clock = time.perf_counter
        now = trio.current_time()
        # What changes only in a turn of Trio's, kept here between two.
        hold_until, offset = self._hold_until, self._offset
        while True:
            if self._reconnect:
                waiting, self._reconnect = self._reconnect, []
                for link in waiting:
                    self._connect(link, now)
            # Each idle link takes a request that is due; a link that fails
            # at once is back in idle, taken again next round at the latest.
            # In a closed loop no link is idle but at the start and the end.
            due: float | None = None
            if idle:
                due = share.due(now)
                for _ in range(len(idle)):
                    if due > now:
                        break
                    self._start(idle.pop(), now)
                    due = share.due(now)
            until = math.inf
            while deadlines:
                deadline, token, link = deadlines[0]
                if link.token != token:  # answered already
                    deadlines.popleft()
                elif deadline <= now:
                    deadlines.popleft()
                    self._fail(link, None, now)
                else:
                    until = deadline
                    break
            if idle:
                if due is None:  # idle since: a request timed out
                    due = share.due(now)
                if due == math.inf and not self._busy:
                    return
                if due < until:
                    until = due
            if now < hold_until:
                self.held += 1
                events = poll(max(min(until, hold_until) - now, 0.0))
            else:
                events = await self._yield(until)
                hold_until, offset = self._hold_until, self._offset
            now = clock() + offset
            for fd, _ in events:
                ready = links.get(fd)
                if ready is None:  # closed earlier in this batch
                    continue
                if ready.connecting:
                    self._connected(ready, now)
                elif ready.writing:
                    self._send(ready)
                else:
                    self._receive(ready, now)

    async def _yield(self, until: float) -> list[tuple[int, int]]:
        """Wait through Trio until the epoll has events, or (about) ``until``."""
        self.yielded += 1
        with trio.CancelScope(deadline=until):
            await trio.lowlevel.wait_readable(self._poller)
        # Between two turns of Trio's, its clock is the system's (or a mock
        # clock that only jumps in Trio's turns): read it the short way.
        self._offset = trio.current_time() - time.perf_counter()
        self._hold_until = self._may_hold_until()
        return self._poller.poll(0)

    def _may_hold_until(self) -> float:
        """Until when the loop may wait in its own epoll, Trio's scheduler held out
        (``-inf``: it may not).

        Trio would wait in its epoll too, if it had no task to run, no
        callback queued and no I/O to watch: then the loop waits in its own,
        until the first of Trio's deadlines, for at most :data:`HOLD`.
        Nothing but the loop runs meanwhile, so that stays true; a callback
        that a thread queues waits until the loop's next turn.

        A task woken in the loop's own batch has left Trio's run queue but
        not yet run, and no statistic shows it: the loop holds only if no
        task was queued at its last turn and none was woken since.
        """
        stats = trio.lowlevel.current_statistics()
        io = stats.io_statistics
        settled, self._settled = self._settled, not stats.tasks_runnable
        if (
            self._watch.woken()
            or not settled
            or stats.tasks_runnable
            or stats.run_sync_soon_queue_size
            or getattr(io, "tasks_waiting_read", 2) > _TRIO_READERS
            or getattr(io, "tasks_waiting_write", 1)
        ):
            # Not at all. ("Until now" was a hold all the same, one run in
            # ten: the loop compares it with its own reading of the clock,
            # which can be a hair behind Trio's.)
            return -math.inf
        return trio.current_time() + min(stats.seconds_to_next_deadline, HOLD)

    def _start(self, link: _Link, now: float) -> None:
        link.number, link.began = self._share.claim_sending(now)
        link.token = token = next(self._tokens)
        self._deadlines.append((now + self._timeout, token, link))
        self._busy += 1
        if link.sock is None:
            link.address = 0
            self._connect(link, now)
        else:
            link.reused = True
            self._request_on(link)

    def _connect(self, link: _Link, now: float) -> None:
        """Open a connection for ``link``'s request, from its next address on."""
        link.fresh()
        link.reused = False
        while link.address < len(self._addresses):
            family, kind, proto, address = self._addresses[link.address]
            link.address += 1
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                code = sock.connect_ex(address)
            except OSError as exc:
                code, link.error = -1, exc
            if code in (0, errno.EINPROGRESS):
                link.sock, link.fd, link.connecting = sock, sock.fileno(), True
                self._open[link.fd] = link
                self._poller.register(link.fd, _WRITE)
                return
            sock.close()
            if code != -1:
                link.error = OSError(code, os.strerror(code))
        failure = RequestFailed("connect", cannot_connect(self._target, link.error))
        self._fail(link, failure, now)

    def _connected(self, link: _Link, now: float) -> None:
        assert link.sock is not None
        code = link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            link.error = OSError(code, os.strerror(code))
            self._close(link)
            self._reconnect.append(link)  # at its next address
            return
        link.connecting = False
        self._poller.modify(link.fd, _READ)
        self._request_on(link)

    def _request_on(self, link: _Link) -> None:
        """Send the request in one call, as a rule; the rest once there is room."""
        sock = link.sock
        assert sock is not None
        link.status = link.answered = 0  # link.expect(), without the call
        link.head = b""
        request = self._request
        try:
            sent = sock.send(request)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._broken(link, "sending the request", exc)
            return
        if sent < len(request):
            link.unsent = request[sent:]
            link.writing = True
            self._poller.modify(link.fd, _WRITE)

    def _send(self, link: _Link) -> None:
        """Send more of what is left of the request, now that there is room."""
        assert link.sock is not None
        data = link.unsent
        try:
            sent = link.sock.send(data)
        except BlockingIOError:
            return
        except OSError as exc:
            self._broken(link, "sending the request", exc)
            return
        link.unsent = data[sent:]
        if not link.unsent:
            link.writing = False
            self._poller.modify(link.fd, _READ)

    def _receive(self, link: _Link, now: float) -> None:
        sock = link.sock
        assert sock is not None
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._broken(link, "reading the answer", exc)
            return
        if data and link.token:
            if not link.status:
                # Kept until the head is in, for ended(); b"" + data is data.
                link.head += data
            try:
                link.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                self._fail(link, not_http(exc), now)
                return
            if link.answered:
                self._answered(link, now)
        elif not link.token:
            # No request on it: the server closed the idle connection (or
            # said something unasked); the next request opens a new one.
            self._close(link)
        elif link.reused and not link.head:
            self._retry(link)
        elif link.ended():
            self._answered(link, now)
        else:
            self._fail(link, RequestFailed("closed", CUT_SHORT), now)

    def _broken(self, link: _Link, doing: str, exc: OSError) -> None:
        if not link.token:
            self._close(link)
        elif link.reused and not link.head:
            self._retry(link)
        else:
            failure = RequestFailed("closed", f"{doing}: {reason(exc)}")
            self._fail(link, failure, trio.current_time())

    def _retry(self, link: _Link) -> None:
        """Send the request again on a new connection, as for a GET browsers do.

        The server had closed the kept-alive connection while it was idle;
        the request keeps its number, its start and its deadline.
        """
        self._close(link)
        link.address = 0
        self._reconnect.append(link)

    def _answered(self, link: _Link, now: float) -> None:
        share = self._share
        link.token = 0
        self._busy -= 1
        share.answered(link.answered, link.began, now)
        if not link.keep_alive:
            self._close(link)
        elif share.due(now) <= now:
            # At once, on the connection it has: no socket is opened mid-batch.
            self._start(link, now)
            return
        self._idle.append(link)

    def _fail(self, link: _Link, failure: RequestFailed | None, now: float) -> None:
        """``link``'s request got no answer (``None``: not in time); close the link."""
        link.token = 0
        self._busy -= 1
        self._close(link)
        if link in self._reconnect:
            self._reconnect.remove(link)
        self._share.failed(failure, link.number, link.began, now)
        self._idle.append(link)

    def _close(self, link: _Link) -> None:
        sock, link.sock = link.sock, None
        link.connecting = link.writing = False
        link.unsent = b""
        if sock is not None:
            # Closing the socket takes it out of the epoll too.
            del self._open[link.fd]
            sock.close()

    def close(self) -> None:
        """Close every connection and the epoll."""
        for link in list(self._open.values()):
            self._close(link)
        self._poller.close()


async def drive_epoll(
    share: Share, target: Target, concurrency: int, timeout: float
) -> LoopStatistics:
    """Send ``share``'s requests over ``concurrency`` connections, all in one task.

    Each connection carries one request at a time; in a closed loop it
    sends the next once the last is answered, in an open loop when the next
    is due. Each request has ``timeout`` seconds from when it is sent.
    """
    error = OSError(f"{target.host} has no address")
    try:
        found = await trio.socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        found, error = [], exc
    addresses: list[Address] = [(f, k, p, a) for f, k, p, _, a in found]
    loop = _Loop(share, target, concurrency, timeout, addresses, error)
    try:
        await loop.run()
    finally:
        loop.close()
    return LoopStatistics(held=loop.held, yielded=loop.yielded)
