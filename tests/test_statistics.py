"""statistics(): the frozen snapshot, its fields and their starting values.

The counters themselves are checked exactly by every other test file.
"""

from __future__ import annotations

import json

import attrs
import pytest
import trio
from trio.testing import MockClock

import trio_sessions as ts


async def test_statistics_snapshot_is_frozen_and_complete(
    autojump_clock: MockClock,
) -> None:
    """statistics() is frozen, has every reason key, and None rates at first."""
    async with ts.open_session_manager(max_sessions=3) as manager:
        stats = manager.statistics()
    assert stats.success_rate is None
    assert dict(stats.rejections) == {
        "capacity": 0,
        "key_capacity": 0,
        "shutting_down": 0,
        "metadata": 0,
    }
    assert stats.durations == ts.LatencySummary(0, None, None, None, None, None, None)
    with pytest.raises(AttributeError):
        stats.active = 1  # type: ignore[misc]


async def test_statistics_with_keys_survive_attrs_asdict_and_json() -> None:
    """attrs.asdict() of a snapshot reaches the per-key statistics, for JSON."""
    async with ts.open_session_manager(max_sessions=2) as manager:
        await manager.run(trio.sleep, 0, key="tenant")
        data = attrs.asdict(manager.statistics())
    text = json.dumps(data, default=dict)
    assert json.loads(text)["keys"] == {
        "tenant": {"active": 0, "admitted": 1, "rejected": 0}
    }
    assert data["other_keys"] == {"active": 0, "admitted": 0, "rejected": 0}
