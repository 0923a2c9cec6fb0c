"""The fleet-wide limit of trio_sessions.redis, against a real redis-server.

Each test starts its own server on a free loopback port (tests/redis_server.py),
so a test may kill, freeze or restart it. Real time passes here, so TTLs are a
second or less and every wait on I/O sits under ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from redis_server import (
    UNCLOSED_STREAMS,
    RedisServer,
    collect_failed_connections,  # noqa: F401 - an autouse fixture
    require_redis,
)

import trio_sessions as ts

REDIS_SERVER = require_redis()

import coredis  # noqa: E402

from trio_sessions.redis import (  # noqa: E402
    BackendUnavailableError,
    RedisLimitStatistics,
    RedisSessionLimit,
)
from trio_sessions.redis._scripts import ACQUIRE  # noqa: E402

WORKER = Path(__file__).with_name("redis_worker.py")

pytestmark = pytest.mark.filterwarnings(UNCLOSED_STREAMS)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(REDIS_SERVER, tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"


def client_for(server: RedisServer) -> coredis.Redis[bytes]:
    return coredis.Redis(
        host="127.0.0.1", port=server.port, connect_timeout=0.5, stream_timeout=0.5
    )


@asynccontextmanager
async def inspector(server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    async with client_for(server) as client:
        yield client


def limit_for(
    server: RedisServer, key: str, limit: int, **kwargs: Any
) -> RedisSessionLimit:
    kwargs.setdefault("ttl", 1.0)
    kwargs.setdefault("op_timeout", 0.25)
    return RedisSessionLimit(client_for(server), limit=limit, key=key, **kwargs)


async def eventually(predicate: Any, timeout: float = 3.0) -> None:
    """Poll a predicate (sync, or async for Redis state) until it holds."""
    with trio.fail_after(timeout):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(0.005)


# ---------------------------------------------------------------- validation


def test_arguments_are_validated(server: RedisServer) -> None:
    """Bad arguments raise TypeError or ValueError naming the field."""
    client = client_for(server)
    with pytest.raises(TypeError, match="client"):
        RedisSessionLimit("redis://localhost", limit=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limit"):
        RedisSessionLimit(client, limit=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        RedisSessionLimit(client, limit=0)
    with pytest.raises(ValueError, match="key"):
        RedisSessionLimit(client, limit=1, key="")
    with pytest.raises(ValueError, match="ttl"):
        RedisSessionLimit(client, limit=1, ttl=0)
    with pytest.raises(TypeError, match="op_timeout"):
        RedisSessionLimit(client, limit=1, op_timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="op_timeout"):
        RedisSessionLimit(client, limit=1, ttl=1, op_timeout=1)
    with pytest.raises(ValueError, match="on_unavailable"):
        RedisSessionLimit(client, limit=1, on_unavailable="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="release_delay"):
        RedisSessionLimit(client, limit=1, release_delay=-0.01)
    with pytest.raises(TypeError, match="release_delay"):
        RedisSessionLimit(client, limit=1, release_delay="0")  # type: ignore[arg-type]
    guard = RedisSessionLimit(client, limit=3, key="k")
    assert (guard.limit, guard.key) == (3, "k")
    assert "limit=3" in repr(guard)
    assert guard.reasons == ("global_capacity", "backend_unavailable")


async def test_acquire_outside_a_manager_is_an_error(
    server: RedisServer, key: str
) -> None:
    """A guard that no manager runs refuses to be used, and serves one manager only."""
    guard = limit_for(server, key, 1)
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(trio.sleep, 0)
    with pytest.raises(RuntimeError, match="not running"):
        await guard.acquire(session, -float("inf"))
    with trio.fail_after(5), pytest.raises(RuntimeError, match="one RedisSessionLimit"):
        async with (
            ts.open_session_manager(guard=guard),
            ts.open_session_manager(guard=guard),
        ):
            pass  # pragma: no cover


# ---------------------------------------------------------------- admission


async def test_fleet_limit_refuses_with_global_capacity(
    server: RedisServer, key: str
) -> None:
    """Two managers sharing a key admit the limit; the next gets global_capacity."""
    release = trio.Event()
    first_guard = limit_for(server, key, 2, ttl=5)
    second_guard = limit_for(server, key, 2, ttl=5)
    with trio.fail_after(10):
        async with (
            inspector(server) as redis,
            ts.open_session_manager(guard=first_guard) as first,
            ts.open_session_manager(guard=second_guard) as second,
        ):
            held = [
                await first.start_session(release.wait),
                await second.start_session(release.wait),
            ]
            assert await redis.zcard(key) == 2
            with pytest.raises(ts.CapacityError, match="across the fleet") as info:
                await second.start_session(release.wait)
            assert info.value.reason == "global_capacity"
            # Nothing completed yet: one second, the fallback, over a limit of 2.
            assert info.value.retry_after == 0.5
            stats = second.statistics()
            assert stats.rejections["global_capacity"] == 1
            assert stats.rejections["backend_unavailable"] == 0
            assert (stats.active, stats.rejected) == (1, 1)
            assert await second_guard.global_count() == 2
            guard_stats = second_guard.statistics()
            assert isinstance(guard_stats, RedisLimitStatistics)
            assert (guard_stats.held, guard_stats.global_count) == (1, 2)
            assert (guard_stats.acquired, guard_stats.refused_capacity) == (1, 1)
            assert guard_stats.available
            release.set()
            for session in held:
                await session.wait()

            async def emptied() -> bool:
                return await redis.zcard(key) == 0

            # Release removes the lease at once, long before its TTL.
            await eventually(emptied, timeout=2)
            # The lone release's reply is read a moment after Redis applied it.
            await eventually(
                lambda: first_guard.statistics().pending_releases == 0, timeout=2
            )
            await first.run(trio.sleep, 0)


async def test_waiting_for_a_fleet_slot(server: RedisServer, key: str) -> None:
    """With max_waiting, a caller waits for a fleet slot up to wait_timeout."""
    release = trio.Event()
    with trio.fail_after(10):
        async with (
            ts.open_session_manager(guard=limit_for(server, key, 1)) as holder,
            ts.open_session_manager(
                max_waiting=1, wait_timeout=5, guard=limit_for(server, key, 1)
            ) as waiter,
            trio.open_nursery() as nursery,
        ):
            await holder.start_session(release.wait)
            admitted: list[ts.Session] = []

            async def wait_for_slot() -> None:
                admitted.append(await waiter.start_session(trio.sleep, 0))

            nursery.start_soon(wait_for_slot)
            await eventually(lambda: waiter.statistics().waiting)
            # max_waiting=1 is taken: the next caller is refused at once.
            with pytest.raises(ts.CapacityError) as info:
                await waiter.start_session(trio.sleep, 0)
            assert info.value.reason == "global_capacity"
            release.set()
            await eventually(lambda: admitted)
            await admitted[0].wait()
            assert waiter.statistics().wait_times.count == 1


async def test_fleet_wait_times_out(server: RedisServer, key: str) -> None:
    """A waiter whose wait_timeout passes is refused with global_capacity."""
    with trio.fail_after(10):
        async with (
            ts.open_session_manager(guard=limit_for(server, key, 1)) as holder,
            ts.open_session_manager(
                max_waiting=5, wait_timeout=0.2, guard=limit_for(server, key, 1)
            ) as waiter,
        ):
            session = await holder.start_session(trio.sleep_forever)
            with pytest.raises(ts.CapacityError) as info:
                await waiter.start_session(trio.sleep, 0)
            assert info.value.reason == "global_capacity"
            assert waiter.statistics().rejections["global_capacity"] == 1
            session.cancel()


async def test_block_exit_removes_every_lease(server: RedisServer, key: str) -> None:
    """After the manager's block, none of its leases is left in Redis."""
    with trio.fail_after(10):
        async with inspector(server) as redis:
            guard = limit_for(server, key, 10)
            async with ts.open_session_manager(guard=guard) as manager:
                for _ in range(5):
                    await manager.start_session(trio.sleep, 0.05)
                assert await redis.zcard(key) == 5
            assert await redis.zcard(key) == 0
            assert guard.statistics().held == 0


# A Lua script that keeps Redis busy for a few hundred milliseconds: commands
# sent meanwhile queue behind it, as behind any slow command.
BUSY_SCRIPT = "local i = 0 while i < tonumber(ARGV[1]) do i = i + 1 end return i"


@pytest.mark.parametrize("callers", [1, 5])
async def test_shutdown_with_callers_inside_the_acquire_leaves_no_lease(
    server: RedisServer, key: str, callers: int
) -> None:
    """Callers refused by shutdown mid-acquire leave no lease once shutdown returns."""
    guard = limit_for(server, key, 10, ttl=5, op_timeout=1.5)
    refused: list[BaseException] = []

    async def caller(manager: ts.SessionManager) -> None:
        try:
            await manager.start_session(trio.sleep, 1)
        except ts.ShuttingDownError as exc:
            refused.append(exc)

    async def busy(redis: coredis.Redis[bytes]) -> None:
        # About 0.3 s; only the commands queued behind it matter, not its reply.
        with contextlib.suppress(TimeoutError):
            await redis.eval(BUSY_SCRIPT, keys=[], args=[1_000_000])

    with trio.fail_after(10):
        async with (
            inspector(server) as redis,
            inspector(server) as blocker,
            ts.open_session_manager(guard=guard, max_sessions=10) as manager,
            trio.open_nursery() as nursery,
        ):
            await manager.run(trio.sleep, 0)  # the guard's connection is up
            nursery.start_soon(busy, blocker)
            # Once every task waits, the script has been sent: Redis is busy
            # (a fixed sleep here let a loaded machine miss the moment).
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(callers):
                nursery.start_soon(caller, manager)
            await trio.testing.wait_all_tasks_blocked()
            # Their acquires are sent, queued behind the script.
            assert manager._in_guard == callers
            await manager.shutdown()
            # shutdown() has returned: nothing of ours is left in Redis.
            assert await redis.zcard(key) == 0
            assert guard.statistics().pending_releases == 0
    assert len(refused) == callers
    stats = manager.statistics()
    assert stats.rejections["shutting_down"] == callers
    assert (stats.active, stats.waiting) == (0, 0)


async def test_lost_lease_cancels_its_session(server: RedisServer, key: str) -> None:
    """A lease that vanishes from Redis cancels its session, with the reason."""
    guard = limit_for(server, key, 5, ttl=0.6)
    with trio.fail_after(10):
        async with (
            inspector(server) as redis,
            ts.open_session_manager(guard=guard) as manager,
        ):
            session = await manager.start_session(trio.sleep_forever, timeout=None)
            await redis.delete([key])
            with pytest.raises(ts.SessionCancelled, match="lease lost"):
                await session.wait()
            assert session.outcome is ts.Outcome.CANCELLED
            assert session.cancel_reason is not None
            assert "Redis no longer holds it" in session.cancel_reason
            assert manager.statistics().cancelled == 1
            assert guard.statistics().lost == 1


# ------------------------------------------- one round trip: batches, releases

ACQUIRE_SHA = hashlib.sha1(ACQUIRE.encode()).hexdigest()


class GatedRedis(coredis.Redis[bytes]):
    """A client whose acquire calls, while ``holding``, wait for the test to let
    each through: it decides when a call is in flight and what queues behind it."""

    holding = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[list[Any]] = []
        self.gates: list[trio.Event] = []

    async def evalsha(  # type: ignore[override]
        self, sha1: Any, keys: Any = None, args: Any = None
    ) -> Any:
        if sha1 == ACQUIRE_SHA:
            self.calls.append(list(args))
            if self.holding:
                gate = trio.Event()
                self.gates.append(gate)
                await gate.wait()
        return await super().evalsha(sha1, keys=keys, args=args)

    async def let_through(self, count: int) -> None:
        """Wait for the ``count``-th held call to arrive, and open its gate."""
        await eventually(lambda: len(self.gates) >= count)
        self.gates[count - 1].set()


def gated_limit(
    server: RedisServer, key: str, limit: int, **kwargs: Any
) -> tuple[RedisSessionLimit, GatedRedis]:
    client = GatedRedis(
        host="127.0.0.1", port=server.port, connect_timeout=0.5, stream_timeout=0.5
    )
    kwargs.setdefault("ttl", 5.0)
    kwargs.setdefault("op_timeout", 2.0)
    return RedisSessionLimit(client, limit=limit, key=key, **kwargs), client


async def hold_and_queue(
    client: GatedRedis,
    redis: coredis.Redis[bytes],
    nursery: trio.Nursery,
    caller: Callable[[str], Awaitable[None]],
    first: str,
    behind: Iterable[str],
) -> None:
    """Start ``first``, its acquire held in flight; queue ``behind``, in order."""
    await redis.script_load(ACQUIRE)  # no NOSCRIPT retry to hold too
    client.holding = True
    nursery.start_soon(caller, first)
    await eventually(lambda: client.gates)  # in flight, alone
    for name in behind:
        nursery.start_soon(caller, name)
        await trio.testing.wait_all_tasks_blocked()  # queued in this order


def members_asked(call: list[Any]) -> list[str]:
    """The members an acquire call asks for (after the releases it carries)."""
    released = int(call[2])
    return [str(member) for member in call[3 + released :]]


async def test_callers_behind_an_acquire_in_flight_share_one_call_in_fifo_order(
    server: RedisServer, key: str
) -> None:
    """Five callers queued behind an acquire go in one call; the first two fit."""
    guard, client = gated_limit(server, key, 3)
    outcomes: dict[str, str] = {}

    async def caller(name: str) -> None:
        try:
            await manager.start_session(trio.sleep_forever, name=name)
        except ts.CapacityError as exc:
            outcomes[name] = exc.reason
        else:
            outcomes[name] = "admitted"

    with trio.fail_after(10):
        async with (
            inspector(server) as redis,
            ts.open_session_manager(guard=guard) as manager,
            trio.open_nursery() as nursery,
        ):
            names = [f"c{index}" for index in range(5)]
            await hold_and_queue(client, redis, nursery, caller, "first", names)
            await client.let_through(1)
            await client.let_through(2)
            await eventually(lambda: len(outcomes) == 6)
            assert outcomes == {
                "first": "admitted",
                "c0": "admitted",
                "c1": "admitted",
                "c2": "global_capacity",
                "c3": "global_capacity",
                "c4": "global_capacity",
            }
            assert len(client.calls) == 2
            batch = members_asked(client.calls[1])
            by_member = {
                guard.member_prefix + session.id: session.name
                for session in manager.sessions.values()
            }
            assert [by_member.get(member) for member in batch[:2]] == ["c0", "c1"]
            assert len(batch) == 5
            assert await redis.zcard(key) == 3
            stats = guard.statistics()
            assert (stats.acquired, stats.refused_capacity) == (3, 3)
            assert stats.acquire_calls == 2
            assert manager.statistics().rejections["global_capacity"] == 3
            nursery.cancel_scope.cancel()
            for session in list(manager.sessions.values()):
                session.cancel()


async def test_a_caller_cancelled_in_a_batch_in_flight_leaves_no_lease(
    server: RedisServer, key: str
) -> None:
    """Cancelled while its batch is in flight, a caller's granted lease goes back."""
    guard, client = gated_limit(server, key, 10, release_delay=0.01)
    admitted: list[str] = []
    scopes: dict[str, trio.CancelScope] = {}

    async def caller(name: str) -> None:
        with trio.CancelScope() as scopes[name]:
            await manager.start_session(trio.sleep_forever, name=name)
            admitted.append(name)

    with trio.fail_after(10):
        async with (
            inspector(server) as redis,
            ts.open_session_manager(guard=guard) as manager,
            trio.open_nursery() as nursery,
        ):
            behind = ("second", "cancelled")
            await hold_and_queue(client, redis, nursery, caller, "first", behind)
            await client.let_through(1)
            await eventually(lambda: len(client.gates) == 2)  # the batch, in flight
            assert len(members_asked(client.calls[1])) == 2
            scopes["cancelled"].cancel()
            await trio.testing.wait_all_tasks_blocked()
            await client.let_through(2)
            await eventually(lambda: len(admitted) == 2)
            assert sorted(admitted) == ["first", "second"]

            async def two_left() -> bool:
                return await redis.zcard(key) == 2

            # Granted by Redis, given back: only the two admitted hold leases.
            await eventually(two_left)
            await eventually(lambda: guard.statistics().pending_releases == 0)
            held = {member.decode() for member in await redis.zrange(key, 0, -1)}
            assert held == {
                guard.member_prefix + session.id
                for session in manager.sessions.values()
            }
            stats = manager.statistics()
            assert (stats.active, stats.created) == (2, 2)
            assert guard.statistics().held == 2
            for session in list(manager.sessions.values()):
                session.cancel()


async def test_a_caller_cancelled_while_queued_leaves_the_batch(
    server: RedisServer, key: str
) -> None:
    """Cancelled before its batch is sent, a caller is not asked for at all."""
    guard, client = gated_limit(server, key, 10)
    admitted: list[str] = []
    scopes: dict[str, trio.CancelScope] = {}

    async def caller(name: str) -> None:
        with trio.CancelScope() as scopes[name]:
            await manager.start_session(trio.sleep_forever, name=name)
            admitted.append(name)

    with trio.fail_after(10):
        async with (
            inspector(server) as redis,
            ts.open_session_manager(guard=guard) as manager,
            trio.open_nursery() as nursery,
        ):
            behind = ("cancelled", "second")
            await hold_and_queue(client, redis, nursery, caller, "first", behind)
            scopes["cancelled"].cancel()
            await trio.testing.wait_all_tasks_blocked()
            await client.let_through(1)
            await client.let_through(2)
            await eventually(lambda: len(admitted) == 2)
            assert sorted(admitted) == ["first", "second"]
            assert len(members_asked(client.calls[1])) == 1
            assert await redis.zcard(key) == 2
            assert guard.statistics().held == 2
            for session in list(manager.sessions.values()):
                session.cancel()


async def test_a_cancelled_leader_hands_the_batch_over(
    server: RedisServer, key: str
) -> None:
    """The lone caller in flight, cancelled, leaves no lease; those queued go on."""
    guard, client = gated_limit(server, key, 10)
    admitted: list[str] = []
    scopes: dict[str, trio.CancelScope] = {}

    async def caller(name: str) -> None:
        with trio.CancelScope() as scopes[name]:
            await manager.start_session(trio.sleep_forever, name=name)
            admitted.append(name)

    with trio.fail_after(10):
        async with (
            inspector(server) as redis,
            ts.open_session_manager(guard=guard) as manager,
            trio.open_nursery() as nursery,
        ):
            behind = ("second", "third")
            await hold_and_queue(client, redis, nursery, caller, "leader", behind)
            scopes["leader"].cancel()
            await client.let_through(2)  # the next batch: the two queued
            await eventually(lambda: len(admitted) == 2)
            assert sorted(admitted) == ["second", "third"]
            assert len(members_asked(client.calls[1])) == 2
            client.gates[0].set()  # the leader's call never left: nothing to undo
            assert await redis.zcard(key) == 2
            assert guard.statistics().held == 2
            for session in list(manager.sessions.values()):
                session.cancel()


async def test_a_release_rides_on_the_next_acquire(
    server: RedisServer, key: str
) -> None:
    """Admitting after a release costs one call, and the pending release frees room."""
    guard = limit_for(server, key, 1, ttl=5, release_delay=30)
    with trio.fail_after(10):
        async with inspector(server) as redis:
            async with ts.open_session_manager(guard=guard) as manager:
                for _ in range(20):
                    # The last lease is still in Redis, waiting to be removed;
                    # the acquire removes it before counting: the slot is free.
                    await manager.run(trio.sleep, 0)
                    assert guard.statistics().pending_releases == 1
                    assert await redis.zcard(key) == 1
                stats = guard.statistics()
                assert (stats.acquired, stats.refused_capacity) == (20, 0)
                assert (stats.acquire_calls, stats.release_calls) == (20, 0)
            assert await redis.zcard(key) == 0  # the shutdown sweep


async def test_a_released_lease_lingers_at_most_release_delay_plus_op_timeout(
    server: RedisServer, key: str
) -> None:
    """A caller of another guard gets the slot within the linger bound of a release."""
    delay, op_timeout = 0.2, 0.25
    holder_guard = limit_for(
        server, key, 1, ttl=5, op_timeout=op_timeout, release_delay=delay
    )
    with trio.fail_after(10):
        async with (
            ts.open_session_manager(guard=holder_guard) as holder,
            ts.open_session_manager(guard=limit_for(server, key, 1, ttl=5)) as other,
        ):
            done = trio.Event()
            session = await holder.start_session(done.wait)
            done.set()
            await session.wait()
            released_at = trio.current_time()
            # No acquire of the holder's comes to carry the release: it waits.
            with pytest.raises(ts.CapacityError):
                await other.start_session(trio.sleep, 0)
            while True:
                try:
                    await other.run(trio.sleep, 0)
                except ts.CapacityError:
                    await trio.sleep(0.005)
                else:
                    break
            lingered = trio.current_time() - released_at
            stats = holder_guard.statistics()
            assert (stats.release_calls, stats.pending_releases) == (1, 0)
    print(f"released lease lingered {lingered:.3f} s (delay {delay} s)")
    assert lingered <= delay + op_timeout + 0.05  # the poll's own step
    assert lingered >= delay * 0.9


async def test_many_callers_of_two_managers_never_exceed_the_limit(
    server: RedisServer, key: str
) -> None:
    """400 concurrent attempts in two managers: Redis and the managers stay in limit."""
    limit = 12
    guards = [limit_for(server, key, limit, ttl=5) for _ in range(2)]
    peaks = {"redis": 0, "local": 0}
    stop = trio.Event()
    reasons: list[str] = []

    async def attempt(manager: ts.SessionManager) -> None:
        try:
            await manager.run(trio.sleep, random.uniform(0.001, 0.01))
        except ts.CapacityError as exc:
            reasons.append(exc.reason)

    async def watch_local(managers: list[ts.SessionManager]) -> None:
        while not stop.is_set():
            running = sum(manager.statistics().active for manager in managers)
            held = sum(guard.statistics().held for guard in guards)
            assert held <= running <= limit
            peaks["local"] = max(peaks["local"], running)
            await trio.lowlevel.checkpoint()

    async def watch_redis(redis: coredis.Redis[bytes]) -> None:
        while not stop.is_set():
            count = await redis.zcard(key)
            assert count <= limit
            peaks["redis"] = max(peaks["redis"], count)

    with trio.fail_after(20):
        async with (
            inspector(server) as redis,
            ts.open_session_manager(max_sessions=50, guard=guards[0]) as first,
            ts.open_session_manager(max_sessions=50, guard=guards[1]) as second,
        ):
            managers = [first, second]
            async with trio.open_nursery() as watchers:
                watchers.start_soon(watch_local, managers)
                watchers.start_soon(watch_redis, redis)
                async with trio.open_nursery() as callers:
                    for _ in range(200):
                        for manager in managers:
                            callers.start_soon(attempt, manager)
                        await trio.sleep(0.0005)
                stop.set()

            async def emptied() -> bool:
                return await redis.zcard(key) == 0

            await eventually(emptied)
    assert set(reasons) <= {"global_capacity"}
    refused = len(reasons)
    stats = [guard.statistics() for guard in guards]
    acquired = sum(each.acquired for each in stats)
    assert acquired + refused == 400
    assert sum(each.refused_capacity for each in stats) == refused
    assert sum(manager.statistics().succeeded for manager in managers) == acquired
    # Contended, and coalesced: fewer calls than attempts, the limit really hit
    # (a global_capacity refusal means Redis held `limit` leases then; the
    # watchers sample, so they may miss that very moment on a loaded machine).
    assert sum(each.acquire_calls for each in stats) < 400
    assert refused > 0
    assert 0 < peaks["local"] <= limit
    print(f"peaks {peaks}, {acquired} admitted, {refused} refused")


# ---------------------------------------------------------------- the fleet


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> str:
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError("worker exited")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.decode()


def worker_command(server: RedisServer, key: str, *args: str) -> list[str]:
    return [sys.executable, str(WORKER), *args, "--url", server.url, "--key", key]


async def test_three_processes_never_exceed_the_limit(
    server: RedisServer, key: str
) -> None:
    """3 processes making 300 attempts under limit 40: Redis never holds over 40."""
    limit, workers, attempts = 40, 3, 100
    command = worker_command(
        server, key, "attempts", "--limit", str(limit), "--count", str(attempts)
    )
    peak = 0
    samples = 0
    stop = trio.Event()

    async def monitor(redis: coredis.Redis[bytes]) -> None:
        nonlocal peak, samples
        while not stop.is_set():
            peak = max(peak, await redis.zcard(key))
            samples += 1
            await trio.sleep(0.002)

    processes = []
    try:
        with trio.fail_after(30):
            async with inspector(server) as redis, trio.open_nursery() as nursery:
                for _ in range(workers):
                    processes.append(
                        await trio.lowlevel.open_process(
                            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
                        )
                    )
                buffers = [bytearray() for _ in processes]
                for process, buffer in zip(processes, buffers, strict=True):
                    assert process.stdout is not None
                    assert await read_line(process.stdout, buffer) == "ready"
                nursery.start_soon(monitor, redis)
                for process in processes:
                    assert process.stdin is not None
                    await process.stdin.send_all(b"go\n")
                reports = []
                for process, buffer in zip(processes, buffers, strict=True):
                    assert process.stdout is not None
                    reports.append(json.loads(await read_line(process.stdout, buffer)))
                    assert await process.wait() == 0
                stop.set()
                assert await redis.zcard(key) == 0
    finally:
        for process in processes:
            if process.returncode is None:  # pragma: no cover - on failure only
                process.kill()
                await process.wait()
    admitted = sum(report["admitted"] for report in reports)
    rejected = sum(sum(report["rejected"].values()) for report in reports)
    print(
        f"fleet monitor: max {peak} leases of {limit} in {samples} samples; "
        f"{admitted} admitted, {rejected} refused of {workers * attempts}"
    )
    assert peak <= limit
    assert admitted + rejected == workers * attempts
    assert sum(report["succeeded"] for report in reports) == admitted
    for report in reports:
        assert set(report["rejected"]) <= {"capacity", "global_capacity"}
        for reason, count in report["rejected"].items():
            assert report["rejections"][reason] == count
    # The fleet was really contended, so the bound was really tested.
    assert peak > limit // 2
    assert sum(report["rejected"].get("global_capacity", 0) for report in reports)


async def test_killed_holder_frees_its_leases_after_ttl(
    server: RedisServer, key: str
) -> None:
    """A worker SIGKILLed while holding 10 leases frees them once the TTL passes."""
    command = worker_command(
        server, key, "hold", "--limit", "10", "--count", "10", "--ttl", "1"
    )
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        with trio.fail_after(15):
            assert process.stdout is not None
            assert await read_line(process.stdout, bytearray()) == "ready"
            async with (
                inspector(server) as redis,
                ts.open_session_manager(guard=limit_for(server, key, 10)) as manager,
            ):
                assert await redis.zcard(key) == 10
                process.send_signal(signal.SIGKILL)
                await process.wait()
                killed_at = trio.current_time()
                # Nobody renews them now, but they hold their slots until the TTL.
                with pytest.raises(ts.CapacityError):
                    await manager.start_session(trio.sleep, 0)
                while True:
                    try:
                        session = await manager.start_session(trio.sleep, 0)
                    except ts.CapacityError:
                        await trio.sleep(0.05)
                    else:
                        break
                freed_after = trio.current_time() - killed_at
                await session.wait()

                async def emptied() -> bool:
                    return await redis.zcard(key) == 0

                await eventually(emptied)
                print(f"leases of the killed worker freed after {freed_after:.2f} s")
    finally:
        if process.returncode is None:  # pragma: no cover - on failure only
            process.kill()
            await process.wait()


# ---------------------------------------------------------------- failures


async def test_redis_stopped_fails_closed_then_recovers(
    server: RedisServer, key: str
) -> None:
    """Redis down: backend_unavailable and leases lapse; Redis back: admits again."""
    guard = limit_for(server, key, 5)
    with trio.fail_after(20):
        async with ts.open_session_manager(guard=guard) as manager:
            running = await manager.start_session(trio.sleep_forever, timeout=None)
            server.stop()
            with trio.fail_after(2), pytest.raises(BackendUnavailableError) as info:
                await manager.start_session(trio.sleep, 0)
            assert info.value.reason == "backend_unavailable"
            assert isinstance(info.value, ts.RejectedError)
            assert "unavailable" in str(info.value)
            assert manager.statistics().rejections["backend_unavailable"] == 1
            with pytest.raises(BackendUnavailableError):
                await guard.global_count()
            # Its lease could not be renewed: cancelled before it may lapse.
            with trio.fail_after(2), pytest.raises(ts.SessionCancelled, match="lease"):
                await running.wait()
            stats = guard.statistics()
            assert not stats.available
            assert (stats.lost, stats.refused_unavailable) == (1, 1)
            server.start()
            while True:
                try:
                    await manager.run(trio.sleep, 0)
                except BackendUnavailableError:
                    await trio.sleep(0.05)
                else:
                    break
            assert guard.statistics().available

            async def emptied() -> bool:
                return await guard.global_count() == 0

            await eventually(emptied)


async def test_frozen_redis_hangs_nothing(
    server: RedisServer, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis that accepts but never answers: admission and shutdown stay bounded."""
    guard = limit_for(server, key, 5)
    try:
        with trio.fail_after(10):
            async with ts.open_session_manager(guard=guard) as manager:
                session = await manager.start_session(trio.sleep, 0.05)
                server.pause()
                with trio.fail_after(2), pytest.raises(BackendUnavailableError):
                    await manager.start_session(trio.sleep, 0)
                await session.wait()
                # Its release, and the undo of the refused attempt, cannot reach
                # Redis; they wait, and shutdown gives up on them within its
                # bound rather than hang.
                assert guard.statistics().pending_releases == 2
    finally:
        server.resume()
    # The released lease did not reach Redis; it lapses after the TTL, and the
    # log says so.
    assert "2 known lease(s)" in caplog.text
    assert "expire within 1 s" in caplog.text
    async with inspector(server) as redis:
        assert await redis.zcard(key) <= 1


async def test_fail_open_admits_on_the_local_limit(
    server: RedisServer, key: str
) -> None:
    """With on_unavailable="open", Redis down admits locally and cancels nothing."""
    guard = limit_for(server, key, 5, ttl=0.5, on_unavailable="open")
    with trio.fail_after(15):
        async with ts.open_session_manager(guard=guard) as manager:
            leased = await manager.start_session(trio.sleep_forever, timeout=None)
            server.stop()
            unleased = await manager.start_session(trio.sleep_forever, timeout=None)
            stats = guard.statistics()
            assert (stats.admitted_unleased, stats.unleased, stats.held) == (1, 1, 1)
            # Well past the TTL without renewal: still running.
            await trio.sleep(0.8)
            assert leased.outcome is None
            server.start()
            # Redis came back empty: the lost lease is dropped, not cancelled.
            await eventually(lambda: guard.statistics().unleased == 2)
            assert leased.outcome is None
            assert guard.statistics().lost == 1
            session = await manager.start_session(trio.sleep_forever, timeout=None)
            assert await guard.global_count() == 1
            for each in (leased, unleased, session):
                each.cancel()
        assert manager.statistics().rejected == 0
