"""Inspector HTTP endpoints (client-protocol §12) over a real loopback server: bearer-token auth,
``/inspector/queue``, ``/inspector/workflow-history``, ``/inspector/workflow/replay``, the
summary/state/rpcs/connections views and the JSON error envelopes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

import rivetkit
from rivetkit import ActionContext, ActorContext
from rivetkit._server.inspector import INSPECTOR_DISABLE_ENV, INSPECTOR_TOKEN_ENV
from rivetkit.client import Client
from rivetkit.testing import FakeClock

pytestmark = pytest.mark.anyio

START_MS = 1_700_000_000_000
UNAUTHORIZED = {
    "group": "inspector",
    "code": "unauthorized",
    "message": "Inspector request requires a valid bearer token",
    "metadata": None,
}
NOT_FOUND = {
    "group": "actor",
    "code": "not_found",
    "message": "Inspector route was not found",
    "metadata": None,
}
NO_WORKFLOW = {"history": None, "workflowState": None, "isWorkflowEnabled": False}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell must not decide what these tests see.
    monkeypatch.delenv(INSPECTOR_TOKEN_ENV, raising=False)
    monkeypatch.delenv(INSPECTOR_DISABLE_ENV, raising=False)


def inspected() -> rivetkit.ActorDefinition:
    """Queues nobody consumes by themselves (``pull`` takes from ``jobs`` on demand)."""
    a = rivetkit.actor(
        "inspected",
        state={"count": 3, "raw": b"\x01"},
        queues={"jobs": rivetkit.queue(dict), "other": rivetkit.queue()},
        conn_state={"n": 0},
        options=rivetkit.ActorOptions(max_queue_size=50),
    )

    @a.action
    async def pull(c: ActionContext, count: int) -> list[Any]:
        return [m.body for m in await c.queue.try_next_batch(count, ["jobs"])]

    @a.action
    def bump(c: ActionContext) -> int:
        c.state["count"] += 1
        return int(c.state["count"])

    @a.action(name="zeta")
    def zeta(c: ActionContext) -> None:
        pass

    return a


def stateless() -> rivetkit.ActorDefinition:
    a = rivetkit.actor("stateless")

    @a.action
    def ping(c: ActorContext) -> str:
        return "pong"

    return a


class Inspector:
    """Requests to one actor's inspector routes, with its stored token."""

    def __init__(self, served: Any, http: httpx.AsyncClient, actor_id: str, token: str) -> None:
        self.served = served
        self.http = http
        self.actor_id = actor_id
        self.token = token

    def url(self, path: str, query: str = "") -> str:
        # The direct gateway form, as the dashboard addresses an actor it knows by id.
        return f"{self.served.url}/gateway/{self.actor_id}{path}" + (f"?{query}" if query else "")

    async def get(
        self, path: str, query: str = "", *, token: str | None = None, **headers: str
    ) -> httpx.Response:
        auth = {"authorization": f"Bearer {self.token if token is None else token}"}
        return await self.http.get(self.url(path, query), headers={**auth, **headers})

    async def post(
        self, path: str, body: Any = None, *, content: bytes | None = None, token: str | None = None
    ) -> httpx.Response:
        auth = {"authorization": f"Bearer {self.token if token is None else token}"}
        if content is not None:
            return await self.http.post(self.url(path), headers=auth, content=content)
        return await self.http.post(self.url(path), headers=auth, json=body)


def stored_token(served: Any, actor_id: str) -> str:
    instance = served.registry.driver.awake[actor_id]
    row = instance.store.conn.execute(
        "SELECT inspector_token FROM _rivet_runtime WHERE id = 1"
    ).fetchone()
    assert row is not None and isinstance(row[0], str)
    return str(row[0])


@asynccontextmanager
async def inspector_for(
    serve_registry: Callable[..., Any], name: str = "inspected", **config: Any
) -> AsyncIterator[tuple[Inspector, Any]]:
    """Serve the test actors, wake ``name`` with key ``a``; yield its inspector and handle."""
    async with (
        serve_registry(inspected(), stateless(), **config) as served,
        Client(served.url) as client,
        httpx.AsyncClient(timeout=10) as http,
    ):
        handle = client.get_or_create(name, ["a"])
        actor_id = await handle.resolve()
        await handle.action("bump" if name == "inspected" else "ping")  # awake
        yield Inspector(served, http, actor_id, stored_token(served, actor_id)), handle


# -- auth ------------------------------------------------------------------------------------


async def test_requests_without_a_valid_bearer_token_get_401(
    serve_registry: Callable[..., Any],
) -> None:
    async with inspector_for(serve_registry) as (ins, _):
        assert len(ins.token) == 43  # 32 random bytes, base64url without padding
        url = ins.url("/inspector/queue")
        refused = [
            await ins.http.get(url),
            await ins.http.get(url, headers={"authorization": "Bearer"}),
            await ins.get("/inspector/queue", token="wrong"),
            await ins.get("/inspector/queue", token=ins.token[:-1]),
            await ins.http.get(url, headers={"authorization": f"Basic {ins.token}"}),
            # The client token header is not the inspector's.
            await ins.http.get(url, headers={"x-rivet-token": ins.token}),
            # Authentication comes before routing: unknown routes do not answer 404.
            await ins.http.get(ins.url("/inspector/nope")),
            # JSON whatever encoding the request names.
            await ins.http.get(url, headers={"x-rivet-encoding": "bare"}),
        ]
        for response in refused:
            assert response.status_code == 401, response.request.headers
            assert response.headers["content-type"] == "application/json"
            assert response.json() == UNAUTHORIZED
        # The scheme is matched in any case, as the official runtime does.
        accepted = await ins.http.get(url, headers={"authorization": f"bearer {ins.token}"})
        assert accepted.status_code == 200
        # And, as there, a value without the scheme is compared whole.
        bare = await ins.http.get(url, headers={"authorization": ins.token})
        assert bare.status_code == 200


async def test_each_actor_has_its_own_token(serve_registry: Callable[..., Any]) -> None:
    async with inspector_for(serve_registry) as (ins, _):
        async with Client(ins.served.url) as client:
            other = client.get_or_create("inspected", ["b"])
            other_id = await other.resolve()
            await other.bump()
        other_token = stored_token(ins.served, other_id)
        assert other_token != ins.token
        response = await ins.http.get(
            f"{ins.served.url}/gateway/{other_id}/inspector/queue",
            headers={"authorization": f"Bearer {ins.token}"},
        )
        assert response.status_code == 401


async def test_test_token_env_replaces_the_stored_token(
    serve_registry: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with inspector_for(serve_registry) as (ins, _):
        monkeypatch.setenv(INSPECTOR_TOKEN_ENV, "test-token")
        assert (await ins.get("/inspector/queue", token="test-token")).status_code == 200
        assert (await ins.get("/inspector/queue")).status_code == 401
        monkeypatch.setenv(INSPECTOR_TOKEN_ENV, "")  # empty: not set
        assert (await ins.get("/inspector/queue")).status_code == 200


async def test_query_gateway_form_reaches_the_inspector(serve_registry: Callable[..., Any]) -> None:
    async with inspector_for(serve_registry) as (ins, handle):
        await handle.send("jobs", {"n": 1})
        url = ins.served.gateway("inspected", "/inspector/queue", key="a") + "&limit=1"
        response = await ins.http.get(url, headers={"authorization": f"Bearer {ins.token}"})
        assert response.status_code == 200
        assert response.json()["size"] == 1


# -- routes ----------------------------------------------------------------------------------


async def test_queue_lists_messages_with_limit_and_truncation(
    serve_registry: Callable[..., Any],
) -> None:
    clock = FakeClock(start_ms=START_MS)
    async with inspector_for(serve_registry, clock=clock) as (ins, handle):
        empty = await ins.get("/inspector/queue")
        assert empty.status_code == 200
        assert empty.headers["content-type"] == "application/json"
        assert empty.json() == {"size": 0, "maxSize": 50, "truncated": False, "messages": []}

        for i in range(5):
            await handle.send("other" if i == 2 else "jobs", {"i": i})
            await clock.advance(seconds=1)
        full = (await ins.get("/inspector/queue")).json()
        assert full == {
            "size": 5,
            "maxSize": 50,
            "truncated": False,
            "messages": [
                {
                    "id": i + 1,
                    "name": "other" if i == 2 else "jobs",
                    "createdAtMs": START_MS + i * 1000,
                }
                for i in range(5)
            ],
        }

        two = (await ins.get("/inspector/queue", "limit=2")).json()
        assert two["size"] == 5 and two["truncated"] is True
        assert [m["id"] for m in two["messages"]] == [1, 2]
        exact = (await ins.get("/inspector/queue", "limit=5")).json()
        assert exact["truncated"] is False and len(exact["messages"]) == 5
        floored = (await ins.get("/inspector/queue", "limit=3.9")).json()
        assert [m["id"] for m in floored["messages"]] == [1, 2, 3]
        # As the official runtime: anything but a positive number means the default, 100.
        for bad in ("limit=0", "limit=-4", "limit=abc", "limit=", "limit=inf", "limit=nan"):
            response = await ins.get("/inspector/queue", bad)
            assert response.status_code == 200, bad
            assert len(response.json()["messages"]) == 5, bad
        huge = (await ins.get("/inspector/queue", "limit=1e30")).json()
        assert huge["truncated"] is False and len(huge["messages"]) == 5

        # Received messages leave the listing; ids keep their order.
        assert await handle.pull(2) == [{"i": 0}, {"i": 1}]
        after = (await ins.get("/inspector/queue", "limit=1")).json()
        assert after["size"] == 3 and after["truncated"] is True
        assert after["messages"] == [{"id": 3, "name": "other", "createdAtMs": START_MS + 2000}]


async def test_workflow_history_default_shape(serve_registry: Callable[..., Any]) -> None:
    async with inspector_for(serve_registry) as (ins, _):
        response = await ins.get("/inspector/workflow-history")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == NO_WORKFLOW


async def test_workflow_history_of_a_workflow_actor(serve_registry: Callable[..., Any]) -> None:
    from rivetkit._workflow import WorkflowContext, workflow

    a = rivetkit.actor("flow", state={"done": 0})

    @a.run
    @workflow
    async def process(ctx: WorkflowContext) -> None:
        await ctx.step("first", lambda: 1)
        await ctx.sleep("nap", 3600)  # durable; the fake clock never gets there

    @a.action
    def ping(c: ActionContext) -> int:
        return 1

    clock = FakeClock(start_ms=START_MS)
    async with (
        serve_registry(a, clock=clock) as served,
        Client(served.url) as client,
        httpx.AsyncClient(timeout=10) as http,
    ):
        handle = client.get_or_create("flow", ["a"])
        actor_id = await handle.resolve()
        await handle.ping()
        await clock.settle()
        ins = Inspector(served, http, actor_id, stored_token(served, actor_id))
        body = (await ins.get("/inspector/workflow-history")).json()
        assert body["isWorkflowEnabled"] is True
        assert body["workflowState"] is not None
        assert "first" in body["history"]["nameRegistry"]
        summary = (await ins.get("/inspector/summary")).json()
        assert summary["isWorkflowEnabled"] is True
        assert summary["workflowHistory"] == body["history"]


async def test_workflow_history_comes_from_the_workflow_engine_when_present(
    serve_registry: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rivetkit._workflow as workflow_package

    seen: list[str] = []

    async def fake_inspector(instance: Any) -> dict[str, Any]:
        seen.append(instance.actor_id)
        return {"history": {"entries": [1]}, "workflowState": "sleeping", "isWorkflowEnabled": True}

    async with inspector_for(serve_registry) as (ins, _):
        monkeypatch.setattr(workflow_package, "workflow_inspector", fake_inspector, raising=False)
        body = (await ins.get("/inspector/workflow-history")).json()
        assert body == {
            "history": {"entries": [1]},
            "workflowState": "sleeping",
            "isWorkflowEnabled": True,
        }
        summary = (await ins.get("/inspector/summary")).json()
        assert summary["isWorkflowEnabled"] is True
        assert summary["workflowState"] == "sleeping"
        assert summary["workflowHistory"] == {"entries": [1]}
        assert seen == [ins.actor_id, ins.actor_id]


async def test_state_rpcs_connections_and_summary(serve_registry: Callable[..., Any]) -> None:
    async with inspector_for(serve_registry) as (ins, handle):
        await handle.send("jobs", {"n": 1})
        state = (await ins.get("/inspector/state")).json()
        # The JSON-compat layer of §6.2: bytes travel as a tagged array.
        assert state == {
            "state": {"count": 4, "raw": ["$Uint8Array", "AQ=="]},
            "isStateEnabled": True,
        }
        assert (await ins.get("/inspector/rpcs")).json() == {"rpcs": ["bump", "pull", "zeta"]}
        assert (await ins.get("/inspector/connections")).json() == {"connections": []}

        async with handle.connect({"who": "ann"}) as conn:
            await conn.bump()
            connections = (await ins.get("/inspector/connections")).json()["connections"]
            assert connections == [
                {
                    "type": None,
                    "id": connections[0]["id"],
                    "details": {
                        "type": None,
                        "params": {"who": "ann"},
                        "stateEnabled": True,
                        "state": {"n": 0},
                        "subscriptions": 0,
                        "isHibernatable": False,
                    },
                }
            ]
            summary = (await ins.get("/inspector/summary")).json()
        assert summary == {
            "state": {"count": 5, "raw": ["$Uint8Array", "AQ=="]},
            "connections": connections,
            "rpcs": ["bump", "pull", "zeta"],
            "queueSize": 1,
            "isStateEnabled": True,
            "isDatabaseEnabled": True,
            "isWorkflowEnabled": False,
            "workflowState": None,
            "workflowHistory": None,
        }


async def test_actor_without_state(serve_registry: Callable[..., Any]) -> None:
    async with inspector_for(serve_registry, name="stateless") as (ins, _):
        assert (await ins.get("/inspector/state")).json() == {"isStateEnabled": False}
        summary = (await ins.get("/inspector/summary")).json()
        assert summary["state"] is None and summary["isStateEnabled"] is False
        assert summary["rpcs"] == ["ping"]
        queue = (await ins.get("/inspector/queue")).json()
        assert queue == {"size": 0, "maxSize": 1000, "truncated": False, "messages": []}


async def test_unknown_routes_and_methods_get_404(serve_registry: Callable[..., Any]) -> None:
    async with inspector_for(serve_registry) as (ins, _):
        auth = {"authorization": f"Bearer {ins.token}"}
        responses = [
            await ins.get("/inspector/nope"),
            await ins.get("/inspector/queue/extra"),
            await ins.http.post(ins.url("/inspector/queue"), headers=auth, json={"name": "jobs"}),
            await ins.http.delete(ins.url("/inspector/queue"), headers=auth),
            await ins.http.patch(ins.url("/inspector/state"), headers=auth, json={"state": 1}),
        ]
        for response in responses:
            assert response.status_code == 404, response.request.url
            assert response.headers["content-type"] == "application/json"
            assert response.json() == NOT_FOUND


async def test_disabled_inspector_is_an_unknown_route(
    serve_registry: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with inspector_for(serve_registry) as (ins, _):
        monkeypatch.setenv(INSPECTOR_DISABLE_ENV, "1")
        response = await ins.get("/inspector/queue")
        assert response.status_code == 404
        body = response.json()
        assert (body["group"], body["code"]) == ("actor", "not_found")
        assert body["metadata"] == {"resource": "route", "id": "/inspector/queue"}
        monkeypatch.setenv(INSPECTOR_DISABLE_ENV, "0")
        assert (await ins.get("/inspector/queue")).status_code == 200


async def test_failures_inside_a_route_are_json_envelopes(
    serve_registry: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rivetkit._workflow as workflow_package

    def broken(instance: Any) -> dict[str, Any]:
        raise RuntimeError("secret detail")

    async with inspector_for(serve_registry) as (ins, _):
        monkeypatch.setattr(workflow_package, "workflow_inspector", broken, raising=False)
        response = await ins.get("/inspector/workflow-history", **{"x-rivet-encoding": "cbor"})
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert (body["group"], body["code"]) == ("rivetkit", "internal_error")
        assert "secret" not in response.text


# -- workflow replay ---------------------------------------------------------------------------


def replayed(effects: list[str]) -> rivetkit.ActorDefinition:
    """A workflow of three steps and a loop of two; every execution of a step is logged."""
    from rivetkit._workflow import WorkflowContext, workflow

    a = rivetkit.actor("replayed", state={"runs": 0}, options=rivetkit.ActorOptions(sleep_timeout=5))

    def effect(label: str) -> str:
        effects.append(label)
        return label

    @a.run
    @workflow
    async def process(ctx: WorkflowContext) -> str:
        await ctx.step("a", effect, "a")
        await ctx.step("b", effect, "b")

        async def body(lctx: WorkflowContext, i: int) -> Any:
            await lctx.step("tick", effect, f"tick{i}")
            return lctx.loop_break(i) if i == 1 else lctx.loop_continue(i + 1)

        await ctx.loop("ticks", body, state=0)
        return await ctx.step("c", effect, "c")

    @a.action
    def ping(c: ActionContext) -> int:
        return 1

    return a


def entry_ids(history: dict[str, Any]) -> dict[str, str]:
    """``{"a": id, "ticks/tick@1": id, ...}``: each entry's id by its names."""
    names = history["nameRegistry"]
    out: dict[str, str] = {}
    for entry in history["entries"]:
        path = [names[seg["val"]] for seg in entry["location"] if seg["tag"] == "WorkflowNameIndex"]
        iterations = [
            seg["val"]["iteration"]
            for seg in entry["location"]
            if seg["tag"] == "WorkflowLoopIterationMarker"
        ]
        out["/".join(path) + "".join(f"@{i}" for i in iterations)] = entry["id"]
    return out


@asynccontextmanager
async def replay_setup(
    serve_registry: Callable[..., Any], effects: list[str]
) -> AsyncIterator[tuple[Inspector, Any, FakeClock]]:
    clock = FakeClock(start_ms=START_MS)
    async with (
        serve_registry(replayed(effects), stateless(), clock=clock) as served,
        Client(served.url) as client,
        httpx.AsyncClient(timeout=10) as http,
    ):
        handle = client.get_or_create("replayed", ["a"])
        actor_id = await handle.resolve()
        await handle.ping()
        await clock.settle()
        yield Inspector(served, http, actor_id, stored_token(served, actor_id)), handle, clock


async def finished(ins: Inspector, clock: FakeClock) -> dict[str, Any]:
    for _ in range(50):
        await clock.settle()
        body: dict[str, Any] = (await ins.get("/inspector/workflow-history")).json()
        if body["workflowState"] == "completed":
            return body
    raise AssertionError(f"the workflow did not complete: {body['workflowState']}")


async def test_workflow_replay_from_a_step_runs_it_and_what_follows_again(
    serve_registry: Callable[..., Any],
) -> None:
    effects: list[str] = []
    async with replay_setup(serve_registry, effects) as (ins, _, clock):
        done = await finished(ins, clock)
        assert effects == ["a", "b", "tick0", "tick1", "c"]
        ids = entry_ids(done["history"])

        response = await ins.post("/inspector/workflow/replay", {"entryId": ids["b"]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["isWorkflowEnabled"] is True and body["workflowState"] == "pending"
        assert set(entry_ids(body["history"])) == {"a"}  # b and everything after it are gone

        again = await finished(ins, clock)
        assert effects == ["a", "b", "tick0", "tick1", "c", "b", "tick0", "tick1", "c"]
        assert again["workflowOutput"] == "c"

        # A step inside a loop replays from the loop: every iteration runs again.
        ids = entry_ids(again["history"])
        response = await ins.post("/inspector/workflow/replay", {"entryId": ids["ticks/tick@1"]})
        assert set(entry_ids(response.json()["history"])) == {"a", "b"}
        await finished(ins, clock)
        assert effects[9:] == ["tick0", "tick1", "c"]

        # Without an entry id the whole workflow runs again.
        response = await ins.post("/inspector/workflow/replay", {})
        assert response.json()["history"]["entries"] == []
        await finished(ins, clock)
        assert effects[12:] == ["a", "b", "tick0", "tick1", "c"]


async def test_workflow_replay_wakes_a_sleeping_actor(serve_registry: Callable[..., Any]) -> None:
    effects: list[str] = []
    async with replay_setup(serve_registry, effects) as (ins, _, clock):
        ids = entry_ids((await finished(ins, clock))["history"])
        await clock.advance(seconds=10)  # the finished workflow lets the actor sleep
        assert ins.actor_id not in ins.served.registry.driver.awake
        response = await ins.post("/inspector/workflow/replay", {"entryId": ids["c"]})
        assert response.status_code == 200, response.text
        await finished(ins, clock)
        assert effects == ["a", "b", "tick0", "tick1", "c", "c"]


async def test_workflow_replay_refuses_while_the_workflow_runs_and_bad_requests(
    serve_registry: Callable[..., Any],
) -> None:
    from rivetkit._workflow import WorkflowContext, workflow

    a = rivetkit.actor("napping", options=rivetkit.ActorOptions(sleep_timeout=3600))

    @a.run
    @workflow
    async def process(ctx: WorkflowContext) -> None:
        await ctx.step("first", lambda: 1)
        await ctx.sleep("nap", 60)

    @a.action
    def ping(c: ActionContext) -> int:
        return 1

    clock = FakeClock(start_ms=START_MS)
    async with (
        serve_registry(a, stateless(), clock=clock) as served,
        Client(served.url) as client,
        httpx.AsyncClient(timeout=10) as http,
    ):
        handle = client.get_or_create("napping", ["a"])
        actor_id = await handle.resolve()
        await handle.ping()
        await clock.settle()
        ins = Inspector(served, http, actor_id, stored_token(served, actor_id))
        ids = entry_ids((await ins.get("/inspector/workflow-history")).json()["history"])

        response = await ins.post("/inspector/workflow/replay", {"entryId": ids["first"]})
        assert response.status_code == 409
        assert response.json() == {
            "group": "actor",
            "code": "workflow_in_flight",
            "message": "Workflow replay is unavailable while the workflow is currently in flight.",
            "metadata": None,
        }
        await clock.advance(seconds=60)  # the workflow completes
        for _ in range(20):
            await clock.settle()

        bad = [
            (await ins.post("/inspector/workflow/replay", {"entryId": "nope"}), 404, "workflow.entry_not_found"),
            (await ins.post("/inspector/workflow/replay", {"entryId": ids["nap"]}), 400, "workflow.replay_target_not_step"),
            (await ins.post("/inspector/workflow/replay", {"entryId": 5}), 400, "actor.invalid_request"),
            (await ins.post("/inspector/workflow/replay", [1]), 400, "actor.invalid_request"),
            (await ins.post("/inspector/workflow/replay", content=b"{nope"), 400, "actor.invalid_request"),
            (await ins.post("/inspector/workflow/replay", {}, token="wrong"), 401, "inspector.unauthorized"),
        ]
        for response, status, code in bad:
            body = response.json()
            assert (response.status_code, f"{body['group']}.{body['code']}") == (status, code), body
        # Nothing was cut by the refused requests.
        history = (await ins.get("/inspector/workflow-history")).json()
        assert history["workflowState"] == "completed"
        assert set(entry_ids(history["history"])) == {"first", "nap"}

        plain = Inspector(served, http, *await _awake_stateless(client, served))
        response = await plain.post("/inspector/workflow/replay", {})
        assert (response.status_code, response.json()) == (200, NO_WORKFLOW)


async def _awake_stateless(client: Client, served: Any) -> tuple[str, str]:
    handle = client.get_or_create("stateless", ["a"])
    actor_id = await handle.resolve()
    await handle.ping()
    return actor_id, stored_token(served, actor_id)
