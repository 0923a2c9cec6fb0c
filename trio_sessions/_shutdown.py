"""The drain of one manager: stop admitting, let sessions finish, cancel the rest.

:class:`Drain` is the shutdown state machine, open -> closing -> drained; the
manager drives it and reports its :class:`ShutdownReport`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, final

import trio

from ._session import Session
from ._statistics import ShutdownReport

__all__ = ["SHUTDOWN_CANCEL_REASON", "Drain"]

logger = logging.getLogger("trio_sessions")

SHUTDOWN_CANCEL_REASON = "cancelled by the manager's shutdown"


@final
class Drain:
    """Shutdown of one manager's sessions, in the steps of API.md.

    :meth:`begin` stops admission (queued callers' scopes are cancelled);
    :meth:`run` waits for the sessions inside the drain's deadline, cancels
    the rest and waits up to ``grace`` for them to unwind; the manager calls
    :meth:`last_settled` when the last session completes while closing, which
    ends the drain. :attr:`drained` is set once :attr:`report` is,
    and ``on_drained`` is called then (the manager stops its guard).
    """

    __slots__ = (
        "_cancel_started_at",
        "_cancelled",
        "_deadline",
        "_grace",
        "_initial",
        "_linked_scopes",
        "_on_drained",
        "_sessions",
        "_started_at",
        "_timeout_reached",
        "_waiter_scopes",
        "closing",
        "drained",
        "report",
    )

    def __init__(
        self,
        sessions: dict[int, Session[Any]],
        waiter_scopes: set[trio.CancelScope],
        grace: float,
        on_drained: Callable[[], None],
    ) -> None:
        self._sessions = sessions
        self._on_drained = on_drained
        self._waiter_scopes = waiter_scopes
        self._grace = grace
        self.closing = False
        self.report: ShutdownReport | None = None
        self.drained = trio.Event()
        self._started_at = 0.0
        self._deadline = math.inf
        self._initial = 0
        # Numbers of the sessions the drain (or the code around) cancelled.
        self._cancelled: set[int] = set()
        self._cancel_started_at: float | None = None
        self._timeout_reached = False
        # Scopes of helpers that live as long as sessions may (cancel_when_drained).
        self._linked_scopes: list[trio.CancelScope] = []

    def cancel_when_drained(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` once the drain has ended (at once, if it has).

        For work that serves the sessions and has nothing left to do once
        none can run, such as the middleware's disconnect watch: the
        manager's nursery then waits for nothing more than the sessions.
        """
        if self.report is not None:
            scope.cancel()
        else:
            self._linked_scopes.append(scope)

    def begin(self, drain: float) -> None:
        """Stop admitting now; the sessions have ``drain`` seconds to finish."""
        now = trio.current_time()
        self.closing = True
        self._started_at = now
        self._deadline = now + drain
        self._initial = len(self._sessions)
        for scope in self._waiter_scopes:
            scope.cancel()
        if not self._sessions:
            self._finish(now, stuck=())

    def cancelled_from_outside(self, session: Session[Any]) -> None:
        """The code around the manager cancelled ``session`` while it drained.

        It counts as cancelled, not completed, even if it unwound before the
        drain got to cancel it.
        """
        self._cancelled.add(session._number)

    def last_settled(self, now: float) -> None:
        """The last session completed while closing: that ends the drain."""
        if self.report is None:
            self._finish(now, stuck=())

    def cancel_remaining(self, reason: str = SHUTDOWN_CANCEL_REASON) -> None:
        """Cancel every session still running, once, for ``reason``."""
        if self._cancel_started_at is not None:
            return
        self._cancel_started_at = trio.current_time()
        # A session whose own deadline or Session.cancel() got there first is
        # ending on its own account: it counts as completed, not cancelled.
        for number, session in list(self._sessions.items()):
            if session._cancel(reason):
                self._cancelled.add(number)

    async def run(self) -> ShutdownReport:
        """Wait out the drain, cancel what is left, and return the report."""
        with trio.CancelScope(deadline=self._deadline):
            await self.drained.wait()
        if self.report is None:
            self._timeout_reached = True
            self.cancel_remaining()
            assert self._cancel_started_at is not None
            with trio.CancelScope(deadline=self._cancel_started_at + self._grace):
                await self.drained.wait()
            if self.report is None:
                # Sessions cancelled above were rescheduled into the same batch
                # as this task: yield once more so that each has had its
                # unwinding step before any is called stuck.
                await trio.lowlevel.cancel_shielded_checkpoint()
        if self.report is None:
            stuck = tuple(session.id for session in self._sessions.values())
            logger.error(
                "trio_sessions: %d session(s) still running %.3g s after shutdown "
                "cancelled them (they shield themselves from cancellation): %s",
                len(stuck),
                self._grace,
                ", ".join(stuck),
            )
            self._finish(trio.current_time(), stuck=stuck)
        assert self.report is not None
        return self.report

    def _finish(self, now: float, stuck: tuple[str, ...]) -> None:
        cancelled = len(self._cancelled)
        self.report = ShutdownReport(
            initial_active=self._initial,
            completed=self._initial - cancelled,
            cancelled=cancelled,
            timeout_reached=self._timeout_reached and cancelled > 0,
            duration=now - self._started_at,
            stuck=stuck,
        )
        self.drained.set()
        for scope in self._linked_scopes:
            scope.cancel()
        self._linked_scopes.clear()
        self._on_drained()
