"""Workflows served by a real server process for the ``kill -9`` tests.

Every step appends a line to the file named by ``WORKFLOW_LOG`` (a side-effect counter that
survives the process), so a test can count how often each step really ran.

* ``order``: waits for an order message, reserves, charges, waits for a "ship" message, ships,
  sleeps durably for a second, then notifies.
* ``batch``: three steps started by a wake; the second takes ``SLOW_STEP_SECONDS`` of real time
  (to kill the process in the middle of it).
* ``inbox``: an ephemeral step and a rollback checkpoint (both recorded with the next commit),
  then a queue wait, then a step that takes ``SLOW_STEP_SECONDS``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import rivetkit
from rivetkit import ActionContext


def effect(ctx: rivetkit.WorkflowContext, label: str) -> str:
    with open(os.environ["WORKFLOW_LOG"], "a") as f:
        f.write(f"{ctx.key[0]} {label}\n")
    ctx.state["steps"].append(label)
    return label


order = rivetkit.actor(
    "order",
    state={"steps": []},
    queues={"orders": rivetkit.queue(dict), "ship": rivetkit.queue(dict)},
    options=rivetkit.ActorOptions(sleep_timeout=30.0),
)


@order.run
@rivetkit.workflow
async def process_order(ctx: rivetkit.WorkflowContext) -> str:
    placed = await ctx.queue.next("wait-order", names=["orders"])
    await ctx.step("reserve", effect, ctx, f"reserve {placed.body['item']}")
    await ctx.step("charge", effect, ctx, f"charge {placed.body['amount']}")
    shipment = await ctx.queue.next("wait-ship", names=["ship"])
    await ctx.step("ship", effect, ctx, f"ship {shipment.body['carrier']}")
    await ctx.sleep("cool-off", 1.0)
    await ctx.step("notify", effect, ctx, "notify")
    return "done"


@order.action
def steps(c: ActionContext) -> list[Any]:
    return list(c.state["steps"])


batch = rivetkit.actor("batch", state={"steps": []})


async def slow(ctx: rivetkit.WorkflowContext) -> str:
    effect(ctx, "two-start")
    await asyncio.sleep(float(os.environ.get("SLOW_STEP_SECONDS", "0")))
    return effect(ctx, "two-end")


@batch.run
@rivetkit.workflow
async def process_batch(ctx: rivetkit.WorkflowContext) -> None:
    await ctx.step("one", effect, ctx, "one")
    await ctx.step("two", slow, ctx)
    await ctx.step("three", effect, ctx, "three")


@batch.action
def start(c: ActionContext) -> None:
    return None


inbox = rivetkit.actor(
    "inbox",
    state={"steps": []},
    queues={"mail": rivetkit.queue(dict)},
    options=rivetkit.ActorOptions(sleep_timeout=30.0),
)


async def slow_read(ctx: rivetkit.WorkflowContext, text: str) -> str:
    effect(ctx, f"read-start {text}")
    await asyncio.sleep(float(os.environ.get("SLOW_STEP_SECONDS", "0")))
    return effect(ctx, f"read-end {text}")


@inbox.run
@rivetkit.workflow
async def process_inbox(ctx: rivetkit.WorkflowContext) -> None:
    await ctx.step("hello", effect, ctx, "hello", ephemeral=True)
    await ctx.rollback_checkpoint("start")
    mail = await ctx.queue.next("wait-mail", names=["mail"])
    await ctx.step("read", slow_read, ctx, mail.body["text"], timeout=None)


registry = rivetkit.setup(order, batch, inbox)
