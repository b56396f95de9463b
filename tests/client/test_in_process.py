"""The in-process client: ``Client(app=registry.asgi())`` calls the ASGI app in the test's own
event loop. The registry is started in the test and never served: the ``no_network`` guard makes
any socket connection or name lookup fail the test."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount
from starlette.websockets import WebSocket

import rivetkit
import rivetkit.client.sync
from rivetkit import ActionContext, ActorContext, UserError
from rivetkit.client import ActorError, Client
from tests.conftest import serve

pytestmark = pytest.mark.anyio

ENCODINGS = ("json", "cbor", "bare")
BIG_CHUNK = bytes(range(256)) * 256  # 64 KiB
BIG_CHUNKS = 48  # 3 MiB in all: more than the in-process body buffer (1 MiB)

# Rendezvous between the actors below and the tests (keyed by actor key).
WS_DISCONNECTS: dict[str, asyncio.Future[int]] = {}
HANG_STARTED: dict[str, asyncio.Future[None]] = {}
CLIENTS: dict[str, Client] = {}

# -- the actors --------------------------------------------------------------------------------

counter = rivetkit.actor(
    "counter",
    events={"count": rivetkit.event(int), "note": rivetkit.event(str)},
)


@counter.create_state
def _counter_state(c: ActorContext, input: Any) -> dict[str, Any]:
    return {"count": 0 if input is None else int(input["start"])}


@counter.on_before_connect
def _before_connect(c: ActorContext, params: Any) -> None:
    if isinstance(params, dict) and params.get("reject"):
        raise UserError("go away", code="rejected", metadata={"why": "test"})


@counter.action
def increment(c: ActionContext, amount: int) -> int:
    c.state["count"] += amount
    c.broadcast("count", c.state["count"])
    return int(c.state["count"])


@counter.action(name="getCount")
def get_count(c: ActionContext) -> int:
    return int(c.state["count"])


@counter.action
def echo(c: ActionContext, value: Any) -> Any:
    return value


@counter.action
def fail(c: ActionContext) -> None:
    raise UserError("not allowed", code="forbidden", metadata={"limit": 3})


@counter.action(name="failPlain")
def fail_plain(c: ActionContext) -> None:
    raise RuntimeError("secret internal detail")


@counter.action
def params(c: ActionContext) -> Any:
    assert c.conn is not None
    return c.conn.params


@counter.action
def whisper(c: ActionContext, text: str) -> None:
    assert c.conn is not None
    c.conn.send("note", text)


@counter.action
def burst(c: ActionContext, n: int) -> int:
    for i in range(n):
        c.broadcast("count", i)
    return n


@counter.action
def conns(c: ActionContext) -> int:
    return len(c.conns)


@counter.action
async def hang(c: ActionContext, tag: str) -> None:
    HANG_STARTED[tag].set_result(None)
    await asyncio.Event().wait()


@counter.on_request
async def _on_request(c: ActionContext, request: Request) -> Response:
    path = request.url.path
    if path == "/missing":
        return PlainTextResponse("nope", status_code=404)
    if path == "/sse":

        async def events() -> AsyncIterator[str]:
            for i in range(3):
                await asyncio.sleep(0)
                yield f"data: {i}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    if path == "/big":

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(BIG_CHUNKS):
                yield BIG_CHUNK

        return StreamingResponse(chunks(), media_type="application/octet-stream")
    body = await request.body()
    assert c.conn is not None
    return JSONResponse(
        {
            "method": request.method,
            "path": path,
            "query": dict(request.query_params),
            "body": body.decode(),
            "x_test": request.headers.get("x-test"),
            "params": c.conn.params,
        },
        status_code=201 if request.method == "POST" else 200,
        headers={"x-custom": "yes"},
    )


@counter.on_websocket
async def _on_websocket(c: ActionContext, websocket: WebSocket) -> None:
    assert c.conn is not None
    await websocket.send_text(
        json.dumps(
            {
                "path": websocket.url.path,
                "query": dict(websocket.query_params),
                "params": c.conn.params,
            }
        )
    )
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            waiter = WS_DISCONNECTS.get(c.key[0])
            if waiter is not None and not waiter.done():
                waiter.set_result(message["code"])
            return
        text = message.get("text")
        if text == "bye":
            await websocket.close(4001, "bye now")
            return
        if text is not None:
            await websocket.send_text("echo:" + text)
        else:
            await websocket.send_bytes(message["bytes"][::-1])


caller = rivetkit.actor("caller")


@caller.create_vars
def _caller_vars(c: ActorContext) -> dict[str, Any]:
    return {"client": CLIENTS["current"]}


@caller.action
async def relay(c: ActionContext, key: str, amount: int) -> int:
    client: Client = c.vars["client"]
    result: int = await client.get_or_create("counter", [key]).increment(amount)
    return result


@caller.action(name="relayConn")
async def relay_conn(c: ActionContext, key: str, amount: int) -> list[Any]:
    client: Client = c.vars["client"]
    async with client.get_or_create("counter", [key]).connect() as conn:
        seen: list[int] = []
        conn.on("count", seen.append)
        value = await conn.increment(amount)
        return [value, seen]


@caller.action(name="relayFail")
async def relay_fail(c: ActionContext, key: str) -> str:
    client: Client = c.vars["client"]
    try:
        await client.get_or_create("counter", [key]).fail()
    except ActorError as err:
        return f"{err.full_code} {err.metadata}"
    return "no error"


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test on any outgoing connection or name lookup."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the in-process client touched the network: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _in_process_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("rivetkit-in-process")]


@pytest.fixture
async def registry(tmp_path: Path, no_network: None) -> AsyncIterator[rivetkit.Registry]:
    registry = rivetkit.setup(counter, caller, storage_path=tmp_path / "storage")
    await registry.start()
    try:
        yield registry
    finally:
        # Every test closes its clients: nothing they started may still run.
        assert _in_process_tasks() == []
        await registry.stop()


# -- actions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_actions(registry: rivetkit.Registry, encoding: Any) -> None:
    async with Client(app=registry.asgi(), encoding=encoding) as client:
        assert repr(client).endswith("in-process>")
        handle = client.get_or_create("counter", ["actions", encoding], input={"start": 10})
        assert await handle.increment(1) == 11
        assert await handle.action("increment", 2) == 13
        value = {"bytes": b"\x00\xff", "big": 2**70, "list": [1.5, None, True], "text": "ü"}
        assert await handle.echo(value) == value
        # The actor really is the one the registry hosts.
        actor_id = await handle.resolve()
        assert registry.driver.awake[actor_id].key == ("actions", encoding)


async def test_errors(registry: rivetkit.Registry) -> None:
    async with Client(app=registry.asgi()) as client:
        client._retry_delay = 0
        handle = client.get_or_create("counter", ["errors"])
        with pytest.raises(ActorError) as info:
            await handle.fail()
        err = info.value
        assert (err.group, err.code, err.message) == ("user", "forbidden", "not allowed")
        assert err.metadata == {"limit": 3}
        with pytest.raises(ActorError) as info:
            await handle.action("nope")
        assert info.value.full_code == "actor.action_not_found"
        with pytest.raises(ActorError) as info:
            await handle.action("failPlain")
        assert info.value.full_code == "rivetkit.internal_error"
        assert "secret" not in info.value.message
        with pytest.raises(ActorError) as info:
            await client.get("counter", ["missing"]).getCount()
        assert info.value.full_code == "actor.not_found"
        with pytest.raises(ActorError) as info:
            await client.get_or_create("no-such-actor").getCount()
        assert info.value.group in ("actor", "guard")


async def test_handles(registry: rivetkit.Registry) -> None:
    async with Client(app=registry.asgi()) as client:
        created = await client.create("counter", ["handles"], input={"start": 5})
        assert created.actor_id is not None
        with pytest.raises(ActorError) as info:
            await client.create("counter", ["handles"])
        assert info.value.full_code == "actor.duplicate_key"
        assert await created.increment(1) == 6
        by_id = client.get_for_id("counter", created.actor_id)
        assert await by_id.getCount() == 6
        got = client.get("counter", ["handles"])
        assert await got.increment(1) == 7
        assert await got.resolve() == created.actor_id
        assert await client.get_or_create("counter", ["handles"]).resolve() == created.actor_id


async def test_prefixed_mount(registry: rivetkit.Registry) -> None:
    host = Starlette(routes=[Mount("/api/rivet", app=registry.asgi())])
    async with Client("http://app.internal/api/rivet", app=host) as client:
        handle = client.get_or_create("counter", ["prefixed"], params={"p": 2})
        assert await handle.increment(3) == 3
        assert handle.gateway_url().startswith("http://app.internal/api/rivet/gateway/counter?")
        response = await handle.fetch("/x")
        assert (await response.json())["params"] == {"p": 2}
        async with handle.connect() as conn:
            assert await conn.increment(1) == 4
        ws = await handle.websocket("/w")
        try:
            assert json.loads(await ws.recv())["path"] == "/websocket/w"
        finally:
            await ws.close()


# -- connections -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_connection_events(registry: rivetkit.Registry, encoding: Any) -> None:
    async with Client(app=registry.asgi(), encoding=encoding) as client:
        handle = client.get_or_create("counter", ["conn", encoding], params={"name": "a"})
        async with handle.connect() as conn:
            seen: list[int] = []
            conn.on("count", seen.append)
            async with conn.events("note") as notes:
                assert await conn.params() == {"name": "a"}
                assert await conn.increment(2) == 2
                assert seen == [2]  # the event leaves before the action's answer
                await conn.whisper("psst")
                assert await anext(notes) == "psst"
            assert conn.status.value == "connected" and conn.actor_id == await handle.resolve()
            # More frames than either direction buffers: back-pressure, nothing lost.
            async with conn.events("count") as counts:
                assert await conn.burst(300) == 300
                assert [await anext(counts) for _ in range(300)] == list(range(300))
            with pytest.raises(ActorError) as info:
                await conn.fail()
            assert info.value.full_code == "user.forbidden"
            assert await conn.action("getCount") == 2  # still usable after an error


async def test_connection_rejected(registry: rivetkit.Registry) -> None:
    async with Client(app=registry.asgi()) as client:
        conn = client.get_or_create("counter", ["rejected"]).connect({"reject": True})
        with pytest.raises(ActorError) as info:
            await conn.wait_connected(5)
        assert info.value.full_code == "user.rejected"
        assert info.value.metadata == {"why": "test"}
        assert conn.status.value == "idle" and conn.error is info.value


# -- raw fetch and websocket -------------------------------------------------------------------


async def test_fetch(registry: rivetkit.Registry) -> None:
    async with Client(app=registry.asgi()) as client:
        handle = client.get_or_create("counter", ["fetch"], params={"p": 1})
        response = await handle.fetch("/hello?x=1", headers={"x-test": "yes"})
        assert (response.status, response.reason, response.ok) == (200, "OK", True)
        assert response.headers["x-custom"] == "yes"
        assert response.headers["x-rivet-actor"] == await handle.resolve()
        assert await response.json() == {
            "method": "GET",
            "path": "/hello",
            "query": {"x": "1"},
            "body": "",
            "x_test": "yes",
            "params": {"p": 1},
        }
        posted = await handle.fetch("echo", method="POST", body="payload ü")
        assert posted.status == 201 and (await posted.json())["body"] == "payload ü"
        missing = await handle.fetch("/missing")
        assert (missing.status, missing.ok, await missing.text()) == (404, False, "nope")
        direct = await client.get_for_id("counter", await handle.resolve()).fetch("/d")
        assert (await direct.json())["path"] == "/d"


async def test_fetch_streamed_responses(registry: rivetkit.Registry) -> None:
    async with Client(app=registry.asgi()) as client:
        handle = client.get_or_create("counter", ["stream"])
        sse = await handle.fetch("/sse")
        assert sse.headers["content-type"].startswith("text/event-stream")
        assert await sse.text() == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
        big = await handle.fetch("/big")
        assert big.content == BIG_CHUNK * BIG_CHUNKS


async def test_websocket(registry: rivetkit.Registry) -> None:
    async with Client(app=registry.asgi()) as client:
        handle = client.get_or_create("counter", ["ws"], params={"p": "x"})
        ws = await handle.websocket("room/1?r=2")
        assert ws.subprotocol == "rivet"
        assert ws.response is not None and ws.response.status_code == 101
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "rivet"
        hello = json.loads(await ws.recv())
        assert hello == {"path": "/websocket/room/1", "query": {"r": "2"}, "params": {"p": "x"}}
        await ws.send("hi")
        assert await ws.recv() == "echo:hi"
        await ws.send(b"\x01\x02\x03")
        assert await ws.recv() == b"\x03\x02\x01"
        await ws.send("bye")
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye now")
        assert (ws.close_code, ws.close_reason) == (4001, "bye now")
        with pytest.raises(websockets.ConnectionClosed):
            await ws.send("late")

        # The client closes: the handler sees the code; iteration ends quietly.
        WS_DISCONNECTS["ws"] = asyncio.get_running_loop().create_future()
        ws = await handle.websocket()
        await ws.recv()
        await ws.close(1000, "done")
        assert await asyncio.wait_for(WS_DISCONNECTS["ws"], 5) == 1000
        assert [message async for message in ws] == []
        await ws.wait_closed()
        assert ws.close_code == 1000


async def test_aclose_cleans_up(registry: rivetkit.Registry) -> None:
    loop = asyncio.get_running_loop()
    client = Client(app=registry.asgi())
    client._transport._close_grace = 0.2  # type: ignore[attr-defined]
    handle = client.get_or_create("counter", ["cleanup"])
    conn = handle.connect()
    await conn.wait_connected(5)
    WS_DISCONNECTS["cleanup"] = loop.create_future()
    ws = await handle.websocket()
    await ws.recv()
    HANG_STARTED["kept"] = loop.create_future()
    hanging = asyncio.ensure_future(handle.hang("kept"))
    await asyncio.wait_for(HANG_STARTED["kept"], 5)
    # A caller that gives up leaves the action running in the actor, as over the network.
    HANG_STARTED["abandoned"] = loop.create_future()
    abandoned = asyncio.ensure_future(handle.hang("abandoned"))
    await asyncio.wait_for(HANG_STARTED["abandoned"], 5)
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert await handle.conns() == 5  # conn, websocket, two hanging actions, this call

    await client.aclose()

    assert _in_process_tasks() == []
    assert conn.is_disposed
    assert ws.close_code == 1001
    assert WS_DISCONNECTS["cleanup"].result() == 1001
    with pytest.raises(ActorError) as info:
        await hanging
    assert info.value.full_code == "client.network_error"
    with pytest.raises(RuntimeError, match="closed"):
        await handle.getCount()
    # The actor is fine and every connection the closed client held is gone.
    async with Client(app=registry.asgi()) as other:
        assert await other.get_or_create("counter", ["cleanup"]).conns() == 1


# -- actor to actor ----------------------------------------------------------------------------


async def test_actor_calls_actor_in_process(registry: rivetkit.Registry) -> None:
    async with Client(app=registry.asgi()) as inner, Client(app=registry.asgi()) as outer:
        CLIENTS["current"] = inner
        try:
            proxy = outer.get_or_create("caller", ["c"])
            assert await proxy.relay("target", 3) == 3
            assert await proxy.relayConn("target", 5) == [8, [8]]
            assert await proxy.relayFail("target") == "user.forbidden {'limit': 3}"
            assert await outer.get_or_create("counter", ["target"]).getCount() == 8
        finally:
            del CLIENTS["current"]


# -- same answers as over the network ----------------------------------------------------------


async def _misbehaving_app(scope: Any, receive: Any, send: Any) -> None:
    """Refuses upgrades and breaks responses in the ways a server can."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].replace("lifespan.", "")
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    path = scope["path"]
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        if path.endswith("/close"):
            await send({"type": "websocket.close", "code": 1000})
        elif path.endswith("/deny"):
            body = json.dumps({"group": "auth", "code": "denied", "message": "no"}).encode()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        elif path.endswith("/crash"):
            raise RuntimeError("crashed before accepting")
        return
    if path == "/metadata":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
    elif path.endswith("/crash"):
        raise RuntimeError("crashed before answering")
    elif path.endswith("/cut"):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("crashed while answering")


async def _failures(client: Client) -> list[Any]:
    handle = client.get_for_id("x", "id1")
    out: list[Any] = []
    for path in ("close", "deny", "crash"):
        try:
            ws = await handle.websocket(path)
        except ActorError as err:
            out.append(("ws", path, err.full_code, err.status))
        else:
            await ws.close()
            out.append(("ws", path, "accepted"))
    crash = await handle.fetch("crash")
    out.append(("fetch", crash.status, await crash.text()))
    with pytest.raises(ActorError) as info:
        await handle.fetch("cut")
    out.append(("fetch cut", info.value.full_code))
    return out


async def test_failures_match_the_network() -> None:
    async with serve(_misbehaving_app) as served, Client(served.url) as network:
        expected = await _failures(network)
    assert expected == [
        ("ws", "close", "client.http_error", 403),
        ("ws", "deny", "auth.denied", 401),
        ("ws", "crash", "client.http_error", 500),
        ("fetch", 500, "Internal Server Error"),
        ("fetch cut", "client.network_error"),
    ]
    async with Client(app=_misbehaving_app) as in_process:
        assert await _failures(in_process) == expected
    assert _in_process_tasks() == []


def test_sync_client_refuses_app() -> None:
    with pytest.raises(TypeError, match=r"app="):
        rivetkit.client.sync.Client(app=_misbehaving_app)  # type: ignore[arg-type]
