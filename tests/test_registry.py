"""Registry.serve(): serving on a real port, and a graceful stop when cancelled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

import rivetkit
from rivetkit import ActionContext
from tests._proc import free_port

pytestmark = pytest.mark.anyio


async def test_serve_and_cancel_commits_state(tmp_path: Path) -> None:
    a = rivetkit.actor("c", state={"n": 0})

    @a.action
    def inc(c: ActionContext) -> int:
        c.state["n"] += 1
        return c.state["n"]

    registry = rivetkit.setup(a, storage_path=tmp_path)
    port = free_port()
    task = asyncio.ensure_future(registry.serve(port=port))
    url = (f"http://127.0.0.1:{port}/gateway/c/action/inc?rvt-namespace=default"
           "&rvt-method=getOrCreate&rvt-runner=default&rvt-key=k")
    async with httpx.AsyncClient() as http:
        for _ in range(500):
            try:
                response = await http.post(url, json={"args": []})
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.01)
        assert response.json() == {"output": 1}
        assert (await http.post(url, json={"args": []})).json() == {"output": 2}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert registry.driver.awake == {}
    # Served again from the same storage, the actor continues where it stopped.
    again = rivetkit.setup(a, storage_path=tmp_path)
    async with again.lifespan():
        record = again.driver.lookup("default", "c", ("k",))
        assert record is not None
        instance = await again.driver.instance(record)
        assert instance.state == {"n": 2}


def test_metadata_and_repr(tmp_path: Path) -> None:
    registry = rivetkit.setup(rivetkit.actor("b"), rivetkit.actor("a"), storage_path=tmp_path)
    assert registry.metadata()["actorNames"] == {"a": {"metadata": {}}, "b": {"metadata": {}}}
    assert "clientEndpoint" not in registry.metadata()
    assert repr(registry) == "<Registry actors=['a', 'b']>"
    assert registry.asgi() is registry.asgi()
