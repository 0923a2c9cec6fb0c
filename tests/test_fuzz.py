"""The manager against a model: whole random schedules, replayed step by step.

Schedules of start / finish / fail / cancel / advance-the-clock / shutdown steps
(``strategies.SCHEDULES``) are replayed in one ``trio.run`` under a ``MockClock``
with ``autojump_threshold=0``; every counter, session and timestamp is checked
against the model after every step.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from session_helpers import (
    compact_size,
    run_trio,
)
from strategies import (
    SCHEDULES,
)

import trio_sessions as ts
from trio_sessions.testing import check_invariants

MAX_SESSIONS = 3
MAX_WAITING = 2
WAIT_TIMEOUT = 1.75  # never a multiple of 0.5, so never ties with other events
SESSION_LIMIT = 60
BUDGET = 100


# -------------------------------------------------------------------------- schedules


@attrs.define(eq=False)
class Job:
    """One start step: what the model expects of it, and the real handle."""

    timeout: float | None
    meta_bytes: int
    release: trio.Event = attrs.Factory(trio.Event)
    fail: bool = False
    handle: ts.Session | None = None
    error: BaseException | None = None
    # The model's view.
    admitted_at: float | None = None
    deadline: float = math.inf
    outcome: ts.Outcome | None = None
    completed_at: float | None = None
    queued_until: float | None = None  # while waiting: when its wait times out


async def work(job: Job) -> str:
    await job.release.wait()
    if job.fail:
        raise ValueError("asked to fail")
    return "done"


@attrs.define
class Model:
    """What the manager must look like, advanced event by event in time order."""

    now: float = 0.0
    closing: bool = False
    jobs: list[Job] = attrs.Factory(list)
    queue: list[Job] = attrs.Factory(list)
    created: int = 0
    counts: dict[ts.Outcome, int] = attrs.Factory(lambda: dict.fromkeys(ts.Outcome, 0))
    rejections: dict[str, int] = attrs.Factory(
        lambda: {"capacity": 0, "key_capacity": 0, "shutting_down": 0, "metadata": 0}
    )
    peak_active: int = 0
    peak_metadata: int = 0
    waited: int = 0

    @property
    def live(self) -> list[Job]:
        return [j for j in self.jobs if j.admitted_at is not None and j.outcome is None]

    @property
    def metadata_bytes(self) -> int:
        return sum(job.meta_bytes for job in self.live)

    def admit(self, job: Job) -> None:
        job.admitted_at = self.now
        job.deadline = math.inf if job.timeout is None else self.now + job.timeout
        self.created += 1
        self.peak_active = max(self.peak_active, len(self.live))
        self.peak_metadata = max(self.peak_metadata, self.metadata_bytes)

    def complete(self, job: Job, outcome: ts.Outcome) -> None:
        job.outcome = outcome
        job.completed_at = self.now
        self.counts[outcome] += 1
        if self.queue and not self.closing:
            # The freed token goes to the first queued caller, in this instant.
            waiter = self.queue.pop(0)
            waiter.queued_until = None
            self.waited += 1
            self.admit(waiter)

    def run_until(self, until: float) -> None:
        """Let deadlines and queue timeouts fire, in time order, up to ``until``."""
        while True:
            due: list[tuple[float | None, int, Job]]
            due = [(j.deadline, 0, j) for j in self.live if j.deadline <= until]
            due += [(j.queued_until, 1, j) for j in self.queue]
            events = [(t, k, j) for t, k, j in due if t is not None and t <= until]
            if not events:
                break
            when = min(e[0] for e in events)
            self.now = when
            for _, kind, job in sorted(
                (e for e in events if e[0] == when), key=lambda e: e[1]
            ):
                if kind == 0:
                    self.complete(job, ts.Outcome.TIMEOUT)
                else:
                    self.queue.remove(job)
                    self.rejections["capacity"] += 1
        self.now = until


class Replay:
    """Replays a schedule against a real manager and the model, checking each step."""

    def __init__(self, manager: ts.SessionManager, nursery: trio.Nursery) -> None:
        self.manager = manager
        self.nursery = nursery
        self.model = Model()
        self.report: ts.ShutdownReport | None = None

    async def queued_caller(self, job: Job) -> None:
        try:
            job.handle = await self.manager.start_session(
                work, job, timeout=job.timeout
            )
        except ts.RejectedError as exc:
            job.error = exc

    async def start(self, timeout: float | None, padding: int, via: str) -> None:
        model = self.model
        metadata = {"p": "x" * padding}
        full = len(model.live) >= MAX_SESSIONS
        queue = via == "await" and full and not model.closing
        job = Job(timeout, 0 if queue else compact_size(metadata))
        model.jobs.append(job)
        if queue:
            if len(model.queue) >= MAX_WAITING:
                model.rejections["capacity"] += 1
                expected: type[Exception] | None = ts.CapacityError
            else:
                job.queued_until = model.now + WAIT_TIMEOUT
                model.queue.append(job)
                self.nursery.start_soon(self.queued_caller, job)
                return
        elif model.closing:
            model.rejections["shutting_down"] += 1
            expected = ts.ShuttingDownError
        elif full:
            model.rejections["capacity"] += 1
            expected = ts.CapacityError
        elif job.meta_bytes > SESSION_LIMIT or (
            model.metadata_bytes + job.meta_bytes > BUDGET
        ):
            model.rejections["metadata"] += 1
            expected = ts.MetadataError
        else:
            model.admit(job)
            expected = None
        start = self.manager.start_session_nowait
        try:
            if via == "nowait":
                job.handle = start(work, job, metadata=metadata, timeout=timeout)
            else:
                job.handle = await self.manager.start_session(
                    work, job, metadata=metadata, timeout=timeout
                )
        except ts.RejectedError as exc:
            job.error = exc
        if expected is None:
            assert job.error is None, job.error
        else:
            assert type(job.error) is expected

    def pick(self, index: int) -> Job | None:
        admitted = [job for job in self.model.jobs if job.handle is not None]
        return admitted[index % len(admitted)] if admitted else None

    async def end(self, index: int, how: str) -> None:
        job = self.pick(index)
        if job is None:
            return
        assert job.handle is not None
        if how == "cancel":
            job.handle.cancel()
        else:
            job.fail = how == "fail"
            job.release.set()
        if job.outcome is None:
            outcome = {
                "cancel": ts.Outcome.CANCELLED,
                "fail": ts.Outcome.ERROR,
                "finish": ts.Outcome.SUCCESS,
            }[how]
            self.model.complete(job, outcome)

    async def advance(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.model.run_until(self.model.now + seconds)

    async def shutdown(self, drain: float) -> None:
        model = self.model
        first = not model.closing
        started = model.now
        initial = len(model.live)
        if first:
            model.closing = True
            for job in model.queue:
                job.queued_until = None
            model.rejections["shutting_down"] += len(model.queue)
            model.queue.clear()
            model.run_until(started + drain)
            leftover = model.live
            for job in leftover:
                model.complete(job, ts.Outcome.CANCELLED)
            if not leftover:
                ends = [j.completed_at for j in model.jobs if j.completed_at]
                model.now = max([started, *[t for t in ends if t >= started]])
        report = await self.manager.shutdown(drain)
        if not first:
            assert report is self.report
            return
        self.report = report
        assert report == ts.ShutdownReport(
            initial_active=initial,
            completed=initial - len(leftover),
            cancelled=len(leftover),
            timeout_reached=bool(leftover),
            duration=model.now - started,
        )

    def check(self) -> None:
        model, manager = self.model, self.manager
        assert trio.current_time() == model.now
        stats = manager.statistics()
        live = model.live
        actual = {
            "created": stats.created,
            "completed": stats.completed,
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "timed_out": stats.timed_out,
            "cancelled": stats.cancelled,
            "active": stats.active,
            "waiting": stats.waiting,
            "rejections": dict(stats.rejections),
            "rejected": stats.rejected,
            "metadata_bytes": stats.metadata_bytes,
            "peak_active": stats.peak_active,
            "peak_metadata_bytes": stats.peak_metadata_bytes,
            "wait_times.count": stats.wait_times.count,
            "durations.count": stats.durations.count,
        }
        wanted = {
            "created": model.created,
            "completed": model.created - len(live),
            "succeeded": model.counts[ts.Outcome.SUCCESS],
            "failed": model.counts[ts.Outcome.ERROR],
            "timed_out": model.counts[ts.Outcome.TIMEOUT],
            "cancelled": model.counts[ts.Outcome.CANCELLED],
            "active": len(live),
            "waiting": len(model.queue),
            "rejections": model.rejections,
            "rejected": sum(model.rejections.values()),
            "metadata_bytes": model.metadata_bytes,
            "peak_active": model.peak_active,
            "peak_metadata_bytes": model.peak_metadata,
            "wait_times.count": model.waited,
            "durations.count": model.created - len(live),
        }
        check_invariants(manager)
        wrong = {k: (actual[k], wanted[k]) for k in wanted if actual[k] != wanted[k]}
        assert not wrong, f"(actual, model) at t={model.now}: {wrong}"
        assert stats.active <= stats.max_sessions
        assert set(manager.sessions) == {j.handle.id for j in live if j.handle}
        for job in model.jobs:
            if job.admitted_at is None:
                assert job.handle is None
                continue
            session = job.handle
            assert session is not None, "the model admitted a job the manager did not"
            assert (session.outcome, session.completed_at) == (
                job.outcome,
                job.completed_at,
            )
            assert session.started_at == job.admitted_at
            assert session.metadata_bytes == job.meta_bytes


async def replay(steps: list[tuple[Any, ...]]) -> None:
    async with (
        ts.open_session_manager(
            max_sessions=MAX_SESSIONS,
            max_waiting=MAX_WAITING,
            wait_timeout=WAIT_TIMEOUT,
            request_timeout=None,
            max_session_metadata_bytes=SESSION_LIMIT,
            max_metadata_bytes=BUDGET,
            shutdown_grace=1,
        ) as manager,
        trio.open_nursery() as nursery,
    ):
        player = Replay(manager, nursery)
        for step in steps:
            kind, *args = step
            if kind == "start":
                await player.start(*args)
            elif kind in ("finish", "fail", "cancel"):
                await player.end(args[0], kind)
            elif kind == "advance":
                await player.advance(args[0])
            else:
                await player.shutdown(args[0])
            await trio.testing.wait_all_tasks_blocked()
            player.check()
        await player.shutdown(0)
        await trio.testing.wait_all_tasks_blocked()
        player.check()
    assert manager.statistics().active == 0


@settings(max_examples=500)
@given(SCHEDULES)
def test_random_schedules_keep_every_invariant(steps: list[tuple[Any, ...]]) -> None:
    """Any schedule of start/finish/fail/cancel/time/shutdown matches the model."""
    run_trio(lambda: replay(steps))


def test_a_known_busy_schedule() -> None:
    """A hand-written schedule through queueing, timeouts and shutdown matches."""
    steps: list[tuple[Any, ...]] = [
        ("start", 2, 10, "nowait"),
        ("start", None, 50, "await"),
        ("start", 1, 0, "await"),
        ("start", None, 0, "await"),  # queues
        ("start", 0.5, 0, "await"),  # queues
        ("start", None, 0, "await"),  # queue full
        ("start", None, 0, "nowait"),  # full
        (
            "advance",
            2,
        ),  # t=1 a session times out, a waiter gets in; t=1.75 one waits out
        ("start", 3, 45, "nowait"),  # over the budget
        ("fail", 1),
        ("cancel", 0),
        ("shutdown", 2.5),
        ("start", None, 0, "nowait"),
    ]
    run_trio(lambda: replay(steps))
