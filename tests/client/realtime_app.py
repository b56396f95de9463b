"""The actor the connection tests drive, in its own module so that a server *process* can serve
it too: ``python -m rivetkit serve tests/client/realtime_app.py`` (see test_conn_process.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.websockets import WebSocket

import rivetkit
from rivetkit import ActionContext, ActorContext, UserError

chat = rivetkit.actor(
    "chat",
    state={"messages": [], "count": 0, "connects": 0, "disconnects": 0},
    vars={"next": 9},
    events={
        "message": rivetkit.event(dict),
        "count": rivetkit.event(int),
        "pair": rivetkit.event(),
        "secret": rivetkit.event(
            str, can_subscribe=lambda c: bool(c.conn.params and c.conn.params.get("admin"))
        ),
    },
)


@chat.on_before_connect
def before_connect(c: ActorContext, params: Any) -> None:
    if isinstance(params, dict) and params.get("reject"):
        raise UserError("go away", code="forbidden", metadata={"why": "test"})


@chat.on_connect
def on_connect(c: ActorContext, conn: rivetkit.Conn) -> None:
    c.state["connects"] += 1


@chat.on_disconnect
def on_disconnect(c: ActorContext, conn: rivetkit.Conn) -> None:
    c.state["disconnects"] += 1


@chat.action
def post(c: ActionContext, text: str) -> int:
    assert c.conn is not None
    by = c.conn.params.get("name") if isinstance(c.conn.params, dict) else None
    c.state["messages"].append(text)
    c.broadcast("message", {"text": text, "by": by})
    return len(c.state["messages"])


@chat.action
def messages(c: ActionContext) -> list[str]:
    return list(c.state["messages"])


@chat.action
def increment(c: ActionContext, amount: int) -> int:
    c.state["count"] += amount
    c.broadcast("count", c.state["count"])
    return int(c.state["count"])


@chat.action
def pair(c: ActionContext) -> None:
    c.broadcast("pair", 1, "two")


@chat.action
async def countdown(c: ActionContext, tag: int) -> int:
    # Completes only after every higher tag: forces answers out of request order.
    while c.vars["next"] != tag:
        await asyncio.sleep(0.001)
    c.vars["next"] = tag - 1
    return tag


@chat.action
async def hang(c: ActionContext) -> None:
    # Never answers (cancelled when the test's event loop ends).
    await asyncio.Event().wait()


@chat.action
def fail(c: ActionContext) -> None:
    raise UserError("boom happened", code="my_code", metadata={"a": 1})


@chat.action
def params(c: ActionContext) -> Any:
    assert c.conn is not None
    return c.conn.params


@chat.action
def info(c: ActionContext) -> dict[str, Any]:
    assert c.conn is not None
    return {
        "conn_id": c.conn.id,
        "conns": len(c.conns),
        "connects": c.state["connects"],
        "disconnects": c.state["disconnects"],
    }


@chat.action
def whisper(c: ActionContext, text: str) -> None:
    assert c.conn is not None
    c.conn.send("secret", text)


@chat.action
def kick(c: ActionContext) -> None:
    assert c.conn is not None
    c.conn.disconnect("kicked")


@chat.on_request
async def on_request(c: ActionContext, request: Request) -> Response:
    if request.url.path == "/missing":
        return PlainTextResponse("nope", status_code=404)
    body = await request.body()
    assert c.conn is not None
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "body": body.decode("utf-8", "replace"),
            "x_test": request.headers.get("x-test"),
            "params": c.conn.params,
        },
        status_code=201 if request.method == "POST" else 200,
        headers={"x-custom": "yes"},
    )


@chat.on_websocket
async def on_websocket(c: ActionContext, websocket: WebSocket) -> None:
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
            return
        text = message.get("text")
        if text == "bye":
            await websocket.close(4001, "bye now")
            return
        if text is not None:
            await websocket.send_text("echo:" + text)
        elif message.get("bytes") is not None:
            await websocket.send_bytes(message["bytes"][::-1])


registry = rivetkit.setup(chat)
