"""The lease set in Redis: every call the fleet limit makes, each bounded in time.

:class:`LeaseStore` speaks to Redis for :class:`RedisSessionLimit`; it raises
:exc:`Unavailable` for any call that fails or does not answer in ``op_timeout``.
Callers that arrive while an acquire is in flight are admitted together by the
next call, which also carries the releases waiting to be sent.
"""

from __future__ import annotations

import collections
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Final, NoReturn, final

import coredis.exceptions
import trio
from coredis.client import Client

from ._scripts import ACQUIRE, BATCH, RENEW, SWEEP

__all__ = ["LeaseStore", "Unavailable"]

logger = logging.getLogger("trio_sessions.redis")


class Unavailable(Exception):
    """Redis failed to answer a call in time (internal; never escapes)."""


# Where an acquire ticket stands: waiting for a batch, sent in one, answered,
# or woken to send the next batch itself.
_QUEUED: Final = 0
_SENT: Final = 1
_ANSWERED: Final = 2
_LEADING: Final = 3

_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_reschedule = trio.lowlevel.reschedule
_SUCCEEDED: Final = trio.lowlevel.Abort.SUCCEEDED


@final
class _Ticket:
    """One caller's place in the acquire queue, and its answer.

    A queued caller parks its task on the ticket and is rescheduled directly
    once answered, or once it is its turn to send: no Event per caller.
    """

    __slots__ = ("abandoned", "error", "expires", "member", "queue", "state", "task")

    def __init__(
        self, queue: collections.deque[_Ticket], member: str, task: trio.lowlevel.Task
    ) -> None:
        self.queue = queue
        self.member = member
        self.task = task
        self.state = _QUEUED
        # The answer: when the lease may lapse if granted; None if refused.
        self.expires: float | None = None
        self.error: str | None = None
        # Set once its caller was cancelled while its batch was in flight.
        self.abandoned = False

    def abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        """Its parked caller is cancelled: leave no lease behind.

        Only a parked ticket is aborted, so it is queued or in flight: one
        answered, or woken to lead, has been rescheduled already.
        """
        if self.state == _QUEUED:
            self.queue.remove(self)
        else:
            self.abandoned = True  # the sender releases it, if granted
        return _SUCCEEDED


@final
class _Script:
    """A Lua script called by its SHA1, loaded again if Redis lost it."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


_ACQUIRE: Final = _Script(ACQUIRE)
_RENEW: Final = _Script(RENEW)
_SWEEP: Final = _Script(SWEEP)


@final
class LeaseStore:
    """The sorted set ``key`` of live leases, at most ``limit`` of them.

    Acquires are coalesced: a caller that finds no acquire in flight sends one
    at once, for itself; callers arriving meanwhile queue, and the first of
    them, once the reply is in, sends one call for all of them (FIFO, up to
    BATCH). Released members wait in ``pending`` to be carried by the next
    acquire; :meth:`flush_releases` sends those that no acquire carried within
    ``release_delay`` on their own.
    """

    __slots__ = (
        "_backoff",
        "_carried",
        "_client",
        "_flush_due",
        "_flush_idle",
        "_flush_wake",
        "_in_flight",
        "_key",
        "_limit",
        "_op_timeout",
        "_pending",
        "_queue",
        "_release_delay",
        "_retry_at",
        "_swept",
        "_ttl",
        "_ttl_ms",
        "acquire_calls",
        "available",
        "backend_errors",
        "global_count",
        "global_count_at",
        "release_calls",
    )

    def __init__(
        self,
        client: Client[Any],
        key: str,
        limit: int,
        ttl: float,
        op_timeout: float,
        release_delay: float,
    ) -> None:
        self._client = client
        self._key = key
        self._limit = limit
        self._ttl = ttl
        self._ttl_ms = max(1, round(ttl * 1000))
        self._op_timeout = op_timeout
        self._release_delay = release_delay
        self._queue: collections.deque[_Ticket] = collections.deque()
        self._in_flight = False
        # Released members not yet removed from Redis -> local time after which
        # removing them is moot (the lease has lapsed anyway), oldest first.
        self._pending: dict[str, float] = {}
        self._carried = 0  # released members in a call now
        self._flush_due = 0.0  # when the oldest pending release goes alone
        self._flush_idle = False
        self._flush_wake = trio.Event()
        self._retry_at = -float("inf")
        self._backoff = 0.01
        self._swept = False
        self.available = True
        self.backend_errors = 0
        self.acquire_calls = 0
        self.release_calls = 0
        self.global_count: int | None = None
        self.global_count_at: float | None = None

    # ---------------------------------------------------------------- acquire

    async def acquire(self, member: str) -> float | None:
        """Add ``member`` if the set holds fewer than ``limit`` live leases.

        Returns the local time by which the lease may lapse (when its call was
        sent, plus the TTL: Redis stamped it later), or None if the set was
        full. If this raises (:exc:`Unavailable`, or cancelled), ``member`` is
        released: whatever Redis did with it is undone.
        """
        ticket = _Ticket(self._queue, member, _current_task())
        if self._in_flight:
            self._queue.append(ticket)
            await _wait_task_rescheduled(ticket.abort)
            if ticket.state != _LEADING:
                if ticket.error is not None:
                    raise Unavailable(ticket.error)
                return ticket.expires
        else:
            self._in_flight = True
        return await self._send(ticket)

    async def _send(self, ticket: _Ticket) -> float | None:
        """Send one acquire for ``ticket`` and the callers queued behind it."""
        queue = self._queue
        batch = [ticket]
        while queue and len(batch) < BATCH:
            batch.append(queue.popleft())
        for each in batch:
            each.state = _SENT
        released = self._take(BATCH - len(batch))
        args: list[str | int] = [self._limit, self._ttl_ms, len(released)]
        args += released
        args += [each.member for each in batch]
        expires = trio.current_time() + self._ttl
        error = None
        granted = 0
        self.acquire_calls += 1
        try:
            # Others' answers ride on this call: it may not be cut short (it is
            # bounded by op_timeout all the same). Alone, it may, as any call.
            granted, count = await self._call(
                self._eval(_ACQUIRE, args), "acquire", shield=len(batch) > 1
            )
        except Unavailable as exc:
            error = str(exc)
        except BaseException:
            # Cancelled (or worse): the script may have run, its reply lost.
            self._settle(released, done=False)
            self._answer(batch, 0, "the call was interrupted", expires)
            raise
        self._settle(released, done=error is None)
        if error is None:
            self._observe(int(count))
        self._answer(batch, granted, error, expires)
        if error is not None:
            raise Unavailable(error)
        return ticket.expires

    def _answer(
        self, batch: list[_Ticket], granted: int, error: str | None, expires: float
    ) -> None:
        """Tell each caller of ``batch`` its answer; release what nobody will hold.

        On an error the script may have run with its reply lost, so every
        member is released; a granted member whose caller left is too. The
        first ticket is the sender's own, which is running, not parked.
        """
        for index, each in enumerate(batch):
            each.state = _ANSWERED
            if error is not None:
                each.error = error
                self.release(each.member, expires)
            elif index < granted:
                if each.abandoned:
                    self.release(each.member, expires)
                else:
                    each.expires = expires
            if index and not each.abandoned:
                _reschedule(each.task)
        self._hand_over()

    def _hand_over(self) -> None:
        """Wake the first queued caller to send the next batch, or go idle."""
        if self._queue:
            leader = self._queue.popleft()
            leader.state = _LEADING
            _reschedule(leader.task)
        else:
            self._in_flight = False

    # --------------------------------------------------------------- releases

    @property
    def pending_releases(self) -> int:
        """Released members not yet removed from Redis."""
        return len(self._pending) + self._carried

    def release(self, member: str, moot_after: float) -> None:
        """Remove ``member`` soon: with the next acquire, or alone after a delay."""
        pending = self._pending
        if not pending:
            self._flush_due = trio.current_time() + self._release_delay
        pending[member] = moot_after
        if self._flush_idle:
            self._flush_idle = False
            self._flush_wake.set()

    def _take(self, room: int) -> dict[str, float]:
        """Take up to ``room`` pending releases, oldest first, to send now."""
        pending = self._pending
        if len(pending) <= room:
            taken, self._pending = pending, {}
        else:
            taken = {}
            for member in list(pending)[:room]:
                taken[member] = pending.pop(member)
        self._carried += len(taken)
        return taken

    def _settle(self, taken: dict[str, float], *, done: bool) -> None:
        """Account for releases sent; those that failed wait for another try."""
        self._carried -= len(taken)
        if done or self._swept or not taken:
            return
        now = trio.current_time()
        alive = {member: moot for member, moot in taken.items() if moot > now}
        if alive:
            self._flush_due = now if not self._pending else min(self._flush_due, now)
            self._pending.update(alive)
            if self._flush_idle:
                self._flush_idle = False
                self._flush_wake.set()

    async def flush_releases(self, nursery: trio.Nursery) -> NoReturn:
        """Send, alone, each release that no acquire carried in ``release_delay``.

        Each batch goes in a task of its own in ``nursery``, so one slow reply
        never holds back the releases behind it: a release leaves Redis within
        ``release_delay + op_timeout`` while Redis answers. While it does not,
        retries back off up to ``ttl / 3``, keeping only leases still alive.
        """
        while True:
            if not self._pending:
                self._flush_wake = trio.Event()
                self._flush_idle = True
                await self._flush_wake.wait()
                continue
            due = max(self._flush_due, self._retry_at)
            if trio.current_time() < due:
                await trio.sleep_until(due)  # an acquire may carry them meanwhile
                continue
            nursery.start_soon(self._remove, self._take(BATCH))
            await trio.lowlevel.checkpoint()

    async def _remove(self, taken: dict[str, float]) -> None:
        done = False
        self.release_calls += 1
        try:
            await self._call(self._client.zrem(self._key, list(taken)), "release")
            done = True
        except Unavailable:
            self._retry_at = trio.current_time() + self._backoff
            self._backoff = min(self._backoff * 2, self._ttl / 3)
        else:
            self._retry_at = -float("inf")
            self._backoff = 0.01
        finally:
            # Cancelled at shutdown: put them back for the sweep to count.
            self._settle(taken, done=done)

    # ------------------------------------------------------ renewal and sweep

    async def renew(self, members: Sequence[str]) -> tuple[int, list[str]]:
        """Extend ``members``; return the fleet's count and the members lost."""
        count, lost = await self._call(
            self._eval(_RENEW, [self._ttl_ms, *members]), "renew"
        )
        self._observe(int(count))
        return int(count), [_text(member) for member in lost]

    async def sweep(self, prefix: str) -> None:
        """Remove every lease whose member starts with ``prefix``; forget the rest."""
        await self._call(self._eval(_SWEEP, [prefix]), "sweep at shutdown")
        self._swept = True
        self._pending.clear()

    # ---------------------------------------------------------------- calls

    async def _eval(self, script: _Script, args: Sequence[str | int]) -> Any:
        # EVALSHA straight from the client: coredis' Script wrapper costs a
        # tenth of a call's client-side time on top.
        client = self._client
        try:
            return await client.evalsha(script.sha, keys=[self._key], args=args)
        except coredis.exceptions.NoScriptError:
            await client.script_load(script.text)  # a new or restarted Redis
            return await client.evalsha(script.sha, keys=[self._key], args=args)

    async def _call(self, request: Any, what: str, *, shield: bool = False) -> Any:
        """Await one Redis request within ``op_timeout``, or raise Unavailable."""
        deadline = trio.current_time() + self._op_timeout
        try:
            with trio.CancelScope(deadline=deadline, shield=shield):
                reply = await request
                if not self.available:
                    logger.info("trio_sessions: Redis answers again (%s)", self._key)
                self.available = True
                return reply
            error = f"no reply from Redis within {self._op_timeout:g} s"
        except (coredis.exceptions.RedisError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.backend_errors += 1
        if self.available:
            logger.warning("trio_sessions: Redis %s failed: %s", what, error)
        self.available = False
        raise Unavailable(error)

    def _observe(self, count: int) -> None:
        self.global_count = count
        self.global_count_at = trio.current_time()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
