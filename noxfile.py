"""Developer tasks: ``nox`` runs tests, lint, mypy, docs and the load test."""

from __future__ import annotations

import sys

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
    session.run("mypy")


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


# Run in each fresh venv, away from the checkout: the package imported is the
# wheel's, at the version the metadata says, and imports with only what it got.
_WHEEL_CHECK = """
import importlib.metadata, importlib.util, pathlib, sys
import trio_sessions, trio_sessions.testing
where = pathlib.Path(trio_sessions.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in where.parents, where
assert trio_sessions.__version__ == importlib.metadata.version("trio-sessions")
for name in sys.argv[1:]:
    assert importlib.util.find_spec(name) is None, f"{name} came with the wheel"
print("trio_sessions", trio_sessions.__version__, "from", where.parent)
"""

_CLASSIFIER_CHECK = """
import tomllib, trove_classifiers
with open("pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]
unknown = set(project["classifiers"]) - trove_classifiers.classifiers
assert not unknown, f"not trove classifiers: {sorted(unknown)}"
"""


@nox.session(default=False)
def package(session: nox.Session) -> None:
    """Build the sdist and wheel, twine-check them, and run the wheel as users get it.

    The wheel is built from the sdist, so the sdist is known to be complete.
    Then a fresh venv outside the checkout installs the wheel alone (the base
    dependencies) and runs the README's main job and ``import trio_sessions``;
    a second one does the same with the ``cli`` extra.
    """
    import shutil
    import tarfile
    from pathlib import Path

    session.install("build", "twine", "trove-classifiers")
    session.run("python", "-c", _CLASSIFIER_CHECK)
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    session.run("twine", "check", "--strict", str(sdist), str(wheel))
    with tarfile.open(sdist) as archive:
        top = {Path(name).parts[1] for name in archive.getnames() if "/" in name}
    missing = {"LICENSE", "README.md", "pyproject.toml", "trio_sessions", "tests"}
    missing -= top
    if missing:
        session.error(f"the sdist lacks {sorted(missing)}")
    bin_dir = "Scripts" if sys.platform == "win32" else "bin"
    # Each venv, the extra it installs, and what must not have come with it.
    users = (
        ("user", "", ["rich", "httptools", "plotly", "pytest"]),
        ("user-cli", "[cli]", ["pytest"]),
    )
    for name, extra, absent in users:
        venv = tmp / name
        shutil.rmtree(venv, ignore_errors=True)
        session.log(f"A fresh venv with the wheel{extra or ' alone'}: {venv}")
        session.run("python", "-m", "venv", str(venv))
        python = str(venv / bin_dir / "python")
        pip = (python, "-m", "pip", "install", "--quiet")
        session.run(*pip, f"{wheel}{extra}", external=True)
        with session.chdir(venv):
            command = str(venv / bin_dir / "trio-sessions")
            session.run(command, "loadtest", external=True)
            session.run(python, "-c", _WHEEL_CHECK, *absent, external=True)
    session.log(f"sdist and wheel in {dist}")


@nox.session(default=False)
def e2e(session: nox.Session) -> None:
    """Example servers as real subprocesses, a real Prometheus scraping two of them;
    wrk on bare, raw-Trio floor, middleware."""
    import os
    import shutil

    session.install("-e", ".[test]")
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        # Debian's package has both; as root, or through sudo -n, like wrk below.
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        session.run(*sudo, "apt-get", "update", "-qq", external=True)
        session.run(
            *sudo,
            *("apt-get", "install", "-y", "-qq", "prometheus"),
            external=True,
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )
    session.run(
        "pytest",
        "tests/test_examples.py",
        "tests/test_serve_cli.py",
        # Named here, so it runs: the default run skips it, as slow.
        "tests/test_prometheus_e2e.py",
    )
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
def bench_loadclient(session: nox.Session) -> None:
    """The load client beside wrk -t1, against trio-sessions serve and the bare app."""
    session.install("-e", ".[cli,servers]")
    session.run("python", "benchmarks/bench_loadclient.py", *session.posargs)


@nox.session(default=False)
def adaptive_sim(session: nox.Session) -> None:
    """Each limit controller in front of a simulated backend with a knee; the plot."""
    session.install("-e", ".[bench]")
    session.run(
        "python",
        "benchmarks/adaptive_sim.py",
        "--jobs",
        "2",
        "--plot",
        "docs/_static/adaptive_sim.svg",
        *session.posargs,
    )


@nox.session(default=False)
def soak(session: nox.Session) -> None:
    """1,000,000 sessions through one manager; then 5,000 race schedules per test."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/soak.py", *session.posargs)
    session.run("pytest", "tests/test_races.py", "--hypothesis-profile=soak")


# The Starlette release whose own test suite `peer` runs: the one the test extra
# installs today. Its sdist ships tests/, which its wheel does not.
PEER_STARLETTE = "1.10.0"
# Starlette's test dependencies: its "full" extra (installed with the sdist)
# plus the test tools of its dev dependency group.
PEER_DEPS = [
    "pytest>=9.1.1",
    "pytest-timeout>=2.3",
    "trio>=0.34.0",
    "httpx2[zstd]>=2.0.0",
    "blockbuster>=1.5.23",
    "importlib-metadata>=9.0.1",
    "opentelemetry-sdk>=1.44.0",
    "types-PyYAML>=6.0.12.20250516",
]


@nox.session(default=False)
def peer(session: nox.Session) -> None:
    """Starlette's own suite on Trio, bare and wrapped in SessionMiddleware.

    Fails if a test that passes bare fails or times out wrapped, unless
    tests/peer/allowlist.toml names it as a difference by design.
    """
    import tarfile
    from pathlib import Path

    peer_dir = Path("tests/peer").resolve()
    tmp = Path(session.create_tmp()).resolve()
    session.run(
        "python",
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-binary",
        ":all:",
        "--no-deps",
        f"starlette=={PEER_STARLETTE}",
        "--dest",
        str(tmp),
    )
    sdist = tmp / f"starlette-{PEER_STARLETTE}.tar.gz"
    source = tmp / f"starlette-{PEER_STARLETTE}"
    if not source.is_dir():
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
    # Installed, not editable: the wrapped run tests the package as users get it.
    session.install(f"starlette[full] @ {sdist.as_uri()}", *PEER_DEPS, ".")
    reports = {mode: tmp / f"{mode}.json" for mode in ("bare", "wrapped")}
    with session.chdir(source):
        for mode, report in reports.items():
            session.log(f"Starlette's suite on Trio, {mode}")
            session.run(
                "python",
                "-m",
                "pytest",
                # Starlette's own pytest configuration, whatever the paths
                # on the command line have in common.
                "-c",
                "pyproject.toml",
                "--rootdir",
                ".",
                "-p",
                "peer_plugin",
                "-p",
                "no:cacheprovider",
                *(["--peer-wrap"] if mode == "wrapped" else []),
                f"--peer-report={report}",
                # A hang fails its own test, not the run.
                "--timeout=10",
                "-q",
                "--no-header",
                "-o",
                "console_output_style=classic",
                "tests",
                *session.posargs,
                env={"PYTHONPATH": str(peer_dir)},
                success_codes=[0, 1],
            )
    session.run("python", str(peer_dir / "compare.py"), *map(str, reports.values()))


@nox.session(default=False)
def bench_smoke(session: nox.Session) -> None:
    """The benchmarks' smoke tests, with their runs under valgrind and wrk's
    two-server comparison, which the default run skips as slow."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/test_bench_smoke.py",
        *session.posargs,
        env={"TRIO_SESSIONS_SLOW_BENCH": "1"},
    )


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """trio_sessions vs raw Trio, anyio on Trio and asyncio; then Redis admission."""
    session.install("-e", ".[bench,redis]")
    session.run("python", "benchmarks/bench_sessions.py", *session.posargs)
    # Prints "skipped" and exits 0 when no redis-server is available.
    session.run("python", "benchmarks/bench_redis.py")
