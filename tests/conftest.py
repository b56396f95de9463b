"""Shared fixtures: serve a registry on a real loopback socket inside the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import rivetkit


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Served:
    """A registry served by uvicorn on 127.0.0.1 at ``url``."""

    def __init__(self, registry: rivetkit.Registry, server: uvicorn.Server, port: int) -> None:
        self.registry = registry
        self.server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def gateway(self, name: str, path: str, *, key: str = "k", method: str = "getOrCreate") -> str:
        query = f"rvt-namespace=default&rvt-method={method}"
        if method == "getOrCreate":
            query += "&rvt-runner=default"
        if key:
            query += f"&rvt-key={key}"
        return f"{self.url}/gateway/{name}{path}?{query}"


@contextlib.asynccontextmanager
async def serve(app: Any, registry: rivetkit.Registry | None = None) -> AsyncIterator[Served]:
    """Run ``app`` (an ASGI app) under uvicorn on a free loopback port until the block exits."""
    if registry is not None and app is registry.asgi():
        # The registry's own uvicorn settings and server class, as `registry.run()` uses them.
        from rivetkit._server.serve import RegistryServer

        server: uvicorn.Server = RegistryServer(
            registry, registry._uvicorn_config("127.0.0.1", 0)
        )
    else:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", access_log=False
        )
        server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Served(registry or getattr(app, "registry", None), server, port)  # type: ignore[arg-type]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
def serve_registry(tmp_path: Path) -> Callable[..., Any]:
    """Factory: ``async with serve_registry(*definitions, **config) as served:``.

    Storage goes to a fresh temporary directory unless ``storage_path`` is given.
    """

    def factory(*definitions: rivetkit.ActorDefinition, **config: Any) -> Any:
        config.setdefault("storage_path", tmp_path / "storage")
        registry = rivetkit.setup(*definitions, **config)
        return serve(registry.asgi(), registry)

    return factory
