"""End-to-end: each example runs as a real subprocess on a loopback port 0.

Real clients talk to it (httpx under Trio, trio-websocket, raw Trio TCP streams);
every test bounds its I/O with ``trio.fail_after`` and kills its child on exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_helpers import (
    LineClient,
    get,
    open_websocket,
    parse_http,
    raw_http,
    run_example,
    run_server,
    tcp_stats,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import ConnectionClosed

from trio_sessions._cli import _serve

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Metrics:
    """Fetch /metrics and parse it with prometheus_client's own parser."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    values: Metrics = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def metric(values: Metrics, name: str, **labels: str) -> float:
    """One sample of the ``http`` manager."""
    return values[(name, tuple(sorted({"manager": "http", **labels}.items())))]


def http_client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20)


def assert_no_leak(values: Metrics) -> None:
    """Nothing is held once the server is idle, and the counts add up."""
    assert metric(values, "trio_sessions_active") == 0
    assert metric(values, "trio_sessions_metadata_bytes") == 0
    completed = sum(
        metric(values, "trio_sessions_completed_total", outcome=outcome)
        for outcome in ("success", "error", "timeout", "cancelled")
    )
    assert metric(values, "trio_sessions_created_total") == completed
    assert metric(values, "trio_sessions_duration_seconds_count") == completed


# ---------------------------------------------------------------- HTTP example


async def test_http_example_answers_and_metrics(tmp_path: Path) -> None:
    """The HTTP example answers 200/400/404/413/500/503/504 and /metrics counts each."""
    with trio.fail_after(60):
        async with (
            run_example(
                "http_server",
                tmp_path,
                "--max-sessions=2",
                "--request-timeout=1.5",
                "--max-body-bytes=1000",
            ) as server,
            http_client(server.port) as client,
        ):
            for _ in range(5):
                response = await client.get("/")
                assert (response.status_code, response.text) == (200, "hello\n")
            assert (await client.get("/healthz")).status_code == 200
            response = await client.post("/echo", content=b'{"a": [1, 2]}')
            assert response.json() == {"echo": {"a": [1, 2]}}
            response = await client.post("/echo", content=b'{"a": ')
            assert response.status_code == 400
            assert "malformed JSON" in response.json()["error"]
            response = await client.post("/echo", content=b"x" * 2000)
            assert response.status_code == 413  # refused before admission
            assert (await client.get("/error")).status_code == 500
            assert (await client.get("/nowhere")).status_code == 404
            response = await client.get("/slow", params={"seconds": 30})
            assert response.status_code == 504

            slow: list[int] = []

            async def hold() -> None:
                slow.append((await client.get("/slow?seconds=1")).status_code)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold)
                nursery.start_soon(hold)
                await wait_until(
                    lambda: scrape(client),
                    lambda v: metric(v, "trio_sessions_active") == 2,
                )
                response = await client.get("/")
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"
            assert slow == [200, 200]

            values = await scrape(client)
            assert_no_leak(values)
            assert metric(values, "trio_sessions_created_total") == 12
            assert (
                metric(values, "trio_sessions_completed_total", outcome="success") == 10
            )
            assert metric(values, "trio_sessions_completed_total", outcome="error") == 1
            assert (
                metric(values, "trio_sessions_completed_total", outcome="timeout") == 1
            )
            assert (
                metric(values, "trio_sessions_completed_total", outcome="cancelled")
                == 0
            )
            assert (
                metric(values, "trio_sessions_rejected_total", reason="capacity") == 1
            )
            assert metric(values, "trio_sessions_peak_active") == 2
            assert metric(values, "trio_sessions_max_sessions") == 2
            assert metric(values, "trio_sessions_peak_metadata_bytes") > 0
            # The 1.5 s timeout and the two 1 s sleeps took over a second.
            over_a_second = metric(
                values, "trio_sessions_duration_seconds_count"
            ) - metric(values, "trio_sessions_duration_seconds_bucket", le="1.0")
            assert over_a_second == 3
            server.signal(signal.SIGINT)
            status, _ = await server.wait_exit()
            assert status == 0


async def test_http_example_disconnect_and_slow_client(tmp_path: Path) -> None:
    """A client that leaves frees its slot (CANCELLED); one that dawdles gets 504."""
    with trio.fail_after(60):
        async with (
            run_example("http_server", tmp_path, "--request-timeout=1.5") as server,
            http_client(server.port) as client,
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(get("/slow?seconds=60"))
            await wait_until(
                lambda: scrape(client), lambda v: metric(v, "trio_sessions_active") == 1
            )
            await stream.aclose()
            values = await wait_until(
                lambda: scrape(client), lambda v: metric(v, "trio_sessions_active") == 0
            )
            assert (
                metric(values, "trio_sessions_completed_total", outcome="cancelled")
                == 1
            )

            # Headers promise 10 body bytes; only 3 ever come.
            slow = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with slow:
                await slow.send_all(
                    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"
                )
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = await slow.receive_some(65_536)
                    assert chunk
                    data += chunk
            assert parse_http(data)[0] == 504
            values = await scrape(client)
            assert_no_leak(values)
            assert (
                metric(values, "trio_sessions_completed_total", outcome="timeout") == 1
            )


async def test_http_example_storm_of_1000_connections(tmp_path: Path) -> None:
    """1,000 simultaneous connections against capacity 100: counts add up, no leak."""
    with trio.fail_after(60):
        async with (
            run_example("http_server", tmp_path, "--max-sessions=100") as server,
            http_client(server.port) as client,
        ):
            statuses: list[int] = []
            go = trio.Event()

            async def one() -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                async with stream:
                    await go.wait()
                    await stream.send_all(get("/slow?seconds=1"))
                    data = b""
                    while chunk := await stream.receive_some(65_536):
                        data += chunk
                statuses.append(parse_http(data)[0])

            async with trio.open_nursery() as nursery:
                for _ in range(1000):
                    nursery.start_soon(one)
                await trio.testing.wait_all_tasks_blocked()
                go.set()
            assert len(statuses) == 1000
            assert set(statuses) <= {200, 503}
            ok, refused = statuses.count(200), statuses.count(503)
            assert ok >= 100
            assert refused > 0

            values = await scrape(client)
            assert_no_leak(values)
            assert (
                metric(values, "trio_sessions_completed_total", outcome="success") == ok
            )
            assert metric(
                values, "trio_sessions_rejected_total", reason="capacity"
            ) == (refused)
            assert metric(values, "trio_sessions_peak_active") == 100


async def test_http_example_sigterm_drains_in_flight_and_refuses_new(
    tmp_path: Path,
) -> None:
    """On SIGTERM, in-flight requests finish, new ones get 503 + close, exit 0."""
    with trio.fail_after(60):
        async with (
            run_example(
                "http_server",
                tmp_path,
                "--shutdown-timeout=2.5",
                "--request-timeout=60",
            ) as server,
            http_client(server.port) as client,
        ):
            answers: list[int] = []

            async def request(path: str) -> None:
                answers.append((await raw_http(server.port, get(path)))[0])

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(request, "/slow?seconds=1")
                nursery.start_soon(request, "/slow?seconds=60")  # outlives the drain
                await wait_until(
                    lambda: scrape(client),
                    lambda v: metric(v, "trio_sessions_active") == 4,
                )
                server.signal(signal.SIGTERM)

                async def healthz() -> int:
                    return (await raw_http(server.port, get("/healthz")))[0]

                await wait_until(healthz, lambda status: status == 503)
                status, headers, body = await raw_http(server.port, get("/"))
                assert (status, headers["connection"]) == (503, "close")
                assert body == b"Server is shutting down\n"
            assert sorted(answers) == [200, 200, 200, 503]
            status, _ = await server.wait_exit()
            assert status == 0
            assert server.report() == {
                "initial_active": 4,
                "completed": 3,
                "cancelled": 1,
                "timeout_reached": True,
                "duration": pytest.approx(2.5, abs=1.0),
                "stuck": [],
            }
            final = server.final_statistics()
            assert final["active"] == 0
            assert final["metadata_bytes"] == 0
            assert final["rejections"]["shutting_down"] == 1


# ----------------------------------------------------------------- TCP example


async def test_tcp_example_answers_each_line(tmp_path: Path) -> None:
    """The TCP example answers good, malformed, oversize and refused lines in JSON."""
    with trio.fail_after(60):
        async with run_example(
            "tcp_json_server",
            tmp_path,
            "--max-sessions=1",
            "--request-timeout=1",
            "--max-line-bytes=200",
        ) as server:
            client = await LineClient.connect(server.port)
            assert await client.call({"id": 1, "op": "echo", "params": [1, "two"]}) == {
                "id": 1,
                "result": [1, "two"],
            }
            await client.send_raw(b'{"id": 2, "op": \n')
            answer = await client.receive()
            assert answer["error"]["code"] == "bad_json"
            await client.send_raw(b'{"pad": "' + b"x" * 500 + b'"}\n')
            assert (await client.receive())["error"]["code"] == "line_too_long"
            # A line over the limit split across writes is refused once, then skipped.
            await client.send_raw(b"y" * 300)
            await client.send_raw(b"y" * 300 + b"\n")
            assert (await client.receive())["error"]["code"] == "line_too_long"
            assert (await client.call([1, 2]))["error"]["code"] == "bad_request"
            answer = await client.call({"id": 3, "op": "launch"})
            assert answer == {
                "id": 3,
                "error": {"code": "bad_request", "message": "unknown op 'launch'"},
            }
            answer = await client.call({"id": 4, "op": "fail"})
            assert answer["error"]["code"] == "error"
            answer = await client.call(
                {"id": 5, "op": "sleep", "params": {"seconds": 9}}
            )
            assert answer["error"]["code"] == "timeout"
            # Not JSON, though Python's json reads it: refused, never echoed.
            for raw in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
                await client.send_raw(b'{"id": 8, "op": "echo", "params": %s}\n' % raw)
                assert (await client.receive())["error"]["code"] == "bad_json"
            # Refused as HTTP's /slow refuses them, before any session.
            for seconds in (-1, 601, "1", 10**100):
                answer = await client.call(
                    {"id": 9, "op": "sleep", "params": {"seconds": seconds}}
                )
                assert answer["error"]["code"] == "bad_request"
                assert "seconds must be" in answer["error"]["message"]

            holder = await LineClient.connect(server.port)
            await holder.send({"id": 6, "op": "sleep", "params": {"seconds": 0.5}})
            await wait_until(lambda: tcp_stats(server.port), lambda s: s["active"] == 1)
            answer = await client.call({"id": 7, "op": "echo"})
            assert answer["error"] == {
                "code": "capacity",
                "message": "Maximum concurrent sessions reached",
            }
            assert await holder.receive() == {"id": 6, "result": {"slept": 0.5}}
            await holder.aclose()
            await client.aclose()

            stats = await tcp_stats(server.port)
            assert stats["created"] == stats["completed"] == 4
            assert (stats["succeeded"], stats["failed"], stats["timed_out"]) == (
                2,
                1,
                1,
            )
            assert stats["rejections"]["capacity"] == 1
            assert stats["active"] == stats["metadata_bytes"] == 0


async def test_tcp_example_disconnect_and_storm(tmp_path: Path) -> None:
    """A vanished client's session is cancelled; 1,000 connections leave nothing."""
    with trio.fail_after(60):
        async with run_example(
            "tcp_json_server", tmp_path, "--max-sessions=100"
        ) as server:
            leaver = await LineClient.connect(server.port)
            await leaver.send({"id": 1, "op": "sleep", "params": {"seconds": 60}})
            await wait_until(lambda: tcp_stats(server.port), lambda s: s["active"] == 1)
            await leaver.aclose()
            stats = await wait_until(
                lambda: tcp_stats(server.port), lambda s: s["active"] == 0
            )
            assert stats["cancelled"] == 1

            answers: list[dict[str, Any]] = []
            go = trio.Event()

            async def one(index: int) -> None:
                client = await LineClient.connect(server.port)
                await go.wait()
                answers.append(
                    await client.call(
                        {"id": index, "op": "sleep", "params": {"seconds": 0.5}}
                    )
                )
                await client.aclose()

            async with trio.open_nursery() as nursery:
                for index in range(1000):
                    nursery.start_soon(one, index)
                await trio.testing.wait_all_tasks_blocked()
                go.set()
            ok = sum("result" in answer for answer in answers)
            refused = sum(
                answer.get("error", {}).get("code") == "capacity" for answer in answers
            )
            assert ok + refused == 1000
            assert ok >= 100
            assert refused > 0
            stats = await tcp_stats(server.port)
            assert stats["active"] == stats["metadata_bytes"] == stats["waiting"] == 0
            assert stats["created"] == stats["completed"] == 1 + ok
            assert stats["succeeded"] == ok
            assert stats["rejections"]["capacity"] == stats["rejected"] == refused
            assert stats["peak_active"] == 100


async def test_tcp_example_half_close_still_gets_its_answers(tmp_path: Path) -> None:
    """A client that shuts down its sending side still reads every answer.

    As ``printf ... | nc -q 1`` does: the requests, then ``shutdown(SHUT_WR)``,
    then reading to the end. Only a client that can no longer read (one that
    closed its socket, as test_tcp_example_disconnect_and_storm checks) has
    its session cancelled.
    """
    with trio.fail_after(60):
        async with run_example("tcp_json_server", tmp_path) as server:

            async def half_close(index: int) -> list[dict[str, Any]]:
                sock = trio.socket.socket()
                with sock:
                    await sock.connect(("127.0.0.1", server.port))
                    lines = [
                        {"id": index, "op": "sleep", "params": {"seconds": 0.3}},
                        {"id": -index, "op": "echo", "params": index},
                    ]
                    await sock.send(
                        b"".join(json.dumps(x).encode() + b"\n" for x in lines)
                    )
                    sock.shutdown(socket.SHUT_WR)
                    data = b""
                    while chunk := await sock.recv(65_536):
                        data += chunk
                return [json.loads(line) for line in data.splitlines()]

            answers: dict[int, list[dict[str, Any]]] = {}

            async def one(index: int) -> None:
                answers[index] = await half_close(index)

            async with trio.open_nursery() as nursery:
                for index in range(1, 6):
                    nursery.start_soon(one, index)
            for index, got in answers.items():
                assert got == [
                    {"id": index, "result": {"slept": 0.3}},
                    {"id": -index, "result": index},
                ]
            stats = await tcp_stats(server.port)
            assert (stats["succeeded"], stats["cancelled"]) == (10, 0)


async def test_tcp_example_sigint_drains(tmp_path: Path) -> None:
    """On SIGINT the in-flight request finishes, a new one is refused, exit 0."""
    with trio.fail_after(60):
        async with run_example("tcp_json_server", tmp_path) as server:
            busy = await LineClient.connect(server.port)
            await busy.send({"id": 1, "op": "sleep", "params": {"seconds": 1}})
            await wait_until(lambda: tcp_stats(server.port), lambda s: s["active"] == 1)
            server.signal(signal.SIGINT)
            assert await server.readline() == "received SIGINT, draining"
            late = await LineClient.connect(server.port)
            answer = await late.call({"id": 2, "op": "echo"})
            assert answer["error"]["code"] == "shutting_down"
            assert await busy.receive() == {"id": 1, "result": {"slept": 1}}
            status, _ = await server.wait_exit()
            assert status == 0
            report = server.report()
            assert report["initial_active"] == report["completed"] == 1
            assert report["cancelled"] == 0
            assert server.final_statistics()["rejections"]["shutting_down"] == 1
            await busy.aclose()
            await late.aclose()


# ----------------------------------------------------------- WebSocket example


def rpc(request_id: int, tool: str, **arguments: Any) -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments},
        }
    )


async def test_websocket_example_json_rpc(tmp_path: Path) -> None:
    """JSON-RPC calls succeed, fail, time out and are refused with JSON-RPC errors."""
    with trio.fail_after(60):
        async with (
            run_example(
                "websocket_server",
                tmp_path,
                "--max-sessions=1",
                "--request-timeout=1",
                "--max-message-bytes=4096",
            ) as server,
            open_websocket(server.port) as ws,
        ):

            async def call(message: str) -> dict[str, Any]:
                await ws.send_message(message)
                answer: dict[str, Any] = json.loads(await ws.get_message())
                return answer

            answer = await call(rpc(1, "echo", text="hi"))
            assert answer["id"] == 1
            assert answer["result"]["structuredContent"] == {"text": "hi"}
            assert (await call("{nope"))["error"]["code"] == -32700
            assert (await call('{"id": 2}'))["error"]["code"] == -32600
            answer = await call('{"jsonrpc": "2.0", "id": 3, "method": "x/y"}')
            assert answer["error"]["code"] == -32601
            answer = await call(
                '{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": 5}'
            )
            assert answer["error"]["code"] == -32602
            assert (await call(rpc(5, "fail")))["result"]["isError"] is True
            assert (await call(rpc(6, "sleep", seconds=9)))["error"]["code"] == -32004

            # Two calls at once on one connection, capacity 1: one is refused.
            await ws.send_message(rpc(7, "sleep", seconds=0.5))
            await ws.send_message(rpc(8, "echo"))
            first = json.loads(await ws.get_message())
            second = json.loads(await ws.get_message())
            assert first["id"] == 8
            assert first["error"]["code"] == -32001
            assert first["error"]["data"] == {"reason": "capacity"}
            assert second["id"] == 7
            assert "result" in second

            stats = (await call('{"jsonrpc":"2.0","id":9,"method":"server/stats"}'))[
                "result"
            ]
            assert stats["created"] == stats["completed"] == 4
            assert stats["succeeded"] == 2
            assert stats["failed"] == stats["timed_out"] == 1
            assert stats["rejections"]["capacity"] == 1
            assert stats["active"] == stats["metadata_bytes"] == 0

            # Not JSON, though Python's json reads it: a parse error.
            for raw in ("NaN", "Infinity", "-Infinity", "1e400"):
                answer = await call(rpc(10, "echo", x=0).replace("0}", raw + "}"))
                assert (answer["id"], answer["error"]["code"]) == (None, -32700)
            answer = await call(rpc(11, "sleep", seconds=-1))
            assert (answer["id"], answer["error"]["code"]) == (11, -32602)
            # Only a string, a number or null is an id.
            for bad_id in ('{"a": 1}', "[1]", "true"):
                answer = await call(
                    f'{{"jsonrpc": "2.0", "id": {bad_id}, "method": "tools/list"}}'
                )
                assert (answer["id"], answer["error"]["code"]) == (None, -32600)

            # Batches (JSON-RPC 2.0 section 6): an answer per call, none for
            # notifications; an empty batch is one Invalid Request.
            listing = {"jsonrpc": "2.0", "method": "tools/list"}
            batch = [
                {**listing, "id": "a"},
                listing,  # a notification
                {**listing, "id": {"no": 1}},
                1,
                {**listing, "id": 7, "method": "x/y"},
            ]
            answers = await call(json.dumps(batch))
            assert isinstance(answers, list)
            # Answers may come in any order; each call is answered once.
            got = sorted(
                (repr(a["id"]), a.get("error", {}).get("code")) for a in answers
            )
            assert got == [("'a'", None), ("7", -32601)] + [("None", -32600)] * 2
            assert next(a for a in answers if a["id"] == "a")["result"]["tools"]
            answer = await call("[]")
            assert (answer["id"], answer["error"]["code"]) == (None, -32600)
            # A batch of notifications only gets no answer at all: the next
            # message's answer is the next one to come.
            await ws.send_message(json.dumps([listing, listing]))
            answer = await call('{"jsonrpc": "2.0", "id": 12, "method": "tools/list"}')
            assert answer["id"] == 12

            await ws.send_message("x" * 5000)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1009


async def test_websocket_example_disconnect_and_sigterm(tmp_path: Path) -> None:
    """Leaving cancels a call; on SIGTERM in-flight calls end, new ones are refused."""
    with trio.fail_after(60):
        async with run_example("websocket_server", tmp_path) as server:

            async def stats() -> dict[str, Any]:
                async with open_websocket(server.port) as ws:
                    await ws.send_message(
                        '{"jsonrpc": "2.0", "id": 0, "method": "server/stats"}'
                    )
                    result: dict[str, Any] = json.loads(await ws.get_message())[
                        "result"
                    ]
                    return result

            async with open_websocket(server.port) as ws:
                await ws.send_message(rpc(1, "sleep", seconds=60))
                await wait_until(stats, lambda s: s["active"] == 1)
            assert (await wait_until(stats, lambda s: s["active"] == 0))[
                "cancelled"
            ] == 1

            async with open_websocket(server.port) as ws:
                await ws.send_message(rpc(2, "sleep", seconds=1))
                await wait_until(stats, lambda s: s["active"] == 1)
                server.signal(signal.SIGTERM)
                assert await server.readline() == "received SIGTERM, draining"
                await ws.send_message(rpc(3, "echo"))
                refused = json.loads(await ws.get_message())
                assert (refused["id"], refused["error"]["code"]) == (3, -32002)
                finished = json.loads(await ws.get_message())
                assert finished["id"] == 2
                assert finished["result"]["structuredContent"] == {"slept": 1}
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1001
            status, _ = await server.wait_exit()
            assert status == 0
            assert server.report()["completed"] == 1
            assert server.final_statistics()["rejections"]["shutting_down"] == 1


# ------------------------------------------------------ trio-sessions serve


async def test_serve_subcommand_serves_and_drains(tmp_path: Path) -> None:
    """The serve subcommand's app answers, exposes /metrics and exits 0 on SIGTERM."""
    code = (
        "import argparse, sys\n"
        "from trio_sessions._cli._serve import configure_parser, run\n"
        "parser = argparse.ArgumentParser()\n"
        "configure_parser(parser)\n"
        "sys.exit(run(parser.parse_args()))\n"
    )
    with trio.fail_after(60):
        async with (
            run_server(
                ["-c", code, "--max-sessions=3", "--request-timeout=none"], tmp_path
            ) as server,
            http_client(server.port) as client,
        ):
            assert (await client.get("/")).text == "hello\n"
            values = await scrape(client)
            assert metric(values, "trio_sessions_max_sessions") == 3
            assert (
                metric(values, "trio_sessions_completed_total", outcome="success") == 1
            )
            server.signal(signal.SIGTERM)
            status, _ = await server.wait_exit()
            assert status == 0
            assert server.final_statistics()["succeeded"] == 1


def test_serve_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid capacity is a usage error (status 2) naming the option."""
    parser = argparse.ArgumentParser()
    _serve.configure_parser(parser)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--max-sessions", "0"])
    assert exited.value.code == 2
    assert "--max-sessions: must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--request-timeout", "soon"])
