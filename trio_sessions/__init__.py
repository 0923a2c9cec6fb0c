"""Bounded, timed, drained and measured request sessions for Trio.

Every request runs as a *session*: a task of the manager's own nursery (or a
block in the caller's own task) holding a :class:`trio.CapacityLimiter` token,
under a cancel-scope deadline, counted exactly and drained on shutdown.
"""

from __future__ import annotations

from ._adaptive import AIMDController as AIMDController
from ._adaptive import Gradient2Controller as Gradient2Controller
from ._adaptive import LimitController as LimitController
from ._adaptive import VegasController as VegasController
from ._config import CONFIG_DEFAULT as CONFIG_DEFAULT
from ._config import ConfigDefault as ConfigDefault
from ._config import SessionConfig as SessionConfig
from ._errors import CapacityError as CapacityError
from ._errors import MetadataError as MetadataError
from ._errors import RejectedError as RejectedError
from ._errors import SessionCancelled as SessionCancelled
from ._errors import SessionError as SessionError
from ._errors import SessionTimeout as SessionTimeout
from ._errors import ShuttingDownError as ShuttingDownError
from ._guard import AdmissionGuard as AdmissionGuard
from ._inline import SessionBlock as SessionBlock
from ._latency import LatencySummary as LatencySummary
from ._manager import SessionManager as SessionManager
from ._manager import open_session_manager as open_session_manager
from ._scheduler import KeyStatistics as KeyStatistics
from ._session import Outcome as Outcome
from ._session import Session as Session
from ._session import SessionState as SessionState
from ._statistics import SessionStatistics as SessionStatistics
from ._statistics import ShutdownReport as ShutdownReport

__all__ = [
    "CONFIG_DEFAULT",
    "AIMDController",
    "AdmissionGuard",
    "CapacityError",
    "ConfigDefault",
    "Gradient2Controller",
    "KeyStatistics",
    "LatencySummary",
    "LimitController",
    "MetadataError",
    "Outcome",
    "RejectedError",
    "Session",
    "SessionBlock",
    "SessionCancelled",
    "SessionConfig",
    "SessionError",
    "SessionManager",
    "SessionState",
    "SessionStatistics",
    "SessionTimeout",
    "ShutdownReport",
    "ShuttingDownError",
    "VegasController",
    "open_session_manager",
]

__version__ = "0.1.0"

# Tracebacks, reprs and docs say trio_sessions.X, not trio_sessions._module.X.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("trio_sessions._"):
        _obj.__module__ = __name__
del _name, _obj
