"""Nested control flow fed by a queue, and workflows driving other actors' workflows (the
behaviours of RivetKit's driver tests, rebuilt here)."""

from __future__ import annotations

from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext

pytestmark = pytest.mark.anyio

OPTS = rivetkit.ActorOptions(sleep_timeout=5.0)


def nested_actor(kind: str) -> rivetkit.ActorDefinition:
    a = rivetkit.actor(f"nested-{kind}", state={"processed": []}, options=OPTS)

    def process_item(ctx: rivetkit.WorkflowContext, item: str) -> str:
        ctx.state["processed"].append(item)
        return item

    @a.run
    @rivetkit.workflow
    async def run(ctx: rivetkit.WorkflowContext) -> None:
        async def command(lctx: rivetkit.WorkflowContext, _: Any) -> None:
            message = await lctx.queue.next("wait", names=["cmd"], completable=True)
            items: list[str] = message.body["items"]
            if kind == "loop":

                async def each(ictx: rivetkit.WorkflowContext, i: int) -> Any:
                    if i == len(items):
                        return ictx.loop_break(None)
                    await ictx.step(f"item-{i}", process_item, ictx, items[i])
                    return ictx.loop_continue(i + 1)

                await lctx.loop("items", each, state=0)
            elif kind == "join":

                def branch(i: int) -> Any:
                    async def run_branch(bctx: rivetkit.WorkflowContext) -> str:
                        return await bctx.step(f"item-{i}", process_item, bctx, items[i])

                    return run_branch

                await lctx.join("items", {f"item-{i}": branch(i) for i in range(len(items))})
            else:

                async def fast(bctx: rivetkit.WorkflowContext) -> str:
                    return await bctx.step("fast", process_item, bctx, items[0])

                async def slow(bctx: rivetkit.WorkflowContext) -> str:
                    await bctx.sleep("never", 3600)
                    return "slow"

                await lctx.race("item", [fast, slow])
            await message.complete({"processed": len(items)})

        await ctx.loop("commands", command)

    @a.action
    def processed(c: ActionContext) -> list[str]:
        return list(c.state["processed"])

    return a


@pytest.mark.parametrize(
    ("kind", "first", "second"),
    [("loop", ["a", "b"], ["c"]), ("join", ["a", "b"], ["c"]), ("race", ["a"], ["b"])],
)
async def test_nested_flow_replays_across_queue_iterations_and_sleeps(
    actor_test: Any, kind: str, first: list[str], second: list[str]
) -> None:
    async with actor_test(nested_actor(kind)) as t:
        h = t.client.get_or_create(f"nested-{kind}", ["k"])
        result = await h.send("cmd", {"items": first}, wait=True, timeout=10)
        assert result is not None and result.response == {"processed": len(first)}
        aid = await h.resolve()
        await t.clock.advance(seconds=10)  # waiting on the queue: asleep
        assert aid not in t.registry.driver.awake
        result = await h.send("cmd", {"items": second}, wait=True, timeout=10)
        assert result is not None and result.response == {"processed": len(second)}
        assert await h.processed() == first + second


async def test_a_step_can_drive_another_actors_workflow(actor_test: Any) -> None:
    child = rivetkit.actor("child", state={"done": []}, options=OPTS)
    parent = rivetkit.actor("parent", state={"results": []}, options=OPTS)

    @child.run
    @rivetkit.workflow
    async def child_run(ctx: rivetkit.WorkflowContext) -> None:
        async def body(lctx: rivetkit.WorkflowContext, _: Any) -> None:
            message = await lctx.queue.next("work", names=["work"], completable=True)
            await lctx.step("do", lambda: lctx.state["done"].append(message.body["task"]))
            await message.complete({"ok": message.body["task"]})

        await ctx.loop("work", body)

    @parent.run
    @rivetkit.workflow
    async def parent_run(ctx: rivetkit.WorkflowContext) -> None:
        spawn = await ctx.queue.next("spawn", names=["spawn"])

        async def delegate() -> Any:
            handle = ctx.client().get_or_create("child", [spawn.body["key"]])
            result = await handle.send("work", {"task": "hello"}, wait=True, timeout=5)
            assert result is not None
            ctx.state["results"].append(result.response)
            return result.response

        await ctx.step("delegate", delegate)

    for definition in (child, parent):

        @definition.action
        def state(c: ActionContext) -> Any:
            return c.state

    async with actor_test(child, parent) as t:
        await t.client.get_or_create("parent", ["p"]).send("spawn", {"key": "c1"})
        await t.clock.settle()
        assert await t.client.get_or_create("parent", ["p"]).state() == {
            "results": [{"ok": "hello"}]
        }
        assert await t.client.get_or_create("child", ["c1"]).state() == {"done": ["hello"]}
