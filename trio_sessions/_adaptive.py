"""Adaptive concurrency: controllers that move a manager's capacity with its latency.

:class:`LimitController` is the protocol the manager feeds with each completed
session; :class:`AIMDController`, :class:`Gradient2Controller` and
:class:`VegasController` implement it. They compute, and nothing else: no I/O,
no clock of their own, constant work per sample and constant memory.
"""

from __future__ import annotations

import math
from typing import Final, Protocol, final, runtime_checkable

from ._session import Outcome
from ._validate import check_count, check_seconds

__all__ = [
    "AIMDController",
    "Gradient2Controller",
    "LimitController",
    "VegasController",
]

_SUCCESS: Final = Outcome.SUCCESS
_ERROR: Final = Outcome.ERROR
_TIMEOUT: Final = Outcome.TIMEOUT
_CANCELLED: Final = Outcome.CANCELLED


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


# ------------------------------------------------------------------ validation


def _count(value: object, name: str, minimum: int) -> int:
    count = check_count(value, name, minimum=minimum)
    assert count is not None  # not optional: check_count raised on None
    return count


def _check_ratio(
    value: object,
    name: str,
    *,
    low: float,
    high: float,
    closed_low: bool = True,
    closed_high: bool = True,
) -> float:
    """Return ``value`` as a float in the interval given, or raise naming ``name``.

    Raises:
      TypeError: not a number (``bool`` is refused).
      ValueError: NaN, or outside the interval.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    number = float(value)
    above = number >= low if closed_low else number > low
    below = number <= high if closed_high else number < high
    if not (above and below):  # NaN fails both comparisons
        interval = (
            f"{'[' if closed_low else '('}{low:g}, "
            f"{high:g}{']' if closed_high else ')'}"
        )
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return number


def _clamp(value: float, low: int, high: int) -> float:
    return low if value < low else high if value > high else value


# ----------------------------------------------------------------- the bases


class _Controller:
    """What every controller here has: three limits, checked, and an estimate.

    The estimate is a float, so that steps smaller than one session add up;
    :attr:`limit` is its integer part, and it never leaves
    ``[min_limit, max_limit]``.
    """

    __slots__ = ("_estimate", "_max", "_min")

    def __init__(
        self, initial_limit: object, min_limit: object, max_limit: object
    ) -> None:
        self._min = _count(min_limit, self._name("min_limit"), 1)
        self._max = _count(max_limit, self._name("max_limit"), self._min)
        start = _count(initial_limit, self._name("initial_limit"), self._min)
        if start > self._max:
            raise ValueError(
                f"{self._name('initial_limit')} must be <= max_limit "
                f"({self._max}), got {start!r}"
            )
        self._estimate = float(start)

    def _name(self, argument: str) -> str:
        return f"{type(self).__name__}.{argument}"

    @property
    def limit(self) -> int:
        """The limit wanted now, within ``[min_limit, max_limit]``."""
        return int(self._estimate)

    @property
    def min_limit(self) -> int:
        """The floor."""
        return self._min

    @property
    def max_limit(self) -> int:
        """The ceiling."""
        return self._max

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} limit={self.limit} in [{self._min}, {self._max}]>"
        )


@final
class _Window:
    """Samples gathered until one limit's worth have completed (one round trip).

    The latency controllers judge the mean run time of a window, not single
    sessions: one slow request says little, a round trip's worth says whether
    a queue is building. Constant memory: a count, a sum, a maximum, a flag.
    """

    __slots__ = ("count", "dropped", "peak_in_flight", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.peak_in_flight = 0
        self.dropped = False

    def close(self) -> float:
        """The window's mean run time; the window starts again, empty."""
        mean = self.total / self.count
        self.count = 0
        self.total = 0.0
        self.peak_in_flight = 0
        self.dropped = False
        return mean


class _Windowed(_Controller):
    """A controller that moves once per window rather than once per session."""

    __slots__ = ("_min_window", "_window")

    def __init__(
        self,
        initial_limit: object,
        min_limit: object,
        max_limit: object,
        min_window: object,
    ) -> None:
        super().__init__(initial_limit, min_limit, max_limit)
        self._min_window = _count(min_window, self._name("min_window"), 1)
        self._window = _Window()

    def _filled(self, duration: float, in_flight: int) -> _Window | None:
        """Add a sample; the window once it holds a limit's worth, else ``None``."""
        window = self._window
        window.count += 1
        window.total += duration
        if in_flight > window.peak_in_flight:
            window.peak_in_flight = in_flight
        if window.count < self._min_window or window.count < self._estimate:
            return None
        return window


# ------------------------------------------------------------------------ AIMD


@final
class AIMDController(_Controller):
    """Loss-based limit: add one per round trip of successes, back off on a loss.

    A *loss* is a session that timed out (``TIMEOUT``), one slower than
    ``slow_after`` seconds if given, and, with ``errors_are_losses``, one that
    raised (``ERROR``). On a loss the limit is multiplied by ``backoff_ratio``,
    once per round trip: the sessions that were already running when it backed
    off, and that time out in their turn, are the same congestion, not new
    evidence. A successful session adds ``1 / limit`` while at least half the
    limit is in use, so a saturated manager grows by one per round trip and an
    idle one does not grow at all. ``CANCELLED`` sessions are ignored::

        controller = ts.AIMDController(max_limit=100, slow_after=0.25)
        async with ts.open_session_manager(controller=controller) as manager:
            ...

    Without ``slow_after``, timeouts are its only signal, so it settles where
    sessions start to hit their deadline, well past the point where latency
    started to rise: give it the latency you are prepared to serve.

    Args:
      initial_limit: The limit to start at.
      min_limit: The floor, ``>= 1``.
      max_limit: The ceiling, ``>= min_limit``.
      backoff_ratio: The factor applied on a loss, in ``[0.5, 1)``.
      slow_after: Seconds after which a session counts as a loss even if it
        succeeded; ``None`` for timeouts only.
      errors_are_losses: Whether a session that raised counts as a loss.

    Raises:
      TypeError: an argument of the wrong type (the message names it).
      ValueError: an argument out of range (the message names it).
    """

    __slots__ = ("_backed_off_at", "_backoff", "_errors", "_slow_after")

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        backoff_ratio: float = 0.9,
        slow_after: float | None = None,
        errors_are_losses: bool = False,
    ) -> None:
        super().__init__(initial_limit, min_limit, max_limit)
        self._backoff = _check_ratio(
            backoff_ratio,
            self._name("backoff_ratio"),
            low=0.5,
            high=1,
            closed_high=False,
        )
        slow = check_seconds(
            slow_after, self._name("slow_after"), optional=True, positive=True
        )
        self._slow_after = math.inf if slow is None else slow
        if not isinstance(errors_are_losses, bool):
            raise TypeError(
                f"{self._name('errors_are_losses')} must be a bool, "
                f"not {type(errors_are_losses).__name__}"
            )
        self._errors = errors_are_losses
        # When it last backed off: a loss by a session started before then
        # was already answered.
        self._backed_off_at = -math.inf

    def on_sample(
        self, *, duration: float, outcome: Outcome, in_flight: int, now: float
    ) -> int:
        """Grow by ``1 / limit`` on a success near the limit; back off on a loss."""
        if outcome is _CANCELLED:
            return int(self._estimate)
        if (
            outcome is _TIMEOUT
            or duration > self._slow_after
            or (outcome is _ERROR and self._errors)
        ):
            if now - duration >= self._backed_off_at:
                self._estimate = max(self._min, self._estimate * self._backoff)
                self._backed_off_at = now
        elif outcome is _SUCCESS and 2 * in_flight >= self._estimate:
            self._estimate = min(self._max, self._estimate + 1 / self._estimate)
        return int(self._estimate)


# ------------------------------------------------------------------- Gradient2


@final
class Gradient2Controller(_Windowed):
    """Latency-gradient limit in the style of Netflix's ``Gradient2Limit``.

    Each round trip's worth of sessions (a *window* of ``limit`` samples, at
    least ``min_window``) gives a short-term latency, their mean run time; an
    exponential average over ``long_window`` windows gives the long-term one.
    While the short-term latency stays within ``tolerance`` times the
    long-term one the limit grows by ``queue_size`` per window, damped by
    ``smoothing``; beyond it the limit shrinks in proportion (the *gradient*,
    ``tolerance * long / short``, never below one half). A window whose
    sessions used less than half the limit leaves the limit alone (the limit
    is not what held them back), though the long-term average learns from it.
    Errors and cancellations are ignored; a timeout counts with its run
    time::

        controller = ts.Gradient2Controller(max_limit=500)
        async with ts.open_session_manager(controller=controller) as manager:
            ...

    Unlike Netflix's, the long-term average learns only from windows within
    the tolerance: otherwise, under sustained load, it learns the queue it
    should be measuring against, and the limit drifts up with it. A backend
    that became slower for good is learned once the limit has fallen to its
    floor and latency still has not come down. As in Netflix's, a long-term
    latency more than twice the short-term one (load has just gone away) is
    brought down faster than the average alone would.

    Args:
      initial_limit: The limit to start at.
      min_limit: The floor, ``>= 1``.
      max_limit: The ceiling, ``>= min_limit``.
      tolerance: How much slower than the long-term latency a window may be
        before the limit shrinks, ``>= 1``.
      smoothing: The share of each new estimate taken, in ``(0, 1]``.
      queue_size: Sessions added to the gradient's estimate each window: how
        fast the limit grows while latency holds, ``>= 0``.
      long_window: Windows the long-term average spans, ``>= 1``.
      min_window: The fewest sessions a window averages, ``>= 1``.

    Raises:
      TypeError: an argument of the wrong type (the message names it).
      ValueError: an argument out of range (the message names it).
    """

    __slots__ = (
        "_long",
        "_long_count",
        "_long_factor",
        "_queue_size",
        "_smoothing",
        "_tolerance",
    )

    # The long-term average is a plain mean of its first windows, so that one
    # early window does not stand for the whole baseline.
    _WARMUP: Final = 10

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        tolerance: float = 1.05,
        smoothing: float = 0.4,
        queue_size: int = 1,
        long_window: int = 600,
        min_window: int = 10,
    ) -> None:
        super().__init__(initial_limit, min_limit, max_limit, min_window)
        self._tolerance = _check_ratio(
            tolerance, self._name("tolerance"), low=1, high=math.inf, closed_high=False
        )
        self._smoothing = _check_ratio(
            smoothing, self._name("smoothing"), low=0, high=1, closed_low=False
        )
        self._queue_size = _count(queue_size, self._name("queue_size"), 0)
        span = _count(long_window, self._name("long_window"), 1)
        self._long_factor = 2 / (span + 1)
        self._long = 0.0
        self._long_count = 0

    @property
    def long_term_latency(self) -> float | None:
        """The long-term latency in seconds, ``None`` before the first window."""
        return self._long if self._long_count else None

    def on_sample(
        self, *, duration: float, outcome: Outcome, in_flight: int, now: float
    ) -> int:
        """Add the session to the window; at its end, apply the gradient."""
        if outcome is _CANCELLED or outcome is _ERROR:
            return int(self._estimate)
        window = self._filled(duration, in_flight)
        if window is None:
            return int(self._estimate)
        peak = window.peak_in_flight
        short = window.close()
        if short <= 0:  # sessions that never waited say nothing about latency
            return int(self._estimate)
        long = self._long
        if self._long_count < self._WARMUP or short <= self._tolerance * long:
            long = self._learn(short)
        elif self._estimate <= self._min:
            # At the floor and still slow: the backend is slower for good.
            long = self._long = short
        if long > 2 * short:
            # Load has gone away: do not wait for the average to forget it.
            long = self._long = long * 0.95
        if 2 * peak < self._estimate:
            return int(self._estimate)
        gradient = max(0.5, min(1.0, self._tolerance * long / short))
        wanted = self._estimate * gradient + self._queue_size
        estimate = self._estimate + (wanted - self._estimate) * self._smoothing
        self._estimate = _clamp(estimate, self._min, self._max)
        return int(self._estimate)

    def _learn(self, short: float) -> float:
        """Move the long-term average towards ``short``; return it."""
        if self._long_count < self._WARMUP:
            self._long_count += 1
            self._long += (short - self._long) / self._long_count
        else:
            self._long += (short - self._long) * self._long_factor
        return self._long


# ----------------------------------------------------------------------- Vegas


@final
class VegasController(_Windowed):
    """Queue-estimate limit in the style of TCP Vegas and Netflix's ``VegasLimit``.

    The fastest round trip seen, ``rtt_noload``, stands for the latency with no
    queue; a window (one limit's worth of sessions, at least ``min_window``)
    whose mean run time is ``rtt`` then has about
    ``limit * (1 - rtt_noload / rtt)`` sessions queued. Under ``alpha`` queued
    the limit grows by one (by ``beta`` when nothing is queued), over ``beta``
    it shrinks by the excess, and in between it holds; a timeout shrinks it
    too. As in Netflix's, the thresholds and the step are multiplied by the
    limit's order of magnitude (1 under 100, 2 under 1,000 ...), as the noise
    in the estimate grows with the limit. A window whose sessions used less
    than half the limit changes nothing. Errors and cancellations are
    ignored::

        controller = ts.VegasController(max_limit=500)
        async with ts.open_session_manager(controller=controller) as manager:
            ...

    Every ``probe_interval`` windows it *probes*: it lowers the limit by the
    estimated queue for one window, so that the queue drains, and takes that
    window's latency as the new ``rtt_noload``, so that a backend that became
    slower for good is followed rather than fought. (Netflix's probe takes the
    latency of whatever session comes next, queue included, which ratchets
    the limit up by the queue at each probe.)

    Args:
      initial_limit: The limit to start at.
      min_limit: The floor, ``>= 1``.
      max_limit: The ceiling, ``>= min_limit``.
      alpha: Below this many sessions queued the limit grows, ``>= 1``.
      beta: Above this many it shrinks, ``>= alpha``.
      probe_interval: Windows between probes of ``rtt_noload``, ``>= 1``.
      min_window: The fewest sessions a window averages, ``>= 1``.

    Raises:
      TypeError: an argument of the wrong type (the message names it).
      ValueError: an argument out of range (the message names it).
    """

    __slots__ = (
        "_alpha",
        "_beta",
        "_probe_interval",
        "_probe_started",
        "_probing",
        "_restore",
        "_rtt_noload",
        "_since_probe",
    )

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        alpha: int = 2,
        beta: int = 4,
        probe_interval: int = 100,
        min_window: int = 10,
    ) -> None:
        super().__init__(initial_limit, min_limit, max_limit, min_window)
        self._alpha = _count(alpha, self._name("alpha"), 1)
        self._beta = _count(beta, self._name("beta"), self._alpha)
        self._probe_interval = _count(probe_interval, self._name("probe_interval"), 1)
        self._rtt_noload = math.inf
        self._since_probe = 0
        self._probing = False
        self._probe_started = -math.inf
        self._restore = self._estimate

    @property
    def rtt_noload(self) -> float | None:
        """The latency in seconds taken for no queue, ``None`` before a window."""
        return None if self._rtt_noload == math.inf else self._rtt_noload

    def on_sample(
        self, *, duration: float, outcome: Outcome, in_flight: int, now: float
    ) -> int:
        """Add the session to the window; at its end, move by the queue estimate."""
        if outcome is _CANCELLED or outcome is _ERROR:
            return int(self._estimate)
        if self._probing and now - duration < self._probe_started:
            # Admitted before the probe lowered the limit: it saw the queue.
            return int(self._estimate)
        if outcome is _TIMEOUT:
            self._window.dropped = True
        window = self._filled(duration, in_flight)
        if window is None:
            return int(self._estimate)
        dropped, peak = window.dropped, window.peak_in_flight
        rtt = window.close()
        if rtt <= 0:  # sessions that never waited say nothing about latency
            return int(self._estimate)
        if self._probing:
            self._probing = False
            self._rtt_noload = rtt
            self._estimate = self._restore
            return int(self._estimate)
        if rtt < self._rtt_noload:
            self._rtt_noload = rtt
        queue = self._estimate * (1 - self._rtt_noload / rtt)
        self._since_probe += 1
        if self._since_probe >= self._probe_interval and not dropped:
            self._since_probe = 0
            self._probing = True
            self._probe_started = now
            self._restore = self._estimate
            self._estimate = _clamp(self._estimate - queue, self._min, self._max)
            return int(self._estimate)
        # Netflix's scaling: the thresholds and the step grow with the limit's
        # order of magnitude, as the noise in the queue estimate does.
        scale = max(1, int(math.log10(self._estimate)))
        alpha, beta = self._alpha * scale, self._beta * scale
        if dropped:
            estimate = self._estimate - max(scale, queue - beta)
        elif 2 * peak < self._estimate:
            return int(self._estimate)
        elif queue < 1:
            estimate = self._estimate + beta
        elif queue < alpha:
            estimate = self._estimate + scale
        elif queue > beta:
            estimate = self._estimate - (queue - beta)
        else:
            return int(self._estimate)
        self._estimate = _clamp(estimate, self._min, self._max)
        return int(self._estimate)
