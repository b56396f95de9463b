"""BARE primitives and the 2-byte version framing of the client protocol.

This is the small subset of BARE (https://baremessages.org) the client protocol needs:

* ``uint``: unsigned LEB128 varint (at most 10 bytes, canonical, < 2**64)
* ``u16``/``u64``: little-endian fixed width
* ``bool``: one byte, 0 or 1
* ``str``/``data``: varint length followed by UTF-8 text / raw bytes
* ``optional<T>``: one byte, 0 (absent) or 1 (present), then ``T``
* ``union``: varint tag then the member; ``struct``: fields in order, no framing

Every client-protocol payload (HTTP bodies and WebSocket frames) starts with a u16
little-endian protocol version (:func:`read_version`, :data:`VERSION_PREFIX`). The decoders
are strict like the generated TypeScript ones: truncated input, trailing bytes, a bool or
optional flag other than 0/1, a non-canonical or oversized varint and invalid UTF-8 all raise
:class:`~rivetkit._protocol.DecodeError`.

The second half of the module is :class:`BareCodec`, the ``bare`` implementation of
:class:`rivetkit._protocol.encoding.Codec`: the v4 messages of spec §6.4 on top of these
primitives, reading the older versions 1-3 as the client's converters do (v1 ``Init`` carries
a ``connectionToken`` that is dropped; before v4 errors carry no ``actor``).
"""

from __future__ import annotations

from typing import Any, Final

from rivetkit._protocol import DecodeError
from rivetkit._protocol.bare_runtime import read_uint
from rivetkit._protocol.cbor import cbor_dumps_compat, cbor_loads
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

__all__ = [
    "BARE_CODEC",
    "CURRENT_VERSION",
    "VERSION_PREFIX",
    "BareCodec",
    "Reader",
    "Writer",
    "encode_uint",
    "read_version",
]

CURRENT_VERSION: Final = 4
"""Client protocol version we always write."""

VERSION_PREFIX: Final = CURRENT_VERSION.to_bytes(2, "little")
"""``04 00``: the prefix of every BARE payload we write."""

_U64_MAX: Final = (1 << 64) - 1

# Single-byte varints are by far the most common (ids, short strings); precompute them.
_SMALL_UINTS: Final = tuple(bytes((i,)) for i in range(128))


def encode_uint(value: int) -> bytes:
    """Encode an unsigned LEB128 varint.

    Args:
        value: integer in ``[0, 2**64)``.

    Returns:
        The varint bytes (1 to 10 bytes).

    Raises:
        ValueError: if ``value`` is negative or does not fit in 64 bits.
    """
    if 0 <= value < 128:
        return _SMALL_UINTS[value]
    if value < 0 or value > _U64_MAX:
        raise ValueError(f"uint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Writer:
    """Append-only BARE encoder over a ``bytearray``.

    Args:
        version: when given, the payload starts with this u16 little-endian version.

    Example::

        w = Writer(version=4)
        w.write_str("newCount")
        w.write_bool(True)
        frame = w.getvalue()
    """

    __slots__ = ("_buf",)

    def __init__(self, version: int | None = None) -> None:
        self._buf = bytearray()
        if version is not None:
            self.write_u16(version)

    def getvalue(self) -> bytes:
        """Return everything written so far."""
        return bytes(self._buf)

    def write_uint(self, value: int) -> None:
        """Write a ``uint`` (LEB128 varint)."""
        if 0 <= value < 128:
            self._buf.append(value)
        else:
            self._buf += encode_uint(value)

    def write_u8(self, value: int) -> None:
        """Write a ``u8``."""
        self._buf.append(value)

    def write_u16(self, value: int) -> None:
        """Write a little-endian ``u16``."""
        self._buf += value.to_bytes(2, "little")

    def write_u64(self, value: int) -> None:
        """Write a little-endian ``u64``.

        Raises:
            ValueError: if ``value`` is negative or does not fit in 64 bits.
        """
        if value < 0 or value > _U64_MAX:
            raise ValueError(f"u64 out of range: {value}")
        self._buf += value.to_bytes(8, "little")

    def write_bool(self, value: bool) -> None:
        """Write a ``bool`` (one byte, 0 or 1)."""
        self._buf.append(1 if value else 0)

    def write_data(self, value: bytes | bytearray | memoryview) -> None:
        """Write ``data``: varint length then the bytes."""
        self.write_uint(len(value))
        self._buf += value

    def write_str(self, value: str) -> None:
        """Write ``str``: varint byte length then UTF-8."""
        self.write_data(value.encode())

    def write_present(self, present: bool) -> bool:
        """Write the flag byte of an ``optional<T>`` and return ``present``.

        The caller writes the value itself when this returns ``True``.
        """
        self._buf.append(1 if present else 0)
        return present

    def write_optional_str(self, value: str | None) -> None:
        """Write an ``optional<str>``; ``None`` means absent."""
        if self.write_present(value is not None):
            self.write_str(value)  # type: ignore[arg-type]

    def write_optional_data(self, value: bytes | None) -> None:
        """Write an ``optional<data>``; ``None`` means absent."""
        if self.write_present(value is not None):
            self.write_data(value)  # type: ignore[arg-type]

    def write_optional_uint(self, value: int | None) -> None:
        """Write an ``optional<uint>``; ``None`` means absent."""
        if self.write_present(value is not None):
            self.write_uint(value)  # type: ignore[arg-type]

    def write_optional_u64(self, value: int | None) -> None:
        """Write an ``optional<u64>``; ``None`` means absent."""
        if self.write_present(value is not None):
            self.write_u64(value)  # type: ignore[arg-type]

    def write_optional_bool(self, value: bool | None) -> None:
        """Write an ``optional<bool>``; ``None`` means absent."""
        if self.write_present(value is not None):
            self.write_bool(bool(value))


class Reader:
    """Strict BARE decoder over an immutable buffer.

    Every read raises :class:`DecodeError` when the input is truncated or malformed;
    call :meth:`finish` after the last field to reject trailing bytes.

    Args:
        data: the bytes to decode.
        offset: where decoding starts.
    """

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self._data = bytes(data) if not isinstance(data, bytes) else data
        self._pos = offset

    @property
    def offset(self) -> int:
        """Current read position."""
        return self._pos

    def remaining(self) -> int:
        """Number of unread bytes."""
        return len(self._data) - self._pos

    def finish(self) -> None:
        """Assert that the whole input was consumed.

        Raises:
            DecodeError: if bytes remain.
        """
        extra = len(self._data) - self._pos
        if extra:
            raise DecodeError(f"BARE: {extra} trailing byte(s) after message")

    def _take(self, n: int, what: str) -> bytes:
        pos = self._pos
        end = pos + n
        if end > len(self._data):
            raise DecodeError(
                f"BARE: truncated {what}: need {n} byte(s) at offset {pos}, "
                f"have {len(self._data) - pos}"
            )
        self._pos = end
        return self._data[pos:end]

    def read_u8(self) -> int:
        """Read a ``u8``."""
        pos = self._pos
        if pos >= len(self._data):
            raise DecodeError(f"BARE: truncated u8 at offset {pos}")
        self._pos = pos + 1
        return self._data[pos]

    def read_uint(self) -> int:
        """Read a ``uint`` (canonical LEB128 varint, < 2**64)."""
        data = self._data
        pos = self._pos
        n = len(data)
        if pos < n and data[pos] < 0x80:  # fast path: one byte
            self._pos = pos + 1
            return data[pos]
        try:
            result, self._pos = read_uint(data, pos)
        except IndexError:
            raise DecodeError(f"BARE: truncated uint at offset {pos}") from None
        return result

    def read_u16(self) -> int:
        """Read a little-endian ``u16``."""
        return int.from_bytes(self._take(2, "u16"), "little")

    def read_u64(self) -> int:
        """Read a little-endian ``u64``."""
        return int.from_bytes(self._take(8, "u64"), "little")

    def read_bool(self) -> bool:
        """Read a ``bool``; any byte other than 0 or 1 is an error."""
        pos = self._pos
        value = self.read_u8()
        if value > 1:
            raise DecodeError(f"BARE: invalid bool byte 0x{value:02x} at offset {pos}")
        return value == 1

    def read_present(self) -> bool:
        """Read the flag byte of an ``optional<T>``; ``True`` if the value follows."""
        pos = self._pos
        value = self.read_u8()
        if value > 1:
            raise DecodeError(f"BARE: invalid optional flag 0x{value:02x} at offset {pos}")
        return value == 1

    def read_data(self) -> bytes:
        """Read ``data``."""
        length = self.read_uint()
        return self._take(length, "data")

    def read_str(self) -> str:
        """Read ``str`` (must be valid UTF-8)."""
        pos = self._pos
        raw = self.read_data()
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"BARE: invalid UTF-8 in str at offset {pos}: {exc}") from None

    def read_optional_str(self) -> str | None:
        """Read an ``optional<str>``."""
        return self.read_str() if self.read_present() else None

    def read_optional_data(self) -> bytes | None:
        """Read an ``optional<data>``."""
        return self.read_data() if self.read_present() else None

    def read_optional_uint(self) -> int | None:
        """Read an ``optional<uint>``."""
        return self.read_uint() if self.read_present() else None

    def read_optional_u64(self) -> int | None:
        """Read an ``optional<u64>``."""
        return self.read_u64() if self.read_present() else None

    def read_optional_bool(self) -> bool | None:
        """Read an ``optional<bool>``."""
        return self.read_bool() if self.read_present() else None


def read_version(
    data: bytes | bytearray | memoryview,
    accepted: range | tuple[int, ...] = range(1, CURRENT_VERSION + 1),
    *,
    what: str = "message",
) -> tuple[int, Reader]:
    """Read the u16 little-endian version prefix of a BARE payload.

    Args:
        data: the whole payload.
        accepted: versions the caller can decode.
        what: message name used in error messages.

    Returns:
        ``(version, reader)`` with the reader positioned after the prefix.

    Raises:
        DecodeError: if the payload is shorter than 2 bytes or the version is not accepted.
    """
    if len(data) < 2:
        raise DecodeError(f"BARE {what}: payload of {len(data)} byte(s) has no version prefix")
    version = data[0] | (data[1] << 8)
    if version not in accepted:
        raise DecodeError(
            f"BARE {what}: unsupported protocol version {version} "
            f"(accepted: {', '.join(map(str, accepted))})"
        )
    return version, Reader(data, 2)


# ---------------------------------------------------------------------------------------------
# The bare codec

_ALL_VERSIONS: Final = (1, 2, 3, 4)
_QUEUE_VERSIONS: Final = (3, 4)


def _binary(data: bytes | str) -> bytes:
    if isinstance(data, str):
        raise DecodeError("bare: expected binary data, got a text frame")
    return data


def _write_actor(w: Writer, actor: ActorSpecifier | None) -> None:
    if actor is None:
        w.write_present(False)
        return
    w.write_present(True)
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


class BareCodec:
    """The ``bare`` codec (see :class:`rivetkit._protocol.encoding.Codec` for the methods).

    Writes protocol v4; reads requests and server answers of versions 1-4 (queue messages
    exist from v3). Value fields are CBOR of the compat tree.
    """

    encoding: Final = "bare"
    content_type: Final = "application/octet-stream"
    binary: Final = True

    def __repr__(self) -> str:
        return "<Codec bare>"

    # server side

    def decode_action_request(self, body: bytes) -> list[Any]:
        # Fast path: known version, one-byte length covering the rest of the body.
        n = len(body)
        if 3 < n < 131 and body[1] == 0 and 1 <= body[0] <= 4 and body[2] == n - 3:
            return normalize_args(cbor_loads(body[3:]))
        _, r = read_version(body, _ALL_VERSIONS, what="HttpActionRequest")
        raw = r.read_data()
        r.finish()
        return normalize_args(cbor_loads(raw))

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
            msg = ActionRequest(
                r.read_uint(), r.read_str(), normalize_args(cbor_loads(r.read_data()))
            )
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
            msg = Event(r.read_str(), normalize_args(cbor_loads(r.read_data())))
        else:
            raise DecodeError(f"BARE ToClient: unknown union tag {tag}")
        r.finish()
        return msg


BARE_CODEC: Final[BareCodec] = BareCodec()
"""The ``bare`` codec singleton (also ``rivetkit._protocol.BARE``)."""
