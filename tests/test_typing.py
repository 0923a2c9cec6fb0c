"""The typed API: a session's result has the type its function returns.

mypy --strict checks the ``assert_type`` calls (``[tool.mypy]`` covers the tests);
at run time they do nothing, and each test checks the values as well.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import check_invariants

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # pragma: no cover - mypy reads the 3.11 branch; at run time this is a no-op

    def assert_type(value: Any, typ: Any) -> Any:
        return value


URL = "https://example.org/"


async def fetch(url: str) -> bytes:
    await trio.lowlevel.checkpoint()
    return url.encode()


async def pair(url: str, times: int) -> tuple[str, int]:
    await trio.lowlevel.checkpoint()
    return url, times


async def test_run_returns_what_fn_returns(autojump_clock: MockClock) -> None:
    """``await manager.run(fetch, url)`` is ``bytes`` when fetch returns bytes."""
    async with ts.open_session_manager() as manager:
        body = await manager.run(fetch, URL, metadata={"url": URL}, timeout=1)
        assert_type(body, bytes)
        both = await manager.run(pair, URL, 2)
        assert_type(both, tuple[str, int])
    assert body == URL.encode()
    assert both == (URL, 2)


async def test_start_session_nowait_is_a_session_of_the_result(
    autojump_clock: MockClock,
) -> None:
    """start_session_nowait returns ``Session[bytes]``; its wait() returns bytes."""
    async with ts.open_session_manager() as manager:
        session = manager.start_session_nowait(fetch, URL, name="fetch")
        assert_type(session, ts.Session[bytes])
        body = await session.wait()
        assert_type(body, bytes)
    assert body == URL.encode()
    assert session.outcome is ts.Outcome.SUCCESS


async def test_start_session_is_a_session_of_the_result(
    autojump_clock: MockClock,
) -> None:
    """``await manager.start_session(fetch, url)`` is ``Session[bytes]``."""
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(fetch, URL, timeout=None)
        assert_type(session, ts.Session[bytes])
        assert_type(await session.wait(), bytes)
        assert await session.wait() == URL.encode()


async def test_the_rest_of_the_api_is_typed(autojump_clock: MockClock) -> None:
    """sessions, statistics() and shutdown() have their documented types."""
    async with ts.open_session_manager() as manager:
        session = manager.start_session_nowait(fetch, URL)
        assert_type(manager.sessions, Mapping[str, ts.Session[Any]])
        assert manager.sessions[session.id] is session
        stats = manager.statistics()
        assert_type(stats, ts.SessionStatistics)
        assert_type(session.outcome, ts.Outcome | None)
        report = await manager.shutdown()
        assert_type(report, ts.ShutdownReport)
    assert (stats.created, report.initial_active) == (1, 1)


async def test_arguments_are_checked_against_the_function(
    autojump_clock: MockClock,
) -> None:
    """mypy refuses arguments fn does not take (the ignores are checked as used)."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(AttributeError):
            await manager.run(fetch, 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            manager.start_session_nowait(fetch)  # type: ignore[arg-type]
        stats = check_invariants(manager)
    # The wrong argument failed inside the session; calling fetch without its
    # argument failed at admission, so nothing was admitted.
    assert (stats.created, stats.failed, stats.rejected) == (1, 1, 0)
