"""An in-process ASGI server for race tests, with every await point numbered.

Each request is a :class:`Client`: a Hypercorn-like server side on a memory
channel that records what the middleware sends and checks the protocol; a
:class:`Steps` counter numbers the await points of clients, server and app so
that a test can fire an injection at exactly the N-th one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import trio
from strategies import Behaviour, Injection, RequestPlan

from trio_sessions.asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AppFailure", "Client", "LifespanRunner", "Steps", "make_app"]


class AppFailure(Exception):
    """The error an app raises on purpose."""


class Steps:
    """Numbers await points as they are reached; fires the injections due at each."""

    def __init__(
        self, injections: Iterable[Injection], fire: Callable[[Injection], None]
    ) -> None:
        self.count = 0
        self.labels: list[str] = []
        self.fired: list[tuple[Injection, str]] = []
        self._due: dict[int | str, list[Injection]] = {}
        for injection in injections:
            key = injection.at if injection.where is None else injection.where
            self._due.setdefault(key, []).append(injection)
        self._fire = fire

    def point(self, label: str) -> None:
        """An await point is reached: count it, then fire what is due, in order."""
        self.count += 1
        self.labels.append(label)
        due = self._due.pop(self.count, []) + self._due.pop(label, [])
        for injection in due:
            self.fired.append((injection, f"#{self.count} {label}"))
            self._fire(injection)

    def fired_kinds(self, target: int | None = None) -> set[str]:
        """Kinds of the injections fired so far (only those aimed at ``target``)."""
        return {
            injection.kind
            for injection, _ in self.fired
            if target is None or injection.target == target
        }


def _complete(message: Message) -> bool:
    kind = message["type"]
    if kind == "http.response.pathsend":
        return True
    return kind in ("http.response.body", "http.response.zerocopysend") and not (
        message.get("more_body", False)
    )


@attrs.define(eq=False)
class Client:
    """One request as a Trio server makes it, and what became of it.

    ``end`` is how the middleware's call ended: ``"returned"``, ``"raised"``
    (the server then answers 500 if nothing was sent), ``"killed"`` (the server
    cancelled it) or ``"hung"`` (it had not returned ``hang_limit`` seconds
    after the request arrived). ``app`` is what the app did: ``None`` (never
    ran), ``"running"``, ``"returned"``, ``"raised"`` or ``"cancelled"``.
    """

    index: int
    plan: RequestPlan
    steps: Steps
    messages: list[Message] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)
    arrived: bool = False
    started: bool = False
    complete: bool = False
    gone: bool = False  # the client left before the response was complete
    killed: bool = False
    end: str | None = None
    error: BaseException | None = None
    app: str | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    _to_app: trio.MemorySendChannel[Message] = attrs.field(init=False)
    _from_client: trio.MemoryReceiveChannel[Message] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Unbounded, like a server's queue of parsed events: injections push
        # synchronously, at the very point they are drawn for.
        self._to_app, self._from_client = trio.open_memory_channel[Message](math.inf)

    @property
    def name(self) -> str:
        return f"r{self.index}"

    @property
    def status(self) -> int | None:
        for message in self.messages:
            if message["type"] == "http.response.start":
                status: int = message["status"]
                return status
        return None

    @property
    def refused(self) -> bool:
        """Answered by the middleware itself with a capacity 503 (Retry-After)."""
        return any(
            m["type"] == "http.response.start"
            and m["status"] == 503
            and any(name == b"retry-after" for name, _ in m.get("headers", ()))
            for m in self.messages
        )

    def http_scope(self) -> dict[str, Any]:
        headers = [(b"host", b"test")]
        if self.plan.declared:
            length = sum(map(len, self.plan.body))
            headers.append((b"content-length", str(length).encode()))
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": f"/{self.name}",
            "raw_path": f"/{self.name}".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 5000 + self.index),
            "server": ("127.0.0.1", 80),
            "extensions": {
                "http.response.pathsend": {},
                "http.response.zerocopysend": {},
            },
        }

    async def run(self, app: ASGIApp, hang_limit: float) -> None:
        """Arrive, queue the body's first chunk, and call ``app`` as a server would."""
        plan = self.plan
        # Before the arrival's checkpoint: what fires here runs in the batch in
        # which the request arrives, in either order with it.
        self.steps.point(f"{self.name} connects")
        await trio.sleep(plan.arrival)
        self.arrived = True
        first, *rest = plan.body
        self._to_app.send_nowait(
            {"type": "http.request", "body": first, "more_body": bool(rest)}
        )
        receive: Receive = self._from_client.receive if plan.channel else self.receive
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._feed, rest)
            with trio.move_on_after(hang_limit), self.scope:
                self.steps.point(f"{self.name} arrives (before admission)")
                try:
                    await app(self.http_scope(), receive, self.send)
                    self.end = "returned"
                except Exception as exc:
                    self.end = "raised"
                    self.error = exc
            if self.end is None:
                self.end = "killed" if self.killed else "hung"
            nursery.cancel_scope.cancel()

    async def _feed(self, rest: list[bytes]) -> None:
        for number, chunk in enumerate(rest, 1):
            await trio.sleep(self.plan.chunk_delay)
            self.steps.point(f"{self.name} client sends chunk {number}")
            if self.gone or self.complete:
                return
            more = number < len(rest)
            self._to_app.send_nowait(
                {"type": "http.request", "body": chunk, "more_body": more}
            )

    async def receive(self) -> Message:
        """The server's ``receive`` when it is not a bare memory channel."""
        self.steps.point(f"{self.name} middleware awaits the server's receive")
        return await self._from_client.receive()

    async def send(self, message: Message) -> None:
        """The server's ``send``: record, check the protocol, write (a checkpoint)."""
        self.steps.point(f"{self.name} sends {message['type']}")
        self._record(message)
        await trio.lowlevel.checkpoint()

    def _record(self, message: Message) -> None:
        self.messages.append(message)
        kind = message["type"]
        if self.gone:
            return  # the connection is closed: the server drops it, as Hypercorn does
        if self.complete:
            self.errors.append(f"{kind} sent after the response was complete")
            return
        if kind == "http.response.start":
            if self.started:
                self.errors.append("a second http.response.start")
            self.started = True
        elif kind in (
            "http.response.body",
            "http.response.pathsend",
            "http.response.zerocopysend",
        ):
            if not self.started:
                self.errors.append(f"{kind} before http.response.start")
        else:
            self.errors.append(f"unknown message {kind}")
        if _complete(message):
            self.complete = True
            # The end of the stream, as a Trio server reports it once the
            # response is out.
            self._to_app.send_nowait({"type": "http.disconnect"})

    def disconnect(self) -> None:
        """The client leaves (no-op before it arrived or once it was answered)."""
        if self.arrived and not (self.gone or self.complete):
            self.gone = True
            self._to_app.send_nowait({"type": "http.disconnect"})

    def kill(self) -> None:
        """The server cancels this request's task (its connection is gone)."""
        if self.arrived and self.end is None:
            self.killed = self.gone = True
            self.scope.cancel()


_START: Message = {"type": "http.response.start", "status": 200, "headers": []}


def _final(final: str, body: bytes) -> Message:
    if final == "pathsend":
        return {"type": "http.response.pathsend", "path": "/dev/null"}
    if final == "zerocopysend":
        return {"type": "http.response.zerocopysend", "file": 0, "more_body": False}
    return {"type": "http.response.body", "body": body}


async def _behave(
    client: Client, behaviour: Behaviour, receive: Receive, send: Send
) -> None:
    point = client.steps.point
    name = client.name
    body = b"ok"
    if behaviour.kind == "sleep":
        point(f"{name} app sleeps (ignoring receive)")
        await trio.sleep(behaviour.seconds)
    elif behaviour.kind == "read":
        body = b""
        while True:
            point(f"{name} app reads the body")
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody left to answer
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
    elif behaviour.kind == "raise":
        if behaviour.started:
            await send(_START)
        point(f"{name} app sleeps before raising")
        await trio.sleep(behaviour.seconds)
        raise AppFailure(f"{name} fails on purpose")
    elif behaviour.kind == "stream":
        await send(_START)
        for number in range(behaviour.chunks):
            point(f"{name} app sleeps before chunk {number}")
            await trio.sleep(behaviour.seconds)
            await send({"type": "http.response.body", "body": b"c", "more_body": True})
        await send(_final(behaviour.final, b"end"))
        return
    await send(_START)
    await send(_final(behaviour.final, body))
    if behaviour.kind == "background":
        point(f"{name} app works after its response")
        await trio.sleep(behaviour.seconds)


def make_app(clients: list[Client]) -> ASGIApp:
    """One ASGI app for every client: it does what each request's plan says."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        client = clients[int(scope["path"][2:])]
        client.app = "running"
        client.steps.point(f"{client.name} app's first step")
        try:
            await _behave(client, client.plan.app, receive, send)
        except trio.Cancelled:
            client.app = "cancelled"
            raise
        except AppFailure:
            client.app = "raised"
            raise
        except BaseException as exc:
            client.app = f"crashed with {exc!r}"
            raise
        client.app = "returned"

    return app


class LifespanRunner:
    """The server's side of the ASGI lifespan protocol, one event at a time."""

    def __init__(self, app: ASGIApp, nursery: trio.Nursery) -> None:
        self._to_app, receive = trio.open_memory_channel[Message](math.inf)
        send, self._from_app = trio.open_memory_channel[Message](math.inf)
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        nursery.start_soon(app, scope, receive.receive, send.send)
        self.replies: list[Message] = []
        self._shutdown: trio.Event | None = None

    async def startup(self) -> None:
        await self._to_app.send({"type": "lifespan.startup"})
        reply = await self._from_app.receive()
        self.replies.append(reply)
        assert reply["type"] == "lifespan.startup.complete", reply

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` once; every caller waits for the reply."""
        if self._shutdown is not None:
            await self._shutdown.wait()
            return
        self._shutdown = trio.Event()
        await self._to_app.send({"type": "lifespan.shutdown"})
        self.replies.append(await self._from_app.receive())
        self._shutdown.set()
