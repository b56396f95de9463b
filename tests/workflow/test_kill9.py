"""Workflows survive ``kill -9`` of a real server process: after a restart they resume where they
stopped, and no completed step runs twice (a log file outside the process counts them)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from rivetkit.client import Client
from tests._proc import start_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

APP = str(Path(__file__).resolve().parent / "order_app.py")


def lines(log: Path, key: str) -> list[str]:
    if not log.exists():
        return []
    return [
        line.split(" ", 1)[1] for line in log.read_text().splitlines() if line.startswith(f"{key} ")
    ]


async def wait_for(log: Path, key: str, label: str, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = lines(log, key)
        if label in found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{label!r} never appeared for {key}: {lines(log, key)}")


async def test_order_workflow_resumes_after_kill_9_without_repeating_steps(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "data"
    log = tmp_path / "effects.log"
    env = {**os.environ, "WORKFLOW_LOG": str(log)}

    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            await client.get_or_create("order", ["o1"]).send(
                "orders", {"item": "book", "amount": 12}
            )
            await wait_for(log, "o1", "charge 12")
        server.kill()  # SIGKILL while the workflow waits for the "ship" message
    assert lines(log, "o1") == ["reserve book", "charge 12"]

    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            handle = client.get_or_create("order", ["o1"])
            await handle.send("ship", {"carrier": "post"})  # wakes it; it replays, then ships
            await wait_for(log, "o1", "ship post")
        server.kill()  # SIGKILL during the durable one-second "cool-off" sleep
    assert lines(log, "o1") == ["reserve book", "charge 12", "ship post"]

    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        # No request: the missed "cool-off" alarm wakes the actor at startup.
        found = await wait_for(log, "o1", "notify")
        assert found == ["reserve book", "charge 12", "ship post", "notify"]
        async with Client(server.url) as client:
            steps = await client.get_or_create("order", ["o1"]).steps()
        assert steps == found  # the state changes of the steps were committed with them


async def test_workflow_killed_mid_step_resumes_by_itself_after_restart(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    log = tmp_path / "effects.log"
    env = {**os.environ, "WORKFLOW_LOG": str(log), "SLOW_STEP_SECONDS": "1.5"}

    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            await client.get_or_create("batch", ["b1"]).start()
            await wait_for(log, "b1", "two-start")
        server.kill()  # SIGKILL in the middle of step "two"
    assert lines(log, "b1") == ["one", "two-start"]

    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        # No request either: a running workflow keeps an alarm "now", so it is resumed.
        found = await wait_for(log, "b1", "three")
    # "one" completed before the kill: not repeated. "two" was interrupted: it runs again
    # (steps are at least once when the process dies inside them).
    assert Counter(found) == {"one": 1, "two-start": 2, "two-end": 1, "three": 1}


async def test_queue_wait_commits_the_history_before_it(tmp_path: Path) -> None:
    # The transaction that takes a message from the queue also writes the history entries still
    # waiting for a commit before it (an ephemeral step, a checkpoint): without them, the
    # recorded message would sit at the wrong position after a crash and the replay diverge.
    storage = tmp_path / "data"
    log = tmp_path / "effects.log"
    env = {**os.environ, "WORKFLOW_LOG": str(log), "SLOW_STEP_SECONDS": "30"}

    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            await client.get_or_create("inbox", ["i1"]).send("mail", {"text": "hi"})
            await wait_for(log, "i1", "read-start hi")
        server.kill()  # SIGKILL inside step "read", after the queue wait committed
    assert lines(log, "i1") == ["hello", "read-start hi"]

    env["SLOW_STEP_SECONDS"] = "0"
    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        found = await wait_for(log, "i1", "read-end hi")  # resumes by itself (run alarm)
    # "hello" was committed with the message, so it is not run again; "read" is.
    assert found == ["hello", "read-start hi", "read-start hi", "read-end hi"]
