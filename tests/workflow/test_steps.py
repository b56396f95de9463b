"""Steps: run once, replay after a sleep, retries and backoff, timeouts, try_step, bad input.

Everything runs in process on a FakeClock with real SQLite files; actors go to sleep and wake
exactly when the tests move the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext
from rivetkit.testing import FakeClock

from .conftest import actor_id, snapshot

pytestmark = pytest.mark.anyio

OPTS = rivetkit.ActorOptions(sleep_timeout=5.0)


def counter_actor(name: str = "wf", **kw: Any) -> rivetkit.ActorDefinition:
    a = rivetkit.actor(name, state={"total": 0, "notes": []}, options=OPTS, **kw)

    @a.action
    def get(c: ActionContext) -> Any:
        return c.state

    return a


async def test_steps_run_once_and_replay_across_actor_sleep(actor_test: Any) -> None:
    calls: list[str] = []
    a = counter_actor()

    def add(ctx: rivetkit.WorkflowContext, label: str, n: int) -> int:
        calls.append(label)
        ctx.state["total"] += n
        return int(ctx.state["total"])

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> str:
        first = await ctx.step("first", add, ctx, "first", 1)
        second = await ctx.step("second", add, ctx, "second", 10)
        await ctx.sleep("cool-off", 60)
        third = await ctx.step("third", add, ctx, "third", 100)
        return f"{first}/{second}/{third}"

    async with actor_test(a) as t:
        h = t.client.get_or_create("wf", ["k"])
        await h.get()
        await t.clock.settle()
        assert calls == ["first", "second"]
        aid = await h.resolve()
        await t.clock.advance(seconds=10)  # idle in the durable sleep: the actor sleeps
        assert aid not in t.registry.driver.awake
        await t.clock.advance(seconds=52)  # the sleep's alarm wakes it; it replays
        assert aid in t.registry.driver.awake
        assert calls == ["first", "second", "third"]
        assert (await h.get())["total"] == 111
        info = snapshot(t, aid)
        assert info["workflowState"] == "completed"
        assert info["workflowOutput"] == "1/11/111"
        await t.clock.advance(seconds=10)  # sleeps again; a completed workflow never re-runs
        assert aid not in t.registry.driver.awake
        await h.get()
        await t.clock.settle()
        assert calls == ["first", "second", "third"]
        assert snapshot(t, aid)["workflowState"] == "completed"


async def test_step_output_is_replayed_as_recorded(actor_test: Any) -> None:
    seen: list[Any] = []
    a = counter_actor()

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        value = await ctx.step("make", lambda: (1, 2, {"b": b"\x00\x01"}))
        seen.append(value)  # a tuple comes back as a list, live and on replay alike
        await ctx.sleep("nap", 30)

    async with actor_test(a) as t:
        h = t.client.get_or_create("wf", ["k"])
        await h.get()
        await t.clock.advance(seconds=40)  # sleeps at 5 s, woken at 30 s, replays
        assert seen == [[1, 2, {"b": b"\x00\x01"}], [1, 2, {"b": b"\x00\x01"}]]


async def test_retries_back_off_on_the_clock_and_keep_state_changes() -> None:
    clock = FakeClock()
    attempts: list[int] = []
    a = counter_actor()

    def flaky(ctx: rivetkit.WorkflowContext) -> str:
        attempts.append(clock.now_ms())
        ctx.state["total"] += 1  # roll-forward: kept even when the attempt fails
        if len(attempts) < 4:
            raise RuntimeError(f"flaky {len(attempts)}")
        return "ok"

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        result = await ctx.step(
            "flaky", flaky, ctx, max_retries=3, retry_backoff_base=1.0, retry_backoff_max=3.0
        )
        await ctx.step("note", lambda: ctx.state["notes"].append(result))

    from rivetkit.testing import run_test_registry

    async with run_test_registry(a, clock=clock) as t:
        h = t.client.get_or_create("wf", ["k"])
        await h.get()
        await t.clock.settle()
        start = attempts[0]
        assert len(attempts) == 1 and (await h.get())["total"] == 1
        await t.clock.advance(seconds=0.999)
        assert len(attempts) == 1
        await t.clock.advance(seconds=0.001)  # base 1 s
        assert len(attempts) == 2
        await t.clock.advance(seconds=5)  # then 2 s, then 3 s (capped)
        assert [at - start for at in attempts] == [0, 1000, 3000, 6000]
        state = await h.get()
        assert state == {"total": 4, "notes": ["ok"]}


async def test_exhausted_step_fails_the_workflow_for_good(actor_test: Any) -> None:
    attempts: list[int] = []
    events: list[rivetkit.WorkflowErrorEvent] = []
    a = counter_actor()

    def always_fails(ctx: rivetkit.WorkflowContext) -> None:
        attempts.append(1)
        ctx.state["total"] += 1
        raise ValueError("card declined")

    def on_error(c: Any, event: rivetkit.WorkflowErrorEvent) -> None:
        events.append(event)

    @a.run
    @rivetkit.workflow(on_error=on_error)
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        await ctx.step("charge", always_fails, ctx, max_retries=2, retry_backoff_base=0.5)

    async with actor_test(a) as t:
        h = t.client.get_or_create("wf", ["k"])
        await h.get()
        aid = await actor_id(t, "wf", "k")
        await t.clock.advance(seconds=2)
        assert len(attempts) == 3
        assert (await h.get())["total"] == 3  # failed attempts are not rolled back
        info = snapshot(t, aid)
        assert info["workflowState"] == "failed"
        assert "workflow.step_exhausted" in info["workflowError"]["message"]
        assert "card declined" in info["workflowError"]["message"]
        assert [(e.kind, e.attempt, e.will_retry) for e in events] == [
            ("step", 1, True),
            ("step", 2, True),
            ("step", 3, False),
            ("workflow", None, False),
        ]
        assert events[0].retry_delay == 0.5 and events[1].retry_delay == 1.0
        await t.clock.advance(seconds=10)  # asleep; the next wake does not run it again
        assert aid not in t.registry.driver.awake
        await h.get()
        await t.clock.settle()
        assert len(attempts) == 3
        assert snapshot(t, aid)["workflowState"] == "failed"


async def test_step_timeout_is_critical_unless_retry_on_timeout(actor_test: Any) -> None:
    results: dict[str, Any] = {}
    a = counter_actor()

    async def slow(ctx: rivetkit.WorkflowContext) -> str:
        ctx.state["total"] += 1
        await asyncio.sleep(3600)  # interrupted by the step timeout (on the fake clock)
        return "never"

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        once = await ctx.try_step("once", slow, ctx, timeout=2.0)
        again = await ctx.try_step(
            "again",
            slow,
            ctx,
            timeout=2.0,
            retry_on_timeout=True,
            max_retries=1,
            retry_backoff_base=1.0,
        )
        results["once"] = once
        results["again"] = again

    async with actor_test(a) as t:
        h = t.client.get_or_create("wf", ["k"])
        await h.get()
        await t.clock.advance(seconds=1.9)
        assert results == {}
        await t.clock.advance(seconds=0.1)  # "once" times out: not retried
        await t.clock.advance(seconds=2 + 1 + 2)  # "again": attempt, backoff, attempt
        once, again = results["once"], results["again"]
        assert not once.ok and once.failure.kind == "timeout" and once.failure.attempts == 1
        assert "timed out after 2 s" in once.failure.error
        assert not again.ok and again.failure.kind == "timeout" and again.failure.attempts == 2
        assert (await h.get())["total"] == 3


async def test_try_step_turns_failures_into_values(actor_test: Any) -> None:
    results: list[Any] = []
    a = counter_actor()

    def critical() -> None:
        raise rivetkit.CriticalError("no such customer")

    def rolls_back() -> None:
        raise rivetkit.RollbackError("stop everything")

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        results.append(await ctx.try_step("ok", lambda: 7))
        results.append(await ctx.try_step("critical", critical, max_retries=5))
        results.append(await ctx.try_step("exhausted", lambda: 1 / 0, max_retries=0))
        results.append(await ctx.try_step("rollback", rolls_back, catch=("rollback",)))
        try:
            await ctx.try_step("not-caught", critical, catch=("exhausted",))
        except rivetkit.CriticalError as exc:
            results.append(f"raised {exc.code}")

    async with actor_test(a) as t:
        await t.client.get_or_create("wf", ["k"]).get()
        await t.clock.settle()
        ok, crit, exhausted, rollback, raised = results
        assert ok == rivetkit.TryStepResult(True, 7)
        assert crit.failure.kind == "critical" and crit.failure.attempts == 1
        assert crit.failure.error == "no such customer"
        assert exhausted.failure.kind == "exhausted"
        assert "ZeroDivisionError" in exhausted.failure.error
        assert rollback.failure.kind == "rollback"
        assert raised == "raised critical"


async def test_actor_data_is_only_usable_inside_steps(actor_test: Any) -> None:
    errors: dict[str, str] = {}
    a = counter_actor(vars={"v": 1})

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        uses: dict[str, Callable[[], object]] = {
            "state": lambda: ctx.state,
            "vars": lambda: ctx.vars,
            "db": lambda: ctx.db,
            "kv": lambda: ctx.kv,
            "client": lambda: ctx.client(),
            "broadcast": lambda: ctx.broadcast("x"),
        }
        for feature, use in uses.items():
            try:
                use()
            except rivetkit.WorkflowError as exc:
                errors[feature] = f"{exc.code}: {exc.message}"

        def inside() -> int:
            ctx.state["total"] = 5
            ctx.vars["v"] += 1
            ctx.client()
            return int(ctx.vars["v"])

        errors["inside"] = str(await ctx.step("inside", inside))

    async with actor_test(a) as t:
        h = t.client.get_or_create("wf", ["k"])
        await h.get()
        await t.clock.settle()
        assert set(errors) == {"state", "vars", "db", "kv", "client", "broadcast", "inside"}
        assert errors["state"].startswith(
            "outside_step: state is only available inside workflow steps"
        )
        assert errors["db"].startswith("outside_step: db is only available")
        assert errors["inside"] == "2"
        assert (await h.get())["total"] == 5


async def test_code_errors_stop_the_run_without_failing_the_workflow(
    actor_test: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mode = {"bad": "duplicate"}
    calls: list[str] = []
    a = counter_actor()

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        await ctx.step("a", lambda: calls.append("a"))
        if mode["bad"] == "duplicate":
            await ctx.step("a", lambda: calls.append("a again"))
        elif mode["bad"] == "unserializable":

            def unstorable() -> object:
                calls.append("b")
                return object()

            await ctx.step("b", unstorable)
        elif mode["bad"] == "nested":

            async def nested() -> None:
                await ctx.step("inner", lambda: None)

            await ctx.step("b", nested)
        await ctx.step("c", lambda: calls.append("c"))

    async with actor_test(a) as t:
        h = t.client.get_or_create("wf", ["k"])
        await h.get()
        aid = await actor_id(t, "wf", "k")
        await t.clock.settle()
        info = snapshot(t, aid)
        assert info["workflowState"] == "failed"  # this run; the record stays "running"
        assert "duplicate_entry_name" in info["workflowError"]["message"]
        assert 'the name "a" is used twice in /' in caplog.text

        for bad, code in [
            ("unserializable", "step_output_not_serializable"),
            ("nested", "entry_in_progress"),
        ]:
            mode["bad"] = bad
            await t.clock.advance(seconds=10)  # sleeps; the next request replays fixed-up code
            assert aid not in t.registry.driver.awake
            await h.get()
            await t.clock.settle()
            assert code in snapshot(t, aid)["workflowError"]["message"], bad

        mode["bad"] = "none"  # the code is fixed: the workflow carries on from the history
        await t.clock.advance(seconds=10)
        await h.get()
        await t.clock.settle()
        assert snapshot(t, aid)["workflowState"] == "completed"
        # "a" ran once; "b" ran but could not be recorded, so it is not replayed
        assert calls == ["a", "b", "c"]


async def test_bad_arguments_fail_fast(actor_test: Any) -> None:
    errors: list[str] = []
    a = counter_actor()

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        for call in (
            lambda: ctx.step("", lambda: 1),
            lambda: ctx.step("s", lambda: 1, max_retries=-1),
            lambda: ctx.step("s", lambda: 1, timeout=0),
            lambda: ctx.step("s", "not a function"),  # type: ignore[call-overload]
            lambda: ctx.sleep("s", -1),
            lambda: ctx.try_step("s", lambda: 1, catch=("nope",)),
        ):
            try:
                await call()
            except (ValueError, TypeError) as exc:
                errors.append(type(exc).__name__)
        try:
            ctx.get_version("v", 0)
        except ValueError:
            errors.append("version")

    async with actor_test(a) as t:
        await t.client.get_or_create("wf", ["k"]).get()
        await t.clock.settle()
        assert errors == ["ValueError"] * 3 + ["TypeError", "ValueError", "ValueError", "version"]


def test_workflow_decorator_validates_eagerly() -> None:
    with pytest.raises(rivetkit.DefinitionError, match="must be an async function"):
        rivetkit.workflow(lambda ctx: None)  # type: ignore[arg-type,return-value]

    async def two(ctx: Any, extra: Any) -> None: ...

    with pytest.raises(rivetkit.DefinitionError, match="exactly one argument"):
        rivetkit.workflow(two)  # type: ignore[arg-type]
