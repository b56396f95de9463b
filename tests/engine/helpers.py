"""Small helpers the engine tests share: the engine API off the event loop, polling."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests._proc import ServerProcess, start_process
from tests.engine.engine_proc import Engine

ENGINE_APP = str(Path(__file__).with_name("engine_app.py"))
ROOT = Path(__file__).resolve().parents[2]


async def api(engine: Engine, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    """``engine.api`` off the event loop (some calls wait for our envoy); returns the body."""
    return (await asyncio.to_thread(engine.api, method, path, body, **kw))[1]


async def get_actor(engine: Engine, actor_id: str) -> dict[str, Any]:
    body = await api(engine, "GET", f"/actors?actor_ids={actor_id}&include_destroyed=true")
    (actor,) = body["actors"]
    return actor  # type: ignore[no-any-return]


async def wait_actor(
    engine: Engine, actor_id: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """Poll the actor until ``pred`` holds (20 ms steps)."""
    deadline = time.monotonic() + timeout
    while True:
        actor = await get_actor(engine, actor_id)
        if pred(actor):
            return actor
        if time.monotonic() > deadline:
            raise AssertionError(f"actor never matched: {actor}\n{engine.log_tail(3000)}")
        await asyncio.sleep(0.02)


async def until_registered(engine: Engine, envoy_key: str, timeout: float = 10.0) -> None:
    """Wait until the engine lists the envoy. It sends ``ToEnvoyInit`` while the transaction that
    registers the envoy (and makes it allocatable) is still running, so an actor created right
    after the init can fail with ``no_capacity``."""
    deadline = time.monotonic() + timeout
    while not (await api(engine, "GET", f"/envoys?envoy_key={envoy_key}"))["envoys"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the engine never listed envoy {envoy_key}")
        await asyncio.sleep(0.01)


async def until(check: Callable[[], Any], timeout: float = 10.0, step: float = 0.01) -> None:
    """Poll ``check`` until it is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


def runtime_process(
    endpoint: str, pool: str, storage: Path, env: Mapping[str, str] | None = None
) -> ServerProcess:
    """A ``python -m rivetkit serve engine_app.py --engine ENDPOINT`` process (its log next to
    ``storage``); ``env`` is added to this process's environment."""
    return start_process(
        [sys.executable, "-m", "rivetkit", "serve", ENGINE_APP, "--engine", endpoint,
         "--pool", pool, "--storage", str(storage), "--log-level", "info"],
        port=0,
        env=env,
        cwd=ROOT,
        log_path=storage.with_suffix(".log"),
    )


def envoys(engine: Engine, pool: str) -> list[dict[str, Any]]:
    """The engine's envoys of ``pool`` (by name: an unfiltered listing stops at 100)."""
    _, body = engine.api("GET", f"/envoys?name={pool}&limit=1000")
    return [e for e in body["envoys"] if e["pool_name"] == pool]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` (blocking) until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value
