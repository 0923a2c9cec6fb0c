"""Adaptive concurrency: each controller's rules, exactly, and a manager following one.

The controllers are pure computation, so their tests feed them samples and
check the limit to the session. The manager's part (it starts at the
controller's limit, follows it, clamps it, and never cancels a running session
to lower it) runs under ``autojump_clock`` with exact times.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_sessions as ts

SUCCESS = ts.Outcome.SUCCESS
ERROR = ts.Outcome.ERROR
TIMEOUT = ts.Outcome.TIMEOUT
CANCELLED = ts.Outcome.CANCELLED
SIM = Path(__file__).resolve().parents[1] / "benchmarks" / "adaptive_sim.py"

Controller = ts.AIMDController | ts.Gradient2Controller | ts.VegasController
CONTROLLERS = [ts.AIMDController, ts.Gradient2Controller, ts.VegasController]


def feed(
    controller: ts.LimitController,
    count: int,
    duration: float,
    *,
    in_flight: int | None = None,
    outcome: ts.Outcome = SUCCESS,
    now: float = 100.0,
) -> int:
    """Give ``controller`` ``count`` identical samples; return the last limit.

    ``in_flight`` defaults to the limit at each sample (a saturated manager).
    """
    limit = controller.limit
    for _ in range(count):
        busy = controller.limit if in_flight is None else in_flight
        limit = controller.on_sample(
            duration=duration, outcome=outcome, in_flight=busy, now=now
        )
    return limit


def window(controller: ts.Gradient2Controller | ts.VegasController, rtt: float) -> int:
    """Give a windowed controller one full window (its limit's worth) of ``rtt``."""
    return feed(controller, controller.limit, rtt)


# ---------------------------------------------------------------- every one


@pytest.mark.parametrize("cls", CONTROLLERS)
def test_each_controller_is_a_limit_controller(cls: type[Controller]) -> None:
    """Each controller implements the protocol and starts at its initial limit."""
    controller = cls(initial_limit=7, min_limit=3, max_limit=9)
    assert isinstance(controller, ts.LimitController)
    assert (controller.limit, controller.min_limit, controller.max_limit) == (7, 3, 9)
    assert repr(controller) == f"<{cls.__name__} limit=7 in [3, 9]>"


@pytest.mark.parametrize("cls", CONTROLLERS)
def test_defaults_start_at_20_within_1_and_200(cls: type[Controller]) -> None:
    """With no arguments a controller starts at 20, between 1 and 200."""
    controller = cls()
    assert (controller.limit, controller.min_limit, controller.max_limit) == (
        20,
        1,
        200,
    )


@pytest.mark.parametrize("cls", CONTROLLERS)
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"min_limit": 0}, ValueError, "min_limit must be >= 1, got 0"),
        ({"min_limit": 2.0}, TypeError, "min_limit must be an int"),
        ({"max_limit": True}, TypeError, "max_limit must be an int"),
        ({"max_limit": 4, "min_limit": 5}, ValueError, "max_limit must be >= 5"),
        ({"initial_limit": "20"}, TypeError, "initial_limit must be an int"),
        (
            {"initial_limit": 2, "min_limit": 3},
            ValueError,
            "initial_limit must be >= 3",
        ),
        ({"initial_limit": 9, "max_limit": 8}, ValueError, "initial_limit must be <= "),
    ],
)
def test_limits_are_validated(
    cls: type[Controller], kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    """Floor, ceiling and initial limit are checked, the message naming the argument."""
    with pytest.raises(error, match=f"^{cls.__name__}.{words}"):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs", "error", "argument"),
    [
        (ts.AIMDController, {"backoff_ratio": 1}, ValueError, "backoff_ratio"),
        (ts.AIMDController, {"backoff_ratio": 0.4}, ValueError, "backoff_ratio"),
        (ts.AIMDController, {"backoff_ratio": math.nan}, ValueError, "backoff_ratio"),
        (ts.AIMDController, {"backoff_ratio": "0.9"}, TypeError, "backoff_ratio"),
        (ts.AIMDController, {"slow_after": 0}, ValueError, "slow_after"),
        (ts.AIMDController, {"slow_after": "1s"}, TypeError, "slow_after"),
        (ts.AIMDController, {"errors_are_losses": 1}, TypeError, "errors_are_losses"),
        (ts.Gradient2Controller, {"tolerance": 0.99}, ValueError, "tolerance"),
        (ts.Gradient2Controller, {"tolerance": math.inf}, ValueError, "tolerance"),
        (ts.Gradient2Controller, {"tolerance": None}, TypeError, "tolerance"),
        (ts.Gradient2Controller, {"smoothing": 0}, ValueError, "smoothing"),
        (ts.Gradient2Controller, {"smoothing": 1.5}, ValueError, "smoothing"),
        (ts.Gradient2Controller, {"queue_size": -1}, ValueError, "queue_size"),
        (ts.Gradient2Controller, {"queue_size": 1.0}, TypeError, "queue_size"),
        (ts.Gradient2Controller, {"long_window": 0}, ValueError, "long_window"),
        (ts.Gradient2Controller, {"min_window": 0}, ValueError, "min_window"),
        (ts.VegasController, {"alpha": 0}, ValueError, "alpha"),
        (ts.VegasController, {"alpha": 3, "beta": 2}, ValueError, "beta"),
        (ts.VegasController, {"beta": 4.5}, TypeError, "beta"),
        (ts.VegasController, {"probe_interval": 0}, ValueError, "probe_interval"),
        (ts.VegasController, {"min_window": False}, TypeError, "min_window"),
    ],
)
def test_tuning_arguments_are_validated(
    cls: type[Controller], kwargs: dict[str, Any], error: type[Exception], argument: str
) -> None:
    """Each tuning argument is checked, and the message names it."""
    with pytest.raises(error, match=f"^{cls.__name__}.{argument} must be"):
        cls(**kwargs)


samples = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=10, allow_nan=False),
        st.sampled_from(list(ts.Outcome)),
        st.integers(min_value=0, max_value=50),
    ),
    max_size=300,
)


@pytest.mark.parametrize("cls", CONTROLLERS)
@settings(deadline=None, max_examples=50)
@given(samples=samples, data=st.data())
def test_limit_never_leaves_floor_and_ceiling(
    cls: type[Controller],
    samples: list[tuple[float, ts.Outcome, int]],
    data: st.DataObject,
) -> None:
    """Whatever the samples, every limit returned is within [min_limit, max_limit]."""
    low = data.draw(st.integers(min_value=1, max_value=10), label="min_limit")
    high = data.draw(st.integers(min_value=low, max_value=40), label="max_limit")
    start = data.draw(st.integers(min_value=low, max_value=high), label="initial")
    controller = cls(initial_limit=start, min_limit=low, max_limit=high, **small(cls))
    now = 0.0
    for duration, outcome, in_flight in samples:
        now += duration / 4  # sessions overlap: some started before others ended
        limit = controller.on_sample(
            duration=duration, outcome=outcome, in_flight=in_flight, now=now
        )
        assert low <= limit <= high
        assert limit == controller.limit


def small(cls: type[Controller]) -> dict[str, Any]:
    """Arguments that make a windowed controller decide often."""
    if cls is ts.Gradient2Controller:
        return {"min_window": 1, "long_window": 3}
    if cls is ts.VegasController:
        return {"min_window": 1, "probe_interval": 3}
    return {}


# ------------------------------------------------------------------------ AIMD


def test_aimd_adds_one_per_round_trip_of_successes() -> None:
    """Each success near the limit adds 1/limit: a limit's worth of them adds one."""
    aimd = ts.AIMDController(initial_limit=10)
    # 1/10 + 1/10.1 + ... : ten successes add a little less than one.
    assert feed(aimd, 10, 0.1) == 10
    assert feed(aimd, 1, 0.1) == 11
    assert feed(aimd, 11, 0.1) == 12


def test_aimd_does_not_grow_while_half_the_limit_is_idle() -> None:
    """A success with fewer than half the limit in flight changes nothing."""
    aimd = ts.AIMDController(initial_limit=4)
    assert feed(aimd, 1000, 0.1, in_flight=1) == 4
    # 4.25, 4.49, 4.71, 4.92, 5.12: three in flight is over half of each.
    assert feed(aimd, 4, 0.1, in_flight=3) == 4
    assert feed(aimd, 1, 0.1, in_flight=3) == 5


def test_aimd_backs_off_once_per_round_trip_on_timeouts() -> None:
    """A timeout multiplies the limit by 0.9; those started before it are ignored."""
    aimd = ts.AIMDController(initial_limit=20)
    # Started at 9.0, timed out at 10.0: 20 * 0.9.
    assert aimd.on_sample(duration=1.0, outcome=TIMEOUT, in_flight=20, now=10.0) == 18
    # Started at 9.5, before the back-off at 10.0: the same congestion.
    assert aimd.on_sample(duration=1.0, outcome=TIMEOUT, in_flight=20, now=10.5) == 18
    # Started at 10.0, under the lowered limit: new evidence. 18 * 0.9 = 16.2.
    assert aimd.on_sample(duration=1.0, outcome=TIMEOUT, in_flight=18, now=11.0) == 16


def test_aimd_backoff_ratio_is_configurable() -> None:
    """``backoff_ratio=0.5`` halves the limit on a loss."""
    aimd = ts.AIMDController(initial_limit=20, backoff_ratio=0.5)
    assert aimd.on_sample(duration=1.0, outcome=TIMEOUT, in_flight=20, now=1.0) == 10


def test_aimd_slow_success_is_a_loss_with_slow_after() -> None:
    """With ``slow_after``, a success slower than it backs off; one at it grows."""
    aimd = ts.AIMDController(initial_limit=10, slow_after=0.5)
    assert feed(aimd, 11, 0.5) == 11
    assert aimd.on_sample(duration=0.5001, outcome=SUCCESS, in_flight=11, now=1.0) == 9
    # Without slow_after, latency alone is never a loss.
    assert feed(ts.AIMDController(initial_limit=10), 11, 1e6) == 11


def test_aimd_errors_count_only_when_asked() -> None:
    """``ERROR`` neither grows nor shrinks the limit, unless ``errors_are_losses``."""
    assert feed(ts.AIMDController(initial_limit=10), 50, 0.1, outcome=ERROR) == 10
    strict = ts.AIMDController(initial_limit=10, errors_are_losses=True)
    assert strict.on_sample(duration=0.1, outcome=ERROR, in_flight=10, now=1.0) == 9


def test_aimd_ignores_cancelled_sessions() -> None:
    """A cancelled session says nothing about the backend."""
    aimd = ts.AIMDController(initial_limit=10)
    assert feed(aimd, 50, 0.1, outcome=CANCELLED) == 10


def test_aimd_stays_within_its_floor_and_ceiling() -> None:
    """Losses stop at ``min_limit``, successes at ``max_limit``."""
    aimd = ts.AIMDController(initial_limit=6, min_limit=5, max_limit=7)
    for now in range(1, 10):
        limit = aimd.on_sample(duration=1, outcome=TIMEOUT, in_flight=6, now=now)
    assert limit == 5
    assert feed(aimd, 100, 0.1) == 7


# ------------------------------------------------------------------- Gradient2


def gradient2(**kwargs: Any) -> ts.Gradient2Controller:
    """A Gradient2Controller deciding every ``limit`` samples, warmed up at 0.25 s."""
    arguments: dict[str, Any] = {
        "initial_limit": 10,
        "min_window": 1,
        "tolerance": 1.0,
        "smoothing": 1.0,
        "queue_size": 0,
        "long_window": 3,  # the average moves half way to each window learned
    }
    controller = ts.Gradient2Controller(**(arguments | kwargs))
    for _ in range(10):  # the warm-up: the long-term latency is their mean
        # One session in flight: the average learns, the limit stays.
        feed(controller, controller.limit, 0.25, in_flight=1)
    assert controller.long_term_latency == 0.25
    return controller


def test_gradient2_decides_once_per_window() -> None:
    """Nothing changes until a limit's worth of sessions (at least min_window) is in."""
    controller = gradient2()
    assert feed(controller, 9, 0.5) == 10
    assert feed(controller, 1, 0.5) == 5  # gradient 0.25 / 0.5, at most halved
    wide = ts.Gradient2Controller(initial_limit=10, min_window=30, smoothing=1.0)
    assert feed(wide, 29, 0.25) == 10
    assert wide.long_term_latency is None
    assert feed(wide, 1, 0.25) == 11  # queue_size 1 added
    assert wide.long_term_latency == 0.25


def test_gradient2_shrinks_by_the_gradient() -> None:
    """A window slower than the long-term latency scales the limit by long / short."""
    controller = gradient2()
    assert window(controller, 0.3125) == 8  # 10 * 0.25 / 0.3125
    assert window(controller, 0.25) == 8  # back to normal: gradient 1
    assert window(controller, 10.0) == 4  # never below half at once


def test_gradient2_grows_by_queue_size_damped_by_smoothing() -> None:
    """While latency holds, each window adds ``queue_size * smoothing``."""
    controller = gradient2(queue_size=4, smoothing=0.5)
    assert window(controller, 0.25) == 12
    assert window(controller, 0.25) == 14
    assert window(controller, 0.25) == 16


def test_gradient2_tolerates_latency_within_tolerance() -> None:
    """With ``tolerance=1.5`` a window 1.5x the long-term latency does not shrink it."""
    controller = gradient2(tolerance=1.5)
    assert window(controller, 0.375) == 10
    assert controller.long_term_latency == 0.3125  # within tolerance: learned
    assert window(controller, 0.5) == 9  # 10 * 1.5 * 0.3125 / 0.5 = 9.375


def test_gradient2_does_not_move_while_the_limit_is_idle() -> None:
    """A window whose peak in flight is under half the limit changes nothing."""
    controller = gradient2()
    assert feed(controller, 10, 0.5, in_flight=4) == 10
    assert feed(controller, 10, 0.5, in_flight=5) == 5


def test_gradient2_learns_only_from_windows_within_tolerance() -> None:
    """A congested window leaves the long-term latency alone; a calm one moves it."""
    controller = gradient2(min_limit=2)
    window(controller, 0.5)
    assert controller.long_term_latency == 0.25
    window(controller, 0.125)
    assert controller.long_term_latency == 0.1875  # half way, long_window=3


def test_gradient2_learns_a_slower_backend_at_its_floor() -> None:
    """At its floor and still slow, it takes the window's latency as the baseline."""
    controller = gradient2(min_limit=5)
    assert window(controller, 1.0) == 5
    assert controller.long_term_latency == 0.25
    assert window(controller, 1.0) == 5
    assert controller.long_term_latency == 1.0
    assert window(controller, 1.0) == 5  # 1.0 is the norm now: no more shrinking


def test_gradient2_forgets_load_faster_once_it_is_gone() -> None:
    """A long-term latency over twice the window's is cut by 5% at once."""
    controller = gradient2(long_window=599)
    window(controller, 0.1)  # learned: 0.25 + (0.1 - 0.25) / 300 = 0.2495
    assert controller.long_term_latency == pytest.approx(0.2495 * 0.95)
    controller = gradient2(long_window=599)
    window(controller, 0.2)  # 0.2495 is not over twice 0.2: no cut
    assert controller.long_term_latency == pytest.approx(0.25 - 0.05 / 300)


def test_gradient2_ignores_errors_and_cancellations() -> None:
    """Errors and cancelled sessions neither fill a window nor move the limit."""
    controller = gradient2()
    assert feed(controller, 100, 5.0, outcome=ERROR) == 10
    assert feed(controller, 100, 5.0, outcome=CANCELLED) == 10
    assert feed(controller, 10, 0.5, outcome=TIMEOUT) == 5


# ----------------------------------------------------------------------- Vegas


def vegas(**kwargs: Any) -> ts.VegasController:
    """A VegasController deciding on every ``limit`` samples."""
    arguments: dict[str, Any] = {"initial_limit": 10, "min_window": 1}
    return ts.VegasController(**(arguments | kwargs))


def rtt_for_queue(noload: float, limit: int, queue: float) -> float:
    """The window latency at which ``limit * (1 - noload / rtt) == queue``."""
    return noload / (1 - queue / limit)


def test_vegas_first_window_sets_rtt_noload_and_grows_by_beta() -> None:
    """The first window is the fastest seen: no queue, so the limit grows by beta."""
    controller = vegas()
    assert controller.rtt_noload is None
    assert window(controller, 0.25) == 14
    assert controller.rtt_noload == 0.25


def test_vegas_moves_by_its_queue_estimate() -> None:
    """Over beta queued it sheds the excess; alpha to beta holds; under alpha, +1."""
    controller = vegas()
    window(controller, 0.25)  # 14
    assert window(controller, 0.5) == 11  # 14 * (1 - 0.25 / 0.5) = 7 queued: -3
    assert window(controller, rtt_for_queue(0.25, 11, 3)) == 11  # 2 <= 3 <= 4
    assert window(controller, rtt_for_queue(0.25, 11, 1.5)) == 12  # under alpha
    assert window(controller, 0.25) == 16  # nothing queued: + beta
    assert controller.rtt_noload == 0.25


def test_vegas_sheds_on_a_timeout() -> None:
    """A window with a timeout shrinks by its excess over beta, and at least one."""
    controller = vegas()
    window(controller, 0.25)  # 14
    feed(controller, 13, 0.25)
    assert feed(controller, 1, 0.25, outcome=TIMEOUT) == 13


def test_vegas_scales_its_thresholds_with_the_limit() -> None:
    """From a limit of 100, alpha, beta and the step are doubled."""
    controller = vegas(initial_limit=100, max_limit=1000)
    assert window(controller, 0.25) == 108


def test_vegas_does_not_move_while_the_limit_is_idle() -> None:
    """A window whose peak in flight is under half the limit changes nothing."""
    controller = vegas()
    window(controller, 0.25)  # 14
    assert feed(controller, 14, 1.0, in_flight=6) == 14
    assert feed(controller, 14, 1.0, in_flight=7) == 7  # 10.5 queued: 14 - 6.5


def test_vegas_probe_drains_the_queue_and_measures_again() -> None:
    """Each probe_interval windows it lowers the limit by the queue for one window."""
    controller = vegas(probe_interval=2, initial_limit=12)
    window(controller, 0.25)  # 16: the first window, no probe yet
    # The backend became slower for good: 16 * (1 - 0.25 / 0.5) = 8 queued.
    assert feed(controller, 16, 0.5, now=10.0) == 8  # the probe: 16 - 8
    # Sessions admitted before the probe (at 10.0) saw the queue: ignored.
    assert feed(controller, 50, 0.5, now=10.4) == 8
    # A window of sessions started after it measures the new no-load latency,
    # and the limit is restored.
    assert feed(controller, 7, 0.5, now=10.5) == 8
    assert feed(controller, 1, 0.5, now=10.5) == 16
    assert controller.rtt_noload == 0.5
    assert window(controller, 0.5) == 20  # 0.5 is no queue now: + beta


def test_vegas_ignores_errors_and_cancellations() -> None:
    """Errors and cancelled sessions neither fill a window nor move the limit."""
    controller = vegas()
    assert feed(controller, 100, 5.0, outcome=ERROR) == 10
    assert feed(controller, 100, 5.0, outcome=CANCELLED) == 10
    assert controller.rtt_noload is None


# ------------------------------------------------------------- in a manager


class Scripted:
    """A controller wanting the limits it is given, in turn; it keeps its samples."""

    def __init__(
        self, wants: Iterable[int], *, limit: int = 4, floor: int = 1, ceiling: int = 8
    ) -> None:
        self.wants = iter(wants)
        self.start, self.floor, self.ceiling = limit, floor, ceiling
        self.samples: list[tuple[float, ts.Outcome, int, float]] = []

    @property
    def limit(self) -> int:
        return self.start

    @property
    def min_limit(self) -> int:
        return self.floor

    @property
    def max_limit(self) -> int:
        return self.ceiling

    def on_sample(
        self, *, duration: float, outcome: ts.Outcome, in_flight: int, now: float
    ) -> int:
        self.samples.append((duration, outcome, in_flight, now))
        return next(self.wants)


async def sleep_then(seconds: float, error: bool = False) -> None:
    await trio.sleep(seconds)
    if error:
        raise RuntimeError("boom")


async def test_manager_starts_at_the_controllers_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The manager's capacity is the controller's limit, not ``max_sessions``."""
    controller = ts.AIMDController(initial_limit=3, max_limit=5)
    async with ts.open_session_manager(max_sessions=50, controller=controller) as m:
        assert m.max_sessions == 3
        assert m.statistics().max_sessions == 3
        for _ in range(3):
            m.start_session_nowait(trio.sleep, 1)
        with pytest.raises(ts.CapacityError):
            m.start_session_nowait(trio.sleep, 1)
        assert m.statistics().limit_changes == 0


async def test_manager_feeds_each_completed_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each completion is one sample: duration, outcome, in flight with it, time."""
    controller = Scripted([4] * 4)
    async with ts.open_session_manager(request_timeout=3, controller=controller) as m:
        m.start_session_nowait(sleep_then, 1)
        m.start_session_nowait(sleep_then, 2, True)
        m.start_session_nowait(sleep_then, 10)  # times out at 3
        await trio.sleep(0.5)
        m.start_session_nowait(sleep_then, 1)  # from 0.5 to 1.5
        with pytest.raises(ts.CapacityError):  # refused: not a sample
            m.start_session_nowait(sleep_then, 1)
    assert controller.samples == [
        (1.0, SUCCESS, 4, 1.0),
        (1.0, SUCCESS, 3, 1.5),
        (2.0, ERROR, 2, 2.0),
        (3.0, TIMEOUT, 1, 3.0),
    ]


async def test_capacity_follows_the_controller_clamped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After each sample the capacity is the limit wanted, within floor and ceiling."""
    controller = Scripted([6, 6, 1000, 0], limit=2, floor=2, ceiling=8)
    async with ts.open_session_manager(controller=controller) as m:
        seen = []
        for _ in range(4):
            await m.run(trio.sleep, 1)
            seen.append((m.max_sessions, m.statistics().max_sessions))
        assert seen == [(6, 6), (6, 6), (8, 8), (2, 2)]
        # Changes, not samples: 2 -> 6 -> 8 -> 2.
        assert m.statistics().limit_changes == 3


async def test_capacity_never_exceeds_the_ceiling_under_load(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A controller pushed to grow stops at its ceiling, and so do active sessions."""
    controller = ts.AIMDController(initial_limit=2, max_limit=6)
    async with ts.open_session_manager(controller=controller) as m:
        for _ in range(200):
            while True:
                try:
                    m.start_session_nowait(trio.sleep, 0.01)
                except ts.CapacityError:
                    break
            stats = m.statistics()
            assert stats.active <= stats.max_sessions <= 6
            await trio.sleep(0.01)
        assert m.max_sessions == 6
        assert m.statistics().peak_active == 6


async def test_lowering_the_limit_never_cancels_a_running_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Down to 1 with 3 still running: they finish; admission waits for active < 1."""
    controller = Scripted([1] * 5, limit=4)
    async with ts.open_session_manager(controller=controller) as m:
        sessions = [m.start_session_nowait(trio.sleep, n) for n in (1, 2, 3, 4)]
        await trio.sleep(1.5)
        stats = m.statistics()
        assert (stats.max_sessions, stats.active) == (1, 3)
        with pytest.raises(ts.CapacityError):
            m.start_session_nowait(trio.sleep, 1)
        for session in sessions:
            await session.wait()
        assert [s.completed_at for s in sessions] == [1, 2, 3, 4]
        assert [s.outcome for s in sessions] == [SUCCESS] * 4
        assert m.statistics().cancelled == 0
        await m.run(trio.sleep, 1)  # nothing runs now: one is admitted
        assert trio.current_time() == 5


async def test_raising_the_limit_admits_queued_callers_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Callers queued for a slot are admitted in the step the controller grows."""
    controller = Scripted([3, 3, 3], limit=1)
    async with (
        ts.open_session_manager(max_waiting=2, controller=controller) as m,
        trio.open_nursery() as nursery,
    ):
        m.start_session_nowait(trio.sleep, 1)
        started: list[float] = []

        async def queued() -> None:
            await m.start_session(trio.sleep, 1)
            started.append(trio.current_time())

        nursery.start_soon(queued)
        nursery.start_soon(queued)
        await trio.testing.wait_all_tasks_blocked()
        assert m.statistics().waiting == 2
    assert started == [1, 1]


async def test_aimd_in_a_manager_backs_off_once_for_a_wave_of_timeouts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Ten sessions timing out together lower the capacity once: 10 to 9."""
    controller = ts.AIMDController(initial_limit=10)
    async with ts.open_session_manager(request_timeout=1, controller=controller) as m:
        for _ in range(10):
            m.start_session_nowait(trio.sleep_forever)
        await trio.sleep(1.5)
        stats = m.statistics()
        assert (stats.timed_out, stats.max_sessions, stats.limit_changes) == (10, 9, 1)


async def test_a_controller_that_raises_leaves_the_limit_alone(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception from on_sample is logged; the session is still counted."""

    class Broken(Scripted):
        def on_sample(
            self, *, duration: float, outcome: ts.Outcome, in_flight: int, now: float
        ) -> int:
            raise ZeroDivisionError("bad controller")

    with caplog.at_level(logging.ERROR, logger="trio_sessions"):
        async with ts.open_session_manager(controller=Broken([])) as m:
            await m.run(trio.sleep, 1)
            assert m.max_sessions == 4
            assert m.statistics().succeeded == 1
    assert "bad controller" in caplog.text


# ------------------------------------------------------------------ the sim


def test_simulation_runs_quickly_and_plots(tmp_path: Path) -> None:
    """``adaptive_sim.py --quick`` runs every controller, judges and plots."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "adaptive.svg"
    done = subprocess.run(
        [sys.executable, str(SIM), "--quick", "--plot", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for name in ("aimd", "gradient2", "vegas", "phase 2: knee 20", "targets met"):
        assert name in done.stdout
    assert out.read_text(encoding="utf-8").startswith("<?xml")
