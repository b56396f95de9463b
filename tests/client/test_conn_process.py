"""Reconnection across a real server process that is killed (SIGKILL) and started again on the
same port and storage: state, subscriptions and actions made while it was down survive."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rivetkit.client import ActorError, Client, ConnStatus
from rivetkit.client import sync as sync_client
from tests._proc import free_port, start_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

APP = str(Path(__file__).with_name("realtime_app.py"))


def fast(client: Client) -> Client:
    client._retry_delay = 0.0
    client._request_retry_delay = (0.0, 0.0)
    client._metadata_retry_delay = (0.0, 0.0)
    client._reconnect_delay = (0.01, 0.1)
    return client


async def until(predicate: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("encoding", ["json", "bare"])
async def test_reconnect_after_kill_9(tmp_path: Path, encoding: Any) -> None:
    storage = tmp_path / "data"
    port = free_port()
    server = start_server(APP, storage=storage, port=port)
    try:
        await asyncio.to_thread(server.wait_ready, 30)
        async with fast(Client(server.url, encoding=encoding)) as client:
            handle = client.get_or_create("chat", ["kill-9"])
            async with handle.connect({"name": "bob"}) as conn:
                seen: list[str] = []
                conn.on_status_change(lambda status: seen.append(str(status)))
                counts: list[int] = []
                conn.on("count", counts.append)
                messages: list[Any] = []
                conn.on("message", messages.append)
                assert await conn.increment(5) == 5
                assert await conn.post("before") == 1
                first_connection = conn.connection_id
                in_flight = asyncio.ensure_future(conn.hang())
                await until(lambda: len(conn._proto.in_flight) == 1)

                server.kill()  # no close frame: the client sees 1006
                with pytest.raises(ActorError) as lost:
                    await asyncio.wait_for(in_flight, 20)
                assert lost.value.full_code == "client.connection_lost"
                await until(lambda: conn.status is not ConnStatus.CONNECTED)
                queued = [
                    asyncio.ensure_future(conn.increment(1)),
                    asyncio.ensure_future(conn.post("while down")),
                ]
                # a few attempts fail against the dead port
                await until(lambda: seen.count("connecting") >= 3)
                assert not any(f.done() for f in queued)
                assert conn.status in (ConnStatus.CONNECTING, ConnStatus.DISCONNECTED)

                server = start_server(APP, storage=storage, port=port)
                await asyncio.to_thread(server.wait_ready, 30)
                assert await asyncio.wait_for(asyncio.gather(*queued), 20) == [6, 2]
                assert str(conn.status) == "connected"
                assert conn.connection_id != first_connection
                # state survived the kill; the subscriptions came back before the queued actions
                assert await conn.messages() == ["before", "while down"]
                await until(lambda: counts == [5, 6])
                await until(lambda: [m["text"] for m in messages] == ["before", "while down"])
                assert await conn.params() == {"name": "bob"}
                assert seen[:2] == ["connected", "disconnected"]
                assert seen[-1] == "connected"
                assert "idle" not in seen
    finally:
        server.stop()


def test_sync_reconnect_after_kill_9(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    port = free_port()
    server = start_server(APP, storage=storage, port=port)
    try:
        server.wait_ready(30)
        with sync_client.Client(server.url) as client:
            fast(client._client)
            handle = client.get_or_create("chat", ["sync-kill-9"])
            with handle.connect() as conn:
                counts: list[int] = []
                got = threading.Event()

                def on_count(count: int) -> None:
                    counts.append(count)
                    if count == 3:
                        got.set()

                conn.on("count", on_count)
                assert conn.increment(2) == 2
                server.kill()
                deadline = time.monotonic() + 20
                while conn.status is ConnStatus.CONNECTED and time.monotonic() < deadline:
                    time.sleep(0.005)
                server = start_server(APP, storage=storage, port=port)
                server.wait_ready(30)
                assert conn.increment(1) == 3  # queued until the reconnect
                assert got.wait(20)
                assert counts == [2, 3]
                assert conn.status is ConnStatus.CONNECTED
    finally:
        server.stop()
