"""A queue consumer that leaves a trace outside the server: each delivery appends a line to the
file named by ``QUEUE_LOG``. A first delivery of a ``stall`` message never completes (the
process is killed meanwhile); a later delivery completes it."""

from __future__ import annotations

import asyncio
import os

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


registry = rivetkit.setup(consumer)
