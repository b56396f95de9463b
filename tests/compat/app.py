"""Actors used by the compatibility suite (driven by the official npm client, see scenarios.mjs).

``counter`` serves the HTTP scenarios 1-12, ``chat`` the connection scenarios (13-23, 26, 29) and
the browser page of ``tests/browser``, ``raw`` the raw handlers (24-26), ``worker`` the queues (27).

Served with ``python -m rivetkit serve tests/compat/app.py`` (and mounted under ``/api/rivet`` by
``prefixed_app.py``). Every action returns what it saw, so the Node side can compare real values.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.websockets import WebSocket

import rivetkit
from rivetkit import ActionContext, ActorContext, ActorOptions, Conn, UserError

counter = rivetkit.actor("counter", events={"count": rivetkit.event(int)})


@counter.create_state
def create_state(c: ActorContext, input: Any) -> dict[str, Any]:
    start = input.get("start", 0) if isinstance(input, dict) else 0
    return {"count": start, "input": input}


@counter.create_vars
def create_vars(c: ActorContext) -> dict[str, Any]:
    return {"before_connect_params": []}


@counter.on_before_connect
def before_connect(c: ActorContext, params: Any) -> None:
    if isinstance(params, dict) and params.get("reject"):
        raise UserError("connection rejected", code="rejected", metadata={"why": "test"})
    c.vars["before_connect_params"].append(params)


@counter.create_conn_state
def conn_state(c: ActorContext, params: Any) -> dict[str, Any]:
    return {"params": params, "made_by": "create_conn_state"}


@counter.action
def increment(c: ActionContext, amount: int) -> int:
    c.state["count"] += amount
    c.broadcast("count", c.state["count"])
    return c.state["count"]


@counter.action(name="getCount")
def get_count(c: ActionContext) -> int:
    return c.state["count"]


@counter.action
def echo(c: ActionContext, value: Any) -> Any:
    return value


@counter.action
def triple(c: ActionContext, a: Any, b: Any, d: Any) -> list[Any]:
    return [a, b, d]


@counter.action
def noop(c: ActionContext, value: Any) -> None:
    return None


@counter.action(name="returnNothing")
def return_nothing(c: ActionContext) -> None:
    pass


@counter.action
def whoami(c: ActionContext) -> dict[str, Any]:
    return {"actorId": c.actor_id, "name": c.name, "key": list(c.key)}


@counter.action(name="math.add")
def math_add(c: ActionContext, a: Any, b: Any) -> Any:
    return a + b


@counter.action(name="odd name/ü?#%")
def odd_name(c: ActionContext) -> str:
    return "odd"


@counter.action(name="getKey")
def get_key(c: ActionContext) -> list[str]:
    return list(c.key)


@counter.action(name="getInput")
def get_input(c: ActionContext) -> Any:
    return c.state["input"]


@counter.action(name="getParams")
def get_params(c: ActionContext) -> Any:
    return c.conn.params


@counter.action(name="getConnState")
def get_conn_state(c: ActionContext) -> Any:
    return c.conn.state


@counter.action(name="getConnId")
def get_conn_id(c: ActionContext) -> str:
    return c.conn.id


@counter.action(name="getBeforeConnectParams")
def get_before_connect_params(c: ActionContext) -> list[Any]:
    return c.vars["before_connect_params"]


@counter.action
def fail(c: ActionContext) -> None:
    raise UserError("boom happened", code="my_code", metadata={"a": 1})


@counter.action
def boom(c: ActionContext) -> None:
    raise RuntimeError("secret detail that must not leak")


# -- chat: WebSocket connections and events (scenarios 13-23, 26, 29, 30) -----------------------


def _conn(c: ActionContext) -> Conn:
    """The calling connection (every action has one; HTTP actions get a transient one)."""
    assert c.conn is not None
    return c.conn


def _is_admin(c: Any) -> bool:
    params = c.conn.params
    return isinstance(params, dict) and bool(params.get("admin"))


chat = rivetkit.actor(
    "chat",
    state={"count": 0, "connected": [], "disconnected": [], "params_seen": []},
    events={
        "newCount": rivetkit.event(int),
        "message": rivetkit.event(),
        "secret": rivetkit.event(str, can_subscribe=_is_admin),
    },
    conn_state={"n": 0},
)


@chat.on_before_connect
def chat_before_connect(c: ActorContext, params: Any) -> None:
    if isinstance(params, dict) and params.get("reject"):
        raise UserError("connection rejected", code="rejected", metadata={"why": "test"})


@chat.on_connect
def chat_on_connect(c: ActorContext, conn: Any) -> None:
    if conn.is_transient:
        return
    c.state["connected"].append(conn.id)
    c.state["params_seen"].append({"connId": conn.id, "params": conn.params})


@chat.on_disconnect
def chat_on_disconnect(c: ActorContext, conn: Any) -> None:
    if conn.is_transient:
        return
    c.state["disconnected"].append(conn.id)


@chat.action(name="increment")
def chat_increment(c: ActionContext, amount: int) -> int:
    c.state["count"] += amount
    c.broadcast("newCount", c.state["count"])
    return c.state["count"]


@chat.action(name="getCount")
def chat_get_count(c: ActionContext) -> int:
    return c.state["count"]


@chat.action(name="whoami")
def chat_whoami(c: ActionContext) -> dict[str, Any]:
    return {
        "actorId": c.actor_id,
        "key": list(c.key),
        "connId": _conn(c).id,
        "params": _conn(c).params,
        "connState": _conn(c).state,
        "transient": _conn(c).is_transient,
    }


@chat.action(name="bumpConnState")
def chat_bump_conn_state(c: ActionContext) -> int:
    state: dict[str, int] = _conn(c).state
    state["n"] += 1
    return state["n"]


@chat.create_vars
def chat_vars(c: ActorContext) -> dict[str, Any]:
    return {"next": 9}


@chat.action
async def countdown(c: ActionContext, tag: int) -> int:
    """Completes only after every higher tag: responses leave out of request order."""
    while c.vars["next"] != tag:
        await asyncio.sleep(0.001)
    c.vars["next"] = tag - 1
    return tag


@chat.action(name="echo")
def chat_echo(c: ActionContext, value: Any) -> Any:
    return value


@chat.action(name="size")
def chat_size(c: ActionContext, value: str) -> int:
    return len(value)


@chat.action(name="fail")
def chat_fail(c: ActionContext) -> None:
    raise UserError("boom happened", code="my_code", metadata={"a": 1})


@chat.action(name="boom")
def chat_boom(c: ActionContext) -> None:
    raise RuntimeError("secret detail that must not leak")


@chat.action(name="sendToMe")
def chat_send_to_me(c: ActionContext, value: Any) -> str:
    _conn(c).send("message", value)
    return _conn(c).id


@chat.action(name="shout")
def chat_shout(c: ActionContext, name: str, value: Any) -> None:
    c.broadcast(name, value)


@chat.action(name="disconnectConn")
def chat_disconnect_conn(c: ActionContext, conn_id: str, reason: str | None) -> bool:
    conn = c.conns.get(conn_id)
    if conn is None:
        return False
    conn.disconnect(reason)
    return True


@chat.action(name="connIds")
def chat_conn_ids(c: ActionContext) -> list[str]:
    return sorted(cid for cid, conn in c.conns.items() if not conn.is_transient)


@chat.action(name="lifecycle")
def chat_lifecycle(c: ActionContext) -> dict[str, Any]:
    return {
        "connected": c.state["connected"],
        "disconnected": c.state["disconnected"],
        "paramsSeen": c.state["params_seen"],
    }


@chat.on_request
async def chat_on_request(c: ActorContext, request: Request) -> Response:
    # Used by the browser page (tests/browser): a cross-origin GET with a custom header.
    return JSONResponse(
        {
            "count": c.state["count"],
            "path": request.url.path,
            "origin": request.headers.get("origin"),
            "xTest": request.headers.get("x-test"),
        }
    )


# -- raw: onRequest and onWebSocket (scenarios 24-26) ------------------------------------------

raw = rivetkit.actor("raw", state={"ws_log": []})


@raw.on_before_connect
def raw_before_connect(c: ActorContext, params: Any) -> None:
    if isinstance(params, dict) and params.get("reject"):
        raise UserError("connection rejected", code="rejected", metadata={"why": "test"})


@raw.create_conn_state
def raw_conn_state(c: ActorContext, params: Any) -> dict[str, Any]:
    return {"made_by": "create_conn_state"}


def _conn_info(c: Any) -> dict[str, Any] | None:
    conn = getattr(c, "conn", None)
    if conn is None:
        return None
    return {"id": conn.id, "params": conn.params, "state": conn.state}


@raw.on_request
async def raw_on_request(c: ActorContext, request: Request) -> Response:
    path = request.url.path
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        return PlainTextResponse(
            "teapot" if code == 418 else f"status {code}",
            status_code=code,
            headers={"x-custom": "yes"},
        )
    if path == "/binary":
        body = await request.body()
        return Response(bytes(reversed(body)), media_type="application/octet-stream")
    if path == "/sse":
        count = int(request.query_params.get("n", "3"))

        async def events() -> AsyncIterator[str]:
            for i in range(count):
                yield f"id: {i}\ndata: {json.dumps({'i': i, 'actorId': c.actor_id})}\n\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(events(), media_type="text/event-stream")
    body = await request.body()
    return JSONResponse(
        {
            "actorId": c.actor_id,
            "method": request.method,
            "url": str(request.url),
            "path": path,
            "query": list(request.query_params.multi_items()),
            "headers": {k: v for k, v in request.headers.items()},
            "body": base64.b64encode(body).decode(),
            "conn": _conn_info(c),
        },
        headers={"x-handled-by": "raw"},
    )


@raw.on_websocket
async def raw_on_websocket(c: ActorContext, websocket: WebSocket) -> None:
    log = c.state["ws_log"]
    await websocket.send_text(
        json.dumps(
            {
                "hello": True,
                "actorId": c.actor_id,
                "path": websocket.url.path,
                "query": websocket.url.query,
                "conn": _conn_info(c),
            }
        )
    )
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            log.append({"event": "client_closed", "code": message.get("code")})
            return
        text = message.get("text")
        if text is not None:
            if text.startswith("close:"):
                code = int(text.split(":", 1)[1])
                log.append({"event": "server_close", "code": code})
                await websocket.close(code, reason="closing as asked")
                return
            await websocket.send_text(f"echo:{text}")
        else:
            await websocket.send_bytes(message.get("bytes") or b"")


@raw.action(name="wsLog")
def raw_ws_log(c: ActionContext) -> list[Any]:
    return c.state["ws_log"]


@raw.action(name="whoami")
def raw_whoami(c: ActionContext) -> dict[str, Any]:
    return {"actorId": c.actor_id, "key": list(c.key)}


# -- worker: durable queues consumed by a run loop (scenario 27) -------------------------------

# Small enough that scenario 27 can exceed it without reaching the server's 64 KiB request limit.
WORKER_MAX_MESSAGE_SIZE = 1024


def _worker_can_publish(c: ActionContext) -> bool:
    """Records the sender's params (so the Node side can see what the hook saw); refuses
    senders whose params say ``deny``."""
    params = _conn(c).params
    c.vars["publish_params"].append(params)
    return not (isinstance(params, dict) and params.get("deny"))


worker = rivetkit.actor(
    "worker",
    state={"processed": []},
    queues={
        # Consumed by the run loop, which completes every message.
        "jobs": rivetkit.queue(dict, complete=dict, can_publish=_worker_can_publish),
        # Never read: a sender waiting on it times out.
        "ignored": rivetkit.queue(),
    },
    options=ActorOptions(max_queue_message_size=WORKER_MAX_MESSAGE_SIZE),
)


@worker.create_vars
def worker_vars(c: ActorContext) -> dict[str, Any]:
    return {"publish_params": []}


@worker.run
async def worker_run(c: ActorContext) -> None:
    async for message in c.queue.iter(["jobs"], completable=True):
        body = message.body
        c.state["processed"].append(body)
        amount = body.get("amount") if isinstance(body, dict) else None
        if isinstance(amount, int):
            await message.complete({"value": amount * 10, "id": message.id})
        else:
            await message.complete()


@worker.action(name="processed")
def worker_processed(c: ActionContext) -> list[Any]:
    return list(c.state["processed"])


@worker.action(name="publishParams")
def worker_publish_params(c: ActionContext) -> list[Any]:
    return list(c.vars["publish_params"])


# "ns" is served too: scenario 1 uses the URL-auth endpoint form http://ns:tok@host.
registry = rivetkit.setup(counter, chat, raw, worker, namespaces=("default", "ns"))
