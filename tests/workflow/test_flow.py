"""Loops (with history pruning and resumption), joins and races, replayed after sleeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext
from rivetkit.testing import FakeClock, run_test_registry

from .conftest import snapshot, wf_rows

pytestmark = pytest.mark.anyio

OPTS = rivetkit.ActorOptions(sleep_timeout=5.0)


def flow_actor(name: str = "flow") -> rivetkit.ActorDefinition:
    a = rivetkit.actor(name, state={"log": []}, options=OPTS)

    @a.action
    def log(c: ActionContext) -> list[Any]:
        return list(c.state["log"])

    return a


async def test_loop_prunes_old_iterations_and_returns_its_break_value(actor_test: Any) -> None:
    ticks: list[int] = []
    a = flow_actor()
    rows: list[int] = []

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        async def body(lctx: rivetkit.WorkflowContext, n: int) -> Any:
            await lctx.step("tick", ticks.append, n)
            await lctx.sleep("pause", 1)
            if n == 59:
                return lctx.loop_break(f"done after {n + 1}")
            return lctx.loop_continue(n + 1)

        result = await ctx.loop("count", body, state=0, history_prune_interval=10, history_size=5)
        await ctx.step("result", lambda: result)

    async with actor_test(a) as t:
        h = t.client.get_or_create("flow", ["k"])
        await h.log()
        aid = await h.resolve()
        for _ in range(61):
            await t.clock.advance(seconds=1)
            rows.append(wf_rows(t, aid))
        assert ticks == list(range(60))
        # record + loop entry + at most (history_size + prune interval) iterations of 2 entries
        assert max(rows) <= 2 + (5 + 10) * 2
        info = snapshot(t, aid)
        assert info["workflowState"] == "completed"
        entries = info["history"]["entries"]
        result = [e for e in entries if e["kind"]["tag"] == "WorkflowStepEntry"][-1]
        assert result["kind"]["val"]["output"] == "done after 60"
        iterations = sorted(
            {e["location"][1]["val"]["iteration"] for e in entries if len(e["location"]) == 3}
        )
        assert iterations == [55, 56, 57, 58, 59]  # the last history_size iterations remain


async def test_loop_resumes_at_its_iteration_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    ticks: list[int] = []
    a = flow_actor()

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        async def body(lctx: rivetkit.WorkflowContext, state: dict[str, int]) -> Any:
            await lctx.step("tick", ticks.append, state["i"])
            await lctx.sleep("pause", 10)
            if state["i"] == 9:
                return lctx.loop_break(state["sum"])
            return lctx.loop_continue({"i": state["i"] + 1, "sum": state["sum"] + state["i"]})

        total = await ctx.loop("work", body, state={"i": 0, "sum": 0}, history_prune_interval=3)
        await ctx.step("total", ticks.append, total * 1000)

    storage = tmp_path / "data"
    async with run_test_registry(a, clock=clock, storage_path=storage) as t:
        await t.client.get_or_create("flow", ["k"]).log()
        await clock.advance(seconds=45)
    assert ticks == [0, 1, 2, 3, 4]
    async with run_test_registry(a, clock=clock, storage_path=storage) as t:
        await clock.advance(seconds=60)
        h = t.client.get_or_create("flow", ["k"])
        await h.log()
        info = snapshot(t, await h.resolve())
        kept = {
            e["location"][1]["val"]["iteration"]
            for e in info["history"]["entries"]
            if len(e["location"]) == 3
        }
        assert kept == {7, 8, 9}  # iterations from before the restart were pruned too
    assert ticks == list(range(10)) + [36_000]


async def test_join_runs_branches_concurrently_and_replays_them(actor_test: Any) -> None:
    calls: list[str] = []
    a = flow_actor()
    out: list[Any] = []

    async def left(bctx: rivetkit.WorkflowContext) -> str:
        await bctx.step("l1", calls.append, "l1")
        await bctx.sleep("wait", 30)
        await bctx.step("l2", calls.append, "l2")
        return "L"

    async def right(bctx: rivetkit.WorkflowContext) -> str:
        await bctx.step("r1", calls.append, "r1")
        return "R"

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        out.append(await ctx.join("both", {"left": left, "right": right}))
        await ctx.sleep("after", 30)
        out.append("end")

    async with actor_test(a) as t:
        h = t.client.get_or_create("flow", ["k"])
        await h.log()
        aid = await h.resolve()
        await t.clock.advance(seconds=10)
        assert calls == ["l1", "r1"] and aid not in t.registry.driver.awake
        await t.clock.advance(seconds=25)  # woken for the left branch's sleep
        assert calls == ["l1", "r1", "l2"]
        assert out == [{"left": "L", "right": "R"}]
        await t.clock.advance(seconds=30)  # asleep again, woken by "after": replays the join
        assert out == [{"left": "L", "right": "R"}, {"left": "L", "right": "R"}, "end"]
        assert calls == ["l1", "r1", "l2"]


async def test_join_collects_branch_failures(actor_test: Any) -> None:
    a = flow_actor()
    seen: list[Any] = []

    async def good(bctx: rivetkit.WorkflowContext) -> str:
        await bctx.sleep("slowly", 5)
        return await bctx.step("good", lambda: "fine")

    async def bad(bctx: rivetkit.WorkflowContext) -> float:
        return await bctx.step("bad", lambda: 1 / 0, max_retries=0)

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        try:
            await ctx.join("pair", {"good": good, "bad": bad})
        except rivetkit.JoinError as exc:
            seen.append(exc.errors)
        seen.append(await ctx.step("good-ran", lambda: "recorded"))

    async with actor_test(a) as t:
        await t.client.get_or_create("flow", ["k"]).log()
        await t.clock.advance(seconds=5)
        assert len(seen) == 2
        assert list(seen[0]) == ["bad"] and "ZeroDivisionError" in seen[0]["bad"]


async def test_race_records_the_winner_and_cancels_the_rest(actor_test: Any) -> None:
    calls: list[str] = []
    a = flow_actor()
    results: list[Any] = []

    async def slow(bctx: rivetkit.WorkflowContext) -> str:
        await bctx.step("slow-start", calls.append, "slow-start")
        await bctx.sleep("long", 1000)
        await bctx.step("slow-done", calls.append, "slow-done")
        return "slow"

    async def fast(bctx: rivetkit.WorkflowContext) -> str:
        await bctx.sleep("short", 20)
        await bctx.step("fast-done", calls.append, "fast-done")
        return "fast"

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        results.append(await ctx.race("first", [slow, ("quick", fast)]))
        await ctx.sleep("after", 100)
        results.append("end")

    async with actor_test(a) as t:
        h = t.client.get_or_create("flow", ["k"])
        await h.log()
        aid = await h.resolve()
        await t.clock.advance(seconds=20)
        assert results == [rivetkit.RaceResult("quick", "fast")]
        assert calls == ["slow-start", "fast-done"]
        info = snapshot(t, aid)
        race = next(
            e for e in info["history"]["entries"] if e["kind"]["tag"] == "WorkflowRaceEntry"
        )
        assert race["kind"]["val"]["winner"] == "quick"
        assert race["kind"]["val"]["branches"]["slow"]["status"] == "CANCELLED"
        names = info["history"]["nameRegistry"]
        recorded = {names[e["location"][-1]["val"]] for e in info["history"]["entries"]}
        assert "slow-start" not in recorded and "long" not in recorded  # loser's history deleted
        await t.clock.advance(seconds=2000)  # sleeps, wakes for "after", replays the race
        assert results[-2:] == [rivetkit.RaceResult("quick", "fast"), "end"]
        assert calls == ["slow-start", "fast-done"]


async def test_race_error_when_every_branch_fails(actor_test: Any) -> None:
    a = flow_actor()
    errors: list[dict[str, str]] = []

    async def one(bctx: rivetkit.WorkflowContext) -> None:
        await bctx.step("one", lambda: 1 / 0, max_retries=0)

    async def two(bctx: rivetkit.WorkflowContext) -> None:
        raise RuntimeError("two broke")

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        try:
            await ctx.race("r", {"one": one, "two": two})
        except rivetkit.RaceError as exc:
            errors.append(exc.errors)

    async with actor_test(a) as t:
        await t.client.get_or_create("flow", ["k"]).log()
        await t.clock.settle()
        assert list(errors[0]) == ["one", "two"]
        assert errors[0]["two"] == "RuntimeError: two broke"
