"""Durable schedules and cron jobs, end to end through the client on a fake clock.

Every test serves a registry on a real socket with real SQLite files, schedules through actions,
moves the fake clock, and reads what fired through other actions. Rows are also checked against
rivetkit-core's encoding by opening the actor's file once the registry stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import apsw
import cbor2
import pytest

import rivetkit
from rivetkit import ActionContext, ActorContext, UserError
from rivetkit._runtime.cron import next_cron_time
from rivetkit._runtime.fake_clock import FakeClock
from rivetkit._runtime.schedule import ScheduledFireInfo
from rivetkit._runtime.storage import actor_db_path
from rivetkit.client import ActorHandle, Client
from rivetkit.errors import ActorError

pytestmark = pytest.mark.anyio


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp() * 1000)


BASE = utc_ms(2026, 1, 5, 12)  # a Monday, far from any DST change


def fire_dict(fire: ScheduledFireInfo | None) -> dict[str, Any] | None:
    if fire is None:
        return None
    return {
        "kind": fire.kind,
        "id": fire.id,
        "name": fire.name,
        "scheduled_at": fire.scheduled_at,
        "fired_at": fire.fired_at,
    }


def scheduler_actor(
    name: str = "sched",
    *,
    options: rivetkit.ActorOptions | None = None,
    with_tick: bool = True,
    gates: dict[str, asyncio.Event] | None = None,
) -> rivetkit.ActorDefinition:
    """An actor exposing the schedule and cron APIs as actions, and targets that log runs."""
    a = rivetkit.actor(name, state={"log": []}, vars={"fires": []}, options=options)

    # -- targets ---------------------------------------------------------------------------

    @a.action
    def record(c: ActionContext, label: str, fire: ScheduledFireInfo | None = None) -> None:
        c.state["log"].append([label, fire_dict(fire)])
        c.vars["fires"].append(fire)

    @a.action
    def nap(c: ActionContext, fire: ScheduledFireInfo | None = None) -> None:
        c.state["log"].append(["nap", fire_dict(fire)])
        c.sleep()

    @a.action
    def plain(c: ActionContext, label: str) -> None:  # no room for the fire info
        c.state["log"].append([label, "plain"])

    @a.action
    def variadic(c: ActionContext, *args: Any) -> None:
        c.state["log"].append(["variadic", len(args), fire_dict(args[-1])])

    @a.action
    def boom(c: ActionContext, how: str, fire: ScheduledFireInfo | None = None) -> None:
        c.state["log"].append(["boom", how])
        if how == "user":
            raise UserError("the report failed", code="report_failed", metadata={"attempt": 2})
        raise RuntimeError("private implementation detail")

    @a.action
    async def slow(c: ActionContext, gate: str, fire: ScheduledFireInfo | None = None) -> None:
        assert gates is not None
        c.state["log"].append(["slow-start", fire.scheduled_at if fire else None])
        await c.save_state()
        await gates[gate].wait()
        c.state["log"].append(["slow-end", fire.scheduled_at if fire else None])

    if with_tick:

        @a.action
        def tick(c: ActionContext, fire: ScheduledFireInfo | None = None) -> None:
            c.state["log"].append(["tick", fire_dict(fire)])

    # -- readers ---------------------------------------------------------------------------

    @a.action
    def log(c: ActionContext) -> list[Any]:
        return list(c.state["log"])

    @a.action
    def last_fire(c: ActionContext) -> Any:
        return c.vars["fires"][-1]  # a ScheduledFireInfo, as it crosses the wire

    @a.action
    def next_alarm(c: ActionContext) -> int | None:
        return c._actor.scheduler.next_alarm_at()  # type: ignore[attr-defined]

    @a.action
    def noop(c: ActionContext) -> None:
        pass

    # -- the APIs --------------------------------------------------------------------------

    @a.action
    async def after(c: ActionContext, seconds: float, action: str, *args: Any) -> str:
        return await c.schedule.after(seconds, action, *args)

    @a.action
    async def at(c: ActionContext, timestamp_ms: int, action: str, *args: Any) -> str:
        return await c.schedule.at(timestamp_ms, action, *args)

    @a.action
    async def get(c: ActionContext, event_id: str) -> Any:
        return await c.schedule.get(event_id)

    @a.action
    async def list_events(c: ActionContext) -> Any:
        return await c.schedule.list()

    @a.action
    async def cancel(c: ActionContext, event_id: str) -> bool:
        return await c.schedule.cancel(event_id)

    @a.action
    async def cron_set(
        c: ActionContext, name: str, expression: str, action: str, *args: Any
    ) -> None:
        await c.cron.set(name, expression, action, *args)

    @a.action
    async def cron_set_opts(
        c: ActionContext, name: str, expression: str, action: str, opts: dict[str, Any]
    ) -> None:
        await c.cron.set(name, expression, action, *opts.get("args", []), **opts.get("kw", {}))

    @a.action
    async def every(
        c: ActionContext, name: str, interval: float, action: str, opts: dict[str, Any]
    ) -> None:
        await c.cron.every(name, interval, action, *opts.get("args", []), **opts.get("kw", {}))

    @a.action
    async def cron_get(c: ActionContext, name: str) -> Any:
        return await c.cron.get(name)

    @a.action
    async def cron_list(c: ActionContext) -> Any:
        return await c.cron.list()

    @a.action
    async def cron_delete(c: ActionContext, name: str) -> bool:
        return await c.cron.delete(name)

    @a.action
    async def history(c: ActionContext, name: str, limit: int = 20) -> Any:
        return await c.cron.history(name, limit=limit)

    @a.action
    async def attempt(c: ActionContext, case: str) -> Any:
        """Bad input the wire cannot carry (NaN, objects) is built here."""
        cases: dict[str, Callable[[], Any]] = {
            "nan_delay": lambda: c.schedule.after(float("nan"), "record", "x"),
            "huge_delay": lambda: c.schedule.after(1e308, "record", "x"),
            "inf_timestamp": lambda: c.schedule.at(float("inf"), "record", "x"),  # type: ignore[arg-type]
            "unserializable": lambda: c.schedule.after(1, "record", object()),
            "nan_interval": lambda: c.cron.every("n", float("nan"), "tick"),
            "bad_history_type": lambda: c.cron.every("n", 5, "tick", max_history="3"),  # type: ignore[arg-type]
        }
        return await cases[case]()

    @a.action
    async def seed_history(c: ActionContext, count: int) -> None:
        def seed(conn: apsw.Connection) -> None:
            conn.execute(
                "WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < ?) "
                "INSERT INTO _rivet_schedule_history (schedule_id, action, scheduled_at, "
                "fired_at, finished_at, result) SELECT 'cron:seed', 'seed', v, v, v, 1 FROM n",
                (count,),
            )

        await c._actor.store.run(seed)  # type: ignore[attr-defined]

    @a.action
    async def history_count(c: ActionContext) -> int:
        def count(conn: apsw.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM _rivet_schedule_history").fetchone()[0])

        return await c._actor.store.run(count)  # type: ignore[attr-defined]

    @a.action
    async def event_count(c: ActionContext) -> int:
        def count(conn: apsw.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM _rivet_schedule_events").fetchone()[0])

        return await c._actor.store.run(count)  # type: ignore[attr-defined]

    return a


@contextlib.asynccontextmanager
async def open_actor(
    serve_registry: Any, definition: rivetkit.ActorDefinition, **config: Any
) -> AsyncIterator[ActorHandle]:
    """Serve ``definition`` and yield a handle to its actor ``["k"]``."""
    async with serve_registry(definition, **config) as served, Client(served.url) as client:
        yield client.get_or_create(definition.name, ["k"])


async def expect_error(call: Any, code: str, group: str = "schedule") -> ActorError:
    with pytest.raises(ActorError) as info:
        await call
    assert (info.value.group, info.value.code) == (group, code), info.value
    return info.value


# -- one-shot schedules ----------------------------------------------------------------------


async def test_after_at_get_list_cancel(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        later = await h.action("after", 10, "record", "after-10")
        soon = await h.action("at", BASE + 5_000, "record", "at-5")
        dropped = await h.action("after", 7.5, "record", "dropped")
        uuid.UUID(later)  # event ids are UUIDs, as rivetkit-core's
        assert len({later, soon, dropped}) == 3

        assert await h.action("get", later) == {
            "id": later,
            "action": "record",
            "args": ["after-10"],
            "run_at": BASE + 10_000,
        }
        listed = await h.action("list_events")
        assert [e["id"] for e in listed] == [soon, dropped, later]  # earliest first
        assert await h.action("next_alarm") == BASE + 5_000

        assert await h.action("cancel", dropped) is True
        assert await h.action("cancel", dropped) is False
        assert await h.action("get", dropped) is None

        await clock.advance(4.999)
        assert await h.action("log") == []
        await clock.advance(0.001)
        assert await h.action("log") == [
            [
                "at-5",
                {
                    "kind": "at",
                    "id": soon,
                    "name": None,
                    "scheduled_at": BASE + 5_000,
                    "fired_at": BASE + 5_000,
                },
            ]
        ]
        assert await h.action("get", soon) is None  # one-shots are removed once fired
        assert await h.action("next_alarm") == BASE + 10_000

        await clock.advance(10)
        log = await h.action("log")
        assert [entry[0] for entry in log] == ["at-5", "after-10"]
        assert log[1][1]["scheduled_at"] == BASE + 10_000
        assert await h.action("list_events") == []
        assert await h.action("next_alarm") is None
        await clock.advance(60)  # nothing else fires: "dropped" was cancelled
        assert [entry[0] for entry in await h.action("log")] == ["at-5", "after-10"]


async def test_fire_info_is_appended_when_the_signature_has_room(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        await h.action("after", 1, "plain", "p")  # takes exactly one argument
        await h.action("after", 2, "variadic", 1, 2)  # *args: gets it last
        event_id = await h.action("after", 3, "record", "r")
        await clock.advance(3)
        log = await h.action("log")
        assert log[0] == ["p", "plain"]
        assert log[1][0:2] == ["variadic", 3]
        assert log[1][2]["kind"] == "at" and log[1][2]["scheduled_at"] == BASE + 2_000
        # The fire info crosses the wire as an object with snake_case fields.
        assert await h.action("last_fire") == {
            "kind": "at",
            "id": event_id,
            "name": None,
            "scheduled_at": BASE + 3_000,
            "fired_at": BASE + 3_000,
        }


async def test_due_events_fire_in_trigger_order(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        # Times in the past are all due at the first alarm and run in trigger order.
        for label, offset in [("c", -1_000), ("a", -3_000), ("now", 0), ("b", -2_000)]:
            await h.action("at", BASE + offset, "record", label)
        await h.action("after", 0, "record", "zero")
        assert await h.action("log") == []  # nothing fires inside the scheduling action
        await clock.advance(0)
        log = await h.action("log")
        assert [entry[0] for entry in log][:3] == ["a", "b", "c"]
        assert sorted(entry[0] for entry in log[3:]) == ["now", "zero"]
        assert all(entry[1]["fired_at"] == BASE for entry in log)


async def test_failed_one_shot_is_not_retried(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        await h.action("after", 1, "boom", "user")
        await clock.advance(1)
        assert await h.action("log") == [["boom", "user"]]
        assert await h.action("list_events") == []
        await clock.advance(minutes=5)
        assert await h.action("log") == [["boom", "user"]]


# -- recurring jobs ------------------------------------------------------------------------


async def test_every_crud_and_cadence_rules(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        await h.action("every", "refresh", 5, "record", {"args": ["v1"]})
        job = await h.action("cron_get", "refresh")
        assert job == {
            "name": "refresh",
            "kind": "every",
            "action": "record",
            "args": ["v1"],
            "next_run_at": BASE + 5_000,
            "last_run_at": None,
            "expression": None,
            "timezone": None,
            "interval": 5.0,
            "max_history": 100,
        }
        await clock.advance(1)
        # Same cadence: the action, arguments and history size change, the next run stays.
        await h.action("every", "refresh", 5, "record", {"args": ["v2"], "kw": {"max_history": 7}})
        job = await h.action("cron_get", "refresh")
        assert (job["next_run_at"], job["args"], job["max_history"]) == (BASE + 5_000, ["v2"], 7)
        # A new interval computes a new next run.
        await h.action("every", "refresh", 10, "record", {"args": ["v2"]})
        assert (await h.action("cron_get", "refresh"))["next_run_at"] == BASE + 11_000

        await clock.advance(10)  # t = 11 s
        job = await h.action("cron_get", "refresh")
        assert (job["next_run_at"], job["last_run_at"]) == (BASE + 21_000, BASE + 11_000)
        await clock.advance(20)  # t = 31 s: runs at 21 s and 31 s, anchored to deadlines
        log = await h.action("log")
        assert [entry[1]["scheduled_at"] - BASE for entry in log] == [11_000, 21_000, 31_000]
        assert log[0] == [
            "v2",
            {
                "kind": "every",
                "id": "refresh",
                "name": "refresh",
                "scheduled_at": BASE + 11_000,
                "fired_at": BASE + 11_000,
            },
        ]
        assert [j["name"] for j in await h.action("cron_list")] == ["refresh"]
        assert await h.action("list_events") == []  # one-shots only
        assert await h.action("cron_delete", "refresh") is True
        assert await h.action("cron_delete", "refresh") is False
        assert await h.action("cron_get", "refresh") is None
        assert await h.action("history", "refresh") == []
        await clock.advance(minutes=1)
        assert len(await h.action("log")) == 3


async def test_cron_set_get_list(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)  # Monday 12:00 UTC
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        await h.action("cron_set", "quarter", "*/15 * * * *", "tick")
        await h.action(
            "cron_set_opts",
            "weekday-9",
            "0 9 * * MON-FRI",
            "record",
            {"args": ["report"], "kw": {"timezone": "America/New_York", "max_history": 5}},
        )
        quarter = await h.action("cron_get", "quarter")
        assert quarter["kind"] == "cron"
        assert quarter["expression"] == "*/15 * * * *"
        assert quarter["timezone"] == "UTC"  # the default, stored as such
        assert quarter["interval"] is None
        assert quarter["next_run_at"] == BASE + 15 * 60_000
        weekday = await h.action("cron_get", "weekday-9")
        assert weekday["next_run_at"] == utc_ms(2026, 1, 5, 14)  # 09:00 EST
        assert weekday["max_history"] == 5
        assert [j["name"] for j in await h.action("cron_list")] == ["quarter", "weekday-9"]

        await clock.advance(hours=2, minutes=1)
        log = await h.action("log")
        ticks = [e[1]["scheduled_at"] for e in log if e[0] == "tick"]
        assert ticks == [BASE + m * 60_000 for m in (15, 30, 45, 60, 75, 90, 105, 120)]
        report = [e for e in log if e[0] == "report"]
        assert len(report) == 1 and report[0][1]["kind"] == "cron"
        assert report[0][1]["id"] == report[0][1]["name"] == "weekday-9"
        history = await h.action("history", "weekday-9")
        assert history == [
            {
                "action": "record",
                "scheduled_at": utc_ms(2026, 1, 5, 14),
                "fired_at": utc_ms(2026, 1, 5, 14),
                "finished_at": utc_ms(2026, 1, 5, 14),
                "result": "ok",
                "error": None,
            }
        ]
        assert len(await h.action("history", "quarter", 3)) == 3


def test_next_cron_time_follows_rivetkit_dst_rules() -> None:
    la = ZoneInfo("America/Los_Angeles")
    assert next_cron_time("0 9 * * *", la, utc_ms(2026, 1, 1, 16)) == utc_ms(2026, 1, 1, 17)
    # 02:30 does not exist on the spring-forward day: that occurrence is skipped.
    assert next_cron_time("30 2 * * *", la, utc_ms(2026, 3, 8)) == utc_ms(2026, 3, 9, 9, 30)
    # 01:30 happens twice on the fall-back day: the first one runs, the second does not.
    first = next_cron_time("30 1 * * *", la, utc_ms(2026, 11, 1))
    assert first == utc_ms(2026, 11, 1, 8, 30)
    assert next_cron_time("30 1 * * *", la, first) == utc_ms(2026, 11, 2, 9, 30)
    # Strictly after: an occurrence at exactly "now" is not the next one.
    assert next_cron_time("* * * * *", ZoneInfo("UTC"), BASE) == BASE + 60_000
    assert next_cron_time("* * * * *", ZoneInfo("UTC"), BASE + 1) == BASE + 60_000


async def test_cron_in_a_timezone_across_dst_changes(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=utc_ms(2026, 3, 7))  # Friday 16:00 PST
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        for name, expression in [("gap", "30 2 * * *"), ("nine", "0 9 * * *")]:
            await h.action(
                "cron_set_opts",
                name,
                expression,
                "record",
                {"args": [name], "kw": {"timezone": "America/Los_Angeles"}},
            )
        await clock.advance(days=3)  # the actor sleeps in between; alarms wake it
        log = await h.action("log")
        fired = {
            name: [e[1]["scheduled_at"] for e in log if e[0] == name] for name in ("gap", "nine")
        }
        assert fired["gap"] == [
            utc_ms(2026, 3, 7, 10, 30),  # 02:30 PST
            # 2026-03-08 02:30 does not exist in Los Angeles
            utc_ms(2026, 3, 9, 9, 30),  # 02:30 PDT
        ]
        assert fired["nine"] == [
            utc_ms(2026, 3, 7, 17),  # 09:00 PST
            utc_ms(2026, 3, 8, 16),  # 09:00 PDT
            utc_ms(2026, 3, 9, 16),
        ]
        assert all(e[1]["fired_at"] == e[1]["scheduled_at"] for e in log)


async def test_overlapping_runs_are_skipped(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    gates = {"slow": asyncio.Event()}
    async with open_actor(serve_registry, scheduler_actor(gates=gates), clock=clock) as h:
        await h.action("every", "slow", 5, "slow", {"args": ["slow"]})
        await clock.advance(5)
        first = await h.action("history", "slow")
        assert [(f["result"], f["finished_at"]) for f in first] == [("running", None)]
        await clock.advance(10)  # two more occurrences while the first still runs
        gates["slow"].set()
        await clock.settle()
        history = await h.action("history", "slow")
        assert [f["result"] for f in history] == ["skipped", "skipped", "ok"]
        assert [f["scheduled_at"] - BASE for f in history] == [15_000, 10_000, 5_000]
        assert history[0]["finished_at"] == history[0]["fired_at"] == BASE + 15_000
        assert history[2]["finished_at"] == BASE + 15_000
        assert [e[0] for e in await h.action("log")] == ["slow-start", "slow-end"]
        job = await h.action("cron_get", "slow")
        assert (job["last_run_at"], job["next_run_at"]) == (BASE + 5_000, BASE + 20_000)
        await clock.advance(5)  # the next occurrence runs again
        assert [e[0] for e in await h.action("log")] == ["slow-start", "slow-end"] * 2


async def test_failures_are_recorded_and_not_retried(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        await h.action("every", "user", 5, "boom", {"args": ["user"]})
        await h.action("every", "internal", 5, "boom", {"args": ["internal"]})
        await clock.advance(5)
        assert len(await h.action("log")) == 2  # once each, no retry
        user = await h.action("history", "user")
        assert user[0]["result"] == "error"
        assert user[0]["error"] == {
            "group": "user",
            "code": "report_failed",
            "message": "the report failed",
            "metadata": {"attempt": 2},
        }
        internal = (await h.action("history", "internal"))[0]
        assert internal["error"] == {
            "group": "rivetkit",
            "code": "internal_error",
            "message": "An internal error occurred",  # the detail is never persisted
            "metadata": None,
        }
        # The job continues at its next cadence.
        await clock.advance(5)
        assert [f["result"] for f in await h.action("history", "user")] == ["error", "error"]
        assert (await h.action("cron_get", "user"))["next_run_at"] == BASE + 15_000


async def test_history_is_bounded(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        await h.action("every", "tick", 5, "tick", {"kw": {"max_history": 2}})
        await clock.advance(15)
        history = await h.action("history", "tick")
        assert [f["scheduled_at"] - BASE for f in history] == [15_000, 10_000]
        assert len(await h.action("history", "tick", 1)) == 1
        # Lowering the bound prunes at once; zero disables and clears the history.
        await h.action("every", "tick", 5, "tick", {"kw": {"max_history": 1}})
        assert len(await h.action("history", "tick")) == 1
        await h.action("every", "tick", 5, "tick", {"kw": {"max_history": 0}})
        assert await h.action("history", "tick") == []
        await clock.advance(5)
        assert await h.action("history", "tick") == []
        assert len(await h.action("log")) == 4  # it still runs


async def test_actor_history_is_bounded_across_jobs(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        await h.action("seed_history", 10_001)
        await h.action("every", "tick", 5, "tick", {"kw": {"max_history": 1}})
        await clock.advance(5)
        # The first insert prunes the actor's history to 9,900 rows (then every 100 runs).
        assert await h.action("history_count") == 9_900
        assert len(await h.action("history", "tick")) == 1


async def test_missing_action_deletes_recurring_job(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        await h.action("every", "job", 5, "tick", {"kw": {"max_history": 10}})
        await h.action("every", "other", 5, "record", {"args": ["other"]})
        await h.action("after", 5, "tick")
    # The next version of the actor no longer has the action.
    async with serve_registry(scheduler_actor(with_tick=False), clock=clock) as served:
        await clock.advance(5)  # the alarm wakes the actor
        async with Client(served.url) as client:
            h = client.get_or_create("sched", ["k"])
            assert await h.action("cron_get", "job") is None
            assert await h.action("list_events") == []  # the one-shot ran (and failed) once
            history = await h.action("history", "job")
            assert [(f["result"], f["error"]["code"]) for f in history] == [
                ("error", "action_not_found")
            ]
            assert [j["name"] for j in await h.action("cron_list")] == ["other"]
            await clock.advance(5)
            assert [e[0] for e in await h.action("log")] == ["other", "other"]


# -- errors ----------------------------------------------------------------------------------


async def test_bad_input_is_rejected_with_codes_and_nothing_persisted(
    serve_registry: Any,
) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        err = await expect_error(h.action("after", -1, "record", "x"), "invalid_delay")
        assert err.metadata == {"delay": -1}
        await expect_error(h.action("attempt", "nan_delay"), "invalid_delay")
        await expect_error(h.action("attempt", "huge_delay"), "invalid_delay")
        await expect_error(h.action("after", "soon", "record", "x"), "invalid_delay")
        await expect_error(h.action("at", "noon", "record", "x"), "invalid_timestamp")
        await expect_error(h.action("attempt", "inf_timestamp"), "invalid_timestamp")
        err = await expect_error(h.action("after", 1, "nope"), "action_not_found")
        assert err.metadata == {"action": "nope"}
        await expect_error(h.action("after", 1, "record"), "invalid_arguments")
        await expect_error(h.action("after", 1, "record", "a", "b", "c"), "invalid_arguments")
        await expect_error(h.action("attempt", "unserializable"), "invalid_arguments")
        await expect_error(h.action("cron_set", "n", "* * * * *", "nope"), "action_not_found")

        err = await expect_error(h.action("cron_set", "", "* * * * *", "tick"), "invalid_name")
        assert err.metadata == {"reason": "must not be empty"}
        await expect_error(h.action("cron_set", "x" * 129, "* * * * *", "tick"), "invalid_name")
        for expression in [
            "* * *",
            "* * * * * *",
            "61 * * * *",
            "@daily",
            "H * * * *",
            "0 0 30 2 *",
        ]:
            await expect_error(
                h.action("cron_set", "n", expression, "tick"), "invalid_cron_expression"
            )
        err = await expect_error(
            h.action(
                "cron_set_opts", "n", "* * * * *", "tick", {"kw": {"timezone": "Mars/Olympus_Mons"}}
            ),
            "invalid_timezone",
        )
        assert err.metadata == {"timezone": "Mars/Olympus_Mons"}
        err = await expect_error(h.action("every", "n", 4.999, "tick", {}), "invalid_interval")
        assert err.metadata == {"interval_ms": 4_999, "minimum_ms": 5_000}
        await expect_error(h.action("attempt", "nan_interval"), "invalid_interval")
        err = await expect_error(
            h.action("every", "n", 5, "tick", {"kw": {"max_history": 1_001}}),
            "invalid_max_history",
        )
        assert err.metadata == {"max_history": 1_001, "maximum": 1_000}
        await expect_error(h.action("attempt", "bad_history_type"), "invalid_max_history")
        await expect_error(h.action("history", "n", 0), "invalid_limit")
        await expect_error(h.action("history", "n", 1_001), "invalid_limit")

        assert await h.action("event_count") == 0
        assert await h.action("history_count") == 0
        assert await h.action("next_alarm") is None
        await h.action("every", "n", 5, "tick", {})  # the same names work when valid
        assert await h.action("event_count") == 1


async def test_max_schedules(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    options = rivetkit.ActorOptions(max_schedules=2)
    async with open_actor(serve_registry, scheduler_actor(options=options), clock=clock) as h:
        await h.action("every", "job", 5, "tick", {})
        first = await h.action("after", 60, "record", "one")
        err = await expect_error(h.action("after", 60, "record", "two"), "max_schedules_exceeded")
        assert err.metadata == {"maximum": 2}
        await expect_error(h.action("every", "job-2", 5, "tick", {}), "max_schedules_exceeded")
        await h.action("every", "job", 10, "tick", {})  # replacing a job is allowed at the cap
        assert await h.action("event_count") == 2
        assert await h.action("cancel", first) is True  # cancelling frees capacity
        await h.action("after", 60, "record", "three")
        assert await h.action("cron_delete", "job") is True
        await h.action("every", "job-2", 5, "tick", {})
        assert await h.action("event_count") == 2


# -- lifecycle -------------------------------------------------------------------------------


async def test_schedules_survive_restart_and_missed_events_fire(
    serve_registry: Any, tmp_path: Path
) -> None:
    clock = FakeClock(start_ms=BASE)
    storage = tmp_path / "storage"
    async with open_actor(
        serve_registry, scheduler_actor(), clock=clock, storage_path=storage
    ) as h:
        missed = await h.action("after", 30, "record", "missed")
        future = await h.action("after", 600, "record", "future")
        await h.action("every", "tick", 5, "tick", {})
        await clock.advance(5)
        assert len(await h.action("log")) == 1
    await clock.advance(122)  # the server is down: one-shot and 23 ticks are missed
    async with serve_registry(scheduler_actor(), clock=clock, storage_path=storage) as served:
        await clock.advance(0)  # the server arms the due alarm; the actor wakes and fires it
        async with Client(served.url) as client:
            h = client.get_or_create("sched", ["k"])
            log = await h.action("log")
            assert [e[0] for e in log] == ["tick", "tick", "missed"]  # in trigger order
            assert log[2] == [
                "missed",
                {
                    "kind": "at",
                    "id": missed,
                    "name": None,
                    "scheduled_at": BASE + 30_000,
                    "fired_at": BASE + 127_000,
                },
            ]
            ticks = [e for e in log if e[0] == "tick"]
            # Missed ticks collapse into one run; the cadence stays anchored to the deadlines.
            assert [t[1]["scheduled_at"] - BASE for t in ticks] == [5_000, 10_000]
            assert (await h.action("cron_get", "tick"))["next_run_at"] == BASE + 130_000
            assert [e["id"] for e in await h.action("list_events")] == [future]
            await clock.advance(5)
            assert len([e for e in await h.action("log") if e[0] == "tick"]) == 3


async def test_schedule_during_sleep_persists_and_wakes_the_actor(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    a = scheduler_actor(options=rivetkit.ActorOptions(sleep_timeout=2))
    wakes: list[int] = []

    @a.on_wake
    def count_wakes(c: ActorContext) -> None:
        wakes.append(clock.now_ms())

    @a.on_sleep
    async def reschedule(c: ActorContext) -> None:
        if not c.state["log"]:
            await c.schedule.after(5, "record", "from-sleep")

    async with open_actor(serve_registry, a, clock=clock) as h:
        await h.action("noop")
        await clock.advance(2)  # idle: the actor sleeps, scheduling from on_sleep
        assert len(wakes) == 1
        await clock.advance(5)  # its alarm wakes it and the event fires
        assert len(wakes) == 2
        log = await h.action("log")
        assert log == [
            [
                "from-sleep",
                {
                    "kind": "at",
                    "id": log[0][1]["id"],
                    "name": None,
                    "scheduled_at": BASE + 7_000,
                    "fired_at": BASE + 7_000,
                },
            ]
        ]


async def test_event_refused_by_a_stopping_actor_fires_after_the_next_wake(
    serve_registry: Any,
) -> None:
    clock = FakeClock(start_ms=BASE)
    async with open_actor(serve_registry, scheduler_actor(), clock=clock) as h:
        # Both are due together: the first puts the actor to sleep, so the second is refused
        # before it runs. It must not be lost: it goes back and fires once the actor wakes.
        await h.action("at", BASE - 2_000, "nap")
        later = await h.action("at", BASE - 1_000, "record", "later")
        await clock.advance(0)
        log = await h.action("log")
        assert [entry[0] for entry in log] == ["nap", "later"]
        assert log[1][1] == {
            "kind": "at",
            "id": later,
            "name": None,
            "scheduled_at": BASE - 1_000,
            "fired_at": BASE,
        }
        assert await h.action("list_events") == []


async def test_schedule_from_on_create_fires_while_awake(serve_registry: Any) -> None:
    clock = FakeClock(start_ms=BASE)
    a = scheduler_actor()

    @a.on_create
    async def first(c: ActorContext, _input: Any) -> None:
        await c.schedule.after(5, "record", "created")

    async with open_actor(serve_registry, a, clock=clock) as h:
        await h.action("noop")
        await clock.advance(5)
        assert [e[0] for e in await h.action("log")] == ["created"]


# -- compatibility with rivetkit-core's rows ----------------------------------------------


async def test_rows_use_rivetkit_core_encoding(serve_registry: Any, tmp_path: Path) -> None:
    clock = FakeClock(start_ms=BASE)
    storage = tmp_path / "storage"
    async with open_actor(
        serve_registry, scheduler_actor(), clock=clock, storage_path=storage
    ) as h:
        actor_id = await h.resolve()
        one_shot = await h.action("after", 10, "record", "x", {"k": [1, 2.5, None]})
        await h.action(
            "cron_set_opts",
            "daily",
            "0 9 * * *",
            "record",
            {"args": ["d"], "kw": {"timezone": "Europe/Berlin", "max_history": 3}},
        )
        await h.action("every", "tick", 5, "tick", {})
        await h.action("every", "fail", 5, "boom", {"args": ["user"]})
        await clock.advance(5)
        assert len(await h.action("log")) == 2

    db = apsw.Connection(str(actor_db_path(storage, actor_id)))
    try:
        events = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT event_id, trigger_at, action, args, kind, cron_expression, timezone, "
                "interval_ms, last_started_at, max_history FROM _rivet_schedule_events"
            )
        }
        assert events == {
            one_shot: (
                BASE + 10_000,
                "record",
                cbor2.dumps(["x", {"k": [1, 2.5, None]}]),
                0,
                None,
                None,
                None,
                None,
                0,
            ),
            "cron:daily": (
                utc_ms(2026, 1, 6, 8),  # 09:00 CET
                "record",
                cbor2.dumps(["d"]),
                1,
                "0 9 * * *",
                "Europe/Berlin",
                None,
                None,
                3,
            ),
            "cron:tick": (BASE + 10_000, "tick", b"\x80", 2, None, None, 5_000, BASE + 5_000, 100),
            "cron:fail": (
                BASE + 10_000,
                "boom",
                cbor2.dumps(["user"]),
                2,
                None,
                None,
                5_000,
                BASE + 5_000,
                100,
            ),
        }
        history = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT schedule_id, action, scheduled_at, fired_at, finished_at, result, "
                "error_group, error_code, error_message, error_metadata "
                "FROM _rivet_schedule_history"
            )
        }
        done = BASE + 5_000
        assert history == {
            "cron:tick": ("tick", done, done, done, 1, None, None, None, None),
            "cron:fail": (
                "boom",
                done,
                done,
                done,
                2,
                "user",
                "report_failed",
                "the report failed",
                cbor2.dumps({"attempt": 2}),
            ),
        }
    finally:
        db.close()


async def test_rows_written_by_the_official_runtime_are_read(
    serve_registry: Any, tmp_path: Path
) -> None:
    clock = FakeClock(start_ms=BASE)
    storage = tmp_path / "storage"
    async with open_actor(
        serve_registry, scheduler_actor(), clock=clock, storage_path=storage
    ) as h:
        actor_id = await h.resolve()
        await h.action("after", 3600, "record", "keep")  # gives the actor an alarm
    # Rows as rivetkit-core writes them, including a run left "running" by a crash.
    db = apsw.Connection(str(actor_db_path(storage, actor_id)))
    try:
        with db:
            db.execute(
                "INSERT INTO _rivet_schedule_events (event_id, trigger_at, action, args, kind, "
                "cron_expression, timezone, interval_ms, last_started_at, max_history) VALUES "
                "('5d0f4b6e-3c1a-4f6e-9a51-8f0b8f9a1c11', ?, 'record', ?, 0, NULL, NULL, NULL, "
                "NULL, 0), ('cron:ts-job', ?, 'record', ?, 2, NULL, NULL, 60000, ?, 100), "
                # An expression our parser rejects: logged and left alone, never a busy loop.
                "('cron:broken', ?, 'record', NULL, 1, 'not a cron', 'UTC', NULL, NULL, 100)",
                (
                    BASE + 1_000,
                    cbor2.dumps(["from-ts"]),
                    BASE + 60_000,
                    cbor2.dumps(["ts-job"]),
                    BASE,
                    BASE + 500,
                ),
            )
            db.execute(
                "INSERT INTO _rivet_schedule_history (schedule_id, action, scheduled_at, "
                "fired_at, finished_at, result) VALUES ('cron:ts-job', 'record', ?, ?, NULL, 0)",
                (BASE, BASE),
            )
    finally:
        db.close()
    async with open_actor(
        serve_registry, scheduler_actor(), clock=clock, storage_path=storage
    ) as h:
        job = await h.action("cron_get", "ts-job")
        assert (job["kind"], job["interval"], job["args"]) == ("every", 60.0, ["ts-job"])
        history = await h.action("history", "ts-job")
        assert history[0]["result"] == "error"  # interrupted by the crash
        assert history[0]["error"]["group"] == "schedule"
        assert history[0]["error"]["code"] == "interrupted"
        await clock.advance(60)
        labels = [e[0] for e in await h.action("log")]
        assert labels == ["from-ts", "ts-job"]
        assert [j["name"] for j in await h.action("cron_list")] == ["broken", "ts-job"]
        assert await h.action("next_alarm") == BASE + 120_000
