"""RedisSessionLimit: the fleet-wide limit as an admission guard of the manager.

It holds a lease in Redis for each admitted session (through :class:`LeaseStore`),
renews them in the background, and gives them back as sessions complete.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, final

import attrs
import coredis
import trio
from coredis.client import Client

from .._errors import CapacityError
from .._guard import AdmissionGuard
from .._validate import check_seconds
from ._scripts import BATCH
from ._sentinel import FailoverWatch, sentinel_primary
from ._statistics import BackendUnavailableError, RedisLimitStatistics
from ._store import LeaseStore, Unavailable

if TYPE_CHECKING:
    from .._manager import SessionManager
    from .._session import Session

__all__ = ["RedisSessionLimit"]

logger = logging.getLogger("trio_sessions.redis")


@attrs.define(slots=True)
class _Lease:
    session: Session
    member: str
    # Local trio time by which the lease may lapse in Redis: the moment the
    # last successful write was *sent*, plus the TTL (Redis stamped it later).
    expires: float
    # Set once its session is cancelled for it: no more renewals or deadlines.
    lost: bool = False


def _seconds(value: object, name: str) -> float:
    seconds = check_seconds(value, name, positive=True, finite=True)
    assert seconds is not None
    return float(seconds)


@final
class RedisSessionLimit(AdmissionGuard):
    """A session limit shared by every manager of a fleet, kept in Redis.

    Each admitted session holds a *lease*: a member of the sorted set ``key``
    scored by its expiry, computed from the Redis server's clock. A lease is
    added only while the set holds fewer than ``limit`` live leases, renewed
    by a task in the manager's nursery every ``ttl / 3`` seconds, and removed
    once its session completes. A process that dies without releasing gives
    its leases back after ``ttl`` seconds::

        client = coredis.Redis(host="redis.internal", port=6379)
        guard = RedisSessionLimit(client, limit=40, key="quota:upstream-api")
        async with ts.open_session_manager(max_sessions=100, guard=guard) as manager:
            reply = await manager.run(call_upstream, request)

    The manager's local limit is checked first, then the fleet's. With the fleet
    full, admission is refused with :exc:`~trio_sessions.CapacityError`
    (``reason="global_capacity"``), or waits with the manager's own
    ``max_waiting`` / ``wait_timeout`` semantics, polling Redis with a jittered
    backoff of at most ``poll_interval`` seconds (waiters of different
    processes are not served in FIFO order).

    Admission costs one round trip, and no more: callers that arrive while an
    acquire is in flight are admitted together by the next one (in FIFO order,
    each lease its own member), and a release rides on the next acquire, or
    goes alone after ``release_delay`` seconds if none comes. So a released
    lease stays in Redis at most ``release_delay + op_timeout`` seconds, and
    never refuses a caller of this process, whose acquire removes it before
    counting.

    Failure policy (``on_unavailable``), for when Redis does not answer within
    ``op_timeout`` seconds:

    * ``"closed"`` (default): admission is refused with
      :exc:`BackendUnavailableError` (``reason="backend_unavailable"``); a
      running session whose lease could not be renewed is cancelled when the
      lease may lapse (``ttl`` after the last renewal was sent), and one whose
      lease Redis no longer holds (it expired, or Redis restarted empty) is
      cancelled at the next renewal. The fleet never runs more than ``limit``
      sessions, at the price of availability.
    * ``"open"``: admission falls back to the local limit alone, and running
      sessions are never cancelled for Redis' sake; such sessions hold no lease
      (see :attr:`RedisLimitStatistics.unleased`). Availability wins over the
      fleet limit.

    Every call to Redis runs under :func:`trio.move_on_after` (``op_timeout``),
    so no Redis fault can hang admission, a session or shutdown. A Redis
    restart is survived: the client reconnects on its own.

    The guard enters ``client`` (an async context manager in coredis 6) for the
    manager's lifetime. One guard serves one manager at a time; to share one
    client between several guards, enter it yourself around the managers.

    Args:
      client: a :class:`coredis.Redis` (or cluster) client.
      limit: sessions the whole fleet may run at once, >= 1.
      key: the Redis key of the lease set; every process sharing a limit uses
        the same key, and the same ``limit``.
      ttl: seconds a lease lives without renewal: how long a crashed process's
        slots stay taken.
      on_unavailable: ``"closed"`` or ``"open"``, as above.
      op_timeout: seconds any one call to Redis may take; must be below ``ttl``
        (best at most ``ttl / 3``).
      poll_interval: longest pause between two tries while waiting for room.
      release_delay: longest wait, in seconds, for an acquire to carry a
        release before it is sent alone; >= 0 (0: at once).

    Raises:
      TypeError, ValueError: an argument is invalid (the message names it).
    """

    reasons: ClassVar[tuple[str, ...]] = ("global_capacity", "backend_unavailable")
    # Every call to Redis is bounded by op_timeout: a refused-or-admitted ask
    # needs no cancel scope of the manager's (see AdmissionGuard.bounded_asks).
    bounded_asks: ClassVar[bool] = True

    def __init__(
        self,
        client: Client[Any],
        *,
        limit: int,
        key: str = "trio_sessions:leases",
        ttl: float = 10.0,
        on_unavailable: Literal["closed", "open"] = "closed",
        op_timeout: float = 1.0,
        poll_interval: float = 0.1,
        release_delay: float = 0.01,
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(
                f"client must be a coredis client, not {type(client).__name__}"
            )
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty str, got {key!r}")
        if on_unavailable not in ("closed", "open"):
            raise ValueError(
                f"on_unavailable must be 'closed' or 'open', got {on_unavailable!r}"
            )
        self._ttl = _seconds(ttl, "ttl")
        self._op_timeout = _seconds(op_timeout, "op_timeout")
        self._poll_interval = _seconds(poll_interval, "poll_interval")
        delay = check_seconds(release_delay, "release_delay", finite=True)
        assert delay is not None
        self._release_delay = float(delay)
        if self._op_timeout >= self._ttl:
            raise ValueError(
                f"op_timeout ({op_timeout!r}) must be below ttl ({ttl!r}), "
                "or a slow reply would outlive the lease it renews"
            )
        self._client = client
        self._limit = limit
        self._key = key
        self._fail_open = on_unavailable == "open"
        self._store = LeaseStore(
            client, key, limit, self._ttl, self._op_timeout, self._release_delay
        )
        # Unique to this guard in the fleet, readable in redis-cli.
        self._prefix = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}:"
        self._manager: SessionManager | None = None
        self._held: dict[Session, _Lease] = {}
        self._unleased: set[Session] = set()
        self._waiters = 0
        self._acquired = 0
        self._refused_capacity = 0
        self._refused_unavailable = 0
        self._admitted_unleased = 0
        self._lost = 0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        limit: int,
        key: str = "trio_sessions:leases",
        ttl: float = 10.0,
        on_unavailable: Literal["closed", "open"] = "closed",
        op_timeout: float = 1.0,
        poll_interval: float = 0.1,
        release_delay: float = 0.01,
    ) -> RedisSessionLimit:
        """Build the limit and its client from a ``redis://`` URL.

        The client's own connect and read timeouts are set to ``op_timeout``::

            guard = RedisSessionLimit.from_url("redis://redis.internal/0", limit=40)
        """
        timeout = _seconds(op_timeout, "op_timeout")
        client = coredis.Redis.from_url(
            url, connect_timeout=timeout, stream_timeout=timeout
        )
        return cls(
            client,
            limit=limit,
            key=key,
            ttl=ttl,
            on_unavailable=on_unavailable,
            op_timeout=op_timeout,
            poll_interval=poll_interval,
            release_delay=release_delay,
        )

    # Set by from_sentinel: sees each change of primary, after which no lease
    # is granted for a quarantine.
    _failover: FailoverWatch | None = None

    @classmethod
    def from_sentinel(
        cls,
        sentinels: coredis.Sentinel[bytes] | Iterable[tuple[str, int]],
        service_name: str,
        *,
        limit: int,
        key: str = "trio_sessions:leases",
        ttl: float = 10.0,
        on_unavailable: Literal["closed", "open"] = "closed",
        op_timeout: float = 1.0,
        poll_interval: float = 0.1,
        release_delay: float = 0.01,
        quarantine: float | None = None,
    ) -> RedisSessionLimit:
        """Build the limit on the primary that Redis Sentinel names ``service_name``.

        ``sentinels`` is the ``(host, port)`` of each sentinel (every connection
        then connects and reads within ``op_timeout``), or a
        :class:`coredis.Sentinel` of your own (a password, TLS)::

            guard = RedisSessionLimit.from_sentinel(
                [("sentinel-1", 26379), ("sentinel-2", 26379), ("sentinel-3", 26379)],
                "sessions",
                limit=40,
            )

        The client follows a failover by itself. As Redis replicates
        asynchronously, the new primary may lack the last leases the old one
        granted; so for ``quarantine`` seconds after the guard sees a new
        primary it grants no lease, and admission follows ``on_unavailable``
        as if Redis were down. The default, ``ttl`` under ``"closed"``, is how
        long a lost lease's session may still run; 0 under ``"open"``, which
        gives no bound anyway. See :doc:`/fleet` (Failover).
        """
        timeout = _seconds(op_timeout, "op_timeout")
        if quarantine is None:
            quarantine = 0.0 if on_unavailable == "open" else _seconds(ttl, "ttl")
        seconds = check_seconds(quarantine, "quarantine", finite=True)
        assert seconds is not None
        client, watch = sentinel_primary(
            sentinels, service_name, timeout=timeout, quarantine=float(seconds)
        )
        guard = cls(
            client,
            limit=limit,
            key=key,
            ttl=ttl,
            on_unavailable=on_unavailable,
            op_timeout=op_timeout,
            poll_interval=poll_interval,
            release_delay=release_delay,
        )
        guard._failover = watch
        return guard

    def _check_failover(self, member: str, expires: float | None) -> None:
        """During a quarantine, give back the lease just granted; raise Unavailable."""
        why = self._failover.quarantined() if self._failover is not None else None
        if why is not None:
            if expires is not None:
                self._store.release(member, expires)
            raise Unavailable(why)

    def __repr__(self) -> str:
        policy = "open" if self._fail_open else "closed"
        return (
            f"<RedisSessionLimit key={self._key!r} limit={self._limit} "
            f"ttl={self._ttl} on_unavailable={policy!r}>"
        )

    # ------------------------------------------------------------------ queries

    @property
    def limit(self) -> int:
        """Sessions the whole fleet may run at once."""
        return self._limit

    @property
    def key(self) -> str:
        """The Redis key of the lease set."""
        return self._key

    @property
    def member_prefix(self) -> str:
        """What this guard's lease members start with, then the session id.

        Unique to this guard in the fleet (host, process, a random part), so
        ``redis-cli ZRANGE <key> 0 -1`` shows whose leases are whose::

            mine = [m for m in members if m.startswith(guard.member_prefix)]
        """
        return self._prefix

    def statistics(self) -> RedisLimitStatistics:
        """Return a :class:`RedisLimitStatistics` snapshot; no I/O, not a checkpoint.

        Its ``global_count`` is the gauge to export for the fleet::

            gauge.set(guard.statistics().global_count or 0)
        """
        return RedisLimitStatistics(
            limit=self._limit,
            key=self._key,
            held=len(self._held),
            unleased=len(self._unleased),
            global_count=self._store.global_count,
            global_count_at=self._store.global_count_at,
            available=self._store.available,
            acquired=self._acquired,
            refused_capacity=self._refused_capacity,
            refused_unavailable=self._refused_unavailable,
            admitted_unleased=self._admitted_unleased,
            lost=self._lost,
            backend_errors=self._store.backend_errors,
            pending_releases=self._store.pending_releases,
            acquire_calls=self._store.acquire_calls,
            release_calls=self._store.release_calls,
        )

    async def global_count(self) -> int:
        """Ask Redis how many live leases the whole fleet holds now.

        Expired leases are swept first, so the answer is exact::

            print(f"{await guard.global_count()} of {guard.limit} fleet slots taken")

        Raises:
          BackendUnavailableError: Redis did not answer within ``op_timeout``.
        """
        try:
            count, _ = await self._store.renew(())
        except Unavailable as exc:
            raise BackendUnavailableError(str(exc)) from None
        return count

    # ---------------------------------------------------------- guard protocol

    async def run(
        self,
        manager: SessionManager,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the client open and the leases fresh for the manager's lifetime.

        Started by :func:`~trio_sessions.open_session_manager`; renews every
        lease every ``ttl / 3`` seconds and removes released ones that no
        acquire carried within ``release_delay``.
        When cancelled at shutdown (once every session has completed and no
        caller is left inside :meth:`acquire`), it removes every lease of
        this guard from Redis, in a shielded scope bounded by ``op_timeout``;
        if Redis does not answer, it logs how many leases are left to expire.
        """
        if self._manager is not None:
            raise RuntimeError(
                f"{self!r} already serves a session manager: "
                "create one RedisSessionLimit per manager"
            )
        self._manager = manager
        try:
            async with trio.open_nursery() as nursery:
                client_scope, loops_scope = await nursery.start(self._serve)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    # The client's connections outlive the manager's cancellation
                    # (they run shielded in _serve), so the last releases can
                    # still be sent; bounded even if Redis hangs.
                    loops_scope.cancel()
                    deadline = trio.current_time() + 2 * self._op_timeout
                    with trio.CancelScope(shield=True, deadline=deadline):
                        await self._sweep()
                    client_scope.cancel()
        finally:
            self._manager = None

    async def _serve(
        self,
        *,
        task_status: trio.TaskStatus[tuple[trio.CancelScope, trio.CancelScope]],
    ) -> None:
        """Hold the client open, shielded, and run the renewal and release loops."""
        with trio.CancelScope(shield=True) as client_scope:
            async with self._client:
                with trio.CancelScope() as loops_scope:
                    async with trio.open_nursery() as loops:
                        loops.start_soon(self._renew_loop)
                        loops.start_soon(self._store.flush_releases, loops)
                        task_status.started((client_scope, loops_scope))
                await trio.sleep_forever()

    async def acquire(self, session: Session, deadline: float) -> None:
        """Take a fleet lease for ``session``, waiting for room until ``deadline``.

        Called by the manager at admission; see :class:`AdmissionGuard`.

        Raises:
          CapacityError: the fleet is full (``reason="global_capacity"``).
          BackendUnavailableError: Redis did not answer, under
            ``on_unavailable="closed"``.
        """
        manager = self._manager
        if manager is None:
            raise RuntimeError(
                f"{self!r} is not running: pass it to open_session_manager(guard=...)"
            )
        member = self._prefix + session.id
        delay = min(0.01, self._poll_interval)
        waiting = False
        try:
            while True:
                try:
                    # Undone by the store if it raises (the script may have run).
                    expires = await self._store.acquire(member)
                    self._check_failover(member, expires)
                except Unavailable as exc:
                    if self._fail_open:
                        self._admitted_unleased += 1
                        self._unleased.add(session)
                        return
                    self._refused_unavailable += 1
                    raise BackendUnavailableError(
                        f"fleet session limit unavailable ({exc}); refusing "
                        "rather than risk exceeding it"
                    ) from None
                if expires is not None:
                    self._acquired += 1
                    self._held[session] = _Lease(session, member, expires)
                    return
                now = trio.current_time()
                if not waiting:
                    if now >= deadline or self._waiters >= manager.config.max_waiting:
                        break
                    waiting = True
                    self._waiters += 1
                if now >= deadline:
                    break
                # Jitter spreads the fleet's waiters so they do not poll in step.
                await trio.sleep_until(
                    min(deadline, now + delay * (0.5 + random.random() / 2))
                )
                delay = min(delay * 2, self._poll_interval)
        finally:
            if waiting:
                self._waiters -= 1
        self._refused_capacity += 1
        # The fleet's slots free every (mean run time / fleet limit) seconds;
        # this process's recent run times stand for the fleet's.
        raise CapacityError(
            f"Maximum concurrent sessions reached across the fleet "
            f"(limit {self._limit} on Redis key {self._key!r})",
            reason="global_capacity",
            retry_after=manager._retry_after.recent_mean() / self._limit,
        )

    def release(self, session: Session) -> None:
        """Give back the lease of ``session``; it leaves Redis within ``release_delay``.

        Called by the manager in the step the session completes. It never
        blocks: the next acquire carries the removal, or, if none comes within
        ``release_delay``, the guard's background task sends it.
        """
        lease = self._held.pop(session, None)
        if lease is None:
            self._unleased.discard(session)
            return
        self._store.release(lease.member, lease.expires)

    # ---------------------------------------------------------------- internals

    async def _renew_loop(self) -> None:
        interval = self._ttl / 3
        while True:
            await self._renew_all()
            wake = trio.current_time() + interval
            if not self._fail_open:
                # Wake when a lease may lapse, to cancel its session on time.
                for lease in self._held.values():
                    if not lease.lost and lease.expires < wake:
                        wake = lease.expires
            await trio.sleep_until(wake)

    async def _renew_all(self) -> None:
        held = self._held
        if not self._fail_open:
            now = trio.current_time()
            for lease in list(held.values()):
                if not lease.lost and lease.expires <= now:
                    self._lose(lease, "it could not be renewed in time")
        leases = [lease for lease in held.values() if not lease.lost]
        try:
            if not leases:
                await self._store.renew(())
            for start in range(0, len(leases), BATCH):
                batch = leases[start : start + BATCH]
                sent = trio.current_time()
                _, lost = await self._store.renew([lease.member for lease in batch])
                missing = set(lost)
                for lease in batch:
                    if lease.member in missing:
                        if held.get(lease.session) is lease and not lease.lost:
                            self._lose(lease, "Redis no longer holds it")
                    else:
                        lease.expires = sent + self._ttl
        except Unavailable:
            pass  # Logged by the store; leases lapse on their own schedule.

    def _lose(self, lease: _Lease, why: str) -> None:
        self._lost += 1
        lease.lost = True
        if self._fail_open:
            del self._held[lease.session]
            self._unleased.add(lease.session)
            logger.warning(
                "trio_sessions: fleet lease of session %s lost (%s); it keeps "
                "running on the local limit (on_unavailable='open')",
                lease.session.id,
                why,
            )
            return
        logger.warning(
            "trio_sessions: fleet lease of session %s lost (%s); cancelling it",
            lease.session.id,
            why,
        )
        # The manager's release() drops the lease once the session completes.
        lease.session.cancel(f"lease lost: fleet lease on {self._key!r}: {why}")

    async def _sweep(self) -> None:
        """Remove every lease of this guard; log what is left if Redis fails."""
        left = self._store.pending_releases + len(self._held)
        try:
            await self._store.sweep(self._prefix)
        except Unavailable:
            logger.warning(
                "trio_sessions: could not remove this process's fleet leases from "
                "Redis key %r at shutdown; %d known lease(s), and any whose "
                "acquire reply was lost, expire within %g s",
                self._key,
                left,
                self._ttl,
            )
