"""Python actors hosted on the real Rivet Engine, driven by the Python client through the engine.

The registry runs in this process in engine mode (its envoy connects to the engine), the client
talks only to the engine's gateway: every request travels client -> engine -> tunnel -> our
actor router -> the actor, and the actor's database lives in the engine (spec §12: 9, 10, 15,
17, 19 from the runtime's side).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cbor2
import pytest

import rivetkit
from rivetkit._runtime.hibernation import load_conns
from rivetkit.client import Client
from rivetkit.config import EngineConfig
from rivetkit.errors import ActorError
from tests.engine.engine_app import make_registry
from tests.engine.engine_proc import Engine
from tests.engine.helpers import envoys, until, until_registered

pytestmark = pytest.mark.anyio


@pytest.fixture
async def hosted(
    engine: Engine, pool: str, tmp_path: Path
) -> AsyncIterator[tuple[rivetkit.Registry, Client]]:
    registry = make_registry(storage_path=tmp_path / "data")
    registry.use_engine(EngineConfig(endpoint=engine.endpoint, pool=pool))
    await registry.start()
    await registry.driver.wait_ready(10)
    client = Client(engine.endpoint, pool_name=pool)
    try:
        yield registry, client
    finally:
        await client.aclose()
        await registry.stop()


async def until_destroyed(engine: Engine, actor_id: str) -> None:
    for _ in range(500):
        _, body = await asyncio.to_thread(
            engine.api, "GET", f"/actors?actor_ids={actor_id}&include_destroyed=true"
        )
        if body["actors"] and body["actors"][0]["destroy_ts"] is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"actor {actor_id} was not destroyed: {body}")


async def sleep_amid_increments(target: Any, count: int) -> None:
    """Ask the counter to sleep with ``count`` increments in flight (over ``target``, a handle
    or a connection); every one must be applied exactly once."""
    sleep = asyncio.ensure_future(target.go_to_sleep())
    burst = [asyncio.ensure_future(target.increment(1)) for _ in range(count)]
    await sleep
    results = await asyncio.wait_for(asyncio.gather(*burst), 30)
    assert len(set(results)) == count


async def until_slept(registry: Any, actor_id: str) -> None:
    """Wait until the generation that asked to sleep has stopped. The engine answers the intent
    in its own time (seconds on a loaded machine): until then that generation serves every
    request, so a test that does not wait may never see the actor sleep."""

    def slept() -> bool:
        hosted = registry.driver._hosted.get(actor_id)
        return hosted is None or hosted.intent_sent is None

    await until(slept, timeout=30)


@contextlib.asynccontextmanager
async def connected_counter(hosted: Any) -> AsyncIterator[tuple[Any, str]]:
    """A connection to a new counter that has counted to 1, and the counter's actor id."""
    _, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    async with handle.connect() as conn:
        assert await conn.increment(1) == 1
        actor_id, _ = await conn.whoami()
        yield conn, actor_id


async def test_actions_reach_a_python_actor_through_the_engine(hosted: Any) -> None:
    registry, client = hosted
    key = ["k", uuid.uuid4().hex]
    handle = client.get_or_create("counter", key)
    assert await handle.increment(2) == 2
    assert await handle.increment(3) == 5
    actor_id, got_key = await handle.whoami()
    assert got_key == key
    assert actor_id in registry.driver.awake
    with pytest.raises(ActorError) as info:
        await handle.increment(-1)
    assert info.value.code == "bad_amount"


async def test_cors_headers_of_a_tunnelled_action_are_the_gateways(
    hosted: Any, engine: Engine
) -> None:
    """The gateway writes the CORS headers of every response it forwards; ours would only be
    overwritten (our tunnelled responses carry none, as the official runtime's)."""
    _, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    assert await handle.increment(1) == 1
    actor_id, _ = await handle.whoami()
    url = f"{engine.endpoint}/gateway/{actor_id}/action/increment"
    async with aiohttp.ClientSession() as session:
        for origin in ("https://app.example", None):
            headers = {"x-rivet-encoding": "json", "content-type": "application/json"}
            if origin is not None:
                headers["origin"] = origin
            async with session.post(url, data=b'{"args":[1]}', headers=headers) as response:
                assert response.status == 200, await response.text()
                assert len(response.headers.getall("access-control-allow-origin")) == 1
                allowed = response.headers["access-control-allow-origin"]
                assert allowed == (origin or "*")
                assert response.headers.get("access-control-expose-headers") == "*"
                assert response.headers["x-rivet-actor"] == actor_id
    assert await handle.increment(1) == 4


async def test_state_survives_sleep_and_wakes_on_the_next_request(hosted: Any) -> None:
    registry, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    assert await handle.increment(7) == 7
    actor_id, _ = await handle.whoami()
    generation = registry.driver.awake[actor_id].generation
    await handle.go_to_sleep()
    await until(lambda: actor_id not in registry.driver._hosted)
    assert await handle.get() == 7  # woken by the engine: a new generation reads the state
    assert registry.driver.awake[actor_id].generation > generation


async def test_idle_actor_sleeps_by_itself_and_keeps_its_state(hosted: Any) -> None:
    registry, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    assert await handle.increment(3) == 3
    actor_id, _ = await handle.whoami()
    await until(lambda: actor_id not in registry.driver._hosted)  # sleep_timeout 0.5 s
    assert await handle.increment(1) == 4


async def test_user_database_lives_in_the_engine(hosted: Any) -> None:
    registry, client = hosted
    handle = client.get_or_create("notes", [uuid.uuid4().hex])
    assert await handle.add("one") == 1
    assert await handle.add("two") == 2
    await handle.go_to_sleep_notes()
    await until(lambda: not registry.driver._hosted)
    assert await handle.bodies() == ["one", "two"]


@pytest.mark.parametrize("action", ["destroy_me", "sleep_then_destroy"])
async def test_destroy_intent_destroys_the_actor(hosted: Any, engine: Engine, action: str) -> None:
    """``sleep_then_destroy``: the engine ignores a stop intent after a sleep intent, so the stop
    goes on as a sleep and the runtime destroys the actor through the engine's API after it."""
    registry, client = hosted
    key = [uuid.uuid4().hex]
    handle = client.get_or_create("counter", key)
    assert await handle.increment(5) == 5
    actor_id, _ = await handle.whoami()
    await getattr(handle, action)()
    await until(lambda: actor_id not in registry.driver._hosted)
    await until_destroyed(engine, actor_id)
    # The key is free again: a new actor starts from the initial state.
    fresh = client.get_or_create("counter", key)
    assert await fresh.get() == 0
    new_id, _ = await fresh.whoami()
    assert new_id != actor_id


async def test_requests_arriving_while_the_actor_goes_to_sleep_are_answered(
    hosted: Any,
) -> None:
    """The gateway routes requests to the actor until the engine has taken its sleep intent:
    the actor serves them until the engine's stop command (refusing them would fail them with
    503 ``envoy.actor_not_found``, which the gateway does not retry); later ones wake it."""
    registry, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    assert await handle.increment(1) == 1
    actor_id, _ = await handle.whoami()
    first = registry.driver.awake[actor_id].generation
    for _round in range(10):
        await sleep_amid_increments(handle, 8)
        await until_slept(registry, actor_id)
    assert await handle.get() == 81
    assert registry.driver.awake[actor_id].generation > first  # it did sleep in between


@pytest.mark.parametrize("cache", ["fetched", "kept", "lazy"])
async def test_an_actor_whose_database_outgrew_the_first_fetch_wakes_with_it(
    hosted: Any, cache: str
) -> None:
    """A start fetches the first 128 pages, then the rest in batches. The engine adds to its
    answers the overflow pages of the leaf pages asked for, wherever they are (a prefetch);
    taking those for a protocol error left every actor with a database past 128 pages and
    rows spilling over a page unable to start again. ``kept``: the cache the sleeping
    generation left is used as is (nothing changed the database meanwhile), then written on;
    ``fetched``: this process dropped it, so the wake fetches everything; ``lazy``: the same
    past 4 MiB, so the actor starts once its internal tables are local, and its SQL loads the
    pages it reads (the migration, a point read, a scan, an insert) while the rest loads."""
    registry, client = hosted
    handle = client.get_or_create("notes", [uuid.uuid4().hex])
    count = 72 if cache == "lazy" else 12  # rows of 60 KB: 4.3 MB or 720 KB
    bodies = [f"{i:03d}" + chr(97 + i % 26) * 60_000 for i in range(count)]
    for body in bodies:
        await handle.add(body)
    (actor_id,) = registry.driver.awake
    for round in range(2):
        await handle.go_to_sleep_notes()
        await until(lambda: actor_id not in registry.driver._hosted)
        if cache != "kept":
            registry.driver.caches.take(actor_id)  # as if it slept in another process
        assert await handle.note_body(count // 2 + 1) == bodies[count // 2]
        store = registry.driver.awake[actor_id].store
        assert store.opened_lazily is (cache == "lazy")
        assert await handle.outline() == [
            [i + 1, len(body), body[:4]] for i, body in enumerate(bodies)
        ]
        assert store._page_log.size_pages > 128
        assert store.reused_cache is (cache == "kept")
        bodies.append(f"after wake {round}")
        assert await handle.add(bodies[-1]) == len(bodies)


async def test_a_kept_cache_is_not_used_after_another_runtime_wrote(
    hosted: Any, engine: Engine, pool: str, tmp_path: Path
) -> None:
    """Our process keeps a sleeping actor's cache. Meanwhile another runtime (a higher
    deployment version, so the engine places the actor there) wakes it and writes. When the
    actor comes back here, the engine's head has moved on: the kept cache is not used, the
    database is fetched again and the other runtime's write is there."""
    registry, client = hosted
    handle = client.get_or_create("notes", [uuid.uuid4().hex])
    await handle.add("from the first runtime")
    (actor_id,) = registry.driver.awake
    await handle.go_to_sleep_notes()
    await until(lambda: actor_id not in registry.driver._hosted)
    assert registry.driver.caches.kept_bytes > 0

    newer = make_registry(storage_path=tmp_path / "newer")
    newer.use_engine(EngineConfig(endpoint=engine.endpoint, pool=pool, version=2))
    await newer.start()
    try:
        await newer.driver.wait_ready(10)
        await until_registered(engine, newer.driver.envoy.envoy_key)
        assert await handle.add("from the newer runtime") == 2
        assert actor_id in newer.driver.awake
        await handle.go_to_sleep_notes()
        await until(lambda: actor_id not in newer.driver._hosted)
    finally:
        await newer.stop()
    await until(lambda: len([e for e in envoys(engine, pool) if e.get("stop_ts") is None]) == 1)

    assert await handle.bodies() == ["from the first runtime", "from the newer runtime"]
    assert not registry.driver.awake[actor_id].store.reused_cache


async def test_engine_api_delete_runs_the_destroy(hosted: Any, engine: Engine) -> None:
    registry, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    await handle.increment(1)
    actor_id, _ = await handle.whoami()
    await asyncio.to_thread(engine.api, "DELETE", f"/actors/{actor_id}")
    await until(lambda: actor_id not in registry.driver._hosted)
    await until_destroyed(engine, actor_id)


async def test_alarm_wakes_a_sleeping_actor(hosted: Any) -> None:
    registry, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    await handle.remind_in(1500)
    actor_id, _ = await handle.whoami()
    await handle.go_to_sleep()
    await until(lambda: actor_id not in registry.driver._hosted)
    # The engine starts a new generation at the alarm; the scheduled action runs by itself.
    await until(lambda: actor_id in registry.driver.awake, timeout=15)
    instance = registry.driver.awake[actor_id]
    await until(lambda: instance.state.get("reminded") == 1, timeout=10)


def napper(marks: list[tuple[str, int]]) -> rivetkit.ActorDefinition:
    """A workflow that sleeps 1 s between two steps, on an actor that sleeps after 0.2 s idle."""
    a = rivetkit.actor("napper", state={"steps": []},
                       options=rivetkit.ActorOptions(sleep_timeout=0.2))

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        def record(label: str) -> None:
            ctx.state["steps"].append(label)
            marks.append((label, time.monotonic_ns() // 1_000_000))

        await ctx.step("before", record, "before")
        await ctx.sleep("nap", 1)
        await ctx.step("after", record, "after")

    @a.action
    def steps(c: rivetkit.ActionContext) -> list[str]:
        return list(c.state["steps"])

    return a


async def test_a_workflow_sleeps_with_its_actor_and_goes_on_at_the_alarm(
    engine: Engine, pool: str, tmp_path: Path
) -> None:
    """The workflow's sleep becomes the engine's alarm: the actor sleeps meanwhile, the engine
    starts a new generation when it is due, and the replay goes on after the sleep."""
    marks: list[tuple[str, int]] = []
    registry = rivetkit.setup(napper(marks), storage_path=tmp_path / "data")
    registry.use_engine(EngineConfig(endpoint=engine.endpoint, pool=pool))
    await registry.start()
    client = Client(engine.endpoint, pool_name=pool)
    try:
        await registry.driver.wait_ready(10)
        handle = client.get_or_create("napper", [uuid.uuid4().hex])
        assert await handle.steps() == ["before"]
        actor_id = await handle.resolve()
        await until(lambda: actor_id not in registry.driver._hosted)  # asleep in the nap
        await until(lambda: [label for label, _ in marks] == ["before", "after"], timeout=15)
        assert marks[1][1] - marks[0][1] >= 1000
        assert await handle.steps() == ["before", "after"]
    finally:
        await client.aclose()
        await registry.stop()


async def test_unknown_actor_name_is_reported_as_an_error(hosted: Any, engine: Engine, pool: str) -> None:
    _, body = await asyncio.to_thread(
        engine.api,
        "POST",
        "/actors",
        {
            "name": "no-such-actor",
            "key": uuid.uuid4().hex,
            "runner_name_selector": pool,
            "crash_policy": "sleep",
            "input": base64.b64encode(cbor2.dumps(None)).decode(),
        },
    )
    actor_id = body["actor"]["actor_id"]
    for _ in range(500):
        _, body = await asyncio.to_thread(engine.api, "GET", f"/actors?actor_ids={actor_id}")
        actor = body["actors"][0]
        if actor.get("error"):
            break
        await asyncio.sleep(0.02)
    assert "no-such-actor" in str(actor["error"])
    assert actor["destroy_ts"] is None  # an error sleeps the actor, never destroys it


async def test_websocket_connection_through_the_engine(hosted: Any) -> None:
    registry, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    seen: list[int] = []
    got = asyncio.Event()
    async with handle.connect() as conn:
        conn.on("count", lambda n: (seen.append(n), got.set()))
        assert await conn.increment(4) == 4
        await asyncio.wait_for(got.wait(), 10)
    assert seen == [4]


async def test_actor_sleeps_with_an_open_connection_and_wakes_on_its_next_message(
    hosted: Any,
) -> None:
    """Hibernation (spec §12.16): the gateway holds the client's socket while the actor sleeps;
    the next message wakes it with the connection restored (same id, same subscriptions)."""
    registry, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    seen: list[int] = []
    async with handle.connect() as conn:
        conn.on("count", seen.append)
        assert await conn.increment(1) == 1
        actor_id, _ = await conn.whoami()
        first = registry.driver.awake[actor_id]
        (conn_id,) = first.conns
        # Idle for sleep_timeout (0.5 s) with only a hibernatable connection: it sleeps.
        await until(lambda: actor_id not in registry.driver._hosted)
        assert first.stopped
        assert await conn.increment(2) == 3  # sent on the same socket: wakes the actor
        second = registry.driver.awake[actor_id]
        assert second is not first
        assert list(second.conns) == [conn_id]
        await until(lambda: seen == [1, 3])


async def test_a_hibernatable_connection_is_stored_while_its_actor_is_awake(hosted: Any) -> None:
    """Its rows are written when it opens and with the commit of each action or subscription
    that changed its state or subscriptions, not only at sleep: a crash of the process does not
    lose it (test_engine_failover.py). The answer waits for that commit."""
    registry, client = hosted
    handle = client.get_or_create("greeter", [uuid.uuid4().hex])
    async with handle.connect() as conn:
        actor_id, _ = await conn.whoami()
        instance = registry.driver.awake[actor_id]

        def stored() -> list[tuple[str, Any, list[str], int]]:
            return [(pc.conn_id, pc.state, pc.subscriptions, pc.hibernation.server_message_index)
                    for pc in load_conns(instance.store.conn)]

        conn_id = conn.connection_id
        assert stored() == [(conn_id, {"notes": []}, [], 0)]  # (written at the open)
        assert await conn.note("a") == ["a"]
        assert stored() == [(conn_id, {"notes": ["a"]}, [], 2)]
        got = asyncio.Event()
        conn.on("count", lambda n: got.set())
        assert await conn.increment(1) == 1
        await asyncio.wait_for(got.wait(), 10)
        assert stored() == [(conn_id, {"notes": ["a"]}, ["count"], 3)]
        assert await conn.get() == 1  # changes nothing of the connection: not written again
        assert stored() == [(conn_id, {"notes": ["a"]}, ["count"], 3)]
    await until(lambda: stored() == [])  # closed by the client: its rows are gone


async def test_actions_on_a_hibernatable_connection_keep_the_actor_awake(hosted: Any) -> None:
    """An open hibernatable connection does not keep the actor awake by itself, but its
    actions are activity: a client busy for 3x sleep_timeout keeps one generation."""
    registry, _ = hosted
    async with connected_counter(hosted) as (conn, actor_id):
        first = registry.driver.awake[actor_id]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.5
        count = 1
        while loop.time() < deadline:
            count += 1
            assert await conn.increment(1) == count
            await asyncio.sleep(0.1)
        assert registry.driver.awake.get(actor_id) is first


async def test_messages_arriving_while_the_actor_goes_to_sleep_are_served_after_the_wake(
    hosted: Any,
) -> None:
    """Messages the gateway delivers while the actor stops are left unacknowledged, so the
    gateway sends them again to the next generation: none is lost, none answered with an
    error, and the restored connection's message index matches what was acknowledged (no
    ``ws.message_index_skip`` on the next message)."""
    registry, _ = hosted
    async with connected_counter(hosted) as (conn, actor_id):
        first = registry.driver.awake[actor_id]
        for _round in range(3):
            await sleep_amid_increments(conn, 40)
            await until_slept(registry, actor_id)
        assert await conn.get() == 121
        assert registry.driver.awake[actor_id] is not first
        assert await conn.increment(1) == 122
