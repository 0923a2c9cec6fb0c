"""The old home of ``trio-sessions serve``, which lives in :mod:`._cli._serve` now.

Kept only for code that imports ``trio_sessions._serve`` (the servers' tests).
"""

from __future__ import annotations

from ._cli._serve import configure_parser, run

__all__ = ["configure_parser", "run"]
