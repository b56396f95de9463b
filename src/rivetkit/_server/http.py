"""Raw ASGI helpers for the hot paths: body reading with a limit, responses, CORS, errors.

The server answers every request through these few functions instead of a framework's request and
response objects; each action passes through here, so they allocate as little as they can.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import orjson

from .. import errors
from .._protocol.messages import ActorSpecifier, HttpResponseError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_CONTENT_TYPE = (b"content-type", b"application/json")
TEXT_CONTENT_TYPE = (b"content-type", b"text/plain; charset=utf-8")

_CORS_METHODS = b"GET, POST, PUT, DELETE, OPTIONS, PATCH"


class BodyTooLarge(Exception):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"body of at least {size} bytes exceeds {limit}")
        self.size = size
        self.limit = limit


class ClientDisconnected(Exception):
    pass


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of request header ``name`` (lower-case bytes)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body (chunked or not), refusing more than ``limit`` bytes.

    Raises:
        BodyTooLarge: the body is larger than ``limit``.
        ClientDisconnected: the client went away before the body was complete.
    """
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise BodyTooLarge(len(body), limit)
        return body  # type: ignore[no-any-return]
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# ASGI scope extension of a server that answers CORS itself in front of the app (the engine's
# gateway overwrites these headers on every tunnelled response): the app adds none.
CORS_HANDLED_EXTENSION = "rivet.cors_handled"


def cors_headers(scope: Scope) -> Headers:
    """Headers every actual response carries (client-protocol §2.2)."""
    extensions = scope.get("extensions")
    if extensions and CORS_HANDLED_EXTENSION in extensions:
        return []
    origin = header(scope, b"origin")
    if origin is None:
        return [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-expose-headers", b"*"),
        ]
    return [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-expose-headers", b"*"),
        (b"vary", b"Origin"),
    ]


async def send_preflight(scope: Scope, send: Send, status: int = 204) -> None:
    origin = header(scope, b"origin") or b"*"
    headers: Headers = [
        (b"access-control-allow-origin", origin),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-allow-methods", _CORS_METHODS),
        (b"access-control-max-age", b"86400"),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    requested = header(scope, b"access-control-request-headers")
    if requested:
        headers.append((b"access-control-allow-headers", requested))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def send_response(
    scope: Scope,
    send: Send,
    status: int,
    body: bytes,
    headers: Sequence[tuple[bytes, bytes]],
) -> None:
    all_headers = list(headers)
    all_headers.append((b"content-length", str(len(body)).encode()))
    all_headers.extend(cors_headers(scope))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    scope: Scope, send: Send, status: int, data: Any, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send_response(scope, send, status, orjson.dumps(data), [JSON_CONTENT_TYPE, *extra])


async def send_text(scope: Scope, send: Send, status: int, text: str) -> None:
    await send_response(scope, send, status, text.encode(), [TEXT_CONTENT_TYPE])


def public_error(exc: BaseException, *, expose: bool) -> errors.RivetError:
    """The error as clients may see it: public ``RivetError``s as they are, others masked."""
    if isinstance(exc, errors.RivetError):
        if exc.public:
            return exc
        if expose:
            return errors.RivetError(
                "rivetkit", "internal_error", exc.message, status=exc.status
            )
        return errors.internal_error()
    if expose:
        return errors.RivetError(
            "rivetkit", "internal_error", f"{type(exc).__name__}: {exc}", status=500
        )
    return errors.internal_error()


def error_envelope(err: errors.RivetError, actor: ActorSpecifier | None = None) -> HttpResponseError:
    return HttpResponseError(
        group=err.group,
        code=err.code,
        message=err.message,
        metadata=err.metadata,
        actor=actor,
    )


def gateway_error_json(err: errors.RivetError) -> dict[str, Any]:
    data: dict[str, Any] = {"group": err.group, "code": err.code, "message": err.message}
    if err.metadata is not None:
        data["metadata"] = err.metadata
    return data


async def send_gateway_error(scope: Scope, send: Send, err: errors.RivetError) -> None:
    """Errors of the engine-like surface: always JSON, with ``x-rivet-error`` (§2.3)."""
    await send_json(
        scope,
        send,
        err.status,
        gateway_error_json(err),
        [(b"x-rivet-error", err.full_code.encode())],
    )
