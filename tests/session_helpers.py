"""Building blocks of the manager's tests: small session functions, the three
ways a session gets in (``MODES``, :func:`admit`), and :func:`expect`, exact
counters on top of :func:`trio_sessions.testing.check_invariants`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import trio
import trio.testing

import trio_sessions as ts
from trio_sessions.testing import check_invariants

__all__ = [
    "INLINE_MODES",
    "KEYED_MODES",
    "META",
    "META_BYTES",
    "MODES",
    "SPAWNED_MODES",
    "admit",
    "check_block_raised",
    "compact_size",
    "expect",
    "fail_after_sleep",
    "run_trio",
    "sleep_then",
    "start_inline",
    "with_own_nursery",
]

T = TypeVar("T")

META = {"client": "fault-matrix", "note": "ünïcode"}
META_BYTES = len(json.dumps(META, separators=(",", ":"), ensure_ascii=False).encode())

#: How the session under test gets in: admitted at once by the async API, by
#: the synchronous fast path, or after queueing behind sessions holding every
#: slot; as a task of the manager (spawned) or as a block in the caller's own
#: task (inline: ``manager.session()``, ``manager.session_nowait()``); keyed:
#: with a key and a priority, so the scheduler queues and counts it.
SPAWNED_MODES = ("running", "nowait", "waiting")
INLINE_MODES = ("inline", "inline-nowait", "inline-waiting")
KEYED_MODES = ("keyed-waiting", "inline-keyed-waiting")
MODES = SPAWNED_MODES + INLINE_MODES + KEYED_MODES


def run_trio(afn: Callable[[], Awaitable[T]]) -> T:
    """Run ``afn`` in a fresh Trio run on a clock that jumps when all are blocked."""
    return trio.run(afn, clock=trio.testing.MockClock(autojump_threshold=0))


def compact_size(value: Any) -> int:
    """API.md's metadata size: compact UTF-8 JSON."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8"))


async def sleep_then(seconds: float, value: Any = None) -> Any:
    await trio.sleep(seconds)
    return value


async def fail_after_sleep(seconds: float) -> None:
    await trio.sleep(seconds)
    raise ValueError("handler failed")


async def with_own_nursery(seconds: float) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, seconds)
        nursery.start_soon(trio.sleep, seconds)


async def admit(
    manager: ts.SessionManager,
    mode: str,
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    timeout: float | None = None,
) -> tuple[ts.Session[Any], float, int]:
    """Admit ``fn`` as ``mode`` says; return the session, its start time, blockers.

    In the waiting modes every free slot is first taken by a blocker that
    succeeds after 1 s, so the session queues and starts at ``t0 + 1``.
    An inline session runs ``fn`` in its block, in a task of its own (the
    "caller"), which checks that the block raised what the outcome says.
    """
    blockers = 0
    if mode.endswith("waiting"):
        while manager.statistics().active < manager.config.max_sessions:
            manager.start_session_nowait(sleep_then, 1)
            blockers += 1
        assert manager.statistics().waiting == 0
    start = trio.current_time()
    keyed: dict[str, Any] = {"key": "k", "priority": 1} if mode in KEYED_MODES else {}
    if mode == "nowait":
        session = manager.start_session_nowait(
            fn, *args, metadata=META, timeout=timeout
        )
    elif mode.startswith("inline"):
        session = await start_inline(
            manager,
            fn,
            *args,
            metadata=META,
            timeout=timeout,
            nowait=mode == "inline-nowait",
            **keyed,
        )
    else:
        session = await manager.start_session(
            fn, *args, metadata=META, timeout=timeout, **keyed
        )
    assert trio.current_time() == start + (1 if mode.endswith("waiting") else 0)
    return session, trio.current_time(), blockers


async def start_inline(
    manager: ts.SessionManager,
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    metadata: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    nowait: bool = False,
    key: str | None = None,
    priority: int = 0,
) -> ts.Session[Any]:
    """Start a caller whose inline session runs ``fn``; return once it is admitted.

    The caller is a task of the manager's own nursery, so that what the
    block lets through (a KeyboardInterrupt, an outside Cancelled) ends
    where a session task's would. Admission errors are raised here; the
    caller checks that its block raised what the session's outcome says.
    """
    options: dict[str, Any] = {"key": key, "priority": priority}
    if nowait:
        block = manager.session_nowait(metadata=metadata, timeout=timeout, **options)
    else:
        block = manager.session(metadata=metadata, timeout=timeout, **options)
    admitted = trio.Event()
    entered: list[ts.Session[Any]] = []
    refused: list[BaseException] = []

    async def caller() -> None:
        try:
            async with block as session:
                entered.append(session)
                admitted.set()
                await fn(*args)
        except (ts.RejectedError, TypeError, ValueError) as exc:
            if entered:
                check_block_raised(entered[0], exc)
            else:
                refused.append(exc)
                admitted.set()
        except BaseException as exc:
            if not entered:
                admitted.set()
                raise
            check_block_raised(entered[0], exc)
            if not isinstance(exc, Exception):
                raise  # Cancelled from outside, KeyboardInterrupt: as a task's
        else:
            check_block_raised(entered[0], None)

    manager._spawn(caller)
    await admitted.wait()
    if refused:
        raise refused[0]
    return entered[0]


def check_block_raised(session: ts.Session[Any], exc: BaseException | None) -> None:
    """Assert that an inline block raised what its session's outcome says."""
    outcome = session.outcome
    if outcome is ts.Outcome.SUCCESS:
        assert exc is None, exc
    elif outcome is ts.Outcome.ERROR:
        assert exc is session._result, (exc, session._result)
    elif outcome is ts.Outcome.TIMEOUT:
        assert type(exc) is ts.SessionTimeout, exc
    else:
        assert outcome is ts.Outcome.CANCELLED, outcome
        reason = session.cancel_reason or ""
        if reason.startswith("interrupted by "):
            assert type(exc).__name__ == reason.removeprefix("interrupted by "), exc
        elif reason == "cancelled because the code around its block was cancelled":
            assert isinstance(exc, trio.Cancelled), exc
        else:
            assert type(exc) is ts.SessionCancelled, exc


def expect(
    manager: ts.SessionManager,
    *,
    created: int,
    succeeded: int = 0,
    failed: int = 0,
    timed_out: int = 0,
    cancelled: int = 0,
    active: int = 0,
    waiting: int = 0,
    capacity: int = 0,
    shutting_down: int = 0,
    metadata: int = 0,
    metadata_bytes: int = 0,
    other_rejections: int = 0,
) -> ts.SessionStatistics:
    """Assert every counter of ``manager`` exactly, and the contract's invariants."""
    stats = check_invariants(manager)
    actual = {
        "created": stats.created,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "timed_out": stats.timed_out,
        "cancelled": stats.cancelled,
        "active": stats.active,
        "waiting": stats.waiting,
        "rejections": {
            reason: stats.rejections[reason]
            for reason in ("capacity", "shutting_down", "metadata")
        },
        "other_rejections": stats.rejected
        - sum(stats.rejections[r] for r in ("capacity", "shutting_down", "metadata")),
        "metadata_bytes": stats.metadata_bytes,
        "sessions": len(manager.sessions),
        "durations.count": stats.durations.count,
    }
    wanted = {
        "created": created,
        "succeeded": succeeded,
        "failed": failed,
        "timed_out": timed_out,
        "cancelled": cancelled,
        "active": active,
        "waiting": waiting,
        "rejections": {
            "capacity": capacity,
            "shutting_down": shutting_down,
            "metadata": metadata,
        },
        "other_rejections": other_rejections,
        "metadata_bytes": metadata_bytes,
        "sessions": active,
        # Every completed session's run time is in the summary, once.
        "durations.count": succeeded + failed + timed_out + cancelled,
    }
    wrong = {
        key: (actual[key], wanted[key]) for key in wanted if actual[key] != wanted[key]
    }
    assert not wrong, f"(actual, expected) by field: {wrong}"
    return stats
