"""The state journal: one commit per tick for all actors, write-behind to actor files at stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import apsw
import cbor2
import pytest

import rivetkit
from rivetkit import ActionContext
from rivetkit._runtime.storage import ActorStore, actor_db_path

pytestmark = pytest.mark.anyio


def counter() -> rivetkit.ActorDefinition:
    a = rivetkit.actor("counter", state={"n": 0})

    @a.action
    def inc(c: ActionContext) -> int:
        c.state["n"] += 1
        return c.state["n"]

    return a


def journal_rows(root: Path) -> dict[str, bytes]:
    conn = apsw.Connection(str(root / "journal.db"))
    try:
        return dict(conn.execute("SELECT actor_id, state FROM actor_state"))
    finally:
        conn.close()


async def test_one_tick_commits_every_actor_then_stop_writes_files(tmp_path: Path) -> None:
    registry = rivetkit.setup(counter(), storage_path=tmp_path)
    async with registry.lifespan():
        driver = registry.driver
        instances = []
        for key in ("a", "b", "c"):
            record, _ = driver.get_or_create("default", "counter", (key,), None)
            instances.append(await driver.instance(record))
        # Actions on three actors in the same tick share the journal's commit.
        results = await asyncio.gather(*(i.call_action("inc", [], None) for i in instances))
        assert results == [1, 1, 1]
        assert driver.journal is not None
        assert {driver.journal.get(i.actor_id) for i in instances} == {(cbor2.dumps({"n": 1}), 1)}
        # The actor files still hold the initial state: the journal is the durable copy.
        for instance in instances:
            assert instance.store.load()[2] == cbor2.dumps({"n": 0})
        ids = [i.actor_id for i in instances]
    # A graceful stop wrote each file and emptied the journal.
    assert journal_rows(tmp_path) == {}
    for actor_id in ids:
        store = ActorStore(actor_db_path(tmp_path, actor_id))
        assert cbor2.loads(store.load()[2]) == {"n": 1}
        store.close()


async def test_journal_row_wins_over_the_file_after_a_crash(tmp_path: Path) -> None:
    registry = rivetkit.setup(counter(), storage_path=tmp_path)
    await registry.start()
    record, _ = registry.driver.get_or_create("default", "counter", ("k",), None)
    instance = await registry.driver.instance(record)
    for _ in range(3):
        await instance.call_action("inc", [], None)
    # Simulate a crash: close the databases without stopping the actor (no write-behind).
    instance.store.close()
    assert registry.driver.journal is not None
    registry.driver.journal.close()
    registry.driver.db.close()
    assert cbor2.loads(journal_rows(tmp_path)[record.actor_id]) == {"n": 3}

    again = rivetkit.setup(counter(), storage_path=tmp_path)
    async with again.lifespan():
        found = again.driver.lookup("default", "counter", ("k",))
        assert found is not None
        restarted = await again.driver.instance(found)
        assert restarted.state == {"n": 3}
        assert await restarted.call_action("inc", [], None) == 4


async def test_a_file_commit_newer_than_the_journal_row_wins_after_a_crash(tmp_path: Path) -> None:
    registry = rivetkit.setup(counter(), storage_path=tmp_path)
    await registry.start()
    record, _ = registry.driver.get_or_create("default", "counter", ("k",), None)
    instance = await registry.driver.instance(record)
    for _ in range(3):
        await instance.call_action("inc", [], None)
    # State and other rows committed together to the actor's file (as a workflow step does):
    # the journal still holds {"n": 3}, older than the file.
    instance.state["n"] = 10
    await instance.commit_with(
        lambda conn: conn.execute("INSERT INTO _rivet_wf_kv (key, value) VALUES (x'01', x'02')")
    )
    instance.store.close()
    assert registry.driver.journal is not None
    registry.driver.journal.close()
    registry.driver.db.close()
    assert cbor2.loads(journal_rows(tmp_path)[record.actor_id]) == {"n": 3}

    again = rivetkit.setup(counter(), storage_path=tmp_path)
    async with again.lifespan():
        found = again.driver.lookup("default", "counter", ("k",))
        assert found is not None
        restarted = await again.driver.instance(found)
        assert restarted.state == {"n": 10}
        rows = list(restarted.store.conn.execute("SELECT key, value FROM _rivet_wf_kv"))
        assert rows == [(b"\x01", b"\x02")]
        # Later commits go through the journal again and win over the file after the next crash.
        assert await restarted.call_action("inc", [], None) == 11


async def test_destroy_forgets_the_journal_row(tmp_path: Path) -> None:
    registry = rivetkit.setup(counter(), storage_path=tmp_path)
    async with registry.lifespan():
        record, _ = registry.driver.get_or_create("default", "counter", ("gone",), None)
        instance = await registry.driver.instance(record)
        await instance.call_action("inc", [], None)
        assert registry.driver.journal is not None
        assert registry.driver.journal.get(record.actor_id) is not None
        assert await registry.driver.destroy(record.actor_id)
        assert registry.driver.journal.get(record.actor_id) is None
