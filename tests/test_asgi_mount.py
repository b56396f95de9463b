"""The registry mounted under a path prefix in FastAPI and Starlette, with their lifespans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import rivetkit
from rivetkit import ActionContext
from tests.conftest import serve

pytestmark = pytest.mark.anyio


async def test_fastapi_example_under_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVETKIT_STORAGE_PATH", str(tmp_path / "todos"))
    import importlib

    import examples.todos as todos

    todos = importlib.reload(todos)
    async with serve(todos.app) as served, httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.get("/hello")).json() == {"hello": "world"}
        assert (await http.get("/api/rivet/metadata")).json()["actorNames"] == {
            "todoList": {"metadata": {}}
        }
        base = ("/api/rivet/gateway/todoList/action/{}?rvt-namespace=default"
                "&rvt-method=getOrCreate&rvt-runner=default&rvt-key=alice"
                "&rvt-input=oWVvd25lcmVBbGljZQ")  # CBOR {"owner": "Alice"}
        added = await http.post(base.format("add"), json={"args": ["buy milk"]})
        assert added.json() == {"output": {"id": 1, "text": "buy milk", "done": False}}
        empty = await http.post(base.format("add"), json={"args": ["  "]})
        assert empty.json()["code"] == "empty_text"
        listed = await http.post(base.format("items"), json={"args": []},
                                 headers={"x-rivet-conn-params": '{"viewer":"bob"}'})
        output = listed.json()["output"]
        assert output["owner"] == "Alice" and output["viewer"] == "bob"
        assert output["items"] == [{"id": 1, "text": "buy milk", "done": False}]
        missing = await http.post(base.format("toggle"), json={"args": [9]})
        assert missing.json()["code"] == "not_found" and missing.json()["metadata"] == {"id": 9}
        no_owner = await http.post(
            "/api/rivet/gateway/todoList/action/items?rvt-namespace=default"
            "&rvt-method=getOrCreate&rvt-runner=default&rvt-key=nobody",
            json={"args": []},
        )
        assert no_owner.json()["code"] == "owner_required"


async def test_starlette_mount_and_lifespan(tmp_path: Path) -> None:
    a = rivetkit.actor("counter", state={"count": 0})

    @a.action
    def increment(c: ActionContext, n: int) -> int:
        c.state["count"] += n
        return c.state["count"]

    registry = rivetkit.setup(a, storage_path=tmp_path / "s")

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    app = Starlette(
        routes=[Route("/", home), Mount("/api/rivet", registry.asgi())],
        lifespan=registry.lifespan,
    )
    async with serve(app) as served, httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.get("/")).text == "home"
        url = ("/api/rivet/gateway/counter/action/increment?rvt-namespace=default"
               "&rvt-method=getOrCreate&rvt-runner=default&rvt-key=k")
        assert (await http.post(url, json={"args": [2]})).json() == {"output": 2}
        assert (await http.post(url, json={"args": [3]})).json() == {"output": 5}
    # The host app's lifespan stopped the registry, committing and closing storage.
    assert not registry.driver.awake
    assert (tmp_path / "s" / "registry.db").exists()
