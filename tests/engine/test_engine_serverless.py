"""Serverless engine mode against the real engine (spec §9, conformance scenario §12.28).

The registry serves the serverless app (``GET /api/rivet/metadata``, ``POST /api/rivet/start``) on
a free loopback port via ``serve_engine``; its pool's runner config points the engine at it. A
client request through the engine's gateway makes the engine call ``/start``; the actor runs on
this runtime (its envoy connects on the first start). Every request the engine makes to the
runtime is recorded by wrapping the serverless ASGI app, so the SSE stream of ``/start`` (pings,
then ``stopping`` when the generation stopped) is checked byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import rivetkit
from rivetkit._protocol import envoy as p
from rivetkit.client import Client
from rivetkit.config import EngineConfig, ServerlessConfig
from rivetkit.testing import FakeClock
from tests._proc import ServerProcess, free_port
from tests.engine.engine_app import make_registry
from tests.engine.engine_proc import Engine
from tests.engine.helpers import api, until, wait_actor

pytestmark = pytest.mark.anyio

PING = b"event: ping\ndata:\n\n"
STOPPING = b"event: stopping\ndata:\n\n"


@dataclass
class Exchange:
    """One HTTP request to the serverless app and what it answered, with arrival times."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    finished: bool = False


class Recorder:
    """ASGI wrapper recording every HTTP exchange of the wrapped app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ex = Exchange(
            scope["method"], scope["path"],
            {k.decode(): v.decode("latin-1") for k, v in scope["headers"]},
        )
        self.exchanges.append(ex)

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
                ex.response_headers = {
                    k.decode(): v.decode("latin-1") for k, v in message["headers"]
                }
            elif message["type"] == "http.response.body":
                ex.chunks.append((time.monotonic(), message.get("body", b"")))
                if not message.get("more_body", False):
                    ex.finished = True
            await send(message)

        await self.app(scope, receive, recording_send)

    def starts(self) -> list[Exchange]:
        return [ex for ex in self.exchanges if ex.path.endswith("/start")]


@dataclass
class Runtime:
    registry: rivetkit.Registry
    recorder: Recorder
    pool: str
    base: str  # http://127.0.0.1:PORT/api/rivet
    client: Client


@contextlib.asynccontextmanager
async def serving(
    engine: Engine, storage: Path, clock: FakeClock | None = None
) -> AsyncIterator[Runtime]:
    """The engine_app registry serving serverless mode on a free port, for a new pool."""
    pool = f"sl-{uuid.uuid4().hex[:12]}"
    port = free_port()
    registry = make_registry(storage_path=storage, clock=clock)
    config = EngineConfig(
        endpoint=engine.endpoint,
        pool=pool,
        serverless=ServerlessConfig(request_lifespan=120, drain_grace_period=10),
    )
    registry.use_engine(config)
    recorder = Recorder(registry.serverless_asgi())
    registry._serverless_app = recorder  # serve_engine serves the recording wrapper
    task = asyncio.ensure_future(registry.serve_engine(host="127.0.0.1", port=port))
    base = f"http://127.0.0.1:{port}/api/rivet"
    client = Client(engine.endpoint, pool_name=pool)
    try:
        # serve_engine derives public_url from the bound address (a new driver), then opens it
        await until(lambda: getattr(registry.driver, "envoy", None) is not None or task.done())
        if task.done():
            task.result()
        assert registry.engine is not None and registry.engine.serverless is not None
        assert registry.engine.serverless.public_url == f"http://127.0.0.1:{port}"
        await registry.driver.wait_ready(10)  # the serverless runner config is written
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/health") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.025)
        yield Runtime(registry, recorder, pool, base, client)
    finally:
        await client.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def runtime(engine: Engine, tmp_path: Path) -> AsyncIterator[Runtime]:
    async with serving(engine, tmp_path / "data") as served:
        yield served


async def health(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{runtime.base}/health") as resp:
        return resp.status, await resp.json()


def start_payload(actor_id: str, *, version: int = p.PROTOCOL_VERSION) -> bytes:
    message = p.ToEnvoyCommands(items=[p.CommandWrapper(
        checkpoint=p.ActorCheckpoint(actor_id=actor_id, generation=1, index=0),
        inner=p.CommandStartActor(
            config=p.ActorConfig(
                name="counter", key="direct", create_ts=int(time.time() * 1000), input=None
            ),
            hibernating_requests=[],
            preloaded_kv=None,
        ),
    )])
    return version.to_bytes(2, "little") + p.encode_to_envoy(message)


def start_headers(engine: Engine, pool: str, **override: str) -> dict[str, str]:
    headers = {
        "x-rivet-endpoint": f"{engine.endpoint}/",
        "x-rivet-pool-name": pool,
        "x-rivet-namespace-name": "default",
        "accept": "text/event-stream",
    }
    headers.update(override)
    return headers


async def pool_entry(engine: Engine, pool: str) -> dict[str, Any]:
    body = await api(engine, "GET", f"/runner-configs?runner_names={pool}")
    configs = body["runner_configs"]
    assert pool in configs, body
    return configs[pool]["datacenters"]["default"]  # type: ignore[no-any-return]


async def test_actor_starts_through_post_start_and_the_stream_ends_with_stopping(
    engine: Engine, runtime: Runtime
) -> None:
    registry, client = runtime.registry, runtime.client
    key = [uuid.uuid4().hex]
    handle = client.get_or_create("counter", key)
    # Keep it busy (its sleep timeout is 0.5 s) for ~2.5 s so the stream carries several pings.
    began = time.monotonic()
    count = 0
    while time.monotonic() - began < 2.5:
        count += 1
        assert await handle.increment(1) == count
        await asyncio.sleep(0.3)
    actor_id, got_key = await handle.whoami()
    assert got_key == key
    assert actor_id in registry.driver.awake  # hosted by this runtime (just answered)
    envoy = registry.driver.envoy
    assert envoy is not None and envoy.ready

    (start,) = [ex for ex in runtime.recorder.starts()]
    assert start.method == "POST"
    assert start.headers["x-rivet-pool-name"] == runtime.pool
    assert start.headers["x-rivet-namespace-name"] == "default"
    assert start.status == 200
    assert start.response_headers["content-type"] == "text/event-stream"
    # The actor sleeps after 0.5 s idle: the generation stops and the stream ends.
    await until(lambda: start.finished, timeout=15)
    bodies = [body for _, body in start.chunks if body]
    assert bodies[0] == PING
    assert bodies[-1] == STOPPING
    assert set(bodies[:-1]) == {PING}
    assert len(bodies) - 1 >= 3, bodies
    times = [t for t, body in start.chunks if body == PING]
    gaps = [b - a for a, b in zip(times[1:], times[2:])]  # the first one is sent at once
    assert gaps and all(0.8 <= g <= 1.5 for g in gaps), gaps
    await wait_actor(engine, actor_id, lambda a: a["sleep_ts"] is not None)
    assert actor_id not in registry.driver.awake

    # Waking it is a second POST /start (a new generation) on the same envoy; state persisted.
    assert await handle.increment(1) == count + 1
    assert len(runtime.recorder.starts()) == 2
    assert registry.driver.envoy is envoy
    assert registry.driver.awake[actor_id].generation == 2
    entry = await pool_entry(engine, runtime.pool)
    assert entry.get("runner_pool_error") is None, entry


async def test_metadata_is_the_documented_json_and_the_engine_accepts_it(
    engine: Engine, runtime: Runtime
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{runtime.base}/metadata") as resp:
            assert resp.status == 200
            assert resp.headers["content-type"] == "application/json"
            body = await resp.json()
        async with session.get(f"{runtime.base}/health") as resp:
            assert resp.status == 200
            health = await resp.json()
    assert body == {
        "runtime": "rivetkit",
        "version": rivetkit.__version__,
        "envoyProtocolVersion": 8,
        "actorNames": {name: {"metadata": {}} for name in (
            "counter", "greeter", "keeper", "legacy", "notes")},
        "envoy": {"kind": {"serverless": {}}, "version": 1},
    }
    assert health["status"] == "ok" and health["runtime"] == "rivetkit"
    # The engine polls the metadata (1 s interval) and has no complaint about the pool.
    await until(
        lambda: any(
            ex.path.endswith("/metadata") and ex.headers.get("user-agent", "").startswith("Rivet")
            for ex in runtime.recorder.exchanges
        ),
        timeout=15,
    )
    entry = await pool_entry(engine, runtime.pool)
    assert entry["serverless"]["url"] == runtime.base, entry
    assert entry.get("runner_pool_error") is None, entry
    # The engine learnt the actor names from it.
    names = await api(engine, "GET", "/actors/names")
    assert "counter" in names["names"], names


async def test_health_is_503_while_the_engine_is_silent(
    engine_factory: Any, tmp_path: Path
) -> None:
    """``/health`` tells the platform to recycle the process when the engine link is dead: 200
    before the first start and while pings come (every 3 s), ``503 engine_ping_stale`` after
    20 s without one (the reference runtime's threshold), 200 again at the next ping; 503
    ``shutting_down`` once a shutdown began."""
    own = engine_factory()
    clock = FakeClock()
    async with serving(own, tmp_path / "data", clock) as runtime:
        status, body = await health(runtime)
        assert (status, body["status"], body["envoy"]) == (200, "ok", "idle")
        handle = runtime.client.get_or_create("counter", [uuid.uuid4().hex])
        assert await handle.increment(1) == 1
        status, body = await health(runtime)
        assert (status, body["status"], body["envoy"]) == (200, "ok", "connected")
        with own.paused():
            await asyncio.sleep(0.2)  # a ping already sent is taken before time moves
            await clock.advance(seconds=19.9)
            assert (await health(runtime))[0] == 200
            await clock.advance(seconds=0.1)
            status, body = await health(runtime)
            assert (status, body["status"]) == (503, "engine_ping_stale")
            assert body["runtime"] == "rivetkit" and body["version"] == rivetkit.__version__
        await until(lambda: runtime.registry.driver.envoy.ping_healthy(), timeout=10)
        status, body = await health(runtime)
        assert (status, body["status"]) == (200, "ok")
        assert await handle.increment(1) == 2
        # the first step of a shutdown: from here the platform should route no more traffic
        await runtime.registry.close_connections(timeout=0)
        status, body = await health(runtime)
        assert (status, body["status"]) == (503, "shutting_down")


async def test_start_with_another_endpoint_or_namespace_is_refused(
    engine: Engine, runtime: Runtime
) -> None:
    actor_id = uuid.uuid4().hex
    cases = [
        ({"x-rivet-endpoint": "http://127.0.0.1:1/"}, "endpoint_mismatch"),
        ({"x-rivet-namespace-name": "other"}, "namespace_mismatch"),
        ({"x-rivet-pool-name": "other-pool"}, "pool_mismatch"),
    ]
    async with aiohttp.ClientSession() as session:
        for override, code in cases:
            async with session.post(
                f"{runtime.base}/start",
                data=start_payload(actor_id),
                headers=start_headers(engine, runtime.pool, **override),
            ) as resp:
                assert resp.status == 400, (override, await resp.text())
                body = await resp.json()
                assert (body["group"], body["code"]) == ("config", code), body
    assert actor_id not in runtime.registry.driver.awake
    assert runtime.registry.driver.envoy is not None
    assert not runtime.registry.driver.envoy.connected_once.is_set()  # nothing was started


async def test_start_with_a_bad_body_is_refused_with_a_code(
    engine: Engine, runtime: Runtime
) -> None:
    start = p.decode_to_envoy(start_payload("a" * 10)[2:])
    assert isinstance(start, p.ToEnvoyCommands)
    stop_only = p.ToEnvoyCommands(items=[p.CommandWrapper(
        checkpoint=p.ActorCheckpoint(actor_id="x" * 10, generation=1, index=0),
        inner=p.CommandStopActor(reason=p.StopActorReason.SLEEP_INTENT),
    )])
    bodies = [
        b"",
        b"\x08",
        b"\x08\x00\xff\xff\xff",
        b"\x08\x00" + b"garbage" * 20,
        start_payload("a" * 10, version=7),
        start_payload("a" * 10) + b"\x00",  # trailing byte
        b"\x08\x00" + p.encode_to_envoy(stop_only),
        b"\x08\x00" + p.encode_to_envoy(p.ToEnvoyPing(ts=1)),
        b"\x08\x00" + p.encode_to_envoy(p.ToEnvoyCommands(items=[])),
        b"\x08\x00" + p.encode_to_envoy(p.ToEnvoyCommands(items=[start.items[0]] * 2)),
    ]
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            async with session.post(
                f"{runtime.base}/start", data=body, headers=start_headers(engine, runtime.pool)
            ) as resp:
                assert resp.status == 400, (body, await resp.text())
                error = await resp.json()
                assert (error["group"], error["code"]) == ("request", "invalid"), error
        async with session.post(
            f"{runtime.base}/start", data=start_payload("a" * 10),
            headers={"x-rivet-endpoint": engine.endpoint},
        ) as resp:  # headers missing
            assert resp.status == 400
            assert (await resp.json())["code"] == "invalid"
        async with session.get(f"{runtime.base}/health") as resp:
            assert resp.status == 200  # still serving
        async with session.get(f"{runtime.base}/nope") as resp:
            assert resp.status == 404
    assert runtime.registry.driver.envoy is not None
    assert not runtime.registry.driver.envoy.connected_once.is_set()


async def test_cli_serves_serverless_mode(engine: Engine, tmp_path: Path) -> None:
    """``rivetkit serve APP --engine URL --serverless --port P``: the engine starts an actor on
    the process through POST /start; SIGTERM drains and exits cleanly."""
    pool = f"sl-{uuid.uuid4().hex[:12]}"
    port = free_port()
    app = str(Path(__file__).with_name("engine_app.py"))
    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    proc = ServerProcess(
        [sys.executable, "-m", "rivetkit", "serve", app, "--engine", engine.endpoint,
         "--pool", pool, "--serverless", "--host", "127.0.0.1", "--port", str(port),
         "--storage", str(tmp_path / "data"), "--log-level", "info"],
        port=port, env=env, cwd=Path(__file__).resolve().parents[2],
        log_path=tmp_path / "runtime.log", base_path="/api/rivet",
    ).start()
    client = Client(engine.endpoint, pool_name=pool)
    try:
        await asyncio.to_thread(proc.wait_ready, 30.0)
        entry = None
        for _ in range(200):  # the runner config is written at start
            body = await api(engine, "GET", f"/runner-configs?runner_names={pool}")
            if pool in body["runner_configs"]:
                entry = body["runner_configs"][pool]["datacenters"]["default"]
                break
            await asyncio.sleep(0.05)
        assert entry is not None, proc.log_tail()
        assert entry["serverless"]["url"] == f"http://127.0.0.1:{port}/api/rivet", entry
        handle = client.get_or_create("counter", [uuid.uuid4().hex])
        assert await handle.increment(4) == 4, proc.log_tail()
        assert await handle.where() == proc.pid
        entry = await pool_entry(engine, pool)
        assert entry.get("runner_pool_error") is None, entry
    finally:
        await client.aclose()
        code = await asyncio.to_thread(proc.stop, 20.0)
    assert code == 0, proc.log_tail()


def test_start_payload_is_decoded_in_the_announced_protocol_version() -> None:
    """A runtime speaking envoy protocol v6 announces 6 in ``/metadata`` and reads v6 start
    payloads; a payload in another version is refused with ``request.invalid``."""
    from rivetkit._protocol import envoy_v6
    from rivetkit.drivers.engine.serverless import decode_start_payload
    from rivetkit.errors import RivetError

    v8 = start_payload("actor-v6")
    body = v8[2:]
    message = p.decode_to_envoy(body)
    v6 = (6).to_bytes(2, "little") + envoy_v6.encode_to_envoy(message)
    decoded = decode_start_payload(v6, 6)
    assert decoded == message
    with pytest.raises(RivetError) as refused:
        decode_start_payload(v8, 6)
    assert refused.value.code == "invalid" and "version 8" in refused.value.message
    with pytest.raises(RivetError):
        decode_start_payload(v6, 8)
