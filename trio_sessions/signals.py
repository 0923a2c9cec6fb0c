"""Shut down on SIGTERM or SIGINT: the first one drains, a second one hurries.

:func:`open_shutdown_signals` catches the signals for the whole of its block,
so none of them reaches the default handler (which kills the process on
``SIGTERM`` and loses the shutdown report).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any, final

import trio

__all__ = ["ShutdownSignals", "open_shutdown_signals"]

_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@final
class ShutdownSignals:
    """The signals an :func:`open_shutdown_signals` block has caught so far.

    :meth:`wait` returns at the first one, the moment to start draining; the
    second one cancels :attr:`cancel_scope`, the block's own scope, so that
    whatever the drain still waits for is cancelled at once. Signals after the
    second are recorded and change nothing.

    Attributes:
      cancel_scope: The :class:`trio.CancelScope` a second signal cancels:
        by default the one around the block (like :func:`trio.move_on_after`,
        it catches that cancellation, and the code after the block runs
        normally), or the one given to :func:`open_shutdown_signals`.
    """

    def __init__(self, cancel_scope: trio.CancelScope) -> None:
        self._received: list[int] = []
        self._first = trio.Event()
        self._open = True
        self._forced = False
        self.cancel_scope = cancel_scope

    @property
    def received(self) -> tuple[int, ...]:
        """Every signal caught so far, in order of arrival (``signal.Signals``).

        ::

            print(", ".join(signal.Signals(n).name for n in signals.received))
        """
        return tuple(self._received)

    @property
    def forced(self) -> bool:
        """True once a second signal arrived while the block was still running.

        The block was cancelled then; a program usually reports it with a
        non-zero exit status::

            return 130 if signals.forced else 0
        """
        return self._forced

    async def wait(self) -> None:
        """Wait for the first signal (return at once if it came already).

        Fits Hypercorn's ``shutdown_trigger``; :attr:`received` says which
        signal it was::

            await hypercorn.trio.serve(app, config, shutdown_trigger=signals.wait)

        Cancelling it leaves the signals as they were. This is a checkpoint.
        """
        await self._first.wait()

    def _deliver(self, signum: int) -> None:
        self._received.append(signal.Signals(signum))
        if len(self._received) == 1:
            self._first.set()
        elif len(self._received) == 2 and self._open:
            self._forced = True
            self.cancel_scope.cancel()


@asynccontextmanager
async def open_shutdown_signals(
    *signals: int, cancel_scope: trio.CancelScope | None = None
) -> AsyncIterator[ShutdownSignals]:
    """Catch ``signals`` (default ``SIGINT`` and ``SIGTERM``) for a graceful shutdown.

    Inside the block every one of these signals is caught, however many
    arrive: the first wakes :meth:`ShutdownSignals.wait`, the second cancels
    the block (as servers do on a second Ctrl+C), and none reaches the
    default handler, which would kill the process on ``SIGTERM`` (exit status
    143) or raise :exc:`KeyboardInterrupt` on ``SIGINT``. On the way out the
    previous handlers are restored. With Hypercorn and
    :class:`~trio_sessions.asgi.SessionMiddleware`::

        from trio_sessions.signals import open_shutdown_signals

        async with open_shutdown_signals() as signals:
            await hypercorn.trio.serve(app, config, shutdown_trigger=signals.wait)
        print(app.shutdown_report)
        sys.exit(130 if signals.forced else 0)

    With your own server, drain in the block::

        async with open_shutdown_signals() as signals:
            ...  # start serving
            await signals.wait()
            report = await manager.shutdown()

    To cut short only part of the block, pass your own ``cancel_scope`` and
    enter it around that part; the second signal then cancels it and nothing
    else. Here the drain, so that the manager, which lives outside that scope,
    cancels what is left itself and reports it::

        hurry = trio.CancelScope()
        async with open_shutdown_signals(cancel_scope=hurry) as signals:
            ...  # start serving
            await signals.wait()
            with hurry:
                await manager.shutdown()  # a second signal cancels this wait

    Unlike :func:`trio.open_signal_receiver`, a signal that arrives while the
    block is being left is not delivered again to the previous handler.

    Raises:
      RuntimeError: not in the main thread (only it can handle signals).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("open_shutdown_signals must be called in the main thread")
    signums = tuple(signals) or _DEFAULT_SIGNALS
    token = trio.lowlevel.current_trio_token()
    shutdown = ShutdownSignals(
        trio.CancelScope() if cancel_scope is None else cancel_scope
    )

    def handler(signum: int, frame: FrameType | None) -> None:
        # As trio.open_signal_receiver does: the handler only schedules the
        # work, which runs in the Trio loop. Not idempotent: two quick SIGTERMs
        # are two signals.
        with contextlib.suppress(trio.RunFinishedError):  # trio.run has ended
            token.run_sync_soon(shutdown._deliver, signum)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for signum in dict.fromkeys(signums):
            previous[signum] = signal.signal(signum, handler)
        if cancel_scope is None:
            with shutdown.cancel_scope:
                yield shutdown
        else:
            yield shutdown
    finally:
        shutdown._open = False
        for signum, old in previous.items():
            signal.signal(signum, old)
