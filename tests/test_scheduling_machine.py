"""A state machine for who gets a slot: keys, priorities, the reserve, resize.

Callers arrive on every admission route with a key and a priority, queue,
give up, finish, and the limit moves under them; after every step the model
says exactly which callers run and which wait, and the manager must agree:
no key over its limit, the reserve kept for high priority, queued callers
admitted by priority and then in arrival order, and every counter adding up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_state_machine import TrioLoop

import trio_sessions as ts
from trio_sessions.testing import check_invariants

KEY_LIMITS = {"b": 1}
PER_KEY = 2
SHARE = 0.34
HIGH = 1  # reserved_priority
MAX_WAITING = 3
KEYS = (None, "a", "b", "c")
ROUTES = ("nowait", "start", "inline", "inline_nowait")


@attrs.define(eq=False)
class Caller:
    """One caller of the model: what it asked for, and how far it got."""

    key: str | None
    priority: int
    order: int
    release: trio.Event = attrs.Factory(trio.Event)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    session: ts.Session[Any] | None = None
    refused: ts.RejectedError | None = None
    fail: bool = False


async def held_work(caller: Caller) -> None:
    await caller.release.wait()
    if caller.fail:
        raise ValueError("asked to fail")


class SchedulingMachine(RuleBasedStateMachine):
    """The model: the callers running and those queued, and the limit."""

    #: Makes the manager's controller: None for a limit only resize() moves.
    controller: Callable[[], ts.LimitController] | None = None

    def __init__(self) -> None:
        super().__init__()
        options: dict[str, Any] = {}
        if self.controller is not None:
            options["controller"] = self.controller()
        self.loop = TrioLoop(
            max_sessions=3,
            request_timeout=None,
            max_waiting=MAX_WAITING,
            max_sessions_per_key=PER_KEY,
            key_limits=KEY_LIMITS,
            reserved_share=SHARE,
            reserved_priority=HIGH,
            **options,
        )
        self.manager = self.loop.manager
        self.limit = self.manager.max_sessions
        self.failed = 0
        self.limit_changes = 0
        self.running: list[Caller] = []
        self.queued: list[Caller] = []  # in the order they are served
        self.arrivals = 0
        self.rejections = {"capacity": 0, "key_capacity": 0}
        self.admitted_by_key: dict[str, int] = {}
        self.refused_by_key: dict[str, int] = {}
        self.completed = 0

    def teardown(self) -> None:
        self.loop.close()

    # ------------------------------------------------------------------ model

    def blocker(self, caller: Caller) -> str | None:
        """Why the model says ``caller`` may not run now, if so."""
        free = self.limit - len(self.running)
        if free <= 0:
            return "capacity"
        reserved = min(self.limit - 1, math.ceil(self.limit * SHARE))
        if caller.priority < HIGH and free <= reserved:
            return "capacity"
        if caller.key is not None:
            limit = KEY_LIMITS.get(caller.key, PER_KEY)
            if sum(c.key == caller.key for c in self.running) >= limit:
                return "key_capacity"
        return None

    def admit(self, caller: Caller) -> None:
        self.running.append(caller)
        if caller.key is not None:
            self.admitted_by_key[caller.key] = (
                self.admitted_by_key.get(caller.key, 0) + 1
            )

    def refuse(self, caller: Caller, reason: str) -> None:
        self.rejections[reason] += 1
        if reason == "key_capacity":
            assert caller.key is not None
            self.refused_by_key[caller.key] = self.refused_by_key.get(caller.key, 0) + 1

    def hand_over(self) -> None:
        """Serve the queue: by priority, then arrival, skipping full keys."""
        for caller in list(self.queued):
            why = self.blocker(caller)
            if why == "key_capacity":
                continue
            if why is not None:
                return
            self.queued.remove(caller)
            self.admit(caller)

    # ------------------------------------------------------------------ rules

    @rule(
        key=st.sampled_from(KEYS),
        priority=st.sampled_from([0, 0, 1, 2]),
        route=st.sampled_from(ROUTES),
    )
    def arrive(self, key: str | None, priority: int, route: str) -> None:
        """A caller asks on ``route``; the model says where it ends up."""
        manager = self.manager
        caller = Caller(key, priority, self.arrivals)
        self.arrivals += 1

        async def inline(wait: bool) -> None:
            block = (manager.session if wait else manager.session_nowait)(
                key=key, priority=priority, timeout=None
            )
            try:
                async with block as session:
                    caller.session = session
                    await held_work(caller)
            except ts.RejectedError as exc:
                caller.refused = exc
            except ts.SessionCancelled:
                pass  # the loop's shutdown, at teardown
            except ValueError:
                assert caller.fail  # the block passes the body's error on

        async def start() -> None:
            with caller.scope:
                try:
                    caller.session = await manager.start_session(
                        held_work, caller, key=key, priority=priority, timeout=None
                    )
                except ts.RejectedError as exc:
                    caller.refused = exc

        async def step() -> None:
            if route == "nowait":
                try:
                    caller.session = manager.start_session_nowait(
                        held_work, caller, key=key, priority=priority, timeout=None
                    )
                except ts.RejectedError as exc:
                    caller.refused = exc
            elif route == "start":
                self.loop.nursery.start_soon(start)
            else:

                async def in_scope() -> None:
                    with caller.scope:
                        await inline(route == "inline")

                self.loop.nursery.start_soon(in_scope)

        self.loop.call(step)
        why = self.blocker(caller)
        may_wait = route in ("start", "inline")
        if why is None:
            self.admit(caller)
            assert caller.session is not None, caller.refused
        elif may_wait and len(self.queued) < MAX_WAITING:
            self.queued.append(caller)
            self.queued.sort(key=lambda c: (-c.priority, c.order))
            assert (caller.session, caller.refused) == (None, None)
        else:
            self.refuse(caller, why)
            assert isinstance(caller.refused, ts.CapacityError), caller.refused
            assert caller.refused.reason == why
            assert caller.refused.retry_after is not None
            assert caller.refused.retry_after >= 0

    @precondition(lambda self: bool(self.running))
    @rule(index=st.integers(0, 10), fail=st.booleans())
    def finish(self, index: int, fail: bool) -> None:
        """A running caller's work returns or raises; its slot goes to the queue.

        With a controller, the limit it chose is read back: the model cannot
        know it, but it must be within the floor and ceiling, and the queue
        is served under it in the same step.
        """
        caller = self.running[index % len(self.running)]
        caller.fail = fail

        async def release() -> None:
            caller.release.set()

        self.loop.call(release)
        self.running.remove(caller)
        self.completed += 1
        self.failed += fail
        controller = self.manager.controller
        if controller is not None:
            old, self.limit = self.limit, self.manager.max_sessions
            assert controller.min_limit <= self.limit <= controller.max_limit
            self.limit_changes += self.limit != old
        self.hand_over()

    @rule(seconds=st.sampled_from([0.01, 0.5, 3]))
    def advance(self, seconds: float) -> None:
        """Time passes: the sessions that finish next have run longer."""

        async def jump() -> None:
            self.loop.clock.jump(seconds)

        self.loop.call(jump)

    @precondition(lambda self: bool(self.queued))
    @rule(index=st.integers(0, 10))
    def give_up(self, index: int) -> None:
        """A queued caller is cancelled: it leaves the queue holding nothing."""
        caller = self.queued[index % len(self.queued)]

        async def cancel() -> None:
            caller.scope.cancel()

        self.loop.call(cancel)
        self.queued.remove(caller)
        assert (caller.session, caller.refused) == (None, None)

    @precondition(lambda self: self.controller is None)
    @rule(limit=st.integers(1, 5))
    def resize(self, limit: int) -> None:
        """The limit moves: up serves the queue at once, down cancels nothing."""

        async def resize() -> None:
            self.manager.resize(limit)

        self.loop.call(resize)
        if limit != self.limit:
            self.limit_changes += 1
        self.limit = limit
        self.hand_over()

    # ------------------------------------------------------------- invariant

    @invariant()
    def manager_agrees_with_the_model(self) -> None:
        """The same callers run and wait; keys, limit and counters match."""
        stats = trio.from_thread.run_sync(
            check_invariants, self.manager, trio_token=self.loop.token
        )
        for caller in self.running:
            assert caller.session is not None, caller
            assert caller.session.id in self.manager.sessions
        for caller in self.queued:
            assert (caller.session, caller.refused) == (None, None)
        assert stats.active == len(self.running)
        assert stats.waiting == len(self.queued)
        assert stats.max_sessions == self.limit
        assert stats.limit_changes == self.limit_changes
        assert stats.completed == self.completed
        assert stats.failed == self.failed
        assert stats.rejections["capacity"] == self.rejections["capacity"]
        assert stats.rejections["key_capacity"] == self.rejections["key_capacity"]
        for key in ("a", "b", "c"):
            active = sum(c.key == key for c in self.running)
            assert active <= KEY_LIMITS.get(key, PER_KEY)
            seen = key in self.admitted_by_key or key in self.refused_by_key
            if seen:
                assert stats.keys[key] == ts.KeyStatistics(
                    active,
                    self.admitted_by_key.get(key, 0),
                    self.refused_by_key.get(key, 0),
                )
            else:
                assert key not in stats.keys


class AIMDMachine(SchedulingMachine):
    """The same, with the limit set by an AIMD controller (errors are losses)."""

    controller = staticmethod(
        lambda: ts.AIMDController(
            initial_limit=3, min_limit=1, max_limit=5, errors_are_losses=True
        )
    )


class Gradient2Machine(SchedulingMachine):
    """The same, with the limit set by a Gradient2 controller."""

    controller = staticmethod(
        lambda: ts.Gradient2Controller(
            initial_limit=3, min_limit=1, max_limit=5, min_window=1
        )
    )


class VegasMachine(SchedulingMachine):
    """The same, with the limit set by a Vegas controller."""

    controller = staticmethod(
        lambda: ts.VegasController(
            initial_limit=3, min_limit=1, max_limit=5, min_window=1
        )
    )


TestSchedulingMachine = SchedulingMachine.TestCase
TestAIMDMachine = AIMDMachine.TestCase
TestGradient2Machine = Gradient2Machine.TestCase
TestVegasMachine = VegasMachine.TestCase
for machine in (SchedulingMachine, AIMDMachine, Gradient2Machine, VegasMachine):
    machine.TestCase.settings = settings(
        max_examples=60 if machine is SchedulingMachine else 30,
        stateful_step_count=30,
        deadline=None,
    )
