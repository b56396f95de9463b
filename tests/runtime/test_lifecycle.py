"""Sleep and wake, the shutdown sequence, run handlers, keep_awake / wait_until, destroy.

Driven through the Python client against a served registry whose clock is a FakeClock: idle
time passes with ``clock.advance``, never with real sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext, ActorContext
from rivetkit._runtime.storage import actor_db_path
from rivetkit.client import Client
from rivetkit.errors import ActorError
from rivetkit.testing import FakeClock

pytestmark = pytest.mark.anyio


def lifecycle_actor(log: list[str], **options: Any) -> rivetkit.ActorDefinition:
    a = rivetkit.actor(
        "life",
        options=rivetkit.ActorOptions(**options) if options else None,
    )

    @a.create_state
    def create_state(c: ActorContext, input: Any) -> dict[str, Any]:
        log.append("create_state")
        return {"n": 0, "wakes": 0}

    @a.on_create
    def on_create(c: ActorContext, input: Any) -> None:
        log.append("on_create")

    @a.create_vars
    def create_vars(c: ActorContext) -> dict[str, Any]:
        log.append("create_vars")
        return {"fresh": True}

    @a.on_wake
    def on_wake(c: ActorContext) -> None:
        log.append("on_wake")
        c.state["wakes"] += 1

    @a.on_sleep
    def on_sleep(c: ActorContext) -> None:
        log.append(f"on_sleep aborted={c.aborted}")
        c.state["slept"] = True

    @a.on_destroy
    def on_destroy(c: ActorContext) -> None:
        log.append("on_destroy")

    @a.action
    def inc(c: ActionContext) -> int:
        c.state["n"] += 1
        return int(c.state["n"])

    @a.action
    def snapshot(c: ActionContext) -> dict[str, Any]:
        fresh = c.vars["fresh"]
        c.vars["fresh"] = False
        return {**c.state, "fresh": fresh}

    @a.action
    def go_to_sleep(c: ActionContext) -> None:
        c.sleep()

    @a.action
    def destroy(c: ActionContext) -> None:
        c.destroy()

    return a


def awake(served: Any) -> set[str]:
    return set(served.registry.driver.awake)


async def test_idle_actor_sleeps_after_sleep_timeout_and_wakes_on_demand(
    serve_registry: Callable[..., Any],
) -> None:
    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(lifecycle_actor(log), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("life", ["a"])
            assert await h.inc() == 1
            assert await h.snapshot() == {"n": 1, "wakes": 1, "fresh": True}
            assert log == ["create_state", "on_create", "create_vars", "on_wake"]
            actor_id = await h.resolve()

            await clock.advance(seconds=29.9)
            assert actor_id in awake(served)
            await clock.advance(seconds=0.1)
            assert actor_id not in awake(served)
            assert log[-1] == "on_sleep aborted=True"

            # The next request wakes it: vars are fresh, state is what was committed.
            assert await h.snapshot() == {"n": 1, "wakes": 2, "fresh": True, "slept": True}
            assert log[-2:] == ["create_vars", "on_wake"]
            record = served.registry.driver.get_record(actor_id)
            assert record.generation == 2


async def test_activity_postpones_sleep(serve_registry: Callable[..., Any]) -> None:
    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(lifecycle_actor(log, sleep_timeout=10), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("life", ["a"])
            await h.inc()
            actor_id = await h.resolve()
            for _ in range(5):
                await clock.advance(seconds=9)
                await h.inc()  # each request restarts the idle period
            assert actor_id in awake(served)
            await clock.advance(seconds=10)
            assert actor_id not in awake(served)
            assert await h.inc() == 7


async def test_open_connection_keeps_actor_awake(serve_registry: Callable[..., Any]) -> None:
    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(lifecycle_actor(log), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("life", ["a"])
            async with h.connect() as conn:
                await conn.action("inc")
                actor_id = await h.resolve()
                await clock.advance(minutes=10)
                assert actor_id in awake(served)
            for _ in range(200):  # the server notices the close over the socket
                if not served.registry.driver.awake[actor_id].conns:
                    break
                await asyncio.sleep(0.005)
            await clock.advance(seconds=30)
            assert actor_id not in awake(served)


async def test_c_sleep_closes_connections_with_going_away_and_clients_reconnect(
    serve_registry: Callable[..., Any],
) -> None:
    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(lifecycle_actor(log), clock=clock) as served:
        async with Client(served.url) as client:
            client._reconnect_delay = (0.01, 0.05)
            h = client.get_or_create("life", ["a"])
            async with h.connect() as conn:
                assert await conn.action("inc") == 1
                actor_id = await h.resolve()
                statuses: list[str] = []
                conn.on_status_change(statuses.append)
                await conn.action("go_to_sleep")
                await clock.settle()
                # The actor slept, the socket was closed with ws.going_away, the client
                # reconnected by itself, which woke the actor (generation 2).
                assert await conn.action("inc") == 2
                assert "disconnected" in statuses
                assert served.registry.driver.awake[actor_id].generation == 2
                assert "on_sleep aborted=True" in log


async def test_requests_during_shutdown_are_held_until_the_actor_wakes(
    serve_registry: Callable[..., Any],
) -> None:
    release = asyncio.Event()
    a = rivetkit.actor("slow_sleeper", state={"n": 0, "sleeps": 0})

    @a.on_sleep
    async def on_sleep(c: ActorContext) -> None:
        await release.wait()
        c.state["sleeps"] += 1

    @a.action
    def inc(c: ActionContext) -> dict[str, int]:
        c.state["n"] += 1
        return dict(c.state)

    @a.action
    def nap(c: ActionContext) -> None:
        c.sleep()

    clock = FakeClock()
    async with serve_registry(a, clock=clock) as served, Client(served.url) as client:
        h = client.get_or_create("slow_sleeper", ["a"])
        await h.inc()
        await h.nap()
        await clock.settle()
        pending = asyncio.ensure_future(h.inc())
        await asyncio.sleep(0.05)
        assert not pending.done()  # held while on_sleep runs
        release.set()
        assert await pending == {"n": 2, "sleeps": 1}


async def test_sleep_grace_period_bounds_on_sleep(serve_registry: Callable[..., Any]) -> None:
    a = rivetkit.actor("stuck", state={"n": 0}, options=rivetkit.ActorOptions(sleep_grace_period=5))
    never = asyncio.Event()

    @a.on_sleep
    async def on_sleep(c: ActorContext) -> None:
        c.state["n"] = 100  # made before the hook hangs: saved anyway
        await never.wait()

    @a.action
    def nap(c: ActionContext) -> None:
        c.sleep()

    @a.action
    def get(c: ActionContext) -> int:
        return int(c.state["n"])

    clock = FakeClock()
    async with serve_registry(a, clock=clock) as served, Client(served.url) as client:
        h = client.get_or_create("stuck", ["a"])
        actor_id = await h.resolve()
        await h.nap()
        await clock.settle()
        assert actor_id in served.registry.driver._stopping
        await clock.advance(seconds=5)
        assert actor_id not in served.registry.driver._stopping
        assert await h.get() == 100
        never.set()  # the stop at server shutdown runs on_sleep again (no fake time then)


async def test_keep_awake_blocks_idle_sleep_and_wait_until_only_the_shutdown(
    serve_registry: Callable[..., Any],
) -> None:
    gate = asyncio.Event()
    a = rivetkit.actor("bg", state={"done": []})

    @a.action
    def hold(c: ActionContext, kind: str) -> None:
        async def work() -> None:
            await gate.wait()
            c.state["done"].append(kind)
            await c.save_state()

        if kind == "keep_awake":
            c.keep_awake(work())
        else:
            c.wait_until(work())

    @a.action
    def done(c: ActionContext) -> list[str]:
        return list(c.state["done"])

    clock = FakeClock()
    async with serve_registry(a, clock=clock) as served, Client(served.url) as client:
        h = client.get_or_create("bg", ["k"])
        actor_id = await h.resolve()
        await h.hold("keep_awake")
        await clock.advance(minutes=5)
        assert actor_id in awake(served)
        gate.set()
        await clock.settle()
        await clock.advance(seconds=30)
        assert actor_id not in awake(served)
        assert await h.done() == ["keep_awake"]

        gate.clear()
        await h.hold("wait_until")
        await clock.advance(seconds=30)  # wait_until does not keep it awake...
        assert actor_id not in awake(served)
        assert actor_id in served.registry.driver._stopping  # ...but the stop waits
        gate.set()
        await clock.settle()
        assert actor_id not in served.registry.driver._stopping
        assert await h.done() == ["keep_awake", "wait_until"]


def runner_actor(log: list[str], mode: str) -> rivetkit.ActorDefinition:
    a = rivetkit.actor("runner", state={"runs": 0})

    @a.run
    async def run(c: ActorContext) -> None:
        c.state["runs"] += 1
        log.append("run started")
        if mode == "return":
            return
        if mode == "raise":
            raise RuntimeError("run failed")
        if mode == "ignore_abort":
            await asyncio.Event().wait()
        await c.abort_signal.wait()
        log.append(f"run exits aborted={c.aborted}")

    @a.on_sleep
    def on_sleep(c: ActorContext) -> None:
        log.append("on_sleep")

    @a.action
    def runs(c: ActionContext) -> int:
        return int(c.state["runs"])

    @a.action
    def nap(c: ActionContext) -> None:
        c.sleep()

    return a


async def test_run_handler_keeps_actor_awake_and_exits_on_abort(
    serve_registry: Callable[..., Any],
) -> None:
    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(runner_actor(log, "wait"), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("runner", ["a"])
            await h.runs()  # wakes the actor; run starts in the background
            await clock.settle()
            assert await h.runs() == 1
            actor_id = await h.resolve()
            await clock.advance(hours=1)
            assert actor_id in awake(served)  # an active run handler prevents idle sleep
            await h.nap()
            await clock.settle()
            assert actor_id not in awake(served)
            # run is awaited before on_sleep, and restarted on the next wake.
            assert log == ["run started", "run exits aborted=True", "on_sleep"]
            await h.runs()
            await clock.settle()
            assert await h.runs() == 2


@pytest.mark.parametrize("mode", ["return", "raise"])
async def test_finished_run_handler_leaves_actor_to_idle_sleep(
    serve_registry: Callable[..., Any], mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(runner_actor(log, mode), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("runner", ["a"])
            await h.runs()  # wakes the actor; run starts in the background
            await clock.settle()
            assert await h.runs() == 1
            actor_id = await h.resolve()
            assert actor_id in awake(served)
            await clock.advance(seconds=30)
            assert actor_id not in awake(served)
    if mode == "raise":
        assert "run handler raised" in caplog.text


async def test_run_handler_ignoring_abort_is_cancelled_after_grace(
    serve_registry: Callable[..., Any],
) -> None:
    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(runner_actor(log, "ignore_abort"), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("runner", ["a"])
            await h.runs()
            actor_id = await h.resolve()
            await h.nap()
            await clock.advance(seconds=14)
            assert actor_id in served.registry.driver._stopping
            await clock.advance(seconds=1)
            assert actor_id not in served.registry.driver._stopping
            await h.runs()
            await clock.settle()
            assert await h.runs() == 2
            await h.nap()  # asleep before the server stops (its stop would need fake time)
            await clock.advance(seconds=15)


async def test_c_destroy_runs_on_destroy_removes_storage_and_frees_the_key(
    serve_registry: Callable[..., Any], tmp_path: Path
) -> None:
    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(lifecycle_actor(log), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("life", ["a"])
            await h.inc()
            actor_id = await h.resolve()
            path = actor_db_path(served.registry.config.storage_path, actor_id)
            assert path.exists()
            await h.destroy()
            await clock.settle()
            assert "on_destroy" in log and "on_sleep aborted=True" not in log
            assert not path.exists()
            gone = client.get_for_id("life", actor_id)
            with pytest.raises(ActorError) as info:
                await gone.inc()
            assert (info.value.group, info.value.code) == ("actor", "not_found")
            again = client.get_or_create("life", ["a"])
            assert await again.inc() == 1
            assert await again.resolve() != actor_id


async def test_delete_api_destroys_a_sleeping_actor_running_on_destroy(
    serve_registry: Callable[..., Any],
) -> None:
    import aiohttp

    log: list[str] = []
    clock = FakeClock()
    async with serve_registry(lifecycle_actor(log), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("life", ["a"])
            await h.inc()
            actor_id = await h.resolve()
            await clock.advance(seconds=30)
            assert actor_id not in awake(served)
            log.clear()
            async with aiohttp.ClientSession() as http, http.delete(
                f"{served.url}/actors/{actor_id}?namespace=default"
            ) as resp:
                assert resp.status == 200
            # Woken to run on_destroy, then removed.
            assert log == ["create_vars", "on_wake", "on_destroy"]
            assert served.registry.driver.get_record(actor_id) is None
            with pytest.raises(ActorError) as info:
                await client.get_for_id("life", actor_id).inc()
            assert info.value.code == "not_found"


async def test_state_survives_sleep_and_registry_restart(
    serve_registry: Callable[..., Any], tmp_path: Path
) -> None:
    log: list[str] = []
    clock = FakeClock()
    storage = tmp_path / "restart"
    async with serve_registry(lifecycle_actor(log), clock=clock, storage_path=storage) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("life", ["a"])
            for _ in range(3):
                await h.inc()
            await clock.advance(seconds=30)
            await h.inc()
    async with serve_registry(lifecycle_actor(log), clock=clock, storage_path=storage) as served:
        async with Client(served.url) as client:
            snap = await client.get_or_create("life", ["a"]).snapshot()
            assert snap["n"] == 4 and snap["wakes"] == 3


async def test_sleeping_actor_is_one_compacted_file(
    serve_registry: Callable[..., Any], tmp_path: Path
) -> None:
    a = rivetkit.actor("notes", state={"n": 0})

    @a.on_migrate
    async def migrate(c: ActorContext, is_new: bool) -> None:
        await c.db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")

    @a.action
    async def add(c: ActionContext, body: str) -> int:
        await c.db.execute("INSERT INTO notes (body) VALUES (?)", body)
        c.state["n"] += 1
        return int(c.state["n"])

    @a.action
    async def bodies(c: ActionContext) -> list[str]:
        return [row["body"] for row in await c.db.execute("SELECT body FROM notes ORDER BY id")]

    @a.action
    def nap(c: ActionContext) -> None:
        c.sleep()

    storage = tmp_path / "compact"
    async with serve_registry(a, storage_path=storage) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("notes", ["x"])
            for i in range(20):
                await h.add("x" * 500 + str(i))
            actor_id = await h.resolve()
            path = actor_db_path(storage, actor_id)
            wal = Path(str(path) + "-wal")
            assert wal.stat().st_size > 0  # the writes sit in the log while the actor is awake

            await h.nap()
            await served.registry.driver.wait_stopped(actor_id)
            assert actor_id not in awake(served)
            assert not wal.exists()
            header = path.read_bytes()[:100]
            assert int.from_bytes(header[16:18], "big") == 2048  # page size of new files
            assert path.stat().st_size % 2048 == 0

            assert await h.bodies() == ["x" * 500 + str(i) for i in range(20)]
            assert await h.add("again") == 21


async def test_a_wake_in_the_tick_a_compaction_ends_does_not_spin(
    serve_registry: Callable[..., Any],
) -> None:
    """Regression: a compaction task that is done but not yet removed from the driver's table
    (its clean-up had not run in that loop tick) made a wake await it in a loop that never
    yielded, freezing the server (seen under the schedule benchmark's `nap` variant)."""
    log: list[str] = []
    async with serve_registry(lifecycle_actor(log)) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("life", ["a"])
            await h.inc()
            actor_id = await h.resolve()
            await h.go_to_sleep()
            driver = served.registry.driver
            await driver.wait_stopped(actor_id)
            finished = asyncio.get_running_loop().create_future()
            finished.set_result(None)
            driver._compacting[actor_id] = finished  # the state of that tick
            assert await asyncio.wait_for(h.inc(), 10) == 2
