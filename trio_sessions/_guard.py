"""Admission guards: a second gate, such as a fleet-wide limit, consulted at admission.

A guard is asked for a lease after the manager's local slot is secured and told
to release it in the step the session completes.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

import trio

if TYPE_CHECKING:
    from ._manager import SessionManager
    from ._session import Session

__all__ = ["AdmissionGuard"]


class AdmissionGuard(abc.ABC):
    """Base class of extra admission checks: ``open_session_manager(guard=...)``.

    The manager calls :meth:`acquire` for each session after its local capacity
    token is secured, and :meth:`release` in the step the session completes.
    :meth:`run` is started in the manager's nursery before the ``async with``
    body runs and cancelled once shutdown has drained every session. A guard
    refuses by raising a :exc:`RejectedError` whose ``reason`` is one of
    :attr:`reasons`; each is counted in ``statistics().rejections``.

    A caller waiting for the guard holds its local capacity token meanwhile,
    so local capacity bounds the callers in flight to the guard too.

    With a guard, admission may need I/O, so only the async
    :meth:`SessionManager.start_session` and :meth:`SessionManager.run` can
    admit; :meth:`SessionManager.start_session_nowait` raises
    :exc:`RuntimeError`. See :mod:`trio_sessions.redis` for a fleet-wide limit::

        class OneAtATime(ts.AdmissionGuard):
            reasons = ("busy",)

            def __init__(self) -> None:
                self.holder: ts.Session | None = None

            async def acquire(self, session, deadline):
                await trio.lowlevel.checkpoint()
                if self.holder is not None:
                    raise ts.RejectedError("busy", reason="busy")
                self.holder = session

            def release(self, session):
                self.holder = None

    Attributes:
      reasons: Rejection reasons this guard may raise, pre-registered in the
        statistics.
      bounded_asks: True if :meth:`acquire` with ``deadline=-inf`` (asking,
        not waiting) always returns within a bounded time of its own, such
        as an I/O timeout. The manager then gives such a call no cancel scope
        of its own (which costs a good part of a guarded admission): shutdown
        does not cancel it, but refuses the caller once it returns, and gives
        its lease back. False (the default): shutdown cancels every call.
    """

    reasons: ClassVar[tuple[str, ...]] = ()
    bounded_asks: ClassVar[bool] = False

    async def run(
        self,
        manager: SessionManager,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Background work for the manager's lifetime (renewing leases, say).

        Call ``task_status.started()`` once ready. The default does nothing.
        This task is cancelled once shutdown has drained every session; to do
        I/O while cleaning up (flushing the last releases, say), keep the
        resources it needs outside the cancelled scope, in a shielded scope
        with a timeout of its own.
        """
        task_status.started()

    @abc.abstractmethod
    async def acquire(self, session: Session, deadline: float) -> None:
        """Grant ``session`` a lease, or raise :exc:`RejectedError`.

        ``deadline`` is the :func:`trio.current_time` until which this may wait
        for room (``-inf``: do not wait at all). If this is cancelled, the
        session is not admitted and nothing must be held for it.
        """

    @abc.abstractmethod
    def release(self, session: Session) -> None:
        """Give back the lease of ``session``, which just completed.

        Called synchronously in the step the session completes: it must not
        block. An exception raised here is logged and otherwise ignored.
        """
