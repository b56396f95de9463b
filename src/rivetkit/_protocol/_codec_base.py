"""What the codec modules share: the encoding names and content types, and the json/cbor base.

json and cbor carry the same object shapes (``{"body":{"tag":...,"val":{...}}}`` frames, plain
objects over HTTP) and differ only in how values, ids and bytes are mapped. :class:`_TreeCodec`
implements every :class:`~rivetkit._protocol.encoding.Codec` method on those shapes;
``encoding._JsonCodec`` and :class:`~rivetkit._protocol._cbor_codec._CborCodec` supply the value
mapping. The public names here are re-exported by :mod:`rivetkit._protocol.encoding`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

from rivetkit._protocol import DecodeError
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
from rivetkit._protocol.values import BigInt

__all__ = ["CONTENT_TYPES", "ENCODINGS", "Encoding"]

Encoding = Literal["json", "cbor", "bare"]

ENCODINGS: Final[tuple[Encoding, ...]] = ("json", "cbor", "bare")

CONTENT_TYPES: Final[Mapping[Encoding, str]] = {
    "json": "application/json",
    "cbor": "application/octet-stream",
    "bare": "application/octet-stream",
}
"""``Content-Type`` of request and response bodies per encoding."""

_U64_MAX: Final = 2**64 - 1


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
