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
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .. import errors
from .._log import server_logger
from .._protocol import DecodeError, get_codec
from .._protocol.messages import ActionRequest, ActionResponse, Error, Event, Init
from .._runtime.conn import MESSAGE_INDEX_KEY, TUNNEL_EXTENSION, Hibernation
from .actor_http import actor_specifier, decode_conn_params
from .http import Message, Receive, Scope, Send, public_error

if TYPE_CHECKING:
    from .._runtime.conn import Conn
    from .._runtime.instance import ActorInstance
    from .._runtime.sleep import SleepController
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
    """One accepted ``/connect`` socket: its encoding and its ordered outgoing frames.

    Frames leave in the order they were produced. A frame produced in async code while nothing
    is queued is sent at once (:meth:`send`); frames pushed from sync code (events, deferred
    closes) are queued and drained in order by a task started only when needed, so the common
    path costs no task and no queue.
    """

    __slots__ = (
        "encoding", "codec", "_send", "_pending", "_busy", "closing", "_drainer", "inflight",
        "_deferred", "sleep_ctl", "_send_now",
    )

    def __init__(
        self, send: Send, encoding: str, send_now: Callable[[Message], None] | None = None
    ) -> None:
        self.encoding = encoding
        self.codec = get_codec(encoding)  # type: ignore[arg-type]
        self._send = send
        # A transport that never waits (the engine tunnel): frames leave at once, in order,
        # with no queue and no task.
        self._send_now = send_now
        self._pending: deque[bytes | str | _Close] = deque()
        self._busy = False  # a coroutine is inside self._send
        self.closing = False
        self._drainer: asyncio.Task[None] | None = None
        self.inflight = 0
        self._deferred: _Close | None = None
        # Set for a hibernatable connection (engine mode), which does not keep its actor awake
        # by being open: each action in flight on it does instead.
        self.sleep_ctl: SleepController | None = None

    def encode_event(self, name: str, args: list[Any]) -> bytes | str:
        return self.codec.encode_to_client(Event(name, args))

    def push(self, frame: bytes | str) -> None:
        """Queue a frame from sync code."""
        if not self.closing:
            self._enqueue(frame)

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already produced; a normal or going-away close requested while
        actions are in flight (``conn.disconnect()`` inside an action, the actor going to sleep)
        waits for their responses first."""
        if self.closing:
            return
        if code in (CLOSE_NORMAL, CLOSE_GOING_AWAY) and self.inflight:
            if self._deferred is None:
                self._deferred = _Close(code, reason)
            return
        self._enqueue(_Close(code, reason))
        self.closing = True

    def action_done(self) -> None:
        self.inflight -= 1
        if self.sleep_ctl is not None:
            self.sleep_ctl.release()
        deferred = self._deferred
        if deferred is not None and not self.inflight:
            self._deferred = None
            self.close(deferred.code, deferred.reason)

    async def send(self, frame: bytes | str) -> None:
        """Send a frame now when nothing is ahead of it, else queue it behind the others."""
        if self.closing:
            return
        if self._send_now is not None:
            self._transmit_now(frame)
            return
        if self._busy or self._pending:
            self._enqueue(frame)
            return
        self._busy = True
        try:
            await self._transmit(frame)
            await self._flush()
        finally:
            self._busy = False

    def _enqueue(self, item: bytes | str | _Close) -> None:
        if self._send_now is not None:
            self._transmit_now(item)
            return
        self._pending.append(item)
        if not self._busy and (self._drainer is None or self._drainer.done()):
            self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        if self._busy:
            return  # the coroutine inside send() flushes the queue when it is done
        self._busy = True
        try:
            await self._flush()
        finally:
            self._busy = False

    async def _flush(self) -> None:
        pending = self._pending
        while pending:
            await self._transmit(pending.popleft())

    async def _transmit(self, item: bytes | str | _Close) -> None:
        try:
            if isinstance(item, _Close):
                self._pending.clear()
            await self._send(_asgi_message(item))
        except OSError:
            self.closing = True  # the client went away; nothing left to deliver
            self._pending.clear()

    def _transmit_now(self, item: bytes | str | _Close) -> None:
        assert self._send_now is not None
        try:
            self._send_now(_asgi_message(item))
        except OSError:
            self.closing = True  # the client went away; nothing left to deliver

    async def wait_sent(self, timeout: float) -> None:
        """Wait (bounded) until every queued frame left."""
        drainer = self._drainer
        if drainer is not None and not drainer.done():
            try:
                await asyncio.wait_for(asyncio.shield(drainer), timeout)
            except (TimeoutError, asyncio.CancelledError):
                pass

    async def finish(self) -> None:
        """Forget unsent frames once the socket is gone."""
        self.closing = True
        self._pending.clear()
        drainer = self._drainer
        if drainer is not None and not drainer.done():
            drainer.cancel()
            try:
                await drainer
            except asyncio.CancelledError:
                pass


def _asgi_message(item: bytes | str | _Close) -> Message:
    if isinstance(item, _Close):
        return {"type": "websocket.close", "code": item.code, "reason": item.reason}
    if isinstance(item, str):
        return {"type": "websocket.send", "text": item}
    return {"type": "websocket.send", "bytes": item}


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

    tunnel = (scope.get("extensions") or {}).get(TUNNEL_EXTENSION)
    socket = Socket(send, options.encoding, None if tunnel is None else tunnel.get("send_now"))
    codec = socket.codec
    restored = None if tunnel is None else tunnel.get("restore")
    ack: Callable[[int], None] | None = None if tunnel is None else tunnel.get("ack")
    try:
        try:
            if restored is not None:
                conn = _restored(instance, restored, socket)
            else:
                conn = await instance.open_conn(params, socket)
                if tunnel is not None and tunnel.get("hibernatable"):
                    instance.mark_hibernatable(conn, Hibernation(
                        gateway_id=tunnel["gateway_id"],
                        request_id=tunnel["request_id"],
                        request_path=tunnel["path"],
                        request_headers=dict(tunnel["headers"]),
                    ))
                    # Its rows go with this tick's commit: from then on the connection
                    # outlives this generation (a sleep, or a crash of this process).
                    instance.store_conn(conn)
                    instance.save_then(_stored_or_logged(instance, conn))
        finally:
            instance.sleep_ctl.release()  # resolve() pinned it; the connection keeps it awake
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
        await socket.wait_sent(5)
        await socket.finish()
        return

    if conn.hibernation is not None:
        socket.sleep_ctl = instance.sleep_ctl
    if restored is None:  # a restored connection's client already has its Init
        await socket.send(codec.encode_to_client(Init(instance.actor_id, conn.id)))
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
            hibernation = conn.hibernation
            # (ack, index) of this message: acknowledged once taken (below), as late as it can be
            unacked: tuple[Callable[[int], None], int] | None = None
            if hibernation is not None and ack is not None:
                index = message.get(MESSAGE_INDEX_KEY)
                if index is not None:
                    if instance.stopping == "sleep":
                        # Its index is (being) stored for the actor's next generation: left
                        # unacknowledged, the gateway sends it again after the wake.
                        instance.log.debug(
                            "message left to the next generation conn_id=%s index=%d",
                            conn.id, index,
                        )
                        continue
                    hibernation.server_message_index = index
                    unacked = (ack, index)
            try:
                if _frame_size(data) > limit:
                    socket.close(CLOSE_ERROR, "message.incoming_too_long")
                    continue
                try:
                    request = codec.decode_to_server(data)
                except DecodeError as exc:
                    instance.log.warning(
                        "invalid websocket frame conn_id=%s error=%s", conn.id, exc
                    )
                    socket.close(CLOSE_ERROR, "actor.invalid_request")
                    continue
                if isinstance(request, ActionRequest):
                    socket.inflight += 1
                    if socket.sleep_ctl is not None:
                        socket.sleep_ctl.busy += 1  # released with the answer (action_done)
                    try:
                        ctx, output, pending = instance.start_action(
                            request.name, request.args, conn
                        )
                    except Exception as exc:
                        await _answer(instance, socket, request, config, None, exc)
                        continue
                    if pending or instance.has_response_hook:
                        # Async actions run concurrently and may answer out of order.
                        task = asyncio.ensure_future(
                            _finish(instance, socket, request, config, ctx, output, pending)
                        )
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif instance.definition.has_state or hibernation is not None:
                        # A sync action already ran: answer once this tick's shared commit is
                        # done, from the commit's callback (no task, and the reader keeps
                        # reading). Its message is acknowledged with the answer: one write for
                        # both (the commit takes milliseconds; the gateway waits 30 s), and a
                        # commit that fails leaves it to be delivered to the next generation.
                        instance.save_then(functools.partial(
                            _answer_later, instance, socket, request, config, output,
                            acknowledge=None if unacked is None else functools.partial(
                                _acknowledge, *unacked
                            ),
                        ))
                        unacked = None
                    else:
                        _answer_later(instance, socket, request, config, output, None)
                elif request.subscribe:
                    try:
                        await instance.subscribe(conn, request.event_name)
                    except Exception as exc:
                        refused = _public(exc, config, instance.log)
                        socket.close(CLOSE_ERROR, refused.full_code)
                else:
                    instance.unsubscribe(conn, request.event_name)
            finally:
                if unacked is not None:
                    unacked[0](unacked[1])
    finally:
        live.discard(socket)
        socket.closing = True
        await instance.close_conn(conn)
        await socket.finish()


def _stored_or_logged(instance: ActorInstance, conn: Conn) -> Callable[[BaseException | None], None]:
    def stored(error: BaseException | None) -> None:
        if error is not None:  # the store failed: the host stops the actor
            instance.log.warning("connection rows not stored conn_id=%s error=%r", conn.id, error)

    return stored


def _restored(instance: ActorInstance, conn_id: str, socket: Socket) -> Conn:
    """The connection the host restored after a sleep, now attached to its socket again."""
    conn = instance.conns.get(conn_id)
    if conn is None or conn.hibernation is None:
        raise errors.RivetError(
            "actor", "connection_not_found",
            f"No hibernated connection {conn_id!r} to restore.", metadata={"connId": conn_id},
        )
    conn.socket = socket
    return conn


def _public(
    exc: BaseException, config: RegistryConfig, log: logging.Logger | logging.LoggerAdapter[Any]
) -> errors.RivetError:
    if not (isinstance(exc, errors.RivetError) and exc.public):
        log.error("error in actor connection", exc_info=exc)
    return public_error(exc, expose=config.expose_errors)


async def _answer(
    instance: ActorInstance,
    socket: Socket,
    request: ActionRequest,
    config: RegistryConfig,
    output: Any,
    exc: Exception | None,
) -> None:
    """Commit a finished sync action's state, then send its response or error."""
    try:
        if instance.definition.has_state and not instance.stopped:
            try:
                await instance.save_state()
            except Exception as save_exc:
                exc = exc or save_exc
        frame: bytes | str | None = None
        if exc is None:
            try:
                frame = _action_frame(instance, socket, request, config, output)
            except Exception as encode_exc:
                exc = encode_exc
        if frame is None:
            frame = _error_frame(instance, socket, request, config, exc or RuntimeError())
        await socket.send(frame)
    finally:
        socket.action_done()


def _acknowledge(ack: Callable[[int], None], index: int, error: BaseException | None) -> None:
    if error is None:
        ack(index)


def _answer_later(
    instance: ActorInstance,
    socket: Socket,
    request: ActionRequest,
    config: RegistryConfig,
    output: Any,
    error: BaseException | None,
    acknowledge: Callable[[BaseException | None], None] | None = None,
) -> None:
    """Answer a sync action after its state commit (``error``: the commit failed), its
    message acknowledged first (``acknowledge``) unless the commit failed."""
    try:
        if acknowledge is not None:
            acknowledge(error)
        frame: bytes | str | None = None
        if error is None:
            try:
                frame = _action_frame(instance, socket, request, config, output)
            except Exception as exc:
                error = exc
        if frame is None:
            frame = _error_frame(instance, socket, request, config, error or RuntimeError())
        socket.push(frame)
    finally:
        socket.action_done()


async def _finish(
    instance: ActorInstance,
    socket: Socket,
    request: ActionRequest,
    config: RegistryConfig,
    ctx: Any,
    output: Any,
    pending: bool,
) -> None:
    """Complete an async action (or one with a response hook) and send its answer."""
    try:
        try:
            result = await instance.finish_action(request.name, request.args, ctx, output, pending)
            frame = _action_frame(instance, socket, request, config, result)
        except Exception as exc:
            frame = _error_frame(instance, socket, request, config, exc)
        await socket.send(frame)
    finally:
        socket.action_done()


def _error_frame(
    instance: ActorInstance,
    socket: Socket,
    request: ActionRequest,
    config: RegistryConfig,
    exc: BaseException,
) -> bytes | str:
    failure = _public(exc, config, instance.log)
    return socket.codec.encode_to_client(
        Error(
            failure.group,
            failure.code,
            failure.message,
            failure.metadata,
            request.id,
            actor_specifier(instance),
        )
    )


def _action_frame(
    instance: ActorInstance,
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
