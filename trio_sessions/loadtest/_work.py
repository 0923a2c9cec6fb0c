"""The work a session does, and what the scenarios share to run it.

:func:`simulated_work` is the default work; :class:`WatchedWork` is a user's
handler as the scenarios call it (results dropped, calls in flight tracked).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, final

import trio

from .. import SessionConfig

# Documented where the package face re-exports them.
Work = Callable[[], Awaitable[object]]
ProgressCallback = Callable[[int, int], None]
WORK_SECONDS = 0.01

# A hung user handler must turn into a failed scenario, not a hung load test.
SESSION_TIMEOUT = 10.0


async def simulated_work() -> None:
    """The built-in work of every scenario: sleep for :data:`WORK_SECONDS`."""
    await trio.sleep(WORK_SECONDS)


def config(max_sessions: int, **fields: Any) -> SessionConfig:
    """The config of a scenario's manager: its sessions get a deadline by default."""
    fields.setdefault("request_timeout", SESSION_TIMEOUT)
    return SessionConfig(max_sessions=max_sessions, **fields)


def resolve(work: Work | None) -> Work:
    """The work a scenario runs: the simulated work, or ``work`` watched."""
    if work is None:
        return simulated_work
    return work if isinstance(work, WatchedWork) else WatchedWork(work)


@final
class WatchedWork:
    """A user's handler as the scenarios run it: results dropped, calls tracked.

    The load test measures the handler, so it keeps nothing the handler
    returns: each result is dropped the moment the call returns, and memory
    stays bounded by the calls in flight, whatever the results weigh. The
    calls in flight are kept (start and deadline) so that a run waiting on a
    handler that ignores cancellation can say so while it waits.
    """

    def __init__(self, work: Work) -> None:
        self.work = work
        self.name = _callable_name(work)
        self.calls: dict[int, tuple[float, float]] = {}
        self.scenario = ""
        self._count = 0

    async def __call__(self) -> None:
        key = self._count
        self._count += 1
        self.calls[key] = (trio.current_time(), trio.current_effective_deadline())
        try:
            await self.work()  # the result is dropped here, as soon as it exists
        finally:
            del self.calls[key]


def _callable_name(work: object) -> str:
    module = getattr(work, "__module__", None)
    name = getattr(work, "__qualname__", None) or type(work).__qualname__
    return f"{module}:{name}" if module else name


@final
class Gate:
    """Holds sessions open until released, and tells when all of them arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.all_arrived = trio.Event()
        self.release = trio.Event()
        if expected <= 0:
            self.all_arrived.set()

    async def hold_then(self, work: Work) -> None:
        """Arrive, wait for the release, then do ``work``."""
        self.arrived += 1
        if self.arrived >= self.expected:
            self.all_arrived.set()
        await self.release.wait()
        await work()
