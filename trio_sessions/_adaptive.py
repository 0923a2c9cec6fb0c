"""Adaptive concurrency: controllers that move a manager's capacity with its latency.

:class:`LimitController` is the protocol the manager feeds with each completed
session; the controllers in this module implement it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._session import Outcome

__all__ = ["LimitController"]


@runtime_checkable
class LimitController(Protocol):
    """Chooses a manager's capacity from the sessions it completes.

    Pass one to :func:`open_session_manager` as ``controller=``; the manager
    starts at :attr:`limit` and, in the step each session completes, calls
    :meth:`on_sample` and resizes itself to the limit returned (clamped to
    ``[min_limit, max_limit]``). Lowering the limit never cancels a running
    session: admission waits until the active count is below it.
    """

    @property
    def limit(self) -> int:
        """The limit the controller wants now; the manager starts at it."""
        ...

    @property
    def min_limit(self) -> int:
        """The floor: the manager's capacity never goes below it."""
        ...

    @property
    def max_limit(self) -> int:
        """The ceiling: the manager's capacity never goes above it."""
        ...

    def on_sample(
        self, *, duration: float, outcome: Outcome, in_flight: int, now: float
    ) -> int:
        """Take one completed session into account; return the limit wanted.

        ``duration`` is its run time in seconds, ``outcome`` how it ended,
        ``in_flight`` the sessions active when it completed (itself included)
        and ``now`` the Trio clock. Called in the step it settles: it must not
        block, and an exception it raises is logged and ignored.
        """
        ...
