"""Per-key limits, priorities and reserves, live resize, Retry-After from data.

Every admission route takes ``key=`` and ``priority=``; the tests run them all
where the behaviour is the route's, under ``autojump_clock`` with exact times.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from session_helpers import start_inline

import trio_sessions as ts
from trio_sessions.testing import check_invariants, wait_for_active

ROUTES = ("nowait", "start", "run", "inline", "inline_nowait")


async def admit_via(
    manager: ts.SessionManager,
    route: str,
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    **options: Any,
) -> ts.Session[Any] | None:
    """Admit ``fn(*args)`` through ``route``: its session (None from run)."""
    if route == "nowait":
        return manager.start_session_nowait(fn, *args, **options)
    if route == "start":
        return await manager.start_session(fn, *args, **options)
    if route == "run":
        await manager.run(fn, *args, **options)
        return None
    block = (
        manager.session_nowait(**options)
        if route == "inline_nowait"
        else manager.session(**options)
    )
    async with block as session:
        await fn(*args)
    return session


# ----------------------------------------------------------------- per-key limits


@pytest.mark.parametrize("route", ROUTES)
async def test_a_key_at_its_limit_is_refused_on_every_route(route: str) -> None:
    """A third caller of a key limited to two is refused as "key_capacity"."""
    async with ts.open_session_manager(max_sessions=10, max_sessions_per_key=2) as m:
        release = trio.Event()
        for _ in range(2):
            m.start_session_nowait(release.wait, key="a")
        with pytest.raises(ts.CapacityError) as info:
            await admit_via(m, route, trio.sleep, 0, key="a")
        assert info.value.reason == "key_capacity"
        assert info.value.key == "a"
        assert "for key 'a' reached (2)" in str(info.value)
        # Another key still gets in.
        await admit_via(m, route, trio.sleep, 0, key="b")
        stats = check_invariants(m)
        assert stats.rejections["key_capacity"] == 1
        assert stats.rejections["capacity"] == 0
        assert stats.keys["a"] == ts.KeyStatistics(active=2, admitted=2, rejected=1)
        assert stats.keys["b"].admitted == 1
        release.set()
    check_invariants(m, settled=True)


async def test_key_limits_override_the_default_per_key_limit() -> None:
    """key_limits names a key's own limit; the others get max_sessions_per_key."""
    async with ts.open_session_manager(
        max_sessions=10, max_sessions_per_key=1, key_limits={"big": 3}
    ) as m:
        release = trio.Event()
        for _ in range(3):
            m.start_session_nowait(release.wait, key="big")
        m.start_session_nowait(release.wait, key="small")
        for key in ("big", "small"):
            with pytest.raises(ts.CapacityError, match=f"for key '{key}'"):
                m.start_session_nowait(release.wait, key=key)
        # A session without a key is limited only by max_sessions.
        for _ in range(6):
            m.start_session_nowait(release.wait)
        with pytest.raises(ts.CapacityError) as info:
            m.start_session_nowait(release.wait)
        assert info.value.reason == "capacity"
        release.set()


async def test_a_noisy_key_cannot_take_the_slots_others_wait_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Queued callers of a full key are skipped; the callers behind them go first."""
    async with ts.open_session_manager(
        max_sessions=2, max_sessions_per_key=1, max_waiting=10
    ) as m:
        admitted: list[str] = []

        async def caller(key: str) -> None:
            await m.run(trio.sleep, 1, key=key)
            admitted.append(f"{key}@{trio.current_time():g}")

        async with trio.open_nursery() as nursery:
            for key in ("noisy", "noisy", "noisy", "quiet"):
                nursery.start_soon(caller, key)
                await trio.testing.wait_all_tasks_blocked()
            stats = check_invariants(m)
            # One noisy session runs; "quiet" took the second slot at once.
            assert stats.active == 2
            assert stats.waiting == 2
        # (Callers admitted in the same step end in either order.)
        assert sorted(admitted) == ["noisy@1", "noisy@2", "noisy@3", "quiet@1"]
        assert m.statistics().keys["noisy"].admitted == 3


async def test_a_queued_caller_whose_wait_times_out_on_its_key_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The wait timed out while the key was full: refused as "key_capacity"."""
    async with ts.open_session_manager(
        max_sessions=5, max_sessions_per_key=1, max_waiting=5, wait_timeout=2
    ) as m:
        m.start_session_nowait(trio.sleep, 10, key="a")
        with pytest.raises(ts.CapacityError) as info:
            await m.start_session(trio.sleep, 0, key="a")
        assert trio.current_time() == 2
        assert info.value.reason == "key_capacity"
        assert m.statistics().keys["a"].rejected == 1
        m.resize(5)  # no change: counted only when the limit moves
        assert m.statistics().limit_changes == 0


async def test_key_statistics_keep_the_busiest_keys_and_add_up_the_rest() -> None:
    """At most tracked_keys names; the quietest make way, their counts go to other."""
    async with ts.open_session_manager(max_sessions=100, tracked_keys=2) as m:
        for key, times in (("a", 5), ("b", 3), ("c", 1), ("d", 1), ("b", 1)):
            for _ in range(times):
                await m.run(trio.sleep, 0, key=key)
        stats = m.statistics()
        # "c" evicted "b" (3, the quietest), "d" evicted "c", then "b" "d":
        # "a" stays, and every admission is counted somewhere.
        assert stats.keys == {
            "a": ts.KeyStatistics(active=0, admitted=5, rejected=0),
            "b": ts.KeyStatistics(active=0, admitted=1, rejected=0),
        }
        assert stats.other_keys == ts.KeyStatistics(active=0, admitted=5, rejected=0)


async def test_tracked_keys_zero_adds_every_key_under_other() -> None:
    """With tracked_keys=0 no key is named, and the counts still add up."""
    async with ts.open_session_manager(max_sessions=3, tracked_keys=0) as m:
        release = trio.Event()
        m.start_session_nowait(release.wait, key="x")
        stats = m.statistics()
        assert stats.keys == {}
        assert stats.other_keys == ts.KeyStatistics(active=1, admitted=1, rejected=0)
        release.set()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": 3}, "key must be a str or None, not int"),
        ({"key": b"a"}, "key must be a str or None, not bytes"),
        ({"priority": "high"}, "priority must be an int, not str"),
        ({"priority": 1.5}, "priority must be an int, not float"),
        ({"priority": True}, "priority must be an int, not bool"),
        ({"priority": False}, "priority must be an int, not bool"),
        ({"priority": 0.0}, "priority must be an int, not float"),
    ],
)
async def test_a_bad_key_or_priority_is_a_type_error_and_takes_nothing(
    route: str, options: dict[str, Any], message: str
) -> None:
    """Nothing is admitted, taken or counted for a key or priority of the wrong type."""
    async with ts.open_session_manager(max_sessions=2, max_waiting=1) as m:
        with pytest.raises(TypeError, match=message):
            await admit_via(m, route, trio.sleep, 0, **options)
        stats = check_invariants(m, settled=True)
        assert stats.created == 0
        assert stats.rejected == 0


# ------------------------------------------------------ priorities, reserved share


async def test_queued_callers_are_admitted_by_priority_then_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Higher priority first; the same priority first come, first served."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=10) as m:
        order: list[str] = []

        async def caller(name: str, priority: int) -> None:
            await m.run(trio.sleep, 1, priority=priority)
            order.append(name)

        m.start_session_nowait(trio.sleep, 1)
        async with trio.open_nursery() as nursery:
            for name, priority in (("low1", 0), ("high1", 5), ("mid", 2), ("high2", 5)):
                nursery.start_soon(caller, name, priority)
                await trio.testing.wait_all_tasks_blocked()
            assert m.statistics().waiting == 4
        assert order == ["high1", "high2", "mid", "low1"]
        assert trio.current_time() == 5


@pytest.mark.parametrize("route", ROUTES)
async def test_the_reserved_share_is_only_for_high_priority(route: str) -> None:
    """With a quarter reserved, low priority fills 3 of 4 slots; high gets the last."""
    async with ts.open_session_manager(max_sessions=4, reserved_share=0.25) as m:
        release = trio.Event()
        for _ in range(3):
            m.start_session_nowait(release.wait)
        with pytest.raises(ts.CapacityError) as info:
            await admit_via(m, route, trio.sleep, 0)
        assert info.value.reason == "capacity"
        await admit_via(m, route, trio.sleep, 0, priority=1)
        assert check_invariants(m).rejections["capacity"] == 1
        release.set()


async def test_a_reserved_slot_is_kept_while_low_priority_callers_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A freed slot in the reserve is not given to a low-priority waiter."""
    async with ts.open_session_manager(
        max_sessions=2, reserved_share=0.5, max_waiting=5
    ) as m:
        m.start_session_nowait(trio.sleep, 1)
        m.start_session_nowait(trio.sleep, 2, priority=1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(m.run, trio.sleep, 1)
            await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(1.5)
            # The low session ended at 1: the slot it freed is the reserve.
            assert (m.statistics().active, m.statistics().waiting) == (1, 1)
            # A high-priority caller takes it at once, until 2.5.
            m.start_session_nowait(trio.sleep, 1, priority=1)
        # Both high ones ended at 2.5: the low caller ran from then to 3.5.
        assert trio.current_time() == 3.5


async def test_a_share_never_reserves_the_whole_capacity() -> None:
    """With one slot, a reserved share still lets low priority take it."""
    async with ts.open_session_manager(max_sessions=1, reserved_share=0.9) as m:
        await m.run(trio.sleep, 0)
        assert m.statistics().succeeded == 1


# -------------------------------------------------------------------- live resize


async def test_resizing_up_admits_queued_callers_in_the_same_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """resize() up hands the new slots to waiters before it returns."""
    async with ts.open_session_manager(max_sessions=1, max_waiting=5) as m:
        m.start_session_nowait(trio.sleep, 10)
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(m.run, trio.sleep, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert m.statistics().waiting == 3
            m.resize(3)
            assert m.max_sessions == 3
            await trio.testing.wait_all_tasks_blocked()
            stats = check_invariants(m)
            assert (stats.active, stats.waiting) == (3, 1)
            assert stats.max_sessions == 3
            assert stats.limit_changes == 1
        assert trio.current_time() == 2


async def test_resizing_down_cancels_nothing_and_admits_nothing_until_below(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Down to 1 with 3 running: all 3 finish, and only then is anyone admitted."""
    async with ts.open_session_manager(max_sessions=3, max_waiting=5) as m:
        running = [m.start_session_nowait(trio.sleep, s) for s in (1, 2, 3)]
        m.resize(1)
        stats = check_invariants(m)
        assert (stats.active, stats.max_sessions) == (3, 1)
        with pytest.raises(ts.CapacityError):
            m.start_session_nowait(trio.sleep, 0)
        await m.run(trio.sleep, 0)  # queued until 3
        assert trio.current_time() == 3
        assert [s.outcome for s in running] == [ts.Outcome.SUCCESS] * 3
        m.resize(2)
        assert m.statistics().limit_changes == 2


@pytest.mark.parametrize("bad", [0, -1])
async def test_resize_below_one_is_a_value_error(bad: int) -> None:
    """A limit below one names max_sessions; nothing changes."""
    async with ts.open_session_manager(max_sessions=2) as m:
        with pytest.raises(ValueError, match="max_sessions must be >= 1"):
            m.resize(bad)
        assert m.max_sessions == 2


@pytest.mark.parametrize("bad", [2.0, "3", None, True])
async def test_resize_to_a_non_int_is_a_type_error(bad: object) -> None:
    """resize() takes an int, not a float, a str, None or a bool."""
    async with ts.open_session_manager(max_sessions=2) as m:
        with pytest.raises(TypeError, match="max_sessions must be an int"):
            m.resize(bad)  # type: ignore[arg-type]
        assert m.statistics().limit_changes == 0


async def test_resize_from_another_thread_is_refused() -> None:
    """A manager belongs to its Trio run: resize() from a thread says so."""
    async with ts.open_session_manager(max_sessions=2) as m:
        with pytest.raises(RuntimeError, match=r"trio\.from_thread\.run"):
            await trio.to_thread.run_sync(m.resize, 3)
        assert m.max_sessions == 2


async def test_resize_while_shutting_down_admits_no_one() -> None:
    """A resize during the drain changes the figure, and admission stays shut."""
    async with ts.open_session_manager(max_sessions=1) as m:
        m.start_session_nowait(trio.sleep, 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(m.shutdown)
            await trio.testing.wait_all_tasks_blocked()
            m.resize(5)
            with pytest.raises(ts.ShuttingDownError):
                m.start_session_nowait(trio.sleep, 0)
        assert m.statistics().max_sessions == 5


# ---------------------------------------------------------------- the controller


class StepController:
    """A controller wanting ``wants[i]`` after the i-th sample, for the wiring tests."""

    def __init__(self, wants: list[Any], limit: int = 2) -> None:
        self.wants = wants
        self.samples: list[tuple[float, ts.Outcome, int, float]] = []
        self.limit = limit
        self.min_limit = 1
        self.max_limit = 4

    def on_sample(
        self, *, duration: float, outcome: ts.Outcome, in_flight: int, now: float
    ) -> int:
        self.samples.append((duration, outcome, in_flight, now))
        want = self.wants[len(self.samples) - 1]
        if isinstance(want, Exception):
            raise want
        return want  # type: ignore[no-any-return]


async def test_the_controller_sets_the_limit_within_its_floor_and_ceiling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each completed session is a sample; the limit wanted is clamped and taken."""
    controller = StepController([3, 99, 0], limit=2)
    async with ts.open_session_manager(max_sessions=50, controller=controller) as m:
        assert m.max_sessions == 2
        assert m.controller is controller
        await m.run(trio.sleep, 1)
        assert m.max_sessions == 3
        m.start_session_nowait(trio.sleep, 1)
        await m.run(trio.sleep, 0.5)
        assert m.max_sessions == 4  # 99, within the ceiling
        await trio.sleep(0.6)
        assert m.max_sessions == 1  # 0, within the floor
        stats = check_invariants(m)
        assert stats.limit_changes == 3
    assert controller.samples == [
        (1.0, ts.Outcome.SUCCESS, 1, 1.0),
        (0.5, ts.Outcome.SUCCESS, 2, 1.5),
        (1.0, ts.Outcome.SUCCESS, 1, 2.0),
    ]


async def test_a_faulty_controller_is_logged_and_the_limit_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception, or a limit that is not an int, changes nothing but a log line."""
    controller = StepController([RuntimeError("boom"), 2.5], limit=2)
    async with ts.open_session_manager(controller=controller) as m:
        with caplog.at_level(logging.ERROR, logger="trio_sessions"):
            await m.run(trio.sleep, 0)
            await m.run(trio.sleep, 0)
        assert m.max_sessions == 2
        check_invariants(m)
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] != []
    assert "boom" in caplog.text
    assert "chose a limit of 2.5, not an int" in caplog.text


async def test_resize_with_a_controller_is_refused() -> None:
    """The controller owns the limit: resize() says so rather than be undone."""
    async with ts.open_session_manager(controller=StepController([])) as m:
        with pytest.raises(RuntimeError, match="set by its controller"):
            m.resize(3)


async def test_a_controller_that_is_not_one_is_a_type_error() -> None:
    """open_session_manager(controller=...) checks the protocol."""
    with pytest.raises(TypeError, match="controller must be a LimitController"):
        async with ts.open_session_manager(controller=object()):  # type: ignore[arg-type]
            pass


# -------------------------------------------------------------- Retry-After


async def test_retry_after_follows_the_recent_durations_queue_and_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """(waiting + 1) * mean recent run time / limit, tracking a changing workload."""
    async with ts.open_session_manager(max_sessions=2, max_waiting=1) as m:

        def refusal() -> ts.CapacityError:
            with pytest.raises(ts.CapacityError) as info:
                m.start_session_nowait(trio.sleep, 0)
            return info.value

        for _ in range(2):
            m.start_session_nowait(trio.sleep, 10)
        assert refusal().retry_after == 0.5  # nothing completed yet: 1 s / 2
        await trio.sleep(10.5)  # two of 10 s each
        for _ in range(2):
            m.start_session_nowait(trio.sleep, 1)
        assert refusal().retry_after == 5.0  # 10 / 2
        async with trio.open_nursery() as nursery:
            nursery.start_soon(m.run, trio.sleep, 1)  # queued: one waiting
            await wait_for_active(m, 2, waiting=1)
            assert refusal().retry_after == 10.0  # 2 * 10 / 2
        # Twenty seconds of 1 s sessions: the 10 s ones are out of the window.
        for _ in range(20):
            await m.run(trio.sleep, 1)
        for _ in range(2):
            m.start_session_nowait(trio.sleep, 1)
        assert refusal().retry_after == 0.5  # 1 / 2


async def test_retry_after_of_a_key_is_its_run_time_over_its_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A key at its limit of 2 whose sessions take 4 s: a slot in about 2 s."""
    async with ts.open_session_manager(max_sessions=10, max_sessions_per_key=2) as m:
        await m.run(trio.sleep, 4, key="a")
        for _ in range(2):
            m.start_session_nowait(trio.sleep, 4, key="a")
        with pytest.raises(ts.CapacityError) as info:
            m.start_session_nowait(trio.sleep, 0, key="a")
        assert info.value.retry_after == 2.0


def test_a_capacity_error_made_by_hand_has_the_retry_after_it_was_given() -> None:
    """retry_after is None unless given; key defaults to None."""
    assert ts.CapacityError().retry_after is None
    error = ts.CapacityError("busy", reason="key_capacity", key="k", retry_after=3)
    assert (error.retry_after, error.key, error.reason) == (3, "k", "key_capacity")
    assert str(error) == "busy"


async def test_inline_blocks_take_key_and_priority(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """manager.session(key=, priority=) counts under the key, queues by priority."""
    async with ts.open_session_manager(
        max_sessions=1, max_waiting=2, max_sessions_per_key=1
    ) as m:
        first = await start_inline(m, trio.sleep, 1)
        assert first.id in m.sessions
        async with m.session(key="k", priority=3) as session:
            assert trio.current_time() == 1
            assert m.statistics().keys["k"].active == 1
        assert session.outcome is ts.Outcome.SUCCESS


# ------------------------------------------------------ the moments in between


@pytest.mark.parametrize("inline_waiter", [False, True])
async def test_a_slot_handed_to_a_queued_caller_goes_back_if_shutdown_wins(
    inline_waiter: bool,
) -> None:
    """Handed a token (and its key's count) but not yet run when shutdown starts:

    the waiter is refused as shutting down, and gives both back.
    """
    async with ts.open_session_manager(
        max_sessions=1, max_waiting=2, max_sessions_per_key=1
    ) as m:
        refused: list[BaseException] = []

        async def waiter() -> None:
            try:
                if inline_waiter:
                    async with m.session(key="k", priority=2):
                        raise AssertionError("admitted during shutdown")
                else:
                    await m.start_session(trio.sleep, 0, key="k", priority=2)
            except ts.ShuttingDownError as exc:
                refused.append(exc)

        async with trio.open_nursery() as nursery:
            async with m.session(key="k"):
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert m.statistics().waiting == 1
            # The block's exit handed the slot over; shutdown starts before
            # the waiter runs again.
            report = await m.shutdown()
        assert report.initial_active == 0
        assert len(refused) == 1
        stats = check_invariants(m, settled=True)
        assert stats.keys["k"] == ts.KeyStatistics(active=0, admitted=2, rejected=0)
        assert m._limiter.borrowed_tokens == 0


async def test_a_guard_refusing_a_keyed_caller_gives_its_key_slot_back() -> None:
    """The local token and the key's count taken before the guard said no go back."""

    class Refuse(ts.AdmissionGuard):
        reasons = ("no",)

        async def acquire(self, session: ts.Session[Any], deadline: float) -> None:
            await trio.lowlevel.checkpoint()
            raise ts.RejectedError("no", reason="no")

        def release(self, session: ts.Session[Any]) -> None:
            raise AssertionError("nothing was granted")

    async with ts.open_session_manager(
        guard=Refuse(), max_sessions=2, max_sessions_per_key=1
    ) as m:
        for _ in range(3):
            with pytest.raises(ts.RejectedError, match="no"):
                await m.start_session(trio.sleep, 0, key="k")
        stats = check_invariants(m, settled=True)
        assert stats.rejections["no"] == 3
        assert stats.keys["k"].active == 0
        assert stats.rejections["key_capacity"] == 0


async def test_cancelled_while_queued_on_a_full_key_takes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A caller queued behind its own key, cancelled, leaves nothing behind."""
    async with ts.open_session_manager(
        max_sessions=3, max_waiting=3, max_sessions_per_key=1
    ) as m:
        m.start_session_nowait(trio.sleep, 5, key="k")
        with trio.move_on_after(1):
            await m.start_session(trio.sleep, 0, key="k")
        assert trio.current_time() == 1
        stats = check_invariants(m)
        assert (stats.active, stats.waiting) == (1, 0)
        assert stats.keys["k"] == ts.KeyStatistics(active=1, admitted=1, rejected=0)
        # The key's next caller still gets in once the first ends.
        await m.run(trio.sleep, 0, key="k")
        assert trio.current_time() == 5


# ------------------------------------------ many callers in the same instants


CALLERS = st.lists(
    st.tuples(
        st.sampled_from([None, "a", "b", "c"]),  # key
        st.sampled_from([0, 1, 3]),  # priority
        st.sampled_from(ROUTES),
        st.sampled_from([0, 0.5, 1, 2]),  # arrival
        st.sampled_from([0, 0.5, 1.5]),  # run time
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(
    callers=CALLERS,
    resizes=st.lists(
        st.tuples(st.sampled_from([0.5, 1, 1.5]), st.integers(1, 6)), max_size=3
    ),
)
def test_no_key_and_no_manager_ever_runs_over_its_limit(
    callers: list[tuple[str | None, int, str, float, float]],
    resizes: list[tuple[float, int]],
) -> None:
    """Callers arriving in the same instants on every route, the limit moving.

    At each session's start its key is within its limit and the manager within
    the highest limit set so far (a lower one cancels nothing); in the end the
    keys' counts match what ran, and nothing is held.
    """
    limits = {"b": 1}
    per_key = 2
    ran: dict[str | None, int] = {}

    async def main() -> ts.SessionManager:
        async with ts.open_session_manager(
            max_sessions=4,
            max_sessions_per_key=per_key,
            key_limits=limits,
            max_waiting=40,
            reserved_share=0.25,
            request_timeout=None,
        ) as m:
            running: dict[str | None, int] = {}
            highest_limit = m.max_sessions

            async def body(key: str | None, seconds: float) -> None:
                running[key] = running.get(key, 0) + 1
                ran[key] = ran.get(key, 0) + 1
                assert sum(running.values()) <= highest_limit
                if key is not None:
                    assert running[key] <= limits.get(key, per_key)
                await trio.sleep(seconds)
                running[key] -= 1

            async def caller(
                key: str | None, priority: int, route: str, at: float, seconds: float
            ) -> None:
                await trio.sleep(at)
                with contextlib.suppress(ts.CapacityError):
                    await admit_via(
                        m, route, body, key, seconds, key=key, priority=priority
                    )

            async with trio.open_nursery() as nursery:
                for plan in callers:
                    nursery.start_soon(caller, *plan)
                for at, limit in sorted(resizes):
                    await trio.sleep_until(at)
                    highest_limit = max(highest_limit, limit)
                    m.resize(limit)
        return m

    manager = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    stats = check_invariants(manager, settled=True)
    assert stats.created + stats.rejected == len(callers)
    assert sum(ran.values()) == stats.created == stats.succeeded
    for key in ("a", "b", "c"):
        admitted = stats.keys[key].admitted if key in stats.keys else 0
        assert admitted == ran.get(key, 0)
