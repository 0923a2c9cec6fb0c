"""Invariants a settled manager and a finished Trio schedule must satisfy.

Thin wrappers over :mod:`trio_sessions.testing` that add a test's own context
to the message: any test can call :func:`assert_settled` after a run, or
collect :func:`manager_problems` to report them with its own context.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio_sessions as ts
from trio_sessions.testing import invariant_problems, statistics_problems, tasks_left

__all__ = [
    "assert_no_tasks_left",
    "assert_settled",
    "counter_problems",
    "manager_problems",
    "tasks_left",
]

counter_problems = statistics_problems


def manager_problems(manager: ts.SessionManager) -> list[str]:
    """What is wrong with ``manager`` once nothing should run in it any more."""
    return invariant_problems(manager, settled=True)


def assert_settled(manager: ts.SessionManager, context: str = "") -> None:
    """Assert that ``manager`` holds nothing and its counters add up."""
    problems = manager_problems(manager)
    assert not problems, _message("manager not settled", problems, context)


def assert_no_tasks_left(context: str = "") -> None:
    """Assert that no task of this run is still running besides the caller's chain."""
    left = tasks_left()
    assert not left, _message("tasks left running", left, context)


def _message(what: str, problems: Iterable[str], context: str) -> str:
    lines = "\n  ".join(problems)
    return f"{what}{f' ({context})' if context else ''}:\n  {lines}"
