"""The eight load scenarios of the thread-and-lock manager this library replaces.

Each runs under ``autojump_clock``, so every figure is exact, and each checks
that the defect the old system had in that scenario cannot happen here.
"""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

import trio_sessions as ts


async def work(seconds: float) -> float:
    await trio.sleep(seconds)
    return seconds


async def test_fifty_concurrent_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """50 concurrent sessions of 10 ms each all succeed, each taking exactly 10 ms."""
    async with ts.open_session_manager(max_sessions=200) as manager:
        sessions = [manager.start_session_nowait(work, 0.010) for _ in range(50)]
        results = [await session.wait() for session in sessions]
        stats = manager.statistics()
    assert results == [0.010] * 50
    assert trio.current_time() == pytest.approx(0.010)
    assert (stats.created, stats.completed, stats.succeeded) == (50, 50, 50)
    assert stats.durations.count == 50
    assert stats.durations.mean == pytest.approx(0.010)
    assert stats.durations.min == stats.durations.max == pytest.approx(0.010)
    assert stats.peak_active == 50


async def test_hundred_sessions_held_at_once() -> None:
    """100 sessions held open at once are all admitted and all counted as active."""
    release = trio.Event()
    async with ts.open_session_manager(max_sessions=200) as manager:
        for _ in range(100):
            await manager.start_session(release.wait)
        await trio.testing.wait_all_tasks_blocked()
        stats = manager.statistics()
        assert (stats.active, stats.peak_active, stats.created) == (100, 100, 100)
        assert len(manager.sessions) == 100
        release.set()
    stats = manager.statistics()
    assert (stats.active, stats.completed, stats.succeeded) == (0, 100, 100)


async def test_capacity_limit_rejects_overflow() -> None:
    """With capacity 50 full, 10 concurrent overflow attempts are refused, counted."""
    release = trio.Event()
    errors: list[ts.CapacityError] = []

    async def overflow(manager: ts.SessionManager) -> None:
        try:
            await manager.start_session(release.wait)
        except ts.CapacityError as exc:
            errors.append(exc)

    async with ts.open_session_manager(max_sessions=50) as manager:
        for _ in range(50):
            manager.start_session_nowait(release.wait)
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(overflow, manager)
        stats = manager.statistics()
        release.set()
    assert len(errors) == 10
    assert {str(exc) for exc in errors} == {"Maximum concurrent sessions reached"}
    assert {exc.reason for exc in errors} == {"capacity"}
    assert (stats.active, stats.rejected, stats.rejections["capacity"]) == (50, 10, 10)
    assert manager.statistics().created == 50


async def test_no_hang_under_concurrent_lifecycles(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """75 concurrent full request lifecycles finish well inside a 10 s deadline."""
    results: list[float] = []

    async def client(manager: ts.SessionManager) -> None:
        results.append(await manager.run(work, 0.010, metadata={"client": "c"}))

    with trio.fail_after(10):
        async with ts.open_session_manager() as manager, trio.open_nursery() as nursery:
            for _ in range(75):
                nursery.start_soon(client, manager)
    assert results == [0.010] * 75
    assert trio.current_time() == pytest.approx(0.010)
    stats = manager.statistics()
    assert (stats.created, stats.succeeded, stats.metadata_bytes) == (75, 75, 0)


async def test_graceful_shutdown_under_load(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """20 sessions finishing one every 0.1 s all complete within a 5 s drain."""
    async with ts.open_session_manager(shutdown_timeout=5) as manager:
        for i in range(20):
            manager.start_session_nowait(work, 0.1 * (i + 1))
        report = await manager.shutdown()
        assert manager.statistics().active == 0
    assert report.initial_active == 20
    assert (report.completed, report.cancelled) == (20, 0)
    assert not report.timeout_reached
    assert report.duration == pytest.approx(2.0)
    assert manager.statistics().succeeded == 20


async def test_metrics_accuracy_with_mixed_outcomes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """60 sessions with a known mix count exactly 48 successes, 6 errors, 6 timeouts."""

    async def job(i: int) -> int:
        if i % 10 == 0:
            await trio.sleep(10)  # beyond its 1 s deadline
        elif i % 5 == 0:
            await trio.sleep(0.01)
            raise ValueError(f"job {i} failed")
        await trio.sleep(0.01)
        return i

    async with ts.open_session_manager(request_timeout=1) as manager:
        for i in range(60):
            manager.start_session_nowait(job, i)
    stats = manager.statistics()
    assert (stats.succeeded, stats.failed, stats.timed_out) == (48, 6, 6)
    assert (stats.cancelled, stats.completed, stats.created) == (0, 60, 60)
    assert stats.success_rate == 0.8
    assert trio.current_time() == pytest.approx(1.0)


async def test_metadata_tracking_without_leaks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Metadata bytes rise exactly, fall by the half that finished, and end at zero."""

    def size(i: int) -> int:
        # {"payload":"xxx..."} in compact JSON
        return len('{"payload":""}') + i * 100

    async with ts.open_session_manager(max_session_metadata_bytes=None) as manager:
        for i in range(30):
            manager.start_session_nowait(
                work, 1.0 if i < 15 else 2.0, metadata={"payload": "x" * (i * 100)}
            )
        total = sum(size(i) for i in range(30))
        assert manager.statistics().metadata_bytes == total
        await trio.sleep(1.5)
        assert manager.statistics().metadata_bytes == sum(
            size(i) for i in range(15, 30)
        )
    stats = manager.statistics()
    assert stats.metadata_bytes == 0
    assert stats.peak_metadata_bytes == total


async def test_session_creation_cost() -> None:
    """Session creation cost is measured and printed; benchmarks judge it, not tests."""
    release = trio.Event()
    timings: list[float] = []
    async with ts.open_session_manager(max_sessions=2_000) as manager:
        for _ in range(2_000):
            start = time.perf_counter()
            manager.start_session_nowait(release.wait)
            timings.append(time.perf_counter() - start)
        release.set()
    assert manager.statistics().succeeded == 2_000
    print(
        f"session creation: avg {sum(timings) / len(timings) * 1e3:.4f} ms, "
        f"min {min(timings) * 1e3:.4f} ms, max {max(timings) * 1e3:.4f} ms"
    )
