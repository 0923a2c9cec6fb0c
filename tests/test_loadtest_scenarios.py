"""Tests of the load-test scenarios and run_loadtest, on built-in, user, failing work.

Scenarios run under ``autojump_clock``, so their figures are exact and no test
waits for real seconds (the HTTP load is in test_loadtest_http.py). No test
asserts on wall-clock time.
"""

from __future__ import annotations

import json
import math
import tracemalloc
import typing
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from trio_sessions import loadtest


async def failing_work() -> None:
    """A handler that does a little work and then raises."""
    await trio.sleep(0.005)
    raise RuntimeError("handler failed")


async def quick_work() -> str:
    """A handler that succeeds at once."""
    await trio.lowlevel.checkpoint()
    return "ok"


Scenario = Callable[..., Awaitable[loadtest.ScenarioResult]]

# Every scenario with small, fast parameters; the defaults are tested separately.
SCENARIOS: list[tuple[Scenario, dict[str, Any]]] = [
    (loadtest.concurrent_sessions, {}),
    (loadtest.held_sessions, {}),
    (loadtest.capacity_limit, {}),
    (loadtest.no_hang, {}),
    (loadtest.graceful_shutdown, {}),
    (loadtest.metrics_accuracy, {}),
    (loadtest.metadata_tracking, {}),
    (loadtest.performance_baseline, {"iterations": 200, "budget": math.inf}),
    (loadtest.scale, {"sessions": 2000}),
    (loadtest.sustained_churn, {"duration": 1.0, "rate": 500.0}),
]
SCENARIO_IDS = [scenario.__name__ for scenario, _ in SCENARIOS]


@pytest.mark.parametrize(("scenario", "kwargs"), SCENARIOS, ids=SCENARIO_IDS)
async def test_scenario_passes_on_builtin_work(
    autojump_clock: trio.testing.MockClock,
    scenario: Scenario,
    kwargs: dict[str, Any],
) -> None:
    """Each scenario passes on the simulated work, with no problem reported."""
    result = await scenario(**kwargs)
    assert result.passed, result.problems
    assert result.problems == ()
    assert result.describe()
    assert result.title


@pytest.mark.parametrize(("scenario", "kwargs"), SCENARIOS, ids=SCENARIO_IDS)
async def test_scenario_passes_on_a_user_handler(
    autojump_clock: trio.testing.MockClock,
    scenario: Scenario,
    kwargs: dict[str, Any],
) -> None:
    """Each scenario passes on a user handler that succeeds at once."""
    result = await scenario(quick_work, **kwargs)
    assert result.passed, result.problems


@pytest.mark.parametrize(("scenario", "kwargs"), SCENARIOS, ids=SCENARIO_IDS)
async def test_scenario_fails_on_a_failing_handler(
    autojump_clock: trio.testing.MockClock,
    scenario: Scenario,
    kwargs: dict[str, Any],
) -> None:
    """Each scenario fails, saying why, when the handler raises."""
    result = await scenario(failing_work, **kwargs)
    assert not result.passed
    assert result.problems
    assert all(isinstance(problem, str) and problem for problem in result.problems)


async def hanging_work() -> None:
    """A handler that never returns."""
    await trio.sleep_forever()


@pytest.mark.parametrize(("scenario", "kwargs"), SCENARIOS, ids=SCENARIO_IDS)
async def test_scenario_fails_on_a_hanging_handler(
    autojump_clock: trio.testing.MockClock,
    scenario: Scenario,
    kwargs: dict[str, Any],
) -> None:
    """Each scenario fails, and returns within a minute, when the handler hangs."""
    with trio.fail_after(60):
        result = await scenario(hanging_work, **kwargs)
    assert not result.passed
    assert result.problems


async def test_concurrent_sessions_figures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Fifty 10 ms sessions all succeed, run exactly 10 ms each and overlap fully."""
    result = await loadtest.concurrent_sessions(sessions=50)
    assert (result.sessions, result.succeeded, result.failed) == (50, 50, 0)
    assert result.peak_active == 50
    assert result.average == pytest.approx(loadtest.WORK_SECONDS)
    assert result.minimum == pytest.approx(loadtest.WORK_SECONDS)
    assert result.maximum == pytest.approx(loadtest.WORK_SECONDS)


async def test_failing_handler_error_is_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A failing handler's exception is named in the scenario's problems."""
    result = await loadtest.concurrent_sessions(failing_work, sessions=5)
    assert result.failed == 5
    assert any("RuntimeError: handler failed" in p for p in result.problems)


async def test_held_sessions_figures(autojump_clock: trio.testing.MockClock) -> None:
    """100 held sessions are all admitted and active at once, then all succeed."""
    result = await loadtest.held_sessions(sessions=100)
    assert result.admitted == result.active_while_held == result.peak_active == 100
    assert result.succeeded == 100


async def test_capacity_limit_figures(autojump_clock: trio.testing.MockClock) -> None:
    """Ten overflow attempts on a full capacity of 50 are refused and counted."""
    result = await loadtest.capacity_limit(capacity=50, overflow=10)
    assert result.rejected == result.counted == 10
    assert result.message == "Maximum concurrent sessions reached"
    assert result.active_while_full == 50
    assert result.succeeded == 50


async def test_no_hang_figures(autojump_clock: trio.testing.MockClock) -> None:
    """75 lifecycles of 10 ms finish in 10 ms of Trio time, far inside the deadline."""
    result = await loadtest.no_hang(sessions=75, deadline=10.0)
    assert not result.hung
    assert result.succeeded == 75
    assert result.total == pytest.approx(loadtest.WORK_SECONDS)
    assert result.average == pytest.approx(loadtest.WORK_SECONDS)


async def test_no_hang_detects_a_hang(autojump_clock: trio.testing.MockClock) -> None:
    """A handler that never returns makes no_hang report a hang at its deadline."""
    result = await loadtest.no_hang(hanging_work, sessions=5, deadline=1.0)
    assert result.hung
    assert not result.passed
    assert result.total == pytest.approx(1.0)


async def test_graceful_shutdown_figures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Twenty sessions ending 0.1 s apart drain in 2 s, none cancelled."""
    seen: list[tuple[int, int]] = []
    result = await loadtest.graceful_shutdown(
        sessions=20,
        interval=0.1,
        drain=5.0,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (result.initial_active, result.final_active) == (20, 0)
    assert result.completed_during_shutdown == 20
    assert result.cancelled == 0
    assert not result.timeout_reached
    assert result.refused_while_draining
    assert result.drain_time == pytest.approx(2.0)
    assert seen == [(done, 20) for done in range(1, 21)]


async def test_graceful_shutdown_reports_a_drain_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sessions outlasting the drain budget are cancelled and the scenario fails."""
    result = await loadtest.graceful_shutdown(sessions=10, interval=1.0, drain=4.5)
    assert not result.passed
    assert result.timeout_reached
    assert result.completed_during_shutdown == 4
    assert result.cancelled == 6


async def test_metrics_accuracy_figures(autojump_clock: trio.testing.MockClock) -> None:
    """The 60-session mix is counted exactly: 30/15/10/5 and a 50% success rate."""
    result = await loadtest.metrics_accuracy(sessions=60)
    observed = (result.succeeded, result.failed, result.timed_out, result.cancelled)
    assert observed == (30, 15, 10, 5)
    expected = (
        result.expected_succeeded,
        result.expected_failed,
        result.expected_timed_out,
        result.expected_cancelled,
    )
    assert expected == observed
    assert result.success_rate == result.expected_success_rate == 0.5
    assert result.mismatched == 0


async def test_metadata_tracking_figures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Metadata bytes rise to the sum of sizes, fall by the first half, reach zero."""
    result = await loadtest.metadata_tracking(sessions=30)
    assert result.bytes_up == result.expected_up == result.peak_bytes > 0
    assert result.bytes_half == result.expected_half
    assert 0 < result.bytes_half < result.bytes_up
    assert result.bytes_zero == 0
    assert (result.mismeasured, result.leaked) == (0, 0)


async def test_performance_baseline_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An impossible budget fails the baseline; its figures stay consistent."""
    result = await loadtest.performance_baseline(iterations=100, budget=1e-12)
    assert not result.passed
    assert any("budget" in problem for problem in result.problems)
    assert result.succeeded == 100
    assert 0 <= result.minimum <= result.average <= result.maximum
    assert result.minimum <= result.p99 <= result.maximum
    print(result.describe())


async def test_scale_progress_and_figures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The scale scenario holds all its sessions at once and reports its progress."""
    seen: list[tuple[int, int]] = []
    result = await loadtest.scale(
        sessions=3000, progress=lambda done, total: seen.append((done, total))
    )
    assert result.admitted == result.peak_active == result.succeeded == 3000
    assert seen[-1] == (9000, 9000)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


async def test_churn_overload_is_reported(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A rate the capacity cannot absorb shows up as rejections and a failure."""
    result = await loadtest.sustained_churn(duration=0.5, rate=1000.0, capacity=2)
    assert not result.passed
    assert result.rejected > 0
    assert result.admitted + result.rejected == result.attempted == 500


async def test_churn_figures(autojump_clock: trio.testing.MockClock) -> None:
    """A sustainable rate is met exactly, with every session succeeding."""
    result = await loadtest.sustained_churn(duration=2.0, rate=250.0, capacity=50)
    assert result.attempted == result.admitted == result.succeeded == 500
    assert result.achieved_rate >= 0.95 * 250.0
    assert result.p50 == pytest.approx(loadtest.WORK_SECONDS, rel=0.02)


async def test_run_loadtest_runs_the_eight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """run_loadtest runs the eight standard scenarios in order, and they all pass."""
    report = await loadtest.run_loadtest(budget=math.inf)
    assert [result.name for result in report.results] == list(loadtest.SCENARIO_NAMES)
    assert report.passed, report.problems
    assert report.problems == []


async def test_run_loadtest_with_a_failing_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With a failing handler every standard scenario fails, and problems say why."""
    report = await loadtest.run_loadtest(failing_work, budget=math.inf)
    assert not report.passed
    assert [result.passed for result in report.results] == [False] * 8
    assert all(
        problem.split(":")[0] in loadtest.SCENARIO_NAMES for problem in report.problems
    )


async def test_run_loadtest_selection(autojump_clock: trio.testing.MockClock) -> None:
    """`only`, `sessions` and `duration` choose the scenarios, and progress is named."""
    names: set[str] = set()
    report = await loadtest.run_loadtest(
        only=["capacity"],
        sessions=1000,
        duration=0.5,
        rate=200.0,
        progress=lambda name, done, total: names.add(name),
    )
    assert [result.name for result in report.results] == ["capacity", "scale", "churn"]
    assert report.passed, report.problems
    assert names == {"scale", "churn"}


def test_registry_names_every_scenario_once() -> None:
    """SCENARIOS maps each name to its scenario; the standard ones come first."""
    assert list(loadtest.SCENARIOS) == [*loadtest.SCENARIO_NAMES, "scale", "churn"]
    assert [scenario for scenario, _ in SCENARIOS] == list(loadtest.SCENARIOS.values())


def test_public_names_live_in_trio_sessions_loadtest() -> None:
    """Public classes and functions say trio_sessions.loadtest.X, not ._module.X."""
    for name in loadtest.__all__:
        obj = getattr(loadtest, name)
        module = getattr(obj, "__module__", None)
        if module is not None and module.startswith("trio_sessions"):
            assert module == "trio_sessions.loadtest", name
        if isinstance(obj, type):
            # Annotations resolve in the namespace __module__ names.
            assert typing.get_type_hints(obj), name


async def test_run_loadtest_rejects_unknown_names() -> None:
    """An unknown scenario name is a ValueError naming it and the known ones."""
    with pytest.raises(ValueError, match=r"unknown scenario nope.*capacity"):
        await loadtest.run_loadtest(only=["nope"])


async def test_report_json_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    """A report encodes to JSON with every figure of every scenario."""
    report = await loadtest.run_loadtest(only=["metrics", "capacity"])
    data = json.loads(json.dumps(report.as_dict()))  # as the CLI writes it
    assert data["passed"] is True
    assert [scenario["name"] for scenario in data["scenarios"]] == [
        "capacity",
        "metrics",
    ]
    metrics = data["scenarios"][1]
    assert metrics["success_rate"] == 0.5
    assert metrics["problems"] == []
    assert metrics["title"] == "metrics: 60 sessions, known mix"


# ---------------------------------------------------------------- user handlers


class Result:
    """A handler's result that can be watched with a weak reference."""


def result_tracker() -> tuple[Callable[[], Awaitable[Result]], list[int]]:
    """A handler returning a new Result per call, and the results alive at each call."""
    results: list[weakref.ref[Result]] = []
    alive: list[int] = []

    async def handler() -> Result:
        await trio.sleep(0.001)
        # Calls that slept beside this one have returned by now.
        alive.append(sum(ref() is not None for ref in results))
        result = Result()
        results.append(weakref.ref(result))
        return result

    return handler, alive


@pytest.mark.parametrize(("scenario", "kwargs"), SCENARIOS, ids=SCENARIO_IDS)
async def test_scenarios_keep_no_handler_result(
    autojump_clock: trio.testing.MockClock,
    scenario: Scenario,
    kwargs: dict[str, Any],
) -> None:
    """No result a handler returned is alive once the call returned."""
    handler, alive = result_tracker()
    result = await scenario(handler, **kwargs)
    assert result.passed, result.problems
    assert alive
    assert max(alive) == 0


async def test_run_loadtest_keeps_no_handler_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Across the eight scenarios, results are dropped as they are returned."""
    handler, alive = result_tracker()
    report = await loadtest.run_loadtest(handler, iterations=300, budget=math.inf)
    assert report.passed, report.problems
    assert len(alive) == 50 + 100 + 50 + 75 + 20 + 60 + 30 + 300
    assert max(alive) == 0


async def test_big_results_do_not_add_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler returning 1 MB each time: the baseline's memory peak stays small."""

    async def big() -> bytes:
        await trio.lowlevel.checkpoint()
        return bytes(1 << 20)

    tracemalloc.start()
    try:
        result = await loadtest.performance_baseline(
            big, iterations=200, budget=math.inf
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.passed, result.problems
    # 200 results held would be 200 MiB; dropped as returned, a few are alive.
    assert peak < 20 * (1 << 20)


async def shielded_work() -> None:
    """A handler that ignores cancellation for 25 s."""
    with trio.CancelScope(shield=True):
        await trio.sleep(25)


async def test_run_loadtest_says_what_it_waits_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While calls outlive their deadline, ``notice`` says so every 10 s, then not."""
    notices: list[tuple[float, str]] = []
    report = await loadtest.run_loadtest(
        shielded_work,
        only=["held", "metrics"],
        notice=lambda message: notices.append((trio.current_time(), message)),
    )
    assert not report.passed
    times = [round(at) for at, _ in notices]
    # held: 100 calls start at 0 s, deadline 10 s, told at 13 s and 23 s, back
    # at 25 s, when the run says it goes on.
    assert times[:3] == [13, 23, 25]
    name = f"{__name__}:shielded_work"
    assert notices[0][1].startswith(
        f"scenario 'held' is waiting for 100 calls of {name}: cancelled at their "
        "10 s deadline 3 s ago, they have not returned."
    )
    assert notices[2][1] == ("scenario 'held': the handler calls returned, going on")
    assert any(message.startswith("scenario 'metrics'") for _, message in notices)


async def test_run_loadtest_is_quiet_about_a_well_behaved_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A handler that returns in time gets no notice."""
    notices: list[str] = []
    report = await loadtest.run_loadtest(
        quick_work, only=["no-hang", "shutdown"], notice=notices.append
    )
    assert report.passed, report.problems
    assert notices == []


async def test_run_loadtest_hands_over_a_lone_exception(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An exception out of a scenario is raised as itself, not in a group."""

    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await loadtest.run_loadtest(
            interrupted, only=["concurrent"], notice=lambda message: None
        )
