"""A shortened soak: ~20,000 sessions of mixed outcomes through one manager.

It runs the very code of ``benchmarks/soak.py`` (``nox -s soak`` runs a million)
and checks every counter exactly and that live memory does not grow after warm-up.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SOAK_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> Iterator[ModuleType]:
    """benchmarks/soak.py, imported by path (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_trio_sessions_soak", SOAK_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_short_soak_counts_exactly_and_does_not_grow(soak: ModuleType) -> None:
    """20,000 sessions: every counter exact, live bytes flat after warm-up."""
    result = soak.run_soak(20_000)
    assert result.sessions >= 20_000
    assert soak.actual_counts(result.statistics) == soak.expected_counts(result.rounds)
    stats = result.statistics
    assert stats.completed == stats.succeeded + stats.failed + stats.timed_out + (
        stats.cancelled
    )
    assert result.growth <= soak.GROWTH_LIMIT, (
        f"live bytes grew from {result.bytes_after_warmup:,} to "
        f"{result.bytes_at_end:,} over {result.sessions:,} sessions"
    )


def test_soak_detects_a_leak(soak: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory check is sensitive: keeping ~7 bytes per session fails it."""
    kept: list[bytes] = []
    one_round = soak.one_round

    async def leaky_round(manager: object) -> None:
        await one_round(manager)
        kept.append(bytes(400))  # ~7 bytes for each of 68 sessions

    monkeypatch.setattr(soak, "one_round", leaky_round)
    result = soak.run_soak(5_000, warmup_fraction=0.1)
    assert result.growth > soak.GROWTH_LIMIT
    assert len(kept) == result.rounds


def test_soak_main_prints_the_figures(
    soak: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """The nox entry point prints bytes after warm-up and at the end, then OK."""
    assert soak.main(["--sessions", "700"]) == 0
    out = capsys.readouterr().out
    assert "tracemalloc bytes after warm-up:" in out
    assert "tracemalloc bytes at the end:" in out
    assert out.rstrip().endswith("OK")
