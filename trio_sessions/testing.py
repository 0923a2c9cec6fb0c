"""Helpers for tests of code that uses trio_sessions, and a pytest plugin.

:func:`check_invariants` asserts what must hold of a manager at every
checkpoint; with ``settled=True``, also that nothing is left running, waiting
or held. The project's own tests use them after every scenario::

    from trio_sessions.testing import check_invariants

    async def test_handler_times_out(autojump_clock):
        async with ts.open_session_manager(request_timeout=1) as manager:
            with pytest.raises(ts.SessionTimeout):
                await manager.run(handler, request)
        check_invariants(manager, settled=True)

:func:`wait_for_active`, :func:`hang_until_cancelled` and
:func:`ignore_cancellation_for` are what a timeout or cancellation test needs;
:func:`open_session_managers` opens managers on demand and checks each once
it has shut down. Enabled with ``pytest_plugins = ["trio_sessions.testing"]``
(or ``-p trio_sessions.testing``), this module is also a pytest plugin: the
``session_manager`` and ``session_manager_factory`` fixtures, and the
``session_manager`` marker that configures the first. pytest is not a
dependency: without it, the plugin is simply not defined.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, final

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

from ._config import SessionConfig
from ._guard import AdmissionGuard
from ._manager import SessionManager, open_session_manager
from ._statistics import SessionStatistics

__all__ = [
    "SessionManagerFactory",
    "check_invariants",
    "hang_until_cancelled",
    "ignore_cancellation_for",
    "invariant_problems",
    "open_session_managers",
    "statistics_problems",
    "tasks_left",
    "wait_for_active",
]


def invariant_problems(manager: SessionManager, *, settled: bool = False) -> list[str]:
    """What is wrong with ``manager`` now, one sentence each (empty: nothing).

    Always: the counters add up (``created == active + completed``,
    ``completed`` is the sum of the outcomes, ``rejected`` the sum of
    ``rejections``), ``active <= max_sessions`` (unless the limit was
    lowered), ``active`` is the number of registered sessions, capacity
    tokens are taken only by them (and by callers waiting on a guard),
    ``metadata_bytes`` is the sum over them, no key has more sessions than
    its limit, and a controller's limit is within its floor and ceiling.
    With ``settled``: nothing is active, waiting, registered or held (no
    token, no metadata byte).
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
    scheduler = manager._scheduler
    if scheduler is not None:
        for key, count in scheduler._active_by_key.items():
            limit = scheduler.key_limit(key)
            if limit is not None and count > limit:
                problems.append(f"key {key!r} has {count} sessions, over its {limit}")
    controller = manager.controller
    if controller is not None and not (
        controller.min_limit <= stats.max_sessions <= controller.max_limit
    ):
        problems.append(
            f"max_sessions={stats.max_sessions} outside the controller's "
            f"[{controller.min_limit}, {controller.max_limit}]"
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
    # Only a limit lowered below the sessions running then leaves more active.
    if stats.active > stats.max_sessions and not stats.limit_changes:
        problems.append(f"active={stats.active} > max_sessions={stats.max_sessions}")
    keyed = sum(key.active for key in stats.keys.values()) + stats.other_keys.active
    if keyed > stats.active:
        problems.append(
            f"{keyed} sessions active under keys, only {stats.active} in all"
        )
    return problems


def _message(what: str, problems: Iterable[str]) -> str:
    lines = "\n  ".join(problems)
    return f"{what}:\n  {lines}"


# ------------------------------------------------------------ timeout test helpers


@final
class _Watch(trio.abc.Instrument):
    """Checks ``reached`` after every task step; sets ``event`` the first time."""

    def __init__(self, reached: Callable[[], bool], manager: SessionManager) -> None:
        self.reached = reached
        self.manager = manager
        self.event = trio.Event()
        self.stats: SessionStatistics | None = None

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.stats is None and self.reached():
            self.stats = self.manager.statistics()
            self.event.set()


async def wait_for_active(
    manager: SessionManager, active: int, *, waiting: int | None = None
) -> SessionStatistics:
    """Wait until exactly ``active`` sessions of ``manager`` run; return the stats.

    The sessions a test started in a nursery, or that queued for a slot, are
    active only once their tasks have run: wait for them instead of sleeping::

        for _ in range(2):
            nursery.start_soon(manager.run, hang_until_cancelled)
        await wait_for_active(manager, 2)
        with pytest.raises(ts.CapacityError):
            await manager.run(hang_until_cancelled)

    With ``waiting``, also until exactly that many callers queue for a slot.
    It is woken by the step of whichever task brings the manager there, so
    time passes only as the test's clock lets it (under ``autojump_clock``,
    to the instant the count is reached, and no further); it returns the
    statistics of that moment. If the counts already hold it returns at
    once, a cancellation point but not a schedule point. It waits for as long
    as it takes: put it under :func:`trio.fail_after` if it might not happen.
    """

    def reached() -> bool:
        # statistics() builds whole latency summaries; this runs every step.
        return len(manager.sessions) == active and (
            waiting is None or manager._waiting == waiting
        )

    if reached():
        await trio.lowlevel.checkpoint_if_cancelled()
        return manager.statistics()
    watch = _Watch(reached, manager)
    trio.lowlevel.add_instrument(watch)
    try:
        await watch.event.wait()
    finally:
        trio.lowlevel.remove_instrument(watch)
    assert watch.stats is not None
    return watch.stats


async def hang_until_cancelled(*args: object) -> NoReturn:
    """A session function that never returns: it ends only when cancelled.

    It takes any arguments, to stand in for a handler::

        session = await manager.start_session(hang_until_cancelled, request)
    """
    await trio.sleep_forever()


async def ignore_cancellation_for(seconds: float) -> None:
    """A session function that runs ``seconds`` whatever cancels it, then unwinds.

    It sleeps in a shielded scope, as slow cleanup code would, and then
    checkpoints: if it was cancelled meanwhile (a deadline, shutdown,
    :meth:`Session.cancel`), it raises :exc:`trio.Cancelled` only then;
    otherwise it returns. A shutdown waits for it, up to ``shutdown_grace``
    after cancelling it::

        config = dict(shutdown_timeout=1, shutdown_grace=5)
        async with ts.open_session_manager(**config) as manager:
            session = await manager.start_session(ignore_cancellation_for, 3)
            report = await manager.shutdown()
        assert session.outcome is ts.Outcome.CANCELLED
        assert report.duration == 3
    """
    with trio.CancelScope(shield=True):
        await trio.sleep(seconds)
    await trio.lowlevel.checkpoint()


# ------------------------------------------------------------------- managers on demand


@final
class SessionManagerFactory:
    """Opens session managers on demand, each living until the block ends.

    What :func:`open_session_managers` and the ``session_manager_factory``
    fixture give. Call it with the arguments of
    :func:`~trio_sessions.open_session_manager`::

        manager = await open_manager(max_sessions=2, request_timeout=5)
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._closing = trio.Event()
        self._managers: list[SessionManager] = []

    @property
    def managers(self) -> list[SessionManager]:
        """The managers opened so far, oldest first."""
        return list(self._managers)

    async def __call__(
        self,
        config: SessionConfig | None = None,
        *,
        guard: AdmissionGuard | None = None,
        **overrides: Any,
    ) -> SessionManager:
        """Open one more manager, running in a task of the block's nursery.

        Raises:
          RuntimeError: the block has ended.
          TypeError, ValueError: a configuration field is invalid.
        """
        if self._closing.is_set():
            raise RuntimeError("the open_session_managers() block has ended")
        manager: SessionManager = await self._nursery.start(
            self._serve, config, guard, overrides
        )
        self._managers.append(manager)
        return manager

    async def _serve(
        self,
        config: SessionConfig | None,
        guard: AdmissionGuard | None,
        overrides: dict[str, Any],
        *,
        task_status: trio.TaskStatus[SessionManager] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with open_session_manager(config, guard=guard, **overrides) as manager:
            task_status.started(manager)
            await self._closing.wait()


@asynccontextmanager
async def open_session_managers() -> AsyncIterator[SessionManagerFactory]:
    """Open managers on demand; on exit, shut each down and check its invariants.

    ::

        async with open_session_managers() as open_manager:
            manager = await open_manager(max_sessions=1)
            await manager.start_session(trio.sleep, 10)
        # Both shut down (drained, then cancelled), then checked settled.

    On leaving the block, every manager opened is checked with
    :func:`invariant_problems` as the block left it, then shut down as
    leaving its own ``async with`` would (a drain of ``shutdown_timeout``,
    then cancellation), then checked again with ``settled=True``. If the
    block raises, the managers are cancelled at once and nothing is checked.

    Raises:
      AssertionError: listing every problem found, manager by manager.
    """
    problems: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            factory = SessionManagerFactory(nursery)
            yield factory
            for number, manager in enumerate(factory._managers, 1):
                problems += [
                    f"manager {number} before its shutdown: {problem}"
                    for problem in invariant_problems(manager)
                ]
            factory._closing.set()
    except BaseExceptionGroup as group:
        # The block's own exception, or a manager's, handed over as itself.
        if len(group.exceptions) != 1:
            raise
        raise group.exceptions[0] from None
    for number, manager in enumerate(factory._managers, 1):
        problems += [
            f"manager {number} after its shutdown: {problem}"
            for problem in invariant_problems(manager, settled=True)
        ]
    if problems:
        raise AssertionError(_message("session manager invariants broken", problems))


# pytest is not a dependency: the plugin exists only where pytest does.
try:
    from ._pytest_plugin import pytest_configure as pytest_configure
    from ._pytest_plugin import session_manager as session_manager
    from ._pytest_plugin import session_manager_factory as session_manager_factory
except ModuleNotFoundError as exc:  # pragma: no cover - the tests run under pytest
    if exc.name != "pytest":
        raise
