"""Building blocks of the manager's tests: small session functions, the three
ways a session gets in (``MODES``, :func:`admit`), and :func:`expect`, exact
counters on top of :func:`trio_sessions.testing.check_invariants`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

import trio_sessions as ts
from trio_sessions.testing import check_invariants

__all__ = [
    "META",
    "META_BYTES",
    "MODES",
    "admit",
    "compact_size",
    "expect",
    "fail_after_sleep",
    "run_trio",
    "sleep_then",
    "with_own_nursery",
]

T = TypeVar("T")

META = {"client": "fault-matrix", "note": "ünïcode"}
META_BYTES = len(json.dumps(META, separators=(",", ":"), ensure_ascii=False).encode())

#: How the session under test gets in: admitted at once by the async API, by
#: the synchronous fast path, or after queueing behind sessions holding every slot.
MODES = ("running", "nowait", "waiting")


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

    In ``"waiting"`` mode every free slot is first taken by a blocker that
    succeeds after 1 s, so the session queues and starts at ``t0 + 1``.
    """
    blockers = 0
    if mode == "waiting":
        while manager.statistics().active < manager.config.max_sessions:
            manager.start_session_nowait(sleep_then, 1)
            blockers += 1
        assert manager.statistics().waiting == 0
    start = trio.current_time()
    if mode == "nowait":
        session = manager.start_session_nowait(
            fn, *args, metadata=META, timeout=timeout
        )
    else:
        session = await manager.start_session(fn, *args, metadata=META, timeout=timeout)
    assert trio.current_time() == start + (1 if mode == "waiting" else 0)
    return session, trio.current_time(), blockers


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
