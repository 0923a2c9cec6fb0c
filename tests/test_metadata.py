"""Metadata accounting: its size in compact UTF-8 JSON, the copy, the two limits.

Hand-picked cases first, then Hypothesis-drawn JSON (and not-JSON) values.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from session_helpers import (
    compact_size,
    run_trio,
    sleep_then,
)
from strategies import (
    JSON_OBJECTS,
    JSON_SCALARS,
    json_with_a_poison,
)
from trio.testing import MockClock

import trio_sessions as ts
from trio_sessions.testing import check_invariants


async def test_metadata_bytes_match_compact_utf8_json(
    autojump_clock: MockClock,
) -> None:
    """metadata_bytes is the compact UTF-8 JSON size, non-ASCII included."""
    metadata = {"client": "zoë", "tags": ["a", 1, None, True], "n": 1.5}
    expected = len(
        json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode()
    )
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1, metadata=metadata)
        none_session = await manager.start_session(sleep_then, 1)
        assert session.metadata_bytes == expected
        assert none_session.metadata_bytes == 0
        assert dict(none_session.metadata) == {}
        assert manager.statistics().metadata_bytes == expected
    assert manager.statistics().metadata_bytes == 0


async def test_metadata_is_copied_at_admission(autojump_clock: MockClock) -> None:
    """Mutating the caller's metadata after admission changes nothing."""
    metadata: dict[str, Any] = {"items": [1, 2]}
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1, metadata=metadata)
        before = session.metadata_bytes
        metadata["items"].append(3)
        metadata["more"] = "x" * 100
        assert session.metadata == {"items": [1, 2]}
        assert manager.statistics().metadata_bytes == before
        with pytest.raises(TypeError):
            session.metadata["x"] = 1  # type: ignore[index]
    assert manager.statistics().metadata_bytes == 0


async def test_flat_metadata_is_copied_at_admission(autojump_clock: MockClock) -> None:
    """Flat metadata (str keys, scalar values) is copied too, not kept by reference."""
    metadata: dict[str, Any] = {"path": "/a", "n": 1}
    async with ts.open_session_manager() as manager:
        session = await manager.start_session(sleep_then, 1, metadata=metadata)
        metadata["path"] = "/changed"
        metadata["more"] = "x"
        assert session.metadata == {"path": "/a", "n": 1}
        assert session.metadata_bytes == len('{"path":"/a","n":1}')
        with pytest.raises(TypeError):
            session.metadata["x"] = 1  # type: ignore[index]


async def test_total_metadata_budget(autojump_clock: MockClock) -> None:
    """Admission beyond max_metadata_bytes is refused until bytes are released."""
    metadata = {"k": "x" * 10}  # {"k":"xxxxxxxxxx"} is 18 bytes
    async with ts.open_session_manager(max_metadata_bytes=40) as manager:
        first = manager.start_session_nowait(sleep_then, 1, metadata=metadata)
        manager.start_session_nowait(sleep_then, 2, metadata=metadata)
        with pytest.raises(ts.MetadataError, match="max_metadata_bytes=40"):
            manager.start_session_nowait(sleep_then, 1, metadata=metadata)
        assert check_invariants(manager).metadata_bytes == 36
        await first.wait()
        manager.start_session_nowait(sleep_then, 1, metadata=metadata)
        stats = check_invariants(manager)
    assert (stats.rejections["metadata"], stats.created, stats.metadata_bytes) == (
        1,
        3,
        36,
    )
    assert stats.peak_metadata_bytes == 36


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        (["not", "a", "mapping"], "must be a mapping"),
        ({"obj": object()}, "not JSON-encodable"),
        ({"nan": math.nan}, "not JSON-encodable"),
        ({(1, 2): "tuple key"}, "not JSON-encodable"),
        ({"big": "x" * 20_000}, "over max_session_metadata_bytes=10240"),
    ],
)
async def test_bad_metadata_is_rejected_and_counted(
    metadata: Any, match: str, autojump_clock: MockClock
) -> None:
    """Non-mapping, non-JSON or oversize metadata raises MetadataError, counted."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.MetadataError, match=match) as info:
            await manager.start_session(sleep_then, 1, metadata=metadata)
        stats = check_invariants(manager)
    assert info.value.reason == "metadata"
    assert (stats.rejections["metadata"], stats.created) == (1, 0)


async def test_cyclic_metadata_is_rejected(autojump_clock: MockClock) -> None:
    """Metadata containing a reference cycle raises MetadataError."""
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.MetadataError, match="not JSON-encodable"):
            manager.start_session_nowait(sleep_then, 1, metadata=cyclic)


async def test_metadata_keys_that_collide_as_json_are_rejected(
    autojump_clock: MockClock,
) -> None:
    """Keys 1 and "1" would count bytes for two keys but keep one: refused."""
    async with ts.open_session_manager() as manager:
        with pytest.raises(ts.MetadataError, match="collide"):
            manager.start_session_nowait(sleep_then, 1, metadata={"1": "x", 1: "y"})  # type: ignore[dict-item]
        stats = check_invariants(manager)
    assert (stats.rejections["metadata"], stats.created) == (1, 0)


# --------------------------------------------------------------------- drawn metadata


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


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=10), JSON_SCALARS, max_size=6))
def test_flat_metadata_copy_is_its_json_round_trip(metadata: dict[str, Any]) -> None:
    """The copy kept of flat metadata is exactly what its JSON decodes to, types too."""
    decoded = json.loads(
        json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
    )
    session, error, _ = run_trio(lambda: admit_metadata(metadata))
    assert error is None
    assert session is not None
    copy = session.metadata
    assert session.metadata_bytes == compact_size(metadata)
    assert dict(copy) == decoded
    assert [type(value) for value in copy.values()] == [
        type(value) for value in decoded.values()
    ]
    assert copy is not metadata
    metadata["added after admission"] = None
    assert dict(copy) == decoded


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


if sys.version_info >= (3, 11):  # pragma: no branch

    def test_int_digit_limit_applies() -> None:
        """The huge-int case above relies on Python's int-to-str digit limit."""
        assert sys.get_int_max_str_digits() in range(1, 5000)
