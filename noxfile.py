"""Developer tasks: ``nox`` runs tests, lint, mypy, docs and the load test."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "mypy", "docs", "loadtest"]


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


@nox.session
def loadtest(session: nox.Session) -> None:
    """The main job: the eight load scenarios against the in-process manager."""
    session.install("-e", ".[cli]")
    session.run("trio-sessions", "loadtest", *session.posargs)


@nox.session(default=False)
def loadtest_scale(session: nox.Session) -> None:
    """100,000 concurrent sessions through one manager."""
    session.install("-e", ".[cli]")
    session.run("trio-sessions", "loadtest", "--only", "scale", "--sessions", "100000")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx docs offline: nitpicky, warnings as errors."""
    session.install("-e", ".[docs,prometheus,redis]")
    # -E -a: re-read every page, or warnings in unchanged pages go unseen.
    session.run(
        "sphinx-build",
        "-E",
        "-a",
        "-W",
        "-n",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


@nox.session(default=False)
def e2e(session: nox.Session) -> None:
    """Example servers as real subprocesses; wrk on bare, raw-Trio floor, middleware."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/test_examples.py", "tests/test_serve_cli.py")
    # --install: apt-get install wrk when it is missing (needs root).
    session.run(
        "python",
        "benchmarks/wrk_e2e.py",
        "--install",
        "--duration",
        "5",
        "--rounds",
        "3",
    )


@nox.session(default=False)
def soak(session: nox.Session) -> None:
    """1,000,000 sessions through one manager; prints tracemalloc bytes."""
    session.install("-e", ".")
    session.run("python", "benchmarks/soak.py", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """trio_sessions vs raw Trio, anyio on Trio and asyncio; then Redis admission."""
    session.install("-e", ".[bench,redis]")
    session.run("python", "benchmarks/bench_sessions.py", *session.posargs)
    # Prints "skipped" and exits 0 when no redis-server is available.
    session.run("python", "benchmarks/bench_redis.py")
