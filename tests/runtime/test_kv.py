"""``c.kv``: every method, ordering, half-open ranges, RivetKit's limits at their exact boundary,
the byte layout in ``_rivet_user_kv``, and the same behaviour end to end through the client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

import rivetkit
from rivetkit import ActionContext
from rivetkit._runtime.kv import (
    DEFAULT_LIST_LIMIT,
    MAX_KEYS_PER_OP,
    MAX_PUT_PAYLOAD_SIZE,
    MAX_USER_KEY_SIZE,
    MAX_VALUE_SIZE,
    ActorKv,
)
from rivetkit._runtime.storage import ActorStore, actor_db_path
from rivetkit.client import Client
from rivetkit.errors import ActorError, RivetError

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ActorStore]:
    s = ActorStore.create(tmp_path / "actor.db", input=None)
    yield s
    s.close()


@pytest.fixture
def kv(store: ActorStore) -> ActorKv:
    return ActorKv(store)


def raw_rows(store: ActorStore) -> list[tuple[bytes, bytes]]:
    return [
        (k, v) for k, v in store.conn.execute("SELECT key, value FROM _rivet_user_kv ORDER BY key")
    ]


async def expect_kv_error(code: str, call: Any) -> RivetError:
    with pytest.raises(RivetError) as info:
        await call
    assert (info.value.group, info.value.code) == ("kv", code), info.value
    assert info.value.public and info.value.status == 400
    return info.value


# -- single keys ---------------------------------------------------------------------------


async def test_put_get_delete_text(kv: ActorKv) -> None:
    assert await kv.get("greeting") is None
    await kv.put("greeting", "hello")
    assert await kv.get("greeting") == "hello"
    await kv.put("greeting", "hi")  # replaces
    assert await kv.get("greeting") == "hi"
    await kv.delete("greeting")
    assert await kv.get("greeting") is None
    await kv.delete("greeting")  # deleting a missing key is fine


async def test_text_and_binary_keys_and_values(kv: ActorKv) -> None:
    await kv.put(b"avatar", b"\x00\x01\xff")
    assert await kv.get(b"avatar", type="binary") == b"\x00\x01\xff"
    assert await kv.get("avatar", type="binary") == b"\x00\x01\xff"  # same key as text
    await kv.put("snowman", "☃")
    assert await kv.get("snowman", type="binary") == "☃".encode()
    assert await kv.get(b"snowman") == "☃"  # text is the default type
    await kv.put(bytearray(b"ba"), memoryview(b"mv"))
    assert await kv.get("ba") == "mv"


async def test_invalid_utf8_read_as_text_is_replaced_not_failed(kv: ActorKv) -> None:
    await kv.put("raw", b"a\xffb")
    assert await kv.get("raw") == "a\ufffdb"


async def test_byte_layout_is_the_official_runtimes(kv: ActorKv, store: ActorStore) -> None:
    # RivetKit stores c.kv keys behind the one-byte KEYS.KV prefix 0x04, values verbatim.
    await kv.put("a", "1")
    await kv.put(b"\x00b", b"\x02")
    await kv.batch_put([("c", "3")])
    assert raw_rows(store) == [(b"\x04\x00b", b"\x02"), (b"\x04a", b"1"), (b"\x04c", b"3")]
    # Rows written by another runtime in that layout read back the same way.
    store.conn.execute("INSERT INTO _rivet_user_kv VALUES (?, ?)", (b"\x04from-ts", b"v"))
    assert await kv.get("from-ts") == "v"
    assert await kv.list("from") == [("from-ts", "v")]


# -- batches -------------------------------------------------------------------------------


async def test_batch_get_put_delete(kv: ActorKv) -> None:
    await kv.batch_put([("a", "1"), (b"b", b"2"), ("c", "3")])
    assert await kv.batch_get(["c", "missing", "a"]) == ["3", None, "1"]
    assert await kv.batch_get([b"b"], type="binary") == [b"2"]
    await kv.batch_put({"a": "10", "d": "4"})  # a mapping works too
    await kv.batch_delete(["b", "c", "never"])
    assert await kv.list() == [("a", "10"), ("d", "4")]
    assert await kv.batch_get([]) == []
    await kv.batch_put([])
    await kv.batch_delete([])


async def test_batch_put_later_entries_win(kv: ActorKv) -> None:
    await kv.batch_put([("k", "first"), ("k", "second")])
    assert await kv.get("k") == "second"


# -- listing and ranges --------------------------------------------------------------------


async def test_list_prefix_orders_by_key_bytes(kv: ActorKv) -> None:
    for key in ["prefix-b", "prefix-a", "prefix-", "prefiy", "prefiw", "prefix-\xe9"]:
        await kv.put(key, key.upper())
    assert await kv.list("prefix-") == [
        ("prefix-", "PREFIX-"),
        ("prefix-a", "PREFIX-A"),
        ("prefix-b", "PREFIX-B"),
        ("prefix-\xe9", "PREFIX-\xc9"),  # UTF-8 0xC3 0xA9 sorts after ASCII
    ]
    assert [k for k, _ in await kv.list("prefix-", reverse=True)] == [
        "prefix-\xe9",
        "prefix-b",
        "prefix-a",
        "prefix-",
    ]
    assert [k for k, _ in await kv.list("prefix-", limit=2)] == ["prefix-", "prefix-a"]
    assert [k for k, _ in await kv.list("prefix-", reverse=True, limit=2)] == [
        "prefix-\xe9",
        "prefix-b",
    ]
    assert await kv.list("prefix-", limit=0) == []
    assert [k for k, _ in await kv.list("")] == [
        "prefiw",
        "prefix-",
        "prefix-a",
        "prefix-b",
        "prefix-\xe9",
        "prefiy",
    ]
    assert await kv.list("nothing") == []


async def test_list_binary_keys_and_0xff_prefixes(kv: ActorKv) -> None:
    await kv.put(b"\xff", "a")
    await kv.put(b"\xff\xff", "b")
    await kv.put(b"\xff\xff\x00", "c")
    await kv.put(b"\xfe", "d")
    assert await kv.list(b"\xff\xff", key_type="binary") == [
        (b"\xff\xff", "b"),
        (b"\xff\xff\x00", "c"),
    ]
    assert await kv.list(b"\xff", key_type="binary", type="binary") == [
        (b"\xff", b"a"),
        (b"\xff\xff", b"b"),
        (b"\xff\xff\x00", b"c"),
    ]
    assert await kv.list_prefix(b"\xfe", key_type="binary") == [(b"\xfe", "d")]


async def test_list_range_is_half_open(kv: ActorKv) -> None:
    for key, value in [("a", "alpha"), ("b", "bravo"), ("c", "charlie"), ("d", "delta")]:
        await kv.put(key, value)
    # RivetKit's driver test: listRange("b", "d") and ("a", "d", reverse, limit 2).
    assert await kv.list_range("b", "d") == [("b", "bravo"), ("c", "charlie")]
    assert await kv.list_range("a", "d", reverse=True, limit=2) == [
        ("c", "charlie"),
        ("b", "bravo"),
    ]
    assert await kv.list_range("b", "b") == []
    assert await kv.list_range("d", "a") == []
    assert await kv.list_range(b"a", b"b", key_type="binary", type="binary") == [(b"a", b"alpha")]


async def test_delete_range_is_half_open(kv: ActorKv) -> None:
    for key in ["a", "b", "c", "d"]:
        await kv.put(key, key)
    await kv.delete_range("b", "d")
    assert await kv.list("") == [("a", "a"), ("d", "d")]
    await kv.delete_range("d", "a")  # empty range: nothing
    assert len(await kv.list("")) == 2


async def test_list_default_limit_is_16384(kv: ActorKv, store: ActorStore) -> None:
    with store.conn:
        store.conn.executemany(
            "INSERT INTO _rivet_user_kv VALUES (?, ?)",
            ((b"\x04" + f"{i:06d}".encode(), b"") for i in range(DEFAULT_LIST_LIMIT + 1)),
        )
    entries = await kv.list("")
    assert len(entries) == DEFAULT_LIST_LIMIT
    assert entries[-1][0] == f"{DEFAULT_LIST_LIMIT - 1:06d}"
    assert len(await kv.list("", limit=DEFAULT_LIST_LIMIT + 1)) == DEFAULT_LIST_LIMIT + 1
    assert len(await kv.list_range("", "999999")) == DEFAULT_LIST_LIMIT


# -- limits (exact boundaries; nothing written on error) -----------------------------------


async def test_key_size_limit_counts_the_prefix_byte(kv: ActorKv, store: ActorStore) -> None:
    assert MAX_USER_KEY_SIZE == 2047  # 2048 bytes stored, one of them the 0x04 prefix
    await kv.put(b"k" * MAX_USER_KEY_SIZE, "ok")
    assert await kv.get(b"k" * MAX_USER_KEY_SIZE) == "ok"
    err = await expect_kv_error("key_too_large", kv.put(b"x" * (MAX_USER_KEY_SIZE + 1), "no"))
    assert err.metadata == {"size": 2048, "limit": 2047}
    await expect_kv_error("key_too_large", kv.put("é" * 1024, "no"))  # 2048 UTF-8 bytes
    assert len(raw_rows(store)) == 1


async def test_value_size_limit(kv: ActorKv, store: ActorStore) -> None:
    assert MAX_VALUE_SIZE == 128 * 1024
    await kv.put("big", b"v" * MAX_VALUE_SIZE)
    assert len(await kv.get("big", type="binary") or b"") == MAX_VALUE_SIZE
    err = await expect_kv_error("value_too_large", kv.put("bigger", b"v" * (MAX_VALUE_SIZE + 1)))
    assert err.metadata == {"size": MAX_VALUE_SIZE + 1, "limit": MAX_VALUE_SIZE}
    await expect_kv_error("value_too_large", kv.put("big", b"v" * (MAX_VALUE_SIZE + 1)))
    assert len(await kv.get("big", type="binary") or b"") == MAX_VALUE_SIZE  # unchanged
    assert [k for k, _ in raw_rows(store)] == [b"\x04big"]


async def test_batch_key_count_limit(kv: ActorKv, store: ActorStore) -> None:
    assert MAX_KEYS_PER_OP == 128
    keys = [f"k{i:03d}" for i in range(MAX_KEYS_PER_OP)]
    await kv.batch_put([(k, "v") for k in keys])
    assert await kv.batch_get(keys) == ["v"] * MAX_KEYS_PER_OP
    over = keys + ["k128"]
    await expect_kv_error("too_many_keys", kv.batch_put([(k, "w") for k in over]))
    await expect_kv_error("too_many_keys", kv.batch_get(over))
    await expect_kv_error("too_many_keys", kv.batch_delete(over))
    assert len(raw_rows(store)) == MAX_KEYS_PER_OP  # nothing written, nothing deleted
    assert await kv.get("k000") == "v"
    await kv.batch_delete(keys)
    assert raw_rows(store) == []


async def test_batch_payload_limit(kv: ActorKv, store: ActorStore) -> None:
    # Eight entries: keys "0".."7" (2 bytes stored each) and values filling 976 KiB exactly.
    assert MAX_PUT_PAYLOAD_SIZE == 976 * 1024
    value_size = (MAX_PUT_PAYLOAD_SIZE - 8 * 2) // 8
    assert 8 * (2 + value_size) == MAX_PUT_PAYLOAD_SIZE
    entries = [(str(i), b"v" * value_size) for i in range(8)]
    await kv.batch_put(entries)
    assert len(raw_rows(store)) == 8
    await kv.batch_delete([str(i) for i in range(8)])
    over = [*entries[:7], ("7", b"v" * (value_size + 1))]
    err = await expect_kv_error("payload_too_large", kv.batch_put(over))
    assert err.metadata == {"size": MAX_PUT_PAYLOAD_SIZE + 1, "limit": MAX_PUT_PAYLOAD_SIZE}
    assert raw_rows(store) == []  # atomic: not even the first seven


async def test_one_bad_entry_writes_nothing(kv: ActorKv, store: ActorStore) -> None:
    await expect_kv_error(
        "value_too_large", kv.batch_put([("a", "1"), ("b", b"x" * (MAX_VALUE_SIZE + 1))])
    )
    await expect_kv_error("invalid_value", kv.batch_put([("a", "1"), ("b", 2)]))  # type: ignore[list-item]
    assert raw_rows(store) == []


# -- types ---------------------------------------------------------------------------------


async def test_wrong_types_get_clear_errors(kv: ActorKv) -> None:
    err = await expect_kv_error("invalid_key", kv.put(1, "v"))  # type: ignore[arg-type]
    assert "str or bytes" in err.message and "int" in err.message
    await expect_kv_error("invalid_key", kv.get(None))  # type: ignore[call-overload]
    await expect_kv_error("invalid_value", kv.put("k", 1.5))  # type: ignore[arg-type]
    await expect_kv_error("invalid_value", kv.put("k", None))  # type: ignore[arg-type]
    await expect_kv_error("invalid_argument", kv.get("k", type="json"))  # type: ignore[call-overload]
    await expect_kv_error("invalid_argument", kv.list("", key_type="str"))  # type: ignore[call-overload]
    await expect_kv_error("invalid_argument", kv.list("", limit=-1))
    await expect_kv_error("invalid_argument", kv.list("", limit=True))
    await expect_kv_error("invalid_argument", kv.batch_get("abc"))
    await expect_kv_error("invalid_argument", kv.batch_put(["ab"]))  # type: ignore[list-item]
    await expect_kv_error("invalid_argument", kv.batch_put(5))  # type: ignore[arg-type]
    await expect_kv_error("invalid_key", kv.list_range(1, "b"))  # type: ignore[arg-type]
    await expect_kv_error("invalid_key", kv.delete_range("a", None))  # type: ignore[arg-type]


# -- end to end through the client ---------------------------------------------------------


def kv_actor() -> rivetkit.ActorDefinition:
    a = rivetkit.actor("kvActor")

    @a.action
    async def put_text(c: ActionContext, key: str, value: str) -> bool:
        await c.kv.put(key, value)
        return True

    @a.action
    async def get_text(c: ActionContext, key: str) -> str | None:
        return await c.kv.get(key)

    @a.action
    async def list_text(c: ActionContext, prefix: str) -> list[dict[str, str]]:
        return [{"key": k, "value": v} for k, v in await c.kv.list(prefix)]

    @a.action
    async def list_text_range(
        c: ActionContext, start: str, end: str, options: dict[str, Any] | None = None
    ) -> list[dict[str, str]]:
        entries = await c.kv.list_range(start, end, **(options or {}))
        return [{"key": k, "value": v} for k, v in entries]

    @a.action
    async def delete_text_range(c: ActionContext, start: str, end: str) -> bool:
        await c.kv.delete_range(start, end)
        return True

    @a.action
    async def roundtrip_bytes(c: ActionContext, key: str, values: list[int]) -> list[int] | None:
        await c.kv.put(key, bytes(values))
        result = await c.kv.get(key, type="binary")
        return None if result is None else list(result)

    @a.action
    async def put_many(c: ActionContext, entries: list[list[str]]) -> None:
        await c.kv.batch_put([(k, v) for k, v in entries])

    @a.action
    async def get_many(c: ActionContext, keys: list[str]) -> list[str | None]:
        return await c.kv.batch_get(keys)

    @a.action
    async def delete_many(c: ActionContext, keys: list[str]) -> None:
        await c.kv.batch_delete(keys)

    @a.action
    async def delete_one(c: ActionContext, key: str) -> None:
        await c.kv.delete(key)

    @a.action
    async def put_sized(c: ActionContext, key_size: int, value_size: int) -> None:
        await c.kv.put(b"k" * key_size, b"v" * value_size)

    @a.action
    async def put_int_key(c: ActionContext) -> None:
        await c.kv.put(7, "v")  # type: ignore[arg-type]

    return a


async def test_kv_through_the_client(serve_registry: Callable[..., Any]) -> None:
    async with serve_registry(kv_actor()) as served, Client(served.url) as client:
        h = client.get_or_create("kvActor", ["kv-text"])
        assert await h.put_text("greeting", "hello") is True
        assert await h.get_text("greeting") == "hello"
        await h.put_text("prefix-b", "beta")
        await h.put_text("prefix-a", "alpha")
        assert await h.list_text("prefix-") == [
            {"key": "prefix-a", "value": "alpha"},
            {"key": "prefix-b", "value": "beta"},
        ]
        await h.delete_one("greeting")
        assert await h.get_text("greeting") is None
        assert await h.roundtrip_bytes("bytes", [4, 8, 15, 16, 23, 42]) == [4, 8, 15, 16, 23, 42]

        r = client.get_or_create("kvActor", ["kv-range"])
        for key, value in [("a", "alpha"), ("b", "bravo"), ("c", "charlie"), ("d", "delta")]:
            await r.put_text(key, value)
        assert await r.list_text_range("b", "d") == [
            {"key": "b", "value": "bravo"},
            {"key": "c", "value": "charlie"},
        ]
        assert await r.list_text_range("a", "d", {"reverse": True, "limit": 2}) == [
            {"key": "c", "value": "charlie"},
            {"key": "b", "value": "bravo"},
        ]
        await r.delete_text_range("b", "d")
        assert await r.list_text("") == [
            {"key": "a", "value": "alpha"},
            {"key": "d", "value": "delta"},
        ]
        await r.put_many([["x", "1"], ["y", "2"]])
        assert await r.get_many(["y", "nope", "x"]) == ["2", None, "1"]
        await r.delete_many(["x", "y"])
        assert await r.get_many(["x", "y"]) == [None, None]


async def test_kv_limit_and_type_errors_reach_the_client(
    serve_registry: Callable[..., Any],
) -> None:
    async with serve_registry(kv_actor()) as served, Client(served.url) as client:
        h = client.get_or_create("kvActor", ["limits"])
        await h.put_sized(MAX_USER_KEY_SIZE, MAX_VALUE_SIZE)
        with pytest.raises(ActorError) as info:
            await h.put_sized(MAX_USER_KEY_SIZE + 1, 1)
        assert (info.value.group, info.value.code) == ("kv", "key_too_large")
        assert info.value.metadata == {"size": 2048, "limit": 2047}
        with pytest.raises(ActorError) as info:
            await h.put_sized(1, MAX_VALUE_SIZE + 1)
        assert (info.value.group, info.value.code) == ("kv", "value_too_large")
        with pytest.raises(ActorError) as info:
            await h.put_many([[f"k{i}", "v"] for i in range(MAX_KEYS_PER_OP + 1)])
        assert (info.value.group, info.value.code) == ("kv", "too_many_keys")
        assert await h.get_many(["k0"]) == [None]
        with pytest.raises(ActorError) as info:
            await h.put_int_key()
        assert (info.value.group, info.value.code) == ("kv", "invalid_key")


async def test_kv_survives_a_registry_restart_in_the_official_layout(
    serve_registry: Callable[..., Any], tmp_path: Path
) -> None:
    storage = tmp_path / "restart"
    async with (
        serve_registry(kv_actor(), storage_path=storage) as served,
        Client(served.url) as client,
    ):
        h = client.get_or_create("kvActor", ["durable"])
        await h.put_text("kept", "yes")
        await h.put_many([["a", "1"], ["b", "2"]])
        actor_id = await h.resolve()
    # The server is down: the actor's file can be read directly.
    conn = apsw.Connection(str(actor_db_path(storage, actor_id)))
    try:
        rows = list(conn.execute("SELECT key, value FROM _rivet_user_kv ORDER BY key"))
    finally:
        conn.close()
    assert rows == [(b"\x04a", b"1"), (b"\x04b", b"2"), (b"\x04kept", b"yes")]
    async with (
        serve_registry(kv_actor(), storage_path=storage) as served,
        Client(served.url) as client,
    ):
        h = client.get_or_create("kvActor", ["durable"])
        assert await h.get_text("kept") == "yes"
        assert await h.list_text("") == [
            {"key": "a", "value": "1"},
            {"key": "b", "value": "2"},
            {"key": "kept", "value": "yes"},
        ]
