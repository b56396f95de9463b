"""Bare ASGI ceiling for the bench: the smallest raw ASGI app answering the bench's requests.

    POST /gateway/counter/action/{increment|getCount|noop}?...&rvt-key=KEY   body {"args":[...]}
    -> 200 {"output": ...}

State is an in-memory dict per key; no framework, no routing table, no persistence, no protocol
checks beyond what the bench needs. It runs on the same server stack a Python implementation would
use (uvicorn + uvloop + httptools), so "X % of the bare ASGI app" isolates the cost of everything
above the ASGI boundary.

Run: python bench/asgi/ceiling.py PORT   (binds 127.0.0.1)
"""

from __future__ import annotations

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
COUNTS: dict[str, int] = {}
JSON_HEADERS = [(b"content-type", b"application/json")]


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


async def app(scope, receive, send):
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
    key = key_of(scope["query_string"])
    if name == "increment":
        n = COUNTS.get(key, 0) + args[0]
        COUNTS[key] = n
        await reply(send, 200, {"output": n})
    elif name == "getCount":
        await reply(send, 200, {"output": COUNTS.get(key, 0)})
    elif name == "noop":
        await reply(send, 200, {"output": args[0] if args else None})
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
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
