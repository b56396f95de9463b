"""Rollback: handlers run newest first back to the last checkpoint, and resume after a failure."""

from __future__ import annotations

from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext

from .conftest import snapshot

pytestmark = pytest.mark.anyio

OPTS = rivetkit.ActorOptions(sleep_timeout=5.0)


def saga(undone: list[str], *, refund_fails: int = 0) -> rivetkit.ActorDefinition:
    a = rivetkit.actor("saga", state={"balance": 0, "stock": 10}, options=OPTS)
    failures = {"refund": refund_fails}

    def reserve(ctx: rivetkit.WorkflowContext) -> int:
        ctx.state["stock"] -= 1
        return 1

    def unreserve(ctx: rivetkit.WorkflowContext, output: int) -> None:
        undone.append("unreserve")
        ctx.state["stock"] += output

    def charge(ctx: rivetkit.WorkflowContext, amount: int) -> dict[str, int]:
        ctx.state["balance"] += amount
        return {"charged": amount}

    async def refund(ctx: rivetkit.WorkflowContext, output: dict[str, int]) -> None:
        if failures["refund"] > 0:
            failures["refund"] -= 1
            raise RuntimeError("payment provider down")
        undone.append(f"refund {output['charged']}")
        ctx.state["balance"] -= output["charged"]

    def unship(output: str) -> None:
        undone.append(f"unship {output}")

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        await ctx.rollback_checkpoint("stock")
        await ctx.step("reserve", reserve, ctx, rollback=lambda out: unreserve(ctx, out))
        await ctx.rollback_checkpoint("billing")  # the last checkpoint: rollback stops here
        await ctx.step("charge", charge, ctx, 30, rollback=lambda out: refund(ctx, out))
        await ctx.step("email", lambda: "sent")  # no rollback handler
        await ctx.step("ship", lambda: "parcel-1", rollback=unship)
        await ctx.step("confirm", lambda: 1 / 0, max_retries=0)

    @a.action
    def get(c: ActionContext) -> Any:
        return c.state

    return a


async def test_rollback_runs_newest_first_back_to_the_last_checkpoint(actor_test: Any) -> None:
    undone: list[str] = []
    async with actor_test(saga(undone)) as t:
        h = t.client.get_or_create("saga", ["k"])
        await h.get()
        await t.clock.settle()
        assert undone == ["unship parcel-1", "refund 30"]
        assert await h.get() == {"balance": 0, "stock": 9}  # reserve is before the checkpoint
        aid = await h.resolve()
        info = snapshot(t, aid)
        assert info["workflowState"] == "failed"
        assert "ZeroDivisionError" in info["workflowError"]["message"]
        meta = info["history"]["entryMetadata"]
        names = info["history"]["nameRegistry"]
        rolled = {
            names[e["location"][-1]["val"]]
            for e in info["history"]["entries"]
            if meta[e["id"]]["rollbackCompletedAt"] is not None
        }
        assert rolled == {"ship", "charge"}


async def test_a_failed_rollback_handler_is_retried_on_the_next_wake(actor_test: Any) -> None:
    undone: list[str] = []
    async with actor_test(saga(undone, refund_fails=1)) as t:
        h = t.client.get_or_create("saga", ["k"])
        await h.get()
        await t.clock.settle()
        aid = await h.resolve()
        assert undone == ["unship parcel-1"]
        info = snapshot(t, aid)
        assert info["workflowState"] == "rolling_back"
        await t.clock.advance(seconds=10)  # sleeps; the next wake resumes the rollback
        assert aid not in t.registry.driver.awake
        assert (await h.get())["balance"] in (0, 30)
        await t.clock.settle()
        assert undone == ["unship parcel-1", "refund 30"]  # unship is not repeated
        assert await h.get() == {"balance": 0, "stock": 9}
        assert snapshot(t, aid)["workflowState"] == "failed"


async def test_rollback_handler_needs_a_checkpoint(actor_test: Any) -> None:
    a = rivetkit.actor("nock", state={}, options=OPTS)

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        await ctx.step("charge", lambda: 1, rollback=lambda out: None)

    @a.action
    def get(c: ActionContext) -> Any:
        return c.state

    async with actor_test(a) as t:
        h = t.client.get_or_create("nock", ["k"])
        await h.get()
        await t.clock.settle()
        info = snapshot(t, await h.resolve())
        assert "rollback_checkpoint_missing" in info["workflowError"]["message"]
        assert info["history"]["entries"] == []
