"""Wire encodings of the client protocol: one :class:`Codec` each for json, cbor and bare.

A codec turns :mod:`~rivetkit._protocol.messages` and Python values into HTTP bodies and
WebSocket frames and back, for both sides of the connection:

* server side: ``decode_action_request``, ``encode_action_response``,
  ``decode_queue_send_request``, ``encode_queue_send_response``, ``encode_http_error``,
  ``encode_to_client``, ``decode_to_server``;
* client side: the mirror images (``encode_action_request``, ``decode_to_client``, ...).

How each encoding carries values (spec §6.2, §8.4):

* **json**: ``{"body":{"tag":...,"val":{...}}}`` envelopes through :func:`to_compat`; ids are
  ``["$BigInt","n"]``. WebSocket frames are text (``str``).
* **cbor**: the same shapes with native values (:func:`prepare_native`); ids (and WebSocket
  ``actor.generation``) use the 8-byte integer form so the client sees ``bigint``. Like the
  official client, what the server sends is escaped and revived, what the client sends is raw.
* **bare**: v4 structs with a ``04 00`` prefix; ``Cbor`` fields hold CBOR of the compat tree.
  Requests and server answers of versions 1-4 are accepted, v4 is always written.

Every decoder raises :class:`~rivetkit._protocol.DecodeError` for malformed input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol

import orjson

from rivetkit._protocol import DecodeError
from rivetkit._protocol.bare import BARE_CODEC
from rivetkit._protocol.messages import (
    MISSING,
    ActionRequest,
    ActionResponse,
    ActorSpecifier,
    Error,
    Event,
    HttpQueueSendRequest,
    HttpQueueSendResponse,
    HttpResponseError,
    Init,
    SubscriptionRequest,
    ToClient,
    ToServer,
    normalize_args,
)
from rivetkit._protocol.values import (
    BigInt,
    cbor_dumps_native,
    cbor_loads,
    cbor_value_native,
    from_compat,
    json_dumps_compat,
    json_loads_compat,
    json_may_have_tags,
    prepare_native,
)

__all__ = [
    "BARE",
    "CBOR",
    "CONTENT_TYPES",
    "ENCODINGS",
    "JSON",
    "SUBPROTOCOL_PREFIX",
    "Codec",
    "Encoding",
    "encoding_from_header",
    "encoding_from_subprotocol",
    "get_codec",
]

Encoding = Literal["json", "cbor", "bare"]

ENCODINGS: Final[tuple[Encoding, ...]] = ("json", "cbor", "bare")

CONTENT_TYPES: Final[Mapping[Encoding, str]] = {
    "json": "application/json",
    "cbor": "application/octet-stream",
    "bare": "application/octet-stream",
}
"""``Content-Type`` of request and response bodies per encoding."""

SUBPROTOCOL_PREFIX: Final = "rivet_encoding."

_U64_MAX: Final = 2**64 - 1


def encoding_from_header(value: str | None) -> Encoding:
    """Encoding selected by the ``x-rivet-encoding`` header (§6.1).

    ``cbor`` and ``bare`` select those; anything else, including a missing header, is json.
    """
    if value == "bare":
        return "bare"
    if value == "cbor":
        return "cbor"
    return "json"


def encoding_from_subprotocol(value: str | None) -> Encoding:
    """Encoding selected by the ``rivet_encoding.*`` WebSocket subprotocol (§6.1).

    Args:
        value: the subprotocol (``"rivet_encoding.bare"``) or just its suffix (``"bare"``);
            ``None`` when the client offered none, which means json.

    Raises:
        DecodeError: for an unknown encoding (the server closes ``1003``).
    """
    if value is None:
        return "json"
    name = value.removeprefix(SUBPROTOCOL_PREFIX)
    if name == "json":
        return "json"
    if name == "cbor":
        return "cbor"
    if name == "bare":
        return "bare"
    raise DecodeError(f"unsupported websocket encoding {value!r}")


# ---------------------------------------------------------------------------------------------
# shape helpers shared by the json and cbor codecs


def _obj(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise DecodeError(f"{what}: expected an object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if type(value) is not str:
        raise DecodeError(f"{what}: field {key!r} must be a string, got {_kind(value)}")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, what: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise DecodeError(f"{what}: field {key!r} must be a string, got {_kind(value)}")


def _bool(obj: Mapping[str, Any], key: str, what: str) -> bool:
    value = obj.get(key)
    if type(value) is not bool:
        raise DecodeError(f"{what}: field {key!r} must be a boolean, got {_kind(value)}")
    return value


def _uint(value: Any, field: str, what: str) -> int:
    if type(value) is int or type(value) is BigInt:
        if 0 <= value <= _U64_MAX:
            return int(value)
        raise DecodeError(f"{what}: field {field!r} out of range: {value}")
    if type(value) is float and value.is_integer() and 0 <= value <= _U64_MAX:
        return int(value)
    raise DecodeError(f"{what}: field {field!r} must be an unsigned integer, got {_kind(value)}")


def _actor_from(value: Any, what: str) -> ActorSpecifier | None:
    if value is None:
        return None
    actor = _obj(value, f"{what}.actor")
    return ActorSpecifier(
        _str(actor, "actorId", f"{what}.actor"),
        _uint(actor.get("generation"), "generation", f"{what}.actor"),
        _opt_str(actor, "key", f"{what}.actor"),
    )


def _body(envelope: Any, what: str) -> tuple[str, dict[str, Any]]:
    body = _obj(_obj(envelope, what).get("body"), f"{what}.body")
    tag = body.get("tag")
    if type(tag) is not str:
        raise DecodeError(f"{what}: body.tag must be a string, got {_kind(tag)}")
    return tag, _obj(body.get("val"), f"{what}.body.val")


class Codec(Protocol):
    """Encoder/decoder for one wire encoding: the :data:`JSON`, :data:`CBOR` and :data:`BARE`
    singletons (or :func:`get_codec`).

    Server-side methods decode what the client sends and encode the answers; client-side
    methods are their mirror images. Decoders raise :class:`DecodeError` for malformed input;
    encoders raise ``TypeError`` for values that cannot be serialized. ``str`` results are
    WebSocket text frames, ``bytes`` binary frames or HTTP bodies.
    """

    @property
    def encoding(self) -> Encoding:
        """``"json"``, ``"cbor"`` or ``"bare"``."""
        ...

    @property
    def content_type(self) -> str:
        """``Content-Type`` of HTTP bodies."""
        ...

    @property
    def binary(self) -> bool:
        """Whether WebSocket frames are binary (json uses text frames)."""
        ...

    # MARK: server side

    def decode_action_request(self, body: bytes) -> list[Any]:
        """Decode a ``POST /action/{name}`` body into the args list (§7 leniency applies)."""
        ...

    def encode_action_response(self, output: Any) -> bytes:
        """Encode a successful action's output as the HTTP response body."""
        ...

    def decode_queue_send_request(self, body: bytes) -> HttpQueueSendRequest:
        """Decode a ``POST /queue/{name}`` body."""
        ...

    def encode_queue_send_response(self, resp: HttpQueueSendResponse) -> bytes:
        """Encode the answer to a queue send."""
        ...

    def encode_http_error(self, err: HttpResponseError) -> bytes:
        """Encode an HTTP error envelope (§2.3)."""
        ...

    def encode_to_client(self, msg: ToClient) -> bytes | str:
        """Encode a WebSocket frame for the client."""
        ...

    def decode_to_server(self, data: bytes | str) -> ToServer:
        """Decode a WebSocket frame received from the client."""
        ...

    # MARK: client side

    def encode_action_request(self, args: list[Any] | tuple[Any, ...]) -> bytes:
        """Encode the body of ``POST /action/{name}``."""
        ...

    def decode_action_response(self, body: bytes) -> Any:
        """Decode a successful action response body into the output value."""
        ...

    def encode_queue_send_request(self, req: HttpQueueSendRequest) -> bytes:
        """Encode the body of ``POST /queue/{name}``."""
        ...

    def decode_queue_send_response(self, body: bytes) -> HttpQueueSendResponse:
        """Decode the answer to a queue send."""
        ...

    def decode_http_error(self, body: bytes) -> HttpResponseError:
        """Decode an HTTP error envelope."""
        ...

    def encode_to_server(self, msg: ToServer) -> bytes | str:
        """Encode a WebSocket frame for the server."""
        ...

    def decode_to_client(self, data: bytes | str) -> ToClient:
        """Decode a WebSocket frame received from the server."""
        ...


class _TreeCodec:
    """Shared logic of json and cbor: the same object shapes, different value mapping."""

    encoding: Encoding
    content_type: str
    binary: bool

    def __repr__(self) -> str:
        return f"<Codec {self.encoding}>"

    # Values travelling server -> client (``_value``) and client -> server (``_value_out``);
    # decoding what the server sent (``_load``) and what the client sent (``_load_in``).

    def _value(self, value: Any) -> Any:
        raise NotImplementedError

    def _value_out(self, value: Any) -> Any:
        return self._value(value)

    def _load_in(self, data: bytes | str) -> Any:
        return self._load(data)

    def _id(self, value: int) -> Any:
        raise NotImplementedError

    def _ws_generation(self, value: int) -> Any:
        raise NotImplementedError

    def _dump(self, value: Any) -> bytes:
        raise NotImplementedError

    def _load(self, data: bytes | str) -> Any:
        raise NotImplementedError

    def _frame(self, data: bytes) -> bytes | str:
        return data

    def _actor_to(self, actor: ActorSpecifier, generation: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"actorId": actor.actor_id, "generation": generation}
        if actor.key is not None:  # the client's schema allows absent, not null
            out["key"] = actor.key
        return out

    # server side

    def decode_action_request(self, body: bytes) -> list[Any]:
        return normalize_args(_obj(self._load_in(body), "action request").get("args"))

    def encode_action_response(self, output: Any) -> bytes:
        return self._dump({"output": self._value(output)})

    def decode_queue_send_request(self, body: bytes) -> HttpQueueSendRequest:
        what = "queue send request"
        obj = _obj(self._load_in(body), what)
        wait = obj.get("wait")
        if wait is not None and type(wait) is not bool:
            raise DecodeError(f"{what}: field 'wait' must be a boolean, got {_kind(wait)}")
        timeout = obj.get("timeout")
        if timeout is not None:
            if type(timeout) is float and math.isfinite(timeout) and timeout >= 0:
                timeout = int(timeout)
            else:
                timeout = _uint(timeout, "timeout", what)
        return HttpQueueSendRequest(obj.get("body"), _opt_str(obj, "name", what), wait, timeout)

    def encode_queue_send_response(self, resp: HttpQueueSendResponse) -> bytes:
        out: dict[str, Any] = {"status": resp.status}
        if resp.response is not MISSING:
            out["response"] = self._value(resp.response)
        return self._dump(out)

    def encode_http_error(self, err: HttpResponseError) -> bytes:
        # Key order as the official server writes it (§13.3 golden bytes).
        out: dict[str, Any] = {}
        if err.actor is not None:
            out["actor"] = self._actor_to(err.actor, err.actor.generation)
        out["code"] = err.code
        out["group"] = err.group
        out["message"] = err.message
        if err.metadata is not None:
            out["metadata"] = self._value(err.metadata)
        return self._dump(out)

    def encode_to_client(self, msg: ToClient) -> bytes | str:
        val: dict[str, Any]
        if type(msg) is ActionResponse:
            tag = "ActionResponse"
            val = {"id": self._id(msg.id), "output": self._value(msg.output)}
        elif type(msg) is Event:
            tag = "Event"
            val = {"name": msg.name, "args": self._value(list(msg.args))}
        elif type(msg) is Error:
            tag = "Error"
            val = {"group": msg.group, "code": msg.code, "message": msg.message}
            if msg.metadata is not None:
                val["metadata"] = self._value(msg.metadata)
            if msg.actor is not None:
                val["actor"] = self._actor_to(msg.actor, self._ws_generation(msg.actor.generation))
            val["actionId"] = None if msg.action_id is None else self._id(msg.action_id)
        elif type(msg) is Init:
            tag = "Init"
            val = {"actorId": msg.actor_id, "connectionId": msg.connection_id}
        else:
            raise TypeError(f"not a to-client message: {type(msg).__name__}")
        return self._frame(self._dump({"body": {"tag": tag, "val": val}}))

    def decode_to_server(self, data: bytes | str) -> ToServer:
        what = "to-server message"
        tag, val = _body(self._load_in(data), what)
        if tag == "ActionRequest":
            what = "ActionRequest"
            return ActionRequest(
                _uint(val.get("id"), "id", what),
                _str(val, "name", what),
                normalize_args(val.get("args")),
            )
        if tag == "SubscriptionRequest":
            what = "SubscriptionRequest"
            return SubscriptionRequest(_str(val, "eventName", what), _bool(val, "subscribe", what))
        raise DecodeError(f"{what}: unknown tag {tag!r}")

    # client side

    def encode_action_request(self, args: list[Any] | tuple[Any, ...]) -> bytes:
        return self._dump({"args": self._value_out(list(args))})

    def decode_action_response(self, body: bytes) -> Any:
        return _obj(self._load(body), "action response").get("output")

    def encode_queue_send_request(self, req: HttpQueueSendRequest) -> bytes:
        out: dict[str, Any] = {"body": self._value_out(req.body)}
        if req.name is not None:
            out["name"] = req.name
        if req.wait is not None:
            out["wait"] = req.wait
        if req.timeout is not None:
            out["timeout"] = req.timeout
        return self._dump(out)

    def decode_queue_send_response(self, body: bytes) -> HttpQueueSendResponse:
        what = "queue send response"
        obj = _obj(self._load(body), what)
        return HttpQueueSendResponse(_str(obj, "status", what), obj.get("response", MISSING))

    def decode_http_error(self, body: bytes) -> HttpResponseError:
        what = "error response"
        obj = _obj(self._load(body), what)
        return HttpResponseError(
            _str(obj, "group", what),
            _str(obj, "code", what),
            _str(obj, "message", what),
            obj.get("metadata"),
            _actor_from(obj.get("actor"), what),
        )

    def encode_to_server(self, msg: ToServer) -> bytes | str:
        val: dict[str, Any]
        if type(msg) is ActionRequest:
            tag = "ActionRequest"
            val = {
                "id": self._id(msg.id),
                "name": msg.name,
                "args": self._value_out(list(msg.args)),
            }
        elif type(msg) is SubscriptionRequest:
            tag = "SubscriptionRequest"
            val = {"eventName": msg.event_name, "subscribe": msg.subscribe}
        else:
            raise TypeError(f"not a to-server message: {type(msg).__name__}")
        return self._frame(self._dump({"body": {"tag": tag, "val": val}}))

    def decode_to_client(self, data: bytes | str) -> ToClient:
        what = "to-client message"
        tag, val = _body(self._load(data), what)
        if tag == "ActionResponse":
            return ActionResponse(_uint(val.get("id"), "id", "ActionResponse"), val.get("output"))
        if tag == "Event":
            return Event(_str(val, "name", "Event"), normalize_args(val.get("args")))
        if tag == "Error":
            what = "Error"
            action_id = val.get("actionId")
            return Error(
                _str(val, "group", what),
                _str(val, "code", what),
                _str(val, "message", what),
                val.get("metadata"),
                None if action_id is None else _uint(action_id, "actionId", what),
                _actor_from(val.get("actor"), what),
            )
        if tag == "Init":
            return Init(_str(val, "actorId", "Init"), _str(val, "connectionId", "Init"))
        raise DecodeError(f"{what}: unknown tag {tag!r}")


class _JsonCodec(_TreeCodec):
    encoding: Encoding = "json"
    content_type = CONTENT_TYPES["json"]
    binary = False

    def _value(self, value: Any) -> Any:
        return orjson.Fragment(json_dumps_compat(value))

    def _id(self, value: int) -> Any:
        return ["$BigInt", int.__repr__(value)]

    def _ws_generation(self, value: int) -> Any:
        return value

    def _dump(self, value: Any) -> bytes:
        return orjson.dumps(value)

    def _load(self, data: bytes | str) -> Any:
        return json_loads_compat(data)

    def _frame(self, data: bytes) -> bytes | str:
        return data.decode()

    # Hot paths, specialised: skip the compat revive when the body has no "$ at all, and
    # splice pre-encoded values into constant envelopes.

    def decode_action_request(self, body: bytes) -> list[Any]:
        obj = json_loads_compat(body, revive=False)
        if type(obj) is not dict:
            raise DecodeError(f"action request: expected an object, got {_kind(obj)}")
        args = obj.get("args")
        if json_may_have_tags(body):
            args = from_compat(args)
        return normalize_args(args)

    def encode_action_response(self, output: Any) -> bytes:
        return b'{"output":' + json_dumps_compat(output) + b"}"

    def encode_to_client(self, msg: ToClient) -> bytes | str:
        if type(msg) is ActionResponse:
            return (
                f'{{"body":{{"tag":"ActionResponse","val":{{"id":["$BigInt","{int(msg.id)}"],'
                f'"output":{json_dumps_compat(msg.output).decode()}}}}}}}'
            )
        if type(msg) is Event:
            return (
                f'{{"body":{{"tag":"Event","val":{{"name":{orjson.dumps(msg.name).decode()},'
                f'"args":{json_dumps_compat(list(msg.args)).decode()}}}}}}}'
            )
        return super().encode_to_client(msg)


def _cbor_head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes((major << 5 | length,))
    if length < 0x100:
        return bytes((major << 5 | 24, length))
    if length < 0x10000:
        return bytes((major << 5 | 25,)) + length.to_bytes(2, "big")
    if length < 0x100000000:
        return bytes((major << 5 | 26,)) + length.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + length.to_bytes(8, "big")


def _cbor_text(text: str) -> bytes:
    raw = text.encode()
    return _cbor_head(3, len(raw)) + raw


def _cbor_ws_prefix(tag: str) -> bytes:
    # {"body": {"tag": <tag>, "val": {2 fields...
    return (
        b"\xa1"
        + _cbor_text("body")
        + b"\xa2"
        + _cbor_text("tag")
        + _cbor_text(tag)
        + _cbor_text("val")
        + b"\xa2"
    )


def _binary(data: bytes | str) -> bytes:
    if isinstance(data, str):
        raise DecodeError("cbor: expected binary data, got a text frame")
    return data


_CBOR_ACTION_RESPONSE: Final = _cbor_ws_prefix("ActionResponse") + _cbor_text("id") + b"\x1b"
_CBOR_EVENT: Final = _cbor_ws_prefix("Event") + _cbor_text("name")
_CBOR_OUTPUT: Final = _cbor_text("output")
_CBOR_ARGS: Final = _cbor_text("args")
_CBOR_HTTP_OUTPUT: Final = b"\xa1" + _CBOR_OUTPUT


class _CborCodec(_TreeCodec):
    encoding: Encoding = "cbor"
    content_type = CONTENT_TYPES["cbor"]
    binary = True

    def _value(self, value: Any) -> Any:
        return prepare_native(value)

    def _id(self, value: int) -> Any:
        return BigInt(value)

    def _ws_generation(self, value: int) -> Any:
        return BigInt(value)

    def _dump(self, value: Any) -> bytes:
        return cbor_dumps_native(value)

    # The official client revives compat tags in what it receives but sends raw values, so
    # server output escapes tag-like arrays and client input is taken as it is.

    def _value_out(self, value: Any) -> Any:
        return prepare_native(value, escape=False)

    def _load(self, data: bytes | str) -> Any:
        return cbor_loads(_binary(data))

    def _load_in(self, data: bytes | str) -> Any:
        return cbor_loads(_binary(data), revive=False)

    # Hot paths: constant envelope bytes around the encoded value (same bytes as the generic
    # path, checked by the golden tests).

    def encode_action_response(self, output: Any) -> bytes:
        return _CBOR_HTTP_OUTPUT + cbor_value_native(output)

    def encode_to_client(self, msg: ToClient) -> bytes | str:
        if type(msg) is ActionResponse:
            return (
                _CBOR_ACTION_RESPONSE
                + msg.id.to_bytes(8, "big")
                + _CBOR_OUTPUT
                + cbor_value_native(msg.output)
            )
        if type(msg) is Event:
            return (
                _CBOR_EVENT + _cbor_text(msg.name) + _CBOR_ARGS + cbor_value_native(list(msg.args))
            )
        return super().encode_to_client(msg)


JSON: Final[Codec] = _JsonCodec()
"""The json codec."""

CBOR: Final[Codec] = _CborCodec()
"""The cbor codec."""

BARE: Final[Codec] = BARE_CODEC
"""The bare codec (writes protocol v4, reads v1-v4)."""

_CODECS: Final[Mapping[str, Codec]] = {"json": JSON, "cbor": CBOR, "bare": BARE}


def get_codec(encoding: Encoding) -> Codec:
    """Return the codec singleton for ``encoding``.

    Raises:
        ValueError: for an unknown encoding name.
    """
    try:
        return _CODECS[encoding]
    except KeyError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
