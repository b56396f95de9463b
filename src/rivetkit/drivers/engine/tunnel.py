"""Client traffic tunnelled by the engine's gateway, served by the registry's own ASGI app.

In engine mode clients never reach this process directly: the engine's gateway terminates their
HTTP requests and WebSockets and forwards them over the envoy socket as tunnel messages keyed by
``(gatewayId, requestId)`` (spec ``engine-envoy.md`` §6.7). This module turns them into ASGI calls
on the *same* app as embedded mode, at the direct gateway path ``/gateway/{actorId}{path}``, so
every actor route (actions, queues, ``/connect``, raw handlers, inspector) exists exactly once,
and turns the app's ASGI output back into tunnel messages.

Layering: :class:`Tunnel` (here) dispatches the engine's messages and owns one task per request
or socket; the per-request state lives in :class:`~._tunnel_http.HttpExchange` and
:class:`~._tunnel_ws.TunnelSocket`, which hold the protocol rules of each kind. ``on_message``
is synchronous and only feeds that state, so the messages of one request reach the app in the
engine's order while different requests run concurrently. Outgoing messages go to a ``send``
callable that must queue without blocking (the envoy connection buffers them while it
reconnects).

Rules carried over from the reference envoy client and verified against rivet-engine 2.3.19:

* no payload larger than the engine's ``maxResponsePayloadSize`` is ever sent: one such frame
  closes the whole envoy socket, so it is replaced by an error answer (or a streamed response);
* a request for an actor that does not run here is answered ``503`` with
  ``x-rivet-error: envoy.actor_not_found`` (the gateway retries), a socket is refused with
  ``1011 "Actor not found"``;
* a WebSocket's scope carries the extension ``rivet.tunnel`` (gateway and request ids, path,
  headers, whether it is hibernatable and, for one restored after its actor slept, the id of
  the connection to take over), which the app's ``/connect`` handler uses to make the
  connection outlive a sleep;
* see ``_tunnel_http`` for the HTTP message order and response streaming, ``_tunnel_ws`` for
  WebSocket indexes, acknowledgements and hibernation.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final
from urllib.parse import quote, unquote

from ..._protocol import envoy as p
from ..._runtime.conn import TUNNEL_EXTENSION, Hibernation
from ..._server.http import CORS_HANDLED_EXTENSION, Receive, Scope, Send
from ._tunnel_http import (
    DEFAULT_RESPONSE_WINDOW,
    FETCH_FAILED_BODY,
    U16,
    HttpExchange,
    envoy_error,
)
from ._tunnel_ws import (
    CLOSE_ERROR,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    SocketState,
    TunnelSocket,
    TunnelWebSocket,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_PAYLOAD_SIZE",
    "DEFAULT_RESPONSE_WINDOW",
    "ASGIApp",
    "CanHibernate",
    "RunningGeneration",
    "Tunnel",
    "TunnelWebSocket",
]

log = logging.getLogger("rivetkit.envoy.tunnel")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RunningGeneration = Callable[[str], int | None]
"""Actor id -> the generation running on this envoy, ``None`` when it does not run here."""
CanHibernate = Callable[[TunnelWebSocket], bool]

DEFAULT_MAX_RESPONSE_PAYLOAD_SIZE: Final = 20 * 1024 * 1024
"""``maxResponsePayloadSize`` observed from rivet-engine 2.3.19 (``ToEnvoyInit``)."""

_PATH_SAFE: Final = "!$%&'()*+,-./:;=@[]_~^|"
_QUERY_SAFE: Final = _PATH_SAFE + "?"
# What quote() returns unchanged with safe="" (an id) and with _PATH_SAFE (a path): the common
# case skips the call.
_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9_.~-]*")
_PLAIN_PATH: Final = re.compile(r"[A-Za-z0-9_.~/-]*")


def _host_port(host: str, default_port: int) -> tuple[str, int]:
    name, port = host, default_port
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        if end != -1:
            name = host[1:end]
            rest = host[end + 1 :]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
    elif host.count(":") == 1:
        name, _, raw = host.partition(":")
        if raw.isdigit():
            port = int(raw)
    return name, port


def _build_scope(kind: str, actor_id: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The ASGI scope of a tunnelled request on the app's direct gateway route.

    ``path`` is the actor path with its query string, as the engine forwards it (gateway prefix
    and ``rvt-*`` parameters already stripped). Anything outside printable ASCII is
    percent-encoded so ``raw_path`` stays a valid request target.
    """
    path = path.split("#", 1)[0]
    actor_path, _, query = path.partition("?")
    if not actor_path.startswith("/"):
        actor_path = "/" + actor_path
    quoted_id = actor_id if _PLAIN_ID.fullmatch(actor_id) else quote(actor_id, safe="")
    if not _PLAIN_PATH.fullmatch(actor_path):
        actor_path = quote(actor_path, safe=_PATH_SAFE)
    raw_path = "/gateway/" + quoted_id + actor_path
    lowered = {name.lower(): value for name, value in headers.items()}
    secure = lowered.get("x-forwarded-proto", "").split(",")[0].strip().lower() in (
        "https",
        "wss",
    )
    scheme = ("https" if secure else "http") if kind == "http" else ("wss" if secure else "ws")
    host = lowered.get("host")
    forwarded = lowered.get("x-forwarded-for", "").split(",")[0].strip()
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "scheme": scheme,
        "path": unquote(raw_path) if "%" in raw_path else raw_path,
        "raw_path": raw_path.encode("ascii"),
        "query_string": quote(query, safe=_QUERY_SAFE).encode("ascii") if query else b"",
        "root_path": "",
        "headers": [(name.encode(), value.encode()) for name, value in lowered.items()],
        "client": (forwarded, 0) if forwarded else None,
        "server": _host_port(host, 443 if secure else 80) if host else None,
        "state": {},
        "extensions": {},
    }
    if kind == "websocket":
        offered = lowered.get("sec-websocket-protocol", "")
        scope["subprotocols"] = [s.strip() for s in offered.split(",") if s.strip()]
    return scope


def _fetch_failed_response() -> p.ToRivetResponseStart:
    headers = {
        "content-type": "application/json",
        "content-length": str(len(FETCH_FAILED_BODY)),
        "x-rivet-error": "envoy.fetch_failed",
    }
    return p.ToRivetResponseStart(
        status=500, headers=headers, body=FETCH_FAILED_BODY, stream=False
    )


class Tunnel:
    """Serves tunnel messages of the envoy connection with an ASGI app.

    Args:
        app: the registry's ASGI app (``registry.asgi()``); requests reach it at
            ``/gateway/{actorId}{path}``.
        send: queues a message for the engine; must not block and must keep order.
        running_generation: the generation of an actor running on this envoy, ``None`` when it
            does not run here (requests for it are answered ``503 envoy.actor_not_found``, as
            the official envoy does; neither the gateway nor the clients retry that).
        stopped_here: whether an actor that does not run here any more stopped on this envoy
            (stopping, or ``Stopped`` reported). The gateway routes a request to the envoy the
            actor was on until the engine has processed its ``Stopped``, then fails it with
            ``guard.actor_stopped_while_waiting``, which it retries on the next generation: an
            HTTP request for such an actor is left unanswered so that this happens (an answer
            would reach the client, which does not retry ``envoy.actor_not_found``).
        max_response_payload_size: the engine's limit on one tunnel payload in bytes, from
            ``ToEnvoyInit`` (20 MiB by default); may be updated on every Init.
        response_window: streamed response bytes that may be in flight before the gateway
            acknowledges them (1 MiB, what rivet-engine 2.3.19 buffers; not in the protocol).
        can_hibernate: decides, when the engine opens a WebSocket, whether the socket is
            hibernatable (acknowledged message by message and kept by the gateway while the
            actor sleeps); the app learns it from the scope extension ``rivet.tunnel``
            (``hibernatable``). ``None``: no socket is.

    Raises:
        ValueError: a size is not positive.

    Example::

        tunnel = Tunnel(registry.asgi(), envoy.send_tunnel, host.running_generation)
        tunnel.on_message(message)      # for every ToEnvoyTunnelMessage, in order
        await tunnel.close()            # cancels and awaits every request task
    """

    def __init__(
        self,
        app: ASGIApp,
        send: Callable[[p.ToRivetTunnelMessage], None],
        running_generation: RunningGeneration,
        *,
        max_response_payload_size: int = DEFAULT_MAX_RESPONSE_PAYLOAD_SIZE,
        response_window: int = DEFAULT_RESPONSE_WINDOW,
        can_hibernate: CanHibernate | None = None,
        stopped_here: Callable[[str], bool] | None = None,
    ) -> None:
        if max_response_payload_size <= 0:
            raise ValueError(
                f"max_response_payload_size must be positive, got {max_response_payload_size}"
            )
        if response_window <= 0:
            raise ValueError(f"response_window must be positive, got {response_window}")
        self.app = app
        self.max_response_payload_size = max_response_payload_size
        self.response_window = response_window
        self._send = send
        self._running_generation = running_generation
        self._stopped_here = stopped_here
        self._can_hibernate = can_hibernate
        self._http: dict[bytes, HttpExchange] = {}
        self._sockets: dict[bytes, TunnelSocket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # (get_running_loop is a getpid)
        self._closed = False

    @property
    def active(self) -> int:
        """Requests and sockets whose handler is still running."""
        return len(self._tasks)

    # -- dispatch --------------------------------------------------------------------------

    def on_message(self, message: p.ToEnvoyTunnelMessage) -> None:
        """Handle one engine tunnel message (synchronous: work is handed to request tasks).

        Never raises: a message that cannot be handled is answered or logged.
        """
        mid = message.message_id
        kind = message.message_kind
        key = bytes(mid.gateway_id) + bytes(mid.request_id)
        try:
            if isinstance(kind, p.ToEnvoyRequestStart):
                self._on_request_start(key, mid, kind)
            elif isinstance(kind, p.ToEnvoyWebSocketOpen):
                self._on_websocket_open(key, mid, kind)
            elif isinstance(kind, p.ToEnvoyWebSocketMessage):
                socket = self._sockets.get(key)
                if socket is None:
                    self._unknown(mid, kind)
                else:
                    socket.feed(mid.message_index, kind)
            elif isinstance(kind, p.ToEnvoyWebSocketClose):
                socket = self._sockets.get(key)
                if socket is None:
                    self._unknown(mid, kind)
                else:
                    socket.closed_by_client(kind)
            else:
                self._on_http_message(key, mid, kind)
        except Exception:
            log.exception(
                "tunnel message failed gateway_id=%s request_id=%s kind=%s",
                mid.gateway_id.hex(), mid.request_id.hex(), type(kind).__name__,
            )
            # A request that was never started must still be answered, or the gateway waits.
            if isinstance(kind, p.ToEnvoyRequestStart) and key not in self._http:
                self.emit(mid.gateway_id, mid.request_id, 0, _fetch_failed_response())
            elif isinstance(kind, p.ToEnvoyWebSocketOpen) and key not in self._sockets:
                self.emit(mid.gateway_id, mid.request_id, 0, p.ToRivetWebSocketClose(
                    code=CLOSE_ERROR, reason="envoy.fetch_failed", hibernate=False))

    def _on_http_message(
        self, key: bytes, mid: p.MessageId, kind: p.ToEnvoyTunnelMessageKind
    ) -> None:
        exchange = self._http.get(key)
        if exchange is None:
            self._unknown(mid, kind)
            return
        if isinstance(kind, p.ToEnvoyRequestAbort):
            # The client went away: drop the handler, nothing is answered.
            log.debug("tunnelled request aborted actor_id=%s reason=%s", exchange.actor_id,
                      kind.reason.kind.name.lower())
            self._http.pop(key, None)
            exchange.abort()
            return
        if not exchange.on_message(mid.message_index, kind):
            self._http.pop(key, None)

    def _unknown(self, mid: p.MessageId, kind: object) -> None:
        log.debug(
            "tunnel message for unknown request ignored gateway_id=%s request_id=%s kind=%s",
            mid.gateway_id.hex(), mid.request_id.hex(), type(kind).__name__,
        )

    def _check_actor(self, actor_id: str, wanted: int | None) -> tuple[int | None, str | None]:
        """``(generation, None)`` when the actor runs here, else ``(None, error code)``."""
        running = None if self._closed else self._running_generation(actor_id)
        if running is None:
            return None, "envoy.actor_not_found"
        if wanted is not None and wanted != running:
            return None, "envoy.actor_generation_mismatch"
        return running, None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this tunnel serves on (looked up once: a ``getpid`` each time)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # -- HTTP ------------------------------------------------------------------------------

    def _on_request_start(self, key: bytes, mid: p.MessageId, start: p.ToEnvoyRequestStart) -> None:
        if key in self._http:
            log.warning("duplicate request start ignored actor_id=%s", start.actor_id)
            return
        exchange = HttpExchange(self, mid, start)
        if mid.message_index != 0:
            log.warning("request start not at index 0 actor_id=%s index=%d",
                        start.actor_id, mid.message_index)
            exchange.answer_error(
                500, "envoy.message_index_skip",
                envoy_error("message_index_skip", "the request start must have index 0"),
            )
            return
        _, refused = self._check_actor(start.actor_id, start.actor_generation)
        if refused == "envoy.actor_not_found" and self._stopped_here is not None and (
            self._stopped_here(start.actor_id)
        ):
            log.debug("request for an actor stopped here left to the gateway actor_id=%s",
                      start.actor_id)
            return
        if refused is not None:
            log.info("tunnelled request refused actor_id=%s generation=%s error=%s",
                     start.actor_id, start.actor_generation, refused)
            text = b"Actor not found" if refused == "envoy.actor_not_found" else (
                b"Actor generation does not match"
            )
            exchange.answer_error(503, refused, text, text=True)
            return
        scope = _build_scope("http", start.actor_id, start.path, start.headers)
        scope["method"] = exchange.method
        # The gateway sets the CORS headers of every response it forwards (as for the official
        # runtime, whose tunnelled responses carry none).
        scope["extensions"][CORS_HANDLED_EXTENSION] = True
        self._http[key] = exchange
        exchange.task = self._spawn(self._run_http(key, exchange, scope))

    async def _run_http(self, key: bytes, exchange: HttpExchange, scope: Scope) -> None:
        try:
            crashed = await self._run_app(scope, exchange.receive, exchange.send)
        finally:
            if self._http.get(key) is exchange:
                del self._http[key]
        if exchange.streaming:
            if not exchange.stream_finished:
                if not crashed:
                    log.error("asgi app returned in the middle of a streamed response path=%s",
                              scope["path"])
                exchange.abort_response(p.HttpStreamAbortReasonKind.HANDLER_ERROR,
                                        "the actor's response ended early")
            return
        if exchange.responded:
            return
        if not crashed and exchange.body_cancelled:
            message = "the gateway cancelled the request body"
            exchange.answer_error(
                400, "envoy.request_body_cancelled", envoy_error("request_body_cancelled", message)
            )
            return
        if not crashed:
            log.error("asgi app returned without a complete response path=%s", scope["path"])
        exchange.answer_error(500, "envoy.fetch_failed", FETCH_FAILED_BODY)

    async def _run_app(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Run the app for one request; ``True`` when it crashed. A cancellation requested by
        the tunnel (abort, close) propagates: nothing is answered then."""
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.error("asgi app cancelled itself path=%s", scope["path"])
            return True
        except Exception:
            log.exception("asgi app failed path=%s", scope["path"])
            return True
        return False

    # -- WebSocket -------------------------------------------------------------------------

    def _on_websocket_open(
        self, key: bytes, mid: p.MessageId, open_: p.ToEnvoyWebSocketOpen
    ) -> None:
        existing = self._sockets.get(key)
        if existing is not None and existing.state is not SocketState.CLOSED:
            log.warning("duplicate websocket open ignored actor_id=%s", open_.actor_id)
            return
        generation, refused = self._check_actor(open_.actor_id, open_.actor_generation)
        if generation is None:
            log.info("tunnelled websocket refused actor_id=%s generation=%s error=%s",
                     open_.actor_id, open_.actor_generation, refused)
            reason = "Actor not found" if refused == "envoy.actor_not_found" else (
                "Actor generation does not match"
            )
            self.emit(
                mid.gateway_id, mid.request_id, 0,
                p.ToRivetWebSocketClose(code=CLOSE_ERROR, reason=reason, hibernate=False),
            )
            return
        info = TunnelWebSocket(
            actor_id=open_.actor_id,
            generation=generation,
            gateway_id=bytes(mid.gateway_id),
            request_id=bytes(mid.request_id),
            path=open_.path,
            headers=dict(open_.headers),
        )
        hibernatable = self._decide_hibernation(info)
        socket = TunnelSocket(self, info, mid.message_index, can_hibernate=hibernatable)
        self._serve_socket(key, socket, None)

    async def restore_websocket(
        self, actor_id: str, generation: int, conn_id: str, hibernation: Hibernation
    ) -> None:
        """Reattach a hibernatable socket the gateway held while its actor slept (§6.7.4).

        Announces the socket open again (``ToRivetWebSocketOpen{canHibernate: true}``) at once,
        so it goes out before the actor reports running, and serves the socket with the app,
        whose ``/connect`` handler takes over connection ``conn_id`` (scope extension
        ``rivet.tunnel`` key ``restore``) instead of opening a new one. Messages the gateway
        replays up to ``hibernation.server_message_index`` are dropped as duplicates.

        Does not suspend: the app starts on the socket once the caller yields to the event
        loop, so the caller makes the actor reachable before it awaits anything else.
        """
        key = hibernation.gateway_id + hibernation.request_id
        existing = self._sockets.get(key)
        if existing is not None and existing.state is not SocketState.CLOSED:
            log.warning("restore of a websocket already open ignored actor_id=%s conn_id=%s",
                        actor_id, conn_id)
            return
        info = TunnelWebSocket(
            actor_id=actor_id,
            generation=generation,
            gateway_id=hibernation.gateway_id,
            request_id=hibernation.request_id,
            path=hibernation.request_path,
            headers=dict(hibernation.request_headers),
        )
        socket = TunnelSocket(self, info, hibernation.server_message_index % U16,
                              can_hibernate=True, restored=True)
        log.debug("websocket restored actor_id=%s conn_id=%s last_index=%d",
                  actor_id, conn_id, socket.last_index)
        self._serve_socket(key, socket, conn_id)

    def refuse_restore(self, actor_id: str, gateway_id: bytes, request_id: bytes) -> None:
        """Close a socket the gateway held for an actor that has no connection stored for it
        (``ToRivetWebSocketClose{1000, ws.meta_not_found_during_restore}``, as the reference
        envoy client does): the client learns its connection is gone and connects again."""
        log.info("held websocket without stored connection closed actor_id=%s", actor_id)
        self.emit(gateway_id, request_id, 0, p.ToRivetWebSocketClose(
            code=CLOSE_NORMAL, reason="ws.meta_not_found_during_restore", hibernate=False))

    def _serve_socket(self, key: bytes, socket: TunnelSocket, restore: str | None) -> None:
        info = socket.info
        scope = _build_scope("websocket", info.actor_id, info.path, info.headers)
        extension: dict[str, Any] = {
            "gateway_id": info.gateway_id,
            "request_id": info.request_id,
            "path": info.path,
            "headers": dict(info.headers),
            "hibernatable": socket.can_hibernate,
            "send_now": socket.send_now,
        }
        if socket.can_hibernate:
            extension["ack"] = socket.ack
        if restore is not None:
            extension["restore"] = restore
        scope["extensions"][TUNNEL_EXTENSION] = extension
        self._sockets[key] = socket
        socket.task = self._spawn(self._run_websocket(key, socket, scope))

    async def _run_websocket(self, key: bytes, socket: TunnelSocket, scope: Scope) -> None:
        try:
            crashed = await self._run_app(scope, socket.receive, socket.send)
        finally:
            if self._sockets.get(key) is socket:
                del self._sockets[key]
        if crashed and socket.state is not SocketState.CLOSED:
            socket.close_from_runtime(CLOSE_ERROR, "envoy.fetch_failed")
        elif socket.state is SocketState.CONNECTING:
            socket.close_from_runtime(CLOSE_ERROR, "ws.rejected")  # returned without accepting
        elif socket.state is SocketState.OPEN:
            socket.close_from_runtime(CLOSE_NORMAL, "")  # returned without closing

    def _decide_hibernation(self, info: TunnelWebSocket) -> bool:
        """Whether a new socket is hibernatable (``can_hibernate``, never raises)."""
        if self._can_hibernate is None:
            return False
        try:
            return bool(self._can_hibernate(info))
        except Exception:
            log.exception("can_hibernate failed actor_id=%s path=%s", info.actor_id, info.path)
            return False

    # -- plumbing --------------------------------------------------------------------------

    def emit(
        self, gateway_id: bytes, request_id: bytes, index: int, kind: p.ToRivetTunnelMessageKind
    ) -> None:
        """Queue one message for the engine (used by the request and socket objects)."""
        message = p.ToRivetTunnelMessage(
            message_id=p.MessageId(
                gateway_id=gateway_id, request_id=request_id, message_index=index
            ),
            message_kind=kind,
        )
        try:
            self._send(message)
        except Exception:
            log.exception("queueing a tunnel message failed kind=%s", type(kind).__name__)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop serving: refuse new requests, cancel every handler and wait for them.

        Open sockets that are not hibernatable are closed with ``1001 ws.going_away`` so their
        clients reconnect; hibernatable ones are left to the gateway, which keeps them. A
        streamed response still running is aborted. Idempotent.
        """
        self._closed = True
        for socket in list(self._sockets.values()):
            if socket.state is SocketState.OPEN and not socket.can_hibernate:
                socket.close_from_runtime(CLOSE_GOING_AWAY, "ws.going_away")
        for exchange in self._http.values():
            # The handler is cancelled: nothing more is sent after this.
            exchange.abort_response(p.HttpStreamAbortReasonKind.CANCELLED, "envoy.going_away")
            exchange.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._http.clear()
        self._sockets.clear()
