"""Envoy protocol v8 against the real rivet-engine 2.3.19 (spec ``engine-envoy.md`` §12).

Scenarios 1-9, 17, 20, 24 and 25, driven by the minimal envoy of ``raw_envoy.py``. Scenario 8
(every received frame re-encodes byte-identically) is checked for *every* envoy of every test by
the ``envoys`` fixture, and once more by a test that provokes most ToEnvoy message kinds
(commands, KV, remote SQL, the page protocol, HTTP and WebSocket tunnel traffic).

The shared session engine is reused; each test has its own pool and envoy keys. Tests that
need other engine settings (auth, a short ping timeout) start their own engine (~0.15 s).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import cbor2
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from rivetkit._protocol import envoy as ev
from tests.engine.engine_proc import ENGINE_VERSION, Engine
from tests.engine.helpers import api, get_actor, until_registered, wait_actor
from tests.engine.raw_envoy import RawEnvoy, new_envoy_key, open_and_wait_close

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EnvoyFactory = Callable[..., Awaitable[RawEnvoy]]


# -- helpers ---------------------------------------------------------------------------------


async def create_actor(
    engine: Engine,
    pool: str,
    *,
    name: str = "py-actor",
    key: str | None = None,
    input: bytes | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "runner_name_selector": pool, "crash_policy": "sleep"}
    if key is not None:
        body["key"] = key
    if input is not None:
        body["input"] = base64.b64encode(input).decode()
    actor: dict[str, Any] = (await api(engine, "POST", "/actors", body))["actor"]
    return actor


def url_with(url: str, *, drop: tuple[str, ...] = (), **params: Any) -> str:
    """``url`` with query parameters replaced (``params``) or removed (``drop``)."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update({k: str(v) for k, v in params.items()})
    for name in drop:
        query.pop(name, None)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@pytest.fixture
async def envoys() -> AsyncIterator[EnvoyFactory]:
    """``await envoys(engine, pool, **RawEnvoy.connect options)``; closes them, checks §12.8."""
    opened: list[RawEnvoy] = []

    async def factory(
        engine: Engine, pool: str, *, envoy_key: str | None = None, **kw: Any
    ) -> RawEnvoy:
        key = envoy_key or new_envoy_key()
        envoy = await RawEnvoy.connect(
            engine.envoy_url(pool, envoy_key=key), envoy_key=key, token=engine.admin_token, **kw
        )
        opened.append(envoy)
        if envoy.init is not None:
            await until_registered(engine, key)
        return envoy

    yield factory
    for envoy in opened:
        await envoy.close()
    problems = [m for envoy in opened for m in envoy.mismatches]
    assert problems == [], "frames that did not re-encode byte-identically (§12.8)"


async def start_actor(engine: Engine, pool: str, envoy: RawEnvoy, **create: Any) -> tuple[str, int]:
    """Create an actor, take its start command, ack it, report Running: (actor id, generation)."""
    actor = await create_actor(engine, pool, **create)
    try:
        wrapper = await envoy.start_actor()
    except TimeoutError:
        state = await get_actor(engine, actor["actor_id"])
        raise AssertionError(
            f"no CommandStartActor for {state} (inbox: {envoy.pending()}, closed: {envoy.closed})"
            f"\n{engine.log_tail(4000)}"
        ) from None
    assert wrapper.checkpoint.actor_id == actor["actor_id"]
    return actor["actor_id"], wrapper.checkpoint.generation


# -- 1-5: boot, pool, query validation, auth, handshake --------------------------------------


async def test_boot_health_metadata_and_default_namespace(engine: Engine) -> None:
    assert 0 < engine.start_seconds < 5.0  # ~0.15 s on the dev machine
    health = await api(engine, "GET", "/health", namespace=None)
    assert health == {"runtime": "engine", "status": "ok", "version": ENGINE_VERSION}
    metadata = await api(engine, "GET", "/metadata", namespace=None)
    assert metadata["envoy_protocol_version"] == ev.PROTOCOL_VERSION == 8
    assert metadata["version"] == ENGINE_VERSION
    names = [
        ns["name"] for ns in (await api(engine, "GET", "/namespaces", namespace=None))["namespaces"]
    ]
    assert "default" in names
    # The topology names our ports: the engine hands this URL to clients.
    (dc,) = (await api(engine, "GET", "/datacenters"))["datacenters"]
    assert dc["url"].rstrip("/") == engine.endpoint


async def test_pool_without_runner_config_is_closed_then_put_gives_init(engine: Engine) -> None:
    pool = f"pool-late-{new_envoy_key()[:8]}"
    closed = await open_and_wait_close(engine.envoy_url(pool, envoy_key=new_envoy_key()))
    assert (closed.code, closed.group_code) == (1011, "ws.no_runner_config")
    assert "#" in closed.reason  # group.code#ray_id
    assert engine.put_runner_config(pool) == {"endpoint_config_changed": True}
    key = new_envoy_key()
    envoy = await RawEnvoy.connect(engine.envoy_url(pool, envoy_key=key), envoy_key=key)
    try:
        assert envoy.init == ev.ToEnvoyInit(
            ev.ProtocolMetadata(
                envoy_lost_threshold=15_000, actor_stop_threshold=1_800_000,
                max_response_payload_size=20 * 1024 * 1024,
            )
        )  # fmt: skip
    finally:
        await envoy.close()
    assert envoy.mismatches == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"protocol_version": 1}, "ws.invalid_request"),
        ({"protocol_version": 9}, "ws.invalid_request"),
        ({"protocol_version": "x"}, "core.internal_error"),  # not ws.invalid_request (2.3.19)
        ({"envoy_key": "ab"}, "ws.invalid_request"),
        ({"drop": ("version",)}, "ws.invalid_request"),
        ({"drop": ("envoy_key",)}, "ws.invalid_request"),
        ({"namespace": "no-such-namespace"}, "namespace.not_found"),
        ({"pool_name": "p" * 129}, "ws.invalid_request"),
    ],
    ids=["pv1", "pv9", "pv-text", "short-key", "no-version", "no-key", "namespace", "long-pool"],
)
async def test_query_validation_closes_1011(
    engine: Engine, pool: str, change: dict[str, Any], expected: str
) -> None:
    url = url_with(engine.envoy_url(pool, envoy_key=new_envoy_key()), **change)
    closed = await open_and_wait_close(url)
    assert (closed.code, closed.group_code) == (1011, expected), closed


async def test_admin_token_guards_api_and_envoy_socket(
    engine_factory: Callable[..., Engine],
) -> None:
    token = "s3cret-token"
    eng = engine_factory(admin_token=token)
    eng.put_runner_config("default")  # sends the token
    status, body = eng.api("GET", "/actors/names", token="", check=False)
    assert (status, body["group"], body["code"]) == (403, "api", "forbidden")
    status, body = eng.api("GET", "/actors/names", token="wrong", check=False)
    assert (status, body["code"]) == (403, "forbidden")
    assert eng.api("GET", "/health", namespace=None, token="")[0] == 200  # stays open
    url = eng.envoy_url("default", envoy_key=new_envoy_key())
    missing = await open_and_wait_close(url)
    assert missing.code == 1011 and missing.group_code in ("guard.missing_header", "api.forbidden")
    wrong = await open_and_wait_close(url, token="wrong")
    assert (wrong.code, wrong.group_code) == (1011, "api.forbidden")
    key = new_envoy_key()
    envoy = await RawEnvoy.connect(
        eng.envoy_url("default", envoy_key=key), envoy_key=key, token=token
    )
    try:
        assert envoy.init is not None and envoy.closed is None
    finally:
        await envoy.close()


async def test_handshake_registers_actor_names_and_envoy_metadata(
    engine: Engine, pool: str, envoys: EnvoyFactory
) -> None:
    name = f"py-named-{new_envoy_key()[:8]}"
    metadata = ev.ToRivetMetadata(
        prepopulate_actor_names={name: ev.ActorName(metadata='{"icon":"snake"}')},
        metadata='{"rivetkit":{"version":"python"}}',
    )
    envoy = await envoys(engine, pool, metadata=metadata)
    assert envoy.init is not None
    assert envoy.init.metadata.envoy_lost_threshold == 15_000
    deadline = time.monotonic() + 10
    while True:
        names = (await api(engine, "GET", "/actors/names"))["names"]
        listed = (await api(engine, "GET", f"/envoys?envoy_key={envoy.envoy_key}"))["envoys"]
        if name in names and listed:
            break
        assert time.monotonic() < deadline, (names, listed)
        await asyncio.sleep(0.02)
    assert names[name] == {"metadata": {"icon": "snake"}}  # the Json string comes back parsed
    (entry,) = listed
    assert entry["pool_name"] == pool and entry["version"] == 1
    assert entry["metadata"] == {"rivetkit": {"version": "python"}}


# -- 6, 7: ping and eviction ----------------------------------------------------------------


async def test_pongs_keep_the_socket_and_missing_pongs_time_out(
    engine_factory: Callable[..., Engine],
) -> None:
    # The default timeout is 15 s; the same mechanism runs here with 1 s (pings every 200 ms).
    eng = engine_factory(pegboard={"envoy_ping_timeout": 1000, "envoy_update_ping_interval": 200})
    eng.put_runner_config("default")
    key = new_envoy_key()
    alive = await RawEnvoy.connect(eng.envoy_url("default", envoy_key=key), envoy_key=key)
    mute_key = new_envoy_key()
    mute = await RawEnvoy.connect(
        eng.envoy_url("default", envoy_key=mute_key), envoy_key=mute_key, auto_pong=False
    )
    opened_at = time.monotonic()
    try:
        closed = await mute.wait_closed(timeout=10)
        waited = time.monotonic() - opened_at
        assert (closed.code, closed.group_code) == (1011, "ws.timed_out")
        assert 0.8 < waited < 6.0, waited
        assert len(mute.pings) >= 2  # pings kept coming; we did not answer them
        # Meanwhile the answering envoy outlived the timeout several times over.
        while time.monotonic() - opened_at < 2.5:
            await asyncio.sleep(0.1)
        assert alive.closed is None and len(alive.pings) >= 8
        assert alive.pings == sorted(alive.pings)
        (entry,) = [e for e in eng.api("GET", "/envoys")[1]["envoys"] if e["envoy_key"] == key]
        assert 0 <= entry["last_rtt"] < 1000  # computed from the ts we echoed
    finally:
        await alive.close()
        await mute.close()
    assert alive.mismatches == mute.mismatches == []


async def test_second_connection_with_same_key_evicts_the_first(
    engine: Engine, pool: str, envoys: EnvoyFactory
) -> None:
    first = await envoys(engine, pool)
    # 2.3.19 race: a second connection within a few ms of the first one's Init sometimes
    # leaves both open (no eviction) or drops the first without a close frame (1006).
    await asyncio.sleep(0.1)
    second = await envoys(engine, pool, envoy_key=first.envoy_key)
    closed = await first.wait_closed()
    assert (closed.code, closed.group_code) == (1000, "ws.eviction")
    assert second.init is not None and second.closed is None
    # The survivor gets the pool's actors.
    actor = await create_actor(engine, pool)
    wrapper = await second.next_start()
    assert wrapper.checkpoint.actor_id == actor["actor_id"]


# -- 9, 17: actor lifecycle -----------------------------------------------------------------


async def test_start_running_and_gateway_request(
    engine: Engine, pool: str, envoys: EnvoyFactory
) -> None:
    envoy = await envoys(engine, pool)
    payload = cbor2.dumps({"count": 3})
    before = int(time.time() * 1000)
    actor = await create_actor(engine, pool, name="py-counter", key="k/1", input=payload)
    actor_id = actor["actor_id"]
    assert actor["start_ts"] is None
    wrapper = await envoy.next_start()
    cp, start = wrapper.checkpoint, wrapper.inner
    assert isinstance(start, ev.CommandStartActor)
    assert (cp.actor_id, cp.generation, cp.index) == (actor_id, 1, 1)
    assert start.config.name == "py-counter" and start.config.key == "k/1"
    assert start.config.input == payload
    # createTs is ms epoch; 2.3.19 stamps it a few ms after the API's create_ts.
    assert (
        before - 1000
        <= actor["create_ts"]
        <= start.config.create_ts
        <= int(time.time() * 1000) + 1000
    )
    assert start.hibernating_requests == [] and start.preloaded_kv is None
    await envoy.ack(cp)
    await envoy.running(actor_id, cp.generation)
    started = await wait_actor(engine, actor_id, lambda a: a["connectable_ts"] is not None)
    assert started["start_ts"] is not None and started["destroy_ts"] is None

    async with httpx.AsyncClient(timeout=20) as client:
        call = asyncio.ensure_future(
            client.post(
                f"{engine.endpoint}/gateway/{actor_id}/action/increment?x=1",
                content=b"\x04\x00hello",
            )
        )
        tunnel = await envoy.recv(ev.ToEnvoyTunnelMessage)
        request = tunnel.message_kind
        assert isinstance(request, ev.ToEnvoyRequestStart)
        assert tunnel.message_id.message_index == 0 and len(tunnel.message_id.gateway_id) == 4
        assert (request.actor_id, request.method, request.path) == (
            actor_id,
            "POST",
            "/action/increment?x=1",
        )
        assert request.body == b"\x04\x00hello" and request.stream is False
        assert "x-rivet-ray-id" in request.headers
        response = ev.ToRivetResponseStart(
            status=201,
            headers={
                "content-type": "application/octet-stream",
                "content-length": "3",
                "x-py": "yes",
            },
            body=b"\x01\x02\x03",
            stream=False,
        )
        await envoy.send(ev.ToRivetTunnelMessage(tunnel.message_id, response))
        reply = await call
    assert reply.status_code == 201 and reply.content == b"\x01\x02\x03"
    assert reply.headers["x-py"] == "yes"


async def test_stop_intent_then_stopped_ok_destroys(
    engine: Engine, pool: str, envoys: EnvoyFactory
) -> None:
    envoy = await envoys(engine, pool)
    actor_id, gen = await start_actor(engine, pool, envoy)
    await envoy.event(actor_id, gen, ev.EventActorIntent(intent=ev.ActorIntentStop()))
    stop = await envoy.next_command(ev.CommandStopActor, actor_id=actor_id)
    assert stop.inner == ev.CommandStopActor(reason=ev.StopActorReason.STOP_INTENT)
    assert (stop.checkpoint.generation, stop.checkpoint.index) == (gen, 2)
    await envoy.ack(stop.checkpoint)
    await envoy.stopped(actor_id, gen)
    actor = await wait_actor(engine, actor_id, lambda a: a["destroy_ts"] is not None)
    assert actor["sleep_ts"] is None


async def test_delete_sends_stop_destroy(engine: Engine, pool: str, envoys: EnvoyFactory) -> None:
    envoy = await envoys(engine, pool)
    actor_id, gen = await start_actor(engine, pool, envoy)
    deleting = asyncio.ensure_future(api(engine, "DELETE", f"/actors/{actor_id}"))
    stop = await envoy.next_command(ev.CommandStopActor, actor_id=actor_id)
    assert stop.inner == ev.CommandStopActor(reason=ev.StopActorReason.DESTROY)
    await envoy.ack(stop.checkpoint)
    await asyncio.sleep(0.05)
    assert not deleting.done()  # the DELETE answers only once the runtime reported Stopped
    await envoy.stopped(actor_id, gen)
    await asyncio.wait_for(deleting, 10)
    await wait_actor(engine, actor_id, lambda a: a["destroy_ts"] is not None)


# -- 20: command replay ---------------------------------------------------------------------


async def test_unacked_start_is_replayed_after_reconnect_and_not_after_ack(
    engine: Engine, pool: str, envoys: EnvoyFactory
) -> None:
    first = await envoys(engine, pool)
    actor = await create_actor(engine, pool, key="replay")
    original = await first.next_start()
    await first.drop()  # no ack, no close handshake: a crashed runtime

    second = await envoys(engine, pool, envoy_key=first.envoy_key)
    replayed = await second.next_start()
    assert replayed == original  # same checkpoint (actor, generation, index) and config
    assert replayed.checkpoint.actor_id == actor["actor_id"]
    # The replay follows Init directly.
    tags = [frame[0] for frame in second.frames if frame[0] != 5]  # 5 = ToEnvoyPing
    assert tags[:2] == [0, 1], tags
    await second.ack(replayed.checkpoint)
    await second.running(actor["actor_id"], replayed.checkpoint.generation)
    await wait_actor(engine, actor["actor_id"], lambda a: a["connectable_ts"] is not None)
    await second.drop()

    third = await envoys(engine, pool, envoy_key=first.envoy_key)
    # A KV round trip after Init: a replay would have been sent before its response.
    reply = await third.kv(actor["actor_id"], ev.KvGetRequest(keys=[b"x"]))
    assert isinstance(reply, ev.KvGetResponse)
    await asyncio.sleep(0.3)
    assert third.pending(ev.ToEnvoyCommands) == []


# -- 24: KV ---------------------------------------------------------------------------------


@pytest.fixture
async def kv_actor(engine: Engine, pool: str, envoys: EnvoyFactory) -> tuple[RawEnvoy, str, int]:
    envoy = await envoys(engine, pool)
    actor_id, gen = await start_actor(engine, pool, envoy)
    return envoy, actor_id, gen


async def _put(envoy: RawEnvoy, actor_id: str, pairs: dict[bytes, bytes]) -> ev.KvResponseData:
    return await envoy.kv(actor_id, ev.KvPutRequest(keys=list(pairs), values=list(pairs.values())))


async def _list(envoy: RawEnvoy, actor_id: str, query: ev.KvListQuery, **kw: Any) -> list[bytes]:
    reply = await envoy.kv(
        actor_id, ev.KvListRequest(query=query, reverse=kw.get("reverse"), limit=kw.get("limit"))
    )
    assert isinstance(reply, ev.KvListResponse), reply
    assert len(reply.keys) == len(reply.values) == len(reply.metadata)
    return reply.keys


async def test_kv_put_get_omits_missing_keys(kv_actor: tuple[RawEnvoy, str, int]) -> None:
    envoy, actor_id, _ = kv_actor
    before = int(time.time() * 1000)
    assert (
        await _put(envoy, actor_id, {b"a": b"1", b"\x00bin": b"\xff" * 10, b"c": b""})
        == ev.KvPutResponse()
    )
    reply = await envoy.kv(actor_id, ev.KvGetRequest(keys=[b"c", b"missing", b"a", b"\x00bin"]))
    assert isinstance(reply, ev.KvGetResponse)
    assert dict(zip(reply.keys, reply.values)) == {b"a": b"1", b"\x00bin": b"\xff" * 10, b"c": b""}
    assert len(reply.keys) == 3
    for meta in reply.metadata:
        assert meta.version == ENGINE_VERSION.encode()
        assert before - 5000 <= meta.update_ts <= int(time.time() * 1000) + 5000
    # Overwrite, then read back.
    await _put(envoy, actor_id, {b"a": b"2"})
    again = await envoy.kv(actor_id, ev.KvGetRequest(keys=[b"a"]))
    assert isinstance(again, ev.KvGetResponse) and again.values == [b"2"]


async def test_kv_list_all_prefix_range_reverse_limit(kv_actor: tuple[RawEnvoy, str, int]) -> None:
    envoy, actor_id, _ = kv_actor
    await _put(envoy, actor_id, {k: k.upper() for k in (b"d", b"b", b"ab", b"a", b"c", b"b\x00")})
    assert await _list(envoy, actor_id, ev.KvListAllQuery()) == [
        b"a",
        b"ab",
        b"b",
        b"b\x00",
        b"c",
        b"d",
    ]
    assert await _list(envoy, actor_id, ev.KvListPrefixQuery(key=b"a")) == [b"a", b"ab"]
    assert await _list(envoy, actor_id, ev.KvListPrefixQuery(key=b"b")) == [b"b", b"b\x00"]
    inclusive = ev.KvListRangeQuery(start=b"ab", end=b"c", exclusive=False)
    assert await _list(envoy, actor_id, inclusive) == [b"ab", b"b", b"b\x00", b"c"]
    exclusive = ev.KvListRangeQuery(start=b"ab", end=b"c", exclusive=True)
    assert await _list(envoy, actor_id, exclusive) == [b"ab", b"b", b"b\x00"]
    assert await _list(envoy, actor_id, ev.KvListAllQuery(), reverse=True, limit=2) == [b"d", b"c"]
    assert await _list(envoy, actor_id, ev.KvListAllQuery(), reverse=False, limit=1) == [b"a"]
    assert await _list(envoy, actor_id, ev.KvListPrefixQuery(key=b"zz")) == []


async def test_kv_delete_delete_range_and_drop(kv_actor: tuple[RawEnvoy, str, int]) -> None:
    envoy, actor_id, _ = kv_actor
    await _put(envoy, actor_id, {k: b"v" for k in (b"a", b"ab", b"b", b"c", b"d")})
    deleted = await envoy.kv(actor_id, ev.KvDeleteRequest(keys=[b"b", b"not-there"]))
    assert deleted == ev.KvDeleteResponse()
    ranged = await envoy.kv(actor_id, ev.KvDeleteRangeRequest(start=b"a", end=b"c"))
    assert ranged == ev.KvDeleteResponse()  # [start, end): "c" stays
    assert await _list(envoy, actor_id, ev.KvListAllQuery()) == [b"c", b"d"]
    assert await envoy.kv(actor_id, ev.KvDropRequest()) == ev.KvDropResponse()
    assert await _list(envoy, actor_id, ev.KvListAllQuery()) == []


async def test_kv_limits_are_refused_without_partial_writes(
    kv_actor: tuple[RawEnvoy, str, int],
) -> None:
    envoy, actor_id, _ = kv_actor

    async def error(data: ev.KvRequestData) -> str:
        reply = await envoy.kv(actor_id, data)
        assert isinstance(reply, ev.KvErrorResponse), reply
        return reply.message

    keys129 = [b"k%03d" % i for i in range(129)]
    assert await error(ev.KvGetRequest(keys=keys129)) == "a maximum of 128 keys is allowed"
    assert await error(ev.KvDeleteRequest(keys=keys129)) == "a maximum of 128 keys is allowed"
    await error(ev.KvPutRequest(keys=keys129, values=[b"v"] * 129))  # "transaction failed"
    assert isinstance(
        await envoy.kv(actor_id, ev.KvGetRequest(keys=keys129[:128])), ev.KvGetResponse
    )
    assert "too long" in await error(ev.KvGetRequest(keys=[b"x" * 2049]))
    await error(ev.KvPutRequest(keys=[b"x" * 2049], values=[b"v"]))
    await error(ev.KvPutRequest(keys=[b"big"], values=[b"v" * (128 * 1024 + 1)]))
    await error(
        ev.KvPutRequest(keys=[b"%d" % i for i in range(8)], values=[b"v" * (128 * 1024)] * 8)
    )
    await error(ev.KvPutRequest(keys=[b"a", b"b"], values=[b"v"]))  # keys/values mismatch
    assert await _put(envoy, actor_id, {b"max": b"v" * (128 * 1024)}) == ev.KvPutResponse()
    assert await _list(envoy, actor_id, ev.KvListAllQuery()) == [b"max"]


# -- 25: remote SQL -------------------------------------------------------------------------


def _execute(
    actor_id: str, gen: int, sql: str, params: list[Any] | None = None, ns: str = "default"
) -> ev.SqliteExecuteRequest:
    return ev.SqliteExecuteRequest(
        namespace_id=ns, actor_id=actor_id, generation=gen, sql=sql, params=params
    )


def _batch(
    actor_id: str, gen: int, *statements: tuple[str, list[Any] | None]
) -> ev.SqliteExecuteBatchRequest:
    return ev.SqliteExecuteBatchRequest(
        namespace_id="default", actor_id=actor_id, generation=gen,
        statements=[ev.SqliteBatchStatement(sql=sql, params=params) for sql, params in statements],
    )  # fmt: skip


async def _ok(envoy: RawEnvoy, request: ev.SqliteExecuteRequest) -> ev.SqliteExecuteResult:
    reply = await envoy.sql_execute(request)
    assert isinstance(reply, ev.SqliteExecuteOk), reply
    return reply.result


async def test_sql_execute_round_trips_every_bind_type(kv_actor: tuple[RawEnvoy, str, int]) -> None:
    envoy, actor_id, gen = kv_actor
    await _ok(envoy, _execute(actor_id, gen, "CREATE TABLE t (n, i, f, s, b)"))
    params: list[Any] = [
        ev.SqliteValueNull(),
        ev.SqliteValueInteger(value=-(2**63)),
        ev.SqliteValueFloat(value=struct.pack("<d", -1.25)),
        ev.SqliteValueText(value="héllo ✓"),
        ev.SqliteValueBlob(value=b"\x00\xff\x10"),
    ]
    inserted = await _ok(
        envoy, _execute(actor_id, gen, "INSERT INTO t VALUES (?, ?, ?, ?, ?)", params)
    )
    assert inserted.changes == 1 and inserted.last_insert_row_id == 1 and inserted.rows == []
    result = await _ok(
        envoy,
        _execute(
            actor_id, gen, "SELECT n, i, f, s, b, typeof(f) AS tf FROM t WHERE s = ?", [params[3]]
        ),
    )
    assert result.columns == ["n", "i", "f", "s", "b", "tf"]
    assert result.rows == [[*params, ev.SqliteValueText(value="real")]]
    float_value = result.rows[0][2]
    assert isinstance(float_value, ev.SqliteValueFloat)
    assert struct.unpack("<d", float_value.value) == (-1.25,)


async def test_sql_checks_generation_and_namespace_name(
    kv_actor: tuple[RawEnvoy, str, int], engine: Engine
) -> None:
    envoy, actor_id, gen = kv_actor
    wrong_gen = await envoy.sql_execute(_execute(actor_id, gen + 1, "SELECT 1"))
    assert isinstance(wrong_gen, ev.SqliteErrorResponse)
    assert wrong_gen.message == "actor does not exist"
    namespaces = (await api(engine, "GET", "/namespaces", namespace=None))["namespaces"]
    ns_id = next(ns["namespace_id"] for ns in namespaces if ns["name"] == "default")
    by_id = await envoy.sql_execute(_execute(actor_id, gen, "SELECT 1", ns=ns_id))
    assert isinstance(by_id, ev.SqliteErrorResponse) and by_id.message == "actor does not exist"
    by_name = await _ok(envoy, _execute(actor_id, gen, "SELECT 1 AS one"))
    assert by_name.rows == [[ev.SqliteValueInteger(value=1)]]
    bad_sql = await envoy.sql_execute(_execute(actor_id, gen, "SELEC 1"))
    assert isinstance(bad_sql, ev.SqliteErrorResponse)
    assert (bad_sql.group, bad_sql.code) == (
        "core",
        "internal_error",
    ) and "syntax error" in bad_sql.message


async def test_sql_execute_batch_is_atomic(kv_actor: tuple[RawEnvoy, str, int]) -> None:
    envoy, actor_id, gen = kv_actor
    one = [ev.SqliteValueInteger(value=1)]
    created = await envoy.sql_batch(
        _batch(
            actor_id,
            gen,
            ("CREATE TABLE u (x INTEGER PRIMARY KEY)", None),
            ("INSERT INTO u VALUES (?)", one),
        )
    )
    assert isinstance(created, ev.SqliteExecuteBatchOk) and len(created.results) == 2
    assert created.results[1].changes == 1
    failed = await envoy.sql_batch(
        _batch(actor_id, gen, ("INSERT INTO u VALUES (2)", None), ("INSERT INTO u VALUES (?)", one))
    )
    assert (
        isinstance(failed, ev.SqliteErrorResponse) and "UNIQUE constraint failed" in failed.message
    )
    rows = (await _ok(envoy, _execute(actor_id, gen, "SELECT x FROM u ORDER BY x"))).rows
    assert rows == [[ev.SqliteValueInteger(value=1)]]  # the 2 of the failed batch was rolled back
    exec_reply = await envoy.sql_exec(
        ev.SqliteExecRequest(
            namespace_id="default",
            actor_id=actor_id,
            generation=gen,
            sql="SELECT count(*) AS n FROM u",
        )
    )
    assert exec_reply == ev.SqliteExecOk(
        result=ev.SqliteQueryResult(columns=["n"], rows=[[ev.SqliteValueInteger(value=1)]])
    )


# -- 8: every kind of received frame re-encodes byte-identically -----------------------------


async def test_received_frames_of_every_kind_reencode_identically(
    engine: Engine, pool: str, envoys: EnvoyFactory
) -> None:
    envoy = await envoys(engine, pool)
    actor_id, gen = await start_actor(engine, pool, envoy, key="frames", input=b"\xa0")
    # Page protocol on a database that does not exist yet, then remote SQL creates it.
    rid = envoy.next_request_id()
    pages = ev.SqliteGetPagesRequest(
        actor_id=actor_id, pgnos=[1, 2], expected_generation=gen, expected_head_txid=None
    )
    await envoy.send(ev.ToRivetSqliteGetPagesRequest(request_id=rid, data=pages))
    missing = await envoy.recv(ev.ToEnvoySqliteGetPagesResponse, lambda m: m.request_id == rid)
    assert isinstance(missing.data, ev.SqliteErrorResponse)
    assert (missing.data.group, missing.data.code) == ("depot", "database_not_found")
    await _ok(envoy, _execute(actor_id, gen, "CREATE TABLE w (x)"))
    rid = envoy.next_request_id()
    await envoy.send(ev.ToRivetSqliteGetPagesRequest(request_id=rid, data=pages))
    found = await envoy.recv(ev.ToEnvoySqliteGetPagesResponse, lambda m: m.request_id == rid)
    assert isinstance(found.data, ev.SqliteGetPagesOk)
    page1 = found.data.pages[0]
    assert (
        page1.pgno == 1
        and page1.bytes is not None
        and page1.bytes.startswith(b"SQLite format 3\x00")
    )
    await envoy.sql_exec(ev.SqliteExecRequest("default", actor_id, gen, "SELECT 1"))
    await envoy.sql_batch(_batch(actor_id, gen, ("SELECT 1", None)))
    for data in (
        ev.KvPutRequest(keys=[b"k"], values=[b"v"]), ev.KvGetRequest(keys=[b"k"]),
        ev.KvListRequest(ev.KvListAllQuery(), None, None), ev.KvDeleteRequest(keys=[b"k"]),
        ev.KvDropRequest(), ev.KvGetRequest(keys=[b"x"] * 200),
    ):  # fmt: skip
        await envoy.kv(actor_id, data)

    # WebSocket through the gateway: open, a message each way, client close.
    # The gateway answers `sec-websocket-protocol: rivet` even when the client offered none,
    # which `websockets` (rightly) refuses: offer it.
    socket_url = f"{engine.ws_endpoint}/gateway/{actor_id}/raw/socket"
    async with ws_connect(socket_url, subprotocols=["rivet"]) as client:  # type: ignore[list-item]
        opened = await envoy.recv(ev.ToEnvoyTunnelMessage)
        assert isinstance(opened.message_kind, ev.ToEnvoyWebSocketOpen)
        assert opened.message_kind.path == "/raw/socket"
        mid = opened.message_id
        await envoy.send(ev.ToRivetTunnelMessage(mid, ev.ToRivetWebSocketOpen(can_hibernate=False)))
        await client.send("hello")
        incoming = await envoy.recv(ev.ToEnvoyTunnelMessage)
        assert incoming.message_kind == ev.ToEnvoyWebSocketMessage(data=b"hello", binary=False)
        assert incoming.message_id.message_index == 1
        out_id = ev.MessageId(mid.gateway_id, mid.request_id, 1)
        await envoy.send(
            ev.ToRivetTunnelMessage(out_id, ev.ToRivetWebSocketMessage(b"\x01\x02", binary=True))
        )
        assert await asyncio.wait_for(client.recv(), 10) == b"\x01\x02"
    closing = await envoy.recv(ev.ToEnvoyTunnelMessage)
    assert isinstance(closing.message_kind, ev.ToEnvoyWebSocketClose)
    await envoy.send(
        ev.ToRivetTunnelMessage(mid, ev.ToRivetWebSocketClose(1000, "bye", hibernate=False))
    )

    await envoy.event(actor_id, gen, ev.EventActorIntent(intent=ev.ActorIntentSleep()))
    sleep = await envoy.next_command(ev.CommandStopActor, actor_id=actor_id)
    assert sleep.inner == ev.CommandStopActor(reason=ev.StopActorReason.SLEEP_INTENT)

    kinds = {type(ev.decode_to_envoy(frame)).__name__ for frame in envoy.frames}
    assert kinds >= {
        "ToEnvoyInit", "ToEnvoyCommands", "ToEnvoyKvResponse", "ToEnvoyTunnelMessage",
        "ToEnvoySqliteGetPagesResponse", "ToEnvoySqliteExecResponse",
        "ToEnvoySqliteExecuteResponse", "ToEnvoySqliteExecuteBatchResponse",
    }, kinds  # fmt: skip
    assert len(envoy.frames) >= 15
    for frame in envoy.frames:
        assert ev.encode_to_envoy(ev.decode_to_envoy(frame)) == frame


async def _depot(envoy: RawEnvoy, request: Any) -> Any:
    """Send one page-protocol request (any of the SQLite page messages) and take its answer."""
    kinds = {
        ev.SqliteGetPagesRequest: (ev.ToRivetSqliteGetPagesRequest,
                                   ev.ToEnvoySqliteGetPagesResponse),
        ev.SqliteCommitStageBeginRequest: (ev.ToRivetSqliteCommitStageBeginRequest,
                                           ev.ToEnvoySqliteCommitStageBeginResponse),
    }
    outgoing, incoming = kinds[type(request)]
    rid = envoy.next_request_id()
    await envoy.send(outgoing(request_id=rid, data=request))
    return (await envoy.recv(incoming, lambda m: m.request_id == rid)).data


async def test_a_new_stage_replaces_an_abandoned_one_at_head_plus_one(
    engine: Engine, pool: str, envoys: EnvoyFactory
) -> None:
    """A stage begun and never finalized (its runtime died mid-commit) does not use up a txid:
    the next stage begins at ``head + 1`` again, which our staged commits check (a design note
    of the engine's newer depot has abandoned stages leak txids; 2.3.19 does not)."""
    envoy = await envoys(engine, pool)
    actor_id, gen = await start_actor(engine, pool, envoy, key="stages", input=b"\xa0")
    await _ok(envoy, _execute(actor_id, gen, "CREATE TABLE w (x)"))
    pages = await _depot(envoy, ev.SqliteGetPagesRequest(actor_id, [1], gen, None))
    assert isinstance(pages, ev.SqliteGetPagesOk) and pages.head_txid is not None
    head = pages.head_txid
    for _ in range(2):
        begun = await _depot(envoy, ev.SqliteCommitStageBeginRequest(actor_id, gen, head))
        assert begun == ev.SqliteCommitStageBeginOk(txid=head + 1)
