"""Session, the handle: its id and fields, wait(), cancel() and its outcome.

What one admitted session looks like from the outside, from RUNNING to COMPLETED.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import trio
import trio.testing
from session_helpers import (
    fail_after_sleep,
    sleep_then,
)
from trio.testing import MockClock

import trio_sessions as ts


async def test_start_session_registers_and_runs(autojump_clock: MockClock) -> None:
    """An admitted session is RUNNING and listed until it completes, then it is gone."""
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1, "done", name="job")
        assert session.state is ts.SessionState.RUNNING
        assert session.outcome is None
        assert manager.sessions[session.id] is session
        assert session.name == "job"
        assert session.created_at == 0
        assert await session.wait() == "done"
        # mypy keeps the narrowing of the first assert across the await.
        assert session.state is ts.SessionState.COMPLETED  # type: ignore[comparison-overlap]
        assert session.outcome is ts.Outcome.SUCCESS
        assert session.id not in manager.sessions
        assert (session.started_at, session.completed_at, session.duration) == (0, 1, 1)


async def test_ids_are_unique(autojump_clock: MockClock) -> None:
    """Session ids are unique, across managers too."""
    async with ts.open_session_manager() as first, ts.open_session_manager() as second:
        ids = {
            (await manager.start_session(trio.lowlevel.checkpoint)).id
            for manager in (first, second)
            for _ in range(50)
        }
    assert len(ids) == 100


async def test_error_outcome_reraises_the_functions_exception(
    autojump_clock: MockClock,
) -> None:
    """ERROR: wait raises fn's own exception, counted as failed."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ValueError, match="handler failed"):
            await manager.run(fail_after_sleep, 1)
    stats = manager.statistics()
    assert (stats.failed, stats.succeeded, stats.success_rate) == (1, 0, 0.0)


async def test_cancelling_the_waiter_does_not_cancel_the_session(
    autojump_clock: MockClock,
) -> None:
    """A waiter that gives up does not cancel the session it waited for."""
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 5, "finished")
        with trio.move_on_after(1):
            await session.wait()
        assert session.state is ts.SessionState.RUNNING
        with trio.move_on_after(1):
            await manager.run(sleep_then, 5)
        assert manager.statistics().active == 2
        assert await session.wait() == "finished"
    assert manager.statistics().succeeded == 2


async def test_every_concurrent_waiter_gets_the_result(
    autojump_clock: MockClock,
) -> None:
    """Several tasks waiting on one session all get its value, at its end."""
    results: list[tuple[str, float]] = []

    async def waiter(session: ts.Session) -> None:
        results.append((await session.wait(), trio.current_time()))

    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 2, "value")
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(waiter, session)
            # A waiter that gives up early leaves the others waiting.
            with trio.move_on_after(1):
                await session.wait()
    assert results == [("value", 2)] * 3


async def test_wait_after_completion_is_a_checkpoint_and_repeatable(
    autojump_clock: MockClock,
) -> None:
    """wait on a completed session checkpoints and returns the same value again."""
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 0, 7)
        assert await session.wait() == 7
        with trio.testing.assert_checkpoints():
            assert await session.wait() == 7


async def test_session_cancel_is_idempotent(autojump_clock: MockClock) -> None:
    """Session.cancel cancels once: outcome CANCELLED, counted once."""
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 10)
        await trio.sleep(1)
        session.cancel()
        session.cancel()
        with pytest.raises(ts.SessionCancelled, match=r"Session\.cancel"):
            await session.wait()
        session.cancel()
        assert trio.current_time() == 1
    assert session.outcome is ts.Outcome.CANCELLED
    assert manager.statistics().cancelled == 1


async def test_cancel_before_first_step_never_runs_fn(
    autojump_clock: MockClock,
) -> None:
    """A session cancelled before its task runs never calls into fn."""
    ran = False

    async def handler() -> None:
        nonlocal ran
        ran = True

    async with ts.open_session_manager() as manager:
        session = manager.start_session_nowait(handler)
        session.cancel()
    assert not ran
    assert session.outcome is ts.Outcome.CANCELLED
    assert manager.statistics().cancelled == 1


async def test_completed_sessions_are_not_retained(autojump_clock: MockClock) -> None:
    """The manager keeps no reference to completed sessions."""
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1)
        await session.wait()
        ref = weakref.ref(session)
        del session
        gc.collect()
        assert ref() is None
