"""The ``/inspector/workflow-history`` payload: RivetKit's JSON shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import rivetkit
from rivetkit import ActionContext
from rivetkit._workflow import engine as engine_module
from rivetkit._workflow import workflow_inspector

pytestmark = pytest.mark.anyio


async def test_history_shape_locations_and_states(actor_test: Any) -> None:
    a = rivetkit.actor("insp", state={}, options=rivetkit.ActorOptions(sleep_timeout=60.0))
    plain = rivetkit.actor("plain", state={})

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> dict[str, Any]:
        await ctx.step("bytes", lambda: b"\x01\x02")

        async def body(lctx: rivetkit.WorkflowContext, n: int) -> Any:
            await lctx.step("tick", lambda: n)
            return lctx.loop_break(n) if n == 1 else lctx.loop_continue(n + 1)

        await ctx.loop("loop", body, state=0)

        async def branch(bctx: rivetkit.WorkflowContext) -> str:
            return await bctx.step("inner", lambda: "x")

        await ctx.join("join", {"b": branch})
        ctx.get_version("gate", 3)
        await ctx.sleep("nap", 30)
        return {"ok": True}

    for definition in (a, plain):

        @definition.action
        def noop(c: ActionContext) -> None:
            return None

    async with actor_test(a, plain) as t:
        h = t.client.get_or_create("insp", ["k"])
        await h.noop()
        await t.clock.settle()
        instance = t.registry.driver.awake[await h.resolve()]
        info = workflow_inspector(instance)
        orjson.dumps(info)  # JSON-ready
        assert info["isWorkflowEnabled"] is True
        assert info["workflowState"] == "sleeping"
        history = info["history"]
        names = history["nameRegistry"]

        def where(entry: dict[str, Any]) -> list[Any]:
            out: list[Any] = []
            for seg in entry["location"]:
                if seg["tag"] == "WorkflowNameIndex":
                    out.append(names[seg["val"]])
                else:
                    out.append((names[seg["val"]["loop"]], seg["val"]["iteration"]))
            return out

        by_place = {tuple(map(str, where(e))): e for e in history["entries"]}
        assert set(by_place) == {
            ("bytes",),
            ("loop",),
            ("loop", "('loop', 0)", "tick"),
            ("loop", "('loop', 1)", "tick"),
            ("join",),
            ("join", "b", "inner"),
            ("gate",),
            ("nap",),
        }
        assert by_place[("bytes",)]["kind"] == {
            "tag": "WorkflowStepEntry",
            "val": {"output": [1, 2], "error": None},
        }
        loop = by_place[("loop",)]["kind"]
        assert loop["tag"] == "WorkflowLoopEntry" and loop["val"]["output"] == 1
        assert by_place[("join",)]["kind"]["val"]["branches"]["b"] == {
            "status": "COMPLETED",
            "output": "x",
            "error": None,
        }
        assert by_place[("gate",)]["kind"]["val"] == {"resolved": 3, "latest": 3}
        nap = by_place[("nap",)]
        assert nap["kind"]["val"]["state"] == "PENDING"
        meta = history["entryMetadata"][by_place[("bytes",)]["id"]]
        assert meta["status"] == "COMPLETED" and meta["attempts"] == 1
        assert set(meta) == {
            "status",
            "error",
            "attempts",
            "lastAttemptAt",
            "createdAt",
            "completedAt",
            "rollbackCompletedAt",
            "rollbackError",
        }

        # Without a running engine the history is read from the actor's database.
        engine_module._engines.pop(instance)
        stored = workflow_inspector(instance)
        assert stored["history"]["nameRegistry"] == names
        assert len(stored["history"]["entries"]) == len(history["entries"])

        await t.clock.advance(seconds=30)
        instance = t.registry.driver.awake[await h.resolve()]
        done = workflow_inspector(instance)
        assert done["workflowState"] == "completed"
        assert done["workflowOutput"] == {"ok": True}

        p = t.client.get_or_create("plain", ["k"])
        await p.noop()
        assert workflow_inspector(t.registry.driver.awake[await p.resolve()]) == {
            "history": None,
            "workflowState": None,
            "isWorkflowEnabled": False,
        }


async def test_a_slept_workflow_actor_is_freed(actor_test: Any) -> None:
    """The inspector keeps each awake actor's engine; nothing may keep a slept actor alive."""
    import gc
    import weakref

    a = rivetkit.actor("freed", state={}, options=rivetkit.ActorOptions(sleep_timeout=5.0))

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        await ctx.rollback_checkpoint("c")
        await ctx.step("s", lambda: ctx.name, rollback=lambda out: None)
        await ctx.sleep("nap", 3600)

    @a.action
    def noop(c: ActionContext) -> None:
        return None

    async with actor_test(a) as t:
        h = t.client.get_or_create("freed", ["k"])
        await h.noop()
        aid = await h.resolve()
        ref = weakref.ref(t.registry.driver.awake[aid])
        await t.clock.advance(seconds=10)
        await t.registry.driver.wait_stopped(aid)
        gc.collect()
        assert ref() is None
