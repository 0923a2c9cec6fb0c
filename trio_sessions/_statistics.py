"""Snapshots of a manager's counters and of its shutdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

import attrs

from ._latency import LatencySummary
from ._scheduler import NO_KEYS, KeyStatistics

__all__ = ["SessionStatistics", "ShutdownReport"]


@final
@attrs.frozen
class SessionStatistics:
    """A consistent snapshot of a manager's counters.

    Returned by :meth:`SessionManager.statistics`.

    All figures were read in one step of the Trio scheduler, so the invariants
    ``created == active + completed``,
    ``completed == succeeded + failed + timed_out + cancelled``,
    ``rejected == sum(rejections.values())`` and ``active <= max_sessions``
    (unless :meth:`SessionManager.resize` or a controller lowered the limit
    below the sessions running then) always hold::

        stats = manager.statistics()
        print(f"{stats.active}/{stats.max_sessions} busy, "
              f"{stats.rejections['capacity']} turned away")

    Attributes:
      max_sessions: The capacity in force: ``config.max_sessions`` unless
        resized or set by a controller.
      active: Sessions admitted and not yet completed.
      waiting: Callers queued for a slot (not sessions yet).
      peak_active: Highest ``active`` seen.
      created: Sessions admitted, all time.
      completed: Sessions completed, all time.
      succeeded: Completed with outcome ``SUCCESS``.
      failed: Completed with outcome ``ERROR``.
      timed_out: Completed with outcome ``TIMEOUT`` (never counted as failed).
      cancelled: Completed with outcome ``CANCELLED``.
      rejected: Sessions refused admission, all time.
      rejections: Refusals by reason; always holds ``"capacity"``,
        ``"key_capacity"``, ``"shutting_down"`` and ``"metadata"``.
      success_rate: ``succeeded / completed``, or ``None`` while nothing completed.
      metadata_bytes: Metadata bytes held by live sessions now.
      peak_metadata_bytes: Highest ``metadata_bytes`` seen.
      durations: Run time of completed sessions.
      wait_times: Time spent queued by sessions that waited for a slot.
      limit_changes: How many times the capacity changed (by
        :meth:`SessionManager.resize` or a controller).
      keys: :class:`KeyStatistics` of the busiest keys given as ``key=``, by
        name, at most ``config.tracked_keys`` of them.
      other_keys: The other keys' statistics, added up.
    """

    max_sessions: int
    active: int
    waiting: int
    peak_active: int
    created: int
    completed: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    rejected: int
    rejections: Mapping[str, int]
    success_rate: float | None
    metadata_bytes: int
    peak_metadata_bytes: int
    durations: LatencySummary
    wait_times: LatencySummary
    limit_changes: int = 0
    keys: Mapping[str, KeyStatistics] = attrs.field(factory=dict)
    other_keys: KeyStatistics = NO_KEYS


@final
@attrs.frozen
class ShutdownReport:
    """What :meth:`SessionManager.shutdown` did.

    ``completed + cancelled == initial_active``::

        report = await manager.shutdown(timeout=5)
        if report.timeout_reached:
            log.warning("cancelled %d sessions after the drain", report.cancelled)

    Attributes:
      initial_active: Sessions active when shutdown started.
      completed: Those that ended on their own during the drain.
      cancelled: Those still running when the drain ended, which shutdown cancelled.
      timeout_reached: True only when the drain timed out with sessions left,
        so they had to be cancelled.
      duration: Seconds from the start of shutdown until the last session ended.
      stuck: Ids of cancelled sessions that were still running
        ``shutdown_grace`` seconds after being cancelled (they shield
        themselves from cancellation). Empty in any healthy program.
    """

    initial_active: int
    completed: int
    cancelled: int
    timeout_reached: bool
    duration: float
    stuck: tuple[str, ...] = ()
