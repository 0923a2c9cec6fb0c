"""Hypothesis fuzzing: configurations, metadata, and whole random schedules.

Schedules of start / finish / fail / cancel / advance-the-clock / shutdown steps
are drawn whole and replayed in one ``trio.run`` under a ``MockClock`` with
``autojump_threshold=0`` against a model; every counter, session and timestamp
is checked after every step.
"""

from __future__ import annotations

import decimal
import json
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_sessions as ts
from trio_sessions._metadata import encode_metadata
from trio_sessions.testing import check_invariants

T = TypeVar("T")


def run_trio(afn: Callable[[], Awaitable[T]]) -> T:
    """Run ``afn`` in a fresh Trio run on a clock that jumps when all are blocked."""
    return trio.run(afn, clock=trio.testing.MockClock(autojump_threshold=0))


def compact_size(value: Any) -> int:
    """API.md's metadata size: compact UTF-8 JSON."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8"))


# ------------------------------------------------------------- configurations

SECONDS = st.floats(0, 1e9) | st.integers(0, 10**9) | st.just(math.inf)
OPTIONAL_SECONDS = st.none() | SECONDS
NOT_A_NUMBER = st.sampled_from(["30", b"30", [30], True, False, object(), 1j])

#: field -> (valid values, [(invalid values, the error they raise)])
FIELDS: dict[str, tuple[Any, list[tuple[Any, type[Exception]]]]] = {
    "max_sessions": (
        st.integers(1, 10**6),
        [
            (st.integers(max_value=0), ValueError),
            (st.floats(allow_nan=True) | NOT_A_NUMBER | st.none(), TypeError),
        ],
    ),
    "request_timeout": (
        OPTIONAL_SECONDS,
        [
            (st.floats(max_value=-1e-9) | st.integers(max_value=-1), ValueError),
            (st.just(math.nan), ValueError),
            (NOT_A_NUMBER, TypeError),
        ],
    ),
    "shutdown_timeout": (
        SECONDS,
        [
            (st.floats(max_value=-1e-9) | st.just(math.nan), ValueError),
            (NOT_A_NUMBER | st.none(), TypeError),
        ],
    ),
    "max_waiting": (
        st.integers(0, 10**6),
        [
            (st.integers(max_value=-1), ValueError),
            (st.floats() | NOT_A_NUMBER | st.none(), TypeError),
        ],
    ),
    "wait_timeout": (
        OPTIONAL_SECONDS,
        [
            (st.floats(max_value=-1e-9) | st.just(math.nan), ValueError),
            (NOT_A_NUMBER, TypeError),
        ],
    ),
    "max_session_metadata_bytes": (
        st.none() | st.integers(0, 10**9),
        [
            (st.integers(max_value=-1), ValueError),
            (st.floats() | NOT_A_NUMBER, TypeError),
        ],
    ),
    "max_metadata_bytes": (
        st.none() | st.integers(0, 10**9),
        [
            (st.integers(max_value=-1), ValueError),
            (st.floats() | NOT_A_NUMBER, TypeError),
        ],
    ),
    "shutdown_grace": (
        SECONDS,
        [
            (st.floats(max_value=-1e-9) | st.just(math.nan), ValueError),
            (NOT_A_NUMBER | st.none(), TypeError),
        ],
    ),
}


def test_fields_cover_the_config() -> None:
    """The fuzzer knows every SessionConfig field, so none escapes validation."""
    assert list(FIELDS) == [field.name for field in attrs.fields(ts.SessionConfig)]


@st.composite
def config_kwargs(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, type]]]:
    """Keyword arguments for SessionConfig, and the invalid ones in field order."""
    kwargs: dict[str, Any] = {}
    invalid: list[tuple[str, type]] = []
    for name, (valid, bad) in FIELDS.items():
        choice = draw(st.sampled_from(["default", "valid", "valid", "invalid"]))
        if choice == "valid":
            kwargs[name] = draw(valid)
        elif choice == "invalid":
            values, error = draw(st.sampled_from(bad))
            kwargs[name] = draw(values)
            invalid.append((name, error))
    return kwargs, invalid


@settings(max_examples=150)
@given(config_kwargs())
def test_configs_work_or_name_the_bad_field(
    drawn: tuple[dict[str, Any], list[tuple[str, type]]],
) -> None:
    """Valid configs open a working manager; invalid ones raise naming the field."""
    kwargs, invalid = drawn
    if invalid:
        name, error = invalid[0]  # attrs validates in field order
        with pytest.raises(error, match=name) as info:
            ts.SessionConfig(**kwargs)
        assert type(info.value) is error

        async def open_it() -> None:
            with pytest.raises(error, match=name):
                async with ts.open_session_manager(**kwargs):
                    raise AssertionError("opened with an invalid config")

        run_trio(open_it)
        return
    config = ts.SessionConfig(**kwargs)
    for name, value in kwargs.items():
        assert getattr(config, name) == value

    async def use_it() -> None:
        async with ts.open_session_manager(config) as manager:
            assert manager.config is config

            async def answer() -> int:
                await trio.lowlevel.checkpoint()
                return 42

            assert await manager.run(answer, timeout=None) == 42
            stats = manager.statistics()
            assert (stats.max_sessions, stats.created, stats.succeeded) == (
                config.max_sessions,
                1,
                1,
            )

    run_trio(use_it)


@given(
    st.text(min_size=1).filter(lambda name: name not in FIELDS and name.isidentifier())
)
def test_unknown_config_field_is_a_type_error(name: str) -> None:
    """An unknown keyword is a TypeError that names it."""
    with pytest.raises(TypeError, match=name):
        ts.SessionConfig(**{name: 1})


# ------------------------------------------------------------------- metadata

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5)


async def admit_metadata(
    metadata: Any, limit: int | None = None
) -> tuple[ts.Session | None, Exception | None, ts.SessionStatistics]:
    """Try to admit a session with ``metadata``; return it or the error, and stats."""
    async with ts.open_session_manager(max_session_metadata_bytes=limit) as manager:
        try:
            session = manager.start_session_nowait(
                trio.sleep_forever, metadata=metadata
            )
        except Exception as exc:
            stats = manager.statistics()
            assert stats.rejected == stats.rejections["metadata"]
            assert (stats.created, stats.metadata_bytes) == (0, 0)
            return None, exc, stats
        stats = manager.statistics()
        assert stats.metadata_bytes == session.metadata_bytes
        assert stats.rejected == 0
        session.cancel()
    end = manager.statistics()
    assert (end.metadata_bytes, end.cancelled, end.active) == (0, 1, 0)
    return session, None, stats


@settings(max_examples=150)
@given(JSON_OBJECTS, st.none() | st.integers(0, 400))
def test_any_json_object_is_measured_exactly(
    metadata: dict[str, Any], limit: int | None
) -> None:
    """Any JSON object is admitted with its exact compact size, or refused if over."""
    size = compact_size(metadata)
    session, error, stats = run_trio(lambda: admit_metadata(metadata, limit))
    if limit is not None and size > limit:
        assert isinstance(error, ts.MetadataError)
        assert stats.rejections["metadata"] == 1
        return
    assert error is None
    assert session is not None
    assert session.metadata_bytes == size
    assert session.metadata == metadata
    assert stats.peak_metadata_bytes == size


@settings(max_examples=20)
@given(st.text(min_size=1, max_size=8), st.integers(1, 300_000))
def test_huge_strings_are_measured_in_utf8_bytes(piece: str, repeat: int) -> None:
    """Huge and multi-byte strings are counted in UTF-8 bytes, not characters."""
    metadata = {"blob": piece * repeat}
    session, error, _ = run_trio(lambda: admit_metadata(metadata))
    assert error is None
    assert session is not None
    assert session.metadata_bytes == compact_size(metadata)
    _, error, stats = run_trio(lambda: admit_metadata(metadata, limit=len(piece)))
    assert isinstance(error, ts.MetadataError)
    assert stats.rejections["metadata"] == 1


def nest(depth: int, kind: str) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if kind == "list" else {f"k{level % 7}": value}
    return value


@settings(max_examples=25)
@given(st.integers(0, 20_000), st.sampled_from(["list", "dict"]))
def test_deep_nesting_is_measured_or_refused_never_crashes(
    depth: int, kind: str
) -> None:
    """Deep nesting is measured exactly, or refused as MetadataError if too deep."""
    metadata = {"deep": nest(depth, kind)}
    session, error, stats = run_trio(lambda: admit_metadata(metadata))
    if error is not None:
        assert isinstance(error, ts.MetadataError)
        assert stats.rejections["metadata"] == 1
        assert depth > 100  # shallow values are never refused
        return
    assert session is not None
    assert session.metadata_bytes == compact_size(metadata)


class Opaque:
    """Not JSON."""


NOT_JSON = st.sampled_from(
    [
        Opaque(),
        {1, 2},
        frozenset(),
        b"bytes",
        bytearray(b"x"),
        1j,
        math.nan,
        math.inf,
        -math.inf,
        decimal.Decimal("1.5"),
        (lambda: None),
        10**5000,  # over Python's int-to-str digit limit
        {("tuple", "key"): 1},
    ]
)


@st.composite
def json_with_a_poison(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object with one non-JSON value hidden somewhere inside."""
    poison = draw(NOT_JSON)
    path = draw(st.lists(st.sampled_from(["list", "dict"]), max_size=6))
    value: Any = poison
    for kind in reversed(path):
        siblings = draw(st.lists(JSON_SCALARS, max_size=2))
        value = [*siblings, value] if kind == "list" else {"x": siblings, "v": value}
    return {"ok": draw(JSON_SCALARS), "bad": value}


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=10), JSON_SCALARS, max_size=6))
def test_flat_metadata_copy_is_its_json_round_trip(metadata: dict[str, Any]) -> None:
    """The copy kept of flat metadata is exactly what its JSON decodes to, types too."""
    copy, size = encode_metadata(metadata, None)
    decoded = json.loads(
        json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
    )
    assert size == compact_size(metadata)
    assert dict(copy) == decoded
    assert [type(value) for value in copy.values()] == [
        type(value) for value in decoded.values()
    ]
    assert copy is not metadata


@settings(max_examples=100)
@given(json_with_a_poison())
def test_non_json_anywhere_is_a_metadata_error(metadata: dict[str, Any]) -> None:
    """Any non-JSON value, NaN or infinity anywhere is a MetadataError, counted."""
    session, error, stats = run_trio(lambda: admit_metadata(metadata))
    assert session is None
    assert isinstance(error, ts.MetadataError)
    assert stats.rejections["metadata"] == 1


@settings(max_examples=10)
@given(st.characters(categories=["Cs"]), st.booleans())
def test_lone_surrogates_are_a_metadata_error(surrogate: str, in_key: bool) -> None:
    """A lone surrogate (no UTF-8 encoding) in a key or value is a MetadataError."""
    metadata = {surrogate: 1} if in_key else {"text": f"a{surrogate}b"}
    _, error, stats = run_trio(lambda: admit_metadata(metadata))
    assert isinstance(error, ts.MetadataError)
    assert stats.rejections["metadata"] == 1


@settings(max_examples=50)
@given(st.lists(st.sampled_from(["list", "dict"]), max_size=8), st.booleans())
def test_cycles_are_a_metadata_error(path: list[str], through_list: bool) -> None:
    """A reference cycle at any depth is a MetadataError, not a RecursionError."""
    root: dict[str, Any] = {}
    node: Any = root
    for kind in path:
        child: Any = [] if kind == "list" else {}
        if isinstance(node, list):
            node.append(child)
        else:
            node["n"] = child
        node = child
    back: Any = [root] if through_list else root
    if isinstance(node, list):
        node.append(back)
    else:
        node["cycle"] = back
    _, error, stats = run_trio(lambda: admit_metadata(root))
    assert isinstance(error, ts.MetadataError)
    assert stats.rejections["metadata"] == 1


@given(st.one_of(st.lists(st.integers()), st.text(), st.integers(), st.tuples()))
def test_metadata_must_be_a_mapping(metadata: Any) -> None:
    """Metadata that is not a mapping is a MetadataError, counted."""
    _, error, stats = run_trio(lambda: admit_metadata(metadata))
    assert isinstance(error, ts.MetadataError)
    assert stats.rejections["metadata"] == 1


def test_non_string_scalar_keys_are_measured_as_json_writes_them() -> None:
    """Keys json turns into strings (int, float, bool, None) are copied that way."""
    metadata = {7: "a", 2.5: "b", True: "c", None: "d"}
    session, error, _ = run_trio(lambda: admit_metadata(metadata))
    assert error is None
    assert session is not None
    assert dict(session.metadata) == {"7": "a", "2.5": "b", "true": "c", "null": "d"}
    assert session.metadata_bytes == compact_size(metadata)


# ------------------------------------------------------------------ schedules

MAX_SESSIONS = 3
MAX_WAITING = 2
WAIT_TIMEOUT = 1.75  # never a multiple of 0.5, so never ties with other events
SESSION_LIMIT = 60
BUDGET = 100

#: Every time in a schedule is a multiple of 0.5 except queue timeouts.
TIMEOUTS = st.sampled_from([None, None, 0.5, 1, 1.5, 2, 3])
START = st.tuples(
    st.just("start"),
    TIMEOUTS,
    st.integers(0, 60),  # metadata padding: 8 + padding bytes
    st.sampled_from(["nowait", "await", "await"]),
)
END = st.tuples(st.sampled_from(["finish", "fail", "cancel"]), st.integers(0, 30))
ADVANCE = st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 1.5, 2]))
SHUTDOWN = st.tuples(st.just("shutdown"), st.sampled_from([0, 0.5, 1, 2.5]))
# Weighted by repetition: shutdown ends the interesting part, so it is rarest.
STEP = st.sampled_from([START] * 8 + [END] * 5 + [ADVANCE] * 4 + [SHUTDOWN]).flatmap(
    lambda step: step
)
SCHEDULES = st.lists(STEP, min_size=8, max_size=40)


@attrs.define(eq=False)
class Job:
    """One start step: what the model expects of it, and the real handle."""

    timeout: float | None
    meta_bytes: int
    release: trio.Event = attrs.Factory(trio.Event)
    fail: bool = False
    handle: ts.Session | None = None
    error: BaseException | None = None
    # The model's view.
    admitted_at: float | None = None
    deadline: float = math.inf
    outcome: ts.Outcome | None = None
    completed_at: float | None = None
    queued_until: float | None = None  # while waiting: when its wait times out


async def work(job: Job) -> str:
    await job.release.wait()
    if job.fail:
        raise ValueError("asked to fail")
    return "done"


@attrs.define
class Model:
    """What the manager must look like, advanced event by event in time order."""

    now: float = 0.0
    closing: bool = False
    jobs: list[Job] = attrs.Factory(list)
    queue: list[Job] = attrs.Factory(list)
    created: int = 0
    counts: dict[ts.Outcome, int] = attrs.Factory(lambda: dict.fromkeys(ts.Outcome, 0))
    rejections: dict[str, int] = attrs.Factory(
        lambda: {"capacity": 0, "shutting_down": 0, "metadata": 0}
    )
    peak_active: int = 0
    peak_metadata: int = 0
    waited: int = 0

    @property
    def live(self) -> list[Job]:
        return [j for j in self.jobs if j.admitted_at is not None and j.outcome is None]

    @property
    def metadata_bytes(self) -> int:
        return sum(job.meta_bytes for job in self.live)

    def admit(self, job: Job) -> None:
        job.admitted_at = self.now
        job.deadline = math.inf if job.timeout is None else self.now + job.timeout
        self.created += 1
        self.peak_active = max(self.peak_active, len(self.live))
        self.peak_metadata = max(self.peak_metadata, self.metadata_bytes)

    def complete(self, job: Job, outcome: ts.Outcome) -> None:
        job.outcome = outcome
        job.completed_at = self.now
        self.counts[outcome] += 1
        if self.queue and not self.closing:
            # The freed token goes to the first queued caller, in this instant.
            waiter = self.queue.pop(0)
            waiter.queued_until = None
            self.waited += 1
            self.admit(waiter)

    def run_until(self, until: float) -> None:
        """Let deadlines and queue timeouts fire, in time order, up to ``until``."""
        while True:
            events = [(j.deadline, 0, j) for j in self.live if j.deadline <= until]
            events += [(j.queued_until, 1, j) for j in self.queue]
            events = [e for e in events if e[0] is not None and e[0] <= until]
            if not events:
                break
            when = min(e[0] for e in events)
            self.now = when
            for _, kind, job in sorted(
                (e for e in events if e[0] == when), key=lambda e: e[1]
            ):
                if kind == 0:
                    self.complete(job, ts.Outcome.TIMEOUT)
                else:
                    self.queue.remove(job)
                    self.rejections["capacity"] += 1
        self.now = until


class Replay:
    """Replays a schedule against a real manager and the model, checking each step."""

    def __init__(self, manager: ts.SessionManager, nursery: trio.Nursery) -> None:
        self.manager = manager
        self.nursery = nursery
        self.model = Model()
        self.report: ts.ShutdownReport | None = None

    async def queued_caller(self, job: Job) -> None:
        try:
            job.handle = await self.manager.start_session(
                work, job, timeout=job.timeout
            )
        except ts.RejectedError as exc:
            job.error = exc

    async def start(self, timeout: float | None, padding: int, via: str) -> None:
        model = self.model
        metadata = {"p": "x" * padding}
        full = len(model.live) >= MAX_SESSIONS
        queue = via == "await" and full and not model.closing
        job = Job(timeout, 0 if queue else compact_size(metadata))
        model.jobs.append(job)
        if queue:
            if len(model.queue) >= MAX_WAITING:
                model.rejections["capacity"] += 1
                expected: type[Exception] | None = ts.CapacityError
            else:
                job.queued_until = model.now + WAIT_TIMEOUT
                model.queue.append(job)
                self.nursery.start_soon(self.queued_caller, job)
                return
        elif model.closing:
            model.rejections["shutting_down"] += 1
            expected = ts.ShuttingDownError
        elif full:
            model.rejections["capacity"] += 1
            expected = ts.CapacityError
        elif job.meta_bytes > SESSION_LIMIT or (
            model.metadata_bytes + job.meta_bytes > BUDGET
        ):
            model.rejections["metadata"] += 1
            expected = ts.MetadataError
        else:
            model.admit(job)
            expected = None
        start = self.manager.start_session_nowait
        try:
            if via == "nowait":
                job.handle = start(work, job, metadata=metadata, timeout=timeout)
            else:
                job.handle = await self.manager.start_session(
                    work, job, metadata=metadata, timeout=timeout
                )
        except ts.RejectedError as exc:
            job.error = exc
        if expected is None:
            assert job.error is None, job.error
        else:
            assert type(job.error) is expected

    def pick(self, index: int) -> Job | None:
        admitted = [job for job in self.model.jobs if job.handle is not None]
        return admitted[index % len(admitted)] if admitted else None

    async def end(self, index: int, how: str) -> None:
        job = self.pick(index)
        if job is None:
            return
        assert job.handle is not None
        if how == "cancel":
            job.handle.cancel()
        else:
            job.fail = how == "fail"
            job.release.set()
        if job.outcome is None:
            outcome = {
                "cancel": ts.Outcome.CANCELLED,
                "fail": ts.Outcome.ERROR,
                "finish": ts.Outcome.SUCCESS,
            }[how]
            self.model.complete(job, outcome)

    async def advance(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.model.run_until(self.model.now + seconds)

    async def shutdown(self, drain: float) -> None:
        model = self.model
        first = not model.closing
        started = model.now
        initial = len(model.live)
        if first:
            model.closing = True
            for job in model.queue:
                job.queued_until = None
            model.rejections["shutting_down"] += len(model.queue)
            model.queue.clear()
            model.run_until(started + drain)
            leftover = model.live
            for job in leftover:
                model.complete(job, ts.Outcome.CANCELLED)
            if not leftover:
                ends = [j.completed_at for j in model.jobs if j.completed_at]
                model.now = max([started, *[t for t in ends if t >= started]])
        report = await self.manager.shutdown(drain)
        if not first:
            assert report is self.report
            return
        self.report = report
        assert report == ts.ShutdownReport(
            initial_active=initial,
            completed=initial - len(leftover),
            cancelled=len(leftover),
            timeout_reached=bool(leftover),
            duration=model.now - started,
        )

    def check(self) -> None:
        model, manager = self.model, self.manager
        assert trio.current_time() == model.now
        stats = manager.statistics()
        live = model.live
        actual = {
            "created": stats.created,
            "completed": stats.completed,
            "succeeded": stats.succeeded,
            "failed": stats.failed,
            "timed_out": stats.timed_out,
            "cancelled": stats.cancelled,
            "active": stats.active,
            "waiting": stats.waiting,
            "rejections": dict(stats.rejections),
            "rejected": stats.rejected,
            "metadata_bytes": stats.metadata_bytes,
            "peak_active": stats.peak_active,
            "peak_metadata_bytes": stats.peak_metadata_bytes,
            "wait_times.count": stats.wait_times.count,
            "durations.count": stats.durations.count,
        }
        wanted = {
            "created": model.created,
            "completed": model.created - len(live),
            "succeeded": model.counts[ts.Outcome.SUCCESS],
            "failed": model.counts[ts.Outcome.ERROR],
            "timed_out": model.counts[ts.Outcome.TIMEOUT],
            "cancelled": model.counts[ts.Outcome.CANCELLED],
            "active": len(live),
            "waiting": len(model.queue),
            "rejections": model.rejections,
            "rejected": sum(model.rejections.values()),
            "metadata_bytes": model.metadata_bytes,
            "peak_active": model.peak_active,
            "peak_metadata_bytes": model.peak_metadata,
            "wait_times.count": model.waited,
            "durations.count": model.created - len(live),
        }
        check_invariants(manager)
        wrong = {k: (actual[k], wanted[k]) for k in wanted if actual[k] != wanted[k]}
        assert not wrong, f"(actual, model) at t={model.now}: {wrong}"
        assert stats.active <= stats.max_sessions
        assert set(manager.sessions) == {j.handle.id for j in live if j.handle}
        for job in model.jobs:
            if job.admitted_at is None:
                assert job.handle is None
                continue
            session = job.handle
            assert session is not None, "the model admitted a job the manager did not"
            assert (session.outcome, session.completed_at) == (
                job.outcome,
                job.completed_at,
            )
            assert session.started_at == job.admitted_at
            assert session.metadata_bytes == job.meta_bytes


async def replay(steps: list[tuple[Any, ...]]) -> None:
    async with (
        ts.open_session_manager(
            max_sessions=MAX_SESSIONS,
            max_waiting=MAX_WAITING,
            wait_timeout=WAIT_TIMEOUT,
            request_timeout=None,
            max_session_metadata_bytes=SESSION_LIMIT,
            max_metadata_bytes=BUDGET,
            shutdown_grace=1,
        ) as manager,
        trio.open_nursery() as nursery,
    ):
        player = Replay(manager, nursery)
        for step in steps:
            kind, *args = step
            if kind == "start":
                await player.start(*args)
            elif kind in ("finish", "fail", "cancel"):
                await player.end(args[0], kind)
            elif kind == "advance":
                await player.advance(args[0])
            else:
                await player.shutdown(args[0])
            await trio.testing.wait_all_tasks_blocked()
            player.check()
        await player.shutdown(0)
        await trio.testing.wait_all_tasks_blocked()
        player.check()
    assert manager.statistics().active == 0


@settings(max_examples=500)
@given(SCHEDULES)
def test_random_schedules_keep_every_invariant(steps: list[tuple[Any, ...]]) -> None:
    """Any schedule of start/finish/fail/cancel/time/shutdown matches the model."""
    run_trio(lambda: replay(steps))


def test_a_known_busy_schedule() -> None:
    """A hand-written schedule through queueing, timeouts and shutdown matches."""
    steps: list[tuple[Any, ...]] = [
        ("start", 2, 10, "nowait"),
        ("start", None, 50, "await"),
        ("start", 1, 0, "await"),
        ("start", None, 0, "await"),  # queues
        ("start", 0.5, 0, "await"),  # queues
        ("start", None, 0, "await"),  # queue full
        ("start", None, 0, "nowait"),  # full
        (
            "advance",
            2,
        ),  # t=1 a session times out, a waiter gets in; t=1.75 one waits out
        ("start", 3, 45, "nowait"),  # over the budget
        ("fail", 1),
        ("cancel", 0),
        ("shutdown", 2.5),
        ("start", None, 0, "nowait"),
    ]
    run_trio(lambda: replay(steps))


if sys.version_info >= (3, 11):  # pragma: no branch

    def test_int_digit_limit_applies() -> None:
        """The huge-int case above relies on Python's int-to-str digit limit."""
        assert sys.get_int_max_str_digits() in range(1, 5000)
