"""Client traffic tunnelled by the engine's gateway, served by the registry's own ASGI app.

In engine mode clients never reach this process directly: the engine's gateway terminates their
HTTP requests and WebSockets and forwards them over the envoy socket as tunnel messages keyed by
``(gatewayId, requestId)`` (spec ``engine-envoy.md`` §6.7). This module turns them into ASGI calls
on the *same* app as embedded mode, at the direct gateway path ``/gateway/{actorId}{path}``, so
every actor route (actions, queues, ``/connect``, raw handlers, inspector) exists exactly once,
and turns the app's ASGI output back into tunnel messages.

Layering: :class:`Tunnel` owns one task per request or socket and the per-request state
(:class:`_HttpExchange`, :class:`_Socket`). ``on_message`` is synchronous and only feeds that
state, so the messages of one request reach the app in the engine's order while different
requests run concurrently. Outgoing messages go to a ``send`` callable that must queue without
blocking (the envoy connection buffers them while it reconnects).

Rules carried over from the reference envoy client (spec §6.7, §12 items 11-14):

* exactly one ``ToRivetResponseStart`` per HTTP request, at message index 0, with the whole
  body; responses are buffered and never streamed (the v8 response window is undocumented);
* no payload larger than the engine's ``maxResponsePayloadSize`` is ever sent: one such frame
  closes the whole envoy socket, so it is replaced by an error answer;
* engine messages of a socket carry indexes 1, 2, ... after the open (index 0): duplicates are
  dropped, a gap closes the socket with ``1008 ws.message_index_skip``;
* a hibernatable socket acknowledges each message cumulatively once the app has received it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote

import orjson

from ... import errors
from ..._protocol import envoy as p
from ..._server.http import Message, Receive, Scope, Send, gateway_error_json

__all__ = [
    "DEFAULT_MAX_RESPONSE_PAYLOAD_SIZE",
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

DEFAULT_MAX_RESPONSE_PAYLOAD_SIZE: Final = 20 * 1024 * 1024
"""``maxResponsePayloadSize`` observed from rivet-engine 2.3.19 (``ToEnvoyInit``)."""

_ASGI: Final = {"version": "3.0", "spec_version": "2.4"}
_U16: Final = 0x10000
_MAX_CLOSE_REASON: Final = 123  # bytes a WebSocket close frame can carry
_PATH_SAFE: Final = "!$%&'()*+,-./:;=@[]_~^|"
_QUERY_SAFE: Final = _PATH_SAFE + "?"
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_DROPPED_RESPONSE_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "connection"})

_FETCH_FAILED_BODY: Final = (
    b'{"group":"envoy","code":"fetch_failed","message":"actor fetch failed","metadata":{}}'
)

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_NO_STATUS: Final = 1005
CLOSE_INVALID_PAYLOAD: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_ERROR: Final = 1011


@dataclass(frozen=True, slots=True)
class TunnelWebSocket:
    """A tunnelled WebSocket as the engine opened it: what ``can_hibernate`` decides on.

    Attributes:
        actor_id: the actor the socket is for.
        generation: the generation running here when it opened.
        gateway_id: 4 bytes, with ``request_id`` the socket's identity for its whole life
            (also across actor sleeps, when it is hibernatable).
        request_id: 4 bytes.
        path: the actor path as the engine sent it (``/connect``, ``/websocket/chat?x=1``).
        headers: the client's headers (lower-case names).
    """

    actor_id: str
    generation: int
    gateway_id: bytes
    request_id: bytes
    path: str
    headers: dict[str, str]


CanHibernate = Callable[[TunnelWebSocket], bool]


class _Gone(OSError):
    """Raised by ``send`` when the peer is gone (what ASGI servers raise for a closed client).

    An ``OSError`` because that is what the app's code already treats as "client went away".
    """


def _uvarint_len(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _str_len(text: str) -> int:
    n = len(text) if text.isascii() else len(text.encode())
    return _uvarint_len(n) + n


def _response_frame_size(headers: dict[str, str], body_len: int) -> int:
    """Exact BARE size of ``ToRivet::ToRivetTunnelMessage{ResponseStart{...}}``."""
    # union tag, gateway id, request id, u16 index, kind tag, u16 status
    size = 1 + 4 + 4 + 2 + 1 + 2 + _uvarint_len(len(headers))
    for name, value in headers.items():
        size += _str_len(name) + _str_len(value)
    # optional<data> body, bool stream
    return size + 1 + _uvarint_len(body_len) + body_len + 1


def _ws_frame_size(data_len: int) -> int:
    """Exact BARE size of ``ToRivet::ToRivetTunnelMessage{WebSocketMessage{...}}``."""
    return 1 + 4 + 4 + 2 + 1 + _uvarint_len(data_len) + data_len + 1


def _index_step(last: int, index: int) -> int:
    """How far ``index`` is past ``last`` with u16 wrapping: 1 is next, 0 a duplicate, >1 a gap."""
    diff = (index - last) % _U16
    return 0 if diff == 0 or diff >= _U16 // 2 else diff


def _sendable_close_code(code: int) -> bool:
    """Whether ``code`` may travel in a close frame (RFC 6455 §7.4: 1004-1006 and 1015 are
    reserved for local use)."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


def _truncate_reason(reason: str) -> str:
    data = reason.encode()
    if len(data) <= _MAX_CLOSE_REASON:
        return reason
    return data[:_MAX_CLOSE_REASON].decode("utf-8", "ignore")


def _decode_header(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


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
    raw_path = "/gateway/" + quote(actor_id, safe="") + quote(actor_path, safe=_PATH_SAFE)
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
        "asgi": dict(_ASGI),
        "http_version": "1.1",
        "scheme": scheme,
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("ascii"),
        "query_string": quote(query, safe=_QUERY_SAFE).encode("ascii"),
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


def _response_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI response headers as the tunnel's ``map<str><str>``: lower-case names, repeated
    headers joined with ``", "`` (the map cannot hold a name twice)."""
    out: dict[str, str] = {}
    for name_bytes, value_bytes in raw:
        name = _decode_header(bytes(name_bytes)).lower()
        value = _decode_header(bytes(value_bytes))
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class _HttpExchange:
    """One tunnelled HTTP request: the body fed to the app and the response collected from it."""

    __slots__ = (
        "_chunks", "_consumed", "_ctrl_index", "_disconnected", "_end_delivered", "_finished",
        "_parts", "_size", "_wakeup", "actor_id", "body_cancelled", "gateway_id", "headers",
        "last_index", "method", "request_id", "responded", "status", "streamed", "task", "tunnel",
    )

    def __init__(
        self, tunnel: Tunnel, message_id: p.MessageId, start: p.ToEnvoyRequestStart
    ) -> None:
        self.tunnel = tunnel
        self.gateway_id = message_id.gateway_id
        self.request_id = message_id.request_id
        self.actor_id = start.actor_id
        self.method = start.method.upper()
        self.streamed = start.stream
        self.last_index = message_id.message_index
        # (bytes, whether they came in a RequestChunk and so return flow-control credit)
        self._chunks: deque[tuple[bytes, bool]] = deque()
        if start.body:
            self._chunks.append((start.body, False))
        self._finished = not start.stream
        self._end_delivered = False
        self._disconnected = False
        self._wakeup = asyncio.Event()
        self._consumed = 0
        self._ctrl_index = 0
        self.body_cancelled = False
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self._parts: list[bytes] = []
        self._size = 0
        self.responded = False
        self.task: asyncio.Task[None] | None = None

    # -- engine side -----------------------------------------------------------------------

    def feed(self, chunk: p.ToEnvoyRequestChunk) -> None:
        if self._finished:
            return
        if chunk.body:
            self._chunks.append((chunk.body, True))
        if chunk.finish:
            self._finished = True
        self._wakeup.set()

    def cancel_body(self) -> None:
        """The gateway no longer sends the body: an unfinished body becomes a disconnect (the
        app must not take a truncated body for a whole one)."""
        if self._finished:
            return
        self._finished = True
        self.body_cancelled = True
        self._chunks.clear()
        self._disconnected = True
        self._wakeup.set()

    # -- ASGI side -------------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self._disconnected:
                return {"type": "http.disconnect"}  # answered, aborted or body cancelled
            if self._chunks:
                chunk, credited = self._chunks.popleft()
                last = self._finished and not self._chunks
                self._end_delivered = last
                if credited:
                    # Credit is returned once the app has the bytes (v8 flow control).
                    self._consumed += len(chunk)
                    self._control(p.ToRivetRequestBodyWindowUpdate(consumed_bytes=self._consumed))
                return {"type": "http.request", "body": chunk, "more_body": not last}
            if self._finished and not self._end_delivered:
                self._end_delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            self._wakeup.clear()
            await self._wakeup.wait()

    async def send(self, message: Message) -> None:
        if self.responded:
            raise _Gone("the tunnelled response was already sent")
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("http.response.start sent twice")
            status = message["status"]
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise RuntimeError(f"invalid HTTP status {status!r}")
            self.status = status
            self.headers = _response_headers(message.get("headers", ()))
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError("http.response.body sent before http.response.start")
            body = message.get("body", b"")
            if body:
                self._parts.append(bytes(body))
                self._size += len(body)
                # Cut an endless or huge body early (the exact frame size is checked at the
                # end): answer the error and stop the handler, as if the client had gone.
                if self._size > self.tunnel.max_response_payload_size:
                    self._too_large(self._size)
                    if self.task is not None:
                        self.task.cancel()
                    return
            if not message.get("more_body", False):
                self._respond()
        else:
            log.debug("unsupported asgi message ignored type=%s", kind)

    # -- answers ---------------------------------------------------------------------------

    def _respond(self) -> None:
        assert self.status is not None
        status = self.status
        headers = {k: v for k, v in self.headers.items() if k not in _DROPPED_RESPONSE_HEADERS}
        if self.method == "HEAD" and "content-length" in self.headers:
            headers["content-length"] = self.headers["content-length"]
        elif status >= 200 and status not in _NO_BODY_STATUSES:
            headers["content-length"] = str(self._size)
        size = _response_frame_size(headers, self._size)
        if size > self.tunnel.max_response_payload_size:
            self._too_large(size)
            return
        body = b"".join(self._parts)
        self._parts = []
        self.answer(status, headers, body)

    def _too_large(self, size: int) -> None:
        limit = self.tunnel.max_response_payload_size
        log.warning(
            "tunnelled response too large actor_id=%s size=%d limit=%d",
            self.actor_id, size, limit,
        )
        self._parts = []
        err = errors.outgoing_too_long(size, limit)
        self.answer_error(err.status, err.full_code, orjson.dumps(gateway_error_json(err)))

    def answer_error(self, status: int, code: str, body: bytes, text: bool = False) -> None:
        content_type = "text/plain; charset=utf-8" if text else "application/json"
        headers = {
            "content-type": content_type,
            "content-length": str(len(body)),
            "x-rivet-error": code,
        }
        self.answer(status, headers, body)

    def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """Send the one ``ToRivetResponseStart`` (index 0) and end the exchange."""
        if self.responded:
            return
        self.responded = True
        self.tunnel._emit(
            self.gateway_id,
            self.request_id,
            0,
            p.ToRivetResponseStart(status=status, headers=headers, body=body, stream=False),
        )
        if not self._finished:
            self._control(p.ToRivetRequestBodyCancel())  # the rest of the body is not wanted
            self._finished = True
        self._disconnected = True
        self._wakeup.set()

    def _control(self, kind: p.ToRivetTunnelMessageKind) -> None:
        # Informational index (the gateway does not check it): 0, 1, 2... like the reference.
        index = self._ctrl_index
        self._ctrl_index = (index + 1) % _U16
        self.tunnel._emit(self.gateway_id, self.request_id, index, kind)


class _State(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


class _Socket:
    """One tunnelled WebSocket: engine frames in, app frames out, the close handshake."""

    __slots__ = (
        "_ctrl_index", "_data_index", "_disconnect", "_inbox", "_wakeup", "can_hibernate", "info",
        "last_index", "state", "task", "tunnel",
    )

    def __init__(self, tunnel: Tunnel, info: TunnelWebSocket, open_index: int) -> None:
        self.tunnel = tunnel
        self.info = info
        self.state = _State.CONNECTING
        self.last_index = open_index
        self.can_hibernate = False
        self._inbox: deque[tuple[Message, int | None]] = deque()
        self._inbox.append(({"type": "websocket.connect"}, None))
        self._wakeup = asyncio.Event()
        self._disconnect: Message | None = None
        self._data_index = 0  # our data messages are numbered 1, 2, ...
        self._ctrl_index = 0  # our open/ack/close are numbered 0, 1, 2, ...
        self.task: asyncio.Task[None] | None = None

    # -- engine side -----------------------------------------------------------------------

    def feed(self, index: int, message: p.ToEnvoyWebSocketMessage) -> None:
        if self.state is _State.CLOSED:
            log.debug("websocket message after close ignored actor_id=%s", self.info.actor_id)
            return
        step = _index_step(self.last_index, index)
        if step == 0:
            log.debug(
                "duplicate websocket message dropped actor_id=%s index=%d last=%d",
                self.info.actor_id, index, self.last_index,
            )
            return
        if step > 1:
            log.warning(
                "websocket message index skipped, closing actor_id=%s index=%d last=%d",
                self.info.actor_id, index, self.last_index,
            )
            self.close_from_runtime(CLOSE_POLICY, "ws.message_index_skip")
            return
        self.last_index = index
        if message.binary:
            self._push({"type": "websocket.receive", "bytes": message.data}, index)
            return
        try:
            text = message.data.decode()
        except UnicodeDecodeError:
            log.warning("invalid utf-8 in websocket text frame actor_id=%s", self.info.actor_id)
            self.close_from_runtime(CLOSE_INVALID_PAYLOAD, "ws.invalid_utf8")
            return
        self._push({"type": "websocket.receive", "text": text}, index)

    def closed_by_client(self, close: p.ToEnvoyWebSocketClose) -> None:
        if self.state is _State.CLOSED:
            return
        reason = close.reason or ""
        echo = p.ToRivetWebSocketClose(code=close.code, reason=close.reason, hibernate=False)
        self._control(echo)
        self._finish(close.code or CLOSE_NO_STATUS, reason)

    def close_from_runtime(self, code: int, reason: str) -> None:
        if self.state is _State.CLOSED:
            return
        if not _sendable_close_code(code):
            code = CLOSE_ERROR
        reason = _truncate_reason(reason)
        self._control(p.ToRivetWebSocketClose(code=code, reason=reason, hibernate=False))
        self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> None:
        self.state = _State.CLOSED
        self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
        self._wakeup.set()

    def _push(self, message: Message, index: int | None) -> None:
        self._inbox.append((message, index))
        self._wakeup.set()

    # -- ASGI side -------------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self._inbox:
                message, index = self._inbox.popleft()
                if index is not None and self.can_hibernate and self.state is not _State.CLOSED:
                    # Cumulative: the gateway drops every buffered message up to this index.
                    self._control(p.ToRivetWebSocketMessageAck(index=index))
                return message
            if self._disconnect is not None:
                return self._disconnect
            self._wakeup.clear()
            await self._wakeup.wait()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if self.state is _State.CONNECTING:
                self.can_hibernate = self.tunnel._decide_hibernation(self.info)
                self.state = _State.OPEN
                self._control(p.ToRivetWebSocketOpen(can_hibernate=self.can_hibernate))
            elif self.state is _State.OPEN:
                raise RuntimeError("websocket.accept sent twice")
        elif kind == "websocket.send":
            if self.state is _State.CLOSED:
                raise _Gone("the tunnelled websocket is closed")
            if self.state is _State.CONNECTING:
                raise RuntimeError("websocket.send before websocket.accept")
            text = message.get("text")
            data: bytes = text.encode() if text is not None else bytes(message.get("bytes") or b"")
            limit = self.tunnel.max_response_payload_size
            if _ws_frame_size(len(data)) > limit:
                log.warning(
                    "tunnelled websocket message too large, closing actor_id=%s size=%d limit=%d",
                    self.info.actor_id, len(data), limit,
                )
                self.close_from_runtime(CLOSE_ERROR, "message.outgoing_too_long")
                raise _Gone("the websocket message is larger than the engine accepts")
            self._data_index = self._data_index % (_U16 - 1) + 1
            self.tunnel._emit(
                self.info.gateway_id,
                self.info.request_id,
                self._data_index,
                p.ToRivetWebSocketMessage(data=data, binary=text is None),
            )
        elif kind == "websocket.close":
            code = message.get("code") or CLOSE_NORMAL
            reason = message.get("reason") or ""
            if self.state is _State.CONNECTING:
                # A refused handshake: the client must not see a normal closure.
                self.close_from_runtime(
                    code if code != CLOSE_NORMAL else CLOSE_ERROR, reason or "ws.rejected"
                )
            else:
                self.close_from_runtime(code, reason)
        elif kind == "websocket.http.response.start":
            self.close_from_runtime(CLOSE_ERROR, "ws.rejected")
        else:
            log.debug("unsupported asgi message ignored type=%s", kind)

    def _control(self, kind: p.ToRivetTunnelMessageKind) -> None:
        index = self._ctrl_index
        self._ctrl_index = (index + 1) % _U16
        self.tunnel._emit(self.info.gateway_id, self.info.request_id, index, kind)


class Tunnel:
    """Serves tunnel messages of the envoy connection with an ASGI app.

    Args:
        app: the registry's ASGI app (``registry.asgi()``); requests reach it at
            ``/gateway/{actorId}{path}``.
        send: queues a message for the engine; must not block and must keep order.
        running_generation: the generation of an actor running on this envoy, ``None`` when it
            does not run here (requests for it are answered ``503 envoy.actor_not_found``, which
            makes the gateway retry).
        max_response_payload_size: the engine's limit on one tunnel payload in bytes, from
            ``ToEnvoyInit`` (20 MiB by default); may be updated on every Init.
        can_hibernate: decides, when the app accepts a WebSocket, whether the socket is
            hibernatable (acknowledged message by message and kept by the gateway while the
            actor sleeps). ``None``: no socket is.

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
        can_hibernate: CanHibernate | None = None,
    ) -> None:
        if max_response_payload_size <= 0:
            raise ValueError(
                f"max_response_payload_size must be positive, got {max_response_payload_size}"
            )
        self.app = app
        self.max_response_payload_size = max_response_payload_size
        self._send = send
        self._running_generation = running_generation
        self._can_hibernate = can_hibernate
        self._http: dict[bytes, _HttpExchange] = {}
        self._sockets: dict[bytes, _Socket] = {}
        self._tasks: set[asyncio.Task[None]] = set()
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
                self._emit(mid.gateway_id, mid.request_id, 0, _fetch_failed_response())
            elif isinstance(kind, p.ToEnvoyWebSocketOpen) and key not in self._sockets:
                self._emit(mid.gateway_id, mid.request_id, 0, p.ToRivetWebSocketClose(
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
            log.debug("tunnelled request aborted actor_id=%s", exchange.actor_id)
            self._http.pop(key, None)
            exchange.responded = True
            if exchange.task is not None:
                exchange.task.cancel()
            return
        # Every engine message of the request takes the next index, whatever its kind.
        step = _index_step(exchange.last_index, mid.message_index)
        if step == 0:
            log.debug(
                "duplicate tunnel message dropped actor_id=%s index=%d",
                exchange.actor_id, mid.message_index,
            )
            return
        if step > 1:
            log.warning(
                "tunnel message index skipped actor_id=%s index=%d last=%d",
                exchange.actor_id, mid.message_index, exchange.last_index,
            )
            self._http.pop(key, None)
            exchange.answer_error(
                500,
                "envoy.message_index_skip",
                _envoy_error("message_index_skip", "a tunnel message of this request was lost"),
            )
            if exchange.task is not None:
                exchange.task.cancel()
            return
        exchange.last_index = mid.message_index
        if isinstance(kind, p.ToEnvoyRequestChunk):
            if not exchange.streamed:
                log.warning("request chunk for a non-streamed request ignored actor_id=%s",
                            exchange.actor_id)
                return
            exchange.feed(kind)
        elif isinstance(kind, p.ToEnvoyRequestBodyCancel):
            exchange.cancel_body()
        elif isinstance(kind, p.ToEnvoyResponseBodyWindowUpdate):
            pass  # responses are never streamed: there is no response window to track
        else:
            log.warning("unexpected tunnel message ignored kind=%s", type(kind).__name__)

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

    # -- HTTP ------------------------------------------------------------------------------

    def _on_request_start(self, key: bytes, mid: p.MessageId, start: p.ToEnvoyRequestStart) -> None:
        if key in self._http:
            log.warning("duplicate request start ignored actor_id=%s", start.actor_id)
            return
        exchange = _HttpExchange(self, mid, start)
        if mid.message_index != 0:
            log.warning("request start not at index 0 actor_id=%s index=%d",
                        start.actor_id, mid.message_index)
            exchange.answer_error(
                500, "envoy.message_index_skip",
                _envoy_error("message_index_skip", "the request start must have index 0"),
            )
            return
        _, refused = self._check_actor(start.actor_id, start.actor_generation)
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
        self._http[key] = exchange
        exchange.task = self._spawn(self._run_http(key, exchange, scope))

    async def _run_http(self, key: bytes, exchange: _HttpExchange, scope: Scope) -> None:
        try:
            crashed = await self._run_app(scope, exchange.receive, exchange.send)
        finally:
            if self._http.get(key) is exchange:
                del self._http[key]
        if exchange.responded:
            return
        if not crashed and exchange.body_cancelled:
            message = "the gateway cancelled the request body"
            exchange.answer_error(
                400, "envoy.request_body_cancelled", _envoy_error("request_body_cancelled", message)
            )
            return
        if not crashed:
            log.error("asgi app returned without a complete response path=%s", scope["path"])
        exchange.answer_error(500, "envoy.fetch_failed", _FETCH_FAILED_BODY)

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
        if existing is not None and existing.state is not _State.CLOSED:
            log.warning("duplicate websocket open ignored actor_id=%s", open_.actor_id)
            return
        generation, refused = self._check_actor(open_.actor_id, open_.actor_generation)
        if generation is None:
            log.info("tunnelled websocket refused actor_id=%s generation=%s error=%s",
                     open_.actor_id, open_.actor_generation, refused)
            reason = "Actor not found" if refused == "envoy.actor_not_found" else (
                "Actor generation does not match"
            )
            self._emit(
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
        socket = _Socket(self, info, mid.message_index)
        scope = _build_scope("websocket", open_.actor_id, open_.path, open_.headers)
        self._sockets[key] = socket
        socket.task = self._spawn(self._run_websocket(key, socket, scope))

    async def _run_websocket(self, key: bytes, socket: _Socket, scope: Scope) -> None:
        try:
            crashed = await self._run_app(scope, socket.receive, socket.send)
        finally:
            if self._sockets.get(key) is socket:
                del self._sockets[key]
        if crashed and socket.state is not _State.CLOSED:
            socket.close_from_runtime(CLOSE_ERROR, "envoy.fetch_failed")
        elif socket.state is _State.CONNECTING:
            socket.close_from_runtime(CLOSE_ERROR, "ws.rejected")  # returned without accepting
        elif socket.state is _State.OPEN:
            socket.close_from_runtime(CLOSE_NORMAL, "")  # returned without closing

    def _decide_hibernation(self, info: TunnelWebSocket) -> bool:
        if self._can_hibernate is None:
            return False
        try:
            return bool(self._can_hibernate(info))
        except Exception:
            log.exception("can_hibernate failed actor_id=%s path=%s", info.actor_id, info.path)
            return False

    # -- plumbing --------------------------------------------------------------------------

    def _emit(
        self, gateway_id: bytes, request_id: bytes, index: int, kind: p.ToRivetTunnelMessageKind
    ) -> None:
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
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Stop serving: refuse new requests, cancel every handler and wait for them.

        Open sockets that are not hibernatable are closed with ``1001 ws.going_away`` so their
        clients reconnect; hibernatable ones are left to the gateway, which keeps them.
        Idempotent.
        """
        self._closed = True
        for socket in list(self._sockets.values()):
            if socket.state is _State.OPEN and not socket.can_hibernate:
                socket.close_from_runtime(CLOSE_GOING_AWAY, "ws.going_away")
        for exchange in self._http.values():
            exchange.responded = True  # the handler is cancelled: nothing more is sent
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._http.clear()
        self._sockets.clear()


def _envoy_error(code: str, message: str) -> bytes:
    return orjson.dumps({"group": "envoy", "code": code, "message": message, "metadata": {}})


def _fetch_failed_response() -> p.ToRivetResponseStart:
    headers = {
        "content-type": "application/json",
        "content-length": str(len(_FETCH_FAILED_BODY)),
        "x-rivet-error": "envoy.fetch_failed",
    }
    return p.ToRivetResponseStart(
        status=500, headers=headers, body=_FETCH_FAILED_BODY, stream=False
    )
