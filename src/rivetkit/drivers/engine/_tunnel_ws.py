"""One tunnelled WebSocket: engine frames in, app frames out, the close handshake.

:class:`TunnelSocket` is driven from two sides: :class:`~.tunnel.Tunnel` feeds it the engine's
messages of the socket (``feed``, ``closed_by_client``), the app calls its ``receive``/``send``
as the ASGI ``websocket`` protocol says.

Rules (spec ``engine-envoy.md`` §6.7.2-§6.7.3, verified against rivet-engine 2.3.19):

* the engine numbers its messages of a socket 1, 2, ... after the open (index 0): duplicates
  are dropped, a gap closes the socket with ``1008 ws.message_index_skip`` (except the first
  message of a restored socket, whose stored index may be behind the last acknowledged one);
* our data messages are numbered 1, 2, ... and our open/ack/close 0, 1, 2, ... (two counters,
  like the reference client);
* on a hibernatable socket the app sees each message's index (``websocket.receive`` key
  ``rivet.message_index``) and acknowledges it itself (:meth:`TunnelSocket.ack`, cumulative,
  offered as the scope extension's ``ack``) once it has taken the message as its own: the
  index it stores before the actor sleeps must be the last one acknowledged, and a message it
  leaves unacknowledged (its actor is already going to sleep) is sent again by the gateway to
  the actor's next generation;
* a hibernatable socket the app closes with reason ``actor.hibernating`` (its actor is going to
  sleep) is let go silently: the gateway keeps the client connected until the actor wakes and
  the socket is restored (``restored=True``: the open is announced before the app runs).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import Final

from ..._protocol import envoy as p
from ..._runtime.conn import HIBERNATE_REASON, MESSAGE_INDEX_KEY
from ..._server.http import Message
from ._tunnel_http import U16, Gone, SocketOwner, Wakeup, index_step, uvarint_len

__all__ = [
    "CLOSE_ERROR",
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "SocketOwner",
    "SocketState",
    "TunnelSocket",
    "TunnelWebSocket",
]

log = logging.getLogger("rivetkit.envoy.tunnel")

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_NO_STATUS: Final = 1005
CLOSE_INVALID_PAYLOAD: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_ERROR: Final = 1011
_MAX_CLOSE_REASON: Final = 123  # bytes a WebSocket close frame can carry


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


class SocketState(enum.Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSED = "closed"


def _ws_frame_size(data_len: int) -> int:
    """Exact BARE size of ``ToRivet::ToRivetTunnelMessage{WebSocketMessage{...}}``."""
    return 1 + 4 + 4 + 2 + 1 + uvarint_len(data_len) + data_len + 1


def _sendable_close_code(code: int) -> bool:
    """Whether ``code`` may travel in a close frame (RFC 6455 §7.4: 1004-1006 and 1015 are
    reserved for local use)."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


def _truncate_reason(reason: str) -> str:
    data = reason.encode()
    if len(data) <= _MAX_CLOSE_REASON:
        return reason
    return data[:_MAX_CLOSE_REASON].decode("utf-8", "ignore")


class TunnelSocket:
    """One tunnelled WebSocket (see the module docstring).

    Args:
        owner: the tunnel.
        info: the socket as the engine opened it.
        last_index: index of the last engine message already handled (the open: 0; a restored
            socket: the last one the app saw before the actor slept).
        can_hibernate: what ``ToRivetWebSocketOpen`` announces (decided before the app runs,
            so the app knows it too).
        restored: the socket existed before the actor slept: the open is announced at once
            (before the actor reports running) and the app's accept sends nothing.
    """

    __slots__ = (
        "_ctrl_index", "_data_index", "_disconnect", "_inbox", "_open_sent", "_wakeup",
        "_acked_index", "_resumed", "can_hibernate", "info", "last_index", "owner", "state",
        "task",
    )

    def __init__(
        self,
        owner: SocketOwner,
        info: TunnelWebSocket,
        last_index: int,
        *,
        can_hibernate: bool = False,
        restored: bool = False,
    ) -> None:
        self.owner = owner
        self.info = info
        self.state = SocketState.CONNECTING
        self.last_index = last_index
        self._acked_index = last_index  # the last index acknowledged (cumulative)
        self.can_hibernate = can_hibernate
        self._open_sent = False
        self._inbox: deque[Message] = deque()
        self._inbox.append({"type": "websocket.connect"})
        self._wakeup = Wakeup(owner)
        self._disconnect: Message | None = None
        self._data_index = 0  # our data messages are numbered 1, 2, ...
        self._ctrl_index = 0  # our open/ack/close are numbered 0, 1, 2, ...
        self.task: asyncio.Task[None] | None = None
        # A restored socket's stored index may be behind what its last generation acknowledged
        # (the rows are written with state commits, not per message, and a crash may come
        # between): its first message may skip ahead, never back.
        self._resumed = restored
        if restored:
            self._announce_open()

    # -- engine side -----------------------------------------------------------------------

    def feed(self, index: int, message: p.ToEnvoyWebSocketMessage) -> None:
        if self.state is SocketState.CLOSED:
            log.debug("websocket message after close ignored actor_id=%s", self.info.actor_id)
            return
        step = index_step(self.last_index, index)
        if step == 0:
            log.debug(
                "duplicate websocket message dropped actor_id=%s index=%d last=%d",
                self.info.actor_id, index, self.last_index,
            )
            return
        if step > 1 and self._resumed:
            log.debug(
                "restored websocket resumes after the stored index actor_id=%s index=%d last=%d",
                self.info.actor_id, index, self.last_index,
            )
        elif step > 1:
            log.warning(
                "websocket message index skipped, closing actor_id=%s index=%d last=%d",
                self.info.actor_id, index, self.last_index,
            )
            self.close_from_runtime(CLOSE_POLICY, "ws.message_index_skip")
            return
        self.last_index = index
        self._resumed = False
        if message.binary:
            received: Message = {"type": "websocket.receive", "bytes": message.data}
        else:
            try:
                received = {"type": "websocket.receive", "text": message.data.decode()}
            except UnicodeDecodeError:
                log.warning("invalid utf-8 in websocket text frame actor_id=%s",
                            self.info.actor_id)
                self.close_from_runtime(CLOSE_INVALID_PAYLOAD, "ws.invalid_utf8")
                return
        received[MESSAGE_INDEX_KEY] = index
        self._push(received)

    def closed_by_client(self, close: p.ToEnvoyWebSocketClose) -> None:
        if self.state is SocketState.CLOSED:
            return
        reason = close.reason or ""
        echo = p.ToRivetWebSocketClose(code=close.code, reason=close.reason, hibernate=False)
        self._control(echo)
        self._finish(close.code or CLOSE_NO_STATUS, reason)

    def close_from_runtime(self, code: int, reason: str) -> None:
        if self.state is SocketState.CLOSED:
            return
        if not _sendable_close_code(code):
            code = CLOSE_ERROR
        reason = _truncate_reason(reason)
        self._control(p.ToRivetWebSocketClose(code=code, reason=reason, hibernate=False))
        self._finish(code, reason)

    def _finish(self, code: int, reason: str) -> None:
        self.state = SocketState.CLOSED
        self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
        self._wakeup.set()

    def _push(self, message: Message) -> None:
        self._inbox.append(message)
        self._wakeup.set()

    # -- ASGI side -------------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self._inbox:
                return self._inbox.popleft()
            if self._disconnect is not None:
                return self._disconnect
            self._wakeup.clear()
            await self._wakeup.wait()

    def ack(self, index: int) -> None:
        """Tell the gateway the app has every message up to ``index`` (cumulative): it stops
        keeping them for a replay after the actor's next wake."""
        if self.can_hibernate and self.state is not SocketState.CLOSED:
            if not index_step(self._acked_index, index):
                return  # a later message's acknowledgement already covered it
            self._acked_index = index
            self._control(p.ToRivetWebSocketMessageAck(index=index))

    async def send(self, message: Message) -> None:
        self.send_now(message)

    def send_now(self, message: Message) -> None:
        """``send`` without the coroutine: a tunnelled socket never waits to send (frames are
        queued for the envoy connection), so an app may call this from sync code (offered as
        the scope extension's ``send_now``)."""
        kind = message["type"]
        if kind == "websocket.accept":
            if self.state is SocketState.CONNECTING:
                self.state = SocketState.OPEN
                self._announce_open()
            elif self.state is SocketState.OPEN:
                raise RuntimeError("websocket.accept sent twice")
        elif kind == "websocket.send":
            if self.state is SocketState.CLOSED:
                raise Gone("the tunnelled websocket is closed")
            if self.state is SocketState.CONNECTING:
                raise RuntimeError("websocket.send before websocket.accept")
            text = message.get("text")
            data: bytes = text.encode() if text is not None else bytes(message.get("bytes") or b"")
            limit = self.owner.max_response_payload_size
            if _ws_frame_size(len(data)) > limit:
                log.warning(
                    "tunnelled websocket message too large, closing actor_id=%s size=%d limit=%d",
                    self.info.actor_id, len(data), limit,
                )
                self.close_from_runtime(CLOSE_ERROR, "message.outgoing_too_long")
                raise Gone("the websocket message is larger than the engine accepts")
            self._data_index = self._data_index % (U16 - 1) + 1
            self.owner.emit(
                self.info.gateway_id,
                self.info.request_id,
                self._data_index,
                p.ToRivetWebSocketMessage(data=data, binary=text is None),
            )
        elif kind == "websocket.close":
            code = message.get("code") or CLOSE_NORMAL
            reason = message.get("reason") or ""
            if reason == HIBERNATE_REASON and self.can_hibernate:
                # The actor sleeps; the gateway keeps the client connected until it wakes.
                if self.state is not SocketState.CLOSED:
                    log.debug("websocket left to the gateway actor_id=%s", self.info.actor_id)
                    self._finish(code, reason)
                return
            if self.state is SocketState.CONNECTING:
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

    def _announce_open(self) -> None:
        if not self._open_sent:
            self._open_sent = True
            self._control(p.ToRivetWebSocketOpen(can_hibernate=self.can_hibernate))

    def _control(self, kind: p.ToRivetTunnelMessageKind) -> None:
        index = self._ctrl_index
        self._ctrl_index = (index + 1) % U16
        self.owner.emit(self.info.gateway_id, self.info.request_id, index, kind)
