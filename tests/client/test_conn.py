"""Connections (``handle.connect()``), raw ``fetch``/``websocket`` end to end against a real server.

Each test serves ``tests/client/realtime_app.py`` with the registry's own uvicorn server class
(so a stop closes sockets with ``ws.going_away`` like ``registry.serve()``) on 127.0.0.1, inside
the test's event loop. :class:`FaultApp` can answer the next ``/connect`` upgrades with a close or
an HTTP refusal, to test the retry rules against real sockets. Reconnect delays are shrunk to a
few milliseconds; nothing sleeps for a fixed time: tests wait for conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets

import rivetkit
from rivetkit._server.serve import RegistryServer
from rivetkit.client import ActorConn, ActorError, Client, ConnStatus, Encoding
from tests.client.realtime_app import chat

pytestmark = pytest.mark.anyio

ENCODINGS: tuple[Encoding, ...] = ("json", "cbor", "bare")


# -- server ---------------------------------------------------------------------------------------


@dataclass
class Fault:
    """What to do with one ``/connect`` upgrade instead of serving it."""

    kind: str  # "close": accept then close(code, reason); "http": refuse with status + body
    code: int = 1011
    reason: str = ""
    status: int = 503
    body: bytes = b""


@dataclass
class FaultApp:
    """ASGI wrapper: the next ``/connect`` upgrades consume ``faults`` in order."""

    app: Any
    faults: list[Fault] = field(default_factory=list)
    connects: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"].endswith("/connect"):
            self.connects += 1
            if self.faults:
                await self._fault(self.faults.pop(0), receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _fault(fault: Fault, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        if fault.kind == "close":
            await send({"type": "websocket.accept", "subprotocol": "rivet"})
            await send({"type": "websocket.close", "code": fault.code, "reason": fault.reason})
            return
        await send(
            {
                "type": "websocket.http.response.start",
                "status": fault.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": fault.body})


class LiveServer:
    """The chat registry under uvicorn on 127.0.0.1; can be stopped and started again on the
    same port with the same storage (a restart, as far as clients can tell)."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.port = 0
        self.app: FaultApp | None = None
        self.faults: list[Fault] = []
        self._server: RegistryServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        registry = rivetkit.setup(chat, storage_path=self.storage)
        self.app = FaultApp(registry.asgi(), self.faults)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
        )
        server = RegistryServer(registry, config)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.005)
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self._server, self._task = server, task

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        await asyncio.wait_for(task, 15)

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveServer]:
    server = LiveServer(tmp_path / "storage")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def make_client(server: LiveServer, encoding: Encoding = "bare") -> AsyncIterator[Client]:
    client = Client(server.url, encoding=encoding)
    client._retry_delay = 0.0
    client._request_retry_delay = (0.0, 0.0)
    client._metadata_retry_delay = (0.0, 0.0)
    client._reconnect_delay = (0.005, 0.05)
    client._open_timeout = 5.0
    try:
        yield client
    finally:
        await client.aclose()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (polling every few ms) until ``predicate()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


def record_frames(conn: ActorConn) -> list[Any]:
    """Decoded frames the connection receives from now on (wraps its state machine)."""
    proto = conn._proto
    codec = proto._codec
    received: list[Any] = []
    original = proto.receive

    def receive(data: bytes | str) -> Any:
        received.append(codec.decode_to_client(data))
        return original(data)

    proto.receive = receive  # type: ignore[method-assign]
    return received


def statuses(conn: ActorConn) -> list[str]:
    seen: list[str] = []
    conn.on_status_change(lambda status: seen.append(str(status)))
    return seen


def key(request: pytest.FixtureRequest) -> list[str]:
    return [request.node.name]


# -- actions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_actions_over_the_socket(
    live: LiveServer, encoding: Encoding, request: pytest.FixtureRequest
) -> None:
    async with make_client(live, encoding) as client:
        handle = client.get_or_create("chat", key(request))
        conn = handle.connect({"name": "ann"})
        seen = statuses(conn)
        assert conn.status is ConnStatus.CONNECTING
        async with conn:
            await conn.wait_connected(5)
            assert str(conn.status) == "connected"
            assert seen == ["connected"]
            assert conn.actor_id and conn.connection_id
            assert await conn.post("hello") == 1
            assert await conn.action("messages") == ["hello"]
            assert await conn.params() == {"name": "ann"}
            info = await conn.info()
            assert info["conn_id"] == conn.connection_id
            # ten concurrent actions, answered in reverse order
            results = await asyncio.gather(*(conn.countdown(i) for i in range(10)))
            assert results == list(range(10))
            assert await handle.action("messages") == ["hello"]  # same actor over HTTP
        assert str(conn.status) == "idle"
        assert seen == ["connected", "idle"]


async def test_actions_before_connected_are_queued(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with make_client(live) as client:
        conn = client.get_or_create("chat", key(request)).connect()
        async with conn:
            first = asyncio.ensure_future(conn.increment(1))
            second = asyncio.ensure_future(conn.increment(2))
            assert list(await asyncio.gather(first, second)) == [1, 3]


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_action_error_keeps_the_connection_usable(
    live: LiveServer, encoding: Encoding, request: pytest.FixtureRequest
) -> None:
    async with (
        make_client(live, encoding) as client,
        client.get_or_create("chat", key(request)).connect() as conn,
    ):
        with pytest.raises(ActorError) as info:
            await conn.fail()
        error = info.value
        assert (error.group, error.code, error.message, error.metadata) == (
            "user",
            "my_code",
            "boom happened",
            {"a": 1},
        )
        assert error.actor is not None
        assert error.actor["actorId"] == conn.actor_id
        with pytest.raises(ActorError) as missing:
            await conn.action("nope")
        assert missing.value.full_code == "actor.action_not_found"
        assert await conn.increment(5) == 5
        assert conn.status is ConnStatus.CONNECTED


# -- events --------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_events_on_once_unsubscribe_and_iterator(
    live: LiveServer, encoding: Encoding, request: pytest.FixtureRequest
) -> None:
    async with make_client(live, encoding) as client:
        handle = client.get_or_create("chat", key(request))
        async with handle.connect() as a, handle.connect() as b:
            b_frames = record_frames(b)
            on_counts: list[int] = []
            once_counts: list[int] = []
            unsubscribe = a.on("count", on_counts.append)
            a.once("count", once_counts.append)
            pairs: list[tuple[Any, ...]] = []
            a.on("pair", lambda *args: pairs.append(args))
            stream = a.events("message")
            await a.wait_connected(5)
            await b.wait_connected(5)

            assert await b.increment(1) == 1
            assert await b.increment(2) == 3
            await until(lambda: on_counts == [1, 3])
            assert once_counts == [1]
            await b.pair()
            await until(lambda: pairs == [(1, "two")])
            await b.post("hi")
            assert await asyncio.wait_for(stream.__anext__(), 5) == {"text": "hi", "by": None}

            # b never subscribed: the server sent it no event at all
            assert not [f for f in b_frames if type(f).__name__ == "Event"]

            a_frames = record_frames(a)
            unsubscribe()
            unsubscribe()  # idempotent
            await stream.aclose()
            # frames leave in order: the unsubscriptions reach the server before this action
            assert await a.increment(0) == 3
            assert await b.increment(1) == 4
            assert await a.increment(0) == 4  # answered after any event queued for a
            assert on_counts == [1, 3]
            assert [f for f in a_frames if type(f).__name__ == "Event"] == []
            assert a._proto.subscriptions == ["pair"]


async def test_events_iterator_ends_on_dispose(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with make_client(live) as client:
        conn = client.get_or_create("chat", key(request)).connect()
        received: list[Any] = []

        async def consume() -> None:
            async for item in conn.events("count"):
                received.append(item)

        consumer = asyncio.ensure_future(consume())
        await conn.wait_connected(5)
        await conn.increment(7)
        await until(lambda: received == [7])
        await conn.dispose()
        await asyncio.wait_for(consumer, 5)


async def test_events_overflow(live: LiveServer, request: pytest.FixtureRequest) -> None:
    async with (
        make_client(live) as client,
        client.get_or_create("chat", key(request)).connect() as conn,
    ):
        dropping = conn.events("count", max_queue=2)
        failing = conn.events("count", max_queue=2, overflow="error")
        for i in range(1, 4):
            await conn.increment(1)
        await until(lambda: dropping.dropped == 1)
        assert [await dropping.__anext__(), await dropping.__anext__()] == [2, 3]
        assert [await failing.__anext__(), await failing.__anext__()] == [1, 2]
        with pytest.raises(ActorError) as info:
            await failing.__anext__()
        assert info.value.full_code == "client.event_overflow"
        await dropping.aclose()


async def test_secret_event_needs_admin_params(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with make_client(live) as client:
        handle = client.get_or_create("chat", key(request))
        async with handle.connect({"admin": True}) as conn:
            secrets: list[str] = []
            conn.on("secret", secrets.append)
            await conn.wait_connected(5)
            await conn.whisper("psst")
            await until(lambda: secrets == ["psst"])


# -- rejection, errors, params -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_rejected_connection_is_fatal(
    live: LiveServer, encoding: Encoding, request: pytest.FixtureRequest
) -> None:
    async with make_client(live, encoding) as client:
        conn = client.get_or_create("chat", key(request)).connect({"reject": True})
        errors: list[ActorError] = []
        conn.on_error(errors.append)
        seen = statuses(conn)
        pending = asyncio.ensure_future(conn.increment(1))
        with pytest.raises(ActorError) as info:
            await conn.wait_connected(5)
        error = info.value
        assert (error.group, error.code, error.message, error.metadata) == (
            "user",
            "forbidden",
            "go away",
            {"why": "test"},
        )
        with pytest.raises(ActorError) as pending_info:
            await pending
        assert pending_info.value is error
        assert errors == [error]
        assert conn.status is ConnStatus.IDLE
        assert conn.error is error
        assert seen == ["idle"]
        with pytest.raises(ActorError):
            await conn.increment(1)
        assert live.app is not None and live.app.connects == 1  # no retry
        await conn.dispose()


async def test_get_for_id_missing_actor_goes_idle(live: LiveServer) -> None:
    async with make_client(live) as client:
        conn = client.get_for_id("chat", "does-not-exist").connect()
        with pytest.raises(ActorError) as info:
            await conn.wait_connected(5)
        assert info.value.group == "actor"
        assert conn.status is ConnStatus.IDLE
        await conn.dispose()


async def test_get_handle_retries_until_the_actor_exists(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with make_client(live) as client, client.get("chat", key(request)).connect() as conn:
        # the server closes 1011 "actor.not_found": stale-actor code, retried for get handles
        await until(lambda: live.app is not None and live.app.connects >= 3)
        assert conn.status is not ConnStatus.IDLE
        await client.get_or_create("chat", key(request)).increment(3)  # now it exists
        await conn.wait_connected(10)
        assert await conn.increment(1) == 4


async def test_get_params_is_called_for_every_attempt(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    calls = 0

    async def get_params() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("token service down")  # retried as client.get_params_failed
        return {"attempt": calls}

    async with make_client(live) as client:
        handle = client.get_or_create("chat", key(request))
        async with handle.connect(get_params=get_params) as conn:
            seen = statuses(conn)
            assert await conn.params() == {"attempt": 1}
            await conn.kick()  # the server closes 1000 "kicked": the client reconnects
            await until(lambda: seen.count("connected") == 2)
            assert await conn.params() == {"attempt": 3}
            assert calls == 3
            assert seen == [
                "connected",
                "disconnected",
                "connecting",  # get_params fails: retried
                "disconnected",
                "connecting",
                "connected",
            ]


async def test_sync_get_params_and_handle_params(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with make_client(live) as client:
        handle = client.get_or_create("chat", key(request), params={"name": "from-handle"})
        async with handle.connect() as conn:
            assert await conn.params() == {"name": "from-handle"}
        async with handle.connect({"name": "explicit"}) as conn:
            assert await conn.params() == {"name": "explicit"}
        async with handle.connect(get_params=lambda: {"name": "fn"}) as conn:
            assert await conn.params() == {"name": "fn"}


# -- reconnection --------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_reconnect_after_server_restart(
    live: LiveServer, encoding: Encoding, request: pytest.FixtureRequest
) -> None:
    async with make_client(live, encoding) as client:
        handle = client.get_or_create("chat", key(request))
        async with handle.connect() as conn:
            seen = statuses(conn)
            counts: list[int] = []
            conn.on("count", counts.append)
            opened: list[str | None] = []
            closed: list[bool] = []
            conn.on_open(lambda: opened.append(conn.connection_id))
            conn.on_close(lambda: closed.append(True))
            await conn.wait_connected(5)
            assert await conn.increment(10) == 10
            first_id = conn.connection_id

            await live.stop()
            await until(lambda: conn.status is not ConnStatus.CONNECTED)
            queued = asyncio.ensure_future(conn.increment(1))  # made while the server is down
            await asyncio.sleep(0)
            assert not queued.done()
            await live.start()

            assert await asyncio.wait_for(queued, 10) == 11  # state kept, queued action sent
            assert conn.status is ConnStatus.CONNECTED
            assert conn.connection_id != first_id
            await until(lambda: counts == [10, 11])  # re-subscribed before the queued action
            assert seen[:2] == ["connected", "disconnected"]
            assert seen[-1] == "connected"
            assert "connecting" in seen
            assert "idle" not in seen
            assert closed and len(opened) >= 1


async def test_going_away_and_503_before_init_are_retried(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    live.faults.extend(
        [
            Fault("close", code=1011, reason="ws.going_away"),
            Fault(
                "http",
                status=503,
                body=b'{"group":"guard","code":"service_unavailable","message":"later"}',
            ),
            Fault("close", code=1011, reason="actor.restarting#ray1"),
            Fault("close", code=1012),
        ]
    )
    async with (
        make_client(live) as client,
        client.get_or_create("chat", key(request)).connect() as conn,
    ):
        seen = statuses(conn)
        assert await conn.increment(2) == 2
        assert live.app is not None and live.app.connects == 5
        assert seen == ["disconnected", "connecting"] * 4 + ["connected"]


@pytest.mark.parametrize(
    "fault",
    [
        Fault("close", code=1011, reason=""),
        Fault("close", code=1011, reason="foo.bar"),
        Fault("http", status=403, body=b'{"group":"auth","code":"forbidden","message":"no"}'),
    ],
    ids=["1011-no-reason", "1011-foo.bar", "403-auth"],
)
async def test_fatal_failures_before_init_are_not_retried(
    live: LiveServer, fault: Fault, request: pytest.FixtureRequest
) -> None:
    live.faults.append(fault)
    async with (
        make_client(live) as client,
        client.get_or_create("chat", key(request)).connect() as conn,
    ):
        with pytest.raises(ActorError) as info:
            await conn.increment(1)
        assert conn.status is ConnStatus.IDLE
        assert live.app is not None and live.app.connects == 1
        if fault.kind == "http":
            assert (info.value.group, info.value.code, info.value.status) == (
                "auth",
                "forbidden",
                403,
            )


async def test_in_flight_action_fails_when_the_connection_is_lost(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with (
        make_client(live) as client,
        client.get_or_create("chat", key(request)).connect() as conn,
    ):
        await conn.wait_connected(5)
        waiting = asyncio.ensure_future(conn.hang())
        await until(lambda: conn._proto.in_flight != [])
        await live.stop()
        with pytest.raises(ActorError) as info:
            await asyncio.wait_for(waiting, 10)
        assert info.value.full_code in ("ws.going_away", "client.connection_lost")
        await live.start()
        await conn.wait_connected(10)
        assert await conn.increment(1) == 1


# -- dispose -------------------------------------------------------------------------------------


async def test_dispose_runs_on_disconnect_and_rejects_pending(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with make_client(live) as client:
        handle = client.get_or_create("chat", key(request))
        conn = handle.connect()
        await conn.wait_connected(5)
        assert (await conn.info())["connects"] == 1
        closed: list[bool] = []
        conn.on_close(lambda: closed.append(True))
        waiting = asyncio.ensure_future(conn.hang())
        await until(lambda: conn._proto.in_flight != [])
        await conn.dispose()
        await conn.dispose()
        assert conn.is_disposed and conn.status is ConnStatus.IDLE
        assert closed == [True]
        with pytest.raises(ActorError) as info:
            await waiting
        assert info.value.full_code == "client.disposed"
        with pytest.raises(ActorError):
            await conn.increment(1)
        with pytest.raises(ActorError):
            await conn.wait_connected()
        # the server ran on_disconnect (seen from a stateless HTTP action)
        await until_async(lambda: handle.action("info"), lambda i: i["disconnects"] == 1)


async def until_async(
    fetch: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], timeout: float = 10.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check(await fetch()):
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_client_close_disposes_connections(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with make_client(live) as client:
        conn = client.get_or_create("chat", key(request)).connect()
        await conn.wait_connected(5)
    assert conn.is_disposed
    assert conn.status is ConnStatus.IDLE
    with pytest.raises(RuntimeError):
        client.get_or_create("chat", key(request)).connect()


async def test_connect_outside_a_loop_starts_on_first_use(
    live: LiveServer, request: pytest.FixtureRequest
) -> None:
    async with make_client(live) as client:
        handle = client.get_or_create("chat", key(request))
        conn = await asyncio.to_thread(handle.connect)  # no running loop in that thread
        assert conn.status is ConnStatus.IDLE
        async with conn:
            assert await conn.increment(1) == 1


async def test_wait_connected_timeout(live: LiveServer) -> None:
    live.faults.extend([Fault("close", code=1011, reason="ws.going_away")] * 1000)
    async with (
        make_client(live) as client,
        client.get_or_create("chat", ["timeout"]).connect() as conn,
    ):
        with pytest.raises(TimeoutError):
            await conn.wait_connected(0.05)


# -- raw fetch and websocket ----------------------------------------------------------------------


async def test_fetch(live: LiveServer, request: pytest.FixtureRequest) -> None:
    async with make_client(live) as client:
        handle = client.get_or_create("chat", key(request), params={"p": 1})
        response = await handle.fetch("/hello?x=1", headers={"x-test": "yes"})
        assert response.status == 200 and response.ok
        assert response.headers["x-custom"] == "yes"
        assert await response.json() == {
            "method": "GET",
            "path": "/hello",
            "query": {"x": "1"},
            "body": "",
            "x_test": "yes",
            "params": {"p": 1},
        }
        posted = await handle.fetch("echo", method="POST", body="payload ü")
        assert posted.status == 201
        assert (await posted.json())["body"] == "payload ü"
        missing = await handle.fetch("/missing")
        assert (missing.status, missing.ok, await missing.text()) == (404, False, "nope")
        assert await missing.read() == b"nope"
        # by id too
        actor_id = await handle.resolve()
        direct = await client.get_for_id("chat", actor_id).fetch("/d")
        assert (await direct.json())["path"] == "/d"


async def test_websocket(live: LiveServer, request: pytest.FixtureRequest) -> None:
    async with make_client(live) as client:
        handle = client.get_or_create("chat", key(request), params={"p": "x"})
        ws = await handle.websocket("room/1?r=2")
        try:
            assert ws.subprotocol == "rivet"
            hello = json.loads(await ws.recv())
            assert hello == {"path": "/websocket/room/1", "query": {"r": "2"}, "params": {"p": "x"}}
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
            await ws.send(b"\x01\x02\x03")
            assert await ws.recv() == b"\x03\x02\x01"
            await ws.send("bye")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye now")
        finally:
            await ws.close()


async def test_websocket_unreachable() -> None:
    from tests._proc import free_port

    client = Client(f"http://127.0.0.1:{free_port()}")
    client._resolved = client._config  # skip /metadata
    try:
        with pytest.raises(ActorError) as info:
            await client.get_or_create("chat", ["x"]).websocket()
        assert info.value.full_code == "client.network_error"
    finally:
        await client.aclose()
