"""``ctx.try_block`` (RivetKit's ``ctx.try``): a named block whose failure is a result, and the
step context's ``keep_awake`` / ``wait_until``.

In process on a FakeClock with real SQLite files; the actor sleeps and wakes when the tests move
the clock, so every result is also checked after a replay.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext
from rivetkit._workflow import CriticalError, RollbackError, TryBlockFailure, TryStepFailure

from .conftest import actor_id, snapshot

pytestmark = pytest.mark.anyio

OPTS = rivetkit.ActorOptions(sleep_timeout=5.0)


def actor(name: str) -> rivetkit.ActorDefinition:
    a = rivetkit.actor(name, state={"log": []}, options=OPTS)

    @a.action
    def get(c: ActionContext) -> Any:
        return c.state

    return a


async def test_a_failed_step_in_a_try_block_is_a_result_also_after_replay(
    actor_test: Any,
) -> None:
    a = actor("tb")
    runs: list[str] = []
    results: list[Any] = []

    def fail(label: str) -> None:
        runs.append(label)
        raise ValueError(f"{label} is broken")

    def ok(label: str) -> str:
        runs.append(label)
        return label

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> str:
        async def payment(b: rivetkit.WorkflowContext) -> str:
            await b.step("authorize", ok, "authorize")
            await b.step("capture", fail, "capture", max_retries=1, retry_backoff_base=1.0)
            return "paid"

        async def shipping(b: rivetkit.WorkflowContext) -> str:
            return await b.step("label", ok, "label")  # same names as elsewhere: own scope

        first = await ctx.try_block("payment", payment)
        second = await ctx.try_block("shipping", shipping)
        results.append((first, second))
        await ctx.sleep("hold", 60)
        return "done" if first.ok else "payment failed"

    async with actor_test(a) as t:
        h = t.client.get_or_create("tb", ["k"])
        await h.get()
        await t.clock.advance(seconds=1)  # the retry of "capture"
        await t.clock.settle()
        first, second = results[0]
        assert not first.ok and first.value is None
        assert first.failure == TryBlockFailure(
            "step",
            "capture",
            "ValueError: capture is broken",
            TryStepFailure("exhausted", "capture", 2, "ValueError: capture is broken"),
        )
        assert second.ok and second.value == "label" and second.failure is None
        assert runs == ["authorize", "capture", "capture", "label"]

        aid = await actor_id(t, "tb", "k")
        await t.clock.advance(seconds=10)  # asleep during "hold"
        assert aid not in t.registry.driver.awake
        await t.clock.advance(seconds=52)  # woken: replays both blocks, runs nothing again
        assert runs == ["authorize", "capture", "capture", "label"]
        assert results[1] == results[0]
        info = snapshot(t, aid)
        assert info["workflowState"] == "completed"
        assert info["workflowOutput"] == "payment failed"
        # The block is not an entry of its own (as in RivetKit): its name is in the locations.
        names = info["history"]["nameRegistry"]
        places = {
            tuple(names[s["val"]] for s in e["location"]) for e in info["history"]["entries"]
        }
        assert places == {
            ("payment", "authorize"),
            ("payment", "capture"),
            ("shipping", "label"),
            ("hold",),
        }


async def test_what_a_try_block_catches(actor_test: Any) -> None:
    a = actor("catch")
    outcomes: dict[str, Any] = {}

    def critical() -> None:
        raise CriticalError("no")

    def rollback() -> None:
        raise RollbackError("undo")

    def broken() -> None:
        raise ValueError("branch broke")

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        async def critical_step(b: rivetkit.WorkflowContext) -> None:
            await b.step("s", critical)

        async def rollback_step(b: rivetkit.WorkflowContext) -> None:
            await b.step("s", rollback)

        async def failed_join(b: rivetkit.WorkflowContext) -> None:
            async def bad(j: rivetkit.WorkflowContext) -> None:
                await j.step("s", broken, max_retries=0)

            async def good(j: rivetkit.WorkflowContext) -> int:
                return 1

            await b.join("j", {"bad": bad, "good": good})

        async def raises_rollback(b: rivetkit.WorkflowContext) -> None:
            raise RollbackError("from the block")

        outcomes["critical"] = await ctx.try_block("t1", critical_step)
        outcomes["rollback"] = await ctx.try_block("t2", rollback_step, catch=["rollback"])
        outcomes["join"] = await ctx.try_block("t3", failed_join)
        outcomes["block"] = await ctx.try_block("t4", raises_rollback, catch=("rollback",))
        try:
            await ctx.try_block("t5", failed_join, catch=["step"])  # a join failure: not caught
        except rivetkit.RivetError as exc:
            outcomes["uncaught"] = exc.code
        try:
            await ctx.try_block("t6", rollback_step)  # "rollback" is not caught by default
        except RollbackError as exc:
            outcomes["not rollback"] = exc.message

    async with actor_test(a) as t:
        await t.client.get_or_create("catch", ["k"]).get()
        await t.clock.settle()
        assert outcomes["critical"].failure.source == "step"
        assert outcomes["critical"].failure.step.kind == "critical"
        assert outcomes["rollback"].failure.step.kind == "rollback"
        join = outcomes["join"].failure
        assert (join.source, join.name, join.step) == ("join", "j", None)
        assert "branch broke" in join.error
        block = outcomes["block"].failure
        assert (block.source, block.name) == ("block", "t4")
        assert outcomes["uncaught"] == "join_failed"
        assert outcomes["not rollback"] == "undo"
        # The workflow code caught what the blocks let through: it completed.
        info = snapshot(t, await actor_id(t, "catch", "k"))
        assert info["workflowState"] == "completed"


async def test_try_block_errors_in_the_code(actor_test: Any) -> None:
    a = actor("bad")
    errors: list[str] = []

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        async def block(b: rivetkit.WorkflowContext) -> None:
            raise KeyError("plain bug")

        for call in (
            lambda: ctx.try_block("x", block, catch="step"),
            lambda: ctx.try_block("x", block, catch=["nope"]),
            lambda: ctx.try_block("x", 5),  # type: ignore[arg-type]
        ):
            try:
                await call()
            except (ValueError, TypeError) as exc:
                errors.append(type(exc).__name__)
        await ctx.try_block("x", block)  # a plain exception is not captured: the workflow fails

    async with actor_test(a) as t:
        await t.client.get_or_create("bad", ["k"]).get()
        await t.clock.settle()
        assert errors == ["ValueError", "ValueError", "TypeError"]
        info = snapshot(t, await actor_id(t, "bad", "k"))
        assert info["workflowState"] == "failed"
        assert "plain bug" in info["workflowError"]["message"]


async def test_keep_awake_and_wait_until_on_the_step_context(actor_test: Any) -> None:
    a = actor("bg")
    release = asyncio.Event()
    flushed = asyncio.Event()
    seen: list[str] = []

    async def background(ctx: rivetkit.WorkflowContext) -> str:
        await release.wait()
        try:
            ctx.state["log"].append("late")  # the step that started it is over
        except rivetkit.RivetError as exc:
            seen.append(exc.code)
        return "background done"

    async def flush() -> None:
        await flushed.wait()
        seen.append("flushed")

    def start(ctx: rivetkit.WorkflowContext) -> None:
        ctx.keep_awake(background(ctx))
        ctx.wait_until(flush())

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        await ctx.step("start", start, ctx)
        try:
            ctx.keep_awake(asyncio.sleep(0))
        except rivetkit.RivetError as exc:
            seen.append(exc.code)

    async with actor_test(a) as t:
        h = t.client.get_or_create("bg", ["k"])
        await h.get()
        await t.clock.settle()
        aid = await actor_id(t, "bg", "k")
        assert seen == ["outside_step"]  # keep_awake outside a step
        await t.clock.advance(seconds=30)  # the workflow is done, but the kept task runs
        assert aid in t.registry.driver.awake
        release.set()
        await t.clock.settle()
        assert seen == ["outside_step", "outside_step"]  # no actor data after the step
        await t.clock.advance(seconds=6)  # idle again: it starts to sleep...
        await asyncio.sleep(0)
        assert aid not in t.registry.driver.awake
        stopping = asyncio.ensure_future(t.registry.driver.wait_stopped(aid))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not stopping.done()  # ...and waits for the wait_until task
        flushed.set()
        await stopping
        assert seen[-1] == "flushed"
        assert (await h.get())["log"] == []
