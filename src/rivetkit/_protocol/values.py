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
  tag-like arrays in its output (:func:`~rivetkit._protocol.cbor.prepare_native`) and takes
  client input as it is (``cbor_loads(..., revive=False)``).

Integer typing follows JavaScript: a plain ``int`` within ``±(2**53 - 1)`` is a JS ``number``;
anything outside that range, and every :class:`BigInt`, is a JS ``bigint``. cbor-x decodes
8-byte CBOR integers as ``bigint`` and writes numbers that need more than 32 bits as float64, so
CBOR output does the same for plain ints, and decoding maps 8-byte integers to :class:`BigInt`
and integral floats beyond 31 bits back to ``int``.

The CBOR side (native encoder, width-aware decoder, ``cbor_loads``, ``cbor_dumps_*``) lives in
:mod:`rivetkit._protocol.cbor`; its public names stay importable from here for older callers.
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
import uuid
from typing import Any, Final

import cbor2
import orjson

from rivetkit._protocol import DecodeError

__all__ = [
    "MAX_SAFE_INTEGER",
    "BigInt",
    "from_compat",
    "json_dumps_compat",
    "json_loads_compat",
    "json_may_have_tags",
    "to_compat",
]

MAX_SAFE_INTEGER: Final = 2**53 - 1
_U32: Final = 2**32
_I31: Final = 2**31


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
# rivetkit._protocol.cbor builds its own check on the same options.

_PLAIN_OPTIONS: Final = (
    orjson.OPT_STRICT_INTEGER
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)
_TAG_LIKE: Final = b'["$'


class _NotPlain(Exception):
    pass


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
        if out.find(_TAG_LIKE) < 0:  # (find: see json_may_have_tags)
            return out
    return orjson.dumps(_compat(value, False))


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
    # find, not `in`: `bytes in bytes` first tries the operand as an int (a TypeError made
    # and dropped on every call).
    return raw.find(b'"$') >= 0 or raw.find(b"\\u0024") >= 0


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
