"""The pytest side of :mod:`trio_sessions.testing`: its fixtures and its marker.

Imported by :mod:`trio_sessions.testing` only where pytest is installed, so
that ``pytest_plugins = ["trio_sessions.testing"]`` registers them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._manager import SessionManager
from .testing import SessionManagerFactory, open_session_managers

__all__ = ["pytest_configure", "session_manager", "session_manager_factory"]

MARKER = "session_manager"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``session_manager`` marker, for ``--strict-markers``."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(config=None, **fields): the arguments of open_session_manager() "
        "for the manager of the session_manager fixture (trio_sessions.testing)",
    )


@pytest.fixture
async def session_manager_factory() -> AsyncIterator[SessionManagerFactory]:
    """Open more managers for a test: ``await session_manager_factory(**fields)``.

    Each manager lives until the end of the test; then it is checked, shut
    down and checked settled, as :func:`open_session_managers` says.
    """
    async with open_session_managers() as factory:
        yield factory


@pytest.fixture
async def session_manager(
    request: pytest.FixtureRequest, session_manager_factory: SessionManagerFactory
) -> SessionManager:
    """A manager open for the test, configured by the ``session_manager`` marker.

    After the test it is checked, shut down and checked settled; a problem
    fails the test.
    """
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return await session_manager_factory()
    return await session_manager_factory(*marker.args, **marker.kwargs)
