"""Reminders: durable schedules, a cron digest, the actor's own SQLite and sleep.

Each ``reminders`` actor (one per user, key ``[user]``) keeps its reminders in its own database
(``c.db``), fires each one with ``c.schedule.at``, and sends a daily digest with ``c.cron``. Between
events it sleeps; its alarms wake it, even after a server restart.

    rivetkit serve examples/reminders.py
"""

from __future__ import annotations

from typing import Any

import rivetkit
from rivetkit import ActionContext, ActorContext, ScheduledFireInfo, UserError

reminders = rivetkit.actor(
    "reminders",
    state={"fired": 0},
    events={"reminder": rivetkit.event(dict)},
    options=rivetkit.ActorOptions(sleep_timeout=10.0),
)


@reminders.on_migrate
async def migrate(c: ActorContext, is_new: bool) -> None:
    await c.db.execute(
        "CREATE TABLE IF NOT EXISTS reminder ("
        " id INTEGER PRIMARY KEY, text TEXT NOT NULL, due_at INTEGER NOT NULL,"
        " event_id TEXT NOT NULL, fired_at INTEGER)"
    )


async def _add(c: ActionContext, text: str, when: tuple[str, float]) -> int:
    if not text:
        raise UserError("a reminder needs a text", code="empty_text")
    async with c.db.transaction() as tx:
        rows = await tx.execute(
            "INSERT INTO reminder (text, due_at, event_id) VALUES (?, 0, '') RETURNING id", text
        )
        reminder_id = int(rows[0]["id"])
        kind, value = when
        if kind == "at":
            event_id = await c.schedule.at(int(value), "fire", reminder_id)
        else:
            event_id = await c.schedule.after(value, "fire", reminder_id)
        event = await c.schedule.get(event_id)
        assert event is not None
        await tx.execute(
            "UPDATE reminder SET event_id = ?, due_at = ? WHERE id = ?",
            event_id,
            event.run_at,
            reminder_id,
        )
    return reminder_id


@reminders.action
async def remind_at(c: ActionContext, text: str, due_at: int) -> int:
    """Remind ``text`` at epoch milliseconds ``due_at``; returns the reminder id."""
    return await _add(c, text, ("at", due_at))


@reminders.action
async def remind_in(c: ActionContext, text: str, seconds: float) -> int:
    """Remind ``text`` in ``seconds``; returns the reminder id."""
    return await _add(c, text, ("after", seconds))


@reminders.action
async def fire(c: ActionContext, reminder_id: int, info: ScheduledFireInfo | None = None) -> None:
    """Called by the scheduler: mark the reminder fired and tell connected clients."""
    rows = await c.db.execute(
        "UPDATE reminder SET fired_at = ? WHERE id = ? AND fired_at IS NULL "
        "RETURNING id, text, due_at",
        info.fired_at if info else 0,
        reminder_id,
    )
    if rows:
        c.state["fired"] += 1
        c.broadcast("reminder", rows[0])


@reminders.action
async def cancel(c: ActionContext, reminder_id: int) -> bool:
    rows = await c.db.execute(
        "DELETE FROM reminder WHERE id = ? AND fired_at IS NULL RETURNING event_id", reminder_id
    )
    if not rows:
        return False
    await c.schedule.cancel(rows[0]["event_id"])
    return True


@reminders.action
async def pending(c: ActionContext) -> list[dict[str, Any]]:
    return await c.db.execute(
        "SELECT id, text, due_at FROM reminder WHERE fired_at IS NULL ORDER BY due_at"
    )


@reminders.action
async def daily_digest(c: ActionContext, hour: int, timezone: str = "UTC") -> None:
    """Send a digest of pending reminders every day at ``hour`` in ``timezone``."""
    await c.cron.set("digest", f"0 {hour} * * *", "digest", timezone=timezone)


@reminders.action
async def digest(c: ActionContext, info: ScheduledFireInfo | None = None) -> None:
    c.broadcast("reminder", {"digest": await pending(c)})


registry = rivetkit.setup(reminders)

if __name__ == "__main__":
    registry.run()
