from __future__ import annotations

import dataclasses
import datetime
import enum
import math
from typing import Any

import cbor2
import msgspec
import orjson
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rivetkit._protocol import DecodeError
from rivetkit._protocol.cbor import (
    _SlowDecoder,
    cbor_dumps_compat,
    cbor_dumps_native,
    cbor_loads,
    cbor_value_native,
    prepare_native,
)
from rivetkit._protocol.values import (
    MAX_SAFE_INTEGER,
    BigInt,
    _revive,
    from_compat,
    to_compat,
)

# ---------------------------------------------------------------------------------------------
# helpers

TAGGY_TEXT = st.sampled_from(["$", "$x", "$$x", "$BigInt", "$Uint8Array", "$Set", "$Undefined"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70).map(BigInt)
    | st.floats(allow_nan=False)
    | st.text()
    | TAGGY_TEXT
    | st.binary()
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=4)
        | st.tuples(TAGGY_TEXT, children).map(list)
        | st.dictionaries(st.text() | TAGGY_TEXT, children, max_size=4)
    )


VALUES = st.recursive(SCALARS, _containers, max_leaves=20)


def expected_roundtrip(value: Any, *, cbor: bool = False, json: bool = False) -> Any:
    """What a value looks like after to_compat -> from_compat (bigints keep their marker).

    ``cbor``: integral floats beyond 31 bits come back as ints (cbor-x writes such JS numbers
    as float64, the decoder normalises them like JSON would).
    """
    if type(value) is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return BigInt(value)
    if json and type(value) is float and math.isinf(value):
        return None  # JSON has no infinity; orjson writes null like JSON.stringify
    if (
        cbor
        and type(value) is float
        and value.is_integer()
        and 2**31 <= abs(value) <= MAX_SAFE_INTEGER
    ):
        return int(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return [expected_roundtrip(v, cbor=cbor, json=json) for v in value]
    if isinstance(value, dict):
        return {k: expected_roundtrip(v, cbor=cbor, json=json) for k, v in value.items()}
    return value


def assert_same(actual: Any, expected: Any, *, loose_ints: bool = False) -> None:
    """Deep equality that also compares types (BigInt vs int, bytes vs str, list vs tuple).

    ``loose_ints``: BigInt and int are interchangeable (CBOR loses the bigint marker), and an
    integral float may come back as an int.
    """
    if loose_ints and isinstance(expected, (int, float)) and not isinstance(expected, bool):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), (actual, expected)
        if isinstance(expected, float) and not expected.is_integer():
            assert type(actual) is float
        if isinstance(expected, float) and math.isinf(expected):
            assert actual == expected
            return
        assert actual == expected, (actual, expected)
        return
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same(a, e, loose_ints=loose_ints)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(actual[key], expected[key], loose_ints=loose_ints)
    else:
        assert actual == expected, (actual, expected)


# ---------------------------------------------------------------------------------------------
# BigInt


def test_bigint_behaves_like_int() -> None:
    n = BigInt(5)
    assert isinstance(n, int)
    assert n == 5
    assert repr(n) == "BigInt(5)"
    assert str(n) == "5"
    assert f"{n}" == "5"
    assert type(n + 1) is int
    assert repr(BigInt(-(2**70))) == f"BigInt({-(2**70)})"


# ---------------------------------------------------------------------------------------------
# to_compat


@pytest.mark.parametrize(
    ("value", "compat"),
    [
        (None, None),
        (True, True),
        (False, False),
        (0, 0),
        (1.5, 1.5),
        ("s", "s"),
        (MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
        (-MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER),
        (MAX_SAFE_INTEGER + 1, ["$BigInt", "9007199254740992"]),
        (-MAX_SAFE_INTEGER - 1, ["$BigInt", "-9007199254740992"]),
        (2**100, ["$BigInt", str(2**100)]),
        (BigInt(123), ["$BigInt", "123"]),
        (BigInt(-1), ["$BigInt", "-1"]),
        (b"\x01\x02\x03", ["$Uint8Array", "AQID"]),
        (bytearray(b"\x01"), ["$Uint8Array", "AQ=="]),
        (memoryview(b"ab"), ["$Uint8Array", "YWI="]),
        (b"", ["$Uint8Array", ""]),
        ((1, 2), [1, 2]),
        ([], []),
        ({}, {}),
        (["$x", 1], ["$$x", 1]),
        (("$x", 1), ["$$x", 1]),
        (["$$x", 1], ["$$$x", 1]),
        (["$BigInt", "1"], ["$$BigInt", "1"]),
        (["$", None], ["$$", None]),
        (["x", 1], ["x", 1]),
        (["$x", 1, 2], ["$x", 1, 2]),
        ([["$x", 1]], [["$$x", 1]]),
        ({"k": ["$x", [BigInt(1)]]}, {"k": ["$$x", [["$BigInt", "1"]]]}),
        ([BigInt(1), 2], [["$BigInt", "1"], 2]),
        (["$x", BigInt(1)], ["$$x", ["$BigInt", "1"]]),
        ([b"\x00", "$y"], [["$Uint8Array", "AA=="], "$y"]),
        ({"$k": 1}, {"$k": 1}),
        (frozenset({7}), ["$Set", [7]]),
    ],
)
def test_to_compat_examples(value: Any, compat: Any) -> None:
    assert_same(to_compat(value), compat)


def test_to_compat_bool_is_not_int() -> None:
    assert to_compat([True, False]) == [True, False]
    assert type(to_compat(True)) is bool


def test_to_compat_nan_and_inf_pass_through() -> None:
    out = to_compat([math.nan, math.inf, -math.inf])
    assert math.isnan(out[0]) and out[1:] == [math.inf, -math.inf]
    assert orjson.dumps(out) == b"[null,null,null]"


def test_to_compat_does_not_copy_plain_containers() -> None:
    plain_list = [1, "a", None, 2.5, True, {"x": 1}]
    plain_dict = {"a": 1, "b": [1, 2]}
    assert to_compat(plain_list) is plain_list
    assert to_compat(plain_dict) is plain_dict


def test_to_compat_does_not_mutate_input() -> None:
    value = {"a": [BigInt(1), b"x"], "b": ["$x", 1]}
    to_compat(value)
    assert value == {"a": [BigInt(1), b"x"], "b": ["$x", 1]}


def test_to_compat_non_str_key() -> None:
    with pytest.raises(TypeError, match="dict keys must be str.*int"):
        to_compat({1: "a"})
    with pytest.raises(TypeError, match="dict keys must be str"):
        to_compat({"ok": {(1, 2): BigInt(1)}})


def test_to_compat_unknown_type_names_it() -> None:
    class Thing:
        pass

    with pytest.raises(TypeError, match="Thing"):
        to_compat([Thing()])
    with pytest.raises(TypeError, match="complex"):
        to_compat({"a": 1j})


@dataclasses.dataclass
class Point:
    x: int
    tag: bytes
    inner: list[Any] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class Wrapper:
    point: Point
    n: int


class Model(pydantic.BaseModel):
    name: str
    raw: bytes
    big: int


class Struct(msgspec.Struct):
    a: int
    b: list[Any]


class Color(enum.IntEnum):
    RED = 1


class Name(str, enum.Enum):
    A = "a"


def test_to_compat_dataclass_pydantic_msgspec() -> None:
    w = Wrapper(Point(1, b"\x01", ["$x", 1]), 2**60)
    assert to_compat(w) == {
        "point": {"x": 1, "tag": ["$Uint8Array", "AQ=="], "inner": ["$$x", 1]},
        "n": ["$BigInt", str(2**60)],
    }
    assert to_compat([Model(name="m", raw=b"\x02", big=2**60)]) == [
        {"name": "m", "raw": ["$Uint8Array", "Ag=="], "big": ["$BigInt", str(2**60)]}
    ]
    assert to_compat({"s": Struct(a=1, b=[b"\x03"])}) == {
        "s": {"a": 1, "b": [["$Uint8Array", "Aw=="]]}
    }


def test_to_compat_int_and_str_subclasses() -> None:
    assert_same(to_compat([Color.RED, Name.A]), [1, "a"])
    assert_same(to_compat({Name.A: 1}), {"a": 1})


def test_dataclass_class_itself_is_not_a_value() -> None:
    with pytest.raises(TypeError):
        to_compat(Point)


# ---------------------------------------------------------------------------------------------
# from_compat


@pytest.mark.parametrize(
    ("compat", "value"),
    [
        (["$BigInt", "123"], BigInt(123)),
        (["$BigInt", "-5"], BigInt(-5)),
        (["$BigInt", str(2**80)], BigInt(2**80)),
        (["$Uint8Array", "AQID"], b"\x01\x02\x03"),
        (["$ArrayBuffer", "AQID"], b"\x01\x02\x03"),
        (["$Uint8Array", "AQI"], b"\x01\x02"),  # Node accepts missing padding
        (["$Uint8Array", "-_8"], b"\xfb\xff"),  # and the URL-safe alphabet
        (["$Uint8Array", ""], b""),
        (["$Undefined", 0], None),
        (["$Set", [1, ["$BigInt", "2"]]], [1, BigInt(2)]),
        (["$$x", 1], ["$x", 1]),
        (["$$$x", 1], ["$$x", 1]),
        (["$$x", ["$BigInt", "1"]], ["$x", BigInt(1)]),
        (["$$BigInt", "1"], ["$BigInt", "1"]),
        ({"a": [["$BigInt", "1"], 2]}, {"a": [BigInt(1), 2]}),
        ([1, "$x"], [1, "$x"]),
        (["x", 1], ["x", 1]),
        (["$x", 1, 2], ["$x", 1, 2]),
        ({"$x": 1}, {"$x": 1}),
        (5, 5),
        ("$BigInt", "$BigInt"),
    ],
)
def test_from_compat_examples(compat: Any, value: Any) -> None:
    assert_same(from_compat(compat), value)


@pytest.mark.parametrize(
    ("compat", "message"),
    [
        (["$Foo", 1], "unknown compat tag '\\$Foo'"),
        ([1, ["$", 1]], "unknown compat tag"),
        ({"a": ["$Date", "2020"]}, "unknown compat tag '\\$Date'"),
        (["$BigInt", "12x"], "invalid integer"),
        (["$BigInt", None], "expects a string"),
        (["$Uint8Array", 5], "expects a base64 string"),
        (["$Uint8Array", "A"], "invalid base64"),
        (["$Set", 5], "expects an array"),
    ],
)
def test_from_compat_errors(compat: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        from_compat(compat)


def test_from_compat_does_not_copy_plain_containers() -> None:
    value = {"a": [1, 2, {"b": "c"}]}
    assert from_compat(value) is value


def test_from_compat_deep_nesting_is_decode_error() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(DecodeError, match="nested too deeply"):
        from_compat(deep)


@given(VALUES)
def test_compat_roundtrip(value: Any) -> None:
    assert_same(from_compat(to_compat(value)), expected_roundtrip(value))


@given(VALUES)
def test_compat_json_roundtrip(value: Any) -> None:
    decoded = from_compat(orjson.loads(orjson.dumps(to_compat(value))))
    assert_same(decoded, expected_roundtrip(value, json=True))


@given(VALUES)
def test_compat_is_idempotent_on_its_output_shape(value: Any) -> None:
    # A compat tree contains only JSON types.
    def check(node: Any) -> None:
        assert node is None or type(node) in (bool, int, float, str, list, dict)
        if type(node) is int:
            assert -MAX_SAFE_INTEGER <= node <= MAX_SAFE_INTEGER
        if type(node) is list:
            for item in node:
                check(item)
        if type(node) is dict:
            for item in node.values():
                check(item)

    check(to_compat(value))


# ---------------------------------------------------------------------------------------------
# CBOR helpers


@given(VALUES)
def test_cbor_compat_roundtrip(value: Any) -> None:
    """BARE ``Cbor`` fields: compat tree -> CBOR -> revive. Bigints keep their type."""
    assert_same(cbor_loads(cbor_dumps_compat(value)), expected_roundtrip(value, cbor=True))


@given(VALUES)
def test_cbor_native_roundtrip(value: Any) -> None:
    """CBOR encoding, server -> client: native values, tag-like arrays escaped and revived."""
    decoded = cbor_loads(cbor_dumps_native(prepare_native(value)))
    assert_same(decoded, expected_roundtrip(value, cbor=True))
    assert_same(cbor_loads(cbor_value_native(value)), expected_roundtrip(value, cbor=True))


@given(VALUES)
def test_cbor_raw_roundtrip(value: Any) -> None:
    """CBOR encoding, client -> server: raw values (no escaping, no reviving), like cbor-x."""
    encoded = cbor_value_native(value, escape=False)
    assert encoded == cbor_dumps_native(prepare_native(value, escape=False))
    assert_same(cbor_loads(encoded, revive=False), expected_roundtrip(value, cbor=True))


def test_echo_bigint_args_golden() -> None:
    # §6.2: echo(123n) args = CBOR [["$BigInt","123"]].
    encoded = cbor_dumps_compat([BigInt(123)])
    assert encoded.hex() == "81826724426967496e7463313233"
    assert_same(cbor_loads(encoded), [BigInt(123)])


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (BigInt(0), "1b0000000000000000"),
        (BigInt(7), "1b0000000000000007"),
        (BigInt(2**64 - 1), "1bffffffffffffffff"),
        (BigInt(-1), "3b0000000000000000"),
        (BigInt(-(2**64)), "3bffffffffffffffff"),
        (BigInt(2**64), "c249010000000000000000"),
        (BigInt(-(2**64) - 1), "c349010000000000000000"),
        (29, "181d"),
        (2**32 - 1, "1affffffff"),
        (-(2**32), "3affffffff"),
        (2**32, "fb41f0000000000000"),  # JS number: float64, not the 8-byte int form
        (-(2**32) - 1, "fbc1f0000000100000"),
        (2**60, "1b1000000000000000"),  # beyond 2**53: a bigint
        (b"\x01\x02", "420102"),
        (bytearray(b"\x01"), "4101"),
        (memoryview(b"\x01"), "4101"),
        (["$x", 1], "826324247801"),
        ((1, 2), "820102"),
    ],
)
def test_cbor_native_integer_and_bytes_forms(value: Any, hex_: str) -> None:
    assert cbor_dumps_native(prepare_native(value)).hex() == hex_


def test_cbor_compat_wide_ints_are_float64() -> None:
    assert cbor_dumps_compat(2**40).hex() == "fb4270000000000000"
    assert cbor_loads(bytes.fromhex("fb4270000000000000")) == 2**40
    assert type(cbor_loads(bytes.fromhex("fb4270000000000000"))) is int
    assert type(cbor_loads(bytes.fromhex("fb3ff8000000000000"))) is float  # 1.5


def test_cbor_loads_client_forms() -> None:
    # cbor-x non-minimal map header, tag 64 Uint8Array, undefined, Set (tag 258).
    assert cbor_loads(bytes.fromhex("b9000164617267738101")) == {"args": [1]}
    assert cbor_loads(bytes.fromhex("d84043010203")) == b"\x01\x02\x03"
    assert cbor_loads(bytes.fromhex("f7")) is None
    assert cbor_loads(bytes.fromhex("82f701")) == [None, 1]
    assert cbor_loads(bytes.fromhex("a16161f7")) == {"a": None}
    assert cbor_loads(bytes.fromhex("d90102820102")) == [1, 2]


@pytest.mark.parametrize(
    ("hex_", "value"),
    [
        # cbor-x writes every bigint (and nothing else) in the 8-byte form: keep the type.
        ("1b000000000000007b", BigInt(123)),
        ("1b0000000000000000", BigInt(0)),
        ("3b0000000000000004", BigInt(-5)),
        ("1b7fffffffffffffff", BigInt(2**63 - 1)),
        ("c249010000000000000000", BigInt(2**64)),
        ("c349010000000000000000", BigInt(-(2**64) - 1)),
        ("187b", 123),
        ("1a000f4240", 1000000),
        ("fb4270000000000000", 2**40),  # cbor-x writes large numbers as float64
        ("fb3ff8000000000000", 1.5),
        (
            (
                "b9000463"
                "62696e"
                "d840420908"
                "616e"
                "1b0000000000000007"
                "646c697374"
                "82"
                "1b0000000000000001"
                "d8404101"
                "65706c61696e"
                "03"
            ),
            {"bin": b"\t\x08", "n": BigInt(7), "list": [BigInt(1), b"\x01"], "plain": 3},
        ),
    ],
)
def test_cbor_loads_integer_width(hex_: str, value: Any) -> None:
    assert_same(cbor_loads(bytes.fromhex(hex_)), value)
    assert_same(cbor_loads(bytes.fromhex(hex_), revive=False), value)


ONE = "1b0000000000000001"  # an 8-byte integer: forces the width-keeping decoder


@pytest.mark.parametrize(
    ("hex_", "value"),
    [
        ("9f" + ONE + "0203ff", [BigInt(1), 2, 3]),
        ("bf6161" + ONE + "61629f01ffff", {"a": BigInt(1), "b": [1]}),
        ("827f6261626163ff" + ONE, ["abc", BigInt(1)]),
        ("825f4201024103ff" + ONE, [b"\x01\x02\x03", BigInt(1)]),
        ("84f93c00fa3fc00000fb3ff8000000000000" + ONE, [1.0, 1.5, 1.5, BigInt(1)]),
        ("86f4f5f6f7f0" + ONE, [False, True, None, None, cbor2.CBORSimpleValue(16), BigInt(1)]),
        ("83d8404101d901028101" + ONE, [b"\x01", [1], BigInt(1)]),
        ("a1820102" + ONE, {(1, 2): BigInt(1)}),
        ("8338ff1a000f4240" + ONE, [-256, 1000000, BigInt(1)]),
        ("827818" + "61" * 24 + ONE, ["a" * 24, BigInt(1)]),
    ],
)
def test_width_keeping_decoder(hex_: str, value: Any) -> None:
    assert_same(cbor_loads(bytes.fromhex(hex_)), value)


def test_width_keeping_decoder_defers_other_tags_to_cbor2() -> None:
    out = cbor_loads(bytes.fromhex("82c11a5f5e1000" + ONE))
    assert out[0] == datetime.datetime(2020, 9, 13, 12, 26, 40, tzinfo=datetime.UTC)
    assert_same(out[1], BigInt(1))


@given(VALUES)
def test_width_keeping_decoder_agrees_with_cbor2(value: Any) -> None:
    data = cbor2.dumps(to_compat(value))
    fast = cbor_loads(data)  # may take either path
    slow_decoder = _SlowDecoder(data)
    slow = _revive(slow_decoder.item(0), True, True)
    assert slow_decoder.pos == len(data)
    assert fast == slow


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("821b00", "premature end"),
        (ONE + "00", "1 trailing byte"),
        ("82ff" + ONE, "unexpected break"),
        ("821c" + ONE, "reserved additional info 28"),
        ("8262c328" + ONE, "invalid CBOR"),
        ("825f6161ff" + ONE, "bad chunk"),
        ("81" * 300 + ONE, "nested too deeply"),
        ("82c201" + ONE, "bignum tag must wrap a byte string"),
        ("c201", "semantic tag 2 .*bignum tag must wrap a byte string"),
    ],
)
def test_width_keeping_decoder_errors(hex_: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        cbor_loads(bytes.fromhex(hex_))


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("", "invalid CBOR"),
        ("82", "invalid CBOR"),
        ("ff", "invalid CBOR"),
        ("0101", "1 trailing byte"),
        ("8263244e6f01", "unknown compat tag"),
        ("62c328", "invalid CBOR"),  # invalid UTF-8 text
    ],
)
def test_cbor_loads_errors(hex_: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        cbor_loads(bytes.fromhex(hex_))


def test_prepare_native_rejects_like_to_compat() -> None:
    with pytest.raises(TypeError, match="dict keys must be str"):
        prepare_native({1: 2})
    with pytest.raises(TypeError, match="object"):
        prepare_native([object()])


def test_prepare_native_objects() -> None:
    out = prepare_native({"p": Point(1, b"\x01"), "e": Color.RED, "s": {3}})
    assert_same(out, {"p": {"x": 1, "tag": b"\x01", "inner": []}, "e": 1, "s": ["$Set", [3]]})
