"""Actors of the queue ``kill -9`` tests.

``consumer`` leaves a trace outside the server: each delivery appends a line to the file named by
``QUEUE_LOG``. A first delivery of a ``stall`` message never completes (the process is killed
meanwhile); a later delivery completes it.

``box`` has no run loop: its actions receive what clients sent, with or without ``completable``,
and report the ids.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import rivetkit
from rivetkit import ActionContext, ActorContext

consumer = rivetkit.actor("consumer", state={"done": []}, queues={"jobs": rivetkit.queue()})


@consumer.run
async def run(c: ActorContext) -> None:
    async for message in c.queue.iter("jobs", completable=True):
        with open(os.environ["QUEUE_LOG"], "a") as f:
            f.write(f"{message.body['n']} {message.failure_count}\n")
        if message.body.get("stall") and message.failure_count == 0:
            await asyncio.sleep(3600)
        c.state["done"].append(message.body["n"])
        await message.complete(message.body["n"])


@consumer.action
def done(c: ActionContext) -> list[int]:
    return list(c.state["done"])


box = rivetkit.actor(
    "box",
    queues={"jobs": rivetkit.queue()},
    options=rivetkit.ActorOptions(max_queue_size=10_000),
)


@box.action
async def drain(c: ActionContext, completable: bool = False) -> list[list[Any]]:
    """Receive every stored message: ``[[id, body], ...]`` in queue order (completed when
    ``completable``)."""
    out: list[list[Any]] = []
    while True:
        message = await c.queue.try_next("jobs", completable=completable)
        if message is None:
            return out
        if completable:
            await message.complete()
        out.append([message.id, message.body])


registry = rivetkit.setup(consumer, box)
