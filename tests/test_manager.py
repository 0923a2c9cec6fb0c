"""Behaviour of SessionManager and Session as API.md states it, call by call."""

from __future__ import annotations

import gc
import json
import math
import weakref
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import check_invariants


async def sleep_then(seconds: float, value: Any = None) -> Any:
    await trio.sleep(seconds)
    return value


async def fail_after_sleep(seconds: float) -> None:
    await trio.sleep(seconds)
    raise ValueError("handler failed")


# ----------------------------------------------------------------- admission


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
        assert session.state is ts.SessionState.COMPLETED
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


async def test_start_session_is_a_checkpoint(autojump_clock: MockClock) -> None:
    """start_session checkpoints, like every async function of Trio's own API."""
    async with ts.open_session_manager() as manager:
        with trio.testing.assert_checkpoints():
            await manager.start_session(trio.lowlevel.checkpoint)


async def test_start_session_cancelled_before_admission_admits_nothing(
    autojump_clock: MockClock,
) -> None:
    """A caller cancelled on entry to start_session is not admitted."""
    async with ts.open_session_manager() as manager:
        with trio.CancelScope() as scope:
            scope.cancel()
            await manager.start_session(trio.lowlevel.checkpoint)
        assert scope.cancelled_caught
        assert manager.statistics().created == 0


async def test_start_session_nowait_never_yields(autojump_clock: MockClock) -> None:
    """start_session_nowait is synchronous: it admits or raises without a checkpoint."""
    release = trio.Event()
    async with ts.open_session_manager(max_sessions=1, max_waiting=5) as manager:
        with trio.testing.assert_no_checkpoints():
            manager.start_session_nowait(release.wait)
            with pytest.raises(ts.CapacityError):
                manager.start_session_nowait(release.wait)
        release.set()
    assert manager.statistics().rejections["capacity"] == 1


@pytest.mark.parametrize("fn", [None, 42, "handler"])
async def test_non_callable_is_a_type_error(fn: Any, autojump_clock: MockClock) -> None:
    """A non-callable fn raises TypeError and nothing is admitted or counted."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(TypeError, match="async function"):
            await manager.start_session(fn)
        with pytest.raises(TypeError, match="async function"):
            manager.start_session_nowait(fn)
        stats = check_invariants(manager)
    assert (stats.created, stats.rejected, stats.active) == (0, 0, 0)


async def test_synchronous_function_is_a_type_error(autojump_clock: MockClock) -> None:
    """A function that returns no coroutine raises TypeError and leaves no trace."""

    def sync_handler() -> int:
        return 1

    async with ts.open_session_manager(max_sessions=1) as manager:
        with pytest.raises(TypeError, match="returned int, not a coroutine"):
            await manager.start_session(sync_handler)
        with pytest.raises(TypeError, match=r"not fn\(\*args\)"):
            manager.start_session_nowait(sleep_then(1))  # type: ignore[arg-type]
        stats = check_invariants(manager)
        assert (stats.created, stats.rejected) == (0, 0)
        # The slot was given back: the single slot is still free.
        await manager.run(trio.lowlevel.checkpoint)


async def test_bad_timeout_and_name_are_refused(autojump_clock: MockClock) -> None:
    """Invalid per-call timeout or name raise ValueError/TypeError naming them."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ValueError, match="timeout"):
            await manager.start_session(trio.lowlevel.checkpoint, timeout=-1)
        with pytest.raises(ValueError, match="timeout"):
            await manager.start_session(trio.lowlevel.checkpoint, timeout=math.nan)
        with pytest.raises(TypeError, match="timeout"):
            await manager.start_session(trio.lowlevel.checkpoint, timeout="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name"):
            await manager.start_session(trio.lowlevel.checkpoint, name=3)  # type: ignore[arg-type]
        assert check_invariants(manager).created == 0


# ------------------------------------------------------------------ waiting


async def test_rejects_at_once_without_waiting(autojump_clock: MockClock) -> None:
    """With max_waiting=0 a full manager refuses immediately, at the same instant."""
    release = trio.Event()
    async with ts.open_session_manager(max_sessions=1) as manager:
        await manager.start_session(release.wait)
        with pytest.raises(ts.CapacityError, match="Maximum concurrent sessions"):
            await manager.start_session(release.wait)
        assert trio.current_time() == 0
        release.set()


async def test_waiters_are_admitted_in_fifo_order(autojump_clock: MockClock) -> None:
    """Queued callers are admitted in arrival order as slots free up."""
    admitted: list[int] = []

    async def caller(manager: ts.SessionManager, i: int) -> None:
        await manager.start_session(sleep_then, 1)
        admitted.append(i)

    async with ts.open_session_manager(max_sessions=1, max_waiting=3) as manager:
        await manager.start_session(sleep_then, 1)
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(caller, manager, i)
                await trio.sleep(0.1)  # separate arrivals in time
            assert manager.statistics().waiting == 3
        stats = manager.statistics()
    assert admitted == [0, 1, 2]
    assert trio.current_time() == pytest.approx(4)
    assert stats.wait_times.count == 3
    assert stats.wait_times.max == pytest.approx(
        2.8
    )  # third: queued at 0.2, admitted at 3


async def test_queue_overflow_and_wait_timeout_are_capacity_errors(
    autojump_clock: MockClock,
) -> None:
    """Waiters beyond max_waiting, and waits that time out, get CapacityError."""
    release = trio.Event()
    outcomes: list[tuple[str, float]] = []

    async def caller(manager: ts.SessionManager) -> None:
        try:
            await manager.start_session(release.wait)
        except ts.CapacityError:
            outcomes.append(("rejected", trio.current_time()))

    async with ts.open_session_manager(
        max_sessions=1, max_waiting=2, wait_timeout=3
    ) as manager:
        manager.start_session_nowait(release.wait)
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(caller, manager)
        stats = check_invariants(manager)
        release.set()
    # The third was refused at once; the two queued ones timed out at 3 s.
    assert outcomes == [("rejected", 0), ("rejected", 3), ("rejected", 3)]
    assert (stats.waiting, stats.rejections["capacity"], stats.created) == (0, 3, 1)


async def test_nowait_ignores_max_waiting(autojump_clock: MockClock) -> None:
    """start_session_nowait refuses when full even though the queue has room."""
    release = trio.Event()
    async with ts.open_session_manager(max_sessions=1, max_waiting=10) as manager:
        manager.start_session_nowait(release.wait)
        with pytest.raises(ts.CapacityError):
            manager.start_session_nowait(release.wait)
        release.set()


async def test_shutdown_rejects_waiters(autojump_clock: MockClock) -> None:
    """Callers queued for a slot get ShuttingDownError when shutdown starts."""
    errors: list[BaseException] = []

    async def caller(manager: ts.SessionManager) -> None:
        try:
            await manager.start_session(sleep_then, 1)
        except ts.ShuttingDownError as exc:
            errors.append(exc)

    async with ts.open_session_manager(max_sessions=1, max_waiting=5) as manager:
        manager.start_session_nowait(sleep_then, 2)
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(caller, manager)
            await trio.testing.wait_all_tasks_blocked()
            assert manager.statistics().waiting == 3
            report = await manager.shutdown()
    stats = check_invariants(manager)
    assert len(errors) == 3
    assert (stats.rejections["shutting_down"], stats.waiting, stats.created) == (
        3,
        0,
        1,
    )
    assert report.initial_active == 1
    assert report.duration == 2


async def test_cancelled_waiter_leaves_the_queue(autojump_clock: MockClock) -> None:
    """A queued caller that is cancelled leaves the queue without taking a slot."""
    release = trio.Event()
    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        manager.start_session_nowait(release.wait)
        with trio.move_on_after(1):
            await manager.start_session(release.wait)
        stats = check_invariants(manager)
        assert (stats.waiting, stats.created, stats.rejected) == (0, 1, 0)
        release.set()
        await manager.run(trio.lowlevel.checkpoint)


async def test_full_queue_refuses_before_reading_metadata(
    autojump_clock: MockClock,
) -> None:
    """With slots and queue full, even oversize metadata is a capacity refusal."""
    release = trio.Event()
    async with ts.open_session_manager(
        max_sessions=1, max_waiting=1, max_session_metadata_bytes=10
    ) as manager:
        manager.start_session_nowait(release.wait)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.run, release.wait)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ts.CapacityError):
                await manager.start_session(release.wait, metadata={"x": "y" * 20})
            stats = check_invariants(manager)
            assert stats.rejections == {
                "capacity": 1,
                "shutting_down": 0,
                "metadata": 0,
            }
            release.set()


# ------------------------------------------------------- deadlines and outcomes


async def test_deadline_times_out_exactly(autojump_clock: MockClock) -> None:
    """A session times out exactly at its deadline; wait raises SessionTimeout."""
    async with ts.open_session_manager(request_timeout=2) as manager:
        session = await manager.start_session(sleep_then, 10)
        with pytest.raises(ts.SessionTimeout) as info:
            await session.wait()
        assert trio.current_time() == 2
    assert isinstance(info.value, trio.TooSlowError)
    assert session.outcome is ts.Outcome.TIMEOUT
    stats = manager.statistics()
    assert (stats.timed_out, stats.failed) == (1, 0)


async def test_per_call_timeout_overrides_and_none_disables(
    autojump_clock: MockClock,
) -> None:
    """timeout= overrides the default; None means no deadline."""
    async with ts.open_session_manager(request_timeout=1) as manager:
        short = await manager.start_session(sleep_then, 10, timeout=0.5)
        unbounded = await manager.start_session(sleep_then, 100, "ok", timeout=None)
        with pytest.raises(ts.SessionTimeout):
            await short.wait()
        assert trio.current_time() == 0.5
        assert await unbounded.wait() == "ok"
        assert trio.current_time() == 100


async def test_deadline_counts_from_start_of_run(autojump_clock: MockClock) -> None:
    """The deadline runs from the start of the run, not from admission or queueing."""
    async with ts.open_session_manager(
        max_sessions=1, max_waiting=1, request_timeout=2
    ) as manager:
        manager.start_session_nowait(sleep_then, 1)
        queued = await manager.start_session(sleep_then, 1.5, "ok")
        assert await queued.wait() == "ok"
        assert queued.started_at == 1
        assert trio.current_time() == 2.5


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


async def test_swallowed_cancellation_still_counts_as_timeout(
    autojump_clock: MockClock,
) -> None:
    """A function that swallows its deadline's Cancelled is still a TIMEOUT."""

    async def stubborn() -> str:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            return "ignored"
        return "slept"

    async with ts.open_session_manager(request_timeout=1) as manager:
        session = await manager.start_session(stubborn)
        with pytest.raises(ts.SessionTimeout):
            await session.wait()
    assert manager.statistics().timed_out == 1


async def test_timed_out_work_stops_and_frees_its_slot(
    autojump_clock: MockClock,
) -> None:
    """A timed-out session stops running and its slot is free at that instant."""
    steps: list[float] = []

    async def ticking() -> None:
        while True:
            steps.append(trio.current_time())
            await trio.sleep(1)

    async with ts.open_session_manager(max_sessions=1, request_timeout=2.5) as manager:
        session = await manager.start_session(ticking)
        with pytest.raises(ts.SessionTimeout):
            await session.wait()
        assert manager.statistics().active == 0
        await manager.run(trio.lowlevel.checkpoint)
        await trio.sleep(5)
    assert steps == [0, 1, 2]


async def test_completed_sessions_are_not_retained(autojump_clock: MockClock) -> None:
    """The manager keeps no reference to completed sessions."""
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1)
        await session.wait()
        ref = weakref.ref(session)
        del session
        gc.collect()
        assert ref() is None


# ------------------------------------------------------------------ metadata


async def test_metadata_bytes_match_compact_utf8_json(
    autojump_clock: MockClock,
) -> None:
    """metadata_bytes is the compact UTF-8 JSON size, non-ASCII included."""
    metadata = {"client": "zoë", "tags": ["a", 1, None, True], "n": 1.5}
    expected = len(
        json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode()
    )
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1, metadata=metadata)
        none_session = await manager.start_session(sleep_then, 1)
        assert session.metadata_bytes == expected
        assert none_session.metadata_bytes == 0
        assert dict(none_session.metadata) == {}
        assert manager.statistics().metadata_bytes == expected
    assert manager.statistics().metadata_bytes == 0


async def test_metadata_is_copied_at_admission(autojump_clock: MockClock) -> None:
    """Mutating the caller's metadata after admission changes nothing."""
    metadata: dict[str, Any] = {"items": [1, 2]}
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1, metadata=metadata)
        before = session.metadata_bytes
        metadata["items"].append(3)
        metadata["more"] = "x" * 100
        assert session.metadata == {"items": [1, 2]}
        assert manager.statistics().metadata_bytes == before
        with pytest.raises(TypeError):
            session.metadata["x"] = 1  # type: ignore[index]
    assert manager.statistics().metadata_bytes == 0


async def test_flat_metadata_is_copied_at_admission(autojump_clock: MockClock) -> None:
    """Flat metadata (str keys, scalar values) is copied too, not kept by reference."""
    metadata: dict[str, Any] = {"path": "/a", "n": 1}
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1, metadata=metadata)
        metadata["path"] = "/changed"
        metadata["more"] = "x"
        assert session.metadata == {"path": "/a", "n": 1}
        assert session.metadata_bytes == len('{"path":"/a","n":1}')
        with pytest.raises(TypeError):
            session.metadata["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        (["not", "a", "mapping"], "must be a mapping"),
        ({"obj": object()}, "not JSON-encodable"),
        ({"nan": math.nan}, "not JSON-encodable"),
        ({(1, 2): "tuple key"}, "not JSON-encodable"),
        ({"big": "x" * 20_000}, "over max_session_metadata_bytes=10240"),
    ],
)
async def test_bad_metadata_is_rejected_and_counted(
    metadata: Any, match: str, autojump_clock: MockClock
) -> None:
    """Non-mapping, non-JSON or oversize metadata raises MetadataError, counted."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.MetadataError, match=match) as info:
            await manager.start_session(sleep_then, 1, metadata=metadata)
        stats = check_invariants(manager)
    assert info.value.reason == "metadata"
    assert (stats.rejections["metadata"], stats.created) == (1, 0)


async def test_cyclic_metadata_is_rejected(autojump_clock: MockClock) -> None:
    """Metadata containing a reference cycle raises MetadataError."""
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.MetadataError, match="not JSON-encodable"):
            manager.start_session_nowait(sleep_then, 1, metadata=cyclic)


async def test_total_metadata_budget(autojump_clock: MockClock) -> None:
    """Admission beyond max_metadata_bytes is refused until bytes are released."""
    metadata = {"k": "x" * 10}  # {"k":"xxxxxxxxxx"} is 18 bytes
    async with ts.open_session_manager(max_metadata_bytes=40) as manager:
        first = manager.start_session_nowait(sleep_then, 1, metadata=metadata)
        manager.start_session_nowait(sleep_then, 2, metadata=metadata)
        with pytest.raises(ts.MetadataError, match="max_metadata_bytes=40"):
            manager.start_session_nowait(sleep_then, 1, metadata=metadata)
        assert check_invariants(manager).metadata_bytes == 36
        await first.wait()
        manager.start_session_nowait(sleep_then, 1, metadata=metadata)
        stats = check_invariants(manager)
    assert (stats.rejections["metadata"], stats.created, stats.metadata_bytes) == (
        1,
        3,
        36,
    )
    assert stats.peak_metadata_bytes == 36


# ------------------------------------------------------------------ shutdown


async def test_shutdown_drains_then_cancels(autojump_clock: MockClock) -> None:
    """Shutdown lets sessions finish within its timeout and cancels the rest."""
    async with ts.open_session_manager(shutdown_timeout=3) as manager:
        quick = await manager.start_session(sleep_then, 1)
        slow = await manager.start_session(sleep_then, 10)
        report = await manager.shutdown()
        assert trio.current_time() == 3
    assert report == ts.ShutdownReport(
        initial_active=2, completed=1, cancelled=1, timeout_reached=True, duration=3
    )
    assert quick.outcome is ts.Outcome.SUCCESS
    assert slow.outcome is ts.Outcome.CANCELLED
    with pytest.raises(ts.SessionCancelled, match="shutdown"):
        await slow.wait()


async def test_shutdown_with_nothing_running(autojump_clock: MockClock) -> None:
    """Shutting down an idle manager reports zeros and no timeout."""
    async with ts.open_session_manager() as manager:
        report = await manager.shutdown(timeout=10)
    assert report == ts.ShutdownReport(0, 0, 0, False, 0.0)
    assert trio.current_time() == 0


async def test_shutdown_is_idempotent_and_concurrent_calls_agree(
    autojump_clock: MockClock,
) -> None:
    """Concurrent and later shutdown calls all return the first call's report."""
    reports: list[ts.ShutdownReport] = []

    async def shut(manager: ts.SessionManager, timeout: float) -> None:
        reports.append(await manager.shutdown(timeout))

    async with ts.open_session_manager() as manager:
        manager.start_session_nowait(sleep_then, 10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shut, manager, 2)
            await trio.sleep(0.5)
            nursery.start_soon(shut, manager, 100)
        reports.append(await manager.shutdown(0))
    assert len(reports) == 3
    assert all(report is reports[0] for report in reports)
    assert reports[0].duration == 2
    assert reports[0].timeout_reached


async def test_rejects_new_sessions_while_draining(autojump_clock: MockClock) -> None:
    """During the drain new sessions are refused with ShuttingDownError, counted."""
    async with ts.open_session_manager() as manager:
        manager.start_session_nowait(sleep_then, 2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.shutdown)
            await trio.sleep(1)
            assert manager.closing
            with pytest.raises(ts.ShuttingDownError, match="shutting down"):
                await manager.start_session(sleep_then, 1)
            with pytest.raises(ts.ShuttingDownError):
                manager.start_session_nowait(sleep_then, 1)
    stats = manager.statistics()
    assert (stats.rejections["shutting_down"], stats.succeeded) == (2, 1)


async def test_leaving_the_block_drains_with_configured_timeout(
    autojump_clock: MockClock,
) -> None:
    """Leaving the block shuts down with config.shutdown_timeout."""
    async with ts.open_session_manager(shutdown_timeout=4) as manager:
        session = await manager.start_session(sleep_then, 100)
    assert trio.current_time() == 4
    assert session.outcome is ts.Outcome.CANCELLED


async def test_outside_cancellation_cancels_sessions_at_once(
    autojump_clock: MockClock,
) -> None:
    """Cancelling the code around the manager cancels sessions without a drain."""
    with trio.move_on_after(1):
        async with ts.open_session_manager(shutdown_timeout=50) as manager:
            session = await manager.start_session(sleep_then, 100)
            await trio.sleep_forever()
    assert trio.current_time() == 1
    assert session.outcome is ts.Outcome.CANCELLED
    stats = manager.statistics()
    assert (stats.cancelled, stats.active) == (1, 0)


async def test_body_exception_cancels_sessions_and_is_not_wrapped(
    autojump_clock: MockClock,
) -> None:
    """An exception in the block cancels the sessions at once and propagates bare."""
    with pytest.raises(LookupError, match="body failed"):
        async with ts.open_session_manager(shutdown_timeout=50) as manager:
            session = await manager.start_session(sleep_then, 100)
            await trio.sleep(1)
            raise LookupError("body failed")
    assert trio.current_time() == 1
    assert session.outcome is ts.Outcome.CANCELLED


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
async def test_base_exception_in_session_propagates(
    exc_type: type[BaseException], autojump_clock: MockClock
) -> None:
    """KeyboardInterrupt/SystemExit in a session cancel the others, propagate bare."""

    async def interrupt() -> None:
        await trio.sleep(1)
        raise exc_type

    with pytest.raises(exc_type):
        async with ts.open_session_manager() as manager:
            other = await manager.start_session(sleep_then, 100)
            interrupted = await manager.start_session(interrupt)
            await trio.sleep(50)
    assert trio.current_time() == 1
    assert other.outcome is ts.Outcome.CANCELLED
    # Only Exceptions are ERRORs: the interrupted session counts as cancelled.
    assert interrupted.outcome is ts.Outcome.CANCELLED
    assert interrupted.cancel_reason == f"interrupted by {exc_type.__name__}"
    stats = manager.statistics()
    assert (stats.active, stats.cancelled, stats.failed) == (0, 2, 0)


async def test_use_after_exit_is_a_clear_error(autojump_clock: MockClock) -> None:
    """A manager used after its block exited raises ShuttingDownError saying so."""
    async with ts.open_session_manager() as manager:
        pass
    with pytest.raises(ts.ShuttingDownError, match="block has exited"):
        await manager.start_session(trio.lowlevel.checkpoint)
    with pytest.raises(ts.ShuttingDownError, match="block has exited"):
        manager.start_session_nowait(trio.lowlevel.checkpoint)
    report = await manager.shutdown()
    assert report.initial_active == 0


async def test_report_adds_up_when_sessions_cancel_themselves_during_drain(
    autojump_clock: MockClock,
) -> None:
    """completed + cancelled == initial_active whatever happens during the drain."""
    async with ts.open_session_manager(shutdown_timeout=5) as manager:
        first = manager.start_session_nowait(sleep_then, 100)
        manager.start_session_nowait(sleep_then, 2, timeout=1)
        manager.start_session_nowait(fail_after_sleep, 3)
        manager.start_session_nowait(sleep_then, 100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(manager.shutdown)
            await trio.sleep(0.5)
            first.cancel()
        report = await manager.shutdown()
    assert report.initial_active == 4
    assert (report.completed, report.cancelled) == (3, 1)
    assert report.completed + report.cancelled == report.initial_active
    stats = check_invariants(manager)
    assert (stats.cancelled, stats.timed_out, stats.failed) == (2, 1, 1)


# ------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("max_sessions", 0, ValueError),
        ("max_sessions", 1.5, TypeError),
        ("max_sessions", True, TypeError),
        ("request_timeout", -1, ValueError),
        ("request_timeout", "30", TypeError),
        ("shutdown_timeout", None, TypeError),
        ("shutdown_timeout", math.nan, ValueError),
        ("max_waiting", -1, ValueError),
        ("wait_timeout", -0.1, ValueError),
        ("max_session_metadata_bytes", -1, ValueError),
        ("max_metadata_bytes", 1.0, TypeError),
        ("shutdown_grace", -1, ValueError),
    ],
)
async def test_invalid_config_names_the_field(
    field: str, value: Any, error: type[Exception], autojump_clock: MockClock
) -> None:
    """Invalid configuration raises TypeError/ValueError naming the field."""
    with pytest.raises(error, match=field):
        ts.SessionConfig(**{field: value})
    with pytest.raises(error, match=field):
        async with ts.open_session_manager(**{field: value}):
            pass  # pragma: no cover


async def test_config_and_keyword_overrides(autojump_clock: MockClock) -> None:
    """open_session_manager takes a config, keywords, or both (keywords win)."""
    base = ts.SessionConfig(max_sessions=5, request_timeout=None)
    async with ts.open_session_manager(base, max_sessions=7) as manager:
        assert manager.config == ts.SessionConfig(max_sessions=7, request_timeout=None)
        assert manager.statistics().max_sessions == 7
    async with ts.open_session_manager(config=base) as manager:
        assert manager.config is base
    with pytest.raises(TypeError, match="max_session"):
        async with ts.open_session_manager(max_session=3):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="SessionConfig"):
        async with ts.open_session_manager({"max_sessions": 3}):  # type: ignore[arg-type]
            pass  # pragma: no cover


async def test_statistics_snapshot_is_frozen_and_complete(
    autojump_clock: MockClock,
) -> None:
    """statistics() is frozen, has every reason key, and None rates at first."""
    async with ts.open_session_manager(max_sessions=3) as manager:
        stats = manager.statistics()
    assert stats.success_rate is None
    assert dict(stats.rejections) == {"capacity": 0, "shutting_down": 0, "metadata": 0}
    assert stats.durations == ts.LatencySummary(0, None, None, None, None, None, None)
    with pytest.raises(AttributeError):
        stats.active = 1  # type: ignore[misc]


async def test_metadata_keys_that_collide_as_json_are_rejected(
    autojump_clock: MockClock,
) -> None:
    """Keys 1 and "1" would count bytes for two keys but keep one: refused."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.MetadataError, match="collide"):
            manager.start_session_nowait(sleep_then, 1, metadata={"1": "x", 1: "y"})
        stats = check_invariants(manager)
    assert (stats.rejections["metadata"], stats.created) == (1, 0)


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


# ------------------------------------------------- queued admission, outside cancel


async def test_created_at_of_a_queued_session_is_its_admission(
    autojump_clock: MockClock,
) -> None:
    """A session that queued was created when it was admitted, not when it queued."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=1) as manager:
        await manager.start_session(trio.sleep, 2)
        session = await manager.start_session(trio.sleep, 1)
        assert session.created_at == 2 == trio.current_time()
        assert manager.statistics().wait_times.max == 2


async def with_own_nursery(seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, seconds)
        nursery.start_soon(trio.sleep, seconds)


async def test_outside_cancel_of_a_session_with_its_own_nursery(
    autojump_clock: MockClock,
) -> None:
    """A group of Cancelled is an outside cancellation, not an interruption."""
    sessions: list[ts.Session] = []
    with trio.move_on_after(1):
        async with ts.open_session_manager() as manager:
            sessions.append(await manager.start_session(with_own_nursery, 5))
            sessions.append(await manager.start_session(trio.sleep, 5))
            await trio.sleep(5)
    reasons = {session.cancel_reason for session in sessions}
    assert reasons == {"cancelled because the code around the manager was cancelled"}
    assert [session.outcome for session in sessions] == [ts.Outcome.CANCELLED] * 2
    stats = check_invariants(manager)
    assert (stats.cancelled, stats.active) == (2, 0)


async def test_session_nursery_cancelled_by_its_own_deadline_times_out(
    autojump_clock: MockClock,
) -> None:
    """A session's own deadline through its nursery is still a TIMEOUT."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.SessionTimeout):
            await manager.run(with_own_nursery, 5, timeout=1)
    assert check_invariants(manager).timed_out == 1
