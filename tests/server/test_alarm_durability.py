"""Schedules and cron survive ``kill -9``: alarms missed while the server was down fire when it
comes back, on their own (no request wakes the actor; the firing is seen in a file)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from rivetkit.client import Client
from tests._proc import start_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

APP = str(Path(__file__).resolve().parent / "alarm_app.py")


def lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


async def wait_for_lines(log: Path, count: int, timeout: float = 15.0) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = lines(log)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} alarm lines, got {lines(log)}")


async def test_missed_schedules_fire_after_kill_9_and_restart(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    log = tmp_path / "alarms.log"
    env = {**os.environ, "ALARM_LOG": str(log)}
    keys = ["a", "b", "c"]
    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            for key in keys:
                await client.get_or_create("alarm", [key]).ring_in(1.0, f"soon-{key}")
            await client.get_or_create("alarm", ["far"]).ring_in(3600, "far")
        server.kill()  # SIGKILL: nothing fired yet, nothing flushed at shutdown
    assert lines(log) == []
    await asyncio.sleep(1.2)  # the alarms fall due while the server is down
    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        found = await wait_for_lines(log, len(keys))
        assert sorted(f[:2] for f in found) == [[k, f"soon-{k}"] for k in keys]
        await asyncio.sleep(0.3)
        assert len(lines(log)) == len(keys)  # each fired once; the far one did not
        async with Client(server.url) as client:
            for key in keys:
                assert await client.get_or_create("alarm", [key]).rings() == [f"soon-{key}"]
            assert await client.get_or_create("alarm", ["far"]).rings() == []


async def test_cron_job_survives_kill_9_and_its_missed_run_fires_at_restart(
    tmp_path: Path,
) -> None:
    storage = tmp_path / "data"
    log = tmp_path / "alarms.log"
    env = {**os.environ, "ALARM_LOG": str(log)}
    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        async with Client(server.url) as client:
            await client.get_or_create("alarm", ["cron"]).every("tick", 5.0)
        server.kill()
    await asyncio.sleep(5.2)
    with start_server(APP, storage=storage, env=env) as server:
        server.wait_ready(30)
        found = await wait_for_lines(log, 1)
        assert found[0][:2] == ["cron", "tick"]
        async with Client(server.url) as client:
            assert await client.get_or_create("alarm", ["cron"]).jobs() == ["tick"]
