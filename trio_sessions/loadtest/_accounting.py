"""Scenarios 6-7: outcomes and metadata bytes are counted exactly, nothing leaks.

Each scenario sits beside its result class.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, final

import attrs
import trio

from .. import Outcome, Session, SessionCancelled, SessionTimeout
from ._report import Checks, ScenarioResult, Tally, percent
from ._timeline import open_manager
from ._work import Work, config, resolve


@final
@attrs.frozen
class MetricsAccuracyResult(ScenarioResult):
    """Result of :func:`metrics_accuracy`: observed counts beside expected ones.

    Attributes:
      sessions: Sessions run with a planned outcome each.
      created: ``statistics().created``.
      completed: ``statistics().completed``.
      succeeded: ``statistics().succeeded``.
      failed: ``statistics().failed``.
      timed_out: ``statistics().timed_out``.
      cancelled: ``statistics().cancelled``.
      success_rate: ``statistics().success_rate``.
      expected_succeeded: Sessions planned to succeed.
      expected_failed: Sessions planned to raise.
      expected_timed_out: Sessions planned to hit their deadline.
      expected_cancelled: Sessions planned to be cancelled.
      expected_success_rate: ``expected_succeeded / sessions``.
      mismatched: Sessions whose outcome, or whose ``wait()`` result, was not
        the planned one.
    """

    name: ClassVar[str] = "metrics"

    sessions: int
    created: int
    completed: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    success_rate: float | None
    expected_succeeded: int
    expected_failed: int
    expected_timed_out: int
    expected_cancelled: int
    expected_success_rate: float
    mismatched: int

    @property
    def title(self) -> str:
        return f"metrics: {self.sessions} sessions, known mix"

    def describe(self) -> str:
        observed = (self.succeeded, self.failed, self.timed_out, self.cancelled)
        expected = (
            self.expected_succeeded,
            self.expected_failed,
            self.expected_timed_out,
            self.expected_cancelled,
        )
        verdict = (
            "as planned"
            if observed == expected
            else "planned " + "/".join(map(str, expected))
        )
        return (
            f"ok {self.succeeded}, error {self.failed}, timeout {self.timed_out}, "
            f"cancelled {self.cancelled}, {verdict}; "
            f"success {percent(self.success_rate)}"
        )


class _PlannedFailure(Exception):
    """The exception a metrics-accuracy session raises on purpose."""


async def _then_raise(work: Work) -> None:
    await work()
    raise _PlannedFailure("planned failure")


async def _then_hang(work: Work) -> None:
    await work()
    await trio.sleep_forever()


# The mix of metrics_accuracy, repeated: 6 succeed, 3 raise, 2 time out, 1 cancelled.
_MIX = (
    Outcome.SUCCESS,
    Outcome.ERROR,
    Outcome.SUCCESS,
    Outcome.TIMEOUT,
    Outcome.SUCCESS,
    Outcome.ERROR,
    Outcome.SUCCESS,
    Outcome.CANCELLED,
    Outcome.SUCCESS,
    Outcome.TIMEOUT,
    Outcome.SUCCESS,
    Outcome.ERROR,
)

_EXPECTED_RAISE: Mapping[Outcome, type[BaseException] | None] = {
    Outcome.SUCCESS: None,
    Outcome.ERROR: _PlannedFailure,
    Outcome.TIMEOUT: SessionTimeout,
    Outcome.CANCELLED: SessionCancelled,
}


async def _observe(session: Session, planned: Outcome) -> bool:
    """Wait for ``session``; true when it ended, and ``wait()`` behaved, as planned."""
    raised: type[BaseException] | None = None
    try:
        await session.wait()
    except Exception as exc:
        raised = type(exc)
    return session.outcome is planned and raised is _EXPECTED_RAISE[planned]


async def metrics_accuracy(
    work: Work | None = None, *, sessions: int = 60, timeout: float = 0.05
) -> MetricsAccuracyResult:
    """Scenario 6: sessions with a known outcome mix are counted exactly.

    Out of every 12 sessions, 6 do ``work`` and return, 3 do it and raise, 2
    do it and then hang past a ``timeout``-second deadline, and 1 does it and
    hangs until :meth:`Session.cancel`. The statistics must match the plan
    exactly, success rate included (``0.5`` with the defaults)::

        result = await loadtest.metrics_accuracy(sessions=60)
        assert (result.succeeded, result.failed) == (30, 15)

    Args:
      work: Async function each session awaits first.
      sessions: Sessions in the mix.
      timeout: Deadline, in seconds, of the sessions planned to time out.
    """
    work = resolve(work)
    start = trio.current_time()
    plan = [_MIX[index % len(_MIX)] for index in range(sessions)]
    mismatched = 0
    async with open_manager(config(max(sessions, 1))) as manager:
        started: list[tuple[Outcome, Session]] = []
        for planned in plan:
            if planned is Outcome.SUCCESS:
                session = await manager.start_session(work)
            elif planned is Outcome.ERROR:
                session = await manager.start_session(_then_raise, work)
            elif planned is Outcome.TIMEOUT:
                session = await manager.start_session(_then_hang, work, timeout=timeout)
            else:
                session = await manager.start_session(_then_hang, work, timeout=None)
            started.append((planned, session))
        # Cancel last, so the cancelled sessions are cancelled mid-hang, not mid-work.
        for planned, session in started:
            if planned is not Outcome.CANCELLED and not await _observe(
                session, planned
            ):
                mismatched += 1
        for planned, session in started:
            if planned is Outcome.CANCELLED:
                session.cancel()
                if not await _observe(session, planned):
                    mismatched += 1
        stats = manager.statistics()
    expected = {outcome: plan.count(outcome) for outcome in Outcome}
    expected_rate = expected[Outcome.SUCCESS] / sessions if sessions else 0.0
    observed = {
        Outcome.SUCCESS: stats.succeeded,
        Outcome.ERROR: stats.failed,
        Outcome.TIMEOUT: stats.timed_out,
        Outcome.CANCELLED: stats.cancelled,
    }
    checks = Checks()
    for outcome in Outcome:
        checks.expect(
            observed[outcome] == expected[outcome],
            f"{observed[outcome]} counted {outcome.name}, expected {expected[outcome]}",
        )
    checks.expect(
        stats.created == sessions and stats.completed == sessions,
        f"{stats.created} created / {stats.completed} completed, expected {sessions}",
    )
    checks.expect(
        sessions == 0 or stats.success_rate == expected_rate,
        f"success rate {stats.success_rate!r}, expected {expected_rate!r}",
    )
    checks.expect(stats.rejected == 0, f"{stats.rejected} sessions rejected")
    checks.expect(
        mismatched == 0,
        f"{mismatched} sessions did not end (or wait() did not raise) as planned",
    )
    return MetricsAccuracyResult(
        **checks.verdict(),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        created=stats.created,
        completed=stats.completed,
        succeeded=stats.succeeded,
        failed=stats.failed,
        timed_out=stats.timed_out,
        cancelled=stats.cancelled,
        success_rate=stats.success_rate,
        expected_succeeded=expected[Outcome.SUCCESS],
        expected_failed=expected[Outcome.ERROR],
        expected_timed_out=expected[Outcome.TIMEOUT],
        expected_cancelled=expected[Outcome.CANCELLED],
        expected_success_rate=expected_rate,
        mismatched=mismatched,
    )


@final
@attrs.frozen
class MetadataTrackingResult(ScenarioResult):
    """Result of :func:`metadata_tracking`.

    The byte figures are ``statistics().metadata_bytes`` at each stage.

    Attributes:
      sessions: Sessions admitted, each with larger metadata than the last.
      bytes_up: Bytes held once all were admitted.
      expected_up: Sum of the sizes of all their metadata.
      bytes_half: Bytes held once the first half completed.
      expected_half: Sum of the sizes of the second half's metadata.
      bytes_zero: Bytes held once all completed.
      peak_bytes: ``statistics().peak_metadata_bytes``.
      mismeasured: Sessions whose ``metadata_bytes`` was not the expected size.
      leaked: Session objects still alive, or still listed by the manager,
        after they completed and the scenario dropped them.
      succeeded: Sessions whose work returned.
    """

    name: ClassVar[str] = "metadata"

    sessions: int
    bytes_up: int
    expected_up: int
    bytes_half: int
    expected_half: int
    bytes_zero: int
    peak_bytes: int
    mismeasured: int
    leaked: int
    succeeded: int

    @property
    def title(self) -> str:
        return f"metadata: {self.sessions} sessions, growing"

    def describe(self) -> str:
        return (
            f"bytes up {self.bytes_up:,}, half {self.bytes_half:,}, "
            f"end {self.bytes_zero}; peak {self.peak_bytes:,}; "
            f"{self.leaked} leaked"
        )


def _metadata_size(metadata: Mapping[str, Any]) -> int:
    # The formula of the API contract, computed independently of the manager.
    text = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8"))


async def _release_and_wait(
    release: trio.Event, sessions: Sequence[Session], tally: Tally
) -> None:
    release.set()
    for session in sessions:
        await tally.wait(session)


async def metadata_tracking(
    work: Work | None = None, *, sessions: int = 30, step: int = 32
) -> MetadataTrackingResult:
    """Scenario 7: metadata bytes go up, down by half, to zero, and nothing leaks.

    Session ``i`` carries metadata with a payload of ``(i + 1) * step``
    characters (some of them non-ASCII) and is held open. The manager's byte
    count must equal the sum of the sizes while all are held, the second
    half's sum once the first half completed, and zero at the end; afterwards
    no session object may survive::

        result = await loadtest.metadata_tracking(sessions=30)
        assert result.bytes_zero == 0 and result.leaked == 0

    Args:
      work: Async function each session awaits once released.
      sessions: Sessions admitted.
      step: Payload growth, in characters, from one session to the next.
    """
    work = resolve(work)
    start = trio.current_time()
    tally = Tally()
    first, second = trio.Event(), trio.Event()
    half = sessions // 2

    async def hold_then(release: trio.Event) -> None:
        await release.wait()
        await work()

    metadata = [
        {
            "session": index,
            "client": "load-é",
            "payload": "x·" * ((index + 1) * step // 2),
        }
        for index in range(sessions)
    ]
    sizes = [_metadata_size(item) for item in metadata]
    limit = max(sizes, default=0)
    manager_config = config(max(sessions, 1), max_session_metadata_bytes=limit)
    references: list[weakref.ref[Session]] = []
    async with open_manager(manager_config) as manager:
        started = [
            await manager.start_session(
                hold_then, first if index < half else second, metadata=item
            )
            for index, item in enumerate(metadata)
        ]
        # Metadata is copied at admission: mutating the caller's dicts changes nothing.
        for item in metadata:
            item["payload"] = ""
        mismeasured = sum(
            session.metadata_bytes != size
            for session, size in zip(started, sizes, strict=True)
        )
        bytes_up = manager.statistics().metadata_bytes
        await _release_and_wait(first, started[:half], tally)
        bytes_half = manager.statistics().metadata_bytes
        await _release_and_wait(second, started[half:], tally)
        stats = manager.statistics()
        listed = len(manager.sessions)
        references = [weakref.ref(session) for session in started]
        del started
    gc.collect()
    leaked = listed + sum(ref() is not None for ref in references)
    expected_up = sum(sizes)
    expected_half = sum(sizes[half:])
    checks = Checks()
    checks.expect(mismeasured == 0, f"{mismeasured} sessions mismeasured")
    checks.expect(
        bytes_up == expected_up, f"{bytes_up} bytes up, expected {expected_up}"
    )
    checks.expect(
        bytes_half == expected_half,
        f"{bytes_half} bytes at half, expected {expected_half}",
    )
    checks.expect(
        stats.metadata_bytes == 0, f"{stats.metadata_bytes} bytes left at the end"
    )
    checks.expect(
        stats.peak_metadata_bytes == expected_up,
        f"peak {stats.peak_metadata_bytes} bytes, expected {expected_up}",
    )
    checks.expect(leaked == 0, f"{leaked} sessions leaked")
    tally.expect_all(checks, sessions)
    return MetadataTrackingResult(
        **checks.verdict(),
        elapsed=trio.current_time() - start,
        sessions=sessions,
        bytes_up=bytes_up,
        expected_up=expected_up,
        bytes_half=bytes_half,
        expected_half=expected_half,
        bytes_zero=stats.metadata_bytes,
        peak_bytes=stats.peak_metadata_bytes,
        mismeasured=mismeasured,
        leaked=leaked,
        succeeded=tally.succeeded,
    )
