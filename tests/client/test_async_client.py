"""The async client end to end against a real server on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import TYPE_CHECKING, Any

import cbor2
import pytest

from rivetkit import BigInt
from rivetkit.client import ActorError, ActorHandle, Client, Encoding
from rivetkit.errors import INTERNAL_ERROR_MESSAGE

if TYPE_CHECKING:
    from conftest import TestServer

ENCODINGS = ("json", "cbor", "bare")

pytestmark = pytest.mark.anyio


def fast(client: Client) -> Client:
    """No waiting between retries (the attempt counts stay those of the official client)."""
    client._retry_delay = 0.0
    client._request_retry_delay = (0.0, 0.0)
    client._metadata_retry_delay = (0.0, 0.0)
    return client


VALUES: list[Any] = [
    0,
    -5,
    2**31,
    2**40,
    2**53 - 1,
    1.5,
    -0.25,
    3.0,
    "",
    "héllo wörld ✓",
    True,
    False,
    None,
    [1, "two", [3.5, None]],
    {"nested": {"list": [1, {"deep": "x"}], "empty": {}}, "n": None},
    ["$tag-like", 1],
    b"\x00\x01\xfe\xff",
    BigInt(7),
    BigInt(2**70),
    BigInt(-(2**64)),
    {"big": BigInt(123), "raw": b"abc"},
]


def _same(a: Any, b: Any, *, strict_bigint: bool) -> bool:
    """Equal values with equal types (BigInt typing only checked when the encoding keeps it)."""
    if isinstance(a, BigInt) and not strict_bigint:
        return isinstance(b, int) and int(a) == int(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(
            _same(x, y, strict_bigint=strict_bigint) for x, y in zip(a, b)
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(
            _same(a[k], b[k], strict_bigint=strict_bigint) for k in a
        )
    return bool(a == b)


# -- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_round_trip_values(server: TestServer, key: list[str], encoding: Encoding) -> None:
    # The cbor codec decodes 8-byte integers as plain ints, so BigInt typing survives json and
    # bare only (the value survives all three).
    strict = encoding != "cbor"
    async with Client(server.url, encoding=encoding) as client:
        handle = client.get_or_create("probe", key)
        for value in VALUES:
            out = await handle.echo(value)
            assert _same(value, out, strict_bigint=strict), (value, out)
        assert await handle.action("echoAll", *VALUES[:5]) == VALUES[:5]
        assert await handle.action("echoAll") == []
    for request in server.gateway_requests():
        assert request.headers["x-rivet-encoding"] == encoding
        expected = "application/json" if encoding == "json" else "application/octet-stream"
        assert request.headers["content-type"] == expected


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_sugar_and_state(server: TestServer, key: list[str], encoding: Encoding) -> None:
    async with Client(server.url, encoding=encoding) as client:
        handle = client.get_or_create("probe", key)
        assert await handle.increment(2) == 2
        assert await handle.action("increment", 3) == 5
        again = client.get_or_create("probe", key)
        assert await again.increment(1) == 6
        assert isinstance(handle, ActorHandle)
        with pytest.raises(AttributeError):
            handle._private  # noqa: B018 - underscore names are never actions


async def test_concurrent_actions(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        handle = client.get_or_create("probe", key)
        results = await asyncio.gather(*(handle.increment(1) for _ in range(20)))
        assert sorted(results) == list(range(1, 21))
    assert len(server.paths("/metadata")) == 1


async def test_action_name_is_encoded(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        handle = client.get_or_create("probe", key)
        with pytest.raises(ActorError) as info:
            await handle.action("a b/c?")
    assert info.value.code == "action_not_found"
    assert info.value.message == "Action `a b/c?` was not found."
    (request,) = server.gateway_requests()
    assert request.path == "/gateway/probe/action/a%20b%2Fc%3F"


async def test_exact_gateway_target(server: TestServer) -> None:
    async with Client(server.url, encoding="json") as client:
        handle = client.get_or_create("probe", ["sp ace", "ü"])
        await handle.whoami()
        await client.get("probe", ["sp ace", "ü"]).whoami()
        await client.get_or_create("probe").whoami()
    first, second, third = server.gateway_requests()
    assert first.method == "POST"
    assert first.target == (
        "/gateway/probe/action/whoami?rvt-namespace=default&rvt-method=getOrCreate"
        "&rvt-runner=default&rvt-key=sp+ace%2C%C3%BC&rvt-crash-policy=sleep"
    )
    assert second.target == (
        "/gateway/probe/action/whoami?rvt-namespace=default&rvt-method=get&rvt-key=sp+ace%2C%C3%BC"
    )
    assert third.target == (
        "/gateway/probe/action/whoami?rvt-namespace=default&rvt-method=getOrCreate"
        "&rvt-runner=default&rvt-crash-policy=sleep"
    )
    assert "x-rivet-conn-params" not in first.headers
    assert "x-rivet-token" not in first.headers


# -- input, create, get_for_id, resolve ---------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_get_or_create_input(server: TestServer, key: list[str], encoding: Encoding) -> None:
    value = {"start": 42, "tags": ["a", "b"], "big": BigInt(9), "raw": b"\x01"}
    async with Client(server.url, encoding=encoding) as client:
        handle = client.get_or_create("probe", key, input=value)
        assert await handle.action("getInput") == value
        # the actor exists now: another input is ignored
        other = client.get_or_create("probe", key, input={"start": 0})
        assert await other.action("getInput") == value
    query = server.gateway_requests()[0].query
    raw = dict(p.split("=", 1) for p in query.split("&"))["rvt-input"]
    assert "=" not in raw and "+" not in raw and "/" not in raw
    decoded = cbor2.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    assert decoded["start"] == 42 and decoded["big"] == ["$BigInt", "9"]


async def test_get_or_create_input_too_large(server: TestServer) -> None:
    async with Client(server.url) as client:
        with pytest.raises(ValueError, match="4096"):
            client.get_or_create("probe", ["x"], input="x" * 5000)
        client.get_or_create("probe", ["x"], input="x" * 4000)  # within the limit
    assert server.requests == []


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_create_and_get_for_id(
    server: TestServer, key: list[str], encoding: Encoding
) -> None:
    async with Client(server.url, encoding=encoding) as client:
        handle = await client.create("probe", key, input={"start": 10})
        actor_id = handle.actor_id
        assert isinstance(actor_id, str) and actor_id
        assert await handle.resolve() == actor_id
        assert await handle.action("getInput") == {"start": 10}
        same = client.get_for_id("probe", actor_id)
        assert await same.increment(4) == 4
        assert (await same.whoami()) == {"actorId": actor_id, "key": key}
        assert await client.get("probe", key).increment(1) == 5
    create = next(r for r in server.requests if r.path == "/actors")
    assert create.method == "POST" and create.query == "namespace=default"
    direct = [r for r in server.gateway_requests() if "rvt-" not in r.query]
    assert [r.path for r in direct][-1] == f"/gateway/{actor_id}/action/whoami"


async def test_create_duplicate_key(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        first = await client.create("probe", key)
        with pytest.raises(ActorError) as info:
            await client.create("probe", key)
    err = info.value
    assert (err.group, err.code) == ("actor", "duplicate_key")
    assert err.metadata["existing_actor_id"] == first.actor_id
    assert err.status == 400


async def test_resolve(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        created = client.get_or_create("probe", key, input={"n": 1})
        assert created.actor_id is None
        actor_id = await created.resolve()
        assert created.actor_id == actor_id
        looked_up = client.get("probe", key)
        assert await looked_up.resolve() == actor_id
        assert (await looked_up.whoami())["actorId"] == actor_id
        assert await looked_up.action("getInput") == {"n": 1}  # created with the input
        with pytest.raises(ActorError) as info:
            await client.get("probe", [*key, "missing"]).resolve()
        assert info.value.code == "not_found"
    put = next(r for r in server.requests if r.method == "PUT")
    assert put.target == "/actors?namespace=default"
    get = next(r for r in server.requests if r.method == "GET" and r.path == "/actors")
    assert get.query == f"name=probe&key={key[0]}&namespace=default"
    # after resolve() the handle addresses the actor by id
    assert server.gateway_requests()[0].path == f"/gateway/{actor_id}/action/whoami"


# -- errors ---------------------------------------------------------------------------------------


async def test_get_missing_is_retried_then_not_found(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        fast(client)
        with pytest.raises(ActorError) as info:
            await client.get("probe", key).increment(1)
    assert (info.value.group, info.value.code) == ("actor", "not_found")
    assert info.value.status == 404
    assert len(server.gateway_requests()) == 24  # as the official client


async def test_get_for_id_unknown_is_not_retried(server: TestServer) -> None:
    async with Client(server.url) as client:
        fast(client)
        with pytest.raises(ActorError) as info:
            await client.get_for_id("probe", "doesnotexist").increment(1)
    assert info.value.code == "not_found"
    assert len(server.gateway_requests()) == 1


async def test_unknown_actor_name_fails_fast(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        fast(client)
        with pytest.raises(ActorError) as info:
            await client.get_or_create("no-such-actor", key).increment(1)
    assert info.value.full_code == "actor.name_not_found"
    assert len(server.gateway_requests()) == 1


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_unknown_action(server: TestServer, key: list[str], encoding: Encoding) -> None:
    async with Client(server.url, encoding=encoding) as client:
        handle = client.get_or_create("probe", key)
        with pytest.raises(ActorError) as info:
            await handle.nope(1)
    err = info.value
    assert err.full_code == "actor.action_not_found"
    assert err.message == "Action `nope` was not found."
    assert err.status == 404
    assert err.actor is not None and err.actor["key"] == key[0]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_user_error(server: TestServer, key: list[str], encoding: Encoding) -> None:
    async with Client(server.url, encoding=encoding) as client:
        handle = client.get_or_create("probe", key)
        with pytest.raises(ActorError) as info:
            await handle.action("failUser")
        actor_id = await handle.resolve()
    err = info.value
    assert (err.group, err.code, err.message) == ("user", "my_code", "boom happened")
    assert err.metadata == {"a": 1}
    assert err.status == 500
    assert err.actor is not None
    assert err.actor == {"actorId": actor_id, "generation": err.actor["generation"], "key": key[0]}
    assert str(err) == "user.my_code: boom happened"
    assert len(server.gateway_requests()) == 1  # user errors are not retried


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_internal_error_is_masked(
    server: TestServer, key: list[str], encoding: Encoding
) -> None:
    async with Client(server.url, encoding=encoding) as client:
        with pytest.raises(ActorError) as info:
            await client.get_or_create("probe", key).action("failPlain")
    err = info.value
    assert err.full_code == "rivetkit.internal_error"
    assert err.message == INTERNAL_ERROR_MESSAGE
    assert err.metadata is None
    assert "secret" not in repr(err)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_json_error_under_binary_encoding(server: TestServer, encoding: Encoding) -> None:
    # The gateway's own errors are JSON whatever the requested encoding (spec §2.3).
    envelope = {
        "group": "guard",
        "code": "query_invalid_params",
        "message": "bad",
        "metadata": {"x": [1]},
    }
    server.inject("/gateway/", 400, envelope)
    async with Client(server.url, encoding=encoding) as client:
        with pytest.raises(ActorError) as info:
            await client.get_or_create("probe", ["x"]).increment(1)
    err = info.value
    assert (err.group, err.code, err.message, err.metadata) == (
        "guard",
        "query_invalid_params",
        "bad",
        {"x": [1]},
    )
    assert err.status == 400


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_non_envelope_error(server: TestServer, encoding: Encoding) -> None:
    server.inject("/gateway/", 502, b"upstream down", content_type="text/plain")
    async with Client(server.url, encoding=encoding) as client:
        with pytest.raises(ActorError) as info:
            await client.get_or_create("probe", ["x"]).increment(1)
    err = info.value
    assert err.full_code == "client.http_error"
    assert err.message == "HTTP 502: upstream down"
    assert err.status == 502


async def test_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    async with Client(f"http://127.0.0.1:{port}") as client:
        fast(client)._metadata_attempts = 2
        with pytest.raises(ActorError) as info:
            await client.get_or_create("probe", ["x"]).increment(1)
    err = info.value
    assert err.full_code == "client.network_error"
    assert f"127.0.0.1:{port}" in err.message
    assert err.__cause__ is not None


# -- retries ------------------------------------------------------------------------------------


def _envelope(group: str, code: str) -> dict[str, str]:
    return {"group": group, "code": code, "message": f"{group}.{code} injected"}


@pytest.mark.parametrize(
    ("group", "code"),
    [
        ("actor", "restarting"),
        ("guard", "service_unavailable"),
        ("guard", "tunnel_message_timeout"),
    ],
)
async def test_request_level_retry(
    server: TestServer, key: list[str], group: str, code: str
) -> None:
    async with Client(server.url) as client:
        fast(client)
        handle = await client.create("probe", key)  # a direct handle: no lifecycle retries
        server.inject("/gateway/", 503, _envelope(group, code), times=2)
        assert await handle.increment(1) == 1
    assert len(server.gateway_requests()) == 3


async def test_request_level_retry_succeeds(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        fast(client)
        handle = await client.create("probe", key)
        server.inject("/gateway/", 503, _envelope("actor", "restarting"), times=4)
        assert await handle.increment(1) == 1
    assert len(server.gateway_requests()) == 5


async def test_request_level_retry_gives_up(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        fast(client)
        handle = await client.create("probe", key)
        server.inject("/gateway/", 503, _envelope("actor", "restarting"), times=5)
        with pytest.raises(ActorError) as info:
            await handle.increment(1)
        assert info.value.code == "restarting"
        assert len(server.gateway_requests()) == 5
        assert await handle.increment(1) == 1  # the faults are used up


@pytest.mark.parametrize(
    "code", ["starting", "stopping", "destroying", "destroyed_during_creation"]
)
async def test_lifecycle_retry(server: TestServer, key: list[str], code: str) -> None:
    server.inject("/gateway/", 503, _envelope("actor", code), times=3)
    async with Client(server.url) as client:
        fast(client)
        assert await client.get_or_create("probe", key).increment(1) == 1
    assert len(server.gateway_requests()) == 4


async def test_lifecycle_errors_not_retried_for_direct_handles(
    server: TestServer, key: list[str]
) -> None:
    async with Client(server.url) as client:
        fast(client)
        handle = await client.create("probe", key)
        server.inject("/gateway/", 503, _envelope("actor", "starting"))
        with pytest.raises(ActorError) as info:
            await handle.increment(1)
    assert info.value.code == "starting"
    assert len(server.gateway_requests()) == 1


async def test_other_errors_not_retried(server: TestServer, key: list[str]) -> None:
    server.inject("/gateway/", 500, _envelope("guard", "something_else"))
    async with Client(server.url) as client:
        fast(client)
        with pytest.raises(ActorError):
            await client.get_or_create("probe", key).increment(1)
    assert len(server.gateway_requests()) == 1


async def test_stale_cached_id_is_dropped(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        fast(client)
        handle = client.get_or_create("probe", key)
        actor_id = await handle.resolve()
        server.inject(f"/gateway/{actor_id}", 404, _envelope("actor", "not_found"))
        assert await handle.increment(1) == 1
        assert handle.actor_id is None
    first, second = server.gateway_requests()
    assert first.path == f"/gateway/{actor_id}/action/increment"
    assert (
        second.path == "/gateway/probe/action/increment"
        and "rvt-method=getOrCreate" in second.query
    )


# -- endpoint, metadata, namespace, token, params -------------------------------------------------


async def test_metadata_fetched_once(server: TestServer, key: list[str]) -> None:
    async with Client(server.url) as client:
        handle = client.get_or_create("probe", key)
        await handle.increment(1)
        await handle.increment(1)
        await handle.resolve()
    (metadata,) = [r for r in server.requests if r.path == "/metadata"]
    assert metadata.method == "GET" and metadata.query == "namespace=default"
    assert server.requests[0] is not None and server.requests[0].path == "/metadata"


async def test_metadata_retry(server: TestServer, key: list[str]) -> None:
    server.inject("/metadata", 503, _envelope("guard", "service_unavailable"), times=2)
    async with Client(server.url) as client:
        fast(client)
        assert await client.get_or_create("probe", key).increment(1) == 1
    assert len(server.paths("/metadata")) == 3


async def test_metadata_client_error_is_not_retried(server: TestServer) -> None:
    async with Client(server.url + "/nowhere") as client:
        fast(client)
        with pytest.raises(ActorError) as info:
            await client.get_or_create("probe", ["x"]).increment(1)
    assert info.value.status == 404
    assert server.paths() == ["/nowhere/metadata"]


async def test_metadata_client_endpoint(server: TestServer, key: list[str]) -> None:
    async with Client(server.url + "/redirect") as client:
        handle = client.get_or_create("probe", key)
        assert await handle.increment(1) == 1
        assert handle.gateway_url().startswith(server.url + "/api/rivet/gateway/probe?")
        assert "rvt-token=redirected" in handle.gateway_url()
    paths = server.paths()
    assert paths[0] == "/redirect/metadata"
    assert paths[1] == "/api/rivet/gateway/probe/action/increment"
    assert server.requests[1].headers["x-rivet-token"] == "redirected"


async def test_path_prefix_endpoint(server: TestServer, key: list[str]) -> None:
    async with Client(server.url + "/api/rivet/") as client:
        handle = await client.create("probe", key)
        assert await handle.increment(3) == 3
        assert await client.get("probe", key).increment(1) == 4
        assert handle.gateway_url() == f"{server.url}/api/rivet/gateway/{handle.actor_id}"
    assert all(p.startswith("/api/rivet/") for p in server.paths())
    assert server.paths()[:2] == ["/api/rivet/metadata", "/api/rivet/actors"]


async def test_token_is_sent(server: TestServer, key: list[str]) -> None:
    async with Client(server.url, token="s3cret/tok") as client:
        query_handle = client.get_or_create("probe", key)
        await query_handle.increment(1)
        direct = await client.create("probe", [*key, "2"])
        await direct.increment(1)
    metadata, query_action, create, direct_action = server.requests
    assert metadata.headers["authorization"] == "Bearer s3cret/tok"
    assert create.headers["authorization"] == "Bearer s3cret/tok"
    assert query_action.headers["x-rivet-token"] == "s3cret/tok"
    assert query_action.query.endswith("&rvt-crash-policy=sleep&rvt-token=s3cret%2Ftok")
    assert direct_action.path == f"/gateway/{direct.actor_id}@s3cret%2Ftok/action/increment"
    assert direct_action.headers["x-rivet-token"] == "s3cret/tok"
    assert "authorization" not in query_action.headers


async def test_url_auth(server: TestServer, key: list[str]) -> None:
    authed = server.url.replace("http://", "http://default:tok@")
    async with Client(authed) as client:
        assert await client.get_or_create("probe", key).increment(1) == 1
    metadata, action = server.requests
    assert metadata.headers["authorization"] == "Bearer tok"
    assert "rvt-namespace=default" in action.query and action.query.endswith("rvt-token=tok")


async def test_unknown_namespace(server: TestServer, key: list[str]) -> None:
    async with Client(server.url, namespace="elsewhere") as client:
        fast(client)
        with pytest.raises(ActorError) as info:
            await client.get_or_create("probe", key).increment(1)
        assert info.value.full_code == "namespace.not_found"
        with pytest.raises(ActorError) as info:
            await client.create("probe", key)
        assert info.value.full_code == "namespace.not_found"
    assert server.requests[0].query == "namespace=elsewhere"
    assert len(server.gateway_requests()) == 1


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_conn_params(server: TestServer, key: list[str], encoding: Encoding) -> None:
    params = {"token": "abc", "n": 1, "text": "ü"}
    async with Client(server.url, encoding=encoding) as client:
        assert (
            await client.get_or_create("probe", key, params=params).action("connParams") == params
        )
        assert await client.get_or_create("probe", key).action("connParams") is None
        created = await client.create("probe", [*key, "c"], params=[1, 2])
        assert await created.action("connParams") == [1, 2]
        by_id = client.get_for_id("probe", created.actor_id or "", params="p")
        assert await by_id.action("connParams") == "p"
    first = server.gateway_requests()[0]
    assert first.headers["x-rivet-conn-params"] == '{"token":"abc","n":1,"text":"\\u00fc"}'


async def test_user_headers(server: TestServer, key: list[str]) -> None:
    async with Client(server.url, headers={"x-custom": "yes"}) as client:
        handle = client.get_or_create("probe", key)
        await handle.increment(1)
        await handle.resolve()
    assert [r.headers.get("x-custom") for r in server.requests] == ["yes", "yes", "yes"]


# -- handles and lifecycle of the client ----------------------------------------------------------


async def test_gateway_urls(server: TestServer) -> None:
    async with Client(server.url) as client:
        assert client.get("probe", ["a", "b"]).gateway_url() == (
            f"{server.url}/gateway/probe?rvt-namespace=default&rvt-method=get&rvt-key=a%2Cb"
        )
        assert client.get_for_id("probe", "abc").gateway_url() == f"{server.url}/gateway/abc"
        handle = client.get("probe", "single")
        assert handle.key == ["single"] and handle.name == "probe"
    assert server.requests == []


async def test_key_validation(server: TestServer) -> None:
    async with Client(server.url) as client:
        with pytest.raises(ValueError, match="128"):
            client.get("probe", ["x" * 129])
        client.get("probe", ["x" * 128])
        with pytest.raises(TypeError):
            client.get("probe", ["a", 1])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            client.get("", ["a"])
        with pytest.raises(TypeError):
            client.get("probe", ["a"], params=object())
        with pytest.raises(ValueError):
            await client.create("probe", ["y" * 200])
    assert server.requests == []


async def test_closed_client(server: TestServer) -> None:
    client = Client(server.url)
    handle = client.get_or_create("probe", ["x"])
    await client.aclose()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await handle.increment(1)


async def test_endpoint_validation() -> None:
    with pytest.raises(ValueError, match="query"):
        Client("http://127.0.0.1:6420/?x=1")
    with pytest.raises(ValueError, match="encoding"):
        Client("http://127.0.0.1:6420", encoding="msgpack")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        Client("http://ns@127.0.0.1:6420", namespace="other")


def test_public_surface() -> None:
    import rivetkit.client
    from rivetkit.errors import ActorError as CanonicalActorError

    assert rivetkit.client.__all__ == [
        "ActorConn",
        "ActorError",
        "ActorHandle",
        "ActorResponse",
        "Client",
        "ConnStatus",
        "Encoding",
        "EventStream",
        "QueueSendResult",
        "WebSocket",
    ]
    assert rivetkit.client.ActorError is CanonicalActorError
    public = {
        name
        for name in vars(Client)
        if not name.startswith("_") or name in ("__aenter__", "__aexit__")
    }
    assert public == {"get", "get_or_create", "get_for_id", "create", "aclose"} | {
        "__aenter__",
        "__aexit__",
    }
    handle_public = {name for name in vars(ActorHandle) if not name.startswith("_")}
    assert handle_public == {
        "name",
        "key",
        "actor_id",
        "gateway_url",
        "resolve",
        "action",
        "connect",
        "fetch",
        "send",
        "websocket",
    }
