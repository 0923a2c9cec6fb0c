"""One validator per kind of value: seconds and counts, with messages naming the field.

Every place that takes seconds (the config, the manager's ``timeout=`` arguments,
the fleet guard, the CLI and the example servers) checks them here, so a value is
accepted or refused the same way, with the same words, wherever it is given.
"""

from __future__ import annotations

import math
import sys

__all__ = ["check_count", "check_seconds", "parse_seconds"]

_FLOAT_MAX = sys.float_info.max


def check_seconds(
    value: object,
    name: str,
    *,
    optional: bool = False,
    positive: bool = False,
    finite: bool = False,
) -> float | None:
    """Return ``value`` as a number of seconds, or raise naming ``name``.

    ``None`` is accepted only when ``optional``. An ``int`` too large for a
    float (``10**400``) is longer than any deadline, so it becomes
    :data:`math.inf`, exactly as ``float("inf")`` is taken, rather than
    overflowing later when a deadline is computed from it. With ``finite``,
    infinities are refused; with ``positive``, zero is refused too.

    Raises:
      TypeError: not a number (``bool`` is not a number of seconds here).
      ValueError: NaN, negative, or outside what ``positive``/``finite`` allow.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = "a number of seconds or None" if optional else "a number of seconds"
        raise TypeError(
            f"{name} must be {kind}, not {type(value).__name__} ({value!r})"
        )
    if isinstance(value, int) and value > _FLOAT_MAX:
        seconds: float = math.inf
    elif isinstance(value, int) and value < -_FLOAT_MAX:
        seconds = -math.inf
    else:
        seconds = value
    lowest = "> 0" if positive else ">= 0"
    if math.isnan(seconds) or seconds < 0 or (positive and seconds == 0):
        raise ValueError(f"{name} must be {lowest} seconds, got {_show(value)}")
    if finite and math.isinf(seconds):
        raise ValueError(
            f"{name} must be a finite number of seconds {lowest}, got {_show(value)}"
        )
    return seconds


def parse_seconds(
    text: str,
    name: str,
    *,
    optional: bool = False,
    positive: bool = False,
    finite: bool = False,
) -> float | None:
    """Parse command-line ``text`` as seconds (``"none"`` when ``optional``).

    The same rules as :func:`check_seconds`, for strings::

        parse_seconds("2.5", "--request-timeout")        # 2.5
        parse_seconds("none", "--wait-timeout", optional=True)  # None

    Raises:
      ValueError: not a number, or a number :func:`check_seconds` refuses.
    """
    if optional and text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        expected = "seconds or 'none'" if optional else "a number of seconds"
        raise ValueError(f"{name} must be {expected}, got {text!r}") from None
    return check_seconds(value, name, positive=positive, finite=finite)


def check_count(
    value: object, name: str, *, minimum: int = 0, optional: bool = False
) -> int | None:
    """Return ``value`` as an ``int`` of at least ``minimum``, or raise naming ``name``.

    Raises:
      TypeError: not an ``int`` (``bool`` is refused).
      ValueError: below ``minimum``.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an int or None" if optional else "an int"
        raise TypeError(
            f"{name} must be {kind}, not {type(value).__name__} ({value!r})"
        )
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {_show(value)}")
    return value


def _show(value: object) -> str:
    # A 400-digit integer makes an unreadable message; its size is what matters.
    if isinstance(value, int) and abs(value) > _FLOAT_MAX:
        # (str() of a huge int may itself refuse: sys.set_int_max_str_digits.)
        digits = int(abs(value).bit_length() * math.log10(2)) + 1
        return f"an integer of about {digits} digits"
    return repr(value)
