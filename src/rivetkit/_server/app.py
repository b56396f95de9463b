"""The ASGI application: the engine-compatible surface plus the actor router behind the gateway.

Routes (relative to where the app is mounted; ``root_path`` is honoured):

* ``GET /``, ``GET /health``, ``GET /metadata``
* ``/actors…``: the management API (:mod:`.manager`)
* ``/gateway/{actorId}[@token]/…`` and ``/gateway/{name}/…?rvt-…``: resolve the actor, wake it,
  then hand the rest of the path to the actor router (:mod:`.actor_http`)
* ``/action/…``, ``/request/…``, ``/connect``, ``/websocket/…`` addressed with the
  ``x-rivet-target: actor`` + ``x-rivet-actor`` headers (the skip-ready-wait direct form, §4.4)
* ``OPTIONS *``: CORS preflight

The app is plain ASGI (no framework middleware stack) because every action passes through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import __version__, errors
from ..drivers.local import LocalDriver
from .._log import server_logger
from .actor_http import handle_actor_http
from .actor_queue import Pin
from .actor_ws import (
    CLOSE_ERROR,
    CLOSE_GOING_AWAY,
    GOING_AWAY_REASON,
    close_unaccepted,
    handle_connect,
    parse_subprotocols,
)
from .gateway import DirectTarget, QueryTarget, parse_gateway_path
from .http import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    header,
    public_error,
    send_gateway_error,
    send_json,
    send_preflight,
    send_text,
)
from .manager import check_namespace, handle_manager
from .raw import handle_raw_websocket

if TYPE_CHECKING:
    from .._runtime.instance import ActorInstance
    from ..registry import Registry

__all__ = ["RivetApp"]

_ROOT_TEXT = "This is a RivetKit server (rivetkit for Python).\n\nLearn more at https://rivet.dev"


def _route_path(scope: Scope) -> str:
    """The raw (still percent-encoded) path below the mount point."""
    raw = scope.get("raw_path")
    path: str = raw.decode("latin-1") if raw else scope["path"]
    if "?" in path:
        path = path.split("?", 1)[0]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class RivetApp:
    """The registry's ASGI app. Create it with ``registry.asgi()``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan --------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await serve_lifespan(self.registry, receive, send)

    # -- http ------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        driver = await self.registry.ensure_started()
        path = _route_path(scope)
        method = scope["method"]
        if method == "OPTIONS":
            await send_preflight(scope, send, 204 if path.startswith("/gateway") else 200)
            return
        try:
            if path.startswith("/gateway/") or path == "/gateway":
                target = parse_gateway_path(path, scope["query_string"].decode("latin-1"))
                if target is None:
                    raise errors.route_not_found(path)
                pin = Pin(await self._acquire(target))
                try:
                    await handle_actor_http(
                        scope, receive, send, pin.instance, target.path, target.query,
                        self.registry.config, pin,
                    )
                finally:
                    pin.release()
                return
            if header(scope, b"x-rivet-target") == b"actor":
                actor_id = header(scope, b"x-rivet-actor")
                if not actor_id:
                    raise errors.RivetError(
                        "guard",
                        "missing_header",
                        "x-rivet-target: actor requires an x-rivet-actor header",
                        status=400,
                    )
                query = scope["query_string"].decode("latin-1")
                target = DirectTarget(actor_id.decode("latin-1"), None, path, query)
                pin = Pin(await self._acquire(target))
                try:
                    await handle_actor_http(
                        scope, receive, send, pin.instance, path, query, self.registry.config, pin
                    )
                finally:
                    pin.release()
                return
            if isinstance(driver, LocalDriver) and await handle_manager(
                scope, receive, send, driver, path
            ):
                return  # (in engine mode the engine serves the manager API)
            if method == "GET" and path == "/":
                await send_text(scope, send, 200, _ROOT_TEXT)
            elif method == "GET" and path == "/health":
                await send_json(
                    scope,
                    send,
                    200,
                    {"runtime": "rivetkit", "status": "ok", "version": __version__},
                )
            elif method == "GET" and path == "/metadata":
                await send_json(scope, send, 200, self.registry.metadata())
            else:
                raise errors.RivetError(
                    "guard",
                    "route_not_found",
                    f"No route for {method} {path}.",
                    metadata={"method": method, "path": path},
                    status=404,
                )
        except ClientDisconnected:
            return
        except Exception as exc:
            err = public_error(exc, expose=self.registry.config.expose_errors)
            if not (isinstance(exc, errors.RivetError) and exc.public):
                server_logger.error("request failed path=%s", path, exc_info=exc)
            await send_gateway_error(scope, send, err)

    async def _acquire(self, target: DirectTarget | QueryTarget) -> ActorInstance:
        """Resolve and wake the target, counted as busy (it cannot go idle and sleep) until
        the caller calls ``instance.sleep_ctl.release()``."""
        while True:
            instance = await self._resolve(target)
            try:
                instance.sleep_ctl.acquire()
            except errors.ActorStopping:
                continue  # it began to stop meanwhile: wait for that and wake it again
            return instance

    async def _resolve(self, target: DirectTarget | QueryTarget) -> ActorInstance:
        """The awake instance the target addresses, creating (getOrCreate) and waking it."""
        driver = self.registry.driver
        if isinstance(target, QueryTarget):
            if not isinstance(driver, LocalDriver):
                raise errors.RivetError(
                    "engine", "not_supported",
                    "In engine mode the engine's gateway resolves actor queries.", status=400,
                )
            check_namespace(driver, target.namespace)
            key = tuple(target.key)
            instance = driver.awake_by_key(target.namespace, target.name, key)
            if instance is not None:
                return instance
            if target.method == "get":
                driver.definition(target.name)
                record = driver.lookup(target.namespace, target.name, key)
                if record is None:
                    raise errors.actor_not_found()
            else:
                record, _ = driver.get_or_create(target.namespace, target.name, key, target.input)
        else:
            instance = driver.awake.get(target.actor_id)
            if instance is not None:
                return instance
            record = driver.get_record(target.actor_id)
            if record is None:
                raise errors.actor_not_found()
        return await driver.instance(record)

    # -- websocket -------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route an upgrade: ``/connect`` or ``/websocket/*`` behind the gateway or addressed
        with the ``rivet_target.actor`` + ``rivet_actor.{id}`` subprotocols (§4.4).

        Failures are reported after the handshake with close ``1011 "{group}.{code}"``, as the
        official gateway does.
        """
        await self.registry.ensure_started()
        path = _route_path(scope)
        options = parse_subprotocols(list(scope.get("subprotocols") or []))
        if self.registry.shutting_down:
            await close_unaccepted(receive, send, options, CLOSE_GOING_AWAY, GOING_AWAY_REASON)
            return
        query = scope["query_string"].decode("latin-1")
        target: DirectTarget | QueryTarget | None
        try:
            if path.startswith("/gateway/"):
                target = parse_gateway_path(path, query)
            elif options.target_actor and options.actor_id:
                target = DirectTarget(options.actor_id, options.token, path, query)
            else:
                target = None
            if target is None:
                raise errors.route_not_found(path)
        except errors.RivetError as err:
            await close_unaccepted(receive, send, options, CLOSE_ERROR, err.full_code)
            return
        actor_path = target.path
        resolved = target

        async def resolve() -> ActorInstance:
            return await self._acquire(resolved)

        config = self.registry.config
        if actor_path == "/connect":
            await handle_connect(
                scope, receive, send, options, resolve, config, self.registry.live_sockets
            )
        elif actor_path == "/websocket" or actor_path.startswith("/websocket/"):
            try:
                instance = await resolve()
            except errors.RivetError as err:
                await close_unaccepted(receive, send, options, CLOSE_ERROR, err.full_code)
                return
            try:  # a raw WebSocket handler keeps the actor awake while it runs
                await handle_raw_websocket(
                    scope, receive, send, instance, actor_path, target.query, options, config
                )
            finally:
                instance.sleep_ctl.release()
        else:
            missing = errors.route_not_found(actor_path)
            await close_unaccepted(receive, send, options, CLOSE_ERROR, missing.full_code)


async def serve_lifespan(registry: Registry, receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol: start the registry at startup, stop it at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await registry.start()
            except Exception as exc:
                server_logger.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await registry.stop()
            except Exception as exc:
                server_logger.exception("shutdown failed")
                await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.shutdown.complete"})
            return
