"""Bare ASGI ceiling for the bench: the smallest raw ASGI app answering the bench's requests.

    POST /gateway/counter/action/{increment|getCount|noop}?...&rvt-key=KEY   body {"args":[...]}
    -> 200 {"output": ...}

    WebSocket GET /gateway/counter/connect?...&rvt-key=KEY, subprotocols rivet, rivet_encoding.json
    -> accept with "rivet", send {"body":{"tag":"Init","val":{"actorId","connectionId"}}}, then per text frame
       ActionRequest{id,name,args}       -> ActionResponse{id,output}   (increment also sends
                                            Event{name:"count",args:[n]} to the key's subscribers first)
       SubscriptionRequest{eventName,subscribe} -> (un)subscribe this connection, no reply

State is an in-memory dict per key (shared by HTTP and WebSocket); no framework, no routing table,
no persistence, no protocol checks beyond what the bench needs. It runs on the same server stack a
Python implementation would use (uvicorn + uvloop + httptools, WebSockets via uvicorn's
websockets-sansio protocol), so "X % of the bare ASGI app" isolates the cost of everything above the
ASGI boundary.

Run: python bench/asgi/ceiling.py PORT   (binds 127.0.0.1)
"""

from __future__ import annotations

import contextlib
import sys
from urllib.parse import unquote_plus

try:
    import orjson

    def dumps(v: object) -> bytes:
        return orjson.dumps(v)

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a rivetkit dependency
    import json

    def dumps(v: object) -> bytes:
        return json.dumps(v, separators=(",", ":")).encode()

    loads = json.loads

PREFIX = "/gateway/counter/action/"
WS_PATH = "/gateway/counter/connect"
COUNTS: dict[str, int] = {}
# key -> event name -> {connection id: the connection's ASGI send}
SUBSCRIBERS: dict[str, dict[str, dict[int, object]]] = {}
JSON_HEADERS = [(b"content-type", b"application/json")]
_next_conn = 0


def key_of(query: bytes) -> str:
    for part in query.split(b"&"):
        if part.startswith(b"rvt-key="):
            return unquote_plus(part[8:].decode("latin-1"))
    return ""


async def reply(send, status: int, payload: object) -> None:
    body = dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": JSON_HEADERS + [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def action(key: str, name: str, args: list) -> tuple[bool, object]:
    """(found, output) of one action on the in-memory counter `key`."""
    if name == "increment":
        n = COUNTS.get(key, 0) + args[0]
        COUNTS[key] = n
        return True, n
    if name == "getCount":
        return True, COUNTS.get(key, 0)
    if name == "noop":
        return True, args[0] if args else None
    return False, None


async def websocket(scope, receive, send) -> None:
    global _next_conn
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    if scope["path"] != WS_PATH:
        await send({"type": "websocket.close", "code": 1011, "reason": "bench.not_found"})
        return
    key = key_of(scope["query_string"])
    _next_conn += 1
    conn = _next_conn
    await send({"type": "websocket.accept", "subprotocol": "rivet"})
    init = {"tag": "Init", "val": {"actorId": "ceiling-" + key, "connectionId": str(conn)}}
    await send({"type": "websocket.send", "text": dumps({"body": init}).decode()})
    subs = SUBSCRIBERS.setdefault(key, {})
    mine: set[str] = set()
    try:
        while True:
            msg = await receive()
            if msg["type"] != "websocket.receive":
                return
            body = loads(msg.get("text") or msg.get("bytes") or b"{}")["body"]
            tag = body["tag"]
            val = body["val"]
            if tag == "ActionRequest":
                name = val["name"]
                found, out = action(key, name, val.get("args") or [])
                if not found:
                    err = {
                        "group": "actor",
                        "code": "action_not_found",
                        "message": name,
                        "actionId": val["id"],
                    }
                    await send(
                        {
                            "type": "websocket.send",
                            "text": dumps({"body": {"tag": "Error", "val": err}}).decode(),
                        }
                    )
                    continue
                if name == "increment":
                    listeners = subs.get("count")
                    if listeners:
                        ev = dumps(
                            {"body": {"tag": "Event", "val": {"name": "count", "args": [out]}}}
                        ).decode()
                        for sub_send in list(listeners.values()):
                            # a subscriber that went away meanwhile raises ClientDisconnected
                            with contextlib.suppress(OSError):
                                await sub_send({"type": "websocket.send", "text": ev})
                res = {"tag": "ActionResponse", "val": {"id": val["id"], "output": out}}
                await send({"type": "websocket.send", "text": dumps({"body": res}).decode()})
            elif tag == "SubscriptionRequest":
                ev = val["eventName"]
                if val["subscribe"]:
                    subs.setdefault(ev, {})[conn] = send
                    mine.add(ev)
                else:
                    subs.get(ev, {}).pop(conn, None)
                    mine.discard(ev)
    finally:
        for ev in mine:
            subs.get(ev, {}).pop(conn, None)


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    path = scope["path"]
    if scope["method"] != "POST" or not path.startswith(PREFIX):
        await reply(send, 404, {"group": "bench", "code": "not_found", "message": path})
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    args = (loads(body).get("args") or []) if body else []
    name = path[len(PREFIX) :]
    found, out = action(key_of(scope["query_string"]), name, args)
    if found:
        await reply(send, 200, {"output": out})
    else:
        await reply(send, 404, {"group": "actor", "code": "action_not_found", "message": name})


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
