"""Configuration: SessionConfig's validation and open_session_manager's arguments.

Hand-picked bad values, then Hypothesis-drawn keyword sets over every field.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from session_helpers import (
    run_trio,
)
from strategies import (
    CONFIG_FIELDS,
    config_kwargs,
)
from trio.testing import MockClock

import trio_sessions as ts


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("max_sessions", 0, ValueError),
        ("max_sessions", 1.5, TypeError),
        ("max_sessions", True, TypeError),
        ("request_timeout", -1, ValueError),
        ("request_timeout", "30", TypeError),
        ("shutdown_timeout", None, TypeError),
        ("shutdown_timeout", math.nan, ValueError),
        ("max_waiting", -1, ValueError),
        ("wait_timeout", -0.1, ValueError),
        ("max_session_metadata_bytes", -1, ValueError),
        ("max_metadata_bytes", 1.0, TypeError),
        ("shutdown_grace", -1, ValueError),
    ],
)
async def test_invalid_config_names_the_field(
    field: str, value: Any, error: type[Exception], autojump_clock: MockClock
) -> None:
    """Invalid configuration raises TypeError/ValueError naming the field."""
    with pytest.raises(error, match=field):
        ts.SessionConfig(**{field: value})
    with pytest.raises(error, match=field):
        async with ts.open_session_manager(**{field: value}):
            pass  # pragma: no cover


async def test_config_and_keyword_overrides(autojump_clock: MockClock) -> None:
    """open_session_manager takes a config, keywords, or both (keywords win)."""
    base = ts.SessionConfig(max_sessions=5, request_timeout=None)
    async with ts.open_session_manager(base, max_sessions=7) as manager:
        assert manager.config == ts.SessionConfig(max_sessions=7, request_timeout=None)
        assert manager.statistics().max_sessions == 7
    async with ts.open_session_manager(config=base) as manager:
        assert manager.config is base
    with pytest.raises(TypeError, match="max_session"):
        async with ts.open_session_manager(max_session=3):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="SessionConfig"):
        async with ts.open_session_manager({"max_sessions": 3}):  # type: ignore[arg-type]
            pass  # pragma: no cover


# --------------------------------------------------------------- drawn configurations


def test_fields_cover_the_config() -> None:
    """The fuzzer knows every SessionConfig field, so none escapes validation."""
    assert list(CONFIG_FIELDS) == [
        field.name for field in attrs.fields(ts.SessionConfig)
    ]


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
    st.text(min_size=1).filter(
        lambda name: name not in CONFIG_FIELDS and name.isidentifier()
    )
)
def test_unknown_config_field_is_a_type_error(name: str) -> None:
    """An unknown keyword is a TypeError that names it."""
    with pytest.raises(TypeError, match=name):
        ts.SessionConfig(**{name: 1})
