"""What the demo servers accept on the wire: standard JSON, and how long to sleep.

Python's :mod:`json` reads and writes ``NaN`` and ``Infinity``, and reads
``1e400`` as infinity; none of them is JSON (RFC 8259), so they are refused
here, when a request is parsed, and never written.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

from ._validate import check_seconds, parse_seconds

__all__ = ["MAX_SLEEP", "dumps", "loads", "parse_sleep", "sleep_seconds"]

MAX_SLEEP = 600.0
"""The longest a ``sleep`` request (or ``/slow``) may ask for, in seconds."""


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def loads(data: str | bytes) -> Any:
    """Parse standard JSON; ``NaN``, ``Infinity`` and ``1e400`` are refused.

    ::

        loads(b'{"seconds": 1.5}')   # {'seconds': 1.5}
        loads("NaN")                 # ValueError: NaN is not JSON

    Raises:
      ValueError: not JSON (:class:`json.JSONDecodeError`), or not standard JSON.
    """
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)


def dumps(value: object, **options: Any) -> str:
    """:func:`json.dumps` that refuses to write ``NaN`` or ``Infinity``.

    Raises:
      ValueError: ``value`` holds a float that is not finite.
    """
    return json.dumps(value, allow_nan=False, **options)


def _check_sleep(seconds: float | None, name: str, shown: object) -> float:
    assert seconds is not None
    if seconds > MAX_SLEEP:
        raise ValueError(f"{name} must be <= {MAX_SLEEP:g} seconds, got {shown!r}")
    return seconds


def sleep_seconds(value: object, name: str = "seconds") -> float:
    """Check a request's sleep duration: a number from 0 to :data:`MAX_SLEEP`.

    Raises:
      TypeError: not a number.
      ValueError: negative, not finite, or over :data:`MAX_SLEEP`.
    """
    return _check_sleep(check_seconds(value, name, finite=True), name, value)


def parse_sleep(text: str, name: str = "seconds") -> float:
    """:func:`sleep_seconds` for text, such as a query parameter.

    Raises:
      ValueError: not a number, or a duration :func:`sleep_seconds` refuses.
    """
    return _check_sleep(parse_seconds(text, name, finite=True), name, text)
