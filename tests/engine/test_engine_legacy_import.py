"""Legacy KV import (spec engine-envoy §10.2, conformance §12.27) against the real engine.

An actor of RivetKit <= 2.2 kept its data in the engine's raw actor KV. Here a raw test envoy
plays that old runtime: it hosts a new actor's first generation, writes the legacy KV records
(actor-persist values) with ``KvPut`` and puts the actor to sleep without ever touching SQLite.
Our runtime then hosts the next generation and must import the records once, leaving the KV as
it was.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import rivetkit
from rivetkit._protocol import actor_persist as ap
from rivetkit._protocol import envoy as ev
from rivetkit._protocol.cbor import cbor_dumps_compat
from rivetkit.client import Client
from rivetkit.config import EngineConfig
from rivetkit.drivers.engine import legacy_import
from rivetkit.drivers.engine.legacy_import import import_legacy_kv
from tests.engine.engine_app import legacy, make_registry
from tests.engine.engine_proc import Engine
from tests.engine.helpers import api, until, until_registered, wait_actor
from tests.engine.raw_envoy import RawEnvoy, new_envoy_key

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

STATE_CODEC = legacy.state_codec  # the runtime's CBOR encoding of state
NOW_MS = int(time.time() * 1000)
FAR_FUTURE_MS = NOW_MS + 3_600_000  # the scheduled event must not fire during the test

Runtime = tuple[rivetkit.Registry, Client]


# -- helpers ---------------------------------------------------------------------------------


async def raw_envoy(engine: Engine, pool: str) -> RawEnvoy:
    key = new_envoy_key()
    envoy = await RawEnvoy.connect(
        engine.envoy_url(pool, envoy_key=key), envoy_key=key, token=engine.admin_token
    )
    await until_registered(engine, key)
    return envoy


async def put(envoy: RawEnvoy, actor_id: str, pairs: dict[bytes, bytes]) -> None:
    reply = await envoy.kv(actor_id, ev.KvPutRequest(keys=list(pairs), values=list(pairs.values())))
    assert reply == ev.KvPutResponse(), reply


async def get(envoy: RawEnvoy, actor_id: str, keys: list[bytes]) -> dict[bytes, bytes]:
    reply = await envoy.kv(actor_id, ev.KvGetRequest(keys=keys))
    assert isinstance(reply, ev.KvGetResponse), reply
    return dict(zip(reply.keys, reply.values))


async def legacy_actor(engine: Engine, pool: str, records: dict[bytes, bytes]) -> str:
    """A "legacy" actor whose first generation (a raw envoy standing in for RivetKit <= 2.2)
    wrote ``records`` to its KV and went to sleep; nothing of it is in SQLite."""
    envoy = await raw_envoy(engine, pool)
    try:
        body = {
            "name": "legacy",
            "key": uuid.uuid4().hex,
            "runner_name_selector": pool,
            "crash_policy": "sleep",
            "input": base64.b64encode(cbor_dumps_compat({"from": "create"})).decode(),
        }
        actor_id: str = (await api(engine, "POST", "/actors", body))["actor"]["actor_id"]
        # (generous: on a loaded machine the engine sometimes takes >10 s to place a new actor)
        wrapper = await envoy.start_actor(timeout=40)
        assert wrapper.checkpoint.actor_id == actor_id
        generation = wrapper.checkpoint.generation
        if records:
            await put(envoy, actor_id, records)
        await envoy.event(actor_id, generation, ev.EventActorIntent(intent=ev.ActorIntentSleep()))
        stop = await envoy.next_command(ev.CommandStopActor, actor_id=actor_id)
        await envoy.ack(stop.checkpoint)
        await envoy.stopped(actor_id, generation)
        await wait_actor(engine, actor_id, lambda a: a["sleep_ts"] is not None)
        assert envoy.mismatches == []
    finally:
        await envoy.close()
    return actor_id


@pytest.fixture
async def runtime(
    engine: Engine, pool: str, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[Runtime]]]:
    """``await runtime()`` starts our registry on the pool (after the legacy generation)."""
    started: list[Runtime] = []

    async def start() -> Runtime:
        registry = make_registry(storage_path=tmp_path / "data")
        registry.use_engine(EngineConfig(endpoint=engine.endpoint, pool=pool))
        await registry.start()
        await registry.driver.wait_ready(10)
        client = Client(engine.endpoint, pool_name=pool)
        started.append((registry, client))
        return registry, client

    yield start
    for registry, client in started:
        await client.aclose()
        await registry.stop()


def meta(registry: rivetkit.Registry, actor_id: str) -> dict[str, bytes]:
    """``_rivet_meta`` of the awake actor's database (read in place, synchronously)."""
    store = registry.driver.awake[actor_id].store
    return {k: bytes(v) for k, v in store.conn.execute("SELECT key, value FROM _rivet_meta")}


def rows(registry: rivetkit.Registry, actor_id: str, sql: str) -> list[tuple[Any, ...]]:
    store = registry.driver.awake[actor_id].store
    return [tuple(row) for row in store.conn.execute(sql)]


def v4_actor(count: int, *, events: list[ap.ScheduleEvent] | None = None) -> bytes:
    return ap.encode_actor(
        ap.Actor(
            input=cbor_dumps_compat({"from": "legacy"}),
            has_initialized=True,
            state=STATE_CODEC.encode({"count": count}),
            scheduled_events=events or [],
        )
    )


EVENT = ap.ScheduleEvent(
    event_id="legacy-event",
    timestamp=FAR_FUTURE_MS,
    action="legacy_count",
    args=cbor_dumps_compat([]),
)
QUEUE_ID = 5
QUEUE_MESSAGE_KEY = b"\x05\x01\x02" + QUEUE_ID.to_bytes(8, "big")
USER_KV_KEY = b"\x04greeting"


def full_legacy_records() -> dict[bytes, bytes]:
    return {
        b"\x01": v4_actor(7, events=[EVENT]),
        USER_KV_KEY: b"hello from 2.2",
        b"\x05\x01\x01": ap.encode_queue_metadata(ap.QueueMetadata(next_id=QUEUE_ID + 1, size=1)),
        QUEUE_MESSAGE_KEY: ap.encode_queue_message(
            ap.QueueMessage(
                name="jobs",
                body=cbor_dumps_compat({"job": 1}),
                created_at=NOW_MS,
                failure_count=None,
                available_at=None,
                in_flight=None,
                in_flight_at=None,
            )
        ),
    }


# -- (a), (b): a legacy actor is imported once -----------------------------------------------


async def test_legacy_kv_is_imported_once_and_left_in_place(
    engine: Engine, pool: str, runtime: Callable[[], Awaitable[Runtime]]
) -> None:
    records = full_legacy_records()
    actor_id = await legacy_actor(engine, pool, records)
    registry, client = await runtime()
    handle = client.get_for_id("legacy", actor_id)

    assert await handle.legacy_count() == 7  # state from [1]
    assert meta(registry, actor_id)["kv_import_state"] == b"done"
    assert rows(registry, actor_id, "SELECT has_initialized, input FROM _rivet_actor") == [
        (1, cbor_dumps_compat({"from": "legacy"}))
    ]
    assert rows(
        registry, actor_id, "SELECT event_id, trigger_at, action, args, kind FROM "
        "_rivet_schedule_events"
    ) == [("legacy-event", FAR_FUTURE_MS, "legacy_count", cbor_dumps_compat([]), 0)]
    assert rows(registry, actor_id, "SELECT queue_next_id FROM _rivet_runtime") == [
        (QUEUE_ID + 1,)
    ]
    assert await handle.legacy_kv_get("greeting") == "hello from 2.2"  # [4] + key
    assert await handle.legacy_queue_next() == [QUEUE_ID, "jobs", {"job": 1}]

    # The KV is a frozen snapshot: the import neither deleted nor rewrote it.
    reader = await raw_envoy(engine, pool)
    try:
        assert await get(reader, actor_id, list(records)) == records
    finally:
        await reader.close()

    # (b) A later start does not import again: the new state survives a sleep and a wake.
    first = registry.driver.awake[actor_id]
    assert await handle.legacy_set_count(42) == 42
    assert await handle.legacy_kv_get("greeting") == "hello from 2.2"
    await handle.legacy_sleep()
    await until(lambda: actor_id not in registry.driver._hosted)
    assert await handle.legacy_count() == 42
    second = registry.driver.awake[actor_id]
    assert second is not first and second.generation > first.generation
    assert meta(registry, actor_id)["kv_import_state"] == b"done"
    assert await handle.legacy_queue_next() is None  # taken above, not brought back


# -- (c): no legacy data ---------------------------------------------------------------------


async def test_actor_without_legacy_data_is_marked_done(
    engine: Engine, pool: str, runtime: Callable[[], Awaitable[Runtime]]
) -> None:
    actor_id = await legacy_actor(engine, pool, {})
    registry, client = await runtime()
    handle = client.get_for_id("legacy", actor_id)
    assert await handle.legacy_count() == 0  # the definition's initial state
    assert meta(registry, actor_id)["kv_import_state"] == b"done"
    assert await handle.legacy_set_count(3) == 3
    # A brand-new actor of our own (created through the client) gets the same.
    fresh = client.get_or_create("legacy", [uuid.uuid4().hex])
    assert await fresh.legacy_count() == 0
    fresh_id = next(i for i in registry.driver.awake if i != actor_id)
    assert meta(registry, fresh_id)["kv_import_state"] == b"done"


# -- (d): undecodable data fails the start ---------------------------------------------------


async def test_undecodable_legacy_actor_fails_the_start_and_is_not_marked_done(
    engine: Engine,
    pool: str,
    runtime: Callable[[], Awaitable[Runtime]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = b"\x04\x00\xff\xff\xff"  # version 4, then garbage
    actor_id = await legacy_actor(engine, pool, {b"\x01": bad, USER_KV_KEY: b"kept"})
    registry, client = await runtime()
    handle = client.get_for_id("legacy", actor_id)
    caplog.set_level(logging.ERROR, logger="rivetkit.envoy")
    call = asyncio.ensure_future(handle.legacy_count())
    try:
        actor = await wait_actor(engine, actor_id, lambda a: bool(a.get("error")))
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    assert "legacy KV import failed" in str(actor["error"]), actor
    assert "legacy KV key 01" in str(actor["error"]), actor
    assert actor["destroy_ts"] is None
    assert actor_id not in registry.driver.awake
    assert any("legacy KV import failed" in r.getMessage() for r in caplog.records)

    # Not marked done: once the record is readable, the next start imports it.
    fixer = await raw_envoy(engine, pool)
    try:
        await put(fixer, actor_id, {b"\x01": v4_actor(9)})
    finally:
        await fixer.close()
    # The engine may still be retrying the start (the gateway re-wakes an errored actor for a
    # waiting request); whichever start comes next reads the fixed record.
    deadline = time.monotonic() + 20
    while True:
        try:
            count = await asyncio.wait_for(handle.legacy_count(), 5)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    assert count == 9
    assert meta(registry, actor_id)["kv_import_state"] == b"done"
    assert await handle.legacy_kv_get("greeting") == "kept"


# -- the step on its own (no engine): versions, paging, errors -------------------------------


class FakeKv:
    """An in-memory actor KV answering the envoy KV requests the import makes."""

    def __init__(self, data: dict[bytes, bytes], *, page_cap: int | None = None) -> None:
        self.data = dict(data)
        self.requests: list[ev.KvRequestData] = []
        self.page_cap = page_cap  # answer at most this many keys per list (an engine cap)

    async def kv(self, actor_id: str, request: ev.KvRequestData) -> ev.KvResponseData:
        self.requests.append(request)
        if isinstance(request, ev.KvGetRequest):
            found = [k for k in request.keys if k in self.data]
            return ev.KvGetResponse(keys=found, values=[self.data[k] for k in found], metadata=[])
        assert isinstance(request, ev.KvListRequest)
        query = request.query
        keys = sorted(self.data)
        if isinstance(query, ev.KvListPrefixQuery):
            keys = [k for k in keys if k.startswith(query.key)]
        elif isinstance(query, ev.KvListRangeQuery):
            keys = [
                k for k in keys
                if query.start <= k and (k < query.end if query.exclusive else k <= query.end)
            ]
        limit = request.limit if request.limit is not None else len(keys)
        if self.page_cap is not None:
            limit = min(limit, self.page_cap)
        keys = keys[:limit]
        return ev.KvListResponse(keys=keys, values=[self.data[k] for k in keys], metadata=[])


def _store(tmp_path: Path) -> Any:
    from rivetkit._runtime.storage import ActorStore

    return ActorStore.create(tmp_path / "a.db", input=b"\xf6")


def _v1_actor(count: int) -> bytes:
    from rivetkit._protocol._generated import actor_persist_v1 as v1

    value = v1.PersistedActor(
        input=None,
        has_initialized=True,
        state=STATE_CODEC.encode({"count": count}),
        connections=[
            v1.PersistedConnection(
                id="c", token="t", parameters=b"\xf6", state=b"\xf6", subscriptions=[], last_seen=1
            )
        ],
        scheduled_events=[
            v1.PersistedScheduleEvent(
                event_id="e1",
                timestamp=(1 << 64) - 1,
                kind=v1.GenericPersistedScheduleEvent(action="tick", args=None),
            )
        ],
    )
    return b"\x01\x00" + v1.encode_persisted_actor(value)


def _raw_args_v4_actor() -> bytes:
    from rivetkit._protocol._generated import actor_persist_v4 as v4

    value = v4.RawArgsActor(
        input=None,
        has_initialized=True,
        state=STATE_CODEC.encode({"count": 2}),
        scheduled_events=[
            v4.RawArgsScheduleEvent(event_id="a", timestamp=5, action="x", args=b"\x80"),
            v4.RawArgsScheduleEvent(event_id="b", timestamp=6, action="y", args=b""),
        ],
    )
    return b"\x04\x00" + v4.encode_raw_args_actor(value)


def _meta_state(store: Any) -> bytes | None:
    row = store.conn.execute(
        "SELECT value FROM _rivet_meta WHERE key = 'kv_import_state'"
    ).fetchone()
    return None if row is None else bytes(row[0])


async def test_probe_is_concurrent_and_empty_actor_is_marked_done(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.conn.execute("DELETE FROM _rivet_meta WHERE key = 'kv_import_state'")
    kv = FakeKv({b"\x07\x01trace": b"x"})  # traces are not imported, so not probed
    assert await import_legacy_kv(kv, "a", store) == "empty"
    assert _meta_state(store) == b"done"
    assert kv.requests == [
        ev.KvListRequest(query=ev.KvListAllQuery(), reverse=None, limit=1),  # a key: probe
        ev.KvGetRequest(keys=[b"\x01", b"\x06", b"\x03", b"\x05\x01\x01"]),
        *(
            ev.KvListRequest(query=ev.KvListPrefixQuery(key=prefix), reverse=None, limit=1)
            for prefix in (b"\x02", b"\x05\x01\x02", b"\x06\x01", b"\x04")
        ),
    ]
    kv.requests.clear()
    assert await import_legacy_kv(kv, "a", store) == "already_done"
    assert kv.requests == []  # no probe once done


async def test_an_actor_without_any_kv_key_costs_one_probe(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.conn.execute("DELETE FROM _rivet_meta WHERE key = 'kv_import_state'")
    kv = FakeKv({})
    assert await import_legacy_kv(kv, "a", store) == "empty"
    assert _meta_state(store) == b"done"
    assert kv.requests == [ev.KvListRequest(query=ev.KvListAllQuery(), reverse=None, limit=1)]


async def test_old_versions_are_upgraded_and_scans_page(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.conn.execute("DELETE FROM _rivet_meta WHERE key = 'kv_import_state'")
    user = {b"\x04k%04d" % i: b"v%d" % i for i in range(600)}
    kv = FakeKv({b"\x01": _v1_actor(11), **user}, page_cap=100)
    assert await import_legacy_kv(kv, "a", store, input=b"\xf6") == "imported"
    assert _meta_state(store) == b"done"
    has_initialized, _, state, _ = store.load()
    assert has_initialized and STATE_CODEC.decode(state) == {"count": 11}
    assert [tuple(r) for r in store.conn.execute(
        "SELECT event_id, trigger_at, action, args FROM _rivet_schedule_events"
    )] == [("e1", (1 << 63) - 1, "tick", None)]
    assert store.conn.execute("SELECT count(*) FROM _rivet_conns").fetchone()[0] == 0
    stored = dict(store.conn.execute("SELECT key, value FROM _rivet_user_kv"))
    assert stored == user  # all 600 despite pages capped at 100
    lists = [r for r in kv.requests if isinstance(r, ev.KvListRequest)]
    assert all(r.limit in (1, legacy_import.SCAN_PAGE_LIMIT) for r in lists)

    # v4 written by the short-lived raw-args writer.
    store2 = ActorStoreAt(tmp_path / "b.db")
    kv2 = FakeKv({b"\x01": _raw_args_v4_actor()})
    assert await import_legacy_kv(kv2, "b", store2) == "imported"
    assert sorted(tuple(r) for r in store2.conn.execute(
        "SELECT event_id, args FROM _rivet_schedule_events"
    )) == [("a", b"\x80"), ("b", None)]


def ActorStoreAt(path: Path) -> Any:
    from rivetkit._runtime.storage import ActorStore

    store = ActorStore.create(path, input=None)
    store.conn.execute("DELETE FROM _rivet_meta WHERE key = 'kv_import_state'")
    return store


@pytest.mark.parametrize(
    ("records", "key"),
    [
        ({b"\x01": b"\x09\x00"}, "01"),  # unknown version
        ({b"\x01": b"\x04"}, "01"),  # no version prefix
        ({b"\x06": b"\x01\x00\x07"}, "06"),
        ({b"\x05\x01\x01": b"\x04\x00\x01"}, "050101"),
        ({b"\x02conn": b"\x04\x00"}, "02636f6e6e"),
        (
            {
                b"\x05\x01\x02" + (1).to_bytes(8, "big"): ap.encode_queue_message(
                    ap.QueueMessage("q", b"\xf6", 1, 2, None, None, None)  # retry state
                )
            },
            "0501020000000000000001",
        ),
    ],
)
async def test_undecodable_values_raise_with_the_key_and_are_not_marked_done(
    tmp_path: Path, records: dict[bytes, bytes], key: str
) -> None:
    store = ActorStoreAt(tmp_path / "c.db")
    store.conn.execute("INSERT INTO _rivet_user_kv (key, value) VALUES (x'0478', x'01')")
    with pytest.raises(rivetkit.RivetError) as info:
        await import_legacy_kv(FakeKv(records), "c", store)
    assert info.value.group == "storage" and info.value.code == "legacy_import_failed"
    assert info.value.metadata["key"] == key and key in info.value.message
    assert _meta_state(store) == b"importing"  # retried at the next start, never done
    # Nothing of the attempt was written: the import is one transaction.
    assert [tuple(r) for r in store.conn.execute("SELECT key FROM _rivet_user_kv")] == [(b"\x04x",)]


async def test_interrupted_import_is_redone_from_the_kv(tmp_path: Path) -> None:
    store = ActorStoreAt(tmp_path / "d.db")
    store.conn.execute("INSERT INTO _rivet_meta (key, value) VALUES ('kv_import_state', ?)",
                       (b"importing",))
    store.conn.execute("INSERT INTO _rivet_user_kv (key, value) VALUES (x'0478', x'01')")
    kv = FakeKv({b"\x04y": b"2", b"\x03": b"legacy-token"})
    assert await import_legacy_kv(kv, "d", store) == "imported"
    assert dict(store.conn.execute("SELECT key, value FROM _rivet_user_kv")) == {b"\x04y": b"2"}
    assert store.conn.execute("SELECT inspector_token FROM _rivet_runtime").fetchone()[0] == (
        "legacy-token"
    )
    assert store.load()[0] is False  # no [1]: not initialised, the actor row kept
    store.conn.execute("UPDATE _rivet_meta SET value = ? WHERE key = 'kv_import_state'", (b"??",))
    with pytest.raises(rivetkit.RivetError, match="unknown kv_import_state"):
        await import_legacy_kv(kv, "d", store)
