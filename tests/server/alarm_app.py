"""An actor whose alarms leave a trace outside the server: each firing appends a line to the file
named by ``ALARM_LOG``, so a test can see alarms fire without sending the actor any request."""

from __future__ import annotations

import os
from typing import Any

import rivetkit
from rivetkit import ActionContext, ScheduledFireInfo

alarm = rivetkit.actor("alarm", state={"rings": []})


@alarm.action
async def ring_in(c: ActionContext, seconds: float, label: str) -> str:
    return await c.schedule.after(seconds, "ring", label)


@alarm.action
async def every(c: ActionContext, name: str, seconds: float) -> None:
    await c.cron.every(name, seconds, "ring", name)


@alarm.action
async def jobs(c: ActionContext) -> list[str]:
    return sorted(job.name for job in await c.cron.list())


@alarm.action
def ring(c: ActionContext, label: str, fire: ScheduledFireInfo | None = None) -> None:
    c.state["rings"].append(label)
    with open(os.environ["ALARM_LOG"], "a") as f:
        scheduled = fire.scheduled_at if fire is not None else 0
        f.write(f"{c.key[0]} {label} {scheduled}\n")


@alarm.action
def rings(c: ActionContext) -> list[Any]:
    return list(c.state["rings"])


registry = rivetkit.setup(alarm)
