"""The value model shared by all encodings, and the "JSON-compat" layer of the client.

Actor inputs, action args and outputs, event args and queue bodies are *Python values*:
``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list`` and ``dict`` with ``str``
keys, plus :class:`BigInt` to mark a JavaScript ``bigint``. Encoders also accept tuples,
``bytearray``/``memoryview``, sets, dataclass instances, pydantic v2 models and msgspec
Structs and turn them into the plain forms.

JavaScript has values JSON cannot carry, so the RivetKit client represents them as tagged
2-element arrays (spec §6.2)::

    bigint        ["$BigInt", "<decimal>"]
    Uint8Array    ["$Uint8Array", "<standard base64>"]   (ArrayBuffer: "$ArrayBuffer")
    undefined     ["$Undefined", 0]
    Set           ["$Set", [items...]]
    ["$x", v]     ["$$x", v]      (a real array that looks like a tag is escaped)

:func:`to_compat` and :func:`from_compat` convert between Python values and that tree. The
JSON encoding applies it to everything; BARE applies it before CBOR-encoding each ``Cbor``
field; the CBOR encoding keeps values native (see :func:`cbor_dumps_native`) and only revives
tags after decoding, like the client does.

Integer typing follows JavaScript: a plain ``int`` within ``±(2**53 - 1)`` is a JS ``number``;
anything outside that range, and every :class:`BigInt`, is a JS ``bigint``. Because the client's
CBOR decoder turns 8-byte CBOR integers into ``bigint``, CBOR output writes plain integers that
need more than 32 bits as float64 (exact below 2**53), which is what the client itself does;
decoding turns such integral floats back into ``int``.
"""

from __future__ import annotations

import binascii
import dataclasses
import io
from collections.abc import Callable
from typing import Any, Final

import cbor2

from rivetkit._protocol import DecodeError

__all__ = [
    "BigInt",
    "cbor_dumps_compat",
    "cbor_dumps_native",
    "cbor_loads",
    "from_compat",
    "to_compat",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1
_U32: Final = 2**32
_I31: Final = 2**31
_U64: Final = 2**64


class BigInt(int):
    """An ``int`` that travels as a JavaScript ``bigint``.

    Decoding ``["$BigInt", "5"]`` yields ``BigInt(5)``; encoding a ``BigInt`` always produces
    a ``bigint`` on the JS side, even for small values. Arithmetic returns plain ``int``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"BigInt({int.__repr__(self)})"

    __str__ = int.__repr__


# ---------------------------------------------------------------------------------------------
# Python value -> compat tree


def _b64(value: bytes | bytearray | memoryview) -> str:
    return binascii.b2a_base64(value, newline=False).decode("ascii")


def _compat(value: Any, wide_as_float: bool) -> Any:
    t = type(value)
    if t is str or t is float or t is bool or value is None:
        return value
    if t is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            if wide_as_float and not -_U32 <= value < _U32:
                return float(value)
            return value
        return ["$BigInt", int.__repr__(value)]
    if t is dict:
        return _compat_dict(value, wide_as_float)
    if t is list or t is tuple:
        return _compat_list(value, wide_as_float)
    if t is BigInt:
        return ["$BigInt", int.__repr__(value)]
    if t is bytes or t is bytearray or t is memoryview:
        return ["$Uint8Array", _b64(value)]
    return _compat_other(value, wide_as_float)


def _compat_list(value: list[Any] | tuple[Any, ...], wide_as_float: bool) -> list[Any]:
    # Copy on first change: most arrays need no change and are returned as they are.
    lo, hi = (-_U32, _U32) if wide_as_float else (-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1)
    out: list[Any] | None = None
    for i, item in enumerate(value):
        t = type(item)
        if t is str or t is float or t is bool or item is None or (t is int and lo <= item < hi):
            if out is not None:
                out.append(item)
            continue
        new = _compat(item, wide_as_float)
        if out is None:
            if new is item:
                continue
            out = list(value[:i])
        out.append(new)
    if out is None:
        out = value if type(value) is list else list(value)
    if len(out) == 2:
        head = out[0]
        if type(head) is str and head.startswith("$"):
            return ["$" + head, out[1]]
    return out


def _check_key(key: Any) -> str:
    if type(key) is str:
        return key
    if isinstance(key, str):
        return str.__str__(key)
    raise TypeError(f"dict keys must be str to be serialized, got {type(key).__name__}: {key!r}")


def _compat_dict(value: dict[Any, Any], wide_as_float: bool) -> dict[str, Any]:
    lo, hi = (-_U32, _U32) if wide_as_float else (-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1)
    out: dict[str, Any] | None = None
    for key, item in value.items():
        if type(key) is not str:
            return {_check_key(k): _compat(v, wide_as_float) for k, v in value.items()}
        t = type(item)
        if t is str or t is float or t is bool or item is None or (t is int and lo <= item < hi):
            continue
        new = _compat(item, wide_as_float)
        if new is not item:
            if out is None:
                out = dict(value)
            out[key] = new
    return value if out is None else out


def _object_fields(value: Any) -> dict[str, Any] | None:
    """Shallow field dict of a dataclass / pydantic model / msgspec Struct, else ``None``."""
    cls = type(value)
    if dataclasses.is_dataclass(cls):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    struct_fields = getattr(cls, "__struct_fields__", None)
    if struct_fields is not None and cls.__module__ != "builtins":
        return {name: getattr(value, name) for name in struct_fields}
    model_dump = getattr(value, "model_dump", None)
    if model_dump is not None and hasattr(cls, "model_fields"):
        dumped = model_dump(mode="python")
        if isinstance(dumped, dict):
            return dumped
    return None


def _compat_other(value: Any, wide_as_float: bool) -> Any:
    if isinstance(value, BigInt):  # subclasses of BigInt
        return ["$BigInt", int.__repr__(value)]
    if isinstance(value, int):  # IntEnum, IntFlag and other int subclasses: plain numbers
        return _compat(int(value), wide_as_float)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return ["$Set", [_compat(item, wide_as_float) for item in value]]
    fields = _object_fields(value)
    if fields is not None:
        return _compat_dict(fields, wide_as_float)
    if isinstance(value, dict):
        return _compat_dict(dict(value), wide_as_float)
    if isinstance(value, (list, tuple)):
        return _compat_list(list(value), wide_as_float)
    raise TypeError(f"value of type {type(value).__qualname__} is not serializable: {value!r}")


def to_compat(value: Any) -> Any:
    """Convert a Python value to the JSON-compat tree the RivetKit client understands.

    The result may share unchanged containers with ``value``; do not mutate it.

    Args:
        value: ``None``, ``bool``, ``int``, ``float``, ``str``, bytes-like, ``list``/``tuple``,
            ``dict`` with ``str`` keys, ``set``/``frozenset`` (become JS ``Set``), :class:`BigInt`,
            dataclass instances, pydantic v2 models and msgspec Structs, nested freely.
            NaN and infinities pass through (JSON writes them as ``null``).

    Returns:
        A tree of ``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` with bigints,
        bytes and sets replaced by their tagged arrays and tag-like arrays escaped.

    Raises:
        TypeError: for unsupported types and non-``str`` dict keys.

    Example::

        >>> to_compat({"n": BigInt(5), "raw": b"\\x01", "pair": ["$x", 1]})
        {'n': ['$BigInt', '5'], 'raw': ['$Uint8Array', 'AQ=='], 'pair': ['$$x', 1]}
    """
    return _compat(value, False)


# ---------------------------------------------------------------------------------------------
# compat tree -> Python value


def _b64decode(text: Any, tag: str) -> bytes:
    if type(text) is not str:
        raise DecodeError(f"compat tag {tag!r} expects a base64 string, got {type(text).__name__}")
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    # Node's Buffer.from(s, "base64") also accepts missing padding and the URL-safe alphabet.
    fixed = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    fixed += "=" * (-len(fixed) % 4)
    try:
        return binascii.a2b_base64(fixed, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"compat tag {tag!r}: invalid base64: {exc}") from None


def _revive_tag(tag: str, payload: Any, cbor: bool) -> Any:
    if tag == "$BigInt":
        if type(payload) is str:
            try:
                return BigInt(int(payload, 10))
            except ValueError:
                raise DecodeError(f"compat tag '$BigInt': invalid integer {payload!r}") from None
        if type(payload) is int:
            return BigInt(payload)
        raise DecodeError(f"compat tag '$BigInt' expects a string, got {type(payload).__name__}")
    if tag == "$Uint8Array" or tag == "$ArrayBuffer":
        return _b64decode(payload, tag)
    if tag == "$Undefined":
        return None
    if tag == "$Set":
        if type(payload) is not list:
            raise DecodeError(f"compat tag '$Set' expects an array, got {type(payload).__name__}")
        return [_revive(item, cbor) for item in payload]
    if tag.startswith("$$"):
        return [tag[1:], _revive(payload, cbor)]
    raise DecodeError(f"unknown compat tag {tag!r}")


def _revive(value: Any, cbor: bool) -> Any:
    t = type(value)
    if t is list:
        if len(value) == 2:
            head = value[0]
            if type(head) is str and head.startswith("$"):
                return _revive_tag(head, value[1], cbor)
        out: list[Any] | None = None
        for i, item in enumerate(value):
            ti = type(item)
            if ti is list or ti is dict or (cbor and (ti is float or item is cbor2.undefined)):
                new = _revive(item, cbor)
                if new is not item:
                    if out is None:
                        out = list(value)
                    out[i] = new
        return value if out is None else out
    if t is dict:
        dout: dict[Any, Any] | None = None
        for key, item in value.items():
            ti = type(item)
            if ti is list or ti is dict or (cbor and (ti is float or item is cbor2.undefined)):
                new = _revive(item, cbor)
                if new is not item:
                    if dout is None:
                        dout = dict(value)
                    dout[key] = new
        return value if dout is None else dout
    if cbor:
        if t is float:
            # cbor-x writes integral numbers beyond 32 bits as float64; JSON would give an int.
            if _I31 <= abs(value) <= MAX_SAFE_INTEGER and value.is_integer():
                return int(value)
            return value
        if value is cbor2.undefined:
            return None
    return value


def from_compat(value: Any) -> Any:
    """Revive a JSON-compat tree into Python values (inverse of :func:`to_compat`).

    ``["$BigInt", s]`` becomes :class:`BigInt`, ``["$Uint8Array", b64]`` and
    ``["$ArrayBuffer", b64]`` become ``bytes``, ``["$Undefined", 0]`` becomes ``None``,
    ``["$Set", items]`` becomes a ``list`` and ``["$$x", v]`` becomes ``["$x", v]``.
    Unchanged containers are returned as they are (not copied).

    Args:
        value: a decoded JSON (or CBOR) tree.

    Returns:
        The Python value.

    Raises:
        DecodeError: for an unknown ``$`` tag or a malformed tag payload.
    """
    t = type(value)
    if t is list or t is dict:
        try:
            return _revive(value, False)
        except RecursionError:
            raise DecodeError("value nested too deeply") from None
    return value


# ---------------------------------------------------------------------------------------------
# CBOR


def _encode_bigint(encoder: cbor2.CBOREncoder, value: int) -> None:
    # cbor-x only yields a JS bigint for the 8-byte integer forms (or bignum tags).
    if 0 <= value < _U64:
        encoder.write(b"\x1b" + value.to_bytes(8, "big"))
    elif -_U64 <= value < 0:
        encoder.write(b"\x3b" + (-1 - value).to_bytes(8, "big"))
    else:
        encoder.encode_int(int(value))  # cbor2 writes tag 2/3 bignums


_NATIVE_ENCODERS: Final[dict[type, Callable[[cbor2.CBOREncoder, Any], None]]] = {
    BigInt: _encode_bigint
}


def _native(value: Any) -> Any:
    t = type(value)
    if t is str or t is float or t is bool or value is None or t is bytes or t is BigInt:
        return value
    if t is int:
        if -_U32 <= value < _U32:
            return value
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return float(value)
        return BigInt(value)
    if t is dict:
        dout: dict[str, Any] | None = None
        for key, item in value.items():
            if type(key) is not str:
                return {_check_key(k): _native(v) for k, v in value.items()}
            new = _native(item)
            if new is not item:
                if dout is None:
                    dout = dict(value)
                dout[key] = new
        return value if dout is None else dout
    if t is list or t is tuple:
        out: list[Any] | None = None
        for i, item in enumerate(value):
            new = _native(item)
            if out is None:
                if new is item:
                    continue
                out = list(value[:i])
            out.append(new)
        if out is None:
            out = value if t is list else list(value)
        if len(out) == 2:
            head = out[0]
            if type(head) is str and head.startswith("$"):
                return ["$" + head, out[1]]
        return out
    if t is bytearray or t is memoryview:
        return bytes(value)
    if isinstance(value, BigInt):
        return BigInt(value)
    if isinstance(value, (set, frozenset)):
        return ["$Set", [_native(item) for item in value]]
    if isinstance(value, int):
        return _native(int(value))
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, float):
        return float(value)
    fields = _object_fields(value)
    if fields is not None:
        return _native(fields)
    if isinstance(value, dict):
        return _native(dict(value))
    if isinstance(value, (list, tuple)):
        return _native(list(value))
    raise TypeError(f"value of type {type(value).__qualname__} is not serializable: {value!r}")


def prepare_native(value: Any) -> Any:
    """Prepare a Python value for the CBOR *encoding* (native values, no compat tags).

    Bigints stay integers (written in the 8-byte form by :func:`cbor_dumps_native`), bytes stay
    byte strings, and tag-like ``["$x", v]`` arrays are escaped because the client revives
    compat tags after CBOR-decoding.

    Raises:
        TypeError: for unsupported types and non-``str`` dict keys.
    """
    return _native(value)


def cbor_dumps_native(envelope: Any) -> bytes:
    """CBOR-encode an envelope whose values went through :func:`prepare_native`.

    :class:`BigInt` instances anywhere in ``envelope`` are written as 8-byte integers
    (``1b``/``3b``) or bignum tags, so the client decodes them as ``bigint``.
    """
    return cbor2.dumps(envelope, encoders=_NATIVE_ENCODERS)


def cbor_dumps_compat(value: Any) -> bytes:
    """CBOR-encode ``value`` after the compat transform (a BARE ``Cbor`` field).

    Raises:
        TypeError: for unsupported types and non-``str`` dict keys.
    """
    return cbor2.dumps(_compat(value, True))


def _tag64(value: Any, immutable: bool) -> Any:
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else value


_SEMANTIC_DECODERS: Final = {64: _tag64}


def cbor_loads(data: bytes | bytearray | memoryview, *, revive: bool = True) -> Any:
    """Decode exactly one CBOR document and revive compat tags.

    Tag 64 (``Uint8Array``) becomes ``bytes``, ``undefined`` becomes ``None``, integral
    float64 values beyond 32 bits become ``int``, then :func:`from_compat` rules apply.

    Args:
        data: the CBOR bytes.
        revive: apply the revive step (``False`` returns cbor2's raw result).

    Raises:
        DecodeError: on malformed or truncated CBOR, trailing bytes, or a bad compat tag.
    """
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp, semantic_decoders=_SEMANTIC_DECODERS).decode()
    except Exception as exc:  # any failure to parse untrusted bytes is a decode error
        raise DecodeError(f"invalid CBOR: {exc}") from None
    end = fp.tell()
    if end != len(data):
        raise DecodeError(f"invalid CBOR: {len(data) - end} trailing byte(s) after document")
    if not revive:
        return value
    try:
        return _revive(value, True)
    except RecursionError:
        raise DecodeError("value nested too deeply") from None
