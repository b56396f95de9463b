"""The engine-compatible management API: /actors, /actors/names, /metadata, /health."""

from __future__ import annotations

import base64
from typing import Any

import cbor2
import httpx
import pytest

import rivetkit
from rivetkit import ActionContext, ActorContext

pytestmark = pytest.mark.anyio


def make_actor() -> rivetkit.ActorDefinition:
    a = rivetkit.actor("counter")

    @a.create_state
    def create_state(c: ActorContext, input: Any) -> Any:
        return {"count": (input or {}).get("start", 0)}

    @a.action(name="getCount")
    def get_count(c: ActionContext) -> int:
        return c.state["count"]

    return a


async def test_create_get_resolve_destroy(serve_registry: Any) -> None:
    async with serve_registry(make_actor()) as served, httpx.AsyncClient(base_url=served.url) as http:
        meta = await http.get("/metadata", params={"namespace": "default"})
        assert meta.json()["actorNames"] == {"counter": {"metadata": {}}}
        assert "clientEndpoint" not in meta.json()
        assert (await http.get("/health")).json()["status"] == "ok"

        body = {
            "name": "counter",
            "runner_name_selector": "default",
            "key": "c-x/second",
            "input": base64.b64encode(cbor2.dumps({"start": 10})).decode(),
            "crash_policy": "sleep",
        }
        created = await http.post("/actors?namespace=default", json=body)
        assert created.status_code == 200
        actor = created.json()["actor"]
        assert actor["name"] == "counter" and actor["key"] == "c-x/second"
        assert isinstance(actor["create_ts"], int) and actor["destroy_ts"] is None
        actor_id = actor["actor_id"]
        assert len(actor_id) == 30 and actor_id.isalnum()

        got = await http.post(f"/gateway/{actor_id}/action/getCount", json={"args": []})
        assert got.json() == {"output": 10}
        # The query form addresses the same actor: key ["c-x", "second"].
        by_query = await http.post(
            "/gateway/counter/action/getCount?rvt-namespace=default&rvt-method=get"
            "&rvt-key=c-x,second",
            json={"args": []},
        )
        assert by_query.headers["x-rivet-actor"] == actor_id

        duplicate = await http.post("/actors?namespace=default", json=body)
        assert duplicate.status_code == 400
        assert duplicate.json()["code"] == "duplicate_key"
        assert duplicate.json()["metadata"] == {"existing_actor_id": actor_id, "key": "c-x/second"}

        put = await http.put("/actors?namespace=default", json=body)
        assert put.json()["created"] is False and put.json()["actor"]["actor_id"] == actor_id
        put_new = await http.put("/actors?namespace=default", json={**body, "key": "\\0/e"})
        assert put_new.json()["created"] is True
        assert put_new.json()["actor"]["key"] == "\\0/e"

        listed = await http.get("/actors", params={"namespace": "default", "name": "counter",
                                                   "key": "c-x/second"})
        assert [a["actor_id"] for a in listed.json()["actors"]] == [actor_id]
        none = await http.get("/actors", params={"name": "counter", "key": "missing"})
        assert none.json()["actors"] == []
        by_ids = await http.get("/actors", params={"actor_ids": f"{actor_id},nope"})
        assert [a["actor_id"] for a in by_ids.json()["actors"]] == [actor_id]
        by_name = await http.get("/actors", params={"name": "counter"})
        assert len(by_name.json()["actors"]) == 2
        invalid = await http.get("/actors")
        assert invalid.status_code == 400 and invalid.json()["code"] == "invalid_input"

        names = await http.get("/actors/names?namespace=default")
        assert names.json()["names"] == {"counter": {"metadata": {}}}

        deleted = await http.delete(f"/actors/{actor_id}?namespace=default")
        assert deleted.status_code == 200 and deleted.json() == {}
        gone = await http.post(f"/gateway/{actor_id}/action/getCount", json={"args": []})
        assert gone.status_code == 404 and gone.json()["code"] == "not_found"
        again = await http.delete(f"/actors/{actor_id}")
        assert again.status_code == 404
        # The key can be created again as a new actor.
        recreated = await http.post("/actors", json=body)
        assert recreated.status_code == 200
        assert recreated.json()["actor"]["actor_id"] != actor_id


async def test_bad_management_requests(serve_registry: Any) -> None:
    async with serve_registry(make_actor()) as served, httpx.AsyncClient(base_url=served.url) as http:
        cases = [
            ({"key": "a"}, "invalid_input"),
            ({"name": "counter", "key": 5}, "invalid_input"),
            ({"name": "counter", "key": "a", "input": "%%%"}, "invalid_input"),
            ({"name": "counter", "key": "a", "input": base64.b64encode(b"\xff").decode()},
             "invalid_input"),
            ({"name": "nobody", "key": "a"}, "name_not_found"),
            ({"name": "counter", "key": "x" * 200}, "key_too_large"),
        ]
        for body, code in cases:
            response = await http.post("/actors", json=body)
            assert response.status_code in (400, 404), body
            assert response.json()["code"] == code, body
        not_json = await http.post("/actors", content=b"{oops")
        assert not_json.status_code == 400
        namespace = await http.post("/actors?namespace=elsewhere", json={"name": "counter"})
        assert namespace.json()["group"] == "namespace"
        unknown = await http.get("/nothing-here")
        assert unknown.status_code == 404 and unknown.headers["x-rivet-error"] == "guard.route_not_found"


async def test_input_size_limit(serve_registry: Any) -> None:
    async with serve_registry(make_actor(), max_input_size=64) as served, \
            httpx.AsyncClient(base_url=served.url) as http:
        big = cbor2.dumps({"start": "x" * 100})
        response = await http.post("/actors", json={
            "name": "counter", "key": "big", "input": base64.b64encode(big).decode()})
        assert response.status_code == 400
        assert response.json()["code"] == "input_too_large"
        assert response.json()["metadata"] == {"max_size": 64}
        query = base64.urlsafe_b64encode(big).rstrip(b"=").decode()
        via_gateway = await http.post(
            "/gateway/counter/action/getCount?rvt-namespace=default&rvt-method=getOrCreate"
            f"&rvt-runner=default&rvt-key=big&rvt-input={query}",
            json={"args": []},
        )
        assert via_gateway.status_code == 400
        assert via_gateway.json()["code"] == "input_too_large"
        small = base64.b64encode(cbor2.dumps({"start": 3})).decode()
        ok = await http.post("/actors", json={"name": "counter", "key": "small", "input": small})
        assert ok.status_code == 200
