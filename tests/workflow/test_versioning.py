"""Changing workflow code: version gates, removed entries, and divergence errors with a diff."""

from __future__ import annotations

from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext

from .conftest import snapshot

pytestmark = pytest.mark.anyio

OPTS = rivetkit.ActorOptions(sleep_timeout=5.0)


def evolving(code: dict[str, str], calls: list[str]) -> rivetkit.ActorDefinition:
    """An actor whose workflow code changes when the test sets ``code["v"]`` (a redeploy)."""
    a = rivetkit.actor("evolve", state={}, options=OPTS)

    def run(label: str) -> str:
        calls.append(label)
        return label

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        v = code["v"]
        await ctx.step("a", run, "a")
        if v == "v1":
            await ctx.step("old", run, "old")
        elif v == "v2":
            ctx.removed("old", "step")
            if ctx.get_version("extra", 2) >= 2:
                await ctx.step("new", run, "new")
        elif v == "inserted":
            await ctx.step("inserted", run, "inserted")
        elif v == "truncated":
            return
        await ctx.sleep("wait", 100)
        await ctx.step("b", run, "b")

    @a.action
    def noop(c: ActionContext) -> None:
        return None

    return a


async def test_version_gate_pins_old_runs_and_new_runs(actor_test: Any) -> None:
    code = {"v": "v1"}
    calls: list[str] = []
    async with actor_test(evolving(code, calls)) as t:
        old = t.client.get_or_create("evolve", ["old"])
        await old.noop()
        await t.clock.advance(seconds=10)  # the old run waits in "wait", asleep
        assert calls == ["a", "old"]

        code["v"] = "v2"  # redeploy: "old" removed, a gated "new" step added
        new = t.client.get_or_create("evolve", ["new"])
        await new.noop()
        await t.clock.settle()
        assert calls == ["a", "old", "a", "new"]  # a fresh run takes the latest version
        await t.clock.advance(seconds=100)  # both wake from "wait"
        assert sorted(calls[4:]) == ["b", "b"]  # the old run did not run "new"
        for key in ("old", "new"):
            aid = await t.client.get_or_create("evolve", [key]).resolve()
            await t.client.get_or_create("evolve", [key]).noop()
            info = snapshot(t, aid)
            assert info["workflowState"] == "completed", key
            pins = [
                e["kind"]["val"]
                for e in info["history"]["entries"]
                if e["kind"]["tag"] == "WorkflowVersionCheckEntry"
            ]
            assert pins == [{"resolved": 1 if key == "old" else 2, "latest": 2}]


@pytest.mark.parametrize(
    ("change", "message", "expected", "found"),
    [
        (
            "inserted",
            (
                "workflow history diverged at /inserted (operation #2 of /):\n"
                '  recorded: step "new"\n'
                '  code:     step "inserted"\n'
                '  the history continues with: sleep "wait"'
            ),
            {"kind": "step", "name": "new"},
            {"kind": "step", "name": "inserted"},
        ),
        (
            "truncated",
            (
                "workflow history diverged at /: the code finished this scope after 1 "
                "operation(s), but the history recorded 3:\n"
                '  recorded next: step "new"\n'
                "  code:          (end of scope)\n"
                '  not reached: step "new", sleep "wait"'
            ),
            {"kind": "step", "name": "new"},
            None,
        ),
    ],
)
async def test_changed_code_without_versioning_fails_loudly_with_a_diff(
    actor_test: Any,
    caplog: pytest.LogCaptureFixture,
    change: str,
    message: str,
    expected: dict[str, str],
    found: dict[str, str] | None,
) -> None:
    code = {"v": "v2"}
    calls: list[str] = []
    a = evolving(code, calls)
    async with actor_test(a) as t:
        h = t.client.get_or_create("evolve", ["k"])
        await h.noop()
        await t.clock.advance(seconds=10)
        aid = await h.resolve()
        assert aid not in t.registry.driver.awake

        code["v"] = change
        await h.noop()
        await t.clock.settle()
        info = snapshot(t, aid)
        assert info["workflowState"] == "failed"
        assert info["workflowError"]["message"].startswith(f"workflow.history_diverged: {message}")
        assert "ctx.removed(name, kind)" in info["workflowError"]["message"]
        assert message in caplog.text
        assert calls == ["a", "new"]  # nothing ran past the divergence

        engine_error = _last_diverged(caplog)
        assert engine_error.metadata["expected"] == expected
        assert engine_error.metadata["found"] == found

        code["v"] = "v2"  # deploy the right code again: the workflow carries on
        await t.clock.advance(seconds=100)
        await h.noop()
        await t.clock.settle()
        assert calls == ["a", "new", "b"]
        assert snapshot(t, aid)["workflowState"] == "completed"


def _last_diverged(caplog: pytest.LogCaptureFixture) -> rivetkit.HistoryDivergedError:
    for record in reversed(caplog.records):
        exc = getattr(record, "workflow_error", None)
        if isinstance(exc, rivetkit.HistoryDivergedError):
            return exc
    raise AssertionError("no divergence was logged")
