"""State of every supported type survives a restart; hooks run in RivetKit's order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pydantic
import pytest

import rivetkit
from rivetkit import ActionContext, ActorContext, UserError

pytestmark = pytest.mark.anyio


@dataclass
class Inner:
    label: str = "x"


@dataclass
class DataState:
    count: int = 0
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


class ModelState(pydantic.BaseModel):
    count: int = 0
    tags: list[str] = []


class StructState(msgspec.Struct):
    count: int = 0
    tags: list[str] = []


def typed_actor(name: str, initial: Any) -> rivetkit.ActorDefinition:
    a = rivetkit.actor(name, state=initial)

    @a.action
    def bump(c: ActionContext, tag: str) -> int:
        if isinstance(c.state, dict):
            c.state["count"] += 1
            c.state["tags"].append(tag)
            return c.state["count"]
        c.state.count += 1
        c.state.tags.append(tag)
        return c.state.count

    @a.action
    def read(c: ActionContext) -> Any:
        state = c.state
        if isinstance(state, dict):
            return [type(state).__name__, state["count"], state["tags"]]
        return [type(state).__name__, state.count, state.tags]

    return a


def definitions() -> list[rivetkit.ActorDefinition]:
    return [
        typed_actor("plain", {"count": 0, "tags": []}),
        typed_actor("data", DataState()),
        typed_actor("model", ModelState()),
        typed_actor("struct", StructState()),
    ]


async def act(http: httpx.AsyncClient, url: str, name: str, action: str, *args: Any) -> Any:
    response = await http.post(
        f"{url}/gateway/{name}/action/{action}?rvt-namespace=default&rvt-method=getOrCreate"
        "&rvt-runner=default&rvt-key=k",
        json={"args": list(args)},
    )
    assert response.status_code == 200, response.text
    return response.json()["output"]


@pytest.mark.parametrize(
    ("name", "type_name"),
    [("plain", "dict"), ("data", "DataState"), ("model", "ModelState"), ("struct", "StructState")],
)
async def test_state_types_survive_restart(serve_registry: Any, name: str, type_name: str) -> None:
    async with serve_registry(*definitions()) as served, httpx.AsyncClient() as http:
        assert await act(http, served.url, name, "bump", "a") == 1
        assert await act(http, served.url, name, "bump", "b") == 2
    async with serve_registry(*definitions()) as served, httpx.AsyncClient() as http:
        assert await act(http, served.url, name, "read") == [type_name, 2, ["a", "b"]]


async def test_template_state_is_copied_per_actor(serve_registry: Any) -> None:
    async with serve_registry(*definitions()) as served, httpx.AsyncClient() as http:
        await act(http, served.url, "data", "bump", "only-k")
        other = await http.post(
            f"{served.url}/gateway/data/action/read?rvt-namespace=default&rvt-method=getOrCreate"
            "&rvt-runner=default&rvt-key=other",
            json={"args": []},
        )
        assert other.json()["output"] == ["DataState", 0, []]


async def test_lifecycle_order_input_and_vars(serve_registry: Any, tmp_path: Path) -> None:
    calls: list[str] = []
    a = rivetkit.actor("life")

    @a.create_state
    async def create_state(c: ActorContext, input: Any) -> Any:
        calls.append("create_state")
        await asyncio.sleep(0)
        return {"input": input, "changes": 0}

    @a.on_create
    def on_create(c: ActorContext, input: Any) -> None:
        calls.append("on_create")
        assert c.state["input"] == input

    @a.create_vars
    def create_vars(c: ActorContext) -> Any:
        calls.append("create_vars")
        return {"fresh": True, "wakes": 0}

    @a.on_wake
    def on_wake(c: ActorContext) -> None:
        calls.append("on_wake")
        c.vars["wakes"] += 1

    @a.on_state_change
    def on_state_change(c: ActorContext, new_state: Any) -> None:
        calls.append(f"on_state_change:{new_state['changes']}")

    @a.on_before_action_response
    def before_response(c: ActionContext, name: str, args: list[Any], output: Any) -> Any:
        return {"wrapped": output, "action": name}

    @a.action
    def change(c: ActionContext) -> Any:
        c.state["changes"] += 1
        c.vars["fresh"] = False
        return [c.state["input"], c.vars, c.name, c.key, len(c.actor_id)]

    @a.action
    def fail_after_change(c: ActionContext) -> None:
        c.state["changes"] += 1
        raise UserError("nope", code="after_change")

    query = ("rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=x,y"
             "&rvt-input=oWVzdGFydAU")  # CBOR {"start": 5}
    async with serve_registry(a) as served, httpx.AsyncClient() as http:
        out = await http.post(f"{served.url}/gateway/life/action/change?{query}", json={"args": []})
        assert out.json()["output"] == {
            "wrapped": [{"start": 5}, {"fresh": False, "wakes": 1}, "life", ["x", "y"], 30],
            "action": "change",
        }
        failed = await http.post(
            f"{served.url}/gateway/life/action/fail_after_change?{query}", json={"args": []}
        )
        assert failed.json()["code"] == "after_change"
        assert calls == [
            "create_state", "on_create", "create_vars", "on_wake",
            "on_state_change:1", "on_state_change:2",
        ]
    calls.clear()
    async with serve_registry(a) as served, httpx.AsyncClient() as http:
        out = await http.post(f"{served.url}/gateway/life/action/change?{query}", json={"args": []})
        # Vars are fresh after a restart; the failed action's change was committed (roll-forward).
        assert out.json()["output"]["wrapped"][1] == {"fresh": False, "wakes": 1}
        assert calls == ["create_vars", "on_wake", "on_state_change:3"]


async def test_create_state_failure_is_reported_and_retried(serve_registry: Any) -> None:
    attempts: list[int] = []
    a = rivetkit.actor("flaky")

    @a.create_state
    def create_state(c: ActorContext, input: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise UserError("not yet", code="not_yet")
        return {"ok": True}

    @a.action
    def read(c: ActionContext) -> Any:
        return c.state

    async with serve_registry(a) as served, httpx.AsyncClient() as http:
        url = (f"{served.url}/gateway/flaky/action/read?rvt-namespace=default"
               "&rvt-method=getOrCreate&rvt-runner=default&rvt-key=f")
        first = await http.post(url, json={"args": []})
        assert first.json()["code"] == "not_yet"
        second = await http.post(url, json={"args": []})
        assert second.json() == {"output": {"ok": True}}


async def test_unencodable_state_is_an_error_not_silent(serve_registry: Any) -> None:
    a = rivetkit.actor("bad", state={"v": 1})

    @a.action
    def corrupt(c: ActionContext) -> int:
        c.state["v"] = object()
        return 1

    async with serve_registry(a) as served, httpx.AsyncClient() as http:
        response = await http.post(
            f"{served.url}/gateway/bad/action/corrupt?rvt-namespace=default"
            "&rvt-method=getOrCreate&rvt-runner=default&rvt-key=b",
            json={"args": []},
        )
        assert response.status_code == 500
        assert response.json()["code"] == "internal_error"


async def test_state_save_interval_defers_commits_and_stop_flushes(tmp_path: Path) -> None:
    a = rivetkit.actor(
        "batched", state={"n": 0}, options=rivetkit.ActorOptions(state_save_interval=30.0)
    )

    @a.action
    def inc(c: ActionContext) -> int:
        c.state["n"] += 1
        return c.state["n"]

    registry = rivetkit.setup(a, storage_path=tmp_path)
    async with registry.lifespan():
        record, _ = registry.driver.get_or_create("default", "batched", ("k",), None)
        instance = await registry.driver.instance(record)
        for _ in range(3):
            await instance.call_action("inc", [], None)
        # Answers do not wait for the (30 s) deferred save: nothing is committed yet.
        assert instance.store.load()[2] == instance.codec.encode({"n": 0})
    # Stopping the registry committed the pending state.
    again = rivetkit.setup(a, storage_path=tmp_path)
    async with again.lifespan():
        record = again.driver.lookup("default", "batched", ("k",))
        assert record is not None
        assert (await again.driver.instance(record)).state == {"n": 3}
