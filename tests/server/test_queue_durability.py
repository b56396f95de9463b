"""Queues survive ``kill -9``: a completable message whose consumer died mid-message is delivered
again after the restart, with its failure count; messages behind it are kept in order."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from rivetkit.client import Client
from tests._proc import start_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

APP = str(Path(__file__).resolve().parent / "queue_app.py")


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


async def wait_for_lines(log: Path, count: int, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(lines(log)) >= count:
            return lines(log)
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} lines, got {lines(log)}")


async def test_message_of_a_killed_consumer_is_delivered_again(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    log = tmp_path / "queue.log"
    env = {**os.environ, "QUEUE_LOG": str(log)}
    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            h = client.get_or_create("consumer", ["k"])
            await h.send("jobs", {"n": 1})
            await h.send("jobs", {"n": 2, "stall": True})
            await h.send("jobs", {"n": 3})
            assert await wait_for_lines(log, 2) == ["1 0", "2 0"]
            assert await h.done() == [1]
        server.kill()  # SIGKILL while message 2 is being processed
    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            h = client.get_or_create("consumer", ["k"])
            assert await h.done() == [1]  # wakes the actor: its run loop starts again
            assert await wait_for_lines(log, 4) == ["1 0", "2 0", "2 1", "3 0"]
            for _ in range(100):
                if await h.done() == [1, 2, 3]:
                    break
                await asyncio.sleep(0.05)
            assert await h.done() == [1, 2, 3]


async def test_acknowledged_concurrent_sends_survive_kill_9(tmp_path: Path) -> None:
    # Sends arriving together are committed together (one transaction per event-loop tick);
    # each is answered only after that commit, so every answered send survives kill -9.
    storage = tmp_path / "data"
    senders, per_sender = 32, 8
    with start_server(APP, storage=storage) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            h = client.get_or_create("box", ["k"])
            await h.drain()  # awake

            async def sender(s: int) -> None:
                for n in range(per_sender):
                    await h.send("jobs", {"s": s, "n": n})

            await asyncio.gather(*(sender(s) for s in range(senders)))
        server.kill()
    with start_server(APP, storage=storage) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            drained = await client.get_or_create("box", ["k"]).drain()
    ids = [message_id for message_id, _ in drained]
    assert ids == sorted(ids) and len(set(ids)) == senders * per_sender
    for s in range(senders):  # every answered send is there, in each sender's order
        assert [body["n"] for _, body in drained if body["s"] == s] == list(range(per_sender))


async def test_ids_are_not_reused_after_kill_9_of_an_emptied_queue(tmp_path: Path) -> None:
    # The newest id must survive a crash although the per-send queue_next_id write is gone:
    # its row, its delivery row or queue_next_id keeps it (docs/queues.md, "Cost").
    storage = tmp_path / "data"
    seen: list[int] = []
    for completable in (True, False):
        with start_server(APP, storage=storage) as server:
            server.wait_ready(30)
            async with Client(server.url) as client:
                h = client.get_or_create("box", ["k"])
                await h.send("jobs", {"c": completable})
                await h.send("jobs", {"c": completable})
                drained = await h.drain(completable)
                assert [body for _, body in drained] == [{"c": completable}] * 2
                seen.extend(message_id for message_id, _ in drained)
                assert await h.drain() == []  # the queue is empty when the process dies
            server.kill()
    with start_server(APP, storage=storage) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            h = client.get_or_create("box", ["k"])
            await h.send("jobs", "after")
            [[message_id, body]] = await h.drain()
    assert body == "after"
    assert seen == sorted(set(seen)) and message_id > seen[-1], (seen, message_id)
