"""Actors of the engine-mode tests, served by ``python -m rivetkit serve ... --engine URL``."""

from __future__ import annotations

import os
from typing import Any

import rivetkit
from rivetkit import ActionContext, ActorContext

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
def where(c: ActionContext) -> int:
    """The process hosting the actor (failover tests)."""
    return os.getpid()


@counter.action
def go_to_sleep(c: ActionContext) -> None:
    c.sleep()


@counter.action
def destroy_me(c: ActionContext) -> None:
    c.destroy()


@counter.action
def sleep_then_destroy(c: ActionContext) -> None:
    """A destroy asked for once the sleep has begun (the engine took the sleep intent)."""
    c.sleep()
    c.destroy()


@counter.action
async def remind_in(c: ActionContext, ms: int) -> None:
    await c.schedule.after(ms / 1000.0, "reminded")


@counter.action
def reminded(c: ActionContext) -> None:
    c.state["reminded"] = c.state.get("reminded", 0) + 1


@counter.action
def reminders(c: ActionContext) -> int:
    return int(c.state.get("reminded", 0))


notes = rivetkit.actor("notes")


@notes.on_migrate
async def migrate(c: ActorContext, is_new: bool) -> None:
    await c.db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")


@notes.action
async def add(c: ActionContext, body: str) -> int:
    await c.db.execute("INSERT INTO notes (body) VALUES (?)", body)
    rows = await c.db.execute("SELECT count(*) AS n FROM notes")
    return int(rows[0]["n"])


@notes.action
async def bodies(c: ActionContext) -> list[str]:
    rows = await c.db.execute("SELECT body FROM notes ORDER BY id")
    return [str(row["body"]) for row in rows]


@notes.action
async def note_body(c: ActionContext, id: int) -> str | None:
    rows = await c.db.execute("SELECT body FROM notes WHERE id = ?", id)
    return str(rows[0]["body"]) if rows else None


@notes.action
async def outline(c: ActionContext) -> list[list[object]]:
    """Each note's id, length and first 4 characters (the bodies may be megabytes)."""
    rows = await c.db.execute("SELECT id, length(body) AS n, substr(body, 1, 4) AS head "
                              "FROM notes ORDER BY id")
    return [[row["id"], row["n"], row["head"]] for row in rows]


@notes.action
def go_to_sleep_notes(c: ActionContext) -> None:
    c.sleep()


# The counter's actions on an actor that stays awake for the default 30 s (failover tests kill a
# runtime while its actors are awake, not while they are on their way to sleep).
keeper = rivetkit.actor("keeper", state={"count": 0}, events={"count": rivetkit.event(int)})
for _fn in (increment, get, where, whoami):
    keeper.action(_fn)


# The legacy KV import tests (test_engine_legacy_import.py): an actor whose first generations
# were hosted by RivetKit <= 2.2, reading what the import brought over.
legacy = rivetkit.actor("legacy", state={"count": 0})


@legacy.action
def legacy_count(c: ActionContext) -> int:
    return int(c.state["count"])


@legacy.action
def legacy_set_count(c: ActionContext, count: int) -> int:
    c.state["count"] = count
    return count


@legacy.action
async def legacy_kv_get(c: ActionContext, key: str) -> str | None:
    return await c.kv.get(key)


@legacy.action
async def legacy_queue_next(c: ActionContext) -> list[Any] | None:
    message = await c.queue.try_next()
    return None if message is None else [message.id, message.name, message.body]


@legacy.action
def legacy_sleep(c: ActionContext) -> None:
    c.sleep()


# A connection's own state across a failover (test_engine_failover.py): the client's socket is
# hibernatable, so the gateway holds it while the actor moves to another runtime process.
greeter = rivetkit.actor(
    "greeter",
    state={"count": 0},
    conn_state={"notes": []},
    events={"count": rivetkit.event(int)},
)
for _fn in (increment, get, where, whoami):
    greeter.action(_fn)


@greeter.action
def note(c: ActionContext, text: str) -> list[str]:
    """Append to this connection's notes (its conn state) and return them."""
    c.conn.state["notes"].append(text)
    return list(c.conn.state["notes"])


def make_registry(**config: Any) -> rivetkit.Registry:
    return rivetkit.setup(counter, notes, keeper, legacy, greeter, **config)


registry = make_registry()
