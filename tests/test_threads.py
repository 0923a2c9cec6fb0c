"""The thread-safety story: worker threads go through trio.from_thread; nothing else.

A manager belongs to the Trio run that opened it. From a worker thread,
``trio.from_thread.run`` / ``run_sync`` work; a direct call from a foreign thread
(or from another Trio run) must fail with a clear error, never corrupt counters.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import check_invariants

META = {"thread": "worker"}
FOREIGN = "trio.from_thread.run"


async def answer(value: Any = "from a thread") -> Any:
    await trio.lowlevel.checkpoint()
    return value


def expect_counts(manager: ts.SessionManager, **wanted: int) -> None:
    """Assert the named counters exactly; every other counter must be zero."""
    stats = check_invariants(manager)
    fields: tuple[str, ...] = ("created", "succeeded", "failed", "timed_out")
    fields += ("cancelled", "active", "waiting", "rejected", "metadata_bytes")
    actual = {name: getattr(stats, name) for name in fields}
    assert actual == {name: wanted.get(name, 0) for name in fields}


def in_foreign_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a plain threading.Thread (not a Trio worker); return or raise."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def in_foreign_run(afn: Callable[[], Any]) -> Any:
    """Run ``afn`` in a second Trio run whose clock jumps, so a hang shows at once."""

    async def main() -> Any:
        with trio.move_on_after(60):
            return await afn()
        return "hung: still blocked after 60 (mock) seconds"

    return trio.run(main, clock=MockClock(autojump_threshold=0))


# ------------------------------------------------------------ the way to do it


async def test_worker_thread_starts_and_waits_through_from_thread(
    autojump_clock: MockClock,
) -> None:
    """start_session and Session.wait via trio.from_thread.run work and count."""

    def worker() -> tuple[Any, ts.SessionStatistics]:
        session = trio.from_thread.run(
            functools.partial(manager.start_session, answer, metadata=META)
        )
        value = trio.from_thread.run(session.wait)
        return value, trio.from_thread.run_sync(manager.statistics)

    async with ts.open_session_manager(request_timeout=None) as manager:
        value, stats = await trio.to_thread.run_sync(worker)
        assert value == "from a thread"
        assert (stats.created, stats.succeeded, stats.active) == (1, 1, 0)
        expect_counts(manager, created=1, succeeded=1)


async def test_worker_thread_nowait_and_cancel_through_run_sync(
    autojump_clock: MockClock,
) -> None:
    """start_session_nowait and Session.cancel via trio.from_thread.run_sync work."""

    def worker() -> ts.Session:
        session = trio.from_thread.run_sync(
            functools.partial(
                manager.start_session_nowait, trio.sleep_forever, metadata=META
            )
        )
        trio.from_thread.run_sync(session.cancel, "the thread changed its mind")
        with pytest.raises(ts.SessionCancelled, match="changed its mind"):
            trio.from_thread.run(session.wait)
        return session

    async with ts.open_session_manager(request_timeout=None) as manager:
        session = await trio.to_thread.run_sync(worker)
        assert session.outcome is ts.Outcome.CANCELLED
        expect_counts(manager, created=1, cancelled=1)


async def test_many_worker_threads_at_once_count_exactly(
    autojump_clock: MockClock,
) -> None:
    """Eight threads running 25 sessions each through from_thread lose nothing."""

    def worker(index: int) -> list[Any]:
        return [
            trio.from_thread.run(manager.run, answer, (index, n)) for n in range(25)
        ]

    results: dict[int, list[Any]] = {}

    async def one(index: int) -> None:
        results[index] = await trio.to_thread.run_sync(worker, index)

    async with ts.open_session_manager(
        max_sessions=3, max_waiting=8, request_timeout=None
    ) as manager:
        async with trio.open_nursery() as nursery:
            for index in range(8):
                nursery.start_soon(one, index)
        assert results == {i: [(i, n) for n in range(25)] for i in range(8)}
        expect_counts(manager, created=200, succeeded=200)
        assert manager.statistics().peak_active <= 3


# -------------------------------------------------- what fails, and how clearly


async def test_direct_nowait_from_a_worker_thread_is_a_clear_error(
    autojump_clock: MockClock,
) -> None:
    """start_session_nowait from a worker thread raises RuntimeError, counts nothing."""
    called: list[str] = []

    async def record() -> None:
        called.append("ran")  # pragma: no cover - must never run

    async with ts.open_session_manager(request_timeout=None) as manager:
        with pytest.raises(RuntimeError, match=FOREIGN):
            await trio.to_thread.run_sync(
                functools.partial(manager.start_session_nowait, record, metadata=META)
            )
        with pytest.raises(RuntimeError, match=FOREIGN):
            in_foreign_thread(lambda: manager.start_session_nowait(record))
        expect_counts(manager)
        assert called == []
        assert await manager.run(answer, "still fine") == "still fine"
        expect_counts(manager, created=1, succeeded=1)


async def test_admission_from_another_trio_run_is_a_clear_error(
    autojump_clock: MockClock,
) -> None:
    """start_session/run from a second Trio run in a thread raise RuntimeError."""
    async with ts.open_session_manager(request_timeout=None) as manager:
        for call in (
            functools.partial(manager.start_session, answer),
            functools.partial(manager.run, answer),
        ):
            with pytest.raises(RuntimeError, match=FOREIGN):
                await trio.to_thread.run_sync(trio.run, call)
        expect_counts(manager)


async def test_closed_manager_from_a_thread_still_says_thread(
    autojump_clock: MockClock,
) -> None:
    """After the block, a foreign thread still gets the thread error, not corruption."""
    async with ts.open_session_manager(request_timeout=None) as manager:
        pass
    with pytest.raises(RuntimeError, match=FOREIGN):
        in_foreign_thread(lambda: manager.start_session_nowait(answer))
    expect_counts(manager)
    assert manager.statistics().rejected == 0


async def test_session_cancel_from_a_foreign_thread_is_a_clear_error(
    autojump_clock: MockClock,
) -> None:
    """Session.cancel() from a foreign thread names trio.from_thread; no change."""
    async with ts.open_session_manager(request_timeout=None) as manager:
        release = trio.Event()
        running = manager.start_session_nowait(release.wait)
        await trio.testing.wait_all_tasks_blocked()
        pending = manager.start_session_nowait(release.wait)
        for session in (running, pending):
            with pytest.raises(RuntimeError, match=FOREIGN):
                in_foreign_thread(session.cancel)
        assert (running.cancel_reason, pending.cancel_reason) == (None, None)
        release.set()
        await running.wait()
        await pending.wait()
        expect_counts(manager, created=2, succeeded=2)


async def test_session_wait_from_another_trio_run_is_a_clear_error(
    autojump_clock: MockClock,
) -> None:
    """Session.wait() from a second Trio run raises RuntimeError instead of hanging."""
    async with ts.open_session_manager(request_timeout=None) as manager:
        release = trio.Event()
        session = manager.start_session_nowait(release.wait)
        try:
            with pytest.raises(RuntimeError, match=FOREIGN):
                await trio.to_thread.run_sync(in_foreign_run, session.wait)
        finally:
            release.set()
        # release.wait returns None: the value is checked, not just the type.
        assert await session.wait() is None  # type: ignore[func-returns-value]
        expect_counts(manager, created=1, succeeded=1)


async def test_shutdown_from_another_trio_run_is_a_clear_error(
    autojump_clock: MockClock,
) -> None:
    """shutdown() from a second Trio run raises RuntimeError and changes nothing."""
    async with ts.open_session_manager(request_timeout=None) as manager:
        release = trio.Event()
        session = manager.start_session_nowait(release.wait)
        await trio.testing.wait_all_tasks_blocked()
        try:
            with pytest.raises(RuntimeError, match=FOREIGN):
                await trio.to_thread.run_sync(in_foreign_run, manager.shutdown)
            assert not manager.closing
            assert session.outcome is None
        finally:
            release.set()
        # release.wait returns None: the value is checked, not just the type.
        assert await session.wait() is None  # type: ignore[func-returns-value]
        expect_counts(manager, created=1, succeeded=1)
