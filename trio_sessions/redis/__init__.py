"""A fleet-wide session limit on Redis: one budget shared by every process and host.

:class:`RedisSessionLimit` is an :class:`~trio_sessions.AdmissionGuard` that holds a
lease in a Redis sorted set for each admitted session. It needs the ``redis``
extra (``.venv/bin/pip install trio-sessions[redis]``, which brings coredis 6).

The guard is ``_limit.py``; every call it makes to Redis is in ``_store.py``,
the Lua scripts in ``_scripts.py``, its statistics and refusal in
``_statistics.py``.
"""

from __future__ import annotations

from ._limit import RedisSessionLimit as RedisSessionLimit
from ._statistics import BackendUnavailableError as BackendUnavailableError
from ._statistics import RedisLimitStatistics as RedisLimitStatistics

__all__ = ["BackendUnavailableError", "RedisLimitStatistics", "RedisSessionLimit"]

for _cls in (BackendUnavailableError, RedisLimitStatistics, RedisSessionLimit):
    _cls.__module__ = __name__
del _cls
