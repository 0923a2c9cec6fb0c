"""Invariants a settled manager and a finished Trio schedule must satisfy.

Plain helpers, not tests: any test can call :func:`assert_settled` after a run,
or collect :func:`manager_problems` to report them with its own context.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

import trio_sessions as ts

__all__ = [
    "assert_no_tasks_left",
    "assert_settled",
    "counter_problems",
    "manager_problems",
    "tasks_left",
]


def counter_problems(stats: ts.SessionStatistics) -> list[str]:
    """What is wrong with the counters of ``stats``, at any moment (empty: nothing)."""
    problems = []
    outcomes = stats.succeeded + stats.failed + stats.timed_out + stats.cancelled
    if stats.created != stats.completed + stats.active:
        problems.append(
            f"created={stats.created} != completed={stats.completed} "
            f"+ active={stats.active}"
        )
    if stats.completed != outcomes:
        problems.append(
            f"completed={stats.completed} != succeeded+failed+timed_out+cancelled"
            f"={outcomes}"
        )
    if stats.rejected != sum(stats.rejections.values()):
        problems.append(
            f"rejected={stats.rejected} != sum(rejections)={dict(stats.rejections)}"
        )
    if stats.active > stats.max_sessions:
        problems.append(f"active={stats.active} > max_sessions={stats.max_sessions}")
    return problems


def manager_problems(manager: ts.SessionManager) -> list[str]:
    """What is wrong with ``manager`` once nothing should run in it any more."""
    stats = manager.statistics()
    problems = counter_problems(stats)
    for field in ("active", "waiting", "metadata_bytes"):
        if getattr(stats, field):
            problems.append(f"{field}={getattr(stats, field)}, expected 0")
    if manager.sessions:
        problems.append(f"sessions still registered: {dict(manager.sessions)}")
    # Every slot free: the limiter is private, but a leaked token is exactly
    # the bug that statistics() cannot show (it counts sessions, not tokens).
    limiter: trio.CapacityLimiter | None = getattr(manager, "_limiter", None)
    if limiter is not None and limiter.available_tokens != limiter.total_tokens:
        problems.append(
            f"limiter has {limiter.available_tokens} of {limiter.total_tokens} "
            f"tokens free (borrowers: {limiter.statistics().borrowers})"
        )
    return problems


def assert_settled(manager: ts.SessionManager, context: str = "") -> None:
    """Assert that ``manager`` holds nothing and its counters add up."""
    problems = manager_problems(manager)
    assert not problems, _message("manager not settled", problems, context)


def tasks_left() -> list[str]:
    """Names of the tasks of this run besides the caller and its ancestors."""
    current = trio.lowlevel.current_task()
    ancestors: set[trio.lowlevel.Task] = set()
    task: trio.lowlevel.Task | None = current
    while task is not None:
        ancestors.add(task)
        nursery = task.parent_nursery
        task = None if nursery is None else nursery.parent_task
    left: list[str] = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        assert task is not None
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                pending.append(child)
                # Trio's own helper task lives as long as the run does.
                if child not in ancestors and not child.name.startswith("<"):
                    left.append(child.name)
    return sorted(left)


def assert_no_tasks_left(context: str = "") -> None:
    """Assert that no task of this run is still running besides the caller's chain."""
    left = tasks_left()
    assert not left, _message("tasks left running", left, context)


def _message(what: str, problems: Iterable[str], context: str) -> str:
    lines = "\n  ".join(problems)
    return f"{what}{f' ({context})' if context else ''}:\n  {lines}"
