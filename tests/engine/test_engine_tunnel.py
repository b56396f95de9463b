"""The engine tunnel against the registry's real ASGI app, with no engine.

The test plays the gateway: it numbers messages per request as the engine does, passes every
message both ways through the real envoy v8 codec (so what the tunnel emits is known to encode),
and asserts on the ``ToRivetTunnelMessage`` values the tunnel queued. Actors run in a real
registry with local storage in ``tmp_path``, created through the app's own management API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocket

import rivetkit
from rivetkit import ActionContext
from rivetkit._protocol import envoy as p
from rivetkit._protocol import get_codec
from rivetkit._protocol.messages import (
    ActionRequest,
    ActionResponse,
    Event,
    Init,
    SubscriptionRequest,
)
from rivetkit._runtime.conn import (
    HIBERNATE_REASON,
    MESSAGE_INDEX_KEY,
    TUNNEL_EXTENSION,
    Hibernation,
)
from rivetkit.drivers.engine.tunnel import Tunnel, TunnelWebSocket

pytestmark = pytest.mark.anyio

Kind = Any  # one of the ToRivetTunnelMessageKind classes


# -- actors ---------------------------------------------------------------------------------


def make_actors(log: list[str]) -> list[rivetkit.ActorDefinition]:
    counter = rivetkit.actor(
        "counter",
        state={"count": 0},
        events={"count": rivetkit.event(int)},
        queues={"jobs": rivetkit.queue(dict)},
    )

    @counter.action
    def increment(c: ActionContext, amount: int) -> int:
        c.state["count"] += amount
        c.broadcast("count", c.state["count"])
        return int(c.state["count"])

    @counter.action
    def echo(c: ActionContext, value: Any) -> Any:
        return value

    @counter.action
    async def take_job(c: ActionContext) -> Any:
        message = await c.queue.try_next("jobs")
        return None if message is None else message.body

    @counter.on_disconnect
    def on_disconnect(c: Any, conn: Any) -> None:
        log.append("disconnect")

    raw = rivetkit.actor("raw", state={"requests": 0})

    @raw.on_request
    async def on_request(c: ActionContext, request: Request) -> Any:
        c.state["requests"] += 1
        if request.url.path == "/hang":
            log.append("hang:start")
            try:
                await asyncio.Event().wait()
            finally:
                log.append("hang:cancelled")
        if request.url.path == "/forever":
            async def stream() -> AsyncIterator[bytes]:
                while True:
                    log.append("forever:chunk")
                    yield b"x" * 4096
                    await asyncio.sleep(0)

            return StreamingResponse(stream(), media_type="application/octet-stream")
        if request.url.path == "/head-only":
            return Response(status_code=204)
        if request.url.path == "/stream":
            size = int(request.query_params["size"])
            piece = int(request.query_params.get("piece", "65536"))

            async def pieces() -> AsyncIterator[bytes]:
                sent = 0
                while sent < size:
                    n = min(piece, size - sent)
                    log.append(f"stream:{sent + n}")
                    yield bytes([sent // piece % 251]) * n
                    sent += n
                if request.query_params.get("crash"):
                    raise RuntimeError("the stream broke")

            return StreamingResponse(pieces(), media_type="application/octet-stream")
        if request.url.path == "/big":
            return Response(b"b" * int(request.query_params["size"]),
                            media_type="application/octet-stream")
        if request.url.path == "/upload":
            log.append("upload:reading")
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "raw_path": request.scope["raw_path"].decode("latin-1"),
                "url": str(request.url),
                "query": dict(request.query_params),
                "body": body.decode(),
                "mine": request.headers.get("x-mine"),
                "client": list(request.client) if request.client else None,
                "count": c.state["requests"],
            },
            status_code=201,
            headers={"x-custom": "Yes"},
        )

    @raw.on_websocket
    async def on_websocket(c: ActionContext, websocket: WebSocket) -> None:
        await websocket.send_text(json.dumps({"path": websocket.url.path}))
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                log.append(f"raw:disconnect:{message.get('code')}")
                return
            if message.get("text") == "bye":
                await websocket.close(4001, "bye now")
                return
            if message.get("text") is not None:
                await websocket.send_text("echo:" + message["text"])
            else:
                await websocket.send_bytes(message["bytes"][::-1])

    return [counter, raw]


# -- the gateway's side ---------------------------------------------------------------------


class Gateway:
    """Plays the engine's gateway in front of a :class:`Tunnel`.

    Every message crosses the real envoy codec in both directions, as on the envoy socket.
    """

    def __init__(self, app: Any, running: Callable[[str], int | None], **options: Any) -> None:
        self.sent: list[p.ToRivetTunnelMessage] = []
        self.frame_sizes: list[int] = []
        self._changed = asyncio.Event()
        self.tunnel = Tunnel(app, self._receive, running, **options)
        self._next_id = 0

    def _receive(self, message: p.ToRivetTunnelMessage) -> None:
        frame = p.encode_to_rivet(message)
        decoded = p.decode_to_rivet(frame)
        assert isinstance(decoded, p.ToRivetTunnelMessage)
        self.sent.append(decoded)
        self.frame_sizes.append(len(frame))
        self._changed.set()

    def new_request(self) -> tuple[bytes, bytes]:
        self._next_id += 1
        return b"gw01", self._next_id.to_bytes(4, "big")

    def deliver(self, ids: tuple[bytes, bytes], index: int, kind: Any) -> None:
        message = p.ToEnvoyTunnelMessage(
            message_id=p.MessageId(gateway_id=ids[0], request_id=ids[1], message_index=index),
            message_kind=kind,
        )
        decoded = p.decode_to_envoy(p.encode_to_envoy(message))
        assert isinstance(decoded, p.ToEnvoyTunnelMessage)
        self.tunnel.on_message(decoded)

    def of(self, ids: tuple[bytes, bytes]) -> list[p.ToRivetTunnelMessage]:
        return [
            m for m in self.sent
            if (m.message_id.gateway_id, m.message_id.request_id) == ids
        ]

    def kinds(self, ids: tuple[bytes, bytes], cls: type | None = None) -> list[Any]:
        out = [m.message_kind for m in self.of(ids)]
        return out if cls is None else [k for k in out if isinstance(k, cls)]

    async def wait(
        self, ids: tuple[bytes, bytes], cls: type, count: int = 1, timeout: float = 10
    ) -> list[Any]:
        """Wait until ``count`` messages of kind ``cls`` were sent for the request."""
        async with asyncio.timeout(timeout):
            while len(self.kinds(ids, cls)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.kinds(ids, cls)

    async def idle(self, timeout: float = 10) -> None:
        """Wait until every request task of the tunnel finished."""
        async with asyncio.timeout(timeout):
            while self.tunnel.active:
                await asyncio.sleep(0.001)

    # -- HTTP ------------------------------------------------------------------------------

    def start(
        self,
        actor_id: str,
        path: str,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        stream: bool = False,
        response_stream: bool = False,
        generation: int | None = None,
    ) -> tuple[bytes, bytes]:
        ids = self.new_request()
        self.deliver(
            ids,
            0,
            p.ToEnvoyRequestStart(
                actor_id=actor_id,
                actor_generation=generation,
                method=method,
                path=path,
                headers={"host": "127.0.0.1:6420", **(headers or {})},
                body=body,
                stream=stream,
                response_stream=response_stream,
            ),
        )
        return ids

    def streamed_body(self, ids: tuple[bytes, bytes]) -> bytes:
        """The body of the ``ResponseChunk`` messages sent so far for the request."""
        return b"".join(k.body for k in self.kinds(ids, p.ToRivetResponseChunk))

    async def response(self, ids: tuple[bytes, bytes]) -> p.ToRivetResponseStart:
        (start,) = await self.wait(ids, p.ToRivetResponseStart)
        assert isinstance(start, p.ToRivetResponseStart)
        self.assert_http_indexes(ids)
        return start

    def assert_http_indexes(self, ids: tuple[bytes, bytes]) -> None:
        """Everything sent for one HTTP request is one sequence 0, 1, 2... whatever its kind
        (gateway3 answers 500 "HTTP response message index mismatch" otherwise)."""
        indexes = [m.message_id.message_index for m in self.of(ids)]
        assert indexes == list(range(len(indexes))), indexes

    async def request(self, actor_id: str, path: str, **kwargs: Any) -> p.ToRivetResponseStart:
        return await self.response(self.start(actor_id, path, **kwargs))

    # -- WebSocket -------------------------------------------------------------------------

    def open(
        self, actor_id: str, path: str, protocols: str = "rivet, rivet_encoding.bare"
    ) -> tuple[bytes, bytes]:
        ids = self.new_request()
        headers = {
            "host": "127.0.0.1:6420",
            "upgrade": "websocket",
            "connection": "Upgrade",
            "sec-websocket-protocol": protocols,
        }
        self.deliver(
            ids,
            0,
            p.ToEnvoyWebSocketOpen(
                actor_id=actor_id, actor_generation=None, path=path, headers=headers
            ),
        )
        return ids


class World:
    """A registry served by its own ASGI app, with local storage in a temporary directory."""

    def __init__(self, registry: rivetkit.Registry, log: list[str]) -> None:
        self.registry = registry
        self.app = registry.asgi()
        self.log = log
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://rivet.test"
        )

    def running(self, actor_id: str) -> int | None:
        """What the engine host would answer: the actor's current generation if it exists."""
        record = self.registry.driver.get_record(actor_id)
        if record is None or record.destroyed_at is not None:
            return None
        return int(record.generation)

    async def create(self, name: str, key: str) -> str:
        response = await self.http.post("/actors", json={"name": name, "key": key})
        assert response.status_code == 200, response.text
        actor_id: str = response.json()["actor"]["actor_id"]
        return actor_id

    def gateway(self, **options: Any) -> Gateway:
        return Gateway(self.app, self.running, **options)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    log: list[str] = []
    registry = rivetkit.setup(*make_actors(log), storage_path=tmp_path / "storage")
    async with registry.lifespan():
        w = World(registry, log)
        try:
            yield w
        finally:
            await w.http.aclose()


@contextlib.asynccontextmanager
async def gateway(world: World, **options: Any) -> AsyncIterator[Gateway]:
    gw = world.gateway(**options)
    try:
        yield gw
    finally:
        await gw.tunnel.close()


def bare_frame(message: Any) -> bytes:
    """A client-protocol message as the client sends it in ``bare`` (a binary frame)."""
    data = get_codec("bare").encode_to_server(message)
    assert isinstance(data, bytes)
    return data


def json_body(start: p.ToRivetResponseStart) -> Any:
    assert start.body is not None
    return orjson.loads(start.body)


# -- HTTP -----------------------------------------------------------------------------------


async def test_action_in_json_and_bare(world: World) -> None:
    actor_id = await world.create("counter", "k1")
    async with gateway(world) as gw:
        start = await gw.request(
            actor_id,
            "/action/increment",
            headers={"x-rivet-encoding": "json", "content-type": "application/json"},
            body=b'{"args":[3]}',
        )
        assert start.status == 200 and start.stream is False
        assert json_body(start) == {"output": 3}
        assert start.headers["content-length"] == str(len(start.body or b""))
        assert start.headers["x-rivet-actor"] == actor_id
        assert start.headers["content-type"] == "application/json"
        assert all(name == name.lower() for name in start.headers)
        # No CORS headers: the gateway writes them on every response it forwards (the
        # official runtime's tunnelled responses have exactly these five headers too).
        assert set(start.headers) == {
            "content-type", "content-length", "x-rivet-actor", "x-rivet-actor-generation",
            "x-rivet-actor-key",
        }
        with_origin = await gw.request(
            actor_id,
            "/action/increment",
            headers={"x-rivet-encoding": "json", "origin": "https://app.example"},
            body=b'{"args":[0]}',
        )
        assert not [name for name in with_origin.headers if name.startswith("access-control")]

        bare = get_codec("bare")
        start = await gw.request(
            actor_id,
            "/action/increment",
            headers={"x-rivet-encoding": "bare", "content-type": "application/octet-stream"},
            body=bare.encode_action_request([5]),
        )
        assert start.status == 200
        assert start.body is not None and bare.decode_action_response(start.body) == 8
        assert start.headers["content-type"] == "application/octet-stream"
        # One answer per request, nothing else.
        assert len(gw.sent) == 3
        await gw.idle()


async def test_streamed_request_body_returns_credit(world: World) -> None:
    actor_id = await world.create("counter", "stream")
    raw_id = await world.create("raw", "stream")
    async with gateway(world) as gw:
        # An action whose body arrives in chunks (the official client never sends a length).
        ids = gw.start(actor_id, "/action/increment", headers={"x-rivet-encoding": "json"},
                       stream=True)
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b'{"args"', finish=False))
        await gw.wait(ids, p.ToRivetRequestBodyWindowUpdate)
        assert not gw.kinds(ids, p.ToRivetResponseStart)  # still waiting for the rest
        gw.deliver(ids, 2, p.ToEnvoyRequestChunk(body=b":[7]}", finish=True))
        start = await gw.response(ids)
        assert json_body(start) == {"output": 7}
        credits = [k.consumed_bytes for k in gw.kinds(ids, p.ToRivetRequestBodyWindowUpdate)]
        assert credits == [7]  # cumulative; none after the last chunk (nothing more to send)

        # Same through a raw handler, with an empty final chunk.
        ids = gw.start(raw_id, "/request/upload", method="PUT", stream=True)
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b"hello ", finish=False))
        await gw.wait(ids, p.ToRivetRequestBodyWindowUpdate)
        gw.deliver(ids, 2, p.ToEnvoyRequestChunk(body=b"world", finish=False))
        await gw.wait(ids, p.ToRivetRequestBodyWindowUpdate, 2)
        gw.deliver(ids, 3, p.ToEnvoyRequestChunk(body=b"", finish=True))
        start = await gw.response(ids)
        assert start.status == 201 and json_body(start)["body"] == "hello world"
        credits = [k.consumed_bytes for k in gw.kinds(ids, p.ToRivetRequestBodyWindowUpdate)]
        assert credits == [6, 11]

        # Chunks that arrive together with the end: no credit (nothing more will be sent).
        ids = gw.start(raw_id, "/request/upload", method="PUT", stream=True)
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b"hello ", finish=False))
        gw.deliver(ids, 2, p.ToEnvoyRequestChunk(body=b"world", finish=True))
        start = await gw.response(ids)
        assert start.status == 201 and json_body(start)["body"] == "hello world"
        assert not gw.kinds(ids, p.ToRivetRequestBodyWindowUpdate)
        gw.assert_http_indexes(ids)
        assert not gw.kinds(ids, p.ToRivetRequestBodyCancel)


async def test_response_before_the_body_ends_cancels_the_body(world: World) -> None:
    raw_id = await world.create("raw", "early")
    async with gateway(world) as gw:
        # /head-only answers without reading the body: the rest of the upload is refused.
        ids = gw.start(raw_id, "/request/head-only", stream=True)
        start = await gw.response(ids)
        assert start.status == 204 and "content-length" not in start.headers
        assert gw.kinds(ids, p.ToRivetRequestBodyCancel) == [p.ToRivetRequestBodyCancel()]
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b"late", finish=True))  # ignored
        await gw.idle()
        assert len(gw.of(ids)) == 2


async def test_gateway_cancels_the_request_body(world: World) -> None:
    actor_id = await world.create("counter", "cancelled")
    async with gateway(world) as gw:
        ids = gw.start(actor_id, "/action/increment", headers={"x-rivet-encoding": "json"},
                       stream=True)
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b'{"args":[', finish=False))
        await gw.wait(ids, p.ToRivetRequestBodyWindowUpdate)
        gw.deliver(ids, 2, p.ToEnvoyRequestBodyCancel())
        start = await gw.response(ids)
        # The handler never takes a truncated body for a whole one.
        assert start.status == 400
        assert start.headers["x-rivet-error"] == "envoy.request_body_cancelled"
        assert json_body(start)["code"] == "request_body_cancelled"
        value = await gw.request(actor_id, "/action/increment", body=b'{"args":[0]}')
        assert json_body(value) == {"output": 0}  # the cut-off action never ran


async def test_abort_cancels_the_handler(world: World) -> None:
    raw_id = await world.create("raw", "abort")
    async with gateway(world) as gw:
        ids = gw.start(raw_id, "/request/hang", method="GET")
        async with asyncio.timeout(10):
            while "hang:start" not in world.log:
                await asyncio.sleep(0.001)
        gw.deliver(
            ids,
            1,
            p.ToEnvoyRequestAbort(
                actor_id=raw_id,
                actor_generation=None,
                reason=p.HttpStreamAbortReason(
                    kind=p.HttpStreamAbortReasonKind.CANCELLED, detail=None
                ),
            ),
        )
        await gw.idle()
        assert "hang:cancelled" in world.log
        assert gw.of(ids) == []  # the client is gone: nothing is answered
        # Later messages of the aborted request are ignored.
        gw.deliver(ids, 2, p.ToEnvoyRequestChunk(body=b"x", finish=True))
        assert gw.of(ids) == []


async def test_unknown_actor_and_generation_mismatch(world: World) -> None:
    actor_id = await world.create("counter", "gen")
    async with gateway(world) as gw:
        start = await gw.request("no-such-actor", "/action/increment", body=b'{"args":[1]}')
        assert start.status == 503
        assert start.headers["x-rivet-error"] == "envoy.actor_not_found"
        assert start.body == b"Actor not found"
        assert start.headers["content-length"] == str(len(b"Actor not found"))

        await gw.request(actor_id, "/action/increment", body=b'{"args":[1]}')  # wakes it
        generation = world.running(actor_id)
        assert generation is not None
        stale = await gw.request(
            actor_id, "/action/increment", body=b'{"args":[1]}', generation=generation + 1
        )
        assert stale.status == 503
        assert stale.headers["x-rivet-error"] == "envoy.actor_generation_mismatch"
        exact = await gw.request(
            actor_id, "/action/increment", body=b'{"args":[1]}', generation=generation
        )
        assert exact.status == 200 and json_body(exact) == {"output": 2}


async def test_oversized_response_is_never_sent(world: World) -> None:
    actor_id = await world.create("counter", "big")
    value = "v" * 5000
    body = json.dumps({"args": [value]}).encode()
    async with gateway(world) as gw:
        ok = await gw.request(actor_id, "/action/echo", body=body)
        assert ok.status == 200 and json_body(ok) == {"output": value}
        exact = gw.frame_sizes[-1]

        gw.tunnel.max_response_payload_size = exact  # a frame of exactly the limit passes
        ok = await gw.request(actor_id, "/action/echo", body=body)
        assert ok.status == 200 and gw.frame_sizes[-1] == exact

        gw.tunnel.max_response_payload_size = exact - 1
        refused = await gw.request(actor_id, "/action/echo", body=body)
        assert refused.status == 400
        assert refused.headers["x-rivet-error"] == "message.outgoing_too_long"
        error = json_body(refused)
        assert error["group"] == "message" and error["code"] == "outgoing_too_long"
        assert error["metadata"]["limit"] == exact - 1
        assert max(gw.frame_sizes) <= exact


async def test_endless_stream_is_cut_at_the_limit(world: World) -> None:
    raw_id = await world.create("raw", "forever")
    async with gateway(world, max_response_payload_size=64 * 1024) as gw:
        start = await gw.request(raw_id, "/request/forever", method="GET")
        assert start.status == 400
        assert start.headers["x-rivet-error"] == "message.outgoing_too_long"
        await gw.idle()  # the handler stopped instead of streaming forever
        produced = world.log.count("forever:chunk")
        assert 16 <= produced <= 20  # 64 KiB of 4 KiB chunks, and no more
        for _ in range(20):
            await asyncio.sleep(0)
        assert world.log.count("forever:chunk") == produced
        assert max(gw.frame_sizes) < 64 * 1024


async def test_raw_request(world: World) -> None:
    raw_id = await world.create("raw", "plain")
    async with gateway(world) as gw:
        start = await gw.request(
            raw_id,
            "/request/api/a%20b/caf\u00e9?q=2&r=x%26y",
            headers={"x-mine": "1", "x-forwarded-for": "203.0.113.9, 10.0.0.1",
                     "content-type": "text/plain"},
            body=b"payload",
        )
        assert start.status == 201
        assert start.headers["x-custom"] == "Yes"
        data = json_body(start)
        assert data["method"] == "POST"
        assert data["query"] == {"q": "2", "r": "x&y"}
        assert data["body"] == "payload" and data["mine"] == "1"
        assert data["client"] == ["203.0.113.9", 0]
        # The handler sees the request exactly as in embedded mode (same app, same route).
        direct = await world.http.post(
            f"/gateway/{raw_id}/request/api/a%20b/caf%C3%A9?q=2&r=x%26y",
            content=b"payload", headers={"x-mine": "1"},
        )
        assert direct.status_code == 201
        assert data["path"] == direct.json()["path"]
        # The handler sees a decoded path, like under any ASGI server; raw_path stays encoded.
        assert data["path"] == "/api/a b/caf\u00e9"
        assert data["raw_path"] == "/api/a%20b/caf%C3%A9"
        assert direct.json()["raw_path"] == data["raw_path"]


async def test_raw_request_path_is_decoded_once(world: World) -> None:
    raw_id = await world.create("raw", "paths")
    async with gateway(world) as gw:
        # %2F decodes in path (it is data, not a separator) but stays %2F in raw_path; a %25
        # is decoded exactly once.
        start = await gw.request(raw_id, "/request/a%2Fb/100%25/%E2%9C%93?x=%20", method="GET")
        data = json_body(start)
        assert data["path"] == "/a/b/100%/\u2713"
        assert data["raw_path"] == "/a%2Fb/100%25/%E2%9C%93"
        assert data["query"] == {"x": " "}
        # The original URL the client asked for (§9.1) gets the same treatment.
        start = await gw.request(
            raw_id, "/request/ignored", method="GET",
            headers={"x-rivet-internal-original-request-url":
                     "https://example.com/p%20q/caf%C3%A9?y=1"},
        )
        data = json_body(start)
        assert data["path"] == "/p q/caf\u00e9"
        assert data["raw_path"] == "/p%20q/caf%C3%A9"
        assert data["url"].startswith("https://example.com/") and data["url"].endswith("?y=1")


async def test_client_leaving_mid_upload_is_not_an_error(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    raw_id = await world.create("raw", "upload")
    async with gateway(world) as gw:
        ids = gw.start(raw_id, "/request/upload", method="PUT", stream=True)
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b"first half", finish=False))
        await gw.wait(ids, p.ToRivetRequestBodyWindowUpdate)
        assert "upload:reading" in world.log
        gw.deliver(ids, 2, p.ToEnvoyRequestBodyCancel())  # the client left mid-upload
        start = await gw.response(ids)
        await gw.idle()
    # on_request's ClientDisconnect ends the request quietly: no 500, no traceback.
    assert start.status == 400
    assert start.headers["x-rivet-error"] == "envoy.request_body_cancelled"
    errors_logged = [r for r in caplog.records if r.levelno >= 40]
    assert errors_logged == [], [r.getMessage() for r in errors_logged]


# -- streamed responses (gateway3) ----------------------------------------------------------


def window_update(consumed: int) -> p.ToEnvoyResponseBodyWindowUpdate:
    return p.ToEnvoyResponseBodyWindowUpdate(consumed_bytes=consumed)


async def test_streamed_response_stays_within_the_window(world: World) -> None:
    raw_id = await world.create("raw", "window")
    size = 3 * 1024 * 1024 + 5
    async with gateway(world) as gw:
        ids = gw.start(raw_id, f"/request/stream?size={size}", method="GET",
                       response_stream=True)
        (start,) = await gw.wait(ids, p.ToRivetResponseStart)
        assert start.stream is True and start.body is None and start.status == 200
        assert "content-length" not in start.headers
        assert start.headers["content-type"] == "application/octet-stream"
        # Without credit the tunnel stops at the window (1 MiB) and the handler waits.
        async with asyncio.timeout(10):
            while len(gw.streamed_body(ids)) < 1024 * 1024:
                await gw.wait(ids, p.ToRivetResponseChunk,
                              len(gw.kinds(ids, p.ToRivetResponseChunk)) + 1)
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(gw.streamed_body(ids)) == 1024 * 1024
        assert world.log.count("stream:2097152") == 0  # backpressure reached the handler
        index = 1
        while not any(k.finish for k in gw.kinds(ids, p.ToRivetResponseChunk)):
            gw.deliver(ids, index, window_update(len(gw.streamed_body(ids))))
            index += 1
            await gw.wait(ids, p.ToRivetResponseChunk,
                          len(gw.kinds(ids, p.ToRivetResponseChunk)) + 1)
        await gw.idle()
        body = gw.streamed_body(ids)
        assert len(body) == size
        assert body[:65536] == bytes([0]) * 65536 and body[-5:] == bytes([48 % 251]) * 5
        chunks = gw.kinds(ids, p.ToRivetResponseChunk)
        assert [c.finish for c in chunks].count(True) == 1 and chunks[-1].finish
        assert max(len(c.body) for c in chunks) <= 256 * 1024
        gw.assert_http_indexes(ids)


async def test_streamed_request_and_response_share_one_index_sequence(world: World) -> None:
    raw_id = await world.create("raw", "both")
    async with gateway(world) as gw:
        # gateway3 streams every request body and accepts a streamed response.
        ids = gw.start(raw_id, "/request/echo", stream=True, response_stream=True)
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b"hello", finish=True))
        start = await gw.response(ids)
        assert start.stream is False and json_body(start)["body"] == "hello"
        kinds = [type(k) for k in gw.kinds(ids)]
        assert kinds == [p.ToRivetResponseStart]  # no credit for a body that has ended
        gw.assert_http_indexes(ids)


async def test_one_big_body_is_streamed_when_the_gateway_allows(world: World) -> None:
    raw_id = await world.create("raw", "onebig")
    async with gateway(world, max_response_payload_size=64 * 1024) as gw:
        # Larger than one tunnel frame: an error without response streaming...
        refused = await gw.request(raw_id, "/request/big?size=200000", method="GET")
        assert refused.headers["x-rivet-error"] == "message.outgoing_too_long"
        # ... and a streamed body with it (in pieces that each fit a frame).
        ids = gw.start(raw_id, "/request/big?size=200000", method="GET", response_stream=True)
        (start,) = await gw.wait(ids, p.ToRivetResponseStart)
        assert start.stream is True
        async with asyncio.timeout(10):
            while not any(k.finish for k in gw.kinds(ids, p.ToRivetResponseChunk)):
                await gw.wait(ids, p.ToRivetResponseChunk,
                              len(gw.kinds(ids, p.ToRivetResponseChunk)) + 1)
        assert gw.streamed_body(ids) == b"b" * 200000
        assert max(gw.frame_sizes) <= 64 * 1024
        # Small bodies still go out whole, with a length.
        small = await gw.request(raw_id, "/request/big?size=10", method="GET",
                                 response_stream=True)
        assert small.stream is False and small.body == b"b" * 10
        assert small.headers["content-length"] == "10"


async def test_stream_that_breaks_or_loses_its_client(world: World) -> None:
    raw_id = await world.create("raw", "broken")
    async with gateway(world) as gw:
        # The handler fails after its first piece: the client sees a cut body, not a success.
        ids = gw.start(raw_id, "/request/stream?size=10&crash=1", method="GET",
                       response_stream=True)
        (abort,) = await gw.wait(ids, p.ToRivetResponseAbort)
        assert abort.reason.kind is p.HttpStreamAbortReasonKind.HANDLER_ERROR
        assert gw.streamed_body(ids) == bytes(10)
        assert not any(k.finish for k in gw.kinds(ids, p.ToRivetResponseChunk))
        gw.assert_http_indexes(ids)

        # The client leaves mid-stream: the handler stops, nothing more is sent.
        ids = gw.start(raw_id, f"/request/stream?size={4 * 1024 * 1024}", method="GET",
                       response_stream=True)
        await gw.wait(ids, p.ToRivetResponseChunk)
        gw.deliver(ids, 1, p.ToEnvoyRequestAbort(
            actor_id=raw_id, actor_generation=None,
            reason=p.HttpStreamAbortReason(kind=p.HttpStreamAbortReasonKind.CANCELLED,
                                           detail=None),
        ))
        await gw.idle()
        sent = len(gw.of(ids))
        gw.deliver(ids, 2, window_update(1024 * 1024))  # late credit is ignored
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(gw.of(ids)) == sent
        assert not gw.kinds(ids, p.ToRivetResponseAbort)

        # Closing the tunnel aborts a response still streaming.
        ids = gw.start(raw_id, f"/request/stream?size={4 * 1024 * 1024}", method="GET",
                       response_stream=True)
        await gw.wait(ids, p.ToRivetResponseChunk)
        await gw.tunnel.close()
        (abort,) = gw.kinds(ids, p.ToRivetResponseAbort)
        assert abort.reason.kind is p.HttpStreamAbortReasonKind.CANCELLED
        gw.assert_http_indexes(ids)


def test_bad_window_is_refused() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ValueError, match="response_window must be positive"):
        Tunnel(app, lambda m: None, lambda a: 1, response_window=0)


async def test_queue_send(world: World) -> None:
    actor_id = await world.create("counter", "queue")
    async with gateway(world) as gw:
        sent = await gw.request(
            actor_id, "/queue/jobs", headers={"x-rivet-encoding": "json"},
            body=b'{"body":{"n":1},"name":"jobs"}',
        )
        assert sent.status == 200 and json_body(sent) == {"status": "completed"}
        taken = await gw.request(actor_id, "/action/take_job", body=b'{"args":[]}')
        assert json_body(taken) == {"output": {"n": 1}}


async def test_handler_crash_and_missing_response(world: World) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"].endswith("/crash"):
            raise RuntimeError("boom")
        if scope["path"].endswith("/half"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            return
        await world.app(scope, receive, send)

    actor_id = await world.create("counter", "crash")
    gw = Gateway(app, world.running)
    try:
        for path in ("/crash", "/half"):
            start = await gw.request(actor_id, path)
            assert start.status == 500
            assert start.headers["x-rivet-error"] == "envoy.fetch_failed"
            assert json_body(start) == {
                "group": "envoy", "code": "fetch_failed", "message": "actor fetch failed",
                "metadata": {},
            }
        # The app behind it still works.
        start = await gw.request(actor_id, "/action/increment", body=b'{"args":[2]}')
        assert json_body(start) == {"output": 2}
    finally:
        await gw.tunnel.close()


async def test_message_index_rules_for_http(world: World) -> None:
    raw_id = await world.create("raw", "index")
    async with gateway(world) as gw:
        ids = gw.start(raw_id, "/request/upload", stream=True)
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b"a", finish=False))
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b"a", finish=False))  # duplicate
        gw.deliver(ids, 2, p.ToEnvoyRequestChunk(body=b"b", finish=True))
        start = await gw.response(ids)
        assert json_body(start)["body"] == "ab"

        ids = gw.start(raw_id, "/request/upload", stream=True)
        gw.deliver(ids, 2, p.ToEnvoyRequestChunk(body=b"b", finish=True))  # index 1 lost
        start = await gw.response(ids)
        assert start.status == 500
        assert start.headers["x-rivet-error"] == "envoy.message_index_skip"
        await gw.idle()


# -- WebSocket ------------------------------------------------------------------------------


async def test_connect_socket_actions_events_and_close(world: World) -> None:
    actor_id = await world.create("counter", "ws")
    bare = get_codec("bare")
    seen: list[TunnelWebSocket] = []

    def can_hibernate(info: TunnelWebSocket) -> bool:
        seen.append(info)
        return info.path == "/connect"

    async with gateway(world, can_hibernate=can_hibernate) as gw:
        ids = gw.open(actor_id, "/connect")
        (opened,) = await gw.wait(ids, p.ToRivetWebSocketOpen)
        assert opened == p.ToRivetWebSocketOpen(can_hibernate=True)
        assert seen[0].actor_id == actor_id and seen[0].path == "/connect"
        assert (seen[0].gateway_id, seen[0].request_id) == ids
        (init_frame,) = await gw.wait(ids, p.ToRivetWebSocketMessage)
        assert init_frame.binary is True
        init = bare.decode_to_client(init_frame.data)
        assert isinstance(init, Init) and init.actor_id == actor_id

        def frames() -> list[Any]:
            return [bare.decode_to_client(k.data) for k in gw.kinds(ids, p.ToRivetWebSocketMessage)]

        gw.deliver(ids, 1, p.ToEnvoyWebSocketMessage(
            data=bare_frame(SubscriptionRequest("count", True)), binary=True))
        gw.deliver(ids, 2, p.ToEnvoyWebSocketMessage(
            data=bare_frame(ActionRequest(1, "increment", [2])), binary=True))
        await gw.wait(ids, p.ToRivetWebSocketMessage, 3)
        assert frames()[1:] == [Event("count", [2]), ActionResponse(1, 2)]
        acks = await gw.wait(ids, p.ToRivetWebSocketMessageAck, 2)
        assert [a.index for a in acks] == [1, 2]
        # The subscription is acknowledged once taken; the sync action's message with its
        # answer, after its state commit (both leave in one write; a failed commit would leave
        # the message to the actor's next generation).
        sequence = [
            ("ack", k.index) if isinstance(k, p.ToRivetWebSocketMessageAck)
            else type(bare.decode_to_client(k.data)).__name__
            for k in (m.message_kind for m in gw.of(ids))
            if isinstance(k, (p.ToRivetWebSocketMessageAck, p.ToRivetWebSocketMessage))
        ]
        assert sequence == ["Init", ("ack", 1), "Event", ("ack", 2), "ActionResponse"]

        # An action over HTTP on another request: the subscribed socket gets the event.
        start = await gw.request(actor_id, "/action/increment", body=b'{"args":[5]}')
        assert json_body(start) == {"output": 7}
        await gw.wait(ids, p.ToRivetWebSocketMessage, 4)
        assert frames()[3] == Event("count", [7])

        # A replayed message (index <= last seen) is dropped, the next one is served.
        gw.deliver(ids, 2, p.ToEnvoyWebSocketMessage(
            data=bare_frame(ActionRequest(1, "increment", [2])), binary=True))
        gw.deliver(ids, 3, p.ToEnvoyWebSocketMessage(
            data=bare_frame(ActionRequest(2, "echo", ["hi"])), binary=True))
        await gw.wait(ids, p.ToRivetWebSocketMessage, 5)
        assert frames()[4] == ActionResponse(2, "hi")
        assert len(frames()) == 5
        assert [a.index for a in gw.kinds(ids, p.ToRivetWebSocketMessageAck)] == [1, 2, 3]

        # Our data messages are numbered 1, 2, ...; open/ack/close 0, 1, 2, ...
        data_indexes = [m.message_id.message_index for m in gw.of(ids)
                        if isinstance(m.message_kind, p.ToRivetWebSocketMessage)]
        assert data_indexes == [1, 2, 3, 4, 5]
        control = [m for m in gw.of(ids)
                   if not isinstance(m.message_kind, p.ToRivetWebSocketMessage)]
        assert [m.message_id.message_index for m in control] == list(range(len(control)))

        before = world.log.count("disconnect")
        gw.deliver(ids, 4, p.ToEnvoyWebSocketClose(code=1000, reason="Disposed"))
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert closed == p.ToRivetWebSocketClose(code=1000, reason="Disposed", hibernate=False)
        await gw.idle()
        assert world.log.count("disconnect") == before + 1  # the socket's connection ended
        count = len(gw.of(ids))
        gw.deliver(ids, 5, p.ToEnvoyWebSocketMessage(data=b"late", binary=True))  # unknown now
        assert len(gw.of(ids)) == count


async def test_json_socket_uses_text_frames_and_no_acks(world: World) -> None:
    actor_id = await world.create("counter", "ws-json")
    codec = get_codec("json")
    async with gateway(world) as gw:
        ids = gw.open(actor_id, "/connect", "rivet,rivet_encoding.json")
        (opened,) = await gw.wait(ids, p.ToRivetWebSocketOpen)
        assert opened.can_hibernate is False
        (init,) = await gw.wait(ids, p.ToRivetWebSocketMessage)
        assert init.binary is False
        assert isinstance(codec.decode_to_client(init.data.decode()), Init)
        request = codec.encode_to_server(ActionRequest(3, "increment", [1]))
        assert isinstance(request, str)
        gw.deliver(ids, 1, p.ToEnvoyWebSocketMessage(data=request.encode(), binary=False))
        frames = await gw.wait(ids, p.ToRivetWebSocketMessage, 2)
        assert codec.decode_to_client(frames[1].data.decode()) == ActionResponse(3, 1)
        assert gw.kinds(ids, p.ToRivetWebSocketMessageAck) == []


async def test_message_index_gap_closes_the_socket(world: World) -> None:
    actor_id = await world.create("counter", "gap")
    async with gateway(world) as gw:
        ids = gw.open(actor_id, "/connect")
        await gw.wait(ids, p.ToRivetWebSocketMessage)  # Init
        gw.deliver(ids, 2, p.ToEnvoyWebSocketMessage(
            data=bare_frame(ActionRequest(1, "increment", [1])), binary=True))
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert closed == p.ToRivetWebSocketClose(
            code=1008, reason="ws.message_index_skip", hibernate=False
        )
        await gw.idle()
        assert len(gw.kinds(ids, p.ToRivetWebSocketMessage)) == 1  # the action never ran
        assert world.log.count("disconnect") == 1  # the socket's connection ended


async def test_u16_index_wraps(world: World) -> None:
    raw_id = await world.create("raw", "wrap")
    async with gateway(world) as gw:
        ids = gw.new_request()
        gw.deliver(ids, 65534, p.ToEnvoyWebSocketOpen(
            actor_id=raw_id, actor_generation=None, path="/websocket/x", headers={}))
        await gw.wait(ids, p.ToRivetWebSocketMessage)  # the handler's hello
        for index, text in ((65535, "a"), (0, "b"), (65535, "dup"), (1, "c")):
            gw.deliver(ids, index, p.ToEnvoyWebSocketMessage(data=text.encode(), binary=False))
        frames = await gw.wait(ids, p.ToRivetWebSocketMessage, 4)
        assert [f.data for f in frames[1:]] == [b"echo:a", b"echo:b", b"echo:c"]


async def test_raw_websocket(world: World) -> None:
    raw_id = await world.create("raw", "ws")
    async with gateway(world, can_hibernate=lambda info: False) as gw:
        ids = gw.open(raw_id, "/websocket/chat?room=1", "rivet")
        (opened,) = await gw.wait(ids, p.ToRivetWebSocketOpen)
        assert opened.can_hibernate is False
        (hello,) = await gw.wait(ids, p.ToRivetWebSocketMessage)
        assert hello.binary is False and json.loads(hello.data) == {"path": "/websocket/chat"}
        gw.deliver(ids, 1, p.ToEnvoyWebSocketMessage(data=b"\x01\x02\x03", binary=True))
        gw.deliver(ids, 2, p.ToEnvoyWebSocketMessage(data=b"hey", binary=False))
        frames = await gw.wait(ids, p.ToRivetWebSocketMessage, 3)
        assert (frames[1].data, frames[1].binary) == (b"\x03\x02\x01", True)
        assert (frames[2].data, frames[2].binary) == (b"echo:hey", False)
        gw.deliver(ids, 3, p.ToEnvoyWebSocketMessage(data=b"bye", binary=False))
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert closed == p.ToRivetWebSocketClose(code=4001, reason="bye now", hibernate=False)
        await gw.idle()

        # Invalid UTF-8 in a text frame closes with 1007 instead of reaching the handler.
        ids = gw.open(raw_id, "/websocket/chat", "rivet")
        await gw.wait(ids, p.ToRivetWebSocketMessage)
        gw.deliver(ids, 1, p.ToEnvoyWebSocketMessage(data=b"\xff\xfe", binary=False))
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert (closed.code, closed.reason) == (1007, "ws.invalid_utf8")
        await gw.idle()
        assert "raw:disconnect:1007" in world.log


async def test_websocket_refusals(world: World) -> None:
    actor_id = await world.create("counter", "refuse")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"].endswith("/deny"):
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["path"].endswith("/crash"):
            raise RuntimeError("boom")
        if scope["path"].endswith("/reserved"):
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1006, "reason": "r" * 200})
            return
        await world.app(scope, receive, send)

    gw = Gateway(app, world.running)
    try:
        # A reserved close code or an over-long reason never reaches the wire.
        ids = gw.open(actor_id, "/reserved")
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert closed.code == 1011 and closed.reason == "r" * 123

        ids = gw.open("no-such-actor", "/connect")
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert closed == p.ToRivetWebSocketClose(
            code=1011, reason="Actor not found", hibernate=False
        )
        assert gw.kinds(ids, p.ToRivetWebSocketOpen) == []

        ids = gw.open(actor_id, "/deny")
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert (closed.code, closed.hibernate) == (1011, False)  # never a normal closure
        assert gw.kinds(ids, p.ToRivetWebSocketOpen) == []

        ids = gw.open(actor_id, "/crash")
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert (closed.code, closed.reason) == (1011, "envoy.fetch_failed")

        # The app's own refusal (unknown route) comes after its accept, as the gateway does.
        ids = gw.open(actor_id, "/nope")
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert (closed.code, closed.reason) == (1011, "actor.not_found")
        await gw.idle()
    finally:
        await gw.tunnel.close()


async def test_oversized_websocket_message_closes_the_socket(world: World) -> None:
    actor_id = await world.create("counter", "ws-big")
    async with gateway(world, max_response_payload_size=4096) as gw:
        ids = gw.open(actor_id, "/connect")
        await gw.wait(ids, p.ToRivetWebSocketMessage)
        gw.deliver(ids, 1, p.ToEnvoyWebSocketMessage(
            data=bare_frame(ActionRequest(1, "echo", ["x" * 8000])),
            binary=True))
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert (closed.code, closed.reason) == (1011, "message.outgoing_too_long")
        await gw.idle()
        assert max(gw.frame_sizes) <= 4096


async def test_close_leaves_hibernatable_sockets_to_the_gateway(world: World) -> None:
    actor_id = await world.create("counter", "shutdown")
    gw = world.gateway(can_hibernate=lambda info: "hib" in info.headers.get("x-kind", ""))
    plain = gw.open(actor_id, "/connect")
    ids = gw.new_request()
    gw.deliver(ids, 0, p.ToEnvoyWebSocketOpen(
        actor_id=actor_id, actor_generation=None, path="/connect",
        headers={"sec-websocket-protocol": "rivet", "x-kind": "hib"}))
    await gw.wait(plain, p.ToRivetWebSocketMessage)
    await gw.wait(ids, p.ToRivetWebSocketMessage)
    await gw.tunnel.close()
    assert gw.tunnel.active == 0
    assert gw.kinds(plain, p.ToRivetWebSocketClose) == [
        p.ToRivetWebSocketClose(code=1001, reason="ws.going_away", hibernate=False)
    ]
    assert gw.kinds(ids, p.ToRivetWebSocketClose) == []
    # After close, new traffic is refused as for an actor that is not here.
    start = await gw.request(actor_id, "/action/increment", body=b'{"args":[1]}')
    assert start.status == 503 and start.headers["x-rivet-error"] == "envoy.actor_not_found"


class SocketApp:
    """A bare ASGI app recording what a tunnelled socket looks like to the app."""

    def __init__(self) -> None:
        self.scopes: list[Any] = []
        self.received: list[Any] = []
        self.changed = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        ack = scope["extensions"][TUNNEL_EXTENSION].get("ack")
        while True:
            message = await receive()
            self.received.append(message)
            self.changed.set()
            if message["type"] == "websocket.disconnect":
                return
            if ack is not None and message.get("text") != "keep":  # "keep": left unacknowledged
                ack(message[MESSAGE_INDEX_KEY])
                if message.get("text") == "again":  # late acknowledgements, already covered
                    ack(message[MESSAGE_INDEX_KEY] - 1)
                    ack(message[MESSAGE_INDEX_KEY])
            if message.get("text") == "sleep":  # what the runtime does when its actor sleeps
                await send({"type": "websocket.close", "code": 1000,
                            "reason": HIBERNATE_REASON})

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.received) < count:
                self.changed.clear()
                await self.changed.wait()


def ws_open(actor_id: str, path: str = "/connect") -> p.ToEnvoyWebSocketOpen:
    return p.ToEnvoyWebSocketOpen(actor_id=actor_id, actor_generation=None, path=path,
                                  headers={"sec-websocket-protocol": "rivet", "x-a": "1"})


def ws_text(text: str) -> p.ToEnvoyWebSocketMessage:
    return p.ToEnvoyWebSocketMessage(data=text.encode(), binary=False)


async def test_hibernatable_socket_tells_the_app_and_can_be_left_to_the_gateway() -> None:
    app = SocketApp()
    gw = Gateway(app, lambda actor_id: 1, can_hibernate=lambda info: info.path == "/connect")
    try:
        ids = gw.new_request()
        gw.deliver(ids, 0, ws_open("a1"))
        (opened,) = await gw.wait(ids, p.ToRivetWebSocketOpen)
        assert opened == p.ToRivetWebSocketOpen(can_hibernate=True)
        (scope,) = app.scopes
        extension = dict(scope["extensions"][TUNNEL_EXTENSION])
        assert callable(extension.pop("ack")) and callable(extension.pop("send_now"))
        assert extension == {
            "gateway_id": ids[0], "request_id": ids[1], "path": "/connect",
            "headers": {"sec-websocket-protocol": "rivet", "x-a": "1"}, "hibernatable": True,
        }
        gw.deliver(ids, 1, ws_text("hello"))
        await app.wait(1)
        assert app.received[0] == {"type": "websocket.receive", "text": "hello",
                                   MESSAGE_INDEX_KEY: 1}
        # Acknowledgements are cumulative: one not past the last sent is not sent again.
        gw.deliver(ids, 2, ws_text("again"))
        await app.wait(2)
        # Acknowledged by the app, not by the tunnel: a message the app leaves alone stays
        # the gateway's to send again.
        gw.deliver(ids, 3, ws_text("keep"))
        await app.wait(3)  # (the app acknowledges before it waits again)
        assert [a.index for a in gw.kinds(ids, p.ToRivetWebSocketMessageAck)] == [1, 2]
        # The actor goes to sleep: its socket is let go without a word to the gateway, which
        # keeps the client connected.
        gw.deliver(ids, 4, ws_text("sleep"))
        await gw.idle()
        assert gw.kinds(ids, p.ToRivetWebSocketClose) == []
        assert [a.index for a in gw.kinds(ids, p.ToRivetWebSocketMessageAck)] == [1, 2, 4]
        gw.deliver(ids, 5, ws_text("while asleep"))  # the gateway holds it: not ours now
        assert len(app.received) == 5 and app.received[-1]["type"] == "websocket.disconnect"

        # A socket that is not hibernatable cannot be left open: it is closed normally.
        plain = gw.new_request()
        gw.deliver(plain, 0, ws_open("a1", "/websocket/raw"))
        (opened,) = await gw.wait(plain, p.ToRivetWebSocketOpen)
        assert opened == p.ToRivetWebSocketOpen(can_hibernate=False)
        gw.deliver(plain, 1, ws_text("sleep"))
        (closed,) = await gw.wait(plain, p.ToRivetWebSocketClose)
        assert closed == p.ToRivetWebSocketClose(code=1000, reason=HIBERNATE_REASON,
                                                 hibernate=False)
        assert not gw.kinds(plain, p.ToRivetWebSocketMessageAck)
    finally:
        await gw.tunnel.close()


@contextlib.asynccontextmanager
async def socket_gateway() -> AsyncIterator[tuple[SocketApp, Gateway]]:
    """A :class:`SocketApp` behind a tunnel whose actors run generation 3."""
    app = SocketApp()
    gw = Gateway(app, lambda actor_id: 3)
    try:
        yield app, gw
    finally:
        await gw.tunnel.close()


async def test_restored_socket_is_announced_before_the_app_runs() -> None:
    async with socket_gateway() as (app, gw):
        ids = (b"gw09", b"rq09")
        hibernation = Hibernation(gateway_id=ids[0], request_id=ids[1], request_path="/connect",
                                  request_headers={"sec-websocket-protocol": "rivet"},
                                  server_message_index=3)
        await gw.tunnel.restore_websocket("a1", 3, "conn-7", hibernation)
        # Announced at once (the host reports the actor running right after this), and only
        # once: the app's own accept sends nothing more.
        assert gw.kinds(ids) == [p.ToRivetWebSocketOpen(can_hibernate=True)]
        assert app.scopes == []
        gw.deliver(ids, 3, ws_text("replayed"))  # the app saw index 3 before the sleep
        gw.deliver(ids, 4, ws_text("new"))
        await app.wait(1)
        (scope,) = app.scopes
        assert scope["path"] == "/gateway/a1/connect"
        extension = scope["extensions"][TUNNEL_EXTENSION]
        assert extension["restore"] == "conn-7" and extension["hibernatable"] is True
        assert app.received == [{"type": "websocket.receive", "text": "new",
                                 MESSAGE_INDEX_KEY: 4}]
        assert gw.kinds(ids, p.ToRivetWebSocketOpen) == [p.ToRivetWebSocketOpen(True)]
        assert gw.kinds(ids, p.ToRivetWebSocketMessageAck) == [p.ToRivetWebSocketMessageAck(4)]
        # Restoring a socket that is already open is refused.
        await gw.tunnel.restore_websocket("a1", 3, "conn-7", hibernation)
        assert len(gw.kinds(ids, p.ToRivetWebSocketOpen)) == 1


async def test_restored_socket_resumes_past_a_stale_stored_index_once() -> None:
    """After a crash the stored index may be behind what the last generation acknowledged (the
    gateway replays only what was not): the first message may skip ahead; later gaps close."""
    async with socket_gateway() as (app, gw):
        ids = (b"gw10", b"rq10")
        hibernation = Hibernation(gateway_id=ids[0], request_id=ids[1], request_path="/connect",
                                  request_headers={}, server_message_index=3)
        await gw.tunnel.restore_websocket("a1", 3, "conn-8", hibernation)
        gw.deliver(ids, 6, ws_text("first after the crash"))
        gw.deliver(ids, 7, ws_text("next"))
        await app.wait(2)
        assert [m[MESSAGE_INDEX_KEY] for m in app.received] == [6, 7]
        gw.deliver(ids, 9, ws_text("gap"))
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert closed == p.ToRivetWebSocketClose(code=1008, reason="ws.message_index_skip",
                                                 hibernate=False)


async def test_a_held_socket_without_stored_connection_is_closed() -> None:
    async with socket_gateway() as (app, gw):
        ids = (b"gw11", b"rq11")
        gw.tunnel.refuse_restore("a1", *ids)
        assert gw.kinds(ids) == [p.ToRivetWebSocketClose(
            code=1000, reason="ws.meta_not_found_during_restore", hibernate=False)]
        assert app.scopes == []


async def test_unknown_requests_are_ignored(world: World) -> None:
    async with gateway(world) as gw:
        ids = gw.new_request()
        gw.deliver(ids, 1, p.ToEnvoyWebSocketMessage(data=b"x", binary=True))
        gw.deliver(ids, 2, p.ToEnvoyWebSocketClose(code=1000, reason=None))
        gw.deliver(ids, 1, p.ToEnvoyRequestChunk(body=b"x", finish=True))
        gw.deliver(ids, 1, p.ToEnvoyRequestBodyCancel())
        assert gw.sent == [] and gw.tunnel.active == 0


async def test_bad_limit_is_refused() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="max_response_payload_size"):
        Tunnel(app, lambda m: None, lambda a: None, max_response_payload_size=0)



async def test_a_failing_host_still_answers(world: World) -> None:
    def running(actor_id: str) -> int | None:
        raise RuntimeError("host bug")

    gw = Gateway(world.app, running)
    try:
        start = await gw.request("any", "/action/increment", body=b'{"args":[1]}')
        assert start.status == 500 and start.headers["x-rivet-error"] == "envoy.fetch_failed"
        ids = gw.open("any", "/connect")
        (closed,) = await gw.wait(ids, p.ToRivetWebSocketClose)
        assert (closed.code, closed.reason) == (1011, "envoy.fetch_failed")
        assert gw.tunnel.active == 0
    finally:
        await gw.tunnel.close()


def test_response_frame_limit_check_agrees_with_the_encoder() -> None:
    """The fast limit check (a bound first, the exact size only near the limit) decides exactly
    as the encoded ``ResponseStart`` frame's size would, also with non-ASCII headers."""
    import random

    from rivetkit.drivers.engine._tunnel_http import response_frame_exceeds

    rng = random.Random(6)
    alphabet = "abcXYZ-éß€😀"
    for _ in range(300):
        headers = {
            "".join(rng.choices(alphabet, k=rng.randint(1, 30))):
                "".join(rng.choices(alphabet, k=rng.randint(0, 200)))
            for _ in range(rng.randint(0, 10))
        }
        body = b"x" * rng.randint(0, 3000)
        frame = p.encode_to_rivet(p.ToRivetTunnelMessage(
            message_id=p.MessageId(gateway_id=b"gw01", request_id=b"rq01", message_index=0),
            message_kind=p.ToRivetResponseStart(
                status=200, headers=headers, body=body, stream=False
            ),
        ))
        exact = len(frame)
        for limit in (exact - 1, exact, exact + 1, exact + 4096):
            result = response_frame_exceeds(headers, len(body), limit)
            assert result == (exact if exact > limit else None), (exact, limit, result)
