"""Raw handlers: ``on_request`` at ``/request/*`` and ``on_websocket`` at ``/websocket/*`` (§9).

The actor sees a Starlette ``Request`` / ``WebSocket`` built from a rewritten ASGI scope:

* ``/request``: the path after ``/request`` (``/request/hello?x=1`` -> ``/hello?x=1``), or the
  full original URL when the client sent ``x-rivet-internal-original-request-url``;
* ``/websocket``: the path keeps its ``/websocket`` prefix;
* as in any ASGI scope, ``path`` is percent-decoded (``/a%20b`` -> ``/a b``) and ``raw_path``
  keeps the bytes the client sent;
* ``rvt-*`` query parameters, the client token (``x-rivet-token``, ``rivet_token.*``) and the
  gateway's routing headers are removed.

Both run with a connection carrying the caller's params, so the connect hooks apply. A client
that leaves while ``on_request`` still reads its body ends the request quietly (the handler's
``ClientDisconnect`` becomes :class:`~.http.ClientDisconnected`), as it does for actions.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

from .. import errors
from .._runtime.context import ActionContext
from .actor_http import actor_headers, decode_conn_params
from .actor_ws import CLOSE_ERROR, WsOptions
from .http import ClientDisconnected, Receive, Scope, Send, header, public_error

if TYPE_CHECKING:
    from .._runtime.instance import ActorInstance
    from ..config import RegistryConfig

__all__ = ["handle_raw_request", "handle_raw_websocket"]

_HIDDEN_HEADERS = frozenset(
    {
        b"x-rivet-token",
        b"x-rivet-target",
        b"x-rivet-actor",
        b"x-rivet-skip-ready-wait",
        b"x-rivet-internal-original-request-url",
        b"x-rivet-encoding",
    }
)


def handler_not_defined(name: str, hook: str) -> errors.RivetError:
    return errors.RivetError(
        "actor",
        "handler_not_defined",
        f"Actor `{name}` has no @{hook} handler.",
        metadata={"handler": hook},
        status=404,
    )


def _set_path(scope: dict[str, Any], raw: str) -> None:
    """``raw_path`` as the client sent it, ``path`` percent-decoded (UTF-8), like ASGI servers.

    ``raw`` is the still-encoded path read as latin-1 (one character per byte).
    """
    raw_bytes = raw.encode("latin-1", "replace")
    scope["raw_path"] = raw_bytes
    scope["path"] = unquote_to_bytes(raw_bytes).decode("utf-8", "replace")


def _actor_scope(scope: Scope, path: str, query: str) -> dict[str, Any]:
    headers = [(k, v) for k, v in scope["headers"] if k not in _HIDDEN_HEADERS]
    new = dict(scope)
    new["headers"] = headers
    _set_path(new, path)
    new["query_string"] = query.encode("latin-1")
    new["root_path"] = ""
    return new


async def handle_raw_request(
    scope: Scope,
    receive: Receive,
    send: Send,
    instance: ActorInstance,
    path: str,
    query: str,
    config: RegistryConfig,
) -> None:
    """Serve ``/request/*`` with the actor's ``on_request`` handler."""
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response

    hook = instance.definition.hooks.get("on_request")
    if hook is None:
        raise handler_not_defined(instance.name, "on_request")
    inner = path[len("/request") :] or "/"
    actor_scope = _actor_scope(scope, inner, query)
    original = header(scope, b"x-rivet-internal-original-request-url")
    if original:
        parts = urlsplit(original.decode("latin-1"))
        actor_scope["scheme"] = parts.scheme or "http"
        _set_path(actor_scope, parts.path or "/")
        actor_scope["query_string"] = parts.query.encode("latin-1")
        actor_scope["headers"] = [(k, v) for k, v in actor_scope["headers"] if k != b"host"]
        actor_scope["headers"].append((b"host", parts.netloc.encode("latin-1")))
    params = decode_conn_params(header(scope, b"x-rivet-conn-params"))
    conn = await instance.open_conn(params)
    try:
        request = Request(actor_scope, receive)
        timeout = instance.clock.timeout(instance.definition.options.action_timeout)
        try:
            async with timeout:
                response = await _call(hook, ActionContext(instance, conn), request)
        except ClientDisconnect:
            # The client left before its body was complete: nobody is left to answer.
            instance.log.debug("raw request client disconnected path=%s", actor_scope["path"])
            raise ClientDisconnected() from None
        except TimeoutError:
            if timeout.expired():
                raise errors.action_timed_out("on_request", instance.definition.options.action_timeout) from None
            raise
        if not isinstance(response, Response):
            raise TypeError(
                f"on_request of actor {instance.name!r} returned {type(response).__name__}; "
                "return a starlette.responses.Response"
            )
        extra = actor_headers(instance) + _cors(scope)

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await response(actor_scope, receive, send_with_headers)
    finally:
        await instance.close_conn(conn)


def _cors(scope: Scope) -> list[tuple[bytes, bytes]]:
    from .http import cors_headers

    return cors_headers(scope)


async def _call(hook: Any, ctx: ActionContext, arg: Any) -> Any:
    result = hook(ctx, arg)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        return await result
    return result


async def handle_raw_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    instance: ActorInstance,
    path: str,
    query: str,
    options: WsOptions,
    config: RegistryConfig,
) -> None:
    """Serve ``/websocket/*`` with the actor's ``on_websocket`` handler."""
    from starlette.websockets import WebSocket, WebSocketState

    hook = instance.definition.hooks.get("on_websocket")
    actor_scope = _actor_scope(scope, path, query)
    actor_scope["subprotocols"] = options.forwardable()
    actor_scope["headers"] = [
        (k, v) if k != b"sec-websocket-protocol" else (k, ", ".join(options.forwardable()).encode())
        for k, v in actor_scope["headers"]
    ]
    websocket = WebSocket(actor_scope, receive, send)
    await websocket.accept(subprotocol=options.selected)
    if hook is None:
        await websocket.close(CLOSE_ERROR, "actor.handler_not_defined")
        return
    try:
        params = decode_conn_params(options.params)
        conn = await instance.open_conn(params)
    except Exception as exc:
        err = public_error(exc, expose=config.expose_errors)
        if not (isinstance(exc, errors.RivetError) and exc.public):
            instance.log.error("raw websocket rejected", exc_info=exc)
        await websocket.close(CLOSE_ERROR, err.full_code)
        return
    try:
        await hook(ActionContext(instance, conn), websocket)
    except Exception as exc:
        instance.log.error("on_websocket raised", exc_info=exc)
        if websocket.application_state is WebSocketState.CONNECTED:
            err = public_error(exc, expose=config.expose_errors)
            await websocket.close(CLOSE_ERROR, err.full_code)
    else:
        if websocket.application_state is WebSocketState.CONNECTED and (
            websocket.client_state is WebSocketState.CONNECTED
        ):
            await websocket.close(1000)
    finally:
        await instance.close_conn(conn)
