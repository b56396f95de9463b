"""One-time import of a legacy actor's engine KV into its SQLite database (spec §10.2, §12.27).

Actors created by RivetKit <= 2.2 kept their data in the engine's raw actor KV (actor-persist
values, :mod:`rivetkit._protocol.actor_persist`), not in SQLite. The official runtime imports that
data at a start whose database has no ``_rivet_meta.kv_import_state`` (or ``importing``: an
import that did not finish), and so do we, before the actor instance reads its tables:

1. probe: ``KvList`` of everything with limit 1 (a fresh actor has no key at all: done); if
   there is a key, all at once ``KvGet [1], [6], [3], [5,1,1]`` and ``KvList`` of the prefixes
   ``[2]``, ``[5,1,2]``, ``[6,1]``, ``[4]`` with limit 1 (other keys, such as traces, are not
   legacy data);
2. nothing there (every actor created since, and every fresh actor): write ``done``. That commit
   is not awaited: if it is lost, the store fails, the actor stops and the next start probes
   again; the runtime's first acknowledged write waits for it anyway;
3. otherwise commit ``importing`` (as the official runtime does: legacy KV is then the source of
   truth until ``done``), read every legacy record (list scans page by 256 keys from the last key
   seen), decode all of them, then in **one** transaction clear what a previous attempt may have
   left, write the rows and mark ``done``. Anything undecodable fails the start with
   ``storage.legacy_import_failed`` (naming the key) and nothing is marked done.

The KV itself is never written or deleted: it stays a frozen snapshot.

Mapping (the official runtime's, in our table encodings):

========================  ==================================================================
``[1]`` Actor              ``_rivet_actor`` (has_initialized, input), ``_rivet_actor_state``
                           (state CBOR as stored), ``_rivet_schedule_events`` (one-shot rows,
                           ``kind`` 0, args CBOR as stored)
``[6]`` last alarm         ``_rivet_runtime.last_pushed_alarm``
``[3]`` inspector token    ``_rivet_runtime.inspector_token`` (else the database's own token)
``[5,1,1]`` metadata       ``_rivet_runtime.queue_next_id`` = max(next id, newest id + 1, 1)
``[5,1,2]+id`` messages    ``_rivet_queue`` (id, name, body CBOR, created_at); a message with
                           retry, delay or in-flight state cannot be represented: refused
``[2]+id`` connections     ``_rivet_conns`` / ``_rivet_conn_state`` (headers and subscriptions
                           as CBOR, as :mod:`rivetkit._runtime.hibernation` reads them)
``[6,1]+…`` workflow       ``_rivet_wf_kv``, keys verbatim
``[4]+key`` user KV        ``_rivet_user_kv``, keys verbatim (``c.kv`` keeps the prefix too)
``[7,1]+…`` traces         not imported
========================  ==================================================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import apsw

from ... import errors
from ..._protocol import actor_persist as ap
from ..._protocol import envoy as p
from ..._protocol.cbor import cbor_dumps_compat
from ..._runtime.storage import ActorStore, new_inspector_token

__all__ = [
    "IMPORT_STATE_KEY",
    "SCAN_PAGE_LIMIT",
    "LegacyKv",
    "import_legacy_kv",
]

log = logging.getLogger("rivetkit.storage")

IMPORT_STATE_KEY: Final = "kv_import_state"
SCAN_PAGE_LIMIT: Final = 256  # keys per legacy list page (the official runtime's)

PERSIST_DATA_KEY: Final = b"\x01"
CONN_PREFIX: Final = b"\x02"
INSPECTOR_TOKEN_KEY: Final = b"\x03"
USER_KV_PREFIX: Final = b"\x04"
QUEUE_METADATA_KEY: Final = b"\x05\x01\x01"
QUEUE_MESSAGES_PREFIX: Final = b"\x05\x01\x02"
LAST_PUSHED_ALARM_KEY: Final = b"\x06"
WORKFLOW_PREFIX: Final = b"\x06\x01"

CORE_KEYS: Final = (PERSIST_DATA_KEY, LAST_PUSHED_ALARM_KEY, INSPECTOR_TOKEN_KEY, QUEUE_METADATA_KEY)
PREFIXES: Final = (CONN_PREFIX, QUEUE_MESSAGES_PREFIX, WORKFLOW_PREFIX, USER_KV_PREFIX)

_I64_MAX: Final = (1 << 63) - 1
_LOAD_STATE = "SELECT value FROM _rivet_meta WHERE key = ?"
_SET_STATE = (
    "INSERT INTO _rivet_meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
# What an interrupted attempt (ours or the official runtime's, which imports in several
# commits) may have written; legacy KV is the source of truth for all of it.
_CLEARED_TABLES: Final = (
    "_rivet_conn_state",
    "_rivet_conns",
    "_rivet_schedule_events",
    "_rivet_actor_state",
    "_rivet_actor",
    "_rivet_queue",
    "_rivet_wf_kv",
    "_rivet_user_kv",
    "_rivet_runtime",
)

Outcome = Literal["already_done", "empty", "imported"]


class LegacyKv(Protocol):
    """The envoy connection's actor KV call (:meth:`rivetkit.drivers.engine.envoy.Envoy.kv`)."""

    async def kv(self, actor_id: str, data: p.KvRequestData) -> p.KvResponseData: ...


def _failed(actor_id: str, message: str, key: bytes | None = None) -> errors.RivetError:
    metadata: dict[str, Any] = {"actorId": actor_id}
    if key is not None:
        metadata["key"] = key.hex()
        message = f"{message} (legacy KV key {key.hex()})"
    return errors.RivetError(
        "storage",
        "legacy_import_failed",
        f"Importing the legacy KV data of actor {actor_id} failed: {message}",
        metadata=metadata,
        public=False,
        status=500,
    )


# -- KV reads --------------------------------------------------------------------------------


async def _ask(kv: LegacyKv, actor_id: str, data: p.KvRequestData, what: str) -> p.KvResponseData:
    try:
        response = await kv.kv(actor_id, data)
    except errors.RivetError:
        raise
    except Exception as exc:  # connection lost, timed out
        raise _failed(actor_id, f"{what}: the engine could not be reached: {exc}") from exc
    if isinstance(response, p.KvErrorResponse):
        raise _failed(actor_id, f"{what}: the engine answered: {response.message}")
    return response


async def _get(kv: LegacyKv, actor_id: str, keys: Sequence[bytes]) -> dict[bytes, bytes]:
    response = await _ask(kv, actor_id, p.KvGetRequest(keys=list(keys)), "reading legacy keys")
    if not isinstance(response, p.KvGetResponse) or len(response.keys) != len(response.values):
        raise _failed(actor_id, f"unexpected answer to KvGet: {type(response).__name__}")
    return dict(zip(response.keys, response.values))


async def _list(
    kv: LegacyKv, actor_id: str, query: p.KvListQuery, limit: int
) -> list[tuple[bytes, bytes]]:
    response = await _ask(
        kv, actor_id, p.KvListRequest(query=query, reverse=None, limit=limit), "listing legacy keys"
    )
    if not isinstance(response, p.KvListResponse) or len(response.keys) != len(response.values):
        raise _failed(actor_id, f"unexpected answer to KvList: {type(response).__name__}")
    return list(zip(response.keys, response.values))


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (its last byte is below 0xff)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


async def _scan(kv: LegacyKv, actor_id: str, prefix: bytes) -> list[tuple[bytes, bytes]]:
    """Every entry under ``prefix``, ascending, :data:`SCAN_PAGE_LIMIT` keys per request.

    A page shorter than asked is not taken as the end (the engine may cap pages); the scan ends
    on a page that brings no key past the last one seen.
    """
    out: list[tuple[bytes, bytes]] = []
    end = _prefix_end(prefix)
    cursor: bytes | None = None
    while True:
        query: p.KvListQuery
        if cursor is None:
            query = p.KvListPrefixQuery(key=prefix)
        else:
            query = p.KvListRangeQuery(start=cursor + b"\x00", end=end, exclusive=True)
        page = await _list(kv, actor_id, query, SCAN_PAGE_LIMIT)
        advanced = False
        for key, value in page:
            if cursor is not None and key <= cursor:
                continue  # a re-read of the cursor (whatever the range bound semantics)
            if not key.startswith(prefix):
                return out
            out.append((key, value))
            cursor = key
            advanced = True
        if not advanced:
            return out


async def _gather(*aws: Awaitable[Any]) -> list[Any]:
    """All at once; the first failure (in order) is raised once every request is answered."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


# -- decoding --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Legacy:
    """Every legacy record of one actor, decoded."""

    actor: ap.Actor | None = None
    last_pushed_alarm: int | None = None
    inspector_token: str | None = None
    queue_next_id: int = 1
    queue: list[tuple[int, ap.QueueMessage]] = field(default_factory=list)
    conns: list[ap.Conn] = field(default_factory=list)
    workflow: list[tuple[bytes, bytes]] = field(default_factory=list)
    user_kv: list[tuple[bytes, bytes]] = field(default_factory=list)


def _decode(
    actor_id: str,
    core: dict[bytes, bytes],
    conns: list[tuple[bytes, bytes]],
    queue: list[tuple[bytes, bytes]],
    workflow: list[tuple[bytes, bytes]],
    user_kv: list[tuple[bytes, bytes]],
) -> _Legacy:
    legacy = _Legacy(workflow=workflow, user_kv=user_kv)
    key = PERSIST_DATA_KEY
    try:
        if (raw := core.get(PERSIST_DATA_KEY)) is not None:
            legacy.actor = ap.decode_actor(raw)
        key = LAST_PUSHED_ALARM_KEY
        if (raw := core.get(LAST_PUSHED_ALARM_KEY)) is not None:
            legacy.last_pushed_alarm = ap.decode_last_pushed_alarm(raw)
        key = INSPECTOR_TOKEN_KEY
        if (raw := core.get(INSPECTOR_TOKEN_KEY)) is not None:
            try:
                legacy.inspector_token = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ap.LegacyValueError(f"inspector token is not UTF-8: {exc}") from None
        key = QUEUE_METADATA_KEY
        next_id = 1
        if (raw := core.get(QUEUE_METADATA_KEY)) is not None:
            next_id = max(next_id, ap.decode_queue_metadata(raw).next_id)
        for key, raw in conns:
            legacy.conns.append(ap.decode_conn(raw))
        for key, raw in queue:
            suffix = key[len(QUEUE_MESSAGES_PREFIX) :]
            if len(suffix) != 8:
                raise ap.LegacyValueError("queue message key does not end in an 8-byte id")
            message_id = int.from_bytes(suffix, "big")
            message = ap.decode_queue_message(raw)
            if (
                message.failure_count is not None
                or message.available_at is not None
                or message.in_flight is not None
                or message.in_flight_at is not None
            ):
                raise ap.LegacyValueError(
                    f"queue message {message_id} has retry, delay or in-flight state, which "
                    "SQLite queue storage cannot keep"
                )
            if message_id > _I64_MAX:
                raise ap.LegacyValueError(f"queue message id {message_id} exceeds 2^63 - 1")
            legacy.queue.append((message_id, message))
            next_id = max(next_id, message_id + 1)
        if next_id > _I64_MAX:
            raise ap.LegacyValueError(f"queue next id {next_id} exceeds 2^63 - 1")
        legacy.queue_next_id = next_id
    except ap.LegacyValueError as exc:
        raise _failed(actor_id, str(exc), key) from None
    return legacy


# -- writing ---------------------------------------------------------------------------------


def _write(conn: apsw.Connection, legacy: _Legacy, input: bytes | None) -> None:
    """Replace the imported tables' rows with ``legacy`` and mark ``done`` (one transaction)."""
    with conn:
        token_rows: list[Any] = conn.execute(
            "SELECT inspector_token FROM _rivet_runtime WHERE id = 1"
        ).fetchall()
        actor_rows: list[Any] = conn.execute(
            "SELECT has_initialized, input FROM _rivet_actor WHERE id = 1"
        ).fetchall()
        for table in _CLEARED_TABLES:
            conn.execute(f"DELETE FROM {table}")
        actor = legacy.actor
        has_initialized: int
        actor_input: bytes | None
        if actor is not None:
            has_initialized, actor_input = int(actor.has_initialized), actor.input
        elif actor_rows:
            has_initialized, actor_input = int(actor_rows[0][0]), actor_rows[0][1]
        else:
            has_initialized, actor_input = 0, input
        conn.execute(
            "INSERT INTO _rivet_actor (id, has_initialized, input) VALUES (1, ?, ?)",
            (has_initialized, actor_input),
        )
        if actor is not None:
            conn.execute("INSERT INTO _rivet_actor_state (id, state) VALUES (1, ?)", (actor.state,))
            conn.executemany(
                "INSERT OR REPLACE INTO _rivet_schedule_events (event_id, trigger_at, action, "
                "args, kind, cron_expression, timezone, interval_ms, last_started_at, "
                "max_history) VALUES (?, ?, ?, ?, 0, NULL, NULL, NULL, NULL, 0)",
                [(e.event_id, e.timestamp, e.action, e.args) for e in actor.scheduled_events],
            )
        token = legacy.inspector_token
        if token is None:
            token = str(token_rows[0][0]) if token_rows and token_rows[0][0] else None
        if token is None:
            token = new_inspector_token()
        conn.execute(
            "INSERT INTO _rivet_runtime (id, last_pushed_alarm, inspector_token, queue_next_id) "
            "VALUES (1, ?, ?, ?)",
            (legacy.last_pushed_alarm, token, legacy.queue_next_id),
        )
        for c in legacy.conns:
            conn.execute(
                "INSERT OR REPLACE INTO _rivet_conns (conn_id, parameters, gateway_id, "
                "request_id, request_path, request_headers) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    c.id,
                    c.parameters,
                    c.gateway_id,
                    c.request_id,
                    c.request_path,
                    cbor_dumps_compat(dict(c.request_headers)),
                ),
            )
            conn.execute(
                "INSERT OR REPLACE INTO _rivet_conn_state (conn_id, state, server_message_index, "
                "client_message_index, subscriptions) VALUES (?, ?, ?, ?, ?)",
                (
                    c.id,
                    c.state,
                    c.server_message_index,
                    c.client_message_index,
                    cbor_dumps_compat([s.event_name for s in c.subscriptions]),
                ),
            )
        conn.executemany(
            "INSERT INTO _rivet_queue (id, name, body, created_at) VALUES (?, ?, ?, ?)",
            [(i, m.name, m.body, m.created_at) for i, m in legacy.queue],
        )
        conn.executemany(
            "INSERT INTO _rivet_wf_kv (key, value) VALUES (?, ?)", legacy.workflow
        )
        conn.executemany(
            "INSERT INTO _rivet_user_kv (key, value) VALUES (?, ?)", legacy.user_kv
        )
        conn.execute(_SET_STATE, (IMPORT_STATE_KEY, b"done"))


def _set_state(value: bytes) -> Callable[[apsw.Connection], None]:
    def fn(conn: apsw.Connection) -> None:
        with conn:
            conn.execute(_SET_STATE, (IMPORT_STATE_KEY, value))

    return fn


def _load_state(conn: apsw.Connection) -> bytes | None:
    rows: list[Any] = conn.execute(_LOAD_STATE, (IMPORT_STATE_KEY,)).fetchall()
    return bytes(rows[0][0]) if rows else None


# -- the step --------------------------------------------------------------------------------


async def import_legacy_kv(
    kv: LegacyKv, actor_id: str, store: ActorStore, *, input: bytes | None = None
) -> Outcome:
    """Import the actor's legacy KV data into ``store`` unless that was done already.

    Run at every start, after the store is open and before the actor instance loads it.

    Args:
        kv: the envoy connection (its ``kv`` call).
        actor_id: the engine's actor id.
        store: the actor's open database.
        input: the creation input of the start command (kept when the legacy data has no
            persisted actor record).

    Returns:
        ``"already_done"`` (``kv_import_state`` is ``done``), ``"empty"`` (no legacy data;
        ``done`` is written) or ``"imported"``.

    Raises:
        RivetError: ``storage.legacy_import_failed``: the KV could not be read, a value does not
            decode (the message names the key) or ``kv_import_state`` has an unknown value.
            Nothing is marked ``done`` then.
    """
    state = await store.run(_load_state)
    if state == b"done":
        return "already_done"
    if state not in (None, b"importing"):
        raise _failed(actor_id, f"unknown {IMPORT_STATE_KEY} {state!r}")

    # One key of any kind first: a fresh actor has none, and its start then costs the engine
    # one KV read instead of five.
    probes: list[Any] = [{}]
    if await _list(kv, actor_id, p.KvListAllQuery(), 1):
        probes = await _gather(
            _get(kv, actor_id, CORE_KEYS),
            *(_list(kv, actor_id, p.KvListPrefixQuery(key=prefix), 1) for prefix in PREFIXES),
        )
    core: dict[bytes, bytes] = probes[0]
    if not core and not any(probes[1:]):
        # Not awaited (see the module docstring): a fresh actor's start costs no extra commit
        # round trip. Nothing else uses the store yet, so the gate is free.
        _set_state(b"done")(store.conn)
        log.debug("no legacy KV data actor_id=%s", actor_id)
        return "empty"

    log.info(
        "legacy KV import started actor_id=%s retry=%s", actor_id, state == b"importing"
    )
    if state is None:
        await store.run(_set_state(b"importing"))
    conns, queue, workflow, user_kv = await _gather(
        *(_scan(kv, actor_id, prefix) for prefix in PREFIXES)
    )
    legacy = _decode(actor_id, core, conns, queue, workflow, user_kv)

    def write(conn: apsw.Connection) -> None:
        _write(conn, legacy, input)

    await store.run(write)
    log.info(
        "legacy KV import completed actor_id=%s actor=%s conns=%d queue=%d workflow=%d "
        "user_kv=%d",
        actor_id,
        legacy.actor is not None,
        len(legacy.conns),
        len(legacy.queue),
        len(legacy.workflow),
        len(legacy.user_kv),
    )
    return "imported"
