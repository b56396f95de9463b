"""Durable queues, driven end to end by the Python client over loopback (time on the fake clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext, ActorContext
from rivetkit.client import Client, QueueSendResult
from rivetkit.errors import ActorError
from rivetkit.testing import FakeClock

pytestmark = pytest.mark.anyio


def worker(log: list[Any], **options: Any) -> rivetkit.ActorDefinition:
    """Consumes ``jobs`` completably in its run loop; ``other`` is read by actions only."""

    def publish_ok(c: ActionContext) -> bool:
        params = c.conn.params if c.conn is not None else None
        return not (isinstance(params, dict) and params.get("banned"))

    a = rivetkit.actor(
        "worker",
        state={"done": []},
        queues={
            "jobs": rivetkit.queue(dict, complete=int, can_publish=publish_ok),
            "other": rivetkit.queue(),
        },
        options=rivetkit.ActorOptions(**options) if options else None,
    )

    @a.run
    async def run(c: ActorContext) -> None:
        async for message in c.queue.iter(["jobs"], completable=True):
            body = message.body
            log.append((body.get("n"), message.failure_count))
            if body.get("crash") and message.failure_count == 0:
                raise RuntimeError("the handler failed")
            if body.get("nap") and message.failure_count == 0:
                c.sleep()  # asleep before completing: delivered again after the wake
                return
            if body.get("hold"):
                continue  # taken, never completed (until the run handler ends)
            c.state["done"].append(body["n"])
            await message.complete(body["n"] * 10)

    @a.action
    def done(c: ActionContext) -> list[int]:
        return list(c.state["done"])

    @a.action
    async def pull(c: ActionContext, count: int = 10) -> list[Any]:
        messages = await c.queue.try_next_batch(count, ["other"])
        return [m.body for m in messages]

    @a.action
    async def self_send(c: ActionContext, body: Any) -> int:
        message = await c.queue.send("other", body)
        return message.id

    return a


def awake(served: Any) -> set[str]:
    return set(served.registry.driver.awake)


async def test_run_loop_consumes_sends_in_order_and_wait_gets_the_response(
    serve_registry: Callable[..., Any],
) -> None:
    log: list[Any] = []
    async with serve_registry(worker(log)) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            assert await h.send("jobs", {"n": 1}) is None
            assert await h.send("jobs", {"n": 2}) is None
            result = await h.send("jobs", {"n": 3}, wait=True, timeout=5)
            assert result == QueueSendResult("completed", 30)
            assert result.completed
            assert await h.done() == [1, 2, 3]
            assert log == [(1, 0), (2, 0), (3, 0)]


async def test_wait_times_out_on_the_fake_clock(serve_registry: Callable[..., Any]) -> None:
    clock = FakeClock()
    async with serve_registry(worker([]), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            pending = asyncio.ensure_future(h.send("other", "x", wait=True, timeout=2))
            for _ in range(50):
                await asyncio.sleep(0.01)
                if clock.pending:
                    break
            await clock.advance(seconds=1.9)
            assert not pending.done()
            await clock.advance(seconds=0.2)
            assert await pending == QueueSendResult("timedOut")
            # The message stays queued: an action reads it afterwards.
            assert await h.pull() == ["x"]


async def test_actions_receive_batches_and_self_sends(serve_registry: Callable[..., Any]) -> None:
    async with serve_registry(worker([])) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            for i in range(5):
                await h.send("other", {"i": i})
            assert await h.pull(2) == [{"i": 0}, {"i": 1}]
            assert await h.self_send([1, 2]) == 6
            assert await h.pull() == [{"i": 2}, {"i": 3}, {"i": 4}, [1, 2]]
            assert await h.pull() == []


async def test_idle_run_loop_lets_the_actor_sleep_and_a_send_wakes_it(
    serve_registry: Callable[..., Any],
) -> None:
    clock = FakeClock()
    log: list[Any] = []
    async with serve_registry(worker(log), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            assert await h.send("jobs", {"n": 1}, wait=True) == QueueSendResult("completed", 10)
            actor_id = await h.resolve()
            await clock.advance(seconds=30)  # run is blocked on the queue: idle
            assert actor_id not in awake(served)
            assert await h.send("jobs", {"n": 2}, wait=True) == QueueSendResult("completed", 20)
            assert actor_id in awake(served)
            assert await h.done() == [1, 2]
            assert served.registry.driver.get_record(actor_id).generation == 2


async def test_waiting_sender_is_answered_across_a_sleep_of_the_consumer(
    serve_registry: Callable[..., Any],
) -> None:
    clock = FakeClock()
    log: list[Any] = []
    async with serve_registry(worker(log), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            # The consumer takes the message and goes to sleep without completing it; the sender
            # wakes it again, the message is delivered again and its completion answers the sender.
            result = await h.send("jobs", {"n": 7, "nap": True}, wait=True, timeout=60)
            assert result == QueueSendResult("completed", 70)
            assert log == [(7, 0), (7, 1)]
            actor_id = await h.resolve()
            assert served.registry.driver.get_record(actor_id).generation == 2


async def test_failed_handler_gets_the_message_again_with_a_failure_count(
    serve_registry: Callable[..., Any],
) -> None:
    clock = FakeClock()
    log: list[Any] = []
    async with serve_registry(worker(log), clock=clock) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            await h.send("jobs", {"n": 4, "crash": True})
            await h.send("jobs", {"n": 5})
            assert log == [(4, 0)]  # run raised: the actor idles and sleeps
            await clock.advance(seconds=30)
            assert await h.done() == []  # the request wakes it: run starts again
            for _ in range(20):
                await asyncio.sleep(0.01)
                if len(log) == 3:
                    break
            assert log == [(4, 0), (4, 1), (5, 0)]
            assert await h.done() == [4, 5]


async def test_bad_input_gets_clear_errors(serve_registry: Callable[..., Any]) -> None:
    a = worker([], max_queue_size=3, max_queue_message_size=200)
    async with serve_registry(a) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            with pytest.raises(ActorError) as info:
                await h.send("nope", 1)
            assert info.value.full_code == "queue.not_declared"
            with pytest.raises(ActorError) as info:
                await h.send("other", "x" * 300)
            assert info.value.full_code == "queue.message_too_large"
            for i in range(3):
                await h.send("other", i)
            with pytest.raises(ActorError) as info:
                await h.send("other", 3)
            assert info.value.full_code == "queue.full"
            assert await h.pull() == [0, 1, 2]  # nothing lost, nothing extra
            banned = client.get_or_create("worker", ["a"], params={"banned": True})
            with pytest.raises(ActorError) as info:
                await banned.send("jobs", {"n": 1})
            assert info.value.full_code == "auth.forbidden"
            async with h.connect({"banned": True}) as conn:
                with pytest.raises(ActorError) as info:
                    await conn.send("jobs", {"n": 1})
                assert info.value.full_code == "auth.forbidden"
            async with h.connect({"banned": False}) as conn:
                assert await conn.send("jobs", {"n": 9}, wait=True) == QueueSendResult(
                    "completed", 90
                )


async def test_completion_rules(actor_test: Any) -> None:
    a = rivetkit.actor("box", queues={"q": rivetkit.queue()})

    @a.action
    async def scenario(c: ActionContext) -> list[str]:
        seen = []
        await c.queue.send("q", 1)
        await c.queue.send("q", 2)
        plain = await c.queue.next("q", timeout=0)
        assert plain is not None and plain.body == 1
        try:
            await plain.complete()
        except rivetkit.RivetError as exc:
            seen.append(f"{exc.group}.{exc.code}")
        message = await c.queue.next("q", completable=True)
        assert message is not None and message.body == 2
        try:
            await c.queue.try_next("q")
        except rivetkit.RivetError as exc:
            seen.append(f"{exc.group}.{exc.code}")
        await message.complete("ok")
        try:
            await message.complete("again")
        except rivetkit.RivetError as exc:
            seen.append(f"{exc.group}.{exc.code}")
        assert await c.queue.next("q", timeout=0) is None
        return seen

    async with actor_test(a) as t:
        assert await t.client.get_or_create("box", ["x"]).scenario() == [
            "queue.complete_not_configured",
            "queue.previous_message_not_completed",
            "queue.already_completed",
        ]


async def test_queue_survives_restart(serve_registry: Callable[..., Any], tmp_path: Path) -> None:
    storage = tmp_path / "restart"
    async with serve_registry(worker([]), storage_path=storage) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            for i in range(3):
                await h.send("other", i)
            assert await h.pull(1) == [0]
    async with serve_registry(worker([]), storage_path=storage) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            await h.send("other", 3)
            assert await h.pull() == [1, 2, 3]


async def test_sync_client_sends(serve_registry: Callable[..., Any]) -> None:
    from rivetkit.client import sync

    async with serve_registry(worker([])) as served:

        def drive() -> list[Any]:
            with sync.Client(served.url) as client:
                h = client.get_or_create("worker", ["s"])
                out: list[Any] = [h.send("jobs", {"n": 1}), h.send("jobs", {"n": 2}, wait=True)]
                with h.connect() as conn:
                    out.append(conn.send("jobs", {"n": 3}, wait=True, timeout=5))
                out.append(h.done())
                return out

        assert await asyncio.to_thread(drive) == [
            None,
            QueueSendResult("completed", 20),
            QueueSendResult("completed", 30),
            [1, 2, 3],
        ]


async def test_sends_of_one_tick_keep_their_order(actor_test: Any) -> None:
    # Sends made in the same event-loop tick share one commit; their ids and the order in
    # which they are received are still the order of the sends.
    a = rivetkit.actor("box", queues={"q": rivetkit.queue()})

    @a.action
    async def scenario(c: ActionContext, n: int) -> list[Any]:
        sent = await asyncio.gather(*(c.queue.send("q", i) for i in range(n)))
        received = await c.queue.try_next_batch(n + 1, "q")
        return [[m.id for m in sent], [m.id for m in received], [m.body for m in received]]

    async with actor_test(a) as t:
        ids, received_ids, bodies = await t.client.get_or_create("box", ["x"]).scenario(50)
        assert ids == sorted(ids) and len(set(ids)) == 50
        assert received_ids == ids
        assert bodies == list(range(50))


async def test_a_send_cancelled_before_its_commit_is_not_stored(actor_test: Any) -> None:
    a = rivetkit.actor("box", queues={"q": rivetkit.queue()})

    @a.action
    async def scenario(c: ActionContext) -> list[Any]:
        cancelled = asyncio.ensure_future(c.queue.send("q", "cancelled"))
        kept = asyncio.ensure_future(c.queue.send("q", "kept"))
        await asyncio.sleep(0)  # both are staged; the commit comes after this task's turn
        cancelled.cancel()
        await kept
        try:
            await cancelled
        except asyncio.CancelledError:
            pass
        return [m.body for m in await c.queue.try_next_batch(10, "q")]

    async with actor_test(a) as t:
        assert await t.client.get_or_create("box", ["x"]).scenario() == ["kept"]


async def test_a_send_inside_a_db_transaction_commits_with_it(actor_test: Any) -> None:
    # The transactional outbox: a message sent inside c.db.transaction() is stored if and only
    # if the transaction commits. A send staged just before the transaction took the database
    # is committed after it, and stays ahead of the messages sent inside it.
    a = rivetkit.actor("box", queues={"q": rivetkit.queue()})

    @a.action
    async def scenario(c: ActionContext) -> list[Any]:
        await c.db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
        try:
            async with c.db.transaction() as tx:
                await tx.execute("INSERT INTO orders (id) VALUES (1)")
                await c.queue.send("q", "rolled back")
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        staged = asyncio.ensure_future(c.queue.send("q", "staged before"))
        await asyncio.sleep(0)  # staged; its commit would come after this task's turn
        async with c.db.transaction() as tx:
            await tx.execute("INSERT INTO orders (id) VALUES (2)")
            await c.queue.send("q", "inside")
            seen_inside = [m.body for m in await c.queue.try_next_batch(10, "q")]
            await asyncio.sleep(0)  # the end of the tick comes while the block holds the file
        await staged
        orders = await c.db.execute("SELECT id FROM orders")
        bodies = [m.body for m in await c.queue.try_next_batch(10, "q")]
        return [[row["id"] for row in orders], seen_inside, bodies]

    async with actor_test(a) as t:
        assert await t.client.get_or_create("box", ["x"]).scenario() == [
            [2],
            [],  # "inside" waits behind the staged message it was sent after
            ["staged before", "inside"],
        ]


async def test_delivery_counts_do_not_pile_up_in_the_file(
    serve_registry: Callable[..., Any], tmp_path: Path
) -> None:
    import apsw

    from rivetkit._runtime.storage import actor_db_path

    storage = tmp_path / "piles"
    async with serve_registry(worker([]), storage_path=storage) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("worker", ["a"])
            for n in range(30):
                await h.send("jobs", {"n": n}, wait=True)
            assert await h.done() == list(range(30))
            actor_id = await h.resolve()
    conn = apsw.Connection(str(actor_db_path(storage, actor_id)))
    try:
        rows = conn.execute("SELECT id, attempts FROM _rivet_queue_deliveries").fetchall()
        (messages,) = conn.execute("SELECT COUNT(*) FROM _rivet_queue").fetchone() or (None,)
    finally:
        conn.close()
    # The last completed message's row waits for the next delivery (or the next load).
    assert messages == 0 and len(rows) <= 1, rows


async def test_queue_sends_run_the_connection_hooks_of_an_actor_that_has_them(
    serve_registry: Callable[..., Any],
) -> None:
    calls: list[Any] = []
    a = rivetkit.actor("gated", queues={"q": rivetkit.queue()})

    @a.on_before_connect
    def check(c: ActionContext, params: Any) -> None:
        calls.append(("before", params))
        if params == "deny":
            raise rivetkit.UserError("not allowed", code="denied")

    @a.on_disconnect
    def gone(c: ActionContext, conn: rivetkit.Conn) -> None:
        calls.append(("disconnect", conn.params))

    @a.action
    async def pull(c: ActionContext) -> list[Any]:
        return [m.body for m in await c.queue.try_next_batch(10, "q")]

    async with serve_registry(a) as served:
        async with Client(served.url) as client:
            await client.get_or_create("gated", ["a"], params="ok").send("q", 1)
            with pytest.raises(ActorError) as info:
                await client.get_or_create("gated", ["a"], params="deny").send("q", 2)
            assert info.value.code == "denied"
            assert await client.get_or_create("gated", ["a"]).pull() == [1]
    assert calls[:3] == [("before", "ok"), ("disconnect", "ok"), ("before", "deny")]


async def test_a_delivery_count_never_attaches_to_a_message_that_reused_its_id(
    serve_registry: Callable[..., Any], tmp_path: Path
) -> None:
    # The delivery row of a completed message outlives it (it goes with the next delivery) and
    # keeps its id from being reused here. The official runtime does not know that table: if it
    # reused the id, the row predates the new message and must not count as its delivery.
    import apsw

    from rivetkit._protocol.cbor import cbor_dumps_compat
    from rivetkit._runtime.storage import actor_db_path

    a = rivetkit.actor("box", queues={"q": rivetkit.queue()})

    @a.action
    async def take(c: ActionContext) -> list[Any]:
        message = await c.queue.next("q", completable=True, timeout=0)
        assert message is not None
        await message.complete()
        return [message.id, message.body, message.failure_count]

    storage = tmp_path / "reuse"
    async with serve_registry(a, storage_path=storage) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("box", ["a"])
            await h.send("q", "first")
            assert await h.take() == [1, "first", 0]
            actor_id = await h.resolve()
    conn = apsw.Connection(str(actor_db_path(storage, actor_id)))
    try:
        (delivered_at,) = conn.execute(
            "SELECT last_delivered_at FROM _rivet_queue_deliveries WHERE id = 1"
        ).fetchone() or (None,)
        assert delivered_at is not None
        with conn:  # what another runtime, reading max(queue_next_id, max(id) + 1), would do
            conn.execute(
                "INSERT INTO _rivet_queue (id, name, body, created_at) VALUES (1, 'q', ?, ?)",
                (cbor_dumps_compat("second"), delivered_at + 1),
            )
            conn.execute("UPDATE _rivet_runtime SET queue_next_id = 2 WHERE id = 1")
    finally:
        conn.close()
    async with serve_registry(a, storage_path=storage) as served:
        async with Client(served.url) as client:
            h = client.get_or_create("box", ["a"])
            assert await h.take() == [1, "second", 0]
            await h.send("q", "third")
            assert await h.take() == [2, "third", 0]
