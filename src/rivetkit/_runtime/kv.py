"""``c.kv``: the actor's own key-value store, kept in its SQLite database.

Layout (the same bytes the official runtime writes, so engine mode can share the file): every
entry is one row of ``_rivet_user_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL)``. The stored key
is the user's key (text as UTF-8) behind a one-byte prefix, ``0x04`` (``KEYS.KV`` in RivetKit's
``actor/keys.ts``; ``makePrefixedKey``); the value is stored as given. Listing orders keys by
their bytes (``memcmp``), ranges are half-open ``[start, end)``.

The batch operations use the prefix too, so ``batch_put`` and ``get`` see the same entries. (The
current TypeScript adapter, ``NativeKvAdapter`` in ``registry/native.ts``, passes ``batchGet`` /
``batchPut`` / ``batchDelete`` keys through unprefixed, unlike its single-key methods; the earlier
``ActorKv`` in ``actor/instance/kv.ts`` prefixed them, and rivetkit-core's legacy import only
copies ``0x04``-prefixed keys into ``_rivet_user_kv``. We follow the consistent layout.)

Limits are RivetKit's (rivetkit-core ``internal_storage``; the engine's ``actor_kv``): a stored
key is at most 2048 bytes *including* the prefix byte, so a user key may have 2047 bytes; a value
at most 128 KiB; a batch at most 128 keys and 976 KiB of keys (with prefix) plus values. Every
check runs before anything is written, and a batch is one transaction: it is written whole or
not at all.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, overload

from .. import errors
from .db import run_sql

if TYPE_CHECKING:
    import apsw

    from .storage import ActorStore

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "KEY_PREFIX",
    "MAX_KEYS_PER_OP",
    "MAX_KEY_SIZE",
    "MAX_PUT_PAYLOAD_SIZE",
    "MAX_USER_KEY_SIZE",
    "MAX_VALUE_SIZE",
    "ActorKv",
]

KEY_PREFIX = b"\x04"  # RivetKit KEYS.KV
MAX_KEY_SIZE = 2048  # stored key, prefix included (rivetkit-core USER_KV_KEY_LIMIT)
MAX_USER_KEY_SIZE = MAX_KEY_SIZE - len(KEY_PREFIX)
MAX_VALUE_SIZE = 128 * 1024
MAX_KEYS_PER_OP = 128
MAX_PUT_PAYLOAD_SIZE = 976 * 1024  # stored keys + values of one batch
DEFAULT_LIST_LIMIT = 16_384

KvKey = str | bytes | bytearray | memoryview
KvValue = str | bytes | bytearray | memoryview
ValueType = Literal["text", "binary"]
KeyType = Literal["text", "binary"]

_UPSERT = (
    "INSERT INTO _rivet_user_kv (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_DELETE = "DELETE FROM _rivet_user_kv WHERE key = ?"
_DELETE_RANGE = "DELETE FROM _rivet_user_kv WHERE key >= ? AND key < ?"


def _kv_error(code: str, message: str, **metadata: Any) -> errors.RivetError:
    return errors.RivetError("kv", code, message, metadata=metadata or None, status=400)


def _type_name(value: object) -> str:
    return type(value).__name__


def _encode_key(key: object, what: str = "key") -> bytes:
    """The stored form of a user key: the prefix, then the key's bytes."""
    if isinstance(key, str):
        return KEY_PREFIX + key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return KEY_PREFIX + bytes(key)
    raise _kv_error(
        "invalid_key",
        f"KV {what} must be str or bytes, got {_type_name(key)}.",
        type=_type_name(key),
    )


def _encode_value(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise _kv_error(
        "invalid_value",
        f"KV value must be str or bytes, got {_type_name(value)}.",
        type=_type_name(value),
    )


def _check_key_size(stored: bytes) -> None:
    if len(stored) > MAX_KEY_SIZE:
        size = len(stored) - len(KEY_PREFIX)
        raise _kv_error(
            "key_too_large",
            f"KV key too large ({size} bytes). Limit is {MAX_USER_KEY_SIZE} bytes "
            f"({MAX_KEY_SIZE} with the 1-byte prefix RivetKit stores).",
            size=size,
            limit=MAX_USER_KEY_SIZE,
        )


def _check_value_size(value: bytes) -> None:
    if len(value) > MAX_VALUE_SIZE:
        raise _kv_error(
            "value_too_large",
            f"KV value too large ({len(value)} bytes). Limit is {MAX_VALUE_SIZE} bytes.",
            size=len(value),
            limit=MAX_VALUE_SIZE,
        )


def _check_count(count: int) -> None:
    if count > MAX_KEYS_PER_OP:
        raise _kv_error(
            "too_many_keys",
            f"KV batch has {count} keys. Limit is {MAX_KEYS_PER_OP} keys per operation.",
            count=count,
            limit=MAX_KEYS_PER_OP,
        )


def _check_value_type(type_: object, what: str = "type") -> None:
    if type_ != "text" and type_ != "binary":
        raise _kv_error(
            "invalid_argument",
            f'KV option `{what}` must be "text" or "binary", got {type_!r}.',
            argument=what,
        )


def _decode(data: bytes, type_: str) -> str | bytes:
    # TextDecoder semantics: invalid UTF-8 becomes U+FFFD rather than failing the read.
    return data.decode("utf-8", "replace") if type_ == "text" else data


def _key_list(keys: object) -> builtins.list[bytes]:
    if isinstance(keys, (str, bytes, bytearray, memoryview)) or not isinstance(keys, Iterable):
        raise _kv_error(
            "invalid_argument",
            f"KV batch keys must be a list of keys, got {_type_name(keys)}.",
            argument="keys",
        )
    stored = [_encode_key(key) for key in keys]
    _check_count(len(stored))
    return stored


def _list_limit(limit: object) -> int:
    if limit is None:
        return DEFAULT_LIST_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise _kv_error(
            "invalid_argument",
            f"KV list `limit` must be an int >= 0 or None, got {limit!r}.",
            argument="limit",
        )
    return limit


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    for index in range(len(prefix) - 1, -1, -1):
        if prefix[index] != 0xFF:
            return prefix[:index] + bytes((prefix[index] + 1,))
    return None


class ActorKv:
    """``c.kv``: durable string and binary values under string or binary keys.

    Keys and values are ``str`` (stored as UTF-8) or ``bytes``. Reads return text by default, as
    RivetKit's ``type: "text"`` default; pass ``type="binary"`` to get ``bytes`` back (and
    ``key_type="binary"`` for keys from ``list``/``list_range``).

    RivetKit marks ``c.kv`` deprecated in favour of ``c.state`` and ``c.db``; it remains for
    flexible keys and blobs. Called inside ``async with c.db.transaction()`` (or ``on_migrate``)
    from the same task, KV operations join that transaction.

    Example::

        await c.kv.put("greeting:alice", "hello")
        await c.kv.get("greeting:alice")                      # "hello"
        await c.kv.list("greeting:")                          # [("greeting:alice", "hello")]
        await c.kv.put(b"avatar", png_bytes)
        await c.kv.get(b"avatar", type="binary")              # png_bytes
    """

    __slots__ = ("_store",)

    def __init__(self, store: ActorStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"<ActorKv {self._store.path}>"

    # -- single keys -----------------------------------------------------------------------

    @overload
    async def get(self, key: KvKey, *, type: Literal["text"] = "text") -> str | None: ...
    @overload
    async def get(self, key: KvKey, *, type: Literal["binary"]) -> bytes | None: ...

    async def get(self, key: KvKey, *, type: ValueType = "text") -> str | bytes | None:
        """The value stored under ``key``, or ``None``.

        Args:
            key: a ``str`` or ``bytes`` key.
            type: ``"text"`` (default) decodes the value as UTF-8; ``"binary"`` returns bytes.

        Raises:
            RivetError: ``kv.invalid_key`` / ``kv.invalid_argument`` for bad input.
        """
        _check_value_type(type)
        (value,) = await self._batch_get([_encode_key(key)])
        return None if value is None else _decode(value, type)

    async def put(self, key: KvKey, value: KvValue) -> None:
        """Store ``value`` under ``key``, replacing any previous value.

        Raises:
            RivetError: ``kv.key_too_large`` (over 2047 bytes), ``kv.value_too_large`` (over
                128 KiB), ``kv.invalid_key`` / ``kv.invalid_value`` for other types.
        """
        await self.batch_put([(key, value)])

    async def delete(self, key: KvKey) -> None:
        """Remove ``key`` (nothing happens if it is absent)."""
        await self.batch_delete([key])

    # -- batches ---------------------------------------------------------------------------

    @overload
    async def batch_get(
        self, keys: Iterable[KvKey], *, type: Literal["text"] = "text"
    ) -> builtins.list[str | None]: ...
    @overload
    async def batch_get(
        self, keys: Iterable[KvKey], *, type: Literal["binary"]
    ) -> builtins.list[bytes | None]: ...

    async def batch_get(
        self, keys: Iterable[KvKey], *, type: ValueType = "text"
    ) -> builtins.list[str | None] | builtins.list[bytes | None]:
        """The values of ``keys``, in the same order, ``None`` for missing ones.

        Raises:
            RivetError: ``kv.too_many_keys`` over 128 keys.
        """
        _check_value_type(type)
        values = await self._batch_get(_key_list(keys))
        return [None if v is None else _decode(v, type) for v in values]  # type: ignore[return-value]

    async def batch_put(
        self,
        entries: Mapping[str, KvValue] | Mapping[bytes, KvValue] | Iterable[tuple[KvKey, KvValue]],
    ) -> None:
        """Store several entries in one transaction: all of them or, on any error, none.

        Args:
            entries: a mapping or ``(key, value)`` pairs. Later pairs win over earlier ones
                with the same key.

        Raises:
            RivetError: ``kv.too_many_keys`` (over 128 entries), ``kv.payload_too_large`` (keys
                with their prefix plus values over 976 KiB), ``kv.key_too_large``,
                ``kv.value_too_large``, ``kv.invalid_key``, ``kv.invalid_value``.
        """
        if isinstance(entries, Mapping):
            pairs: Iterable[Any] = entries.items()
        elif isinstance(entries, (str, bytes, bytearray, memoryview)) or not isinstance(
            entries, Iterable
        ):
            raise _kv_error(
                "invalid_argument",
                f"KV batch_put takes a mapping or (key, value) pairs, got {_type_name(entries)}.",
                argument="entries",
            )
        else:
            pairs = entries
        rows: builtins.list[tuple[bytes, bytes]] = []
        for pair in pairs:
            if not isinstance(pair, (tuple, builtins.list)) or len(pair) != 2:
                raise _kv_error(
                    "invalid_argument",
                    f"KV batch_put entries must be (key, value) pairs, got {pair!r:.80}.",
                    argument="entries",
                )
            rows.append((_encode_key(pair[0]), _encode_value(pair[1])))
        _check_count(len(rows))
        payload = 0
        for stored_key, value in rows:
            _check_key_size(stored_key)
            _check_value_size(value)
            payload += len(stored_key) + len(value)
        if payload > MAX_PUT_PAYLOAD_SIZE:
            raise _kv_error(
                "payload_too_large",
                f"KV batch too large ({payload} bytes of keys and values). "
                f"Limit is {MAX_PUT_PAYLOAD_SIZE} bytes.",
                size=payload,
                limit=MAX_PUT_PAYLOAD_SIZE,
            )
        if not rows:
            return

        def write(conn: apsw.Connection) -> None:
            with conn:
                conn.executemany(_UPSERT, rows)

        await run_sql(self._store, write)

    async def batch_delete(self, keys: Iterable[KvKey]) -> None:
        """Remove several keys in one transaction.

        Raises:
            RivetError: ``kv.too_many_keys`` over 128 keys.
        """
        stored = _key_list(keys)
        if not stored:
            return

        def delete(conn: apsw.Connection) -> None:
            with conn:
                conn.executemany(_DELETE, [(key,) for key in stored])

        await run_sql(self._store, delete)

    # -- listing and ranges ----------------------------------------------------------------

    @overload
    async def list(
        self,
        prefix: KvKey = "",
        *,
        type: Literal["text"] = "text",
        key_type: Literal["text"] = "text",
        reverse: bool = False,
        limit: int | None = None,
    ) -> builtins.list[tuple[str, str]]: ...
    @overload
    async def list(
        self,
        prefix: KvKey = "",
        *,
        type: Literal["binary"],
        key_type: Literal["text"] = "text",
        reverse: bool = False,
        limit: int | None = None,
    ) -> builtins.list[tuple[str, bytes]]: ...
    @overload
    async def list(
        self,
        prefix: KvKey = "",
        *,
        type: Literal["text"] = "text",
        key_type: Literal["binary"],
        reverse: bool = False,
        limit: int | None = None,
    ) -> builtins.list[tuple[bytes, str]]: ...
    @overload
    async def list(
        self,
        prefix: KvKey = "",
        *,
        type: Literal["binary"],
        key_type: Literal["binary"],
        reverse: bool = False,
        limit: int | None = None,
    ) -> builtins.list[tuple[bytes, bytes]]: ...

    async def list(
        self,
        prefix: KvKey = "",
        *,
        type: ValueType = "text",
        key_type: KeyType = "text",
        reverse: bool = False,
        limit: int | None = None,
    ) -> builtins.list[Any]:
        """Entries whose key starts with ``prefix``, ordered by key bytes.

        Args:
            prefix: ``""`` lists every entry.
            type: value type of the result (``"text"`` default, or ``"binary"``).
            key_type: key type of the result (``"text"`` default, or ``"binary"``).
            reverse: descending key order instead of ascending.
            limit: at most this many entries (default 16,384, RivetKit's list limit); with
                ``reverse`` the last ``limit`` keys.

        Returns:
            ``(key, value)`` pairs with whole keys (the prefix argument is not stripped).
        """
        _check_value_type(type)
        _check_value_type(key_type, "key_type")
        start = _encode_key(prefix, "prefix")
        end = _prefix_end(start)
        assert end is not None  # the stored prefix starts with 0x04
        return await self._list(start, end, type, key_type, reverse, _list_limit(limit))

    list_prefix = list  # RivetKit's other name for it

    async def list_range(
        self,
        start: KvKey,
        end: KvKey,
        *,
        type: ValueType = "text",
        key_type: KeyType = "text",
        reverse: bool = False,
        limit: int | None = None,
    ) -> builtins.list[Any]:
        """Entries with ``start <= key < end`` (half open), ordered by key bytes.

        Options as :meth:`list`. An empty range (``start >= end``) returns ``[]``.
        """
        _check_value_type(type)
        _check_value_type(key_type, "key_type")
        low = _encode_key(start, "start")
        high = _encode_key(end, "end")
        return await self._list(low, high, type, key_type, reverse, _list_limit(limit))

    async def delete_range(self, start: KvKey, end: KvKey) -> None:
        """Remove every entry with ``start <= key < end`` (half open), in one statement."""
        low = _encode_key(start, "start")
        high = _encode_key(end, "end")

        def delete(conn: apsw.Connection) -> None:
            conn.execute(_DELETE_RANGE, (low, high))

        await run_sql(self._store, delete)

    # -- internals -------------------------------------------------------------------------

    async def _batch_get(self, stored: builtins.list[bytes]) -> builtins.list[bytes | None]:
        if not stored:
            return []
        sql = (
            "SELECT key, value FROM _rivet_user_kv WHERE key IN ("
            + ", ".join("?" * len(stored))
            + ")"
        )

        def read(conn: apsw.Connection) -> dict[bytes, bytes]:
            return {key: value for key, value in conn.execute(sql, stored)}

        found = await run_sql(self._store, read)
        return [found.get(key) for key in stored]

    async def _list(
        self,
        low: bytes,
        high: bytes,
        type_: str,
        key_type: str,
        reverse: bool,
        limit: int,
    ) -> builtins.list[tuple[Any, Any]]:
        order = "DESC" if reverse else "ASC"
        sql = (
            "SELECT key, value FROM _rivet_user_kv WHERE key >= ? AND key < ? "
            f"ORDER BY key {order} LIMIT ?"
        )

        def read(conn: apsw.Connection) -> builtins.list[tuple[bytes, bytes]]:
            return [(key, value) for key, value in conn.execute(sql, (low, high, limit))]

        rows = await run_sql(self._store, read)
        skip = len(KEY_PREFIX)
        return [(_decode(key[skip:], key_type), _decode(value, type_)) for key, value in rows]
