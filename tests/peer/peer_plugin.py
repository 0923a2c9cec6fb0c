"""pytest plugin for ``nox -s peer``: Starlette's own tests, on Trio, wrapped or bare.

Loaded with ``-p peer_plugin``. It keeps the Trio half of Starlette's suite and
makes every ``TestClient`` run on Trio; with ``--peer-wrap`` it also puts every
app a ``TestClient`` is given inside :class:`trio_sessions.asgi.SessionMiddleware`.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from trio_sessions import SessionConfig, open_session_manager
from trio_sessions.asgi import ASGIApp, Receive, Scope, Send, SessionMiddleware

# node id -> [outcome, first line of the error]; the worst phase of a test wins.
_RANK = {"passed": 0, "skipped": 1, "failed": 2, "timeout": 3}
_results: dict[str, list[str]] = {}
# How the wrapped run's connections went: proof that the middleware was in the way.
_routed: Counter[str] = Counter()
_timeout: list[float] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("peer", "trio-sessions peer suite")
    group.addoption(
        "--peer-wrap",
        action="store_true",
        help="Wrap every TestClient app in trio_sessions' SessionMiddleware.",
    )
    group.addoption(
        "--peer-option",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="A SessionMiddleware keyword when wrapped, such as max_waiting=4 or "
        "max_body_bytes=1048576 (default: only max_body_bytes=null).",
    )
    group.addoption(
        "--peer-report",
        type=Path,
        help="Write each test's outcome (and first error line) to this JSON file.",
    )


def pytest_configure(config: pytest.Config) -> None:
    from starlette import testclient

    timeout = config.getoption("timeout", None)
    if timeout:
        _timeout.append(float(timeout))
    # The middleware's own default limit of 1 MiB answers 413 where Starlette's
    # tests expect its 400 for an oversize form part (see README.md).
    options: dict[str, Any] = {"max_body_bytes": None}
    for option in config.getoption("peer_option"):
        name, _, value = option.partition("=")
        options[name] = json.loads(value)
    wrap = config.getoption("peer_wrap")
    original = testclient.TestClient.__init__
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        # Tests that build a TestClient themselves default to asyncio: both runs
        # put them on Trio, so that the bare run is the baseline for all of them.
        bound.arguments["backend"] = "trio"
        if wrap:
            app = bound.arguments["app"]
            if not testclient._is_asgi3(app):
                app = testclient._WrapASGI2(app)
            bound.arguments["app"] = PeerApp(app, options)
        original(*bound.args, **bound.kwargs)

    testclient.TestClient.__init__ = __init__  # type: ignore[method-assign]


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Deselect the asyncio half of the tests parametrized by ``anyio_backend``."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("anyio_backend") if callspec else None
        if isinstance(backend, tuple):
            backend = backend[0]
        (keep if backend in (None, "trio") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome = report.outcome
    detail = ""
    if report.failed:
        detail = _error_line(report)
    elif hasattr(report, "wasxfail"):
        outcome = "passed"  # failed as expected; Starlette's xfail_strict judges it
    if _timed_out(report):
        # Even when the test then passes: interrupted, a TestClient raises a
        # RuntimeError that a test's pytest.raises(RuntimeError) accepts.
        outcome = "timeout"
        detail = detail or f"hung for {report.duration:.1f} s, then passed"
    previous = _results.get(report.nodeid)
    if previous is None or _RANK[outcome] > _RANK[previous[0]]:
        _results[report.nodeid] = [outcome, detail]


def _timed_out(report: pytest.TestReport) -> bool:
    # pytest-timeout fails the test from a signal handler, which the test's own
    # pytest.raises(...) may catch and mask; its stack dump is on stdout.
    texts = [str(report.longrepr), *(content for _, content in report.sections)]
    if any("+ Timeout +" in text or "Timeout (>" in text for text in texts):
        return True
    return bool(_timeout) and report.duration >= _timeout[0]


def _error_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(crash.message if crash is not None else report.longrepr).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    phase = "" if report.when == "call" else f"(in {report.when}) "
    return phase + " / ".join(lines[:3])[:400]


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("peer_report")
    if path is not None:
        report = {"tests": _results, "routed": dict(_routed)}
        path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


class PeerApp:
    """The app as ``TestClient`` sees it: ``SessionMiddleware`` around the test's app.

    The middleware opens its own manager through the ASGI lifespan, which
    ``TestClient`` runs only inside ``with TestClient(app):``, on an event loop
    that lasts for the block. A bare ``TestClient(app).get(...)`` runs no
    lifespan, and each request on an event loop of its own: no manager could
    outlive one request there. So while the lifespan's manager is open, requests
    go through the lifespan-owning middleware; otherwise each request opens a
    manager of the same configuration for itself (in its own event loop) and
    runs through a middleware given that manager, as an app served without
    lifespan support passes ``manager=``.
    """

    def __init__(self, app: ASGIApp, options: dict[str, Any]) -> None:
        self.app = app
        self.middleware = SessionMiddleware(app, **options)
        # A middleware given a manager takes no configuration: that is the manager's.
        fields = attrs.fields_dict(SessionConfig)
        self.options = {k: v for k, v in options.items() if k not in fields}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        middleware = self.middleware
        kind = scope["type"]
        lifespan_open = middleware.statistics() is not None and not middleware.draining
        if kind != "http" or lifespan_open:
            _routed[f"{kind} (lifespan manager)" if kind == "http" else kind] += 1
            await middleware(scope, receive, send)
            return
        _routed["http (manager per request)"] += 1
        async with open_session_manager(middleware.config) as manager:
            per_call = SessionMiddleware(self.app, manager=manager, **self.options)
            await per_call(scope, receive, send)
