"""Shared test configuration: a Hypothesis profile that suits Trio's scheduler,
and the plugins: trio_sessions.testing (its fixtures) and pytester (to test it).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# The project's tests use the plugin users get, as users would enable it.
pytest_plugins = ["trio_sessions.testing", "pytester"]

# No per-example deadline: examples run whole Trio schedules, and these
# machines are shared and noisy. CI runs a few more examples than a laptop.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=80)
# nox -s soak: the race tests (tests/test_races.py) with far more schedules;
# select it with --hypothesis-profile=soak.
settings.register_profile(
    "soak", parent=settings.get_profile("default"), max_examples=5000
)
settings.load_profile("ci" if os.environ.get("CI") else "default")
