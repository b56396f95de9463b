"""Raw on_request (incl. streaming and server-sent events) and on_websocket handlers."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocket

import rivetkit
from rivetkit import ActionContext

pytestmark = pytest.mark.anyio

QUERY = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=raw"


def make_actor() -> rivetkit.ActorDefinition:
    a = rivetkit.actor("raw", state={"requests": 0})

    @a.on_request
    async def on_request(c: ActionContext, request: Request) -> Any:
        c.state["requests"] += 1
        if request.url.path == "/sse":
            async def events() -> Any:
                for i in range(3):
                    yield f"data: {i}\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        if request.url.path == "/wrong":
            return {"not": "a response"}
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "url": str(request.url),
                "path": request.url.path,
                "raw_path": request.scope["raw_path"].decode("latin-1"),
                "query": dict(request.query_params),
                "body": body.decode(),
                "headers": {k: v for k, v in request.headers.items() if k.startswith("x-")},
                "params": c.conn.params,
                "count": c.state["requests"],
            },
            status_code=201,
            headers={"x-custom": "yes"},
        )

    @a.on_websocket
    async def on_websocket(c: ActionContext, websocket: WebSocket) -> None:
        await websocket.send_text(json.dumps({
            "path": websocket.url.path,
            "query": dict(websocket.query_params),
            "params": c.conn.params,
            "subprotocols": websocket.scope["subprotocols"],
        }))
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "bye":
                await websocket.close(4001, "bye now")
                return
            if message.get("text") is not None:
                await websocket.send_text("echo:" + message["text"])
            else:
                await websocket.send_bytes(message["bytes"])

    return a


async def test_on_request_sees_clean_request(serve_registry: Any) -> None:
    async with serve_registry(make_actor()) as served, httpx.AsyncClient() as http:
        response = await http.post(
            f"{served.url}/gateway/raw/request/api/thing?q=2&{QUERY}&rvt-token=secret",
            content=b"payload",
            headers={"x-rivet-conn-params": '{"p":1}', "x-rivet-token": "secret", "x-mine": "1"},
        )
        assert response.status_code == 201
        assert response.headers["x-custom"] == "yes"
        assert response.headers["x-rivet-actor-key"] == "raw"
        data = response.json()
        assert data["method"] == "POST" and data["path"] == "/api/thing"
        assert data["query"] == {"q": "2"} and data["body"] == "payload"
        assert data["params"] == {"p": 1}
        assert "x-rivet-token" not in data["headers"] and data["headers"]["x-mine"] == "1"
        assert "secret" not in json.dumps(data)
        original = await http.get(
            f"{served.url}/gateway/raw/request/ignored?{QUERY}",
            headers={"x-rivet-internal-original-request-url": "http://example.com/api/thing?q=2"},
        )
        assert original.json()["url"] == "http://example.com/api/thing?q=2"

        async def chunks() -> Any:
            yield b"streamed "
            yield b"body"

        streamed = await http.put(f"{served.url}/gateway/raw/request?{QUERY}", content=chunks())
        assert streamed.json()["body"] == "streamed body" and streamed.json()["path"] == "/"
        assert streamed.json()["count"] == 3


async def test_on_request_path_is_decoded_raw_path_is_not(serve_registry: Any) -> None:
    async with serve_registry(make_actor()) as served, httpx.AsyncClient() as http:
        response = await http.get(f"{served.url}/gateway/raw/request/a%20b/caf%C3%A9/x%2Fy?{QUERY}")
        data = response.json()
        assert data["path"] == "/a b/caf\u00e9/x/y"  # as uvicorn gives any ASGI app
        assert data["raw_path"] == "/a%20b/caf%C3%A9/x%2Fy"
        original = await http.get(
            f"{served.url}/gateway/raw/request/ignored?{QUERY}",
            headers={"x-rivet-internal-original-request-url": "http://example.com/p%20q?x=1"},
        )
        assert original.json()["path"] == "/p q"
        assert original.json()["raw_path"] == "/p%20q"


async def test_client_leaving_mid_upload_is_not_an_error(
    serve_registry: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a = rivetkit.actor("upload")
    reading = asyncio.Event()

    @a.on_request
    async def on_request(c: ActionContext, request: Request) -> Response:
        reading.set()
        body = await request.body()
        return Response(body)

    caplog.set_level(logging.DEBUG, logger="rivetkit")
    async with serve_registry(a) as served:
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        target = served.gateway("upload", "/request/up").removeprefix(served.url)
        writer.write(
            f"POST {target} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 1000\r\n\r\n"
            .encode() + b"only ten b"
        )
        await writer.drain()
        await asyncio.wait_for(reading.wait(), 10)
        writer.close()  # gone with 990 bytes of the body still owed
        await writer.wait_closed()
        async with asyncio.timeout(10):  # the request is over once uvicorn's task ends
            while served.server.server_state.tasks:
                await asyncio.sleep(0.005)
    assert any(r.getMessage().startswith("raw request client disconnected") for r in caplog.records)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_server_sent_events_stream(serve_registry: Any) -> None:
    async with serve_registry(make_actor()) as served, httpx.AsyncClient() as http:
        async with http.stream("GET", f"{served.url}/gateway/raw/request/sse?{QUERY}") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in response.aiter_lines() if line]
        assert lines == ["data: 0", "data: 1", "data: 2"]


async def test_on_request_errors(serve_registry: Any) -> None:
    plain = rivetkit.actor("plain")
    async with serve_registry(make_actor(), plain) as served, httpx.AsyncClient() as http:
        wrong = await http.get(f"{served.url}/gateway/raw/request/wrong?{QUERY}")
        assert wrong.status_code == 500 and wrong.json()["code"] == "internal_error"
        missing = await http.get(
            f"{served.url}/gateway/plain/request/x?rvt-namespace=default&rvt-method=getOrCreate"
            "&rvt-runner=default"
        )
        assert missing.status_code == 404 and missing.json()["code"] == "handler_not_defined"
        # The server is fine afterwards.
        ok = await http.get(f"{served.url}/gateway/raw/request/x?{QUERY}")
        assert ok.status_code == 201


async def test_on_websocket_echo_and_close_code(serve_registry: Any) -> None:
    async with serve_registry(make_actor()) as served:
        url = (served.url.replace("http", "ws") + f"/gateway/raw/websocket/chat/room?room=1&{QUERY}"
               "&rvt-token=tok")
        params = "rivet_conn_params." + quote(json.dumps({"p": "x"}), safe="")
        async with websockets.connect(
            url, subprotocols=["rivet", "rivet_encoding.bare", params, "rivet_token.tok"]  # type: ignore[list-item]
        ) as ws:
            assert ws.subprotocol == "rivet"
            hello = json.loads(await ws.recv())
            assert hello["path"] == "/websocket/chat/room" and hello["query"] == {"room": "1"}
            assert hello["params"] == {"p": "x"}
            assert not any(p.startswith("rivet_token") for p in hello["subprotocols"])
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
            await ws.send(b"\x09\x08\x07")
            assert await ws.recv() == b"\x09\x08\x07"
            await ws.send("bye")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye now")


async def test_on_websocket_missing_handler(serve_registry: Any) -> None:
    plain = rivetkit.actor("plain")
    async with serve_registry(plain) as served:
        url = (served.url.replace("http", "ws") + "/gateway/plain/websocket/x?rvt-namespace=default"
               "&rvt-method=getOrCreate&rvt-runner=default")
        async with websockets.connect(url, subprotocols=["rivet"]) as ws:  # type: ignore[list-item]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
                1011, "actor.handler_not_defined")


def test_on_websocket_must_be_async() -> None:
    a = rivetkit.actor("x")

    def handler(c: Any, websocket: Any) -> None:
        return None

    with pytest.raises(rivetkit.DefinitionError, match="must be an async function"):
        a.on_websocket(handler)


async def test_response_type_is_checked_not_silent(serve_registry: Any) -> None:
    a = rivetkit.actor("text")

    @a.on_request
    def sync_handler(c: ActionContext, request: Request) -> Response:
        return Response("plain sync", media_type="text/plain")

    async with serve_registry(a) as served, httpx.AsyncClient() as http:
        response = await http.get(
            f"{served.url}/gateway/text/request?rvt-namespace=default&rvt-method=getOrCreate"
            "&rvt-runner=default"
        )
        assert response.text == "plain sync"
