"""Serverless engine mode: the HTTP surface the Rivet Engine calls to start actors (spec §9).

In serverless mode no process waits on the engine up front: the pool's runner config points at
this server (``ServerlessConfig.pool_url``); the engine polls ``GET <url>/metadata`` and, for
every actor start, sends ``POST <url>/start`` whose body is the u16 LE protocol version followed
by a BARE ``ToEnvoy::ToEnvoyCommands`` holding exactly one ``CommandStartActor`` (checkpoint
index 0). The runtime then:

1. checks the headers: ``x-rivet-endpoint`` and ``x-rivet-namespace-name`` must name the
   configured engine (else ``400 config.endpoint_mismatch`` / ``config.namespace_mismatch``, the
   official runtime's codes), ``x-rivet-pool-name`` (or the legacy ``x-rivet-runner-name``) the
   configured pool (``400 config.pool_mismatch``), and ``x-rivet-token`` the configured token
   when there is one (``403 auth.forbidden``); a body that is not exactly that message is
   ``400 request.invalid``, a body over 16 MiB ``413 message.incoming_too_long``;
2. answers ``200 text/event-stream`` with ``event: ping`` at once;
3. connects the driver's envoy (first start) or reuses it, then hands the command to it as if it
   had arrived on the socket (de-duplicated by ``(actor, generation, index)``, acknowledged,
   started by the host);
4. sends ``event: ping`` every second until that actor generation reported ``Stopped`` to the
   engine, then ``event: stopping`` and ends the stream (the engine then closes its side early
   instead of waiting for ``request_lifespan``).

If the engine drops ``/start`` after the command was handed over, the actor keeps running on the
envoy (as the official runtime with its cached envoy does); the engine decides what happens to it
(a failed stream makes it treat the generation as lost and reschedule it, which arrives here as a
stop command). Dropped before the hand-over, the command is not started at all.

Routes, relative to ``base_path`` (``/api/rivet``): ``GET /`` (text), ``GET /health``,
``GET /metadata``, ``GET|POST /start``, ``OPTIONS`` (CORS preflight); anything else is ``404``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import uvicorn

from ... import errors
from ..._protocol import envoy as p
from ..._protocol import envoy_v6
from ..._server.app import serve_lifespan
from ..._server.http import (
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    cors_headers,
    header,
    read_body,
    send_gateway_error,
    send_json,
    send_preflight,
    send_text,
)

if TYPE_CHECKING:
    from ...config import EngineConfig
    from ...registry import Registry
    from .host import EngineDriver

__all__ = ["ServerlessApp", "ServerlessServer", "decode_start_payload", "endpoints_match"]

log = logging.getLogger("rivetkit.serverless")

MAX_START_PAYLOAD = 16 * 1024 * 1024  # RivetKit's default limit of a /start body
PING_INTERVAL = 1.0
CONNECT_TIMEOUT = 30.0  # longest a start waits for the envoy to be connected and initialised
PING_FRAME = b"event: ping\ndata:\n\n"
STOPPING_FRAME = b"event: stopping\ndata:\n\n"
_ROOT_TEXT = "This is a RivetKit server (rivetkit for Python).\n\nLearn more at https://rivet.dev"
_LOOPBACK = frozenset({"127.0.0.1", "0.0.0.0", "::1", "::", "localhost"})


def _invalid(reason: str) -> errors.RivetError:
    return errors.RivetError(
        "request", "invalid", f"Invalid request: {reason}", metadata={"reason": reason}, status=400
    )


def decode_start_payload(body: bytes, protocol_version: int = p.PROTOCOL_VERSION) -> p.ToEnvoyCommands:
    """The ``ToEnvoyCommands`` of a ``/start`` body, checked to hold exactly one start.

    ``protocol_version``: the one the runtime announced in ``/metadata`` (6 or 8), which the
    engine uses for the payload.

    Raises:
        errors.RivetError: ``request.invalid`` (400) for anything else.
    """
    if len(body) < 2:
        raise _invalid("serverless start payload too short")
    version = int.from_bytes(body[:2], "little")
    if version != protocol_version:
        raise _invalid(
            f"serverless start payload has protocol version {version}, "
            f"this runtime speaks {protocol_version}"
        )
    decode = envoy_v6.decode_to_envoy if version == 6 else p.decode_to_envoy
    try:
        message = decode(body[2:])
    except Exception as exc:  # DecodeError, or anything a malformed body provokes
        raise _invalid(f"serverless start payload does not decode: {exc}") from None
    if not isinstance(message, p.ToEnvoyCommands):
        raise _invalid("serverless start payload: expected ToEnvoyCommands")
    if len(message.items) != 1:
        raise _invalid("serverless start payload: expected exactly 1 command")
    if not isinstance(message.items[0].inner, p.CommandStartActor):
        raise _invalid("serverless start payload: expected CommandStartActor")
    return message


def _normalize_endpoint(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url
    if not parts.scheme or not host:
        return url
    if host in _LOOPBACK:
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    path = parts.path.rstrip("/") or "/"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{path}"


def endpoints_match(a: str, b: str) -> bool:
    """Whether two engine URLs name the same engine: scheme, host and port equal, trailing
    slashes ignored, every loopback spelling the same; either side may list several URLs
    separated by commas."""
    left = {_normalize_endpoint(x.strip()) for x in a.split(",") if x.strip()}
    right = {_normalize_endpoint(x.strip()) for x in b.split(",") if x.strip()}
    return bool(left & right)


def _route(scope: Scope, base_path: str) -> str | None:
    """The path below ``base_path`` (``""`` for the base itself), ``None`` outside it."""
    path: str = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    if path == base_path or (not base_path and path == "/"):
        return ""
    if path.startswith(base_path + "/"):
        return path[len(base_path):]
    return None


class ServerlessApp:
    """The ASGI app of serverless mode (``registry.serverless_asgi()``).

    Mounted in another application, that application's lifespan must enter
    ``registry.lifespan`` (or the app starts the registry on the first request).
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @property
    def engine(self) -> EngineConfig:
        engine = self.registry.engine
        if engine is None or engine.serverless is None:
            raise RuntimeError("the registry is not in serverless engine mode")
        return engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await serve_lifespan(self.registry, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self.engine
        assert engine.serverless is not None
        method = scope["method"]
        path = _route(scope, engine.serverless.base_path)
        try:
            if path is None:
                raise errors.route_not_found(scope["path"])
            if method == "OPTIONS":
                await send_preflight(scope, send)
            elif method == "GET" and path in ("", "/"):
                await send_text(scope, send, 200, _ROOT_TEXT)
            elif method == "GET" and path == "/health":
                await send_json(scope, send, *self._health())
            elif method == "GET" and path == "/metadata":
                await send_json(scope, send, 200, self.metadata())
            elif method in ("GET", "POST") and path == "/start":
                await self._start(scope, receive, send)
            else:
                raise errors.route_not_found(path)
        except ClientDisconnected:
            return
        except errors.RivetError as exc:
            if exc.status >= 500 and exc.code != "service_unavailable":
                log.error("serverless request failed path=%s error=%s", path, exc)
            else:
                log.info("serverless request refused path=%s error=%s", path, exc)
            await send_gateway_error(scope, send, exc)
        except Exception:
            log.exception("serverless request failed path=%s", path)
            await send_gateway_error(scope, send, errors.internal_error())

    # -- GET -------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """What the engine reads from ``GET /metadata`` (spec §9.2)."""
        from ... import __version__

        return {
            "runtime": "rivetkit",
            "version": __version__,
            "envoyProtocolVersion": self.engine.protocol_version,
            "actorNames": {name: {"metadata": {}} for name in sorted(self.registry.definitions)},
            "envoy": {"kind": {"serverless": {}}, "version": self.engine.version},
        }

    def _health(self) -> tuple[int, dict[str, Any]]:
        """``200`` while this process can host actors, ``503`` when its host should recycle it:
        shutting down, or the engine silent for 20 s on an envoy that had connected (the
        reference runtime's ``engine_ping_stale``). Before the first start there is no envoy
        link to be unhealthy about."""
        from ... import __version__

        driver = self.registry.driver
        envoy = getattr(driver, "envoy", None)
        status, code = "ok", 200
        if envoy is None or not envoy.connected_once.is_set():
            state = "idle"
        else:
            state = "connected" if envoy.ready else "reconnecting"
            if not envoy.ping_healthy():
                status, code = "engine_ping_stale", 503
        if self.registry.shutting_down:
            status, code = "shutting_down", 503
        body = {"status": status, "runtime": "rivetkit", "version": __version__, "envoy": state}
        return code, body

    # -- POST /start -----------------------------------------------------------------------

    def _check_headers(self, scope: Scope) -> None:
        engine = self.engine

        def get(name: bytes) -> str | None:
            value = header(scope, name)
            return value.decode("latin-1") if value else None

        endpoint = get(b"x-rivet-endpoint")
        if endpoint is None:
            raise _invalid("x-rivet-endpoint header is required")
        namespace = get(b"x-rivet-namespace-name")
        if namespace is None:
            raise _invalid("x-rivet-namespace-name header is required")
        pool = get(b"x-rivet-pool-name") or get(b"x-rivet-runner-name")
        if pool is None:
            raise _invalid("x-rivet-pool-name header is required")
        if not endpoints_match(endpoint, engine.endpoint):
            log.warning("serverless start rejected: endpoint mismatch expected=%s received=%s",
                        engine.endpoint, endpoint)
            raise errors.RivetError(
                "config", "endpoint_mismatch",
                f'Endpoint mismatch: expected "{engine.endpoint}", received "{endpoint}"',
                metadata={"expected": engine.endpoint, "received": endpoint}, status=400,
            )
        if namespace != engine.namespace:
            log.warning("serverless start rejected: namespace mismatch expected=%s received=%s",
                        engine.namespace, namespace)
            raise errors.RivetError(
                "config", "namespace_mismatch",
                f'Namespace mismatch: expected "{engine.namespace}", received "{namespace}"',
                metadata={"expected": engine.namespace, "received": namespace}, status=400,
            )
        if pool != engine.pool:
            raise errors.RivetError(
                "config", "pool_mismatch",
                f'Pool mismatch: expected "{engine.pool}", received "{pool}"',
                metadata={"expected": engine.pool, "received": pool}, status=400,
            )
        if engine.token:
            token = get(b"x-rivet-token") or ""
            if not hmac.compare_digest(token.encode(), engine.token.encode()):
                raise errors.RivetError("auth", "forbidden", "Forbidden.", status=403)

    async def _start(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._check_headers(scope)
        try:
            body = await read_body(receive, MAX_START_PAYLOAD)
        except BodyTooLarge:
            raise errors.RivetError(
                "message", "incoming_too_long",
                f"Incoming message too long. Exceeded limit of {MAX_START_PAYLOAD} bytes.",
                metadata={"limit": MAX_START_PAYLOAD}, status=413,
            ) from None
        message = decode_start_payload(body, self.engine.protocol_version)
        if self.registry.shutting_down:
            raise errors.RivetError(
                "guard", "service_unavailable", "The server is shutting down.", status=503
            )
        driver = await self.registry.ensure_started()
        from .host import EngineDriver

        if not isinstance(driver, EngineDriver):
            raise RuntimeError("the registry is not in engine mode")
        checkpoint = message.items[0].checkpoint
        actor_id, generation = checkpoint.actor_id, checkpoint.generation
        log.debug("serverless start actor_id=%s generation=%d", actor_id, generation)
        stopped = driver.generation_stopped(actor_id, generation)  # before the hand-over
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                *cors_headers(scope),
            ],
        })
        await self._stream(send, receive, driver, message, stopped)

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        driver: EngineDriver,
        message: p.ToEnvoyCommands,
        stopped: asyncio.Future[None],
    ) -> None:
        loop = asyncio.get_running_loop()
        checkpoint = message.items[0].checkpoint

        async def hand_over() -> None:
            envoy = await driver.serverless_envoy(CONNECT_TIMEOUT)
            envoy.inject_commands(message)

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        start = loop.create_task(hand_over())
        gone = loop.create_task(disconnected())
        try:
            await send({"type": "http.response.body", "body": PING_FRAME, "more_body": True})
            while True:
                waiting: set[asyncio.Future[Any]] = {stopped, gone}
                if not start.done():
                    waiting.add(start)
                done, _ = await asyncio.wait(
                    waiting, timeout=PING_INTERVAL, return_when=asyncio.FIRST_COMPLETED
                )
                if gone in done:
                    if start.done() and start.exception() is None:
                        log.info("serverless /start closed by the engine; the actor keeps "
                                 "running actor_id=%s generation=%d",
                                 checkpoint.actor_id, checkpoint.generation)
                    else:
                        log.warning("serverless /start closed before the actor was handed over "
                                    "actor_id=%s", checkpoint.actor_id)
                    return
                if start in done and start.exception() is not None:
                    log.error("serverless start failed actor_id=%s error=%r",
                              checkpoint.actor_id, start.exception())
                    break  # ends the stream early: the engine records the pool error
                if stopped in done:
                    await send({"type": "http.response.body", "body": STOPPING_FRAME,
                                "more_body": True})
                    break
                if not done:
                    await send({"type": "http.response.body", "body": PING_FRAME,
                                "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return  # the connection went away while writing
        finally:
            if not start.done():
                start.cancel()  # not handed over: the engine considers this start failed
            gone.cancel()
            for task in (start, gone):
                with contextlib.suppress(BaseException):
                    await task
            if not stopped.done():
                stopped.cancel()


class ServerlessServer(uvicorn.Server):
    """uvicorn's server for :class:`ServerlessApp`: on shutdown the registry drains first, so
    every open ``/start`` stream ends with ``stopping`` before uvicorn waits for requests."""

    def __init__(self, registry: Registry, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.registry = registry

    async def shutdown(self, sockets: Any = None) -> None:
        with contextlib.suppress(Exception):
            await self.registry.stop()
        await super().shutdown(sockets)
