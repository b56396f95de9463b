"""The Python twin of ``ts_runtime/ts_host.mjs``: one ``counter`` actor, the same wire names.

Both runtimes host this actor in one engine pool, one after the other, over the *same* stored
database (spec ``engine-envoy.md`` §10, §12.26). ``test_engine_data_compat.py`` runs it with::

    python -m rivetkit serve tests/engine/compat_counter_app.py --engine URL --pool P --storage DIR

Actions (identical names, arguments and results on both sides, except ``runtime``):

* ``increment(n)`` / ``get`` / ``go_to_sleep``: state ``{"count": 0}``, ``c.sleep()``;
* ``put(key, value)`` / ``snapshot``: any JSON value into the state, the whole state back;
* ``put_bytes(key, hex)`` / ``get_hex(key)``: a byte string in the state (CBOR major type 2),
  reported as hex, or ``None`` when the value is not bytes;
* ``note_add(body)`` / ``notes``: the user table ``notes`` in ``c.db`` (created by the
  migration hook on both sides, ``CREATE TABLE IF NOT EXISTS``);
* ``kv_put(key, value)`` / ``kv_get(key)``: the actor's (deprecated) user KV, text values;
* ``queue_send(name, body)`` / ``queue_take(name)``: the durable queue; ``take`` answers
  ``{"name", "body"}`` of the next message without waiting, or ``None``;
* ``schedule_increment(delay_ms, n)``: a durable ``increment(n)`` after ``delay_ms``;
* ``runtime``: ``"python"`` here, ``"typescript"`` there, so a test knows who answered.
"""

from __future__ import annotations

from typing import Any

import rivetkit
from rivetkit import ActionContext, ActorContext

RUNTIME = "python"

counter = rivetkit.actor("counter", state={"count": 0})


@counter.on_migrate
async def migrate(c: ActorContext, is_new: bool) -> None:
    await c.db.execute(
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
    )


@counter.action
def increment(c: ActionContext, n: int) -> int:
    c.state["count"] += n
    return int(c.state["count"])


@counter.action
def get(c: ActionContext) -> int:
    return int(c.state["count"])


@counter.action
def go_to_sleep(c: ActionContext) -> None:
    c.sleep()


@counter.action
def runtime(c: ActionContext) -> str:
    return RUNTIME


@counter.action
def put(c: ActionContext, key: str, value: Any) -> None:
    c.state[key] = value


@counter.action
def snapshot(c: ActionContext) -> Any:
    return dict(c.state)


@counter.action
def put_bytes(c: ActionContext, key: str, hex_value: str) -> None:
    c.state[key] = bytes.fromhex(hex_value)


@counter.action
def get_hex(c: ActionContext, key: str) -> str | None:
    value = c.state.get(key)
    return value.hex() if isinstance(value, bytes) else None


@counter.action
async def note_add(c: ActionContext, body: str) -> int:
    await c.db.execute("INSERT INTO notes (body) VALUES (?)", body)
    rows = await c.db.execute("SELECT count(*) AS n FROM notes")
    return int(rows[0]["n"])


@counter.action
async def notes(c: ActionContext) -> list[str]:
    rows = await c.db.execute("SELECT body FROM notes ORDER BY id")
    return [str(row["body"]) for row in rows]


@counter.action
async def kv_put(c: ActionContext, key: str, value: str) -> None:
    await c.kv.put(key, value)


@counter.action
async def kv_get(c: ActionContext, key: str) -> str | None:
    return await c.kv.get(key)


@counter.action
async def queue_send(c: ActionContext, name: str, body: Any) -> None:
    await c.queue.send(name, body)


@counter.action
async def queue_take(c: ActionContext, name: str) -> dict[str, Any] | None:
    message = await c.queue.try_next([name])
    return None if message is None else {"name": message.name, "body": message.body}


@counter.action
async def schedule_increment(c: ActionContext, delay_ms: int, n: int) -> None:
    await c.schedule.after(delay_ms / 1000, "increment", n)


registry = rivetkit.setup(counter)
