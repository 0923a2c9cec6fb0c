"""Races at every step: injections landing at a drawn await point, invariants after.

A whole schedule (configuration, requests or jobs, injections) is drawn with
``@given`` and replayed in one ``trio.run`` on a ``MockClock(autojump_threshold=0)``.
Each injection (``Session.cancel()``, ``manager.shutdown(timeout=0)``, a client
disconnect, a lifespan shutdown, a cancelled caller...) fires when the N-th
numbered await point is reached. After the run every request must have been
answered or its client be gone, nothing may be cancelled that nobody
cancelled, and the manager must hold nothing. ``nox -s soak`` runs these with
the ``soak`` Hypothesis profile (many more examples).

Each kind of failure is asserted on a line of its own, so that Hypothesis
shrinks each to its own minimal schedule; the messages name the known defect
the failure looks like.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import attrs
import pytest
import trio
import trio.testing
from asgi_harness import AppFailure, Client, LifespanRunner, Steps, make_app
from hypothesis import given, settings
from strategies import (
    Behaviour,
    Injection,
    Job,
    ManagerPlan,
    MiddlewarePlan,
    RequestPlan,
    manager_plans,
    middleware_plans,
)

import trio_sessions as ts
from trio_sessions.asgi import SessionMiddleware
from trio_sessions.testing import invariant_problems, statistics_problems, tasks_left

T = TypeVar("T")

#: Longest a request or a caller may take, in mock seconds, before it is hung.
#: Every schedule's own work is done within about 30 s.
HANG_LIMIT = 100.0


def examples(default: int) -> int:
    """``default`` examples, unless the loaded profile (soak) asks for more."""
    current = settings.default
    assert current is not None
    return max(default, current.max_examples)


def run_trio(afn: Callable[[], Awaitable[T]]) -> T:
    """Run ``afn`` in a fresh Trio run on a clock that jumps when all are blocked."""
    return trio.run(afn, clock=trio.testing.MockClock(autojump_threshold=0))


DEFECT_1 = (
    "looks like defect 1: a session cancelled before its function's first step "
    "(Session.cancel(), or shutdown landing during admission) leaves its request "
    "unanswered and the middleware never returns"
)
DEFECT_2 = (
    "looks like defect 2: http.response.pathsend / zerocopysend do not end the "
    "response for the middleware, so the end of the stream after them is taken "
    "as a client disconnect and the session is cancelled"
)


# ---------------------------------------------------------------- middleware


@attrs.define
class MiddlewareRace:
    """Replays one :class:`MiddlewarePlan` against a real SessionMiddleware."""

    plan: MiddlewarePlan
    clients: list[Client] = attrs.Factory(list)
    middleware: SessionMiddleware | None = None
    manager: ts.SessionManager | None = None
    lifespan: LifespanRunner | None = None
    harness: trio.Nursery | None = None
    tasks: list[str] = attrs.Factory(list)
    steps: Steps = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.steps = Steps(self.plan.injections, self.fire)
        self.clients = [
            Client(index, request, self.steps)
            for index, request in enumerate(self.plan.requests)
        ]

    def fire(self, injection: Injection) -> None:
        assert self.harness is not None
        assert self.middleware is not None
        assert self.manager is not None
        assert self.lifespan is not None
        kind = injection.kind
        client = self.clients[injection.target]
        if kind == "cancel":
            for session in list(self.manager.sessions.values()):
                if session.metadata.get("path") == f"/{client.name}":
                    session.cancel()
        elif kind == "cancel_all":
            for session in list(self.manager.sessions.values()):
                session.cancel()
        elif kind == "shutdown":
            self.harness.start_soon(self.manager.shutdown, 0)
        elif kind == "middleware_shutdown":
            self.harness.start_soon(self.middleware.shutdown, 0)
        elif kind == "disconnect":
            client.disconnect()
        elif kind == "lifespan":
            self.harness.start_soon(self.lifespan.shutdown)
        else:
            assert kind == "server_cancel", kind
            client.kill()

    async def replay(self) -> None:
        plan = self.plan
        app = make_app(self.clients)
        with trio.fail_after(10 * HANG_LIMIT):
            async with AsyncExitStack() as stack:
                if plan.owner:
                    self.middleware = SessionMiddleware(
                        app,
                        max_body_bytes=plan.max_body_bytes,
                        inline=plan.inline,
                        **plan.config,
                    )
                else:
                    # The manager's owner is this test; the lifespan leaves it be.
                    external = await stack.enter_async_context(
                        ts.open_session_manager(**plan.config)
                    )
                    self.middleware = SessionMiddleware(
                        app,
                        manager=external,
                        max_body_bytes=plan.max_body_bytes,
                        inline=plan.inline,
                    )
                async with trio.open_nursery() as harness:
                    self.harness = harness
                    self.lifespan = LifespanRunner(self.middleware, harness)
                    await self.lifespan.startup()
                    self.manager = self.middleware.manager
                    async with trio.open_nursery() as nursery:
                        for client in self.clients:
                            nursery.start_soon(client.run, self.middleware, HANG_LIMIT)
                    # Every request has ended (or hung): now the server stops.
                    await self.lifespan.shutdown()
            self.tasks = tasks_left()

    def provoked(self, client: Client) -> str | None:
        """Why ``client``'s app may legitimately have been cut short, if at all."""
        plan = self.plan
        everyone = self.steps.fired_kinds() & {
            "cancel_all",
            "shutdown",
            "middleware_shutdown",
        }
        if plan.owner and "lifespan" in self.steps.fired_kinds():
            everyone.add("lifespan")
        aimed = self.steps.fired_kinds(client.index) & {
            "cancel",
            "disconnect",
            "server_cancel",
        }
        if everyone or aimed:
            return ", ".join(sorted(everyone | aimed))
        if plan.request_timeout is not None:
            return "request_timeout"
        limit = plan.max_body_bytes
        if limit is not None and sum(map(len, client.plan.body)) > limit:
            return "body over max_body_bytes"
        return None

    def describe(self, client: Client) -> str:
        kinds = [m["type"].removeprefix("http.response.") for m in client.messages]
        return (
            f"{client.name} ({client.plan.app}): middleware {client.end}, "
            f"app {client.app}, status {client.status}, sent {kinds}, "
            f"gone={client.gone}"
        )

    def context(self) -> str:
        fired = "; ".join(
            f"{i.kind}(r{i.target}) at {at}" for i, at in self.steps.fired
        )
        return f"\n  injections fired: {fired or 'none'}\n  plan: {self.plan}"

    def check(self) -> None:
        """Assert every invariant; each kind of failure on its own line."""
        context = self.context()
        hung = [c for c in self.clients if c.end == "hung"]
        detail = "; ".join(self.describe(c) for c in hung)
        tag = DEFECT_1 if any(c.app is None for c in hung) else ""
        assert not hung, f"middleware never returned: {detail}\n  {tag}{context}"

        unprovoked = [
            c
            for c in self.clients
            if self.provoked(c) is None
            and not (
                c.app in ("returned", "raised")
                or (c.app is None and c.complete and c.status in (503, 413))
            )
        ]
        detail = "; ".join(self.describe(c) for c in unprovoked)
        tag = DEFECT_2 if any(c.plan.app.final != "body" for c in unprovoked) else ""
        assert not unprovoked, (
            f"app cut short though nothing asked for it: {detail}\n  {tag}{context}"
        )

        unanswered = [c for c in self.clients if not self.answered(c)]
        detail = "; ".join(self.describe(c) for c in unanswered)
        assert not unanswered, f"request neither answered nor gone: {detail}{context}"

        broken = [f"{c.name}: {e}" for c in self.clients for e in c.errors]
        assert not broken, f"ASGI protocol violated: {broken}{context}"

        assert self.manager is not None
        problems = invariant_problems(self.manager, settled=True)
        assert not problems, f"manager not settled: {problems}{context}"

        refused = sum(c.refused for c in self.clients)
        capacity = self.manager.statistics().rejections["capacity"]
        assert refused == capacity, (
            f"{refused} capacity 503s sent, {capacity} counted{context}"
        )

        assert self.lifespan is not None
        assert self.lifespan.replies[-1]["type"] == "lifespan.shutdown.complete", (
            f"lifespan ended with {self.lifespan.replies}{context}"
        )

        assert not self.tasks, f"tasks left running: {self.tasks}{context}"

    def answered(self, client: Client) -> bool:
        """Answered, its client gone, or legitimately cut off mid-response."""
        if client.complete or client.gone or client.end == "killed":
            return True
        if client.end == "raised":
            # The server answers 500 (or closes a started response); only the
            # app's own failure may reach it.
            return isinstance(client.error, AppFailure) and client.app == "raised"
        # A response the app had begun can only be closed when its session is
        # cut short (deadline, cancellation) or it fails.
        return client.started and client.app in ("cancelled", "raised")


@settings(max_examples=examples(200), deadline=None)
@given(middleware_plans())
def test_middleware_survives_races_at_every_step(plan: MiddlewarePlan) -> None:
    """Injections at any await point leave every request answered and nothing held."""
    race = MiddlewareRace(plan)
    run_trio(race.replay)
    race.check()


# -------------------------------------------------------------- manager only


@attrs.define(eq=False)
class Caller:
    """One job's caller, and what became of it and of its session."""

    index: int
    job: Job
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    session: ts.Session | None = None
    result: str | None = None  # "value", "raised", "timeout", "cancelled", rejected
    ran: str | None = None  # what fn did: "running", "returned", "raised", "cancelled"

    @property
    def name(self) -> str:
        return f"j{self.index}"


@attrs.define
class ManagerRace:
    """Replays one :class:`ManagerPlan` against a real manager."""

    plan: ManagerPlan
    callers: list[Caller] = attrs.Factory(list)
    manager: ts.SessionManager | None = None
    harness: trio.Nursery | None = None
    around: trio.CancelScope = attrs.Factory(trio.CancelScope)
    tasks: list[str] = attrs.Factory(list)
    steps: Steps = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.steps = Steps(self.plan.injections, self.fire)
        self.callers = [Caller(i, job) for i, job in enumerate(self.plan.jobs)]

    def fire(self, injection: Injection) -> None:
        assert self.manager is not None
        assert self.harness is not None
        caller = self.callers[injection.target]
        if injection.kind == "cancel":
            for session in list(self.manager.sessions.values()):
                if session.name == caller.name:
                    session.cancel()
        elif injection.kind == "cancel_all":
            for session in list(self.manager.sessions.values()):
                session.cancel()
        elif injection.kind == "shutdown":
            self.harness.start_soon(self.manager.shutdown, 0)
        elif injection.kind == "outer":
            caller.scope.cancel()
        else:
            assert injection.kind == "outer_all", injection.kind
            self.around.cancel()

    async def work(self, caller: Caller) -> str:
        job = caller.job
        point = self.steps.point
        caller.ran = "running"
        point(f"{caller.name} fn's first step")
        try:
            if job.kind == "sleep":
                point(f"{caller.name} fn sleeps")
                await trio.sleep(job.seconds)
            elif job.kind == "steps":
                for number in range(job.steps):
                    point(f"{caller.name} fn step {number}")
                    await trio.lowlevel.checkpoint()
            elif job.kind == "raise":
                point(f"{caller.name} fn sleeps before raising")
                await trio.sleep(job.seconds)
                raise AppFailure(caller.name)
        except trio.Cancelled:
            caller.ran = "cancelled"
            raise
        except AppFailure:
            caller.ran = "raised"
            raise
        caller.ran = "returned"
        return caller.name

    async def call(self, caller: Caller) -> None:
        job = caller.job
        manager = self.manager
        assert manager is not None
        await trio.sleep(job.arrival)
        options: dict[str, Any] = {"name": caller.name, "timeout": job.timeout}
        with trio.move_on_after(HANG_LIMIT) as hang, caller.scope:
            self.steps.point(f"{caller.name} calls {job.via}")
            try:
                if job.via == "run":
                    await manager.run(self.work, caller, **options)
                elif job.via in ("inline", "inline_nowait"):
                    # The session is a block of this caller's own task.
                    if job.via == "inline":
                        block = manager.session(**options)
                    else:
                        block = manager.session_nowait(**options)
                    async with block as inline:
                        caller.session = inline
                        self.steps.point(f"{caller.name} admitted inline")
                        await self.work(caller)
                else:
                    if job.via == "nowait":
                        session = manager.start_session_nowait(
                            self.work, caller, **options
                        )
                    else:
                        session = await manager.start_session(
                            self.work, caller, **options
                        )
                    caller.session = session
                    self.steps.point(f"{caller.name} admitted, waits")
                    await session.wait()
                caller.result = "value"
            except ts.RejectedError as exc:
                caller.result = type(exc).__name__
            except AppFailure:
                caller.result = "raised"
            except ts.SessionTimeout:
                caller.result = "timeout"
            except ts.SessionCancelled:
                caller.result = "cancelled"
        if hang.cancelled_caught:
            caller.result = "hung"

    async def replay(self) -> None:
        plan = self.plan
        with trio.fail_after(10 * HANG_LIMIT):
            with self.around:
                async with (
                    ts.open_session_manager(
                        max_sessions=plan.max_sessions,
                        max_waiting=plan.max_waiting,
                        wait_timeout=plan.wait_timeout,
                        shutdown_timeout=plan.shutdown_timeout,
                    ) as manager,
                    trio.open_nursery() as harness,
                ):
                    self.manager, self.harness = manager, harness
                    async with trio.open_nursery() as nursery:
                        for caller in self.callers:
                            nursery.start_soon(self.call, caller)
            self.tasks = tasks_left()

    def provoked(self, caller: Caller) -> bool:
        everyone = self.steps.fired_kinds() & {"cancel_all", "shutdown", "outer_all"}
        aimed = self.steps.fired_kinds(caller.index) & {"cancel", "outer"}
        return bool(everyone or aimed) or caller.job.timeout is not None

    def context(self) -> str:
        fired = "; ".join(
            f"{i.kind}(j{i.target}) at {at}" for i, at in self.steps.fired
        )
        callers = "; ".join(
            f"{c.name}: result {c.result}, fn {c.ran}, "
            f"outcome {c.session and c.session.outcome}"
            for c in self.callers
        )
        return f"\n  {callers}\n  injections fired: {fired or 'none'}\n  {self.plan}"

    def check(self) -> None:
        context = self.context()
        hung = [c.name for c in self.callers if c.result == "hung"]
        assert not hung, f"callers never returned: {hung}{context}"

        assert self.manager is not None
        problems = invariant_problems(self.manager, settled=True)
        assert not problems, f"manager not settled: {problems}{context}"

        expected = {"return": "value", "sleep": "value", "steps": "value"}
        wrong = [
            c.name
            for c in self.callers
            if not self.provoked(c)
            and c.result not in ("CapacityError", "ShuttingDownError")
            and c.result != expected.get(c.job.kind, "raised")
        ]
        assert not wrong, f"unprovoked callers got the wrong result: {wrong}{context}"

        mismatched = [
            c.name
            for c in self.callers
            if c.session is not None
            and c.result is not None
            and WAIT_RESULTS.get(c.session.outcome) != c.result
        ]
        assert not mismatched, (
            f"wait() disagrees with the outcome: {mismatched}{context}"
        )

        stats = self.manager.statistics()
        rejected = sum(
            c.result in ("CapacityError", "ShuttingDownError") for c in self.callers
        )
        assert stats.rejected == rejected, (
            f"{rejected} callers rejected, {stats.rejected} counted{context}"
        )
        if not self.steps.fired_kinds() & {"outer", "outer_all"}:
            admitted = sum(
                c.result is not None
                and c.result not in ("CapacityError", "ShuttingDownError")
                for c in self.callers
            )
            assert stats.created == admitted, (
                f"{admitted} callers admitted, {stats.created} created{context}"
            )

        assert not self.tasks, f"tasks left running: {self.tasks}{context}"


#: What wait() gives for each outcome, as Caller.result spells it.
WAIT_RESULTS: dict[ts.Outcome | None, str] = {
    ts.Outcome.SUCCESS: "value",
    ts.Outcome.ERROR: "raised",
    ts.Outcome.TIMEOUT: "timeout",
    ts.Outcome.CANCELLED: "cancelled",
}


@settings(max_examples=examples(150), deadline=None)
@given(manager_plans())
def test_manager_survives_races_at_every_step(plan: ManagerPlan) -> None:
    """Cancel, shutdown(0) or outer cancellation at any point: callers end, no leak."""
    race = ManagerRace(plan)
    run_trio(race.replay)
    race.check()


# ------------------------------------------------ the concrete moments, by hand

IMMEDIATE = Behaviour("immediate")


def request_plan(app: Behaviour = IMMEDIATE, **fields: Any) -> RequestPlan:
    """One request arriving at once with an empty body, read through a function."""
    defaults: dict[str, Any] = {
        "arrival": 0,
        "body": (b"",),
        "chunk_delay": 0,
        "declared": False,
        "channel": False,
    }
    return RequestPlan(app=app, **{**defaults, **fields})


def middleware_plan(
    *requests: RequestPlan, injections: tuple[Injection, ...] = (), **fields: Any
) -> MiddlewarePlan:
    """A lifespan-owned manager with one slot, no queue, no deadline, no limit."""
    defaults: dict[str, Any] = {
        "owner": True,
        "inline": True,
        "max_sessions": 1,
        "max_waiting": 0,
        "wait_timeout": None,
        "request_timeout": None,
        "shutdown_timeout": 0,
        "max_body_bytes": None,
    }
    return MiddlewarePlan(
        requests=requests, injections=injections, **{**defaults, **fields}
    )


def replay(plan: MiddlewarePlan) -> MiddlewareRace:
    race = MiddlewareRace(plan)
    run_trio(race.replay)
    assert len(race.steps.fired) == len(plan.injections), "an injection never fired"
    return race


def assert_slot_free(race: MiddlewareRace) -> None:
    assert race.manager is not None
    problems = invariant_problems(race.manager, settled=True)
    assert not problems, problems
    assert not statistics_problems(race.manager.statistics())
    assert not race.tasks, race.tasks


#: Both modes of the middleware: sessions inline in the request's task, or spawned.
MIDDLEWARE_MODES = pytest.mark.parametrize(
    "inline", [True, False], ids=["inline", "spawned"]
)

OWNERS = pytest.mark.parametrize(
    "owner", [True, False], ids=["lifespan-manager", "external-manager"]
)


@OWNERS
def test_cancel_before_the_first_step_is_answered(owner: bool) -> None:
    """A session cancelled before the app's first step answers 503, frees its slot."""
    where = "r0 middleware awaits the server's receive"  # admitted, not yet run
    # Only a session in a task of its own has a moment between admission and
    # its first step: an inline one starts in the step it is admitted.
    race = replay(
        middleware_plan(
            request_plan(),
            injections=(Injection(0, "cancel", where=where),),
            owner=owner,
            inline=False,
        )
    )
    (client,) = race.clients
    assert client.app is None, "the app ran: the cancellation came too late"
    assert client.end == "returned", f"{DEFECT_1}: {race.describe(client)}"
    assert (client.complete, client.status) == (True, 503), race.describe(client)
    assert_slot_free(race)


@pytest.mark.parametrize(
    ("owner", "kind"),
    [(False, "shutdown"), (True, "shutdown"), (True, "middleware_shutdown")],
    ids=["external-manager", "lifespan-manager", "middleware.shutdown"],
)
def test_shutdown_during_admission_is_answered(owner: bool, kind: str) -> None:
    """shutdown(timeout=0) as a request is admitted: an answer, whichever runs first."""
    # The shutdown task runs in the batch in which the request is admitted:
    # before it (a refusal), or after it and then before or after the
    # session's first step. Trio shuffles each batch; seeding its shuffle (as
    # pytest-trio does under Hypothesis) replays every order deterministically.
    orders = set()
    for seed in range(12):
        trio._core._run._r.seed(seed)
        injection = Injection(0, kind, where="r0 connects")
        plan = middleware_plan(
            request_plan(Behaviour("sleep", seconds=1)),
            injections=(injection,),
            owner=owner,
            inline=False,  # the spawned mode has the most orders
        )
        race = replay(plan)
        (client,) = race.clients
        assert race.manager is not None
        if not race.manager.statistics().created:
            orders.add("refused")
        else:
            orders.add("before its first step" if client.app is None else "sleeping")
        detail = f"seed {seed}: {race.describe(client)}"
        assert client.end == "returned", f"{DEFECT_1}: {detail}"
        assert (client.complete, client.status) == (True, 503), detail
        assert_slot_free(race)
    assert orders == {"refused", "before its first step", "sleeping"}, (
        f"the seeds reach only {orders}"
    )


@MIDDLEWARE_MODES
@pytest.mark.parametrize("channel", [False, True], ids=["function", "channel"])
def test_disconnect_mid_body_frees_the_slot(channel: bool, inline: bool) -> None:
    """A client leaving between two body chunks cancels its session, frees its slot."""
    race = replay(
        middleware_plan(
            request_plan(
                Behaviour("read"),
                body=(b"ab", b"cd", b"ef"),
                chunk_delay=0.5,
                channel=channel,
            ),
            injections=(Injection(0, "disconnect", where="r0 client sends chunk 2"),),
            inline=inline,
        )
    )
    (client,) = race.clients
    assert (client.gone, client.end) == (True, "returned"), race.describe(client)
    assert client.messages == []  # nobody left to answer
    assert race.manager is not None
    assert race.manager.statistics().cancelled == 1
    assert_slot_free(race)


@MIDDLEWARE_MODES
@pytest.mark.parametrize(("drain", "complete"), [(0, False), (10, True)])
def test_lifespan_shutdown_mid_response(
    drain: float, complete: bool, inline: bool
) -> None:
    """Shutdown mid-response: the app ends within the drain, or is cut off cleanly."""
    stream = Behaviour("stream", seconds=1, chunks=2)
    race = replay(
        middleware_plan(
            request_plan(stream),
            injections=(
                Injection(0, "lifespan", where="r0 app sleeps before chunk 1"),
            ),
            shutdown_timeout=drain,
            inline=inline,
        )
    )
    (client,) = race.clients
    assert client.end == "returned", race.describe(client)
    assert client.complete is complete, race.describe(client)
    kinds = [message["type"] for message in client.messages]
    if not complete:
        # Cut after its first chunk: no second status, no fake end of body.
        assert client.app == "cancelled"
        assert kinds == ["http.response.start", "http.response.body"]
    assert not client.errors
    assert race.middleware is not None
    report = race.middleware.shutdown_report
    assert report is not None
    assert (report.initial_active, report.cancelled) == (1, 0 if complete else 1)
    assert_slot_free(race)


@MIDDLEWARE_MODES
@pytest.mark.parametrize("final", ["pathsend", "zerocopysend"])
def test_send_extensions_end_the_response(final: str, inline: bool) -> None:
    """After pathsend or zerocopysend, the end of the stream does not cancel the app."""
    background = Behaviour("background", seconds=1, final=final)
    race = replay(middleware_plan(request_plan(background), inline=inline))
    (client,) = race.clients
    assert client.complete, race.describe(client)
    assert client.app == "returned", f"{DEFECT_2}: {race.describe(client)}"
    assert race.manager is not None
    assert race.manager.statistics().succeeded == 1
    assert_slot_free(race)


async def test_outer_cancel_during_the_drain_counts_what_it_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sessions the code around cancels mid-drain are cancelled in the report too."""
    with trio.move_on_after(2):
        async with ts.open_session_manager(shutdown_timeout=10) as manager:
            for _ in range(3):
                await manager.start_session(trio.sleep, 100)
            # Leaving the block drains for up to 10 s; the outer scope ends it at 2.
    report = await manager.shutdown()
    stats = manager.statistics()
    assert (report.initial_active, report.completed, report.cancelled) == (3, 0, 3)
    assert stats.cancelled == report.cancelled
    assert trio.current_time() == 2
