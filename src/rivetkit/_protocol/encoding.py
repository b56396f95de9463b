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
  ``actor.generation``) use the 8-byte integer form so the client sees ``bigint``.
* **bare**: v4 structs with a ``04 00`` prefix; ``Cbor`` fields hold CBOR of the compat tree.
  Requests and server answers of versions 1-4 are accepted, v4 is always written.

Every decoder raises :class:`~rivetkit._protocol.DecodeError` for malformed input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

from rivetkit._protocol import DecodeError
from rivetkit._protocol.bare import VERSION_PREFIX, Reader, Writer, encode_uint, read_version
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
)
from rivetkit._protocol.values import (
    BigInt,
    cbor_dumps_compat,
    cbor_dumps_native,
    cbor_loads,
    from_compat,
    prepare_native,
    to_compat,
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
    name = value[len(SUBPROTOCOL_PREFIX) :] if value.startswith(SUBPROTOCOL_PREFIX) else value
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


def _args(value: Any) -> list[Any]:
    # Leniency of the official server (§7): a scalar becomes [scalar], null/missing is [].
    if type(value) is list:
        return value
    if value is None:
        return []
    return [value]


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


def _json_loads(data: bytes | bytearray | memoryview | str) -> Any:
    # orjson reads integers beyond 64 bits as floats, which is what JavaScript holds anyway.
    if isinstance(data, memoryview):
        data = data.tobytes()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None


def _may_have_tags(data: bytes | bytearray | memoryview | str) -> bool:
    if isinstance(data, str):
        return '"$' in data or "\\u0024" in data
    raw = bytes(data) if isinstance(data, memoryview) else data
    return b'"$' in raw or b"\\u0024" in raw


def _revive_json(data: bytes | bytearray | memoryview | str) -> Any:
    value = _json_loads(data)
    if _may_have_tags(data):
        value = from_compat(value)
    return value


class Codec:
    """Encoder/decoder for one wire encoding; use the :data:`JSON`, :data:`CBOR` and
    :data:`BARE` singletons or :func:`get_codec`.

    Attributes:
        encoding: ``"json"``, ``"cbor"`` or ``"bare"``.
        content_type: ``Content-Type`` for HTTP bodies.
        binary: ``True`` if WebSocket frames are binary (``False``: text frames for json).
    """

    encoding: Encoding
    content_type: str
    binary: bool

    def __repr__(self) -> str:
        return f"<Codec {self.encoding}>"

    # MARK: server side

    def decode_action_request(self, body: bytes) -> list[Any]:
        """Decode a ``POST /action/{name}`` body into the args list.

        Raises:
            DecodeError: if the body is malformed.
        """
        raise NotImplementedError

    def encode_action_response(self, output: Any) -> bytes:
        """Encode a successful action's output as the HTTP response body.

        Raises:
            TypeError: if ``output`` contains unsupported types.
        """
        raise NotImplementedError

    def decode_queue_send_request(self, body: bytes) -> HttpQueueSendRequest:
        """Decode a ``POST /queue/{name}`` body."""
        raise NotImplementedError

    def encode_queue_send_response(self, resp: HttpQueueSendResponse) -> bytes:
        """Encode the answer to a queue send."""
        raise NotImplementedError

    def encode_http_error(self, err: HttpResponseError) -> bytes:
        """Encode an HTTP error envelope (§2.3)."""
        raise NotImplementedError

    def encode_to_client(self, msg: ToClient) -> bytes | str:
        """Encode a WebSocket frame for the client (``str`` means a text frame)."""
        raise NotImplementedError

    def decode_to_server(self, data: bytes | str) -> ToServer:
        """Decode a WebSocket frame received from the client."""
        raise NotImplementedError

    # MARK: client side

    def encode_action_request(self, args: list[Any] | tuple[Any, ...]) -> bytes:
        """Encode the body of ``POST /action/{name}``."""
        raise NotImplementedError

    def decode_action_response(self, body: bytes) -> Any:
        """Decode a successful action response body into the output value."""
        raise NotImplementedError

    def encode_queue_send_request(self, req: HttpQueueSendRequest) -> bytes:
        """Encode the body of ``POST /queue/{name}``."""
        raise NotImplementedError

    def decode_queue_send_response(self, body: bytes) -> HttpQueueSendResponse:
        """Decode the answer to a queue send."""
        raise NotImplementedError

    def decode_http_error(self, body: bytes) -> HttpResponseError:
        """Decode an HTTP error envelope."""
        raise NotImplementedError

    def encode_to_server(self, msg: ToServer) -> bytes | str:
        """Encode a WebSocket frame for the server (``str`` means a text frame)."""
        raise NotImplementedError

    def decode_to_client(self, data: bytes | str) -> ToClient:
        """Decode a WebSocket frame received from the server."""
        raise NotImplementedError


class _TreeCodec(Codec):
    """Shared logic of json and cbor: the same object shapes, different value mapping."""

    def _value(self, value: Any) -> Any:
        raise NotImplementedError

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
        return _args(_obj(self._load(body), "action request").get("args"))

    def encode_action_response(self, output: Any) -> bytes:
        return self._dump({"output": self._value(output)})

    def decode_queue_send_request(self, body: bytes) -> HttpQueueSendRequest:
        what = "queue send request"
        obj = _obj(self._load(body), what)
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
        tag, val = _body(self._load(data), what)
        if tag == "ActionRequest":
            what = "ActionRequest"
            return ActionRequest(
                _uint(val.get("id"), "id", what), _str(val, "name", what), _args(val.get("args"))
            )
        if tag == "SubscriptionRequest":
            what = "SubscriptionRequest"
            return SubscriptionRequest(_str(val, "eventName", what), _bool(val, "subscribe", what))
        raise DecodeError(f"{what}: unknown tag {tag!r}")

    # client side

    def encode_action_request(self, args: list[Any] | tuple[Any, ...]) -> bytes:
        return self._dump({"args": self._value(list(args))})

    def decode_action_response(self, body: bytes) -> Any:
        return _obj(self._load(body), "action response").get("output")

    def encode_queue_send_request(self, req: HttpQueueSendRequest) -> bytes:
        out: dict[str, Any] = {"body": self._value(req.body)}
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
            val = {"id": self._id(msg.id), "name": msg.name, "args": self._value(list(msg.args))}
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
            return Event(_str(val, "name", "Event"), _args(val.get("args")))
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
        return to_compat(value)

    def _id(self, value: int) -> Any:
        return ["$BigInt", int.__repr__(value)]

    def _ws_generation(self, value: int) -> Any:
        return value

    def _dump(self, value: Any) -> bytes:
        return orjson.dumps(value)

    def _load(self, data: bytes | str) -> Any:
        return _revive_json(data)

    def _frame(self, data: bytes) -> bytes | str:
        return data.decode()

    # Hot paths, specialised: skip the compat revive when the body has no "$ at all.

    def decode_action_request(self, body: bytes) -> list[Any]:
        obj = _json_loads(body)
        if type(obj) is not dict:
            raise DecodeError(f"action request: expected an object, got {_kind(obj)}")
        args = obj.get("args")
        if _may_have_tags(body):
            args = from_compat(args)
        return _args(args)

    def encode_action_response(self, output: Any) -> bytes:
        return orjson.dumps({"output": to_compat(output)})


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

    def _load(self, data: bytes | str) -> Any:
        if isinstance(data, str):
            raise DecodeError("cbor: expected binary data, got a text frame")
        return cbor_loads(data)


# ---------------------------------------------------------------------------------------------
# BARE

_ALL_VERSIONS: Final = (1, 2, 3, 4)
_QUEUE_VERSIONS: Final = (3, 4)


def _binary(data: bytes | str) -> bytes:
    if isinstance(data, str):
        raise DecodeError("bare: expected binary data, got a text frame")
    return data


def _write_actor(w: Writer, actor: ActorSpecifier | None) -> None:
    if w.write_present(actor is not None):
        assert actor is not None
        w.write_str(actor.actor_id)
        w.write_uint(actor.generation)
        w.write_optional_str(actor.key)


def _read_actor(r: Reader, version: int) -> ActorSpecifier | None:
    if version < 4 or not r.read_present():
        return None
    return ActorSpecifier(r.read_str(), r.read_uint(), r.read_optional_str())


def _metadata_bytes(metadata: Any) -> bytes | None:
    return None if metadata is None else cbor_dumps_compat(metadata)


def _metadata_value(raw: bytes | None) -> Any:
    return None if raw is None else cbor_loads(raw)


class _BareCodec(Codec):
    encoding: Encoding = "bare"
    content_type = CONTENT_TYPES["bare"]
    binary = True

    # server side

    def decode_action_request(self, body: bytes) -> list[Any]:
        _, r = read_version(body, _ALL_VERSIONS, what="HttpActionRequest")
        raw = r.read_data()
        r.finish()
        return _args(cbor_loads(raw))

    def encode_action_response(self, output: Any) -> bytes:
        raw = cbor_dumps_compat(output)
        return VERSION_PREFIX + encode_uint(len(raw)) + raw

    def decode_queue_send_request(self, body: bytes) -> HttpQueueSendRequest:
        _, r = read_version(body, _QUEUE_VERSIONS, what="HttpQueueSendRequest")
        raw = r.read_data()
        name = r.read_optional_str()
        wait = r.read_optional_bool()
        timeout = r.read_optional_u64()
        r.finish()
        return HttpQueueSendRequest(cbor_loads(raw), name, wait, timeout)

    def encode_queue_send_response(self, resp: HttpQueueSendResponse) -> bytes:
        w = Writer(version=4)
        w.write_str(resp.status)
        if w.write_present(resp.response is not MISSING):
            w.write_data(cbor_dumps_compat(resp.response))
        return w.getvalue()

    def encode_http_error(self, err: HttpResponseError) -> bytes:
        w = Writer(version=4)
        w.write_str(err.group)
        w.write_str(err.code)
        w.write_str(err.message)
        w.write_optional_data(_metadata_bytes(err.metadata))
        _write_actor(w, err.actor)
        return w.getvalue()

    def encode_to_client(self, msg: ToClient) -> bytes | str:
        if type(msg) is ActionResponse:
            raw = cbor_dumps_compat(msg.output)
            return b"\x04\x00\x02" + encode_uint(msg.id) + encode_uint(len(raw)) + raw
        w = Writer(version=4)
        if type(msg) is Event:
            w.write_u8(3)
            w.write_str(msg.name)
            w.write_data(cbor_dumps_compat(list(msg.args)))
        elif type(msg) is Error:
            w.write_u8(1)
            w.write_str(msg.group)
            w.write_str(msg.code)
            w.write_str(msg.message)
            w.write_optional_data(_metadata_bytes(msg.metadata))
            w.write_optional_uint(msg.action_id)
            _write_actor(w, msg.actor)
        elif type(msg) is Init:
            w.write_u8(0)
            w.write_str(msg.actor_id)
            w.write_str(msg.connection_id)
        else:
            raise TypeError(f"not a to-client message: {type(msg).__name__}")
        return w.getvalue()

    def decode_to_server(self, data: bytes | str) -> ToServer:
        _, r = read_version(_binary(data), _ALL_VERSIONS, what="ToServer")
        tag = r.read_uint()
        msg: ToServer
        if tag == 0:
            msg = ActionRequest(r.read_uint(), r.read_str(), _args(cbor_loads(r.read_data())))
        elif tag == 1:
            msg = SubscriptionRequest(r.read_str(), r.read_bool())
        else:
            raise DecodeError(f"BARE ToServer: unknown union tag {tag}")
        r.finish()
        return msg

    # client side

    def encode_action_request(self, args: list[Any] | tuple[Any, ...]) -> bytes:
        raw = cbor_dumps_compat(list(args))
        return VERSION_PREFIX + encode_uint(len(raw)) + raw

    def decode_action_response(self, body: bytes) -> Any:
        _, r = read_version(body, _ALL_VERSIONS, what="HttpActionResponse")
        raw = r.read_data()
        r.finish()
        return cbor_loads(raw)

    def encode_queue_send_request(self, req: HttpQueueSendRequest) -> bytes:
        w = Writer(version=4)
        w.write_data(cbor_dumps_compat(req.body))
        w.write_optional_str(req.name)
        w.write_optional_bool(req.wait)
        w.write_optional_u64(req.timeout)
        return w.getvalue()

    def decode_queue_send_response(self, body: bytes) -> HttpQueueSendResponse:
        _, r = read_version(body, _QUEUE_VERSIONS, what="HttpQueueSendResponse")
        status = r.read_str()
        raw = r.read_optional_data()
        r.finish()
        return HttpQueueSendResponse(status, MISSING if raw is None else cbor_loads(raw))

    def decode_http_error(self, body: bytes) -> HttpResponseError:
        version, r = read_version(body, _ALL_VERSIONS, what="HttpResponseError")
        group, code, message = r.read_str(), r.read_str(), r.read_str()
        metadata = r.read_optional_data()
        actor = _read_actor(r, version)
        r.finish()
        return HttpResponseError(group, code, message, _metadata_value(metadata), actor)

    def encode_to_server(self, msg: ToServer) -> bytes | str:
        w = Writer(version=4)
        if type(msg) is ActionRequest:
            w.write_u8(0)
            w.write_uint(msg.id)
            w.write_str(msg.name)
            w.write_data(cbor_dumps_compat(list(msg.args)))
        elif type(msg) is SubscriptionRequest:
            w.write_u8(1)
            w.write_str(msg.event_name)
            w.write_bool(msg.subscribe)
        else:
            raise TypeError(f"not a to-server message: {type(msg).__name__}")
        return w.getvalue()

    def decode_to_client(self, data: bytes | str) -> ToClient:
        version, r = read_version(_binary(data), _ALL_VERSIONS, what="ToClient")
        tag = r.read_uint()
        msg: ToClient
        if tag == 0:
            actor_id, connection_id = r.read_str(), r.read_str()
            if version == 1:
                r.read_str()  # v1 connectionToken, dropped like the client's v1->v2 converter
            msg = Init(actor_id, connection_id)
        elif tag == 1:
            group, code, message = r.read_str(), r.read_str(), r.read_str()
            metadata = r.read_optional_data()
            action_id = r.read_optional_uint()
            actor = _read_actor(r, version)
            msg = Error(group, code, message, _metadata_value(metadata), action_id, actor)
        elif tag == 2:
            msg = ActionResponse(r.read_uint(), cbor_loads(r.read_data()))
        elif tag == 3:
            msg = Event(r.read_str(), _args(cbor_loads(r.read_data())))
        else:
            raise DecodeError(f"BARE ToClient: unknown union tag {tag}")
        r.finish()
        return msg


JSON: Final[Codec] = _JsonCodec()
"""The json codec."""

CBOR: Final[Codec] = _CborCodec()
"""The cbor codec."""

BARE: Final[Codec] = _BareCodec()
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
