"""Queue receives inside workflows: exactly once, completable sends, durable timeouts."""

from __future__ import annotations

from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext

from .conftest import snapshot

pytestmark = pytest.mark.anyio

OPTS = rivetkit.ActorOptions(sleep_timeout=5.0)


def consumer(processed: list[Any], *, completable: bool = False) -> rivetkit.ActorDefinition:
    a = rivetkit.actor("consumer", state={"seen": []}, options=OPTS)

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        async def body(lctx: rivetkit.WorkflowContext, _: Any) -> Any:
            message = await lctx.queue.next("wait", names=["jobs"], completable=completable)

            def handle() -> int:
                processed.append(message.body)
                lctx.state["seen"].append(message.body)
                return len(lctx.state["seen"])

            count = await lctx.step("handle", handle)
            if completable:
                await message.complete({"count": count, "echo": message.body})
            return None

        await ctx.loop("jobs", body)

    @a.action
    def seen(c: ActionContext) -> list[Any]:
        return list(c.state["seen"])

    @a.action
    def queued(c: ActionContext) -> int:
        return c._actor.queue.size

    return a


async def test_queue_messages_are_processed_exactly_once_across_sleeps(actor_test: Any) -> None:
    processed: list[Any] = []
    async with actor_test(consumer(processed)) as t:
        h = t.client.get_or_create("consumer", ["k"])
        aid = await h.resolve()
        for i in range(3):
            await h.send("jobs", {"n": i})
        await t.clock.settle()
        assert processed == [{"n": 0}, {"n": 1}, {"n": 2}]
        await t.clock.advance(seconds=10)  # waiting on the queue: the actor may sleep
        assert aid not in t.registry.driver.awake
        await h.send("jobs", {"n": 3})  # a send wakes it; the loop replays, then takes it
        await t.clock.settle()
        assert processed == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]
        assert await h.seen() == processed
        assert await h.queued() == 0
        info = snapshot(t, aid)
        assert info["workflowState"] == "sleeping"  # waiting for the next message


async def test_completable_message_answers_a_waiting_sender_across_a_sleep(
    actor_test: Any,
) -> None:
    processed: list[Any] = []
    async with actor_test(consumer(processed, completable=True)) as t:
        h = t.client.get_or_create("consumer", ["k"])
        result = await h.send("jobs", "first", wait=True, timeout=30)
        assert result is not None and result.status == "completed"
        assert result.response == {"count": 1, "echo": "first"}
        aid = await h.resolve()
        await t.clock.advance(seconds=10)
        assert aid not in t.registry.driver.awake
        result = await h.send("jobs", "second", wait=True, timeout=30)
        assert result is not None and result.response == {"count": 2, "echo": "second"}
        assert processed == ["first", "second"]


async def test_queue_wait_timeout_is_durable_and_batches_take_several(actor_test: Any) -> None:
    got: list[Any] = []
    a = rivetkit.actor("batch", state={}, options=OPTS)

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        first = await ctx.queue.next("maybe", names=["nope"], timeout=60)
        got.append(("timeout", first))
        batch = await ctx.queue.next_batch("batch", 3, names=["jobs"])
        got.append(("batch", [m.body for m in batch]))
        rest = await ctx.queue.next_batch("rest", 10, timeout=0)
        got.append(("rest", [(m.name, m.body) for m in rest]))

    @a.action
    def noop(c: ActionContext) -> None:
        return None

    async with actor_test(a) as t:
        h = t.client.get_or_create("batch", ["k"])
        await h.noop()
        aid = await h.resolve()
        await t.clock.advance(seconds=30)
        assert aid not in t.registry.driver.awake and got == []  # asleep, deadline pending
        for i in range(4):  # wake it; the wait for "nope" goes on with its recorded deadline
            await h.send("jobs", i)
        await h.send("other", "x")
        await t.clock.advance(seconds=29)
        assert got == []
        await t.clock.advance(seconds=1)
        assert got == [
            ("timeout", None),
            ("batch", [0, 1, 2]),
            ("rest", [("jobs", 3), ("other", "x")]),
        ]
