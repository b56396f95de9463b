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
"""

from __future__ import annotations

from typing import Final

from rivetkit._protocol import DecodeError

__all__ = [
    "CURRENT_VERSION",
    "VERSION_PREFIX",
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
        result = 0
        shift = 0
        start = pos
        while True:
            if pos >= n:
                raise DecodeError(f"BARE: truncated uint at offset {start}")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                if byte == 0 and pos - start > 1:
                    raise DecodeError(f"BARE: non-canonical uint at offset {start}")
                break
            shift += 7
            if shift >= 70:
                raise DecodeError(f"BARE: uint longer than 10 bytes at offset {start}")
        if result > _U64_MAX:
            raise DecodeError(f"BARE: uint overflows 64 bits at offset {start}")
        self._pos = pos
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
