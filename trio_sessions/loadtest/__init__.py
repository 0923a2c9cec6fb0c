"""Load-test scenarios for a session manager, as a library that pytest can call too.

Each scenario is an async function returning a frozen result with ``passed`` and
its figures; :func:`run_loadtest` runs them all, ``trio-sessions loadtest`` renders.
"""

from __future__ import annotations

# typing.get_type_hints() reads a class's annotations in the module its
# __module__ names, which is this one once fixed below: what they use is here.
from collections.abc import Mapping, Sequence  # noqa: F401
from typing import ClassVar  # noqa: F401

from .. import (
    LatencySummary,  # noqa: F401
    _errors,
)
from . import _runner, _work
from ._accounting import MetadataTrackingResult as MetadataTrackingResult
from ._accounting import MetricsAccuracyResult as MetricsAccuracyResult
from ._accounting import metadata_tracking as metadata_tracking
from ._accounting import metrics_accuracy as metrics_accuracy
from ._capacity import CapacityLimitResult as CapacityLimitResult
from ._capacity import ConcurrentSessionsResult as ConcurrentSessionsResult
from ._capacity import HeldSessionsResult as HeldSessionsResult
from ._capacity import capacity_limit as capacity_limit
from ._capacity import concurrent_sessions as concurrent_sessions
from ._capacity import held_sessions as held_sessions
from ._histogram import Percentiles as Percentiles
from ._http import HttpLoadResult as HttpLoadResult
from ._http import http_load as http_load
from ._report import LoadTestReport as LoadTestReport
from ._report import ScenarioResult as ScenarioResult
from ._runner import run_loadtest as run_loadtest
from ._scale import ChurnResult as ChurnResult
from ._scale import PerformanceBaselineResult as PerformanceBaselineResult
from ._scale import ScaleResult as ScaleResult
from ._scale import performance_baseline as performance_baseline
from ._scale import scale as scale
from ._scale import sustained_churn as sustained_churn
from ._shutdown import GracefulShutdownResult as GracefulShutdownResult
from ._shutdown import NoHangResult as NoHangResult
from ._shutdown import graceful_shutdown as graceful_shutdown
from ._shutdown import no_hang as no_hang
from ._timeline import TimeSeries as TimeSeries
from ._work import simulated_work as simulated_work

# Sphinx reads the documentation of data where it is documented: here.
CAPACITY_MESSAGE = _errors.CAPACITY_MESSAGE
"""The message every capacity rejection must carry."""

SCENARIOS = _runner.SCENARIOS
"""Every scenario :func:`run_loadtest` knows, by name, in the order it runs them.

The standard ones (:data:`SCENARIO_NAMES`) come first, then the scale
scenarios ``"scale"`` and ``"churn"``, which run only when asked for::

    result = await loadtest.SCENARIOS["capacity"](my_handler)

:meta hide-value:
"""

SCENARIO_NAMES = _runner.SCENARIO_NAMES
"""Names of the eight standard scenarios, in the order :func:`run_loadtest` runs them.

The scale scenarios ``"scale"`` and ``"churn"`` run only when asked for.
"""

WORK_SECONDS = _work.WORK_SECONDS
"""How long :func:`simulated_work` takes: 10 ms."""

Work = _work.Work
"""The work a session does: an async function called with no arguments."""

ProgressCallback = _work.ProgressCallback
"""Called as ``progress(done, total)`` while a long scenario runs."""

__all__ = [
    "CAPACITY_MESSAGE",
    "SCENARIOS",
    "SCENARIO_NAMES",
    "WORK_SECONDS",
    "CapacityLimitResult",
    "ChurnResult",
    "ConcurrentSessionsResult",
    "GracefulShutdownResult",
    "HeldSessionsResult",
    "HttpLoadResult",
    "LoadTestReport",
    "MetadataTrackingResult",
    "MetricsAccuracyResult",
    "NoHangResult",
    "Percentiles",
    "PerformanceBaselineResult",
    "ProgressCallback",
    "ScaleResult",
    "ScenarioResult",
    "TimeSeries",
    "Work",
    "capacity_limit",
    "concurrent_sessions",
    "graceful_shutdown",
    "held_sessions",
    "http_load",
    "metadata_tracking",
    "metrics_accuracy",
    "no_hang",
    "performance_baseline",
    "run_loadtest",
    "scale",
    "simulated_work",
    "sustained_churn",
]

# Tracebacks, reprs and docs say trio_sessions.loadtest.X, not ...loadtest._module.X.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(f"{__name__}._"):
        _obj.__module__ = __name__
del _name, _obj
