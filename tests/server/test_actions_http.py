"""HTTP actions through the gateway on a real socket, in every encoding, and bad input."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import cbor2
import httpx
import pytest

import rivetkit
from rivetkit import ActionContext, ActorContext, UserError
from rivetkit._protocol import get_codec

pytestmark = pytest.mark.anyio

ENCODINGS = ["json", "cbor", "bare"]


def make_actors() -> list[rivetkit.ActorDefinition]:
    counter = rivetkit.actor("counter", state={"count": 0}, events={"count": rivetkit.event(int)})

    @counter.action
    def increment(c: ActionContext, amount: int) -> int:
        c.state["count"] += amount
        c.broadcast("count", c.state["count"])
        return c.state["count"]

    @counter.action(name="getCount")
    def get_count(c: ActionContext) -> int:
        return c.state["count"]

    @counter.action
    def echo(c: ActionContext, value: Any) -> Any:
        return value

    @counter.action
    def fail(c: ActionContext) -> None:
        raise UserError("boom happened", code="my_code", metadata={"a": 1})

    @counter.action
    def boom(c: ActionContext) -> None:
        raise RuntimeError("secret detail")

    @counter.action
    async def slow(c: ActionContext) -> str:
        await asyncio.sleep(5)
        return "late"

    @counter.action
    def big(c: ActionContext, size: int) -> str:
        return "x" * size

    @counter.action
    def whoami(c: ActionContext) -> Any:
        return {"params": c.conn.params, "state": c.conn.state, "key": c.key, "name": c.name}

    @counter.action
    def nothing(c: ActionContext) -> None:
        return None

    @counter.create_conn_state
    def conn_state(c: ActorContext, params: Any) -> Any:
        return {"seen": params}

    @counter.on_before_connect
    def before_connect(c: ActorContext, params: Any) -> None:
        if isinstance(params, dict) and params.get("reject"):
            raise UserError("connection rejected", code="rejected", metadata={"why": "test"})

    fast = rivetkit.actor("fast", options=rivetkit.ActorOptions(action_timeout=0.05))

    @fast.action
    async def hang(c: ActionContext) -> None:
        await asyncio.sleep(5)

    return [counter, fast]


async def call(
    http: httpx.AsyncClient,
    url: str,
    args: list[Any],
    encoding: str = "json",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, httpx.Response]:
    codec = get_codec(encoding)  # type: ignore[arg-type]
    response = await http.post(
        url,
        content=codec.encode_action_request(args),
        headers={"x-rivet-encoding": encoding, **(headers or {})},
    )
    if response.status_code == 200:
        return 200, codec.decode_action_response(response.content), response
    if "application/json" in response.headers.get("content-type", ""):
        return response.status_code, response.json(), response
    err = codec.decode_http_error(response.content)
    return response.status_code, {"group": err.group, "code": err.code, "message": err.message,
                                  "metadata": err.metadata}, response


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_round_trips(serve_registry: Any, encoding: str) -> None:
    values = [
        "text ü",
        42,
        -7,
        2.5,
        True,
        None,
        [1, [2, {"x": None}]],
        {"nested": {"list": [1, 2, 3], "s": "v"}},
        rivetkit.BigInt(123),
        rivetkit.BigInt(2**70),
        b"\x00\x01\x02",
        ["$tricky", 1],
    ]
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        url = served.gateway("counter", "/action/echo", key=f"rt-{encoding}")
        for value in values:
            status, out, _ = await call(http, url, [value], encoding)
            assert status == 200
            assert out == value
            if encoding != "cbor" and isinstance(value, rivetkit.BigInt):
                assert isinstance(out, rivetkit.BigInt)
            if isinstance(value, bytes):
                assert isinstance(out, bytes)
        status, out, _ = await call(http, served.gateway("counter", "/action/nothing"), [], encoding)
        assert (status, out) == (200, None)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_increment_is_one_actor_per_key(serve_registry: Any, encoding: str) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        url = served.gateway("counter", "/action/increment", key=f"inc-{encoding}")
        assert (await call(http, url, [1], encoding))[1] == 1
        status, out, response = await call(http, url, [2], encoding)
        assert (status, out) == (200, 3)
        assert response.headers["x-rivet-actor-key"] == f"inc-{encoding}"
        assert response.headers["x-rivet-actor-generation"] == "1"
        other = served.gateway("counter", "/action/getCount", key="another")
        assert (await call(http, other, [], encoding))[1] == 0


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_errors_in_request_encoding(serve_registry: Any, encoding: str) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        status, err, _ = await call(http, served.gateway("counter", "/action/fail"), [], encoding)
        assert status == 500
        assert (err["group"], err["code"], err["message"], err["metadata"]) == (
            "user", "my_code", "boom happened", {"a": 1}
        )
        status, err, _ = await call(http, served.gateway("counter", "/action/boom"), [], encoding)
        assert (status, err["group"], err["code"]) == (500, "rivetkit", "internal_error")
        assert err["message"] == "An internal error occurred" and "secret" not in str(err)
        status, err, _ = await call(http, served.gateway("counter", "/action/nope"), [], encoding)
        assert (status, err["code"]) == (404, "action_not_found")
        assert err["message"] == "Action `nope` was not found."
        status, err, _ = await call(
            http, served.gateway("counter", "/action/increment"), [1, 2, 3], encoding
        )
        assert (status, err["code"]) == (400, "invalid_arguments")


async def test_expose_errors_shows_internal_message(serve_registry: Any) -> None:
    async with serve_registry(*make_actors(), expose_errors=True) as served, httpx.AsyncClient() as http:
        status, err, _ = await call(http, served.gateway("counter", "/action/boom"), [])
        assert status == 500 and "secret detail" in err["message"]


async def test_conn_params_reach_hooks_and_rejection(serve_registry: Any) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        url = served.gateway("counter", "/action/whoami", key="a,b")
        status, out, _ = await call(http, url, [], headers={"x-rivet-conn-params": '{"token":"t"}'})
        assert status == 200
        assert out == {"params": {"token": "t"}, "state": {"seen": {"token": "t"}},
                       "key": ["a", "b"], "name": "counter"}
        status, err, _ = await call(
            http, url, [], headers={"x-rivet-conn-params": '{"reject":true}'}
        )
        assert (status, err["group"], err["code"], err["metadata"]) == (
            500, "user", "rejected", {"why": "test"}
        )
        latin1 = await http.post(url, content=b'{"args":[]}',
                                 headers={"x-rivet-conn-params": '{"name":"\xfc"}'.encode("latin-1")})
        assert latin1.json()["output"]["params"] == {"name": "\u00fc"}
        status, err, _ = await call(http, url, [], headers={"x-rivet-conn-params": "{nope"})
        assert (status, err["group"], err["code"]) == (400, "core", "internal_error")
        assert "not valid JSON" in err["message"]


async def test_action_timeout(serve_registry: Any) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        status, err, _ = await call(http, served.gateway("fast", "/action/hang"), [])
        assert (status, err["code"]) == (408, "action_timed_out")


async def test_bad_bodies_and_limits(serve_registry: Any) -> None:
    async with serve_registry(*make_actors(), max_incoming_message_size=1024,
                              max_outgoing_message_size=2048) as served, \
            httpx.AsyncClient() as http:
        url = served.gateway("counter", "/action/echo")
        malformed = await http.post(url, content=b"{not json", headers={"x-rivet-encoding": "json"})
        assert malformed.status_code == 400 and malformed.json()["code"] == "internal_error"
        assert malformed.json()["group"] == "core"
        # An unknown encoding means JSON (as the official server): a JSON body works.
        unknown = await http.post(url, content=b'{"args":[5]}', headers={"x-rivet-encoding": "msgpack"})
        assert unknown.status_code == 200 and unknown.json() == {"output": 5}
        missing = await http.post(url, content=b'{"args":5}')
        assert missing.json() == {"output": 5}
        v9 = await http.post(url, content=b"\x09\x00\x02\x81\x01", headers={"x-rivet-encoding": "bare"})
        assert v9.status_code == 400
        err = get_codec("bare").decode_http_error(v9.content)
        assert (err.group, err.code) == ("core", "internal_error") and "version" in err.message
        for version in (1, 2, 3, 4):
            ok = await http.post(
                url,
                content=bytes([version, 0]) + b"\x02\x81\x07",
                headers={"x-rivet-encoding": "bare"},
            )
            assert ok.status_code == 200
            assert get_codec("bare").decode_action_response(ok.content) == 7
        huge = await http.post(url, content=b'{"args":["' + b"x" * 2000 + b'"]}')
        assert huge.status_code == 400 and huge.json()["code"] == "incoming_too_long"

        async def chunks() -> Any:
            for _ in range(10):
                yield b" " * 200

        chunked = await http.post(url, content=chunks())
        assert chunked.status_code == 400 and chunked.json()["group"] == "message"
        too_big = await call(http, served.gateway("counter", "/action/big"), [4096])
        assert too_big[0] == 400 and too_big[1]["code"] == "outgoing_too_long"
        # The server keeps serving after every bad input.
        assert (await call(http, url, ["still fine"]))[1] == "still fine"


async def test_chunked_request_body(serve_registry: Any) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        async def chunks() -> Any:
            yield b'{"args":'
            yield b"[41]}"

        response = await http.post(served.gateway("counter", "/action/echo"), content=chunks())
        assert response.json() == {"output": 41}


async def test_method_and_route_errors(serve_registry: Any) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        got = await http.get(served.gateway("counter", "/action/echo"))
        assert got.status_code == 405 and got.json()["code"] == "method_not_allowed"
        assert got.json()["metadata"]["method"] == "GET"
        nope = await http.get(served.gateway("counter", "/nope"))
        assert nope.status_code == 404
        assert nope.json()["metadata"] == {"resource": "route", "id": "/nope"}
        health = await http.get(served.gateway("counter", "/health"))
        assert (health.status_code, health.text) == (200, "ok")
        meta = await http.get(served.gateway("counter", "/metadata"))
        assert meta.json()["runtime"] == "rivetkit"
        root = await http.get(served.gateway("counter", ""))
        assert root.status_code == 200 and "RivetKit actor" in root.text


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("rvt-namespace=default&rvt-method=getOrCreate", "query_missing_pool"),
        ("rvt-namespace=default&rvt-method=get&rvt-runner=default", "query_get_disallowed_params"),
        ("rvt-namespace=default&rvt-method=get&rvt-input=AA", "query_get_disallowed_params"),
        ("rvt-namespace=default&rvt-method=fetch", "query_invalid_params"),
        ("rvt-method=get", "query_invalid_params"),
        ("rvt-namespace=default&rvt-method=get&rvt-bogus=1", "query_invalid_params"),
        ("rvt-namespace=default&rvt-namespace=x&rvt-method=get", "query_duplicate_param"),
        ("rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=d&rvt-input=!!", "query_invalid_base64_input"),
        ("rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=d&rvt-input=_w", "query_invalid_cbor_input"),
        ("rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=d&rvt-crash-policy=never", "query_invalid_params"),
        ("rvt-namespace=default&rvt-method=get&rvt-skip-ready-wait=maybe", "query_invalid_params"),
    ],
)
async def test_bad_rvt_params(serve_registry: Any, query: str, code: str) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        response = await http.post(
            f"{served.url}/gateway/counter/action/getCount?{query}", content=b'{"args":[]}'
        )
        assert response.status_code == 400
        assert response.json()["group"] == "guard" and response.json()["code"] == code
        assert response.headers["x-rivet-error"] == f"guard.{code}"
        ok = await call(http, served.gateway("counter", "/action/getCount"), [])
        assert ok[0] == 200


async def test_gateway_addressing_errors(serve_registry: Any) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        token_in_query = await http.post(
            f"{served.url}/gateway/counter@tok/action/getCount?rvt-namespace=default&rvt-method=get",
            content=b"{}",
        )
        assert token_in_query.json()["code"] == "query_path_token_syntax"
        namespace = await http.post(
            f"{served.url}/gateway/counter/action/getCount?rvt-namespace=other&rvt-method=get",
            content=b"{}",
        )
        assert namespace.status_code == 400
        assert (namespace.json()["group"], namespace.json()["code"]) == ("namespace", "not_found")
        missing = await http.post(served.gateway("counter", "/action/getCount", key="missing",
                                                 method="get"), content=b"{}")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert missing.headers["x-rivet-error"] == "actor.not_found"
        unknown_name = await http.post(served.gateway("nobody", "/action/x"), content=b"{}")
        assert unknown_name.status_code == 404
        assert unknown_name.json()["code"] == "name_not_found"
        long_key = await http.post(served.gateway("counter", "/action/getCount", key="k" * 129),
                                   content=b"{}")
        assert long_key.status_code == 400 and long_key.json()["code"] == "key_too_large"
        bad_id = await http.post(f"{served.url}/gateway/doesnotexist/action/getCount", content=b"{}")
        assert bad_id.status_code == 404 and bad_id.json()["code"] == "not_found"


async def test_input_and_direct_addressing(serve_registry: Any) -> None:
    greeter = rivetkit.actor("greeter")

    @greeter.create_state
    def create_state(c: ActorContext, input: Any) -> Any:
        return {"input": input}

    @greeter.action(name="getInput")
    def get_input(c: ActionContext) -> Any:
        return c.state["input"]

    async with serve_registry(greeter) as served, httpx.AsyncClient() as http:
        raw = cbor2.dumps({"start": 42})
        encoded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        url = served.gateway("greeter", "/action/getInput", key="in") + f"&rvt-input={encoded}"
        status, out, response = await call(http, url, [])
        assert (status, out) == (200, {"start": 42})
        actor_id = response.headers["x-rivet-actor"]
        # Existing actor ignores new input.
        other = cbor2.dumps({"start": 1})
        url2 = served.gateway("greeter", "/action/getInput", key="in") + "&rvt-input=" + \
            base64.urlsafe_b64encode(other).rstrip(b"=").decode()
        assert (await call(http, url2, []))[1] == {"start": 42}
        # Direct form, with and without a token segment.
        direct = await call(http, f"{served.url}/gateway/{actor_id}/action/getInput", [])
        assert direct[1] == {"start": 42}
        with_token = await call(http, f"{served.url}/gateway/{actor_id}@tok/action/getInput", [])
        assert with_token[1] == {"start": 42}
        # Header-addressed (skip-ready-wait) form.
        headed = await http.post(
            f"{served.url}/gateway/{actor_id}/action/getInput",
            content=b'{"args":[]}',
            headers={"x-rivet-target": "actor", "x-rivet-actor": actor_id,
                     "x-rivet-skip-ready-wait": "1"},
        )
        assert headed.json() == {"output": {"start": 42}}


async def test_cors(serve_registry: Any) -> None:
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        pre = await http.options(
            served.gateway("counter", "/action/getCount"),
            headers={"origin": "http://app.example", "access-control-request-method": "POST",
                     "access-control-request-headers": "x-rivet-encoding, content-type"},
        )
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == "http://app.example"
        assert pre.headers["access-control-allow-credentials"] == "true"
        assert pre.headers["access-control-allow-headers"] == "x-rivet-encoding, content-type"
        assert "POST" in pre.headers["access-control-allow-methods"]
        actual = await http.post(served.gateway("counter", "/action/getCount"),
                                 content=b'{"args":[]}', headers={"origin": "http://app.example"})
        assert actual.headers["access-control-allow-origin"] == "http://app.example"
        assert actual.headers["access-control-expose-headers"] == "*"
        api = await http.options(f"{served.url}/actors", headers={"origin": "http://a"})
        assert api.status_code == 200


async def test_concurrent_increments_all_committed(serve_registry: Any, tmp_path: Any) -> None:
    definitions = make_actors()
    async with serve_registry(*definitions) as served, httpx.AsyncClient() as http:
        url = served.gateway("counter", "/action/increment", key="many")
        results = await asyncio.gather(*(call(http, url, [1]) for _ in range(50)))
        assert sorted(r[1] for r in results) == list(range(1, 51))
    # A new registry on the same storage sees every acknowledged increment.
    async with serve_registry(*make_actors()) as served, httpx.AsyncClient() as http:
        assert (await call(http, served.gateway("counter", "/action/getCount", key="many"), []))[1] == 50
