"""Metadata accounting: measure a mapping as compact UTF-8 JSON, keep a private copy."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, final

from ._errors import MetadataError

EMPTY_METADATA: Mapping[str, Any] = MappingProxyType({})


@final
class MeasuredMetadata:
    """Metadata already copied and measured by its maker: a read-only mapping, a size.

    For code of this package that builds a session's metadata itself and can
    measure it for less than encoding it (the middleware's method, path and
    client); admission then checks only the limits. ``size`` must be what
    :func:`metadata_size` says of ``mapping``.
    """

    __slots__ = ("mapping", "size")

    def __init__(self, mapping: Mapping[str, Any], size: int) -> None:
        self.mapping = mapping
        self.size = size


_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode


# Exact types whose JSON decodes to an equal object of the same type (NaN and
# infinities were refused by the encoder; bool is its own type, not int).
_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


def _is_flat(plain: dict[Any, Any]) -> bool:
    """Whether every key is a str and every value a JSON scalar (exact types)."""
    return all(map(_SCALARS.__contains__, map(type, plain.values()))) and all(
        map(_STR.__contains__, map(type, plain))
    )


def over_limit_error(size: int, limit: int) -> MetadataError:
    """The refusal of one session's metadata of ``size`` bytes, over ``limit``."""
    return MetadataError(
        f"metadata is {size} bytes, over max_session_metadata_bytes={limit}"
    )


def metadata_size(metadata: Mapping[str, Any]) -> int:
    """Bytes that ``metadata`` counts for: its compact UTF-8 JSON."""
    return len(_encode(dict(metadata)).encode("utf-8"))


def encode_metadata(
    metadata: object, limit: int | None
) -> tuple[Mapping[str, Any], int]:
    """Return a read-only copy of ``metadata`` and its size, or raise MetadataError.

    The copy is the decoded JSON that was measured, so later mutation of the
    caller's object changes nothing, and the bytes released at completion are
    exactly the bytes counted at admission.
    """
    if not isinstance(metadata, Mapping):
        raise MetadataError(
            f"metadata must be a mapping (or None), not {type(metadata).__name__}"
        )
    try:
        # dict() first: json only encodes real dicts, not every Mapping.
        plain = dict(metadata)
        text = _encode(plain)
        # A lone surrogate encodes to JSON but not to UTF-8 (UnicodeEncodeError).
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise MetadataError(f"metadata is not JSON-encodable: {exc}") from exc
    if limit is not None and size > limit:
        raise over_limit_error(size, limit)
    if _is_flat(plain):
        # str keys and scalar values decode to equal objects: the dict is the
        # copy, without parsing the text back (the middleware's common case).
        return MappingProxyType(plain), size
    try:
        copy = json.loads(text)
        # Keys that collide as JSON strings at any depth ({"1": .., 1: ..}) are
        # merged by the decoder: the copy kept would not be the bytes counted.
        kept = _encode(copy)
    except RecursionError as exc:
        # Deep enough to encode but not to decode again: one level of the
        # decoder's recursion costs more stack than one of the encoder's.
        raise MetadataError(f"metadata is nested too deeply: {exc}") from exc
    if kept != text:
        raise MetadataError("metadata keys collide once converted to JSON strings")
    return MappingProxyType(copy), size
