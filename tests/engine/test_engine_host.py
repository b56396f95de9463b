"""Python actors hosted on the real Rivet Engine, driven by the Python client through the engine.

The registry runs in this process in engine mode (its envoy connects to the engine), the client
talks only to the engine's gateway: every request travels client -> engine -> tunnel -> our
actor router -> the actor, and the actor's database lives in the engine.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext
from rivetkit.client import Client
from rivetkit.config import EngineConfig
from rivetkit.errors import ActorError
from tests.engine.engine_proc import Engine

pytestmark = pytest.mark.anyio


def make_registry(storage: Path) -> rivetkit.Registry:
    counter = rivetkit.actor(
        "counter",
        state={"count": 0},
        events={"count": rivetkit.event(int)},
        options=rivetkit.ActorOptions(sleep_timeout=0.5),
    )

    @counter.action
    def increment(c: ActionContext, amount: int = 1) -> int:
        if amount <= 0:
            raise rivetkit.UserError("amount must be positive", code="bad_amount")
        c.state["count"] += amount
        c.broadcast("count", c.state["count"])
        return int(c.state["count"])

    @counter.action
    def get(c: ActionContext) -> int:
        return int(c.state["count"])

    @counter.action
    def whoami(c: ActionContext) -> list[Any]:
        return [c.actor_id, list(c.key)]

    @counter.action
    def go_to_sleep(c: ActionContext) -> None:
        c.sleep()

    @counter.action
    def destroy_me(c: ActionContext) -> None:
        c.destroy()

    notes = rivetkit.actor("notes")

    @notes.on_migrate
    async def migrate(c: Any, is_new: bool) -> None:
        await c.db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")

    @notes.action
    async def add(c: ActionContext, body: str) -> int:
        await c.db.execute("INSERT INTO notes (body) VALUES (?)", body)
        rows = await c.db.execute("SELECT count(*) AS n FROM notes")
        return int(rows[0]["n"])

    return rivetkit.setup(counter, notes, storage_path=storage)


@pytest.fixture
async def hosted(
    engine: Engine, pool: str, tmp_path: Path
) -> AsyncIterator[tuple[rivetkit.Registry, Client]]:
    registry = make_registry(tmp_path / "data")
    registry.use_engine(EngineConfig(endpoint=engine.endpoint, pool=pool))
    await registry.start()
    await registry.driver.wait_ready(10)
    client = Client(engine.endpoint, pool_name=pool)
    try:
        yield registry, client
    finally:
        await client.aclose()
        await registry.stop()


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


async def test_state_survives_sleep_and_wakes_on_the_next_request(hosted: Any) -> None:
    registry, client = hosted
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    assert await handle.increment(7) == 7
    actor_id, _ = await handle.whoami()
    generation = registry.driver.awake[actor_id].generation
    await handle.go_to_sleep()
    for _ in range(500):
        if actor_id not in registry.driver.awake and actor_id not in registry.driver._hosted:
            break
        await asyncio.sleep(0.01)
    assert actor_id not in registry.driver.awake
    assert await handle.get() == 7  # woken by the engine: a new generation reads the state
    assert registry.driver.awake[actor_id].generation > generation


async def test_user_database_lives_in_the_engine(hosted: Any) -> None:
    registry, client = hosted
    handle = client.get_or_create("notes", [uuid.uuid4().hex])
    assert await handle.add("one") == 1
    assert await handle.add("two") == 2


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
