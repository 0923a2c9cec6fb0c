"""Helpers for tests of code that uses trio_sessions: the contract's invariants.

:func:`check_invariants` asserts what must hold of a manager at every
checkpoint; with ``settled=True``, also that nothing is left running, waiting
or held. The project's own tests use them after every scenario::

    from trio_sessions.testing import check_invariants

    async def test_handler_times_out(autojump_clock):
        async with ts.open_session_manager(request_timeout=1) as manager:
            with pytest.raises(ts.SessionTimeout):
                await manager.run(handler, request)
        check_invariants(manager, settled=True)
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from ._manager import SessionManager
from ._statistics import SessionStatistics

__all__ = [
    "check_invariants",
    "invariant_problems",
    "statistics_problems",
    "tasks_left",
]


def invariant_problems(manager: SessionManager, *, settled: bool = False) -> list[str]:
    """What is wrong with ``manager`` now, one sentence each (empty: nothing).

    Always: the counters add up (``created == active + completed``,
    ``completed`` is the sum of the outcomes, ``rejected`` the sum of
    ``rejections``), ``active <= max_sessions``, ``active`` is the number of
    registered sessions, capacity tokens are taken only by them (and by
    callers waiting on a guard), and ``metadata_bytes``
    is the sum over them. With ``settled``: nothing is active, waiting,
    registered or held (no token, no metadata byte).
    """
    stats = manager.statistics()
    problems = statistics_problems(stats)
    sessions = list(manager.sessions.values())
    if stats.active != len(sessions):
        problems.append(f"active={stats.active} != {len(sessions)} sessions listed")
    held = sum(session.metadata_bytes for session in sessions)
    if stats.metadata_bytes != held:
        problems.append(
            f"metadata_bytes={stats.metadata_bytes} != {held} held by the sessions"
        )
    # A leaked token is the one defect statistics() cannot show: it counts
    # sessions, not tokens, so the limiter itself is asked.
    # Callers asking a guard for a lease hold their local token meanwhile.
    expected = stats.active + manager._in_guard
    taken = manager._limiter.borrowed_tokens
    if taken != expected:
        problems.append(
            f"{taken} capacity token(s) taken for {stats.active} active "
            f"session(s) and {manager._in_guard} caller(s) inside the guard"
        )
    if settled:
        for field in ("active", "waiting", "metadata_bytes"):
            value = getattr(stats, field)
            if value:
                problems.append(f"{field}={value}, expected 0 once settled")
    return problems


def check_invariants(
    manager: SessionManager, *, settled: bool = False
) -> SessionStatistics:
    """Assert :func:`invariant_problems` finds nothing; return the statistics.

    ::

        stats = check_invariants(manager, settled=True)
        assert stats.timed_out == 1

    Raises:
      AssertionError: listing every problem found.
    """
    problems = invariant_problems(manager, settled=settled)
    if problems:
        raise AssertionError(_message("session manager invariants broken", problems))
    return manager.statistics()


def tasks_left() -> list[str]:
    """Names of the tasks of this run besides the caller and its ancestors.

    After a scenario, nothing it started should still run::

        assert tasks_left() == []
    """
    ancestors: set[trio.lowlevel.Task] = set()
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
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


def statistics_problems(stats: SessionStatistics) -> list[str]:
    """What is wrong with the counters of one snapshot (empty: nothing).

    The invariants of :class:`~trio_sessions.SessionStatistics`, which hold
    at every checkpoint::

        assert statistics_problems(manager.statistics()) == []
    """
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


def _message(what: str, problems: Iterable[str]) -> str:
    lines = "\n  ".join(problems)
    return f"{what}:\n  {lines}"
