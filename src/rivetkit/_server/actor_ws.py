"""The actor-connect WebSocket (``/connect``, client-protocol §8).

Flow: accept with subprotocol ``rivet`` (the official client hangs without one), resolve and
wake the actor, run the connect hooks, send ``Init``, then read frames: ``ActionRequest`` runs
concurrently (responses may leave out of order), ``SubscriptionRequest`` subscribes after the
event's ``can_subscribe`` check. Failures are reported the way the official gateway does: after
the 101, with an ``Error`` frame and/or a close ``1011 "{group}.{code}"``.

Outgoing frames go through one ordered queue per socket, drained by a writer task, so that actor
code can broadcast from sync functions and an ``Event`` sent during an action leaves before that
action's response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .. import errors
from .._log import server_logger
from .._protocol import DecodeError, get_codec
from .._protocol.messages import ActionRequest, ActionResponse, Error, Event, Init
from .actor_http import actor_specifier, decode_conn_params
from .http import Receive, Scope, Send, public_error

if TYPE_CHECKING:
    from .._runtime.conn import Conn
    from .._runtime.instance import ActorInstance
    from ..config import RegistryConfig

__all__ = ["WsOptions", "parse_subprotocols", "Socket", "handle_connect", "close_unaccepted"]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_ERROR = 1011
GOING_AWAY_REASON = "ws.going_away"

_ENCODINGS = frozenset({"json", "cbor", "bare"})


@dataclass(slots=True)
class WsOptions:
    """What the client said in its ``Sec-WebSocket-Protocol`` list (§8.1, §4.4)."""

    offered: list[str]
    encoding: str | None  # None: an unknown encoding was asked for
    params: str | None
    target_actor: bool
    actor_id: str | None
    token: str | None
    skip_ready_wait: bool

    @property
    def selected(self) -> str | None:
        """The subprotocol to answer with: ``rivet`` when offered, else none."""
        return "rivet" if "rivet" in self.offered else None

    def forwardable(self) -> list[str]:
        """Offered subprotocols minus the token (never forwarded to user code)."""
        return [p for p in self.offered if not p.startswith("rivet_token.")]


def parse_subprotocols(protocols: list[str]) -> WsOptions:
    encoding: str | None = "json"
    params = None
    target_actor = False
    actor_id = None
    token = None
    skip = False
    for proto in protocols:
        if proto.startswith("rivet_encoding."):
            value = proto[len("rivet_encoding.") :]
            encoding = value if value in _ENCODINGS else None
        elif proto.startswith("rivet_conn_params."):
            params = unquote(proto[len("rivet_conn_params.") :])
        elif proto == "rivet_target.actor":
            target_actor = True
        elif proto.startswith("rivet_actor."):
            actor_id = unquote(proto[len("rivet_actor.") :])
        elif proto.startswith("rivet_token."):
            token = unquote(proto[len("rivet_token.") :])
        elif proto == "rivet_skip_ready_wait":
            skip = True
    return WsOptions(list(protocols), encoding, params, target_actor, actor_id, token, skip)


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class Socket:
    """One accepted ``/connect`` socket: encoding plus the ordered outgoing queue."""

    __slots__ = ("encoding", "codec", "_send", "_queue", "closing", "writer", "inflight", "_deferred")

    def __init__(self, send: Send, encoding: str) -> None:
        self.encoding = encoding
        self.codec = get_codec(encoding)  # type: ignore[arg-type]
        self._send = send
        self._queue: asyncio.Queue[bytes | str | _Close] = asyncio.Queue()
        self.closing = False
        self.writer: asyncio.Task[None] | None = None
        self.inflight = 0
        self._deferred: _Close | None = None

    def encode_event(self, name: str, args: list[Any]) -> bytes | str:
        return self.codec.encode_to_client(Event(name, args))

    def push(self, frame: bytes | str) -> None:
        if not self.closing:
            self._queue.put_nowait(frame)

    def close(self, code: int, reason: str) -> None:
        """Close after the queued frames; a normal close requested while actions are in flight
        (``conn.disconnect()`` inside an action) waits for their responses first."""
        if self.closing:
            return
        if code == CLOSE_NORMAL and self.inflight:
            if self._deferred is None:
                self._deferred = _Close(code, reason)
            return
        self.closing = True
        self._queue.put_nowait(_Close(code, reason))

    def action_done(self) -> None:
        self.inflight -= 1
        deferred = self._deferred
        if deferred is not None and not self.inflight:
            self._deferred = None
            self.close(deferred.code, deferred.reason)

    def start(self) -> None:
        self.writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        send = self._send
        queue = self._queue
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _Close):
                    await send({"type": "websocket.close", "code": item.code, "reason": item.reason})
                    return
                if isinstance(item, str):
                    await send({"type": "websocket.send", "text": item})
                else:
                    await send({"type": "websocket.send", "bytes": item})
        except OSError:
            self.closing = True  # the client went away; nothing left to deliver

    async def finish(self) -> None:
        """Stop the writer once the socket is gone."""
        self.closing = True
        writer = self.writer
        if writer is not None and not writer.done():
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                pass


def _frame_size(data: bytes | str) -> int:
    if isinstance(data, bytes):
        return len(data)
    return len(data) if data.isascii() else len(data.encode())


async def close_unaccepted(receive: Receive, send: Send, options: WsOptions, code: int, reason: str) -> None:
    """Complete the handshake, then close with ``code`` and ``reason`` (the gateway's way)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": options.selected})
    await send({"type": "websocket.close", "code": code, "reason": reason})


async def handle_connect(
    scope: Scope,
    receive: Receive,
    send: Send,
    options: WsOptions,
    resolve: Callable[[], Awaitable[ActorInstance]],
    config: RegistryConfig,
    live: set[Socket],
) -> None:
    """Serve one ``/connect`` socket until it closes."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": options.selected})
    if options.encoding is None:
        await send(
            {
                "type": "websocket.close",
                "code": CLOSE_UNSUPPORTED,
                "reason": "actor.unsupported_websocket_encoding",
            }
        )
        return
    try:
        params = decode_conn_params(options.params)
        instance = await resolve()
    except errors.RivetError as err:
        if not err.public:
            server_logger.error("websocket connect failed", exc_info=err)
        await send({"type": "websocket.close", "code": CLOSE_ERROR, "reason": err.full_code})
        return
    except Exception as exc:
        server_logger.error("websocket connect failed", exc_info=exc)
        await send(
            {"type": "websocket.close", "code": CLOSE_ERROR, "reason": "rivetkit.internal_error"}
        )
        return

    socket = Socket(send, options.encoding)
    socket.start()
    codec = socket.codec
    try:
        conn = await instance.open_conn(params, socket)
    except Exception as exc:
        rejected = _public(exc, config, instance.log)
        socket.push(
            codec.encode_to_client(
                Error(
                    rejected.group,
                    rejected.code,
                    rejected.message,
                    rejected.metadata,
                    None,
                    actor_specifier(instance),
                )
            )
        )
        socket.close(CLOSE_ERROR, rejected.full_code)
        await _drain(socket)
        return

    socket.push(codec.encode_to_client(Init(instance.actor_id, conn.id)))
    live.add(socket)
    tasks: set[asyncio.Task[None]] = set()
    limit = config.max_incoming_message_size
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                break  # websocket.disconnect
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            if _frame_size(data) > limit:
                socket.close(CLOSE_ERROR, "message.incoming_too_long")
                continue
            try:
                request = codec.decode_to_server(data)
            except DecodeError as exc:
                instance.log.warning("invalid websocket frame conn_id=%s error=%s", conn.id, exc)
                socket.close(CLOSE_ERROR, "actor.invalid_request")
                continue
            if isinstance(request, ActionRequest):
                socket.inflight += 1
                task = asyncio.ensure_future(_action(instance, conn, socket, request, config))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif request.subscribe:
                try:
                    await instance.subscribe(conn, request.event_name)
                except Exception as exc:
                    refused = _public(exc, config, instance.log)
                    socket.close(CLOSE_ERROR, refused.full_code)
            else:
                instance.unsubscribe(conn, request.event_name)
    finally:
        live.discard(socket)
        socket.closing = True
        await instance.close_conn(conn)
        await socket.finish()


def _public(
    exc: BaseException, config: RegistryConfig, log: logging.Logger | logging.LoggerAdapter[Any]
) -> errors.RivetError:
    if not (isinstance(exc, errors.RivetError) and exc.public):
        log.error("error in actor connection", exc_info=exc)
    return public_error(exc, expose=config.expose_errors)


async def _drain(socket: Socket) -> None:
    writer = socket.writer
    if writer is not None:
        try:
            await asyncio.wait_for(asyncio.shield(writer), 5)
        except (TimeoutError, asyncio.CancelledError):
            pass
    await socket.finish()


async def _action(
    instance: ActorInstance, conn: Conn, socket: Socket, request: ActionRequest, config: RegistryConfig
) -> None:
    try:
        socket.push(_action_frame(instance, conn, socket, request, config, await _run(instance, conn, request)))
    except Exception as exc:
        failure = _public(exc, config, instance.log)
        socket.push(
            socket.codec.encode_to_client(
                Error(
                    failure.group,
                    failure.code,
                    failure.message,
                    failure.metadata,
                    request.id,
                    actor_specifier(instance),
                )
            )
        )
    finally:
        socket.action_done()


async def _run(instance: ActorInstance, conn: Conn, request: ActionRequest) -> Any:
    return await instance.call_action(request.name, request.args, conn)


def _action_frame(
    instance: ActorInstance,
    conn: Conn,
    socket: Socket,
    request: ActionRequest,
    config: RegistryConfig,
    output: Any,
) -> bytes | str:
    """The ``ActionResponse`` frame, or an ``Error`` frame when it exceeds the outgoing limit."""
    frame = socket.codec.encode_to_client(ActionResponse(request.id, output))
    size = _frame_size(frame)
    if size <= config.max_outgoing_message_size:
        return frame
    return socket.codec.encode_to_client(
        Error(
            "message",
            "outgoing_too_long",
            "Outgoing message too long",
            {"size": size, "limit": config.max_outgoing_message_size},
            request.id,
        )
    )


def close_all(live: set[Socket], code: int = CLOSE_GOING_AWAY, reason: str = GOING_AWAY_REASON) -> None:
    """Close every live socket (server shutdown): clients reconnect on ``ws.going_away``."""
    for socket in list(live):
        socket.close(code, reason)
