"""The actor router's HTTP routes, reached after the gateway resolved the actor (§5, §7).

``POST /action/{name}`` is the hot path: read the body, decode the arguments, open a transient
connection with the ``x-rivet-conn-params`` params, run the action (which commits the state it
changed), encode the output. Errors are encoded in the request's encoding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import orjson

from .. import __version__, errors
from .._log import server_logger
from .._protocol import CONTENT_TYPES, DecodeError, get_codec
from .._protocol.encoding import encoding_from_header
from .._protocol.messages import ActorSpecifier
from .._runtime.keys import serialize_key
from .http import (
    TEXT_CONTENT_TYPE,
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    error_envelope,
    header,
    public_error,
    read_body,
    send_json,
    send_response,
)

if TYPE_CHECKING:
    from .._runtime.instance import ActorInstance
    from ..config import RegistryConfig
    from .actor_queue import Pin

__all__ = ["handle_actor_http", "actor_headers", "decode_conn_params", "MAX_CONN_PARAMS_BYTES"]

MAX_CONN_PARAMS_BYTES = 4096

T = TypeVar("T")

_ROOT_TEXT = "This is a RivetKit actor (rivetkit for Python).\n\nLearn more at https://rivet.dev"


def bad_request(message: str) -> errors.RivetError:
    """Undecodable input: ``400 core.internal_error`` as the official runtime, with a message."""
    return errors.RivetError("core", "internal_error", message, status=400)


def actor_headers(instance: ActorInstance) -> list[tuple[bytes, bytes]]:
    """``x-rivet-actor*`` response headers (§4.5); the key is omitted if it has CR or LF."""
    cached: list[tuple[bytes, bytes]] | None = instance._http_headers
    if cached is not None and cached[1][1] == str(instance.generation).encode():
        return cached
    headers = [
        (b"x-rivet-actor", instance.actor_id.encode()),
        (b"x-rivet-actor-generation", str(instance.generation).encode()),
    ]
    serialized = serialize_key(list(instance.key)) if instance.key else ""
    if "\r" not in serialized and "\n" not in serialized:
        headers.append((b"x-rivet-actor-key", serialized.encode()))
    instance._http_headers = headers
    return headers


def actor_specifier(instance: ActorInstance) -> ActorSpecifier:
    return ActorSpecifier(
        actor_id=instance.actor_id,
        generation=instance.generation,
        key=serialize_key(list(instance.key)),
    )


def decode_conn_params(raw: bytes | str | None) -> Any:
    """Connection params: plain JSON (never the compat layer), at most 4 KiB."""
    if raw is None:
        return None
    if len(raw) > MAX_CONN_PARAMS_BYTES:
        raise bad_request(
            f"connection params are {len(raw)} bytes; the limit is {MAX_CONN_PARAMS_BYTES}"
        )
    text = raw
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Browsers and Node send header values as latin-1 bytes (one byte per code point
            # below 256), so `{"name":"ü"}` arrives as 0xFC rather than UTF-8.
            text = raw.decode("latin-1")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"connection params are not valid JSON: {exc}") from None


async def read_request(
    receive: Receive,
    config: RegistryConfig,
    encoding: str,
    decode: Callable[[bytes], T],
    what: str,
) -> T:
    """Read a request body within the incoming size limit and decode it.

    Raises:
        RivetError: ``message.incoming_too_long`` past the limit, ``core.internal_error`` (400)
            for a body that does not decode.
    """
    try:
        body = await read_body(receive, config.max_incoming_message_size)
    except BodyTooLarge as exc:
        raise errors.incoming_too_long(exc.size, exc.limit) from None
    try:
        return decode(body)
    except DecodeError as exc:
        raise bad_request(f"invalid {what} request body ({encoding}): {exc}") from None


async def send_actor_error(
    scope: Scope,
    send: Send,
    exc: BaseException,
    *,
    encoding: str,
    instance: ActorInstance | None,
    config: RegistryConfig,
    log: logging.Logger | logging.LoggerAdapter[Any] = server_logger,
) -> None:
    """Answer with the error envelope in the request's encoding."""
    err = public_error(exc, expose=config.expose_errors)
    if not (isinstance(exc, errors.RivetError) and exc.public):
        log.error("error while handling request path=%s", scope.get("path"), exc_info=exc)
    codec = get_codec(encoding)  # type: ignore[arg-type]
    spec = actor_specifier(instance) if instance is not None else None
    body = codec.encode_http_error(error_envelope(err, spec))
    headers = [(b"content-type", CONTENT_TYPES[encoding].encode())]  # type: ignore[index]
    if instance is not None:
        headers.extend(actor_headers(instance))
    await send_response(scope, send, err.status, body, headers)


async def handle_actor_http(
    scope: Scope,
    receive: Receive,
    send: Send,
    instance: ActorInstance,
    path: str,
    query: str,
    config: RegistryConfig,
    pin: Pin | None = None,
) -> None:
    """Serve one HTTP request on the actor router.

    Args:
        path: the raw actor path (``/action/increment``).
        query: the actor's query string with every ``rvt-*`` parameter removed.
        pin: the hold keeping the actor awake for this request (a queue send waiting for its
            completion releases it early).
    """
    encoding = encoding_from_header(
        (header(scope, b"x-rivet-encoding") or b"").decode("latin-1") or None
    )
    method = scope["method"]
    try:
        if path.startswith("/action/"):
            raw_name = path[len("/action/") :]
            if not raw_name or "/" in raw_name:
                raise errors.route_not_found(path)
            if method != "POST":
                raise errors.method_not_allowed(method, path)
            await _action(scope, receive, send, instance, unquote(raw_name), encoding, config)
            return
        if path == "/request" or path.startswith("/request/"):
            from .raw import handle_raw_request

            await handle_raw_request(scope, receive, send, instance, path, query, config)
            return
        if path.startswith("/queue/"):
            raw_name = path[len("/queue/") :]
            if not raw_name or "/" in raw_name:
                raise errors.route_not_found(path)
            if method != "POST":
                raise errors.method_not_allowed(method, path)
            from .actor_queue import Pin, handle_queue_send

            await handle_queue_send(
                scope, receive, send, pin or Pin(instance), unquote(raw_name), encoding, config
            )
            return
        if path.startswith("/inspector/"):
            from .inspector import handle_inspector

            await handle_inspector(scope, receive, send, instance, path, query, config)
            return
        if path == "/health" and method == "GET":
            await send_response(scope, send, 200, b"ok", [TEXT_CONTENT_TYPE])
            return
        if path == "/metadata" and method == "GET":
            await send_json(
                scope, send, 200, {"runtime": "rivetkit", "type": "local", "version": __version__}
            )
            return
        if path == "/" and method == "GET":
            await send_response(scope, send, 200, _ROOT_TEXT.encode(), [TEXT_CONTENT_TYPE])
            return
        raise errors.route_not_found(path)
    except ClientDisconnected:
        return
    except BaseException as exc:  # noqa: BLE001 - every failure becomes an envelope
        if not isinstance(exc, Exception):
            raise
        await send_actor_error(
            scope, send, exc, encoding=encoding, instance=instance, config=config, log=instance.log
        )


async def _action(
    scope: Scope,
    receive: Receive,
    send: Send,
    instance: ActorInstance,
    name: str,
    encoding: str,
    config: RegistryConfig,
) -> None:
    codec = get_codec(encoding)  # type: ignore[arg-type]
    args = await read_request(receive, config, encoding, codec.decode_action_request, "action")
    params = decode_conn_params(header(scope, b"x-rivet-conn-params"))
    conn = await instance.open_conn(params)
    try:
        output = await instance.call_action(name, args, conn)
    finally:
        await instance.close_conn(conn)
    try:
        payload = codec.encode_action_response(output)
    except (TypeError, ValueError) as exc:
        raise errors.RivetError(
            "actor",
            "invalid_output",
            f"Action `{name}` returned a value that cannot be encoded: {exc}",
            status=500,
            public=False,
        ) from None
    if len(payload) > config.max_outgoing_message_size:
        raise errors.outgoing_too_long(len(payload), config.max_outgoing_message_size)
    headers = [(b"content-type", CONTENT_TYPES[encoding].encode())]  # type: ignore[index]
    headers.extend(actor_headers(instance))
    await send_response(scope, send, 200, payload, headers)
