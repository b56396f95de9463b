"""The envoy connection under loss: reconnect, lost threshold and eviction (spec §12: 7, 21, 22).

Our envoy reaches the engine through a loopback TCP proxy that the test can cut (every open
connection reset) and close (new connections refused), which is what a network failure looks
like from both ends.
"""

from __future__ import annotations

import asyncio
import functools
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rivetkit._protocol import envoy as p
from rivetkit.client import Client
from rivetkit.config import EngineConfig
from rivetkit.drivers.engine.sqlite import DepotUnavailable
from tests.engine.engine_app import make_registry
from tests.engine.engine_proc import Engine
from tests.engine.helpers import until as _until
from tests.engine.raw_envoy import RawEnvoy

pytestmark = pytest.mark.anyio


class Proxy:
    """Forwards 127.0.0.1:<port> to the engine; ``cut()`` resets every connection, ``refuse``
    makes new connections fail at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refuse = False
        self.blackhole_up = False  # drop what the runtime sends (the engine never sees it)
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.close()
            return
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool
        ) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    if upstream and self.blackhole_up:
                        continue
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers.discard(writer)
        self._writers.discard(up_writer)

    def cut(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


until = functools.partial(_until, timeout=15.0, step=0.02)


@pytest.fixture
def lossy_engine(request: pytest.FixtureRequest, engine_factory: Callable[..., Engine]) -> Engine:
    """An engine that gives a silent envoy up after 1.5 s (or ``param`` ms when parametrized)."""
    threshold = getattr(request, "param", 1500)
    return engine_factory(pegboard={"envoy_lost_threshold": threshold})


@pytest.fixture
async def proxied(
    lossy_engine: Engine, tmp_path: Path
) -> AsyncIterator[tuple[Any, Client, Proxy, str]]:
    pool = f"pool-{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(lossy_engine.put_runner_config, pool)
    proxy = Proxy(lossy_engine.guard_port)
    port = await proxy.start()
    registry = make_registry(storage_path=tmp_path / "data")
    registry.use_engine(
        EngineConfig(endpoint=f"http://127.0.0.1:{port}", pool=pool, drain_timeout=5)
    )
    await registry.start()
    await registry.driver.wait_ready(10)
    client = Client(lossy_engine.endpoint, pool_name=pool)  # clients go straight to the engine
    try:
        yield registry, client, proxy, pool
    finally:
        await client.aclose()
        proxy.refuse = False
        await registry.stop()
        await proxy.close()


async def test_a_short_disconnect_keeps_the_actors(proxied: Any) -> None:
    registry, client, proxy, _ = proxied
    handle = client.get_or_create("notes", [uuid.uuid4().hex])  # sleeps after 30 s idle
    assert await handle.add("a") == 1
    (actor_id,) = registry.driver.awake
    instance = registry.driver.awake[actor_id]
    connections = proxy.connections
    proxy.cut()
    await until(lambda: proxy.connections > connections and registry.driver.envoy.ready)
    # Same generation, same instance: the engine kept the actor on this envoy.
    assert await handle.add("b") == 2
    assert registry.driver.awake.get(actor_id) is instance
    assert await handle.bodies() == ["a", "b"]


async def test_disconnected_past_the_lost_threshold_gives_up_the_actors(proxied: Any) -> None:
    registry, client, proxy, _ = proxied
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    assert await handle.increment(4) == 4
    actor_id, _ = await handle.whoami()
    first = registry.driver.awake[actor_id]
    proxy.refuse = True
    proxy.cut()
    # The runtime stops its actors on its own once the threshold (1.5 s) passes.
    await until(lambda: actor_id not in registry.driver._hosted, timeout=10)
    assert first.stopped
    proxy.refuse = False
    await until(lambda: registry.driver.envoy.ready, timeout=15)
    # The engine starts the actor again (here or elsewhere); nothing acknowledged is lost.
    assert await handle.get() == 4
    assert registry.driver.awake[actor_id] is not first


async def test_eviction_stops_reconnecting(proxied: Any, lossy_engine: Engine) -> None:
    registry, client, proxy, pool = proxied
    envoy = registry.driver.envoy
    url = lossy_engine.envoy_url(pool, envoy_key=envoy.envoy_key)
    # A second process with our key evicts us. Under load the engine has been seen to drop the
    # old socket without the ws.eviction close (then reconnecting is right, and we evict the
    # newcomer in turn): try again a couple of times before calling it a failure.
    for _ in range(3):
        other = await RawEnvoy.connect(url, envoy_key=envoy.envoy_key)
        try:
            try:
                await until(lambda: envoy._terminated is not None, timeout=5)
            except AssertionError:
                continue
            assert envoy._terminated is not None and envoy._terminated.code == "ws.eviction"
            connections = proxy.connections
            await asyncio.sleep(1.5)  # longer than the first reconnect backoff
            assert proxy.connections == connections
            return
        finally:
            await other.close()
    raise AssertionError("the engine never evicted our envoy with ws.eviction")


@pytest.mark.parametrize("lossy_engine", [15000], indirect=True)  # a blip, not a loss
async def test_unacknowledged_start_is_replayed_once_and_events_are_resent(
    proxied: Any, lossy_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """§12.20 and §12.21 from the runtime's side: the engine never saw our ack of a start nor
    its Running event; after the reconnect it replays the start (we must not start the actor
    twice) and we re-send the events it has not acknowledged (Running), so the actor serves."""
    registry, client, proxy, pool = proxied
    caplog.set_level("INFO", logger="rivetkit.envoy")
    proxy.blackhole_up = True
    _, body = await asyncio.to_thread(
        lossy_engine.api,
        "POST",
        "/actors",
        {"name": "keeper", "key": uuid.uuid4().hex, "runner_name_selector": pool,
         "crash_policy": "sleep"},
    )
    actor_id = body["actor"]["actor_id"]
    # The start arrived; its ack and its first page fetch went nowhere.
    await until(lambda: actor_id in registry.driver._hosted)
    hosted = registry.driver._hosted[actor_id]
    connections = proxy.connections
    proxy.blackhole_up = False
    proxy.cut()
    await until(lambda: proxy.connections > connections and registry.driver.envoy.ready)
    # The page fetch is asked again, the start completes, Running reaches the engine.
    await until(lambda: actor_id in registry.driver.awake)
    handle = client.get_for_id("keeper", actor_id)
    assert await handle.increment(5) == 5
    assert registry.driver._hosted[actor_id] is hosted  # the replayed start was dropped
    assert registry.driver.awake[actor_id].generation == 1
    replays = [r for r in caplog.records if r.getMessage().startswith("replayed command dropped")
               and actor_id in r.getMessage()]
    assert replays, "the engine did not replay the unacknowledged start"


@pytest.mark.parametrize("lossy_engine", [15000], indirect=True)  # a blip, not a loss
async def test_an_intent_lost_with_the_connection_is_resent(
    proxied: Any, lossy_engine: Engine
) -> None:
    """§12.21: the sleep intent (an event) goes out while the engine cannot hear us; after the
    reconnect it is re-sent, the engine answers with the stop, the actor sleeps cleanly."""
    registry, client, proxy, _ = proxied
    handle = client.get_or_create("counter", [uuid.uuid4().hex])  # sleeps after 0.5 s idle
    assert await handle.increment(3) == 3
    actor_id, _ = await handle.whoami()
    hosted = registry.driver._hosted[actor_id]
    proxy.blackhole_up = True
    await until(lambda: hosted.intent_sent)  # idle: it asked to sleep, unheard
    await asyncio.sleep(0.3)
    assert actor_id in registry.driver._hosted  # still waiting for the engine's stop command
    connections = proxy.connections
    proxy.blackhole_up = False
    proxy.cut()
    await until(lambda: actor_id not in registry.driver._hosted)
    assert proxy.connections > connections
    for _ in range(200):
        _, body = await asyncio.to_thread(lossy_engine.api, "GET", f"/actors?actor_ids={actor_id}")
        actor = body["actors"][0]
        if actor["sleep_ts"] is not None:
            break
        await asyncio.sleep(0.02)
    assert actor["sleep_ts"] is not None and not actor.get("error")
    assert await handle.increment(1) == 4


async def test_a_request_the_engine_never_answers_fails_after_the_request_timeout(
    proxied: Any,
) -> None:
    registry, _, proxy, _ = proxied
    envoy = registry.driver.envoy
    envoy.request_timeout = 0.3
    proxy.blackhole_up = True  # the request never reaches the engine; the socket stays up
    try:
        with pytest.raises(DepotUnavailable, match=r"did not answer ToRivetKvRequest within 0.3 s"):
            await asyncio.wait_for(envoy.kv("no-such-actor", p.KvGetRequest(keys=[b"k"])), 5)
    finally:
        proxy.blackhole_up = False
    assert not envoy._requests and not envoy._deadlines  # nothing left behind
    envoy.request_timeout = 30.0
