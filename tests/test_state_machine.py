"""A Hypothesis state machine drives a manager and checks API.md's invariants each step.

Rules talk to a Trio loop running in a helper thread under a MockClock that only
moves when a rule jumps it, so every deadline is exact and every step settles.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from session_helpers import start_inline

import trio_sessions as ts
from trio_sessions.testing import check_invariants

T = TypeVar("T")

MAX_SESSIONS = 3
SESSION_LIMIT = 60  # max_session_metadata_bytes
BUDGET = 100  # max_metadata_bytes


@attrs.define
class Held:
    """A live session of the model, and the switch that ends it."""

    release: trio.Event = attrs.Factory(trio.Event)
    fail: bool = False
    deadline: float = float("inf")
    session: ts.Session | None = None

    @property
    def handle(self) -> ts.Session:
        assert self.session is not None
        return self.session


async def held_work(held: Held) -> str:
    await held.release.wait()
    if held.fail:
        raise ValueError("asked to fail")
    return "ok"


class TrioLoop:
    """A Trio run in a helper thread, owning one manager, driven step by step.

    ``config`` is the manager's (this module's machine's by default); tasks
    a step starts to outlive it go in :attr:`nursery`.
    """

    def __init__(self, **config: Any) -> None:
        self.config = config or {
            "max_sessions": MAX_SESSIONS,
            "request_timeout": None,
            "max_session_metadata_bytes": SESSION_LIMIT,
            "max_metadata_bytes": BUDGET,
        }
        self.clock = trio.testing.MockClock()
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=trio.run, args=(self._main,), kwargs={"clock": self.clock}
        )
        self._thread.start()
        assert self._ready.wait(60), "the Trio loop did not start"

    async def _main(self) -> None:
        async with ts.open_session_manager(**self.config) as manager:
            self.manager = manager
            self.token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as self.nursery:
                self._ready.set()
                await self._stop.wait()
                await manager.shutdown(0)

    def call(self, afn: Callable[[], Awaitable[T]]) -> T:
        async def step() -> T:
            result = await afn()
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(step, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(60)
        assert not self._thread.is_alive()


class ManagerMachine(RuleBasedStateMachine):
    """Model of the expected counters, checked against statistics() after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = TrioLoop()
        self.manager = self.loop.manager
        self.live: dict[str, Held] = {}
        self.expected = {
            "created": 0,
            "succeeded": 0,
            "failed": 0,
            "timed_out": 0,
            "cancelled": 0,
        }
        self.rejections = {
            "capacity": 0,
            "key_capacity": 0,
            "shutting_down": 0,
            "metadata": 0,
        }
        self.peak = 0
        self.now = 0.0
        self.closing = False

    def teardown(self) -> None:
        self.loop.close()

    def _pick(self, index: int) -> Held:
        return self.live[sorted(self.live)[index % len(self.live)]]

    @rule(
        timeout=st.sampled_from([None, 1.0, 2.5]),
        size=st.sampled_from([None, 0, 20, 45, 80]),
        nowait=st.booleans(),
        inline=st.booleans(),
    )
    def start(
        self, timeout: float | None, size: int | None, nowait: bool, inline: bool
    ) -> None:
        """Start a session that runs until released, failed, cancelled or timed out.

        As a task of the manager, or inline: a block in a caller's own task.
        """
        metadata = None if size is None else {"p": "x" * size}
        nbytes = 0 if size is None else len('{"p":""}') + size
        held = Held()

        async def admit() -> ts.Session:
            if inline:
                return await start_inline(
                    self.manager,
                    held_work,
                    held,
                    metadata=metadata,
                    timeout=timeout,
                    nowait=nowait,
                )
            if nowait:
                return self.manager.start_session_nowait(
                    held_work, held, metadata=metadata, timeout=timeout
                )
            return await self.manager.start_session(
                held_work, held, metadata=metadata, timeout=timeout
            )

        async def attempt() -> ts.Session | ts.RejectedError:
            try:
                session = await admit()
            except ts.RejectedError as exc:
                return exc
            held.session = session
            held.deadline = float("inf") if timeout is None else self.now + timeout
            return session

        live_bytes = sum(h.handle.metadata_bytes for h in self.live.values())
        result = self.loop.call(attempt)
        if self.closing:
            expected_reason: str | None = "shutting_down"
        elif len(self.live) >= MAX_SESSIONS:
            expected_reason = "capacity"
        elif nbytes > SESSION_LIMIT or live_bytes + nbytes > BUDGET:
            expected_reason = "metadata"
        else:
            expected_reason = None
        if expected_reason is None:
            assert isinstance(result, ts.Session), result
            self.live[result.id] = held
            self.expected["created"] += 1
            self.peak = max(self.peak, len(self.live))
            assert result.metadata_bytes == nbytes
        else:
            assert isinstance(result, ts.RejectedError), result
            assert result.reason == expected_reason
            self.rejections[expected_reason] += 1

    @precondition(lambda self: bool(self.live))
    @rule(index=st.integers(0, 10), fail=st.booleans())
    def finish(self, index: int, fail: bool) -> None:
        """Let one live session return, or raise."""
        held = self._pick(index)
        held.fail = fail

        async def release() -> None:
            held.release.set()

        self.loop.call(release)
        del self.live[held.handle.id]
        self.expected["failed" if fail else "succeeded"] += 1
        assert held.handle.outcome is (ts.Outcome.ERROR if fail else ts.Outcome.SUCCESS)

    @precondition(lambda self: bool(self.live))
    @rule(index=st.integers(0, 10), twice=st.booleans())
    def cancel(self, index: int, twice: bool) -> None:
        """Cancel one live session (possibly twice: still counted once)."""
        held = self._pick(index)

        async def cancel() -> None:
            held.handle.cancel()
            if twice:
                held.handle.cancel()

        self.loop.call(cancel)
        del self.live[held.handle.id]
        self.expected["cancelled"] += 1
        assert held.handle.outcome is ts.Outcome.CANCELLED

    @rule(steps=st.integers(1, 4))
    def advance(self, steps: int) -> None:
        """Jump the clock; sessions whose deadline has passed time out, none other."""
        seconds = 0.5 * steps

        async def jump() -> None:
            self.loop.clock.jump(seconds)

        self.loop.call(jump)
        self.now += seconds
        for session_id, held in list(self.live.items()):
            if held.deadline <= self.now:
                del self.live[session_id]
                self.expected["timed_out"] += 1
                assert held.handle.outcome is ts.Outcome.TIMEOUT
                # The clock jumps, so the deadline is noticed at the jump's end.
                assert held.handle.completed_at == self.now

    @rule()
    def shutdown(self) -> None:
        """Shut down with no drain: every live session is cancelled and reported."""

        async def shut() -> ts.ShutdownReport:
            return await self.manager.shutdown(0)

        report = self.loop.call(shut)
        if not self.closing:
            assert report.initial_active == len(self.live)
            assert report.cancelled == len(self.live)
            assert report.completed == 0
            assert report.timeout_reached == bool(self.live)
            self.expected["cancelled"] += len(self.live)
            self.live.clear()
            self.closing = True

    @invariant()
    def statistics_match_the_model(self) -> None:
        """Every counter equals the model's, and API.md's invariants hold."""
        # API.md's invariants, checked in the loop's own thread.
        stats = trio.from_thread.run_sync(
            check_invariants, self.manager, trio_token=self.loop.token
        )
        completed = sum(v for k, v in self.expected.items() if k != "created")
        assert stats.created == self.expected["created"]
        assert stats.succeeded == self.expected["succeeded"]
        assert stats.failed == self.expected["failed"]
        assert stats.timed_out == self.expected["timed_out"]
        assert stats.cancelled == self.expected["cancelled"]
        assert stats.completed == completed
        assert stats.active == len(self.live)
        assert dict(stats.rejections) == self.rejections
        assert stats.rejected == sum(self.rejections.values())
        assert stats.peak_active == self.peak
        assert stats.waiting == 0
        assert stats.metadata_bytes == sum(
            h.handle.metadata_bytes for h in self.live.values()
        )
        assert stats.metadata_bytes <= BUDGET
        assert set(self.manager.sessions) == set(self.live)
        if completed:
            assert stats.success_rate == self.expected["succeeded"] / completed
        else:
            assert stats.success_rate is None


ManagerMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
TestManagerMachine = ManagerMachine.TestCase
