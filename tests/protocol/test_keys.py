from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rivetkit._runtime.keys import EMPTY_KEY, parse_key, parse_query_key, serialize_key

# (key, serialized) pairs: §3.3 observed examples plus the reference implementation's table.
CASES: list[tuple[list[str], str]] = [
    (["c-x", "second"], "c-x/second"),
    (["a/b", "c\\d"], "a\\/b/c\\\\d"),
    (["", "e"], "\\0/e"),
    ([], "/"),
    ([""], "\\0"),
    (["a", "", "b"], "a/\\0/b"),
    (["a", ""], "a/\\0"),
    (["", "", ""], "\\0/\\0/\\0"),
    (["test"], "test"),
    (["a", "b", "c"], "a/b/c"),
    (["/"], "\\/"),
    (["a/b", "/", "c/d"], "a\\/b/\\//c\\/d"),
    (
        ["special\\chars", "more:complex,keys", "final key"],
        "special\\\\chars/more:complex,keys/final key",
    ),
    (["", "/", ""], "\\0/\\//\\0"),
    (["\\"], "\\\\"),
    (["0"], "0"),
    (["\\0"], "\\\\0"),
    (["sp ace", "ü"], "sp ace/ü"),
]


@pytest.mark.parametrize(("key", "serialized"), CASES)
def test_serialize_examples(key: list[str], serialized: str) -> None:
    assert serialize_key(key) == serialized
    assert parse_key(serialized) == key


def test_empty_key_is_slash() -> None:
    assert serialize_key([]) == EMPTY_KEY == "/"
    assert serialize_key(()) == "/"
    assert serialize_key([""]) != EMPTY_KEY


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (None, []),
        ("", []),
        ("/", []),
        ("a\\", ["a\\"]),  # trailing lone backslash is literal
        ("\\", ["\\"]),
        ("a/b\\", ["a", "b\\"]),
        ("a/", ["a", ""]),
        ("/a", ["", "a"]),
        ("//", ["", "", ""]),
        ("\\x", ["x"]),  # unknown escapes keep the character
        ("a\\,b", ["a,b"]),
    ],
)
def test_parse_quirks(text: str | None, parts: list[str]) -> None:
    assert parse_key(text) == parts


def test_serialize_rejects_str_and_non_str_parts() -> None:
    with pytest.raises(TypeError):
        serialize_key("abc")
    with pytest.raises(TypeError):
        serialize_key(["a", 1])  # type: ignore[list-item]


@given(st.lists(st.text()))
def test_roundtrip(key: list[str]) -> None:
    assert parse_key(serialize_key(key)) == key


@given(st.lists(st.text(alphabet="ab/\\0,", max_size=6), max_size=5))
def test_roundtrip_escape_heavy(key: list[str]) -> None:
    assert parse_key(serialize_key(key)) == key


@given(st.text(alphabet="ab/\\0"))
def test_parse_never_fails(text: str) -> None:
    assert all(isinstance(part, str) for part in parse_key(text))


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        (None, []),
        ("", []),
        ("k1", ["k1"]),
        ("a,b", ["a", "b"]),
        ("x,y", ["x", "y"]),  # §4.2: no escaping, ["x,y"] is addressed as ["x","y"]
        ("a/b", ["a/b"]),
        ("a,", ["a", ""]),
        ("sp ace,ü", ["sp ace", "ü"]),
    ],
)
def test_parse_query_key(value: str | None, parts: list[str]) -> None:
    assert parse_query_key(value) == parts


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters=","), min_size=1), min_size=1))
def test_query_key_roundtrip_without_commas(key: list[str]) -> None:
    assert parse_query_key(",".join(key)) == key
