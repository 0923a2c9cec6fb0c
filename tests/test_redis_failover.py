"""The fleet limit through a Redis failover, with real redis-server and sentinels.

Each test starts its own group (tests/redis_sentinel.py: a primary, a replica,
three sentinels on free loopback ports) and SIGKILLs the primary under load.
Real time passes here: the sentinels take about 2-3 s to promote the replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from redis_sentinel import SERVICE, SentinelGroup, require_sentinel
from redis_server import (
    UNCLOSED_STREAMS,
    collect_failed_connections,  # noqa: F401 - an autouse fixture
)

import trio_sessions as ts

SENTINEL = require_sentinel()

from trio_sessions.redis import BackendUnavailableError, RedisSessionLimit  # noqa: E402

pytestmark = pytest.mark.filterwarnings(UNCLOSED_STREAMS)

LIMIT = 6
TTL = 4.0  # above the failover time, so leases outlive the outage
HELD = 3  # leases of each fleet replicated before the kill, and lost after it


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    nodes = SentinelGroup(SENTINEL, tmp_path)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


class Fleet:
    """Two managers sharing one key: a holder of long sessions and an admitter."""

    def __init__(self, group: SentinelGroup, key: str, quarantine: float | None):
        self.key = key
        self.guards = [
            RedisSessionLimit.from_sentinel(
                group.sentinel_addresses,
                SERVICE,
                limit=LIMIT,
                key=key,
                ttl=TTL,
                op_timeout=0.25,
                quarantine=quarantine,
            )
            for _ in range(2)
        ]
        self.running = 0
        self.peak = 0
        self.over_since: float | None = None
        self.over_seconds = 0.0  # time spent over the limit
        self.rejections: dict[str, int] = {}
        self.resumed = trio.Event()  # a lease granted after the kill

    async def work(self, seconds: float) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running > LIMIT and self.over_since is None:
            self.over_since = trio.current_time()
        try:
            await trio.sleep(seconds)
        finally:
            self.running -= 1
            if self.running <= LIMIT and self.over_since is not None:
                self.over_seconds += trio.current_time() - self.over_since
                self.over_since = None

    async def admit(self, manager: ts.SessionManager, stop: trio.Event) -> None:
        """Ask for short sessions as fast as the fleet grants them."""
        while not stop.is_set():
            try:
                await manager.start_session(self.work, 0.3)
            except ts.RejectedError as exc:
                self.rejections[exc.reason] = self.rejections.get(exc.reason, 0) + 1
                await trio.sleep(0.005)
            else:
                self.resumed.set()


def test_from_sentinel_arguments_are_validated() -> None:
    """Bad arguments of from_sentinel raise TypeError or ValueError naming them."""
    sentinels = [("127.0.0.1", 1)]
    with pytest.raises(ValueError, match="quarantine"):
        RedisSessionLimit.from_sentinel(sentinels, SERVICE, limit=1, quarantine=-1)
    with pytest.raises(ValueError, match="sentinels"):
        RedisSessionLimit.from_sentinel([], SERVICE, limit=1)
    with pytest.raises(ValueError, match="service_name"):
        RedisSessionLimit.from_sentinel(sentinels, "", limit=1)
    with pytest.raises(ValueError, match="limit"):
        RedisSessionLimit.from_sentinel(sentinels, SERVICE, limit=0)
    guard = RedisSessionLimit.from_sentinel(sentinels, SERVICE, limit=2, key="k")
    assert (guard.limit, guard.key) == (2, "k")


async def ask(group: SentinelGroup, port: int, *words: str) -> list[str]:
    node = next(node for node in group.servers if node.port == port)
    return await trio.to_thread.run_sync(node.ask, *words)


async def test_failover_under_load_keeps_the_quarantined_fleet_within_its_limit(
    group: SentinelGroup,
) -> None:
    """SIGKILL the primary with unreplicated leases: quarantine holds the limit."""
    old = group.primary()
    assert old is not None
    new = next(node for node in group.servers if node is not old)
    guarded = Fleet(group, "test:quarantined", quarantine=None)
    bare = Fleet(group, "test:bare", quarantine=0)
    fleets = (guarded, bare)
    stop = trio.Event()
    with trio.fail_after(25):
        async with (
            ts.open_session_manager(max_sessions=50, guard=guarded.guards[0]) as gh,
            ts.open_session_manager(max_sessions=50, guard=guarded.guards[1]) as ga,
            ts.open_session_manager(max_sessions=50, guard=bare.guards[0]) as bh,
            ts.open_session_manager(max_sessions=50, guard=bare.guards[1]) as ba,
            trio.open_nursery() as nursery,
        ):
            holders = {guarded: gh, bare: bh}
            kept: list[ts.Session] = []
            for fleet in fleets:
                for _ in range(HELD):
                    kept.append(await holders[fleet].start_session(fleet.work, 60))
            # The replica has them: WAIT counts the replicas that acknowledged.
            assert (await ask(group, old.port, "WAIT", "1", "2000")) == ["1"]
            # Cut replication, and keep the replica from reconnecting: the
            # next leases reach the primary only.
            await trio.to_thread.run_sync(old.cut_replication)
            unreplicated: list[ts.Session] = []
            for fleet in fleets:
                for _ in range(LIMIT - HELD):
                    session = await holders[fleet].start_session(fleet.work, 60)
                    unreplicated.append(session)
            old.kill()
            killed_at = trio.current_time()
            for fleet, manager in ((guarded, ga), (bare, ba)):
                nursery.start_soon(fleet.admit, manager, stop)

            await trio.to_thread.run_sync(group.wait_for_primary, new)
            promoted_after = trio.current_time() - killed_at
            # A manager started now, during the quarantine, is quarantined too:
            # the sentinels say the primary is new.
            late = RedisSessionLimit.from_sentinel(
                group.sentinel_addresses,
                SERVICE,
                limit=LIMIT,
                key=guarded.key,
                ttl=TTL,
                op_timeout=0.25,
            )
            async with ts.open_session_manager(guard=late) as manager:
                with pytest.raises(BackendUnavailableError, match="primary changed"):
                    await manager.run(trio.sleep, 0)

            # Admission resumes on the promoted replica, without a restart.
            await guarded.resumed.wait()
            resumed_after = trio.current_time() - killed_at
            await trio.sleep(0.5)
            stop.set()
            for session in kept + unreplicated:
                session.cancel()
    for session in unreplicated:
        assert session.outcome is ts.Outcome.CANCELLED
        assert session.cancel_reason is not None
        assert "lease lost" in session.cancel_reason
    print(
        f"failover: promoted {promoted_after:.2f} s after the kill, the "
        f"quarantined fleet admitting again after {resumed_after:.2f} s "
        f"(refusals {guarded.rejections}); over the limit of {LIMIT}: "
        + ", ".join(
            f"{fleet.key} by {fleet.peak - LIMIT} for {fleet.over_seconds:.2f} s"
            for fleet in fleets
        )
    )
    # The bound: with the quarantine, the fleet stays within its limit. (The
    # bare fleet shows the hazard: it ran 3 or 4 over for 0.1-0.3 s here, but
    # how much depends on when its holder's renewal reaches the new primary.)
    assert guarded.peak <= LIMIT
    assert guarded.over_seconds == 0
    assert resumed_after >= TTL
    assert guarded.rejections.get("backend_unavailable")
