"""Wire encodings of the client protocol: one :class:`Codec` each for json, cbor and bare.

A codec turns :mod:`~rivetkit._protocol.messages` and Python values into HTTP bodies and
WebSocket frames and back, for both sides of the connection:

* server side: ``decode_action_request``, ``encode_action_response``,
  ``decode_queue_send_request``, ``encode_queue_send_response``, ``encode_http_error``,
  ``encode_to_client``, ``decode_to_server``;
* client side: the mirror images (``encode_action_request``, ``decode_to_client``, ...).

How each encoding carries values (spec §6.2, §8.4):

* **json**: ``{"body":{"tag":...,"val":{...}}}`` envelopes through :func:`~.values.to_compat`; ids are
  ``["$BigInt","n"]``. WebSocket frames are text (``str``).
* **cbor**: the same shapes with native values (:func:`~.cbor.prepare_native`); ids (and WebSocket
  ``actor.generation``) use the 8-byte integer form so the client sees ``bigint``. Like the
  official client, what the server sends is escaped and revived, what the client sends is raw.
* **bare**: v4 structs with a ``04 00`` prefix; ``Cbor`` fields hold CBOR of the compat tree.
  Requests and server answers of versions 1-4 are accepted, v4 is always written.

Every decoder raises :class:`~rivetkit._protocol.DecodeError` for malformed input.

This module is the public face: the codec interface, the singletons and encoding selection.
The json codec lives here; the base it shares with cbor (and :data:`Encoding`,
:data:`CONTENT_TYPES`) is in :mod:`._codec_base`, the cbor codec in :mod:`._cbor_codec`, the
bare codec in :mod:`.bare`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

import orjson

from rivetkit._protocol import DecodeError
from rivetkit._protocol._cbor_codec import _CborCodec
from rivetkit._protocol._codec_base import CONTENT_TYPES, ENCODINGS, Encoding, _kind, _TreeCodec
from rivetkit._protocol.bare import BARE_CODEC
from rivetkit._protocol.messages import (
    ActionResponse,
    Event,
    HttpQueueSendRequest,
    HttpQueueSendResponse,
    HttpResponseError,
    ToClient,
    ToServer,
    normalize_args,
)
from rivetkit._protocol.values import (
    from_compat,
    json_dumps_compat,
    json_loads_compat,
    json_may_have_tags,
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

SUBPROTOCOL_PREFIX: Final = "rivet_encoding."


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
