"""Helpers for the workflow tests: read an actor's recorded history from its SQLite file."""

from __future__ import annotations

from typing import Any

import apsw

from rivetkit._runtime.storage import actor_db_path
from rivetkit.testing import ActorTest


async def actor_id(t: ActorTest, name: str, key: str) -> str:
    return await t.client.get_or_create(name, [key]).resolve()


def wf_rows(t: ActorTest, actor_id: str) -> int:
    """How many rows the actor's ``_rivet_wf_kv`` holds (read from the file of a sleeping
    actor, or through the awake actor's own connection)."""
    instance = t.registry.driver.awake.get(actor_id)
    if instance is not None:
        conn = instance.store.conn
    else:
        conn = apsw.Connection(str(actor_db_path(t.storage_path, actor_id)))
    try:
        row = conn.execute("SELECT count(*) FROM _rivet_wf_kv").fetchone()
        assert row is not None
        return int(row[0])
    finally:
        if instance is None:
            conn.close()


def snapshot(t: ActorTest, actor_id: str) -> dict[str, Any]:
    """The workflow inspector payload of an awake actor."""
    from rivetkit._workflow import workflow_inspector

    return workflow_inspector(t.registry.driver.awake[actor_id])
