"""The blocking client (portal thread driving the async client) against the real test server."""

from __future__ import annotations

import gc
import threading
from typing import TYPE_CHECKING, Any

import pytest

from rivetkit import BigInt
from rivetkit.client import ActorError, Encoding
from rivetkit.client.sync import ActorHandle, Client

if TYPE_CHECKING:
    from conftest import TestServer

ENCODINGS = ("json", "cbor", "bare")
PORTAL = "rivetkit-client-portal"


def portal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == PORTAL]


@pytest.fixture(autouse=True)
def no_leaked_portals() -> Any:
    before = set(portal_threads())
    yield
    gc.collect()
    leaked = [t for t in portal_threads() if t not in before]
    assert leaked == [], "a sync client left its portal thread running"


VALUES: list[Any] = [
    0,
    -7,
    2**40,
    1.25,
    "texte ✓",
    True,
    None,
    [1, [2, [3]]],
    {"a": {"b": [None, "c"]}},
    b"\x00\xff",
    BigInt(2**70),
]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_round_trips(server: TestServer, key: list[str], encoding: Encoding) -> None:
    with Client(server.url, encoding=encoding) as client:
        handle = client.get_or_create("probe", key)
        assert isinstance(handle, ActorHandle)
        for value in VALUES:
            assert handle.echo(value) == value
        assert handle.action("echoAll", 1, "two", None) == [1, "two", None]
        assert handle.increment(2) == 2
        assert handle.action("increment", 3) == 5
        out = handle.echo(BigInt(5))
        assert out == 5 and (encoding == "cbor" or type(out) is BigInt)
    assert portal_threads() == []


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_input_create_and_get_for_id(
    server: TestServer, key: list[str], encoding: Encoding
) -> None:
    with Client(server.url, encoding=encoding) as client:
        assert client.get_or_create("probe", key, input={"s": 1}).action("getInput") == {"s": 1}
        created = client.create("probe", [*key, "c"], input=[1, 2], params={"p": True})
        assert isinstance(created, ActorHandle)
        actor_id = created.actor_id
        assert actor_id is not None and created.resolve() == actor_id
        assert created.action("getInput") == [1, 2]
        assert created.action("connParams") == {"p": True}
        by_id = client.get_for_id("probe", actor_id)
        assert by_id.whoami() == {"actorId": actor_id, "key": [*key, "c"]}
        assert by_id.gateway_url() == f"{server.url}/gateway/{actor_id}"
        with pytest.raises(ActorError) as info:
            client.create("probe", [*key, "c"])
        assert info.value.full_code == "actor.duplicate_key"


def test_resolve(server: TestServer, key: list[str]) -> None:
    with Client(server.url) as client:
        handle = client.get_or_create("probe", key)
        assert handle.actor_id is None
        actor_id = handle.resolve()
        assert handle.actor_id == actor_id
        assert client.get("probe", key).resolve() == actor_id
        assert handle.key == key and handle.name == "probe"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_errors(server: TestServer, key: list[str], encoding: Encoding) -> None:
    with Client(server.url, encoding=encoding) as client:
        client._client._retry_delay = 0.0
        handle = client.get_or_create("probe", key)
        with pytest.raises(ActorError) as info:
            handle.action("failUser")
        assert (info.value.full_code, info.value.metadata) == ("user.my_code", {"a": 1})
        with pytest.raises(ActorError) as info:
            handle.failPlain()
        assert info.value.full_code == "rivetkit.internal_error"
        with pytest.raises(ActorError) as info:
            handle.nope()
        assert info.value.full_code == "actor.action_not_found"
        with pytest.raises(ActorError) as info:
            client.get("probe", [*key, "missing"]).increment(1)
        assert info.value.full_code == "actor.not_found"
    assert len([r for r in server.gateway_requests() if "missing" in r.query]) == 24


def test_token_and_params(server: TestServer, key: list[str]) -> None:
    with Client(server.url, token="tok", headers={"x-extra": "1"}) as client:
        handle = client.get_or_create("probe", key, params={"who": "me"})
        assert handle.action("connParams") == {"who": "me"}
    action = server.gateway_requests()[0]
    assert action.headers["x-rivet-token"] == "tok"
    assert action.headers["x-extra"] == "1"
    assert action.query.endswith("rvt-token=tok")


def test_path_prefix(server: TestServer, key: list[str]) -> None:
    with Client(server.url + "/api/rivet") as client:
        assert client.get_or_create("probe", key).increment(1) == 1
    assert all(p.startswith("/api/rivet/") for p in server.paths())


def test_close_stops_thread_and_is_idempotent(server: TestServer, key: list[str]) -> None:
    client = Client(server.url)
    assert portal_threads() == []  # started lazily
    handle = client.get_or_create("probe", key)
    handle.increment(1)
    (thread,) = portal_threads()
    client.close()
    assert not thread.is_alive()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        handle.increment(1)
    with pytest.raises(RuntimeError, match="closed"):
        client.create("probe", key)


def test_close_unused_client() -> None:
    client = Client("http://127.0.0.1:9")
    client.close()
    assert portal_threads() == []


def test_garbage_collected_client_stops_thread(server: TestServer, key: list[str]) -> None:
    client = Client(server.url)
    client.get_or_create("probe", key).increment(1)
    (thread,) = portal_threads()
    del client
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_handle_keeps_client_alive(server: TestServer, key: list[str]) -> None:
    handle = Client(server.url).get_or_create("probe", key)
    gc.collect()
    assert handle.increment(1) == 1  # the client is still open while the handle lives
    (thread,) = portal_threads()
    del handle
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.anyio
async def test_usable_inside_running_event_loop(server: TestServer, key: list[str]) -> None:
    # Blocking calls from a coroutine block this loop, but they must work: the requests run on
    # the portal's own loop.
    with Client(server.url) as client:
        handle = client.get_or_create("probe", key)
        assert handle.increment(1) == 1
        assert handle.resolve() == handle.actor_id


def test_usable_from_many_threads(server: TestServer, key: list[str]) -> None:
    results: list[int] = []
    with Client(server.url) as client:
        handle = client.get_or_create("probe", key)

        def work() -> None:
            for _ in range(5):
                results.append(handle.increment(1))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(results) == list(range(1, 21))


def test_validation_errors_are_raised_in_caller(server: TestServer) -> None:
    with Client(server.url) as client:
        with pytest.raises(ValueError):
            client.get("probe", ["x" * 129])
        with pytest.raises(ValueError):
            client.get_or_create("probe", ["x"], input="y" * 5000)
        with pytest.raises(ValueError):
            client.create("probe", ["x" * 129])
    assert server.requests == []


def test_same_names_as_async_client() -> None:
    import inspect

    import rivetkit.client
    import rivetkit.client.sync

    assert rivetkit.client.sync.__all__ == [
        "ActorConn",
        "ActorHandle",
        "ActorResponse",
        "Client",
        "ConnStatus",
        "EventStream",
    ]
    assert rivetkit.client.sync.ConnStatus is rivetkit.client.ConnStatus
    for sync_cls, async_cls in [
        (Client, rivetkit.client.Client),
        (ActorHandle, rivetkit.client.ActorHandle),
        (rivetkit.client.sync.ActorConn, rivetkit.client.ActorConn),
        (rivetkit.client.sync.EventStream, rivetkit.client.EventStream),
        (rivetkit.client.sync.ActorResponse, rivetkit.client.ActorResponse),
    ]:
        sync_names = {n for n in vars(sync_cls) if not n.startswith("_")}
        async_names = {n for n in vars(async_cls) if not n.startswith("_")}
        assert sync_names - {"close"} == async_names - {"aclose"}, sync_cls
        for name in sync_names - {"close"}:
            sync_attr, async_attr = getattr(sync_cls, name), getattr(async_cls, name)
            if callable(sync_attr):
                assert list(inspect.signature(sync_attr).parameters) == list(
                    inspect.signature(async_attr).parameters
                ), name
    assert list(inspect.signature(Client).parameters) == list(
        inspect.signature(rivetkit.client.Client).parameters
    )
