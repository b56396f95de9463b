"""The blocking twin of connections, fetch and websocket against the shared test server."""

from __future__ import annotations

import gc
import json
import queue
import threading
from typing import TYPE_CHECKING, Any

import pytest
import websockets

from rivetkit.client import ActorError, ConnStatus, Encoding
from rivetkit.client.sync import ActorConn, ActorResponse, Client, EventStream

if TYPE_CHECKING:
    from conftest import TestServer

ENCODINGS = ("json", "cbor", "bare")
PORTAL = "rivetkit-client-portal"


@pytest.fixture(autouse=True)
def no_leaked_portals() -> Any:
    before = {t for t in threading.enumerate() if t.name == PORTAL}
    yield
    gc.collect()
    leaked = [t for t in threading.enumerate() if t.name == PORTAL and t not in before]
    assert leaked == [], "a sync client left its portal thread running"


def fast(client: Client) -> Client:
    client._client._reconnect_delay = (0.005, 0.05)
    return client


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_actions_events_and_status(server: TestServer, key: list[str], encoding: Encoding) -> None:
    with fast(Client(server.url, encoding=encoding)) as client:
        handle = client.get_or_create("chat", key)
        with handle.connect({"name": "sync"}) as conn:
            assert isinstance(conn, ActorConn)
            statuses: queue.Queue[str] = queue.Queue()
            conn.on_status_change(lambda status: statuses.put(str(status)))
            counts: queue.Queue[tuple[int, str]] = queue.Queue()
            unsubscribe = conn.on(
                "count", lambda n: counts.put((n, threading.current_thread().name))
            )
            once: list[int] = []
            conn.once("count", once.append)
            conn.wait_connected(5)
            assert conn.status is ConnStatus.CONNECTED
            assert conn.actor_id and conn.connection_id
            assert conn.params() == {"name": "sync"}
            assert conn.action("increment", 2) == 2
            assert counts.get(timeout=5) == (2, PORTAL)  # callbacks run on the portal thread
            assert conn.increment(1) == 3
            assert counts.get(timeout=5) == (3, PORTAL)
            assert once == [2]
            unsubscribe()  # from this (non-portal) thread
            assert conn.increment(1) == 4
            assert counts.empty()
            with pytest.raises(ActorError) as info:
                conn.fail()
            assert info.value.full_code == "user.my_code"
            assert conn.increment(0) == 4
        assert str(conn.status) == "idle"
        assert conn.is_disposed
        assert statuses.get(timeout=5) in ("connected", "idle")


def test_events_blocking_iterator(server: TestServer, key: list[str]) -> None:
    with fast(Client(server.url)) as client:
        handle = client.get_or_create("chat", key)
        with handle.connect() as conn:
            with conn.events("message") as messages:
                assert isinstance(messages, EventStream)
                assert messages.name == "message"
                conn.post("one")
                conn.post("two")
                assert next(messages) == {"text": "one", "by": None}
                assert next(messages) == {"text": "two", "by": None}
            assert list(messages) == []  # closed: the iteration is over
            pairs = conn.events("pair")
            conn.pair()
            assert next(pairs) == (1, "two")
            conn.dispose()
            assert list(pairs) == []  # dispose ends every iterator


def test_rejection_is_fatal(server: TestServer, key: list[str]) -> None:
    with fast(Client(server.url)) as client:
        conn = client.get_or_create("chat", key).connect({"reject": True})
        errors: list[ActorError] = []
        conn.on_error(errors.append)
        with pytest.raises(ActorError) as info:
            conn.increment(1)
        assert info.value.full_code == "user.forbidden"
        with pytest.raises(ActorError):
            conn.wait_connected(5)
        assert conn.status is ConnStatus.IDLE
        assert conn.error is info.value
        conn.dispose()


def test_blocking_call_from_a_callback_raises(server: TestServer, key: list[str]) -> None:
    with (
        fast(Client(server.url)) as client,
        client.get_or_create("chat", key).connect() as conn,
    ):
        outcome: queue.Queue[BaseException | None] = queue.Queue()

        def callback(_: int) -> None:
            try:
                conn.increment(1)
            except BaseException as exc:  # noqa: BLE001 - reported to the test thread
                outcome.put(exc)
            else:
                outcome.put(None)

        conn.once("count", callback)
        conn.increment(1)
        assert isinstance(outcome.get(timeout=5), RuntimeError)


def test_get_params_runs_per_attempt(server: TestServer, key: list[str]) -> None:
    calls: list[str] = []

    def get_params() -> dict[str, int]:
        calls.append(threading.current_thread().name)
        return {"n": len(calls)}

    with (
        fast(Client(server.url)) as client,
        client.get_or_create("chat", key).connect(get_params=get_params) as conn,
    ):
        assert conn.params() == {"n": 1}
        reconnected = threading.Event()
        conn.on_open(reconnected.set)
        conn.kick()
        assert reconnected.wait(5)
        assert conn.params() == {"n": 2}
        assert calls == [PORTAL, PORTAL]


def test_fetch_and_websocket(server: TestServer, key: list[str]) -> None:
    with Client(server.url) as client:
        handle = client.get_or_create("chat", key, params={"p": 2})
        response = handle.fetch("/path?q=1", method="POST", headers={"x-test": "t"}, body=b"xyz")
        assert isinstance(response, ActorResponse)
        assert (response.status, response.ok, response.headers["x-custom"]) == (201, True, "yes")
        assert response.json() == {
            "method": "POST",
            "path": "/path",
            "query": {"q": "1"},
            "body": "xyz",
            "x_test": "t",
            "params": {"p": 2},
        }
        assert json.loads(response.text()) == json.loads(response.read())
        missing = handle.fetch("missing")
        assert (missing.status, missing.text()) == (404, "nope")

        ws = handle.websocket("/sock?a=b")
        try:
            assert json.loads(ws.recv(timeout=5)) == {
                "path": "/websocket/sock",
                "query": {"a": "b"},
                "params": {"p": 2},
            }
            ws.send("ping")
            assert ws.recv(timeout=5) == "echo:ping"
            ws.send(b"ab")
            assert ws.recv(timeout=5) == b"ba"
        finally:
            ws.close()


def test_websocket_to_an_unreachable_server() -> None:
    from tests._proc import free_port

    with Client(f"http://127.0.0.1:{free_port()}") as client:
        client._client._resolved = client._client._config  # skip /metadata
        with pytest.raises(ActorError) as info:
            client.get_or_create("chat", ["x"]).websocket()
        assert info.value.full_code == "client.network_error"
        assert isinstance(info.value.__cause__, (OSError, websockets.InvalidHandshake))
