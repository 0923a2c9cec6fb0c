"""Bad input gets the right error, named and counted as the contract says, everywhere.

Each test gives one kind of bad value to every entry point that takes it, in every
state of the manager, and checks the error, the counters and that nothing is held.
"""

from __future__ import annotations

import gc
import inspect
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from session_helpers import sleep_then
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions._validate import check_seconds, parse_seconds
from trio_sessions.testing import check_invariants

HUGE = 10**400
SECONDS_FIELDS = (
    "request_timeout",
    "shutdown_timeout",
    "wait_timeout",
    "shutdown_grace",
)


async def noop() -> str:
    await trio.lowlevel.checkpoint()
    return "ok"


def assert_nothing_held(manager: ts.SessionManager) -> ts.SessionStatistics:
    return check_invariants(manager, settled=True)


# ------------------------------------------------------------------ seconds


@pytest.mark.parametrize("field", SECONDS_FIELDS)
def test_huge_int_seconds_in_the_config_mean_no_deadline(field: str) -> None:
    """An int too large for a float is longer than any deadline: infinity."""
    config = ts.SessionConfig(**{field: HUGE})
    assert getattr(config, field) == float("inf")


@pytest.mark.parametrize("field", SECONDS_FIELDS)
def test_huge_negative_seconds_are_refused_by_name(field: str) -> None:
    """A huge negative int is a ValueError naming the field, not OverflowError."""
    with pytest.raises(ValueError, match=f"SessionConfig.{field} must be >= 0"):
        ts.SessionConfig(**{field: -HUGE})


async def test_huge_timeouts_at_every_entry_point(autojump_clock: MockClock) -> None:
    """start_session, start_session_nowait, run and shutdown take 10**400 seconds."""
    async with ts.open_session_manager(request_timeout=HUGE) as manager:
        assert await manager.run(noop) == "ok"
        assert await manager.run(noop, timeout=HUGE) == "ok"
        session = await manager.start_session(noop, timeout=HUGE)
        assert session.timeout == float("inf")
        assert await session.wait() == "ok"
        assert await manager.start_session_nowait(noop, timeout=HUGE).wait() == "ok"
        for entry in (manager.run, manager.start_session):
            with pytest.raises(ValueError, match="timeout must be >= 0"):
                await entry(noop, timeout=-HUGE)
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            manager.start_session_nowait(noop, timeout=-HUGE)
        with pytest.raises(ValueError, match="shutdown timeout must be >= 0"):
            await manager.shutdown(timeout=-HUGE)
        report = await manager.shutdown(timeout=HUGE)
    assert report.timeout_reached is False
    stats = assert_nothing_held(manager)
    assert stats.succeeded == 4


@given(
    value=st.one_of(
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**500), max_value=10**500),
        st.none(),
        st.booleans(),
        st.text(max_size=3),
    ),
    optional=st.booleans(),
)
def test_seconds_validator_answers_or_names_the_field(
    value: object, optional: bool
) -> None:
    """Any value is seconds, or a TypeError/ValueError that names the field."""
    try:
        seconds = check_seconds(value, "the_field", optional=optional)
    except (TypeError, ValueError) as exc:
        error = str(exc)
    else:
        error = ""
        assert seconds is None or seconds >= 0
        if seconds is not None:
            # Usable as a deadline: no OverflowError later.
            assert trio.CancelScope(deadline=seconds + 1.0).deadline >= seconds
    assert not error or "the_field" in error


def test_parse_seconds_for_command_lines() -> None:
    """The CLI form: numbers, 'none' when optional, errors naming the option."""
    assert parse_seconds("2.5", "--x") == 2.5
    assert parse_seconds("None", "--x", optional=True) is None
    assert parse_seconds("1e400", "--x") == float("inf")
    with pytest.raises(ValueError, match="--x must be a finite"):
        parse_seconds("1e400", "--x", finite=True)
    with pytest.raises(ValueError, match="--x must be a number of seconds"):
        parse_seconds("none", "--x")
    with pytest.raises(ValueError, match="--x must be > 0"):
        parse_seconds("0", "--x", positive=True)


# ----------------------------------------------------------------- metadata


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


async def test_metadata_at_every_depth_is_admitted_or_a_counted_error(
    autojump_clock: MockClock,
) -> None:
    """Up to past the recursion limit, deep metadata never raises RecursionError."""
    limit = sys.getrecursionlimit()
    async with ts.open_session_manager(max_session_metadata_bytes=None) as manager:
        refused = 0
        for depth in [*range(1, 60), *range(limit - 120, limit + 40)]:
            try:
                session = manager.start_session_nowait(noop, metadata=nested(depth))
            except ts.MetadataError as exc:
                error = str(exc)
                refused += 1
            else:
                error = ""
                # The size counted is the size of the copy kept.
                assert session.metadata == nested(depth)
                await session.wait()
            assert not error or "nested too deeply" in error or "JSON" in error
        assert refused > 0  # the deepest ones cannot be copied
        stats = assert_nothing_held(manager)
    assert stats.rejections["metadata"] == refused


@pytest.mark.parametrize(
    "metadata",
    [
        {"1": "a", 1: "b"},
        {"outer": {"1": "a", 1: "b"}},
        {"list": [{"x": 1}, {"true": 1, True: 2}]},
        {"deep": nested(5, {"null": 0, None: 1})},
    ],
)
async def test_metadata_keys_colliding_at_any_depth_are_refused(
    autojump_clock: MockClock, metadata: dict[Any, Any]
) -> None:
    """Keys that become the same JSON string anywhere are a counted MetadataError."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.MetadataError, match="collide"):
            await manager.start_session(noop, metadata=metadata)
        stats = assert_nothing_held(manager)
    assert stats.rejections["metadata"] == 1


# ------------------------------------------------------- a wrong fn, timeout or name


def a_coroutine() -> Any:
    return noop()


async def refusals_of(
    manager: ts.SessionManager, make_fn: Callable[[], Any]
) -> list[BaseException]:
    """Call every entry point with a wrong fn; return what each raised."""
    errors: list[BaseException] = []
    entries: list[Callable[[Any], Awaitable[Any] | Any]] = [
        manager.start_session_nowait,
        manager.start_session,
        manager.run,
    ]
    for entry in entries:
        fn = make_fn()
        try:
            result = entry(fn)
            if inspect.isawaitable(result):
                await result
        except BaseException as exc:
            errors.append(exc)
        if inspect.iscoroutine(fn):
            # Closed for the caller: it can never warn "never awaited".
            assert inspect.getcoroutinestate(fn) == inspect.CORO_CLOSED
    return errors


@pytest.mark.parametrize("make_fn", [a_coroutine, lambda: 42])
@pytest.mark.parametrize("state", ["open", "draining", "closed", "guarded"])
async def test_a_wrong_fn_is_a_type_error_in_every_state(
    autojump_clock: MockClock, make_fn: Callable[[], Any], state: str
) -> None:
    """A coroutine object or a non-callable is an uncounted TypeError, always."""

    class Open(ts.AdmissionGuard):
        async def acquire(self, session: ts.Session, deadline: float) -> None:
            await trio.lowlevel.checkpoint()

        def release(self, session: ts.Session) -> None:
            pass

    guard = Open() if state == "guarded" else None
    async with ts.open_session_manager(guard=guard) as manager:
        if state == "draining":
            async with trio.open_nursery() as nursery:
                await manager.start_session(trio.sleep, 1)
                nursery.start_soon(manager.shutdown)
                await trio.testing.wait_all_tasks_blocked()
                assert manager.closing
                errors = await refusals_of(manager, make_fn)
        elif state != "closed":
            errors = await refusals_of(manager, make_fn)
    if state == "closed":
        errors = await refusals_of(manager, make_fn)
    gc.collect()  # a coroutine left unclosed would warn now (warnings are errors)
    assert [type(error) for error in errors] == [TypeError] * 3, errors
    assert manager.statistics().rejected == 0


@pytest.mark.parametrize("fn", [None, 42, "handler"])
async def test_non_callable_is_a_type_error(fn: Any, autojump_clock: MockClock) -> None:
    """A non-callable fn raises TypeError and nothing is admitted or counted."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(TypeError, match="async function"):
            await manager.start_session(fn)
        with pytest.raises(TypeError, match="async function"):
            manager.start_session_nowait(fn)
        stats = check_invariants(manager)
    assert (stats.created, stats.rejected, stats.active) == (0, 0, 0)


async def test_synchronous_function_is_a_type_error(autojump_clock: MockClock) -> None:
    """A function that returns no coroutine raises TypeError and leaves no trace."""

    def sync_handler() -> int:
        return 1

    async with ts.open_session_manager(max_sessions=1) as manager:
        with pytest.raises(TypeError, match="returned int, not a coroutine"):
            await manager.start_session(sync_handler)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"not fn\(\*args\)"):
            manager.start_session_nowait(sleep_then(1))  # type: ignore[arg-type]
        stats = check_invariants(manager)
        assert (stats.created, stats.rejected) == (0, 0)
        # The slot was given back: the single slot is still free.
        await manager.run(trio.lowlevel.checkpoint)


async def test_bad_timeout_and_name_are_refused(autojump_clock: MockClock) -> None:
    """Invalid per-call timeout or name raise ValueError/TypeError naming them."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ValueError, match="timeout"):
            await manager.start_session(trio.lowlevel.checkpoint, timeout=-1)
        with pytest.raises(ValueError, match="timeout"):
            await manager.start_session(trio.lowlevel.checkpoint, timeout=math.nan)
        with pytest.raises(TypeError, match="timeout"):
            await manager.start_session(trio.lowlevel.checkpoint, timeout="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name"):
            await manager.start_session(trio.lowlevel.checkpoint, name=3)  # type: ignore[arg-type]
        assert check_invariants(manager).created == 0


# ---------------------------------------------------------------- sessions


def lookalikes(session_id: str) -> list[object]:
    number = session_id[1:]
    arabic_indic = "".join(chr(0x660 + int(digit)) for digit in number)
    return [
        f"s0{number}",
        f"s{arabic_indic}",
        "s\u00b2",
        f"S{number}",
        f" {session_id}",
        f"{session_id}\n",
        number,
        int(number),
        None,
    ]


async def test_only_exact_ids_find_a_session(autojump_clock: MockClock) -> None:
    """``manager.sessions`` answers only for a session's exact id."""
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(trio.sleep, 1)
        sessions = manager.sessions
        assert sessions[session.id] is session
        assert session.id in sessions
        for key in lookalikes(session.id):
            assert key not in sessions, key
            assert sessions.get(key) is None  # type: ignore[call-overload]
            with pytest.raises(KeyError):
                sessions[key]  # type: ignore[index]
        session.cancel()
