"""The registry: a set of actor definitions and the server that hosts them.

``setup(...)`` builds one; ``run()`` serves it (blocking, uvicorn), ``serve()`` is the async form,
``asgi()`` returns the ASGI app to mount in another application and ``lifespan()`` the context
manager that application's lifespan must enter.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ._runtime.clock import REAL_CLOCK, Clock
from .config import EngineConfig, RegistryConfig
from .definition import ActorDefinition, DefinitionError
from .drivers.local import LocalDriver

if TYPE_CHECKING:
    from .drivers.engine.host import EngineDriver

__all__ = ["Registry", "setup"]


class Registry:
    """Actor definitions plus the host that runs them.

    Args:
        definitions: the actor definitions, each with a distinct name.
        config: settings of the embedded server and storage.
        clock: where the runtime reads time (``rivetkit.testing.FakeClock`` in tests).
    """

    def __init__(
        self,
        definitions: list[ActorDefinition],
        config: RegistryConfig,
        *,
        clock: Clock | None = None,
    ) -> None:
        by_name: dict[str, ActorDefinition] = {}
        for definition in definitions:
            if not isinstance(definition, ActorDefinition):
                raise DefinitionError(
                    f"setup() takes actor definitions made with rivetkit.actor(...), "
                    f"got {definition!r}"
                )
            if definition.name in by_name:
                raise DefinitionError(
                    f"two actor definitions are named {definition.name!r}; names must be unique"
                )
            definition.freeze()
            by_name[definition.name] = definition
        self.definitions = by_name
        self.config = config
        self.clock = clock or REAL_CLOCK
        self.engine: EngineConfig | None = None
        self.driver: LocalDriver | EngineDriver = LocalDriver(by_name, config, clock=self.clock)
        self.driver.registry = self
        self._client: Any = None
        self._app: Any = None
        self._serverless_app: Any = None
        self.live_sockets: set[Any] = set()
        self.shutting_down = False
        self._started = False
        self._start_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"<Registry actors={sorted(self.definitions)}>"

    def metadata(self) -> dict[str, Any]:
        """The ``GET /metadata`` answer: no ``clientEndpoint``, so clients stay on this origin."""
        from . import __version__

        return {
            "runtime": "rivetkit",
            "version": __version__,
            "actorNames": {name: {"metadata": {}} for name in sorted(self.definitions)},
        }

    def set_storage_path(self, path: Any) -> None:
        """Use another storage directory (before the registry starts)."""
        if self._started:
            raise RuntimeError("cannot change the storage path of a running registry")
        self.config = dataclasses.replace(self.config, storage_path=path)
        if self.engine is not None:
            self.use_engine(self.engine)
            return
        self.driver = LocalDriver(self.definitions, self.config, clock=self.clock)
        self.driver.registry = self

    def use_engine(self, engine: EngineConfig | str) -> None:
        """Host the actors on a Rivet Engine instead of in this process's own storage (engine
        mode, before the registry starts). ``engine`` is the engine's URL or a full
        :class:`~rivetkit.config.EngineConfig`."""
        if self._started:
            raise RuntimeError("cannot switch a running registry to engine mode")
        from .drivers.engine.host import EngineDriver

        if isinstance(engine, str):
            engine = EngineConfig(endpoint=engine)
        self.engine = engine
        self.driver = EngineDriver(self.definitions, self.config, engine, clock=self.clock)
        self.driver.registry = self

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage. Idempotent."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self.driver.open()
            self.shutting_down = False
            self._started = True

    async def ensure_started(self) -> LocalDriver | EngineDriver:
        """Start on first use (a mounted app whose host skipped the lifespan); refused while
        the registry is shutting down, so a late request cannot reopen storage."""
        if not self._started:
            if self.shutting_down:
                from . import errors

                raise errors.RivetError(
                    "guard", "service_unavailable", "The server is shutting down.", status=503
                )
            await self.start()
        return self.driver

    async def close_connections(self, timeout: float = 2.0) -> None:
        """Close every client connection with ``ws.going_away`` so clients reconnect later."""
        from ._server.actor_ws import close_all

        # From here on new upgrades are answered with ws.going_away too (clients retry at once).
        self.shutting_down = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.live_sockets and loop.time() < deadline:
            close_all(self.live_sockets)
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Close connections, stop every actor (committing its state), close storage.

        Idempotent.
        """
        if not self._started:
            return
        self._started = False
        await self.close_connections()
        await self.driver.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Start and stop the registry inside a host application's lifespan.

        Example::

            registry = rivetkit.setup(counter)
            app = Starlette(routes=[Mount("/api/rivet", registry.asgi())],
                            lifespan=registry.lifespan)
        """
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def in_process_client(self) -> Any:
        """The client actors use to call each other (``c.client()``): served by this registry's
        ASGI app in process, without sockets. One per registry, closed when it stops."""
        if self._client is None:
            from .client import Client

            self._client = Client(app=self.asgi(), namespace=self.config.namespaces[0])
        return self._client

    # -- serving ---------------------------------------------------------------------------

    def asgi(self) -> Any:
        """The ASGI application serving this registry (the same object on every call)."""
        if self._app is None:
            from ._server.app import RivetApp

            self._app = RivetApp(self)
        return self._app

    def serverless_asgi(self) -> Any:
        """The ASGI app of serverless engine mode (``GET /metadata``, ``POST /start`` under the
        configured base path), to mount in another application; ``serve_engine`` and ``run``
        serve it themselves."""
        if self._serverless_app is None:
            from .drivers.engine.serverless import ServerlessApp

            self._serverless_app = ServerlessApp(self)
        return self._serverless_app

    def _uvicorn_config(self, host: str | None, port: int | None, **kwargs: Any) -> Any:
        import uvicorn


        options: dict[str, Any] = {
            "host": host or self.config.host,
            "port": self.config.port if port is None else port,
            "lifespan": "on",
            "log_level": "warning",
            "access_log": False,
            "server_header": False,
            "ws": "websockets-sansio",
            "ws_max_size": 32 * 1024 * 1024,
            "ws_ping_interval": self.config.ws_ping_interval,
            "ws_ping_timeout": self.config.ws_ping_timeout,
        }
        options.update(kwargs)
        return uvicorn.Config(self.asgi(), **options)

    async def serve(self, *, host: str | None = None, port: int | None = None, **kwargs: Any) -> None:
        """Serve on ``host:port`` until cancelled (uvicorn; extra keyword args go to it)."""

        from ._server.serve import RegistryServer

        server = RegistryServer(self, self._uvicorn_config(host, port, **kwargs))
        serving = asyncio.ensure_future(server.serve())
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            # Cancelling serve() is a graceful stop: close sockets, run the lifespan shutdown
            # (which commits every actor's state), then propagate the cancellation.
            server.should_exit = True
            await serving
            raise
        finally:
            await self.stop()

    async def serve_engine(
        self,
        engine: EngineConfig | str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        """Host the actors on a Rivet Engine until cancelled; cancelling drains gracefully (the
        engine moves the actors to other processes first).

        In serverless mode (``EngineConfig(serverless=ServerlessConfig(...))``) this also serves
        the serverless HTTP app on ``host:port`` (default ``127.0.0.1:6420``), which the engine
        calls to start actors; ``public_url`` defaults to that address."""
        if engine is not None:
            self.use_engine(engine)
        elif self.engine is None:
            self.use_engine(EngineConfig())
        assert self.engine is not None
        if self.engine.serverless is not None:
            await self._serve_serverless(host, port)
            return
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.stop())

    async def _serve_serverless(self, host: str | None, port: int | None) -> None:
        import uvicorn

        assert self.engine is not None and self.engine.serverless is not None
        bind = host or self.config.host
        bind_port = self.config.port if port is None else port
        serverless = self.engine.serverless.for_address(bind, bind_port)
        if serverless is not self.engine.serverless:
            self.use_engine(dataclasses.replace(self.engine, serverless=serverless))
        from .drivers.engine.serverless import ServerlessServer

        server = ServerlessServer(self, uvicorn.Config(
            self.serverless_asgi(), host=bind, port=bind_port, lifespan="off",
            log_level="warning", access_log=False, server_header=False,
            timeout_graceful_shutdown=5,
        ))
        await self.start()
        serving = asyncio.ensure_future(server.serve())
        try:
            await asyncio.shield(serving)
        finally:
            # Drain first: the actors stop, which ends their /start streams with `stopping`;
            # only then can the HTTP server finish its open requests.
            await asyncio.shield(self.stop())
            server.should_exit = True
            with contextlib.suppress(BaseException):
                await serving

    def run(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        engine: EngineConfig | str | None = None,
        **kwargs: Any,
    ) -> None:
        """Serve on ``host:port`` (default ``127.0.0.1:6420``), blocking until interrupted.

        With ``engine`` (a URL or :class:`~rivetkit.config.EngineConfig`) the actors are hosted
        on that Rivet Engine instead, until SIGINT or SIGTERM, which drain gracefully.
        """
        if engine is not None or self.engine is not None:
            _run_engine(self, engine, host=host, port=port)
            return

        from ._server.serve import RegistryServer

        RegistryServer(self, self._uvicorn_config(host, port, **kwargs)).run()


def _run_engine(
    registry: Registry,
    engine: EngineConfig | str | None,
    *,
    host: str | None = None,
    port: int | None = None,
) -> None:
    """Blocking engine mode with graceful drain on SIGINT / SIGTERM."""
    import signal

    async def main() -> None:
        task = asyncio.ensure_future(registry.serve_engine(engine, host=host, port=port))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def setup(*definitions: ActorDefinition, clock: Clock | None = None, **config: Any) -> Registry:
    """Create a registry of actor definitions.

    Args:
        *definitions: actor definitions from :func:`rivetkit.actor`.
        clock: where the runtime reads time; ``rivetkit.testing.FakeClock()`` in tests.
        **config: :class:`~rivetkit.config.RegistryConfig` fields (``host``, ``port``,
            ``storage_path``, ``max_incoming_message_size``, ...).

    Example::

        registry = rivetkit.setup(counter, chat_room, port=6420)
        registry.run()
    """
    try:
        cfg = RegistryConfig(**config)
    except TypeError as exc:
        raise TypeError(f"setup(): {exc}") from None
    return Registry(list(definitions), cfg, clock=clock)
