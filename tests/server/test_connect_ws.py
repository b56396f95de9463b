"""The /connect WebSocket protocol with raw frames, in every encoding, and bad input on sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import pytest
import websockets

import rivetkit
from rivetkit import ActionContext, ActorContext, UserError
from rivetkit._protocol import get_codec
from rivetkit._protocol.messages import (
    ActionRequest,
    ActionResponse,
    Error,
    Event,
    Init,
    SubscriptionRequest,
)

pytestmark = pytest.mark.anyio

ENCODINGS = ["json", "cbor", "bare"]


def make_chat(log: list[str]) -> rivetkit.ActorDefinition:
    chat = rivetkit.actor(
        "chat",
        state={"count": 0, "disconnected": 0},
        events={
            "count": rivetkit.event(int),
            "secret": rivetkit.event(
                str, can_subscribe=lambda c: bool(c.conn.params and c.conn.params.get("admin"))
            ),
        },
        conn_state={"hits": 0},
        vars={"next": 9},
    )

    @chat.on_before_connect
    def before(c: ActorContext, params: Any) -> None:
        if isinstance(params, dict) and params.get("reject"):
            raise UserError("connection rejected", code="rejected", metadata={"why": "test"})

    @chat.on_connect
    def on_connect(c: ActorContext, conn: rivetkit.Conn) -> None:
        log.append(f"connect:{len(c.conns)}")

    @chat.on_disconnect
    def on_disconnect(c: ActorContext, conn: rivetkit.Conn) -> None:
        log.append("disconnect")
        c.state["disconnected"] += 1

    @chat.action
    def increment(c: ActionContext, amount: int) -> int:
        c.state["count"] += amount
        c.conn.state["hits"] += 1
        c.broadcast("count", c.state["count"])
        return c.state["count"]

    @chat.action
    async def countdown(c: ActionContext, tag: int) -> int:
        # Completes only after every higher tag: forces responses out of request order.
        while c.vars["next"] != tag:
            await asyncio.sleep(0.001)
        c.vars["next"] = tag - 1
        return tag

    @chat.action
    def whisper(c: ActionContext, text: str) -> None:
        c.conn.send("secret", text)

    @chat.action
    def kick(c: ActionContext) -> None:
        c.conn.disconnect("kicked")

    @chat.action
    def fail(c: ActionContext) -> None:
        raise UserError("boom happened", code="my_code", metadata={"a": 1})

    @chat.action
    def big(c: ActionContext, size: int) -> str:
        return "x" * size

    @chat.action
    def info(c: ActionContext) -> Any:
        return {"conns": len(c.conns), "hits": c.conn.state["hits"], "params": c.conn.params,
                "disconnected": c.state["disconnected"]}

    return chat


def ws_url(base: str, key: str = "k") -> str:
    return (base.replace("http://", "ws://") + "/gateway/chat/connect?rvt-namespace=default"
            "&rvt-method=getOrCreate&rvt-runner=default&rvt-key=" + key)


def protocols(encoding: str, params: Any = None) -> list[str]:
    out = ["rivet", f"rivet_encoding.{encoding}"]
    if params is not None:
        out.append("rivet_conn_params." + quote(json.dumps(params), safe=""))
    return out


class Client:
    def __init__(self, ws: Any, encoding: str) -> None:
        self.ws = ws
        self.codec = get_codec(encoding)  # type: ignore[arg-type]

    async def send(self, msg: Any) -> None:
        await self.ws.send(self.codec.encode_to_server(msg))

    async def recv(self) -> Any:
        return self.codec.decode_to_client(await asyncio.wait_for(self.ws.recv(), 5))


async def connect(url: str, encoding: str, params: Any = None) -> tuple[Any, Client, Init]:
    ws = await websockets.connect(url, subprotocols=protocols(encoding, params))  # type: ignore[arg-type]
    client = Client(ws, encoding)
    init = await client.recv()
    assert isinstance(init, Init)
    return ws, client, init


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_actions_events_and_subscriptions(serve_registry: Any, encoding: str) -> None:
    log: list[str] = []
    async with serve_registry(make_chat(log)) as served:
        url = ws_url(served.url, f"ev-{encoding}")
        ws, a, init = await connect(url, encoding)
        ws2, b, init2 = await connect(url, encoding)
        assert ws.subprotocol == "rivet"
        assert init.actor_id == init2.actor_id and init.connection_id != init2.connection_id
        await a.send(SubscriptionRequest("count", True))
        await a.send(ActionRequest(0, "increment", [5]))
        event = await a.recv()
        assert event == Event("count", [5])
        assert await a.recv() == ActionResponse(0, 5)
        # b is not subscribed: its first frame is its own action's response.
        await b.send(ActionRequest(7, "increment", [1]))
        assert await b.recv() == ActionResponse(7, 6)
        assert await a.recv() == Event("count", [6])
        await a.send(SubscriptionRequest("count", False))
        await a.send(ActionRequest(1, "increment", [1]))
        assert await a.recv() == ActionResponse(1, 7)
        await a.send(ActionRequest(2, "info", []))
        info = await a.recv()
        assert info.output == {"conns": 2, "hits": 2, "params": None, "disconnected": 0}
        await ws2.close()
        await ws.close()
    assert log.count("disconnect") == 2 and log[:2] == ["connect:1", "connect:2"]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_concurrent_actions_complete_out_of_order(serve_registry: Any, encoding: str) -> None:
    async with serve_registry(make_chat([])) as served:
        ws, client, _ = await connect(ws_url(served.url), encoding)
        for i in range(10):
            await client.send(ActionRequest(100 + i, "countdown", [i]))
        responses = [await client.recv() for _ in range(10)]
        assert [r.id for r in responses] == [109 - i for i in range(10)]
        assert all(r.output == r.id - 100 for r in responses)
        await ws.close()


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_errors_keep_the_connection_usable(serve_registry: Any, encoding: str) -> None:
    async with serve_registry(make_chat([]), max_outgoing_message_size=4096) as served:
        ws, client, init = await connect(ws_url(served.url), encoding)
        await client.send(ActionRequest(1, "fail", []))
        err = await client.recv()
        assert isinstance(err, Error)
        assert (err.group, err.code, err.message, err.metadata, err.action_id) == (
            "user", "my_code", "boom happened", {"a": 1}, 1)
        assert err.actor is not None and err.actor.actor_id == init.actor_id
        await client.send(ActionRequest(2, "nope", []))
        assert (await client.recv()).code == "action_not_found"
        await client.send(ActionRequest(3, "big", [10_000]))
        too_big = await client.recv()
        assert (too_big.group, too_big.code, too_big.action_id) == ("message", "outgoing_too_long", 3)
        await client.send(ActionRequest(4, "increment", [1]))
        assert (await client.recv()).output == 1
        await ws.close()


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_rejected_connection(serve_registry: Any, encoding: str) -> None:
    async with serve_registry(make_chat([])) as served:
        ws = await websockets.connect(ws_url(served.url), subprotocols=protocols(encoding, {"reject": True}))  # type: ignore[arg-type]
        client = Client(ws, encoding)
        err = await client.recv()
        assert isinstance(err, Error) and err.action_id is None
        assert (err.group, err.code, err.metadata) == ("user", "rejected", {"why": "test"})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "user.rejected")


async def test_subscription_rules(serve_registry: Any) -> None:
    async with serve_registry(make_chat([])) as served:
        url = ws_url(served.url)
        admin_ws, admin, _ = await connect(url, "json", {"admin": True})
        await admin.send(SubscriptionRequest("secret", True))
        await admin.send(ActionRequest(1, "whisper", ["psst"]))
        assert await admin.recv() == Event("secret", ["psst"])
        assert (await admin.recv()).id == 1
        for event, reason in (("secret", "auth.forbidden"), ("undeclared", "actor.event_not_declared")):
            ws, client, _ = await connect(url, "json", {"admin": False})
            await client.send(SubscriptionRequest(event, True))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await client.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, reason)
        # The admin connection was not disturbed.
        await admin.send(ActionRequest(2, "increment", [1]))
        assert (await admin.recv()).output == 1
        await admin_ws.close()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json at all", "actor.invalid_request"),
        ('{"body":{"tag":"Mystery","val":{}}}', "actor.invalid_request"),
        (b"\x04\x00\x09", "actor.invalid_request"),
        ("x" * 70_000, "message.incoming_too_long"),
    ],
)
async def test_bad_frames_close_with_codes(serve_registry: Any, frame: Any, reason: str) -> None:
    async with serve_registry(make_chat([])) as served:
        url = ws_url(served.url)
        other_ws, other, _ = await connect(url, "json")
        ws, client, _ = await connect(url, "json")
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, reason)
        await other.send(ActionRequest(1, "increment", [2]))
        assert (await other.recv()).output == 2
        await other_ws.close()


async def test_unknown_encoding_and_missing_actor(serve_registry: Any) -> None:
    async with serve_registry(make_chat([])) as served:
        ws = await websockets.connect(ws_url(served.url), subprotocols=["rivet", "rivet_encoding.xml"])  # type: ignore[list-item]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1003, "actor.unsupported_websocket_encoding")
        missing = (served.url.replace("http", "ws") + "/gateway/chat/connect?rvt-namespace=default"
                   "&rvt-method=get&rvt-key=missing")
        ws = await websockets.connect(missing, subprotocols=["rivet"])  # type: ignore[list-item]
        assert ws.subprotocol == "rivet"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1011, "actor.not_found")


async def test_server_disconnect_and_on_disconnect(serve_registry: Any) -> None:
    log: list[str] = []
    async with serve_registry(make_chat(log)) as served:
        url = ws_url(served.url)
        ws, client, _ = await connect(url, "bare")
        await client.send(ActionRequest(1, "kick", []))
        assert (await client.recv()).id == 1
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "kicked")
        ws2, client2, _ = await connect(url, "bare")
        await client2.send(ActionRequest(2, "info", []))
        info = (await client2.recv()).output
        assert info["conns"] == 1 and info["disconnected"] == 1
        await ws2.close()


async def test_shutdown_closes_with_going_away(tmp_path: Any) -> None:
    registry = rivetkit.setup(make_chat([]), storage_path=tmp_path)
    from tests._proc import free_port

    port = free_port()
    task = asyncio.ensure_future(registry.serve(port=port))
    for _ in range(500):
        try:
            ws, client, _ = await connect(ws_url(f"http://127.0.0.1:{port}"), "json")
            break
        except OSError:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1001, "ws.going_away")
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_skip_ready_wait_subprotocol_addressing(serve_registry: Any) -> None:
    async with serve_registry(make_chat([])) as served:
        _, client, init = await connect(ws_url(served.url), "json")
        ws = await websockets.connect(
            served.url.replace("http", "ws") + "/connect",
            subprotocols=["rivet", "rivet_encoding.json", "rivet_target.actor",  # type: ignore[list-item]
                          f"rivet_actor.{init.actor_id}", "rivet_token.secret",
                          "rivet_skip_ready_wait"],
        )
        direct = Client(ws, "json")
        second = await direct.recv()
        assert isinstance(second, Init) and second.actor_id == init.actor_id
        await ws.close()


async def test_connect_hook_timeout_rejects_connection(serve_registry: Any) -> None:
    slow = rivetkit.actor("slow", options=rivetkit.ActorOptions(on_before_connect_timeout=0.05))

    @slow.on_before_connect
    async def before(c: ActorContext, params: Any) -> None:
        await asyncio.sleep(5)

    async with serve_registry(slow) as served:
        url = (served.url.replace("http", "ws") + "/gateway/slow/connect?rvt-namespace=default"
               "&rvt-method=getOrCreate&rvt-runner=default")
        ws = await websockets.connect(url, subprotocols=protocols("json"))  # type: ignore[arg-type]
        err = await Client(ws, "json").recv()
        assert isinstance(err, Error) and (err.group, err.code) == ("actor", "callback_timed_out")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "actor.callback_timed_out"


async def test_unresponsive_client_is_dropped_by_liveness_pings(serve_registry: Any) -> None:
    log: list[str] = []
    async with serve_registry(make_chat(log), ws_ping_interval=0.05, ws_ping_timeout=0.05) as served:
        # A raw client that completes the handshake, reads Init, then never answers a ping.
        host, port = "127.0.0.1", served.port
        reader, writer = await asyncio.open_connection(host, port)
        path = ("/gateway/chat/connect?rvt-namespace=default&rvt-method=getOrCreate"
                "&rvt-runner=default&rvt-key=live")
        writer.write(
            (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: rivet, rivet_encoding.json\r\n\r\n"
             ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        for _ in range(200):
            if "connect:1" in log:
                break
            await asyncio.sleep(0.01)
        assert log == ["connect:1"]
        for _ in range(300):
            if "disconnect" in log:
                break
            await asyncio.sleep(0.01)
        assert log == ["connect:1", "disconnect"]
        writer.close()
