"""SessionMiddleware's key=, priority= and Retry-After from the manager's estimate.

Driven in-process as an ASGI server would drive it (the harness of
``test_asgi.py``), in both of the middleware's modes, under ``autojump_clock``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from test_asgi import hello, request, serving, sleeper

from trio_sessions.asgi import Scope, SessionMiddleware
from trio_sessions.testing import check_invariants

MODES = pytest.mark.parametrize("inline", [True, False], ids=["inline", "spawned"])


def tenant(scope: Scope) -> str | None:
    """The request's x-tenant header, its key."""
    for name, value in scope["headers"]:
        if name == b"x-tenant":
            return str(value.decode())
    return None


def as_tenant(name: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-tenant", name.encode())]


@MODES
async def test_a_tenant_at_its_limit_gets_503_while_others_get_in(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """key= maps requests to tenants; a full tenant is refused, another is served."""
    app = SessionMiddleware(
        sleeper(4), inline=inline, key=tenant, max_sessions=10, max_sessions_per_key=1
    )
    async with serving(app), trio.open_nursery() as nursery:
        nursery.start_soon(lambda: request(app, headers=as_tenant("noisy")))
        await trio.testing.wait_all_tasks_blocked()
        refused = await request(app, headers=as_tenant("noisy"))
        assert refused.status == 503
        # Its key's one session takes 4 s, and none has completed: the
        # fallback of 1 s over a limit of 1.
        assert refused.headers[b"retry-after"] == b"1"
        served = await request(app, headers=as_tenant("quiet"))
        assert served.status == 200
        stats = check_invariants(app.manager)
        assert stats.rejections["key_capacity"] == 1
        assert stats.keys["noisy"].rejected == 1
        assert stats.keys["quiet"].admitted == 1
    assert trio.current_time() == 4


@MODES
async def test_retry_after_is_the_managers_estimate_in_whole_seconds(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Requests of 5 s on 2 slots: a slot frees every 2.5 s, sent as 3."""
    app = SessionMiddleware(sleeper(5), inline=inline, max_sessions=2)
    async with serving(app), trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(request, app)
        await trio.sleep(5.5)  # those two completed, in 5 s each
        for _ in range(2):
            nursery.start_soon(request, app)
        await trio.testing.wait_all_tasks_blocked()
        refused = await request(app)
        assert refused.status == 503
        assert refused.headers[b"retry-after"] == b"3"


@MODES
async def test_a_fixed_retry_after_overrides_the_estimate(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """retry_after=N is sent as given, whatever the estimate."""
    app = SessionMiddleware(sleeper(50), inline=inline, max_sessions=1, retry_after=7)
    async with serving(app), trio.open_nursery() as nursery:
        nursery.start_soon(request, app)
        await trio.testing.wait_all_tasks_blocked()
        assert (await request(app)).headers[b"retry-after"] == b"7"
        nursery.cancel_scope.cancel()


@MODES
async def test_priority_gets_high_callers_into_the_reserve(
    inline: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """With half the slots reserved, a health check (priority 1) still gets in."""

    def priority(scope: Scope) -> int:
        return 1 if scope["path"] == "/health" else 0

    app = SessionMiddleware(
        sleeper(3), inline=inline, priority=priority, max_sessions=2, reserved_share=0.5
    )
    async with serving(app), trio.open_nursery() as nursery:
        nursery.start_soon(request, app)
        await trio.testing.wait_all_tasks_blocked()
        assert (await request(app)).status == 503  # the reserve is not for it
        assert (await request(app, "/health")).status == 200
        assert check_invariants(app.manager).rejections["capacity"] == 1


@MODES
@pytest.mark.parametrize(
    "options",
    [
        {"key": lambda scope: 1 / 0},
        {"key": lambda scope: b"bytes"},
        {"priority": lambda scope: "high"},
        {"priority": lambda scope: True},
    ],
    ids=["key-raises", "key-bytes", "priority-str", "priority-bool"],
)
async def test_a_broken_key_or_priority_function_is_a_500_and_takes_nothing(
    inline: bool, options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The request is answered, the error logged, and no slot or key is taken."""
    app = SessionMiddleware(hello, inline=inline, max_sessions=1, **options)
    async with serving(app):
        response = await request(app)
        assert response.status == 500
        stats = check_invariants(app.manager, settled=True)
        assert (stats.created, stats.rejected) == (0, 0)
        # The next request is refused the same way, not for want of a slot.
        assert (await request(app)).status == 500
    assert "key= or priority= failed" in caplog.text


@pytest.mark.parametrize("name", ["key", "priority"])
def test_key_and_priority_must_be_functions(name: str) -> None:
    """A value that is not callable is refused at construction, named."""
    with pytest.raises(TypeError, match=f"{name} must be a function"):
        SessionMiddleware(hello, **{name: "x-tenant"})  # type: ignore[arg-type]
