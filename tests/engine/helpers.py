"""Small helpers the engine tests share: the engine API off the event loop, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from tests.engine.engine_proc import Engine


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


async def until(check: Callable[[], Any], timeout: float = 10.0, step: float = 0.01) -> None:
    """Poll ``check`` until it is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)
