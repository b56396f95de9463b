from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rivetkit._protocol import DecodeError
from rivetkit._protocol.bare import VERSION_PREFIX, Reader, Writer, encode_uint, read_version

U64 = st.integers(min_value=0, max_value=2**64 - 1)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (16384, "808001"),
        (2**64 - 1, "ffffffffffffffffff01"),
    ],
)
def test_uint_encoding(value: int, encoded: str) -> None:
    assert encode_uint(value).hex() == encoded
    w = Writer()
    w.write_uint(value)
    assert w.getvalue().hex() == encoded
    r = Reader(bytes.fromhex(encoded))
    assert r.read_uint() == value
    r.finish()


@pytest.mark.parametrize("value", [-1, 2**64])
def test_uint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        encode_uint(value)
    with pytest.raises(ValueError):
        Writer().write_u64(value)


@given(U64)
def test_uint_roundtrip(value: int) -> None:
    r = Reader(encode_uint(value))
    assert r.read_uint() == value
    assert r.remaining() == 0


@given(
    st.integers(0, 0xFFFF),
    U64,
    st.booleans(),
    st.text(),
    st.binary(),
    st.none() | st.text(),
    st.none() | st.binary(),
    st.none() | U64,
    st.none() | st.booleans(),
)
def test_writer_reader_roundtrip(
    u16: int,
    u64: int,
    flag: bool,
    text: str,
    data: bytes,
    opt_text: str | None,
    opt_data: bytes | None,
    opt_u64: int | None,
    opt_bool: bool | None,
) -> None:
    w = Writer(version=4)
    w.write_u16(u16)
    w.write_u64(u64)
    w.write_bool(flag)
    w.write_str(text)
    w.write_data(data)
    w.write_optional_str(opt_text)
    w.write_optional_data(opt_data)
    w.write_optional_u64(opt_u64)
    w.write_optional_uint(opt_u64)
    w.write_optional_bool(opt_bool)
    payload = w.getvalue()
    assert payload[:2] == VERSION_PREFIX == b"\x04\x00"

    version, r = read_version(payload)
    assert version == 4
    assert r.read_u16() == u16
    assert r.read_u64() == u64
    assert r.read_bool() is flag
    assert r.read_str() == text
    assert r.read_data() == data
    assert r.read_optional_str() == opt_text
    assert r.read_optional_data() == opt_data
    assert r.read_optional_u64() == opt_u64
    assert r.read_optional_uint() == opt_u64
    assert r.read_optional_bool() == opt_bool
    r.finish()

    # Every strict prefix is truncated.
    for cut in range(2, len(payload)):
        _, r = read_version(payload[:cut])
        with pytest.raises(DecodeError):
            r.read_u16()
            r.read_u64()
            r.read_bool()
            r.read_str()
            r.read_data()
            r.read_optional_str()
            r.read_optional_data()
            r.read_optional_u64()
            r.read_optional_uint()
            r.read_optional_bool()
            r.finish()


def test_fixed_width_little_endian() -> None:
    w = Writer()
    w.write_u16(0x0102)
    w.write_u64(3000)
    assert w.getvalue().hex() == "0201" + "b80b000000000000"


def test_str_is_utf8_with_byte_length() -> None:
    w = Writer()
    w.write_str("ü")
    assert w.getvalue() == b"\x02\xc3\xbc"


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("", "truncated uint"),
        ("80", "truncated uint"),
        ("ff", "truncated uint"),
        ("8000", "non-canonical"),
        ("ffffffffffffffffff7f", "overflows 64 bits"),
        ("ffffffffffffffffffff01", "longer than 10 bytes"),
    ],
)
def test_bad_uint(hex_: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Reader(bytes.fromhex(hex_)).read_uint()


def test_bad_bool_and_optional_flag() -> None:
    with pytest.raises(DecodeError, match="invalid bool"):
        Reader(b"\x02").read_bool()
    with pytest.raises(DecodeError, match="invalid optional flag"):
        Reader(b"\x02").read_optional_str()


def test_truncated_data_and_str() -> None:
    with pytest.raises(DecodeError, match="truncated data"):
        Reader(b"\x05abc").read_data()
    with pytest.raises(DecodeError, match="truncated"):
        Reader(b"\x05abc").read_str()
    with pytest.raises(DecodeError, match="truncated u64"):
        Reader(b"\x01\x02").read_u64()
    with pytest.raises(DecodeError, match="truncated u8"):
        Reader(b"").read_bool()


def test_invalid_utf8() -> None:
    with pytest.raises(DecodeError, match="invalid UTF-8"):
        Reader(b"\x02\xc3\x28").read_str()


def test_trailing_bytes() -> None:
    r = Reader(b"\x01\x02")
    assert r.read_uint() == 1
    with pytest.raises(DecodeError, match="1 trailing byte"):
        r.finish()


def test_reader_accepts_bytearray_and_memoryview() -> None:
    assert Reader(bytearray(b"\x03abc")).read_str() == "abc"
    assert Reader(memoryview(b"\x03abc")).read_data() == b"abc"


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_read_version_accepts(version: int) -> None:
    got, r = read_version(bytes([version, 0, 7]))
    assert got == version
    assert r.read_uint() == 7


@pytest.mark.parametrize(
    "payload", [b"\x00\x00", b"\x05\x00", b"\x09\x00", b"\x04\x01", b"\xff\xff"]
)
def test_read_version_rejects(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="unsupported protocol version"):
        read_version(payload)


@pytest.mark.parametrize("payload", [b"", b"\x04"])
def test_read_version_too_short(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="no version prefix"):
        read_version(payload)


def test_read_version_custom_range() -> None:
    with pytest.raises(DecodeError, match=r"accepted: 3, 4"):
        read_version(b"\x02\x00", (3, 4), what="HttpQueueSendRequest")
