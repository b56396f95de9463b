"""Durable sleeps: across the actor's own sleep, across a restart of the registry, while awake."""

from __future__ import annotations

from pathlib import Path

import pytest

import rivetkit
from rivetkit import ActionContext
from rivetkit.testing import FakeClock, run_test_registry

pytestmark = pytest.mark.anyio


def sleeper(calls: list[tuple[str, int]], clock: FakeClock) -> rivetkit.ActorDefinition:
    a = rivetkit.actor("sleeper", state={"n": 0}, options=rivetkit.ActorOptions(sleep_timeout=5.0))

    def mark(label: str) -> None:
        calls.append((label, clock.now_ms()))

    @a.run
    @rivetkit.workflow
    async def process(ctx: rivetkit.WorkflowContext) -> None:
        await ctx.step("before", mark, "before")
        await ctx.sleep("nap", 100)
        await ctx.step("middle", mark, "middle")
        deadline = await ctx.step("deadline", lambda: clock.now_ms() + 50_000)
        await ctx.sleep_until("until", deadline)
        await ctx.step("after", mark, "after")

    @a.action
    def ping(c: ActionContext) -> int:
        c.state["n"] += 1
        return int(c.state["n"])

    return a


async def test_sleep_survives_actor_sleep_and_wakes_on_time() -> None:
    clock = FakeClock()
    calls: list[tuple[str, int]] = []
    async with run_test_registry(sleeper(calls, clock), clock=clock) as t:
        h = t.client.get_or_create("sleeper", ["k"])
        await h.ping()
        start = clock.now_ms()
        aid = await h.resolve()
        await clock.advance(seconds=99)
        assert aid not in t.registry.driver.awake  # asleep for most of the nap
        assert [label for label, _ in calls] == ["before"]
        await clock.advance(seconds=1)
        assert [label for label, _ in calls] == ["before", "middle"]
        assert calls[1][1] - start == 100_000
        await clock.advance(seconds=50)
        assert [(label, at - start) for label, at in calls] == [
            ("before", 0),
            ("middle", 100_000),
            ("after", 150_000),
        ]


async def test_sleep_continues_in_process_while_the_actor_is_kept_awake() -> None:
    clock = FakeClock()
    calls: list[tuple[str, int]] = []
    async with run_test_registry(sleeper(calls, clock), clock=clock) as t:
        h = t.client.get_or_create("sleeper", ["k"])
        aid = await h.resolve()
        await h.ping()
        for _ in range(25):  # a request every 4 s: never idle for sleep_timeout
            await clock.advance(seconds=4)
            await h.ping()
            assert aid in t.registry.driver.awake
        assert [label for label, _ in calls] == ["before", "middle"]


async def test_sleep_survives_a_restart_of_the_registry(tmp_path: Path) -> None:
    clock = FakeClock()
    calls: list[tuple[str, int]] = []
    storage = tmp_path / "data"
    definition = sleeper(calls, clock)
    async with run_test_registry(definition, clock=clock, storage_path=storage) as t:
        await t.client.get_or_create("sleeper", ["k"]).ping()
        start = clock.now_ms()
        await clock.advance(seconds=30)
    assert [label for label, _ in calls] == ["before"]

    # Down until 70 s; back up before the deadline: the remaining 30 s still count. (Absolute
    # times: stopping a test registry may let fake time pass.)
    await clock.advance_to(start + 70_000)
    async with run_test_registry(definition, clock=clock, storage_path=storage) as t:
        await clock.advance_to(start + 99_000)
        assert [label for label, _ in calls] == ["before"]
        await clock.advance_to(start + 100_000)
        assert [label for label, _ in calls] == ["before", "middle"]
        assert calls[1][1] - start == 100_000

    # Down past the second deadline: the missed alarm wakes the actor at the next start.
    await clock.advance(seconds=120)
    async with run_test_registry(definition, clock=clock, storage_path=storage) as t:
        await clock.advance(seconds=0)  # timers due now fire
        assert [label for label, _ in calls] == ["before", "middle", "after"]
        assert (await t.client.get_or_create("sleeper", ["k"]).ping()) == 2
