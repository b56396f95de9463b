"""The value model shared by all encodings, and the "JSON-compat" layer of the client.

Actor inputs, action args and outputs, event args and queue bodies are *Python values*:
``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list`` and ``dict`` with ``str``
keys, plus :class:`BigInt` to mark a JavaScript ``bigint``. Encoders also accept tuples,
``bytearray``/``memoryview``, sets, enums, UUIDs, dataclass instances, pydantic v2 models and
msgspec Structs and turn them into the plain forms.

JavaScript has values JSON cannot carry, so the RivetKit client represents them as tagged
2-element arrays (spec §6.2)::

    bigint        ["$BigInt", "<decimal>"]
    Uint8Array    ["$Uint8Array", "<standard base64>"]   (ArrayBuffer: "$ArrayBuffer")
    undefined     ["$Undefined", 0]
    Set           ["$Set", [items...]]
    ["$x", v]     ["$$x", v]      (a real array that looks like a tag is escaped)

:func:`to_compat` and :func:`from_compat` convert between Python values and that tree. How
each encoding uses it:

* json: everything goes through the compat layer, both ways.
* bare: each ``Cbor`` field is CBOR of the compat tree, both ways.
* cbor: values stay native (bigints as 8-byte CBOR integers, bytes as byte strings). The
  client revives compat tags in what it *receives* but sends raw values, so the server escapes
  tag-like arrays in its output (:func:`prepare_native`) and takes client input as it is
  (``cbor_loads(..., revive=False)``).

Integer typing follows JavaScript: a plain ``int`` within ``±(2**53 - 1)`` is a JS ``number``;
anything outside that range, and every :class:`BigInt`, is a JS ``bigint``. cbor-x decodes
8-byte CBOR integers as ``bigint`` and writes numbers that need more than 32 bits as float64, so
CBOR output does the same for plain ints, and decoding maps 8-byte integers to :class:`BigInt`
and integral floats beyond 31 bits back to ``int``.
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
import io
import struct
import uuid
from collections.abc import Callable
from typing import Any, Final

import cbor2
import orjson

from rivetkit._protocol import DecodeError

__all__ = [
    "MAX_SAFE_INTEGER",
    "BigInt",
    "cbor_dumps_compat",
    "cbor_dumps_native",
    "cbor_loads",
    "cbor_value_native",
    "from_compat",
    "json_dumps_compat",
    "json_loads_compat",
    "json_may_have_tags",
    "prepare_native",
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
    if isinstance(value, enum.Enum):  # like orjson: an enum is its value
        return _compat(value.value, wide_as_float)
    if isinstance(value, uuid.UUID):
        return str(value)
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
# Fast paths. Most values are plain JSON data that need no transform at all; orjson checks that
# at C speed. ``_PLAIN_OPTIONS`` makes it refuse everything the compat layer would rewrite:
# integers beyond ±(2**53 - 1) (STRICT_INTEGER), int/str/dict/list subclasses such as BigInt
# (PASSTHROUGH_SUBCLASS), bytes and other unknown types (no native support). Tag-like arrays
# show up in the output as ``["$``, which cannot occur inside a JSON string (its quote would be
# escaped). Anything refused takes the exact slow path, so results are identical either way.

_PLAIN_OPTIONS: Final = (
    orjson.OPT_STRICT_INTEGER
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)
_TAG_LIKE: Final = b'["$'
# For the CBOR check, digits become "0" and everything but '[', '"', '$' a space, so that
# integers that may need more than 32 bits show up as ten zeros (digit runs inside strings or
# floats match too, which only costs a detour through the slow path).
_CBOR_CHECK_TABLE: Final = bytes(
    0x30 if 0x30 <= i <= 0x39 else i if i in b'["$' else 0x20 for i in range(256)
)
_TEN_DIGITS: Final = b"0" * 10


class _NotPlain(Exception):
    pass


def _refuse(value: Any) -> Any:
    raise _NotPlain


def _expand_objects(value: Any) -> Any:
    fields = _object_fields(value)
    if fields is None:
        raise _NotPlain
    return fields


def json_dumps_compat(value: Any) -> bytes:
    """``orjson.dumps(to_compat(value))``, without the tree walk for plain JSON data.

    Raises:
        TypeError: for unsupported types and non-``str`` dict keys.
    """
    try:
        out = orjson.dumps(value, default=_expand_objects, option=_PLAIN_OPTIONS)
    except orjson.JSONEncodeError:
        pass
    else:
        if _TAG_LIKE not in out:
            return out
    return orjson.dumps(_compat(value, False))


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
    return _TAG_LIKE not in out and _TEN_DIGITS not in out


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
        if type(payload) is int or type(payload) is BigInt:
            return BigInt(payload)
        raise DecodeError(f"compat tag '$BigInt' expects a string, got {type(payload).__name__}")
    if tag == "$Uint8Array" or tag == "$ArrayBuffer":
        return _b64decode(payload, tag)
    if tag == "$Undefined":
        return None
    if tag == "$Set":
        if type(payload) is not list:
            raise DecodeError(f"compat tag '$Set' expects an array, got {type(payload).__name__}")
        return [_revive(item, True, cbor) for item in payload]
    if tag.startswith("$$"):
        return [tag[1:], _revive(payload, True, cbor)]
    raise DecodeError(f"unknown compat tag {tag!r}")


def _revive(value: Any, tags: bool, cbor: bool) -> Any:
    """Walk a decoded tree: revive ``$`` tags (``tags``) and fix up CBOR-only details
    (``cbor``: ``undefined`` becomes ``None``, integral float64 beyond 31 bits becomes ``int``).
    Containers are copied only when something in them changes."""
    t = type(value)
    if t is list:
        if tags and len(value) == 2:
            head = value[0]
            if type(head) is str and head.startswith("$"):
                return _revive_tag(head, value[1], cbor)
        out: list[Any] | None = None
        for i, item in enumerate(value):
            ti = type(item)
            if ti is list or ti is dict or (cbor and (ti is float or item is cbor2.undefined)):
                new = _revive(item, tags, cbor)
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
                new = _revive(item, tags, cbor)
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
            return _revive(value, True, False)
        except RecursionError:
            raise DecodeError("value nested too deeply") from None
    return value


def json_may_have_tags(data: bytes | bytearray | memoryview | str) -> bool:
    """Cheap pre-check: can this JSON text contain a ``$`` compat tag at all?

    A tag head is a string starting with ``$``, written ``"$`` (or ``"\\u0024``). When this
    returns ``False`` the parsed value is already final and :func:`from_compat` can be skipped.
    """
    if isinstance(data, str):
        return '"$' in data or "\\u0024" in data
    raw = data.tobytes() if isinstance(data, memoryview) else data
    return b'"$' in raw or b"\\u0024" in raw


def json_loads_compat(data: bytes | bytearray | memoryview | str, *, revive: bool = True) -> Any:
    """Parse JSON text and revive compat tags (``from_compat(json.loads(data))``).

    Integers beyond 64 bits parse as floats (what JavaScript holds anyway).

    Args:
        data: UTF-8 JSON bytes or text.
        revive: apply :func:`from_compat` (``False`` returns the raw parse).

    Raises:
        DecodeError: for invalid JSON or a bad compat tag.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if revive and json_may_have_tags(data):
        value = from_compat(value)
    return value


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
    if b"\x1b" in special or b"\x3b" in special:
        value = _loads_keeping_width(data)
    else:
        value = _cbor2_loads(data)
    if (revive and b"$" in special) or b"\xf7" in special or b"\xfb" in special:
        try:
            return _revive(value, revive, True)
        except RecursionError:
            raise DecodeError("value nested too deeply") from None
    return value
