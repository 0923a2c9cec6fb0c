"""Developer tasks: ``nox`` runs tests, lint and mypy; the rest are opt-in by name."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "mypy"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest-trio, Hypothesis), warnings as errors."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def mypy(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "trio_sessions")
