"""The ``cbor`` codec: the json object shapes with native CBOR values (spec §6.2, §8.4).

Values go through :func:`~rivetkit._protocol.cbor.prepare_native`; ids (and WebSocket
``actor.generation``) use the 8-byte integer form so the client sees ``bigint``. Like the
official client, what the server sends is escaped and revived, what the client sends is raw.
Use it through :data:`rivetkit._protocol.encoding.CBOR`.
"""

from __future__ import annotations

from typing import Any, Final

from rivetkit._protocol import DecodeError
from rivetkit._protocol._codec_base import CONTENT_TYPES, Encoding, _TreeCodec
from rivetkit._protocol.cbor import (
    cbor_dumps_native,
    cbor_loads,
    cbor_value_native,
    prepare_native,
)
from rivetkit._protocol.messages import ActionResponse, Event, ToClient
from rivetkit._protocol.values import BigInt


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
