"""CBOR for the value model: the native encoder of the cbor encoding and a width-aware decoder.

The cbor *encoding* (spec §6.2) carries values natively: bigints as 8-byte CBOR integers
(``1b``/``3b``), bytes as byte strings, plain integers that need more than 32 bits as float64
(a JS number, as cbor-x writes them). :func:`prepare_native` turns Python values into that form,
:func:`cbor_dumps_native` writes an envelope of them and :func:`cbor_value_native` does both
for one value. BARE ``Cbor`` fields and actor input use CBOR of the JSON-compat tree instead
(:func:`cbor_dumps_compat`).

:func:`cbor_loads` decodes either: 8-byte integers and bignums become :class:`BigInt`, and with
``revive=True`` ``$`` compat tags are revived as :func:`~rivetkit._protocol.values.from_compat`
does. The value model itself (:class:`BigInt`, the compat layer, JSON) lives in
:mod:`rivetkit._protocol.values`.
"""

from __future__ import annotations

import enum
import io
import struct
import uuid
from collections.abc import Callable
from typing import Any, Final

import cbor2
import orjson

from rivetkit._protocol import DecodeError
from rivetkit._protocol.values import (
    _PLAIN_OPTIONS,
    _TAG_LIKE,
    _U32,
    MAX_SAFE_INTEGER,
    BigInt,
    _check_key,
    _compat,
    _NotPlain,
    _object_fields,
    _revive,
)

__all__ = [
    "cbor_dumps_compat",
    "cbor_dumps_native",
    "cbor_loads",
    "cbor_value_native",
    "prepare_native",
]

_U64: Final = 2**64


# ---------------------------------------------------------------------------------------------
# Fast path: values that cbor2 can write as they are (see the fast-path notes in
# :mod:`rivetkit._protocol.values`; the same orjson check, plus integer width).

# For the CBOR check, digits become "0" and everything but '[', '"', '$' a space, so that
# integers that may need more than 32 bits show up as ten zeros (digit runs inside strings or
# floats match too, which only costs a detour through the slow path).
_CBOR_CHECK_TABLE: Final = bytes(
    0x30 if 0x30 <= i <= 0x39 else i if i in b'["$' else 0x20 for i in range(256)
)
_TEN_DIGITS: Final = b"0" * 10


def _refuse(value: Any) -> Any:
    raise _NotPlain


def _is_plain_for_cbor(value: Any) -> bool:
    """True if ``cbor2.dumps(value)`` is already what the compat/native transforms produce."""
    t = type(value)
    if t is str or t is bool or t is float or value is None:
        return True
    if t is int:
        return -_U32 <= value < _U32  # type: ignore[no-any-return]
    try:
        out = orjson.dumps(value, default=_refuse, option=_PLAIN_OPTIONS)
    except orjson.JSONEncodeError:
        return False
    out = out.translate(_CBOR_CHECK_TABLE)
    return out.find(_TAG_LIKE) < 0 and out.find(_TEN_DIGITS) < 0  # (find: see cbor_loads)


# ---------------------------------------------------------------------------------------------
# CBOR encoding


def _encode_bigint(encoder: cbor2.CBOREncoder, value: int) -> None:
    # cbor-x yields a JS bigint only for the 8-byte integer forms (or bignum tags).
    if 0 <= value < _U64:
        encoder.write(b"\x1b" + value.to_bytes(8, "big"))
    elif -_U64 <= value < 0:
        encoder.write(b"\x3b" + (-1 - value).to_bytes(8, "big"))
    else:
        encoder.encode_int(int(value))  # cbor2 writes tag 2/3 bignums


_NATIVE_ENCODERS: Final[dict[type, Callable[[cbor2.CBOREncoder, Any], None]]] = {
    BigInt: _encode_bigint
}


def _native(value: Any, escape: bool) -> Any:
    t = type(value)
    if t is str or t is float or t is bool or value is None or t is bytes or t is BigInt:
        return value
    if t is int:
        if -_U32 <= value < _U32:
            return value
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return float(value)  # a JS number, like cbor-x writes it
        return BigInt(value)
    if t is dict:
        dout: dict[str, Any] | None = None
        for key, item in value.items():
            if type(key) is not str:
                return {_check_key(k): _native(v, escape) for k, v in value.items()}
            new = _native(item, escape)
            if new is not item:
                if dout is None:
                    dout = dict(value)
                dout[key] = new
        return value if dout is None else dout
    if t is list or t is tuple:
        out: list[Any] | None = None
        for i, item in enumerate(value):
            new = _native(item, escape)
            if out is None:
                if new is item:
                    continue
                out = list(value[:i])
            out.append(new)
        if out is None:
            out = value if t is list else list(value)
        if escape and len(out) == 2:
            head = out[0]
            if type(head) is str and head.startswith("$"):
                return ["$" + head, out[1]]
        return out
    if t is bytearray or t is memoryview:
        return bytes(value)
    if isinstance(value, BigInt):
        return BigInt(value)
    if isinstance(value, (set, frozenset)):
        return ["$Set", [_native(item, escape) for item in value]]
    if isinstance(value, enum.Enum):
        return _native(value.value, escape)
    if isinstance(value, int):
        return _native(int(value), escape)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    fields = _object_fields(value)
    if fields is not None:
        return _native(fields, escape)
    if isinstance(value, dict):
        return _native(dict(value), escape)
    if isinstance(value, (list, tuple)):
        return _native(list(value), escape)
    raise TypeError(f"value of type {type(value).__qualname__} is not serializable: {value!r}")


def prepare_native(value: Any, *, escape: bool = True) -> Any:
    """Prepare a Python value for the CBOR *encoding* (native values, no compat tags).

    Bigints stay integers (written in the 8-byte form by :func:`cbor_dumps_native`), bytes stay
    byte strings, plain integers needing more than 32 bits become float64 (a JS number).

    Args:
        value: the value (same types as :func:`to_compat`).
        escape: escape tag-like ``["$x", v]`` arrays as ``["$$x", v]``. The client revives
            compat tags after CBOR-decoding what the *server* sends, so server output escapes;
            it sends its own requests raw, so client-side encoding does not.

    Raises:
        TypeError: for unsupported types and non-``str`` dict keys.
    """
    return _native(value, escape)


def cbor_dumps_native(envelope: Any) -> bytes:
    """CBOR-encode an envelope whose values went through :func:`prepare_native`.

    :class:`BigInt` instances anywhere in ``envelope`` are written as 8-byte integers
    (``1b``/``3b``) or bignum tags, so the client decodes them as ``bigint``.
    """
    return cbor2.dumps(envelope, encoders=_NATIVE_ENCODERS)


def cbor_value_native(value: Any, *, escape: bool = True) -> bytes:
    """``cbor_dumps_native(prepare_native(value, escape=escape))``, faster for plain data.

    Raises:
        TypeError: for unsupported types and non-``str`` dict keys.
    """
    if _is_plain_for_cbor(value):
        return cbor2.dumps(value)
    return cbor2.dumps(_native(value, escape), encoders=_NATIVE_ENCODERS)


def cbor_dumps_compat(value: Any) -> bytes:
    """CBOR-encode ``value`` after the compat transform (a BARE ``Cbor`` field, actor input).

    Raises:
        TypeError: for unsupported types and non-``str`` dict keys.
    """
    if _is_plain_for_cbor(value):
        return cbor2.dumps(value)
    return cbor2.dumps(_compat(value, True))


# ---------------------------------------------------------------------------------------------
# CBOR decoding
#
# cbor-x writes a JS bigint as an 8-byte integer (``1b``/``3b``) and never uses that form for a
# number, so those integers decode to BigInt. cbor2 cannot tell us the width of an integer, so
# payloads that contain such a byte at all go through a small pure-Python decoder instead; the
# rest (almost everything) use cbor2.

_MAX_DEPTH: Final = 256


def _bignum(value: Any, negative: bool) -> BigInt:
    if not isinstance(value, (bytes, bytearray)):
        raise DecodeError("invalid CBOR: bignum tag must wrap a byte string")
    n = int.from_bytes(value, "big")
    return BigInt(-1 - n if negative else n)


def _semantic_tag64(value: Any, immutable: bool) -> Any:
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value


_SEMANTIC_DECODERS: Final[dict[int, Callable[[Any, bool], Any]]] = {
    2: lambda value, immutable: _bignum(value, False),
    3: lambda value, immutable: _bignum(value, True),
    64: _semantic_tag64,  # cbor-x writes Uint8Array as tag 64
    258: lambda value, immutable: list(value),  # a JS Set, like "$Set": a list
}


def _cbor2_loads(data: bytes) -> Any:
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp, semantic_decoders=_SEMANTIC_DECODERS).decode()
    except Exception as exc:  # noqa: BLE001 - any failure on untrusted bytes is a DecodeError
        cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        raise DecodeError(f"invalid CBOR: {exc}{cause}") from None
    end = fp.tell()
    if end != len(data):
        raise DecodeError(f"invalid CBOR: {len(data) - end} trailing byte(s) after document")
    return value


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    if isinstance(key, dict):
        return cbor2.frozendict({k: _hashable(v) for k, v in key.items()})
    return key


class _SlowDecoder:
    """Strict CBOR decoder that keeps the integer width (``1b``/``3b`` -> :class:`BigInt`)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise DecodeError("invalid CBOR: premature end of data")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def head(self) -> tuple[int, int, int]:
        """Return ``(major, additional info, argument)``; the argument is -1 if indefinite."""
        ib = self.take(1)[0]
        major, ai = ib >> 5, ib & 31
        if ai < 24:
            return major, ai, ai
        if ai <= 27:
            return major, ai, int.from_bytes(self.take(1 << (ai - 24)), "big")
        if ai == 31 and major in (2, 3, 4, 5, 7):
            return major, ai, -1
        raise DecodeError(f"invalid CBOR: reserved additional info {ai} (major type {major})")

    def chunks(self, major: int) -> bytes:
        parts = []
        while self.data[self.pos : self.pos + 1] != b"\xff":
            m, _, n = self.head()
            if m != major or n < 0:
                raise DecodeError("invalid CBOR: bad chunk in indefinite-length string")
            parts.append(self.take(n))
        self.pos += 1
        return b"".join(parts)

    def item(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise DecodeError("invalid CBOR: nested too deeply")
        start = self.pos
        major, ai, n = self.head()
        if major == 0:
            return BigInt(n) if ai == 27 else n
        if major == 1:
            return BigInt(-1 - n) if ai == 27 else -1 - n
        if major == 2:
            return self.take(n) if n >= 0 else self.chunks(2)
        if major == 3:
            raw = self.take(n) if n >= 0 else self.chunks(3)
            try:
                return raw.decode()
            except UnicodeDecodeError as exc:
                raise DecodeError(f"invalid CBOR: {exc}") from None
        if major == 4:
            items = []
            if n < 0:
                while self.data[self.pos : self.pos + 1] != b"\xff":
                    items.append(self.item(depth + 1))
                self.pos += 1
            else:
                for _ in range(n):
                    items.append(self.item(depth + 1))
            return items
        if major == 5:
            out: dict[Any, Any] = {}
            count = n
            while count != 0:
                if n < 0 and self.data[self.pos : self.pos + 1] == b"\xff":
                    self.pos += 1
                    break
                key = self.item(depth + 1)
                try:
                    out[_hashable(key)] = self.item(depth + 1)
                except TypeError as exc:
                    raise DecodeError(f"invalid CBOR: unhashable map key: {exc}") from None
                count -= 1
            return out
        if major == 6:
            value = self.item(depth + 1)
            if n == 2 or n == 3:
                return _bignum(value, n == 3)
            if n == 64 and isinstance(value, bytes):
                return value
            if n == 258 and isinstance(value, list):
                return value
            # Any other tag: let cbor2 apply its own semantics to this self-contained item.
            return _cbor2_loads(self.data[start : self.pos])
        # major 7
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 23:
            return cbor2.undefined
        if ai == 25:
            return struct.unpack(">e", n.to_bytes(2, "big"))[0]
        if ai == 26:
            return struct.unpack(">f", n.to_bytes(4, "big"))[0]
        if ai == 27:
            return struct.unpack(">d", n.to_bytes(8, "big"))[0]
        if ai == 31:
            raise DecodeError("invalid CBOR: unexpected break")
        return cbor2.CBORSimpleValue(n)


def _loads_keeping_width(data: bytes) -> Any:
    decoder = _SlowDecoder(data)
    try:
        value = decoder.item(0)
    except RecursionError:
        raise DecodeError("invalid CBOR: nested too deeply") from None
    except DecodeError:
        raise
    except (ValueError, OverflowError, struct.error) as exc:
        raise DecodeError(f"invalid CBOR: {exc}") from None
    if decoder.pos != len(data):
        raise DecodeError(
            f"invalid CBOR: {len(data) - decoder.pos} trailing byte(s) after document"
        )
    return value


# Bytes that may need more than cbor2: 8-byte integers (1b, 3b), "$" (24), undefined (f7) and
# float64 (fb). One translate() pass keeps just those; most payloads have none.
_NOT_SPECIAL: Final = bytes(i for i in range(256) if i not in (0x1B, 0x3B, 0x24, 0xF7, 0xFB))


def cbor_loads(data: bytes | bytearray | memoryview, *, revive: bool = True) -> Any:
    """Decode exactly one CBOR document into Python values.

    8-byte integers and bignums become :class:`BigInt` (cbor-x writes bigints that way and
    never numbers), tag 64 (``Uint8Array``) becomes ``bytes``, tag 258 (``Set``) a list,
    ``undefined`` becomes ``None`` and integral float64 values beyond 31 bits become ``int``
    (cbor-x writes such JS numbers as floats).

    Args:
        data: the CBOR bytes.
        revive: also revive ``$`` compat tags (:func:`from_compat` rules). Use ``True`` for
            BARE ``Cbor`` fields and for what a server sends in the CBOR encoding; ``False``
            for what a client sends in the CBOR encoding (the client writes raw values).

    Raises:
        DecodeError: on malformed or truncated CBOR, trailing bytes, or a bad compat tag.
    """
    if type(data) is not bytes:
        data = bytes(data)
    special = data.translate(None, _NOT_SPECIAL)
    if not special:
        return _cbor2_loads(data)
    # int operands: `bytes in bytes` first tries the operand as an int and formats a TypeError.
    if 0x1B in special or 0x3B in special:
        value = _loads_keeping_width(data)
    else:
        value = _cbor2_loads(data)
    if (revive and 0x24 in special) or 0xF7 in special or 0xFB in special:
        try:
            return _revive(value, revive, True)
        except RecursionError:
            raise DecodeError("value nested too deeply") from None
    return value
