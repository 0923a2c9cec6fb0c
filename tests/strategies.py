"""Hypothesis strategies shared by the tests, each drawing a whole input at once.

Race schedules (plain attrs data; each injection names the numbered await point
at which it fires), SessionConfig keywords, metadata, and the fuzzer's schedules.
"""

from __future__ import annotations

import decimal
import math
from typing import Any

import attrs
from hypothesis import strategies as st

__all__ = [
    "APP_KINDS",
    "CONFIG_FIELDS",
    "FINALS",
    "JOB_KINDS",
    "JSON_OBJECTS",
    "JSON_SCALARS",
    "JSON_VALUES",
    "NOT_JSON",
    "SCHEDULES",
    "Behaviour",
    "Injection",
    "Job",
    "ManagerPlan",
    "MiddlewarePlan",
    "RequestPlan",
    "config_kwargs",
    "json_with_a_poison",
    "manager_plans",
    "middleware_plans",
]

#: What an app does with its request (see tests/test_races.py's app).
APP_KINDS = ("immediate", "sleep", "stream", "read", "raise", "background")
#: How the response ends: a final body, or one of the ASGI send extensions.
FINALS = ("body", "pathsend", "zerocopysend")
#: What a middleware injection does when its point is reached.
MIDDLEWARE_INJECTIONS = (
    "cancel",  # Session.cancel() of the target request's session, if live
    "cancel_all",  # Session.cancel() of every live session
    "shutdown",  # manager.shutdown(timeout=0), as the manager's owner
    "middleware_shutdown",  # SessionMiddleware.shutdown(timeout=0)
    "disconnect",  # the target's client leaves (http.disconnect)
    "lifespan",  # the server sends lifespan.shutdown
    "server_cancel",  # the server cancels the target's request task
)
#: What a manager-only injection does.
MANAGER_INJECTIONS = ("cancel", "cancel_all", "shutdown", "outer", "outer_all")
#: How a manager-only job is started.
JOB_KINDS = ("nowait", "start", "run", "inline", "inline_nowait")

SECONDS = st.sampled_from([0, 0, 0.5, 1, 2.5])


@attrs.frozen
class Behaviour:
    """One request's app: its kind, its pace, how it ends its response."""

    kind: str
    seconds: float = 0
    chunks: int = 0
    final: str = "body"
    started: bool = False  # "raise": after starting the response


@attrs.frozen
class RequestPlan:
    """One HTTP request: when it arrives, its body, and what the app does."""

    arrival: float
    body: tuple[bytes, ...]
    chunk_delay: float
    declared: bool  # sends Content-Length
    channel: bool  # receive is a MemoryReceiveChannel.receive (Hypercorn's)
    app: Behaviour


@attrs.frozen
class Injection:
    """``kind`` fires when the ``at``-th await point of the run is reached.

    Hand-written schedules may name the point instead: ``where`` is its label
    (such as ``"r0 client sends chunk 1"``), and ``at`` is then ignored.
    """

    at: int
    kind: str
    target: int = 0
    where: str | None = None


@attrs.frozen
class MiddlewarePlan:
    """A middleware, its manager's configuration, its requests, its injections."""

    owner: bool  # the lifespan opens the manager (else manager= an external one)
    inline: bool  # the middleware's mode: inline sessions, or a task per request
    max_sessions: int
    max_waiting: int
    wait_timeout: float | None
    request_timeout: float | None
    shutdown_timeout: float
    max_body_bytes: int | None
    requests: tuple[RequestPlan, ...]
    injections: tuple[Injection, ...]

    @property
    def config(self) -> dict[str, Any]:
        return {
            "max_sessions": self.max_sessions,
            "max_waiting": self.max_waiting,
            "wait_timeout": self.wait_timeout,
            "request_timeout": self.request_timeout,
            "shutdown_timeout": self.shutdown_timeout,
        }


@attrs.frozen
class Job:
    """One manager-only session: how it is started and what its function does."""

    arrival: float
    via: str  # one of JOB_KINDS
    kind: str  # "return", "sleep", "steps", "raise"
    seconds: float
    steps: int
    timeout: float | None


@attrs.frozen
class ManagerPlan:
    """A manager's configuration, its jobs and its injections."""

    max_sessions: int
    max_waiting: int
    wait_timeout: float | None
    shutdown_timeout: float
    jobs: tuple[Job, ...]
    injections: tuple[Injection, ...]


@st.composite
def behaviours(draw: st.DrawFn) -> Behaviour:
    """An app behaviour; send extensions mostly end responses that do not stream."""
    kind = draw(st.sampled_from(APP_KINDS))
    final = draw(st.sampled_from(("body", "body", *FINALS)))
    return Behaviour(
        kind=kind,
        seconds=draw(SECONDS),
        chunks=draw(st.integers(0, 2)) if kind == "stream" else 0,
        final=final,
        started=kind == "raise" and draw(st.booleans()),
    )


@st.composite
def requests(draw: st.DrawFn) -> RequestPlan:
    """One request: arrival, a body of up to three small chunks, the app's behaviour."""
    return RequestPlan(
        arrival=draw(st.sampled_from([0, 0, 0.5, 1, 3])),
        body=tuple(draw(st.lists(st.binary(max_size=8), min_size=1, max_size=3))),
        chunk_delay=draw(st.sampled_from([0, 0, 0.5])),
        declared=draw(st.booleans()),
        channel=draw(st.booleans()),
        app=draw(behaviours()),
    )


def _injections(kinds: tuple[str, ...], targets: int) -> st.SearchStrategy[Injection]:
    return st.builds(
        Injection,
        # Most races are in the first few steps of a request.
        at=st.integers(1, 8) | st.integers(1, 40),
        kind=st.sampled_from(kinds),
        target=st.integers(0, targets - 1),
    )


@st.composite
def middleware_plans(draw: st.DrawFn) -> MiddlewarePlan:
    """A whole middleware schedule: config, 1-4 requests, 0-2 injections."""
    reqs = tuple(draw(st.lists(requests(), min_size=1, max_size=4)))
    return MiddlewarePlan(
        owner=draw(st.booleans()),
        inline=draw(st.booleans()),
        max_sessions=draw(st.integers(1, 3)),
        max_waiting=draw(st.sampled_from([0, 0, 1, 2])),
        wait_timeout=draw(st.sampled_from([None, 1])),
        # Mostly no deadline, so that a cancellation nobody asked for shows.
        request_timeout=draw(st.sampled_from([None, None, None, 1, 4])),
        shutdown_timeout=draw(st.sampled_from([0, 1, 10])),
        max_body_bytes=draw(st.sampled_from([None, 10, 1000])),
        requests=reqs,
        injections=tuple(
            draw(
                st.lists(
                    _injections(MIDDLEWARE_INJECTIONS, len(reqs)),
                    min_size=0,
                    max_size=2,
                )
            )
        ),
    )


@st.composite
def manager_plans(draw: st.DrawFn) -> ManagerPlan:
    """A whole manager-only schedule: config, 1-5 jobs, 0-2 injections."""
    jobs = tuple(
        draw(
            st.lists(
                st.builds(
                    Job,
                    arrival=st.sampled_from([0, 0, 0.5, 1]),
                    via=st.sampled_from(JOB_KINDS),
                    kind=st.sampled_from(["return", "sleep", "steps", "raise"]),
                    seconds=SECONDS,
                    steps=st.integers(0, 3),
                    timeout=st.sampled_from([None, None, 1, 3]),
                ),
                min_size=1,
                max_size=5,
            )
        )
    )
    return ManagerPlan(
        max_sessions=draw(st.integers(1, 3)),
        max_waiting=draw(st.sampled_from([0, 1, 2])),
        wait_timeout=draw(st.sampled_from([None, 1])),
        shutdown_timeout=draw(st.sampled_from([0, 1, 10])),
        jobs=jobs,
        injections=tuple(
            draw(
                st.lists(
                    _injections(MANAGER_INJECTIONS, len(jobs)), min_size=0, max_size=2
                )
            )
        ),
    )


# ------------------------------------------------- configurations and metadata
# Drawn by tests/test_config.py, tests/test_metadata.py and tests/test_fuzz.py.

CONFIG_SECONDS = st.floats(0, 1e9) | st.integers(0, 10**9) | st.just(math.inf)
OPTIONAL_CONFIG_SECONDS = st.none() | CONFIG_SECONDS
NOT_A_NUMBER = st.sampled_from(["30", b"30", [30], True, False, object(), 1j])

#: SessionConfig field -> (valid values, [(invalid values, the error they raise)])
CONFIG_FIELDS: dict[str, tuple[Any, list[tuple[Any, type[Exception]]]]] = {
    "max_sessions": (
        st.integers(1, 10**6),
        [
            (st.integers(max_value=0), ValueError),
            (st.floats(allow_nan=True) | NOT_A_NUMBER | st.none(), TypeError),
        ],
    ),
    "request_timeout": (
        OPTIONAL_CONFIG_SECONDS,
        [
            (st.floats(max_value=-1e-9) | st.integers(max_value=-1), ValueError),
            (st.just(math.nan), ValueError),
            (NOT_A_NUMBER, TypeError),
        ],
    ),
    "shutdown_timeout": (
        CONFIG_SECONDS,
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
        OPTIONAL_CONFIG_SECONDS,
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
        CONFIG_SECONDS,
        [
            (st.floats(max_value=-1e-9) | st.just(math.nan), ValueError),
            (NOT_A_NUMBER | st.none(), TypeError),
        ],
    ),
    "max_sessions_per_key": (
        st.none() | st.integers(1, 10**6),
        [
            (st.integers(max_value=0), ValueError),
            (st.floats() | NOT_A_NUMBER, TypeError),
        ],
    ),
    "key_limits": (
        st.dictionaries(st.text(max_size=5), st.integers(1, 100), max_size=3),
        [
            (
                st.dictionaries(
                    st.text(max_size=5), st.integers(max_value=0), min_size=1
                ),
                ValueError,
            ),
            (st.dictionaries(st.integers(), st.integers(1, 5), min_size=1), TypeError),
            (
                st.dictionaries(
                    st.text(max_size=5), NOT_A_NUMBER | st.floats(), min_size=1
                ),
                TypeError,
            ),
            (st.lists(st.integers()) | st.none() | st.integers(), TypeError),
        ],
    ),
    "tracked_keys": (
        st.integers(0, 1000),
        [
            (st.integers(max_value=-1), ValueError),
            (st.floats() | NOT_A_NUMBER | st.none(), TypeError),
        ],
    ),
    "reserved_share": (
        st.floats(0, 1, exclude_max=True) | st.just(0),
        [
            (
                st.floats(min_value=1) | st.floats(max_value=-1e-9) | st.just(math.nan),
                ValueError,
            ),
            (NOT_A_NUMBER | st.none(), TypeError),
        ],
    ),
    "reserved_priority": (
        st.integers(-10, 10),
        [(st.floats() | NOT_A_NUMBER | st.none(), TypeError)],
    ),
}


@st.composite
def config_kwargs(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, type]]]:
    """Keyword arguments for SessionConfig, and the invalid ones in field order."""
    kwargs: dict[str, Any] = {}
    invalid: list[tuple[str, type]] = []
    for name, (valid, bad) in CONFIG_FIELDS.items():
        choice = draw(st.sampled_from(["default", "valid", "valid", "invalid"]))
        if choice == "valid":
            kwargs[name] = draw(valid)
        elif choice == "invalid":
            values, error = draw(st.sampled_from(bad))
            kwargs[name] = draw(values)
            invalid.append((name, error))
    return kwargs, invalid


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


# ------------------------------------------------------------ model schedules
# Replayed by tests/test_fuzz.py against its model of the manager.

#: Every time in a schedule is a multiple of 0.5 (the fuzzer's queue timeout is not).
_STEP_TIMEOUTS = st.sampled_from([None, None, 0.5, 1, 1.5, 2, 3])
_START = st.tuples(
    st.just("start"),
    _STEP_TIMEOUTS,
    st.integers(0, 60),  # metadata padding: 8 + padding bytes
    st.sampled_from(["nowait", "await", "await"]),
)
_END = st.tuples(st.sampled_from(["finish", "fail", "cancel"]), st.integers(0, 30))
_ADVANCE = st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 1.5, 2]))
_SHUTDOWN = st.tuples(st.just("shutdown"), st.sampled_from([0, 0.5, 1, 2.5]))
# Weighted by repetition: shutdown ends the interesting part, so it is rarest.
_STEP = st.sampled_from(
    [_START] * 8 + [_END] * 5 + [_ADVANCE] * 4 + [_SHUTDOWN]
).flatmap(lambda step: step)
#: Lists of steps: ("start", timeout, padding, via), ("finish"|"fail"|"cancel",
#: index), ("advance", seconds), ("shutdown", drain).
SCHEDULES = st.lists(_STEP, min_size=8, max_size=40)
