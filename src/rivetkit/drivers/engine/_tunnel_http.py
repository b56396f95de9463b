"""One tunnelled HTTP request: the request body fed to the ASGI app, the response sent back.

:class:`HttpExchange` is driven from two sides: :class:`~.tunnel.Tunnel` feeds it the engine's
messages of the request (``on_message``, ``abort``), the app calls its ``receive``/``send``.
This module also holds what the WebSocket side shares with it (:class:`Gone`,
:func:`index_step`).

Facts about rivet-engine 2.3.19 this relies on (all verified against the real engine):

* The engine has two gateways. The default one ("gateway2") sends the whole request body in
  ``ToEnvoyRequestStart`` and never allows a streamed response (``response_stream`` is false:
  a ``ToRivetResponseStart{stream: true}`` becomes an empty body and the chunks are dropped).
  With ``features.guard_gateway_v3 = {mode: "on", percentage: 100}`` the engine uses "gateway3":
  request bodies arrive in ``ToEnvoyRequestChunk`` messages (even a 10-byte POST) and
  ``response_stream`` is true.
* Every message we send for one request takes the next index of a single sequence starting at
  0, whatever its kind (credit, body cancel, response start, chunks, abort). gateway3 rejects
  anything else with a 500 ("HTTP response message index mismatch: expected 1, received 0").
* A streamed response may have at most :data:`DEFAULT_RESPONSE_WINDOW` (1 MiB) of body bytes
  not yet acknowledged by ``ToEnvoyResponseBodyWindowUpdate{consumedBytes}`` (cumulative). One
  byte more and the gateway aborts the request (``ToEnvoyRequestAbort{INTERNAL_ERROR, "actor
  response producer outpaced downstream delivery and filled the gateway buffer"}``) and the
  client gets an empty body.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Final, Protocol

import orjson

from ... import errors
from ..._protocol import envoy as p
from ..._server.http import Message, gateway_error_json

__all__ = [
    "DEFAULT_RESPONSE_WINDOW",
    "FETCH_FAILED_BODY",
    "U16",
    "Gone",
    "HttpExchange",
    "HttpOwner",
    "envoy_error",
    "index_step",
    "uvarint_len",
]

log = logging.getLogger("rivetkit.envoy.tunnel")

U16: Final = 0x10000
DEFAULT_RESPONSE_WINDOW: Final = 1024 * 1024
"""Response body bytes the 2.3.19 gateway buffers for a client (observed, not advertised)."""

MAX_RESPONSE_CHUNK: Final = 256 * 1024
"""Largest ``ToRivetResponseChunk`` body we send (smaller pieces keep the window moving)."""

FETCH_FAILED_BODY: Final = (
    b'{"group":"envoy","code":"fetch_failed","message":"actor fetch failed","metadata":{}}'
)

_NO_BODY_STATUSES: Final = frozenset({204, 304})
_DROPPED_RESPONSE_HEADERS: Final = frozenset({"content-length", "transfer-encoding", "connection"})


class Gone(OSError):
    """Raised by ``send`` when the peer is gone (what ASGI servers raise for a closed client).

    An ``OSError`` because that is what the app's code already treats as "client went away".
    """


class Wakeup:
    """``asyncio.Event`` on a known loop: ``Event.wait`` looks the running loop up on every
    call, which is a ``getpid`` system call in CPython 3.11 (one per request or message)."""

    __slots__ = ("_flag", "_owner", "_waiters")

    def __init__(self, owner: HttpOwner | SocketOwner) -> None:
        self._owner = owner
        self._flag = False
        self._waiters: list[asyncio.Future[None]] = []

    def set(self) -> None:
        self._flag = True
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        if self._flag:
            return
        waiter: asyncio.Future[None] = self._owner.loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:  # cancelled: not woken
                self._waiters.remove(waiter)


class SocketOwner(Protocol):
    """What a socket needs from its tunnel."""

    max_response_payload_size: int

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def emit(
        self, gateway_id: bytes, request_id: bytes, index: int, kind: p.ToRivetTunnelMessageKind
    ) -> None: ...


class HttpOwner(SocketOwner, Protocol):
    """What an exchange needs from its tunnel."""

    response_window: int


def index_step(last: int, index: int) -> int:
    """How far ``index`` is past ``last`` with u16 wrapping: 1 is next, 0 a duplicate, >1 a gap."""
    diff = (index - last) % U16
    return 0 if diff == 0 or diff >= U16 // 2 else diff


def envoy_error(code: str, message: str) -> bytes:
    return orjson.dumps({"group": "envoy", "code": code, "message": message, "metadata": {}})


def uvarint_len(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


def _str_len(text: str) -> int:
    n = len(text) if text.isascii() else len(text.encode())
    return uvarint_len(n) + n


def response_frame_size(headers: dict[str, str], body_len: int) -> int:
    """Exact BARE size of ``ToRivet::ToRivetTunnelMessage{ResponseStart{...}}``."""
    # union tag, gateway id, request id, u16 index, kind tag, u16 status
    size = 1 + 4 + 4 + 2 + 1 + 2 + uvarint_len(len(headers))
    for name, value in headers.items():
        size += _str_len(name) + _str_len(value)
    # optional<data> body, bool stream
    return size + 1 + uvarint_len(body_len) + body_len + 1


def response_frame_exceeds(headers: dict[str, str], body_len: int, limit: int) -> int | None:
    """``None`` when the ``ResponseStart`` frame fits in ``limit`` bytes, else its exact size.

    The common case costs no per-header arithmetic: a bound (every character 4 UTF-8 bytes,
    every length prefix 5 bytes, counted in C) decides first; the exact size is computed only
    when the bound does not fit.
    """
    count = len(headers)
    bound = 32 + body_len + 10 * count + 4 * (sum(map(len, headers)) + sum(map(len, headers.values())))
    if bound <= limit:
        return None
    size = response_frame_size(headers, body_len)
    return size if size > limit else None


def chunk_frame_size(body_len: int) -> int:
    """Exact BARE size of ``ToRivet::ToRivetTunnelMessage{ResponseChunk{...}}``."""
    # union tag, gateway id, request id, u16 index, kind tag, data, bool finish
    return 1 + 4 + 4 + 2 + 1 + uvarint_len(body_len) + body_len + 1


def _decode_header(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI response headers as the tunnel's ``map<str><str>``: lower-case names, repeated
    headers joined with ``", "`` (the map cannot hold a name twice)."""
    out: dict[str, str] = {}
    for name_bytes, value_bytes in raw:
        try:
            name = name_bytes.decode().lower()
            value = value_bytes.decode()
        except (UnicodeDecodeError, AttributeError):  # not UTF-8, or a bytearray/memoryview
            name = _decode_header(bytes(name_bytes)).lower()
            value = _decode_header(bytes(value_bytes))
        if name in out:
            value = f"{out[name]}, {value}"
        out[name] = value
    return out


class HttpExchange:
    """One tunnelled HTTP request (see the module docstring for the engine's rules).

    The response is buffered and sent whole in one ``ToRivetResponseStart`` unless the gateway
    accepts a streamed response and the app streams (a body message with ``more_body``) or sends
    more than one tunnel frame can carry; then it goes out as ``ResponseStart{stream: true}``
    plus ``ResponseChunk`` messages, never more than the response window ahead of the client.
    """

    __slots__ = (
        "_acked", "_chunks", "_consumed", "_credit", "_disconnected", "_end_delivered",
        "_finished", "_out_index", "_parts", "_sent", "_size", "actor_id", "body_cancelled",
        "gateway_id", "headers", "last_index", "method", "owner", "request_id", "responded",
        "response_stream", "status", "stream_finished", "streamed", "streaming", "task",
    )

    def __init__(
        self, owner: HttpOwner, message_id: p.MessageId, start: p.ToEnvoyRequestStart
    ) -> None:
        self.owner = owner
        self.gateway_id = bytes(message_id.gateway_id)
        self.request_id = bytes(message_id.request_id)
        self.actor_id = start.actor_id
        self.method = start.method.upper()
        self.streamed = start.stream
        self.response_stream = start.response_stream
        self.last_index = message_id.message_index
        # (bytes, whether they came in a RequestChunk and so return flow-control credit)
        self._chunks: deque[tuple[bytes, bool]] = deque()
        if start.body:
            self._chunks.append((start.body, False))
        self._finished = not start.stream
        self._end_delivered = False
        self._disconnected = False
        self._credit = Wakeup(owner)  # set on any change the app side may wait for
        self._consumed = 0  # request body bytes handed to the app (credit returned)
        self._out_index = 0  # index of our next message for this request
        self.body_cancelled = False
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self._parts: list[bytes] = []
        self._size = 0
        self.responded = False  # a ResponseStart (or the final answer) went out
        self.streaming = False  # the response goes out as chunks
        self.stream_finished = False  # the last chunk (finish) or an abort went out
        self._sent = 0  # streamed body bytes sent
        self._acked = 0  # streamed body bytes the gateway acknowledged
        self.task: asyncio.Task[None] | None = None

    # -- engine side -----------------------------------------------------------------------

    def on_message(self, index: int, kind: p.ToEnvoyTunnelMessageKind) -> bool:
        """One engine message after the start (not an abort). Returns ``False`` when the
        exchange is over because a message was lost (it has been answered or aborted)."""
        # Every engine message of the request takes the next index, whatever its kind.
        step = index_step(self.last_index, index)
        if step == 0:
            log.debug(
                "duplicate tunnel message dropped actor_id=%s index=%d", self.actor_id, index
            )
            return True
        if step > 1:
            log.warning(
                "tunnel message index skipped actor_id=%s index=%d last=%d",
                self.actor_id, index, self.last_index,
            )
            self.fail(
                500,
                "envoy.message_index_skip",
                envoy_error("message_index_skip", "a tunnel message of this request was lost"),
            )
            if self.task is not None:
                self.task.cancel()
            return False
        self.last_index = index
        if isinstance(kind, p.ToEnvoyRequestChunk):
            if not self.streamed:
                log.warning(
                    "request chunk for a non-streamed request ignored actor_id=%s", self.actor_id
                )
            else:
                self._feed(kind)
        elif isinstance(kind, p.ToEnvoyRequestBodyCancel):
            self._cancel_body()
        elif isinstance(kind, p.ToEnvoyResponseBodyWindowUpdate):
            if kind.consumed_bytes > self._acked:
                self._acked = kind.consumed_bytes
                self._credit.set()
        else:
            log.warning("unexpected tunnel message ignored kind=%s", type(kind).__name__)
        return True

    def abort(self) -> None:
        """The client went away: nothing more is sent, the handler is cancelled."""
        self.responded = True
        self.stream_finished = True
        self._disconnected = True
        self._credit.set()
        if self.task is not None:
            self.task.cancel()

    def _feed(self, chunk: p.ToEnvoyRequestChunk) -> None:
        if self._finished:
            return
        if chunk.body:
            self._chunks.append((chunk.body, True))
        if chunk.finish:
            self._finished = True
        self._credit.set()

    def _cancel_body(self) -> None:
        """The gateway no longer sends the body: an unfinished body becomes a disconnect (the
        app must not take a truncated body for a whole one)."""
        if self._finished:
            return
        self._finished = True
        self.body_cancelled = True
        self._chunks.clear()
        self._disconnected = True
        self._credit.set()

    # -- ASGI side: request ----------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self._disconnected:
                return {"type": "http.disconnect"}  # answered, aborted or body cancelled
            if self._chunks:
                chunk, credited = self._chunks.popleft()
                last = self._finished and not self._chunks
                self._end_delivered = last
                if credited:
                    # Credit is returned once the app has the bytes (v8 flow control), and
                    # only while more body is to come: the gateway uses it to send more, so
                    # after the last chunk it would be a message (and a write) for nothing.
                    self._consumed += len(chunk)
                    if not self._finished:
                        self._emit(
                            p.ToRivetRequestBodyWindowUpdate(consumed_bytes=self._consumed)
                        )
                return {"type": "http.request", "body": chunk, "more_body": not last}
            if self._finished and not self._end_delivered:
                self._end_delivered = True
                return {"type": "http.request", "body": b"", "more_body": False}
            self._credit.clear()
            await self._credit.wait()

    # -- ASGI side: response ---------------------------------------------------------------

    async def send(self, message: Message) -> None:
        if self.responded and not (self.streaming and not self.stream_finished):
            raise Gone("the tunnelled response was already sent")
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("http.response.start sent twice")
            status = message["status"]
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise RuntimeError(f"invalid HTTP status {status!r}")
            self.status = status
            self.headers = response_headers(message.get("headers", ()))
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError("http.response.body sent before http.response.start")
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if self.streaming:
                await self._stream(body, finish=not more)
                return
            if not more and not self._parts:
                # The common case, the whole body in one message: its frame is sized once.
                headers = self._final_headers(len(body))
                limit = self.owner.max_response_payload_size
                size = response_frame_exceeds(headers, len(body), limit)
                if size is None:
                    self.answer(self.status, headers, body)
                elif self._may_stream():
                    self._start_stream()
                    await self._stream(body, finish=True)
                else:
                    self._too_large(len(body) if len(body) > limit else size)
                return
            if self._may_stream() and (more or self._too_big_for_one_frame(len(body))):
                self._start_stream()
                pending = b"".join(self._parts) + body
                self._parts = []
                await self._stream(pending, finish=not more)
                return
            if body:
                self._parts.append(body)
                self._size += len(body)
                # Cut an endless or huge body early (the exact frame size is checked at the
                # end): answer the error and stop the handler, as if the client had gone.
                if self._size > self.owner.max_response_payload_size:
                    self._too_large(self._size)
                    if self.task is not None:
                        self.task.cancel()
                    return
            if not more:
                self._respond()
        else:
            log.debug("unsupported asgi message ignored type=%s", kind)

    def _may_stream(self) -> bool:
        """Whether this response may go out in chunks: the gateway said so and it has a body."""
        assert self.status is not None
        return (
            self.response_stream
            and self.method != "HEAD"
            and self.status >= 200
            and self.status not in _NO_BODY_STATUSES
        )

    def _too_big_for_one_frame(self, extra: int) -> bool:
        body_len = self._size + extra
        headers = self._final_headers(body_len)
        limit = self.owner.max_response_payload_size
        return response_frame_exceeds(headers, body_len, limit) is not None

    def _final_headers(self, body_len: int) -> dict[str, str]:
        assert self.status is not None
        headers = {k: v for k, v in self.headers.items() if k not in _DROPPED_RESPONSE_HEADERS}
        if self.method == "HEAD" and "content-length" in self.headers:
            headers["content-length"] = self.headers["content-length"]
        elif self.status >= 200 and self.status not in _NO_BODY_STATUSES:
            headers["content-length"] = str(body_len)
        return headers

    def _respond(self) -> None:
        assert self.status is not None
        headers = self._final_headers(self._size)
        size = response_frame_exceeds(headers, self._size, self.owner.max_response_payload_size)
        if size is not None:
            self._too_large(size)
            return
        body = b"".join(self._parts)
        self._parts = []
        self.answer(self.status, headers, body)

    def _too_large(self, size: int) -> None:
        limit = self.owner.max_response_payload_size
        log.warning(
            "tunnelled response too large actor_id=%s size=%d limit=%d",
            self.actor_id, size, limit,
        )
        self._parts = []
        err = errors.outgoing_too_long(size, limit)
        self.answer_error(err.status, err.full_code, orjson.dumps(gateway_error_json(err)))

    # -- streamed response -----------------------------------------------------------------

    def _start_stream(self) -> None:
        assert self.status is not None
        headers = {k: v for k, v in self.headers.items() if k not in _DROPPED_RESPONSE_HEADERS}
        self.responded = True
        self.streaming = True
        self._emit(p.ToRivetResponseStart(status=self.status, headers=headers, body=None,
                                          stream=True))
        log.debug("tunnelled response streamed actor_id=%s status=%d", self.actor_id,
                  self.status)

    async def _stream(self, data: bytes, *, finish: bool) -> None:
        """Send ``data`` in chunks within the gateway's window; ``finish`` marks the last."""
        window = self.owner.response_window
        frame_room = self.owner.max_response_payload_size - chunk_frame_size(0) - 8
        piece_max = max(1, min(MAX_RESPONSE_CHUNK, window, frame_room))
        view = memoryview(data)
        while True:
            piece = bytes(view[:piece_max])
            view = view[len(piece):]
            last = finish and not view
            if piece or last:
                while self._sent + len(piece) - self._acked > window:
                    if self.stream_finished:
                        raise Gone("the tunnelled response was aborted")
                    self._credit.clear()
                    await self._credit.wait()
                if self.stream_finished:
                    raise Gone("the tunnelled response was aborted")
                self._sent += len(piece)
                self._emit(p.ToRivetResponseChunk(body=piece, finish=last))
            if not view:
                break
        if finish:
            self.stream_finished = True
            self._end_exchange()

    def abort_response(self, kind: p.HttpStreamAbortReasonKind, detail: str) -> None:
        """End a streamed response that cannot complete (the client sees a cut body)."""
        if not self.streaming or self.stream_finished:
            return
        self.stream_finished = True
        reason = p.HttpStreamAbortReason(kind=kind, detail=detail)
        self._emit(p.ToRivetResponseAbort(reason=reason))
        self._end_exchange()

    # -- answers ---------------------------------------------------------------------------

    def fail(self, status: int, code: str, body: bytes) -> None:
        """Answer with an error, or abort the stream when the response already started."""
        if self.streaming:
            self.abort_response(p.HttpStreamAbortReasonKind.INTERNAL_ERROR, code)
        else:
            self.answer_error(status, code, body)

    def answer_error(self, status: int, code: str, body: bytes, text: bool = False) -> None:
        content_type = "text/plain; charset=utf-8" if text else "application/json"
        headers = {
            "content-type": content_type,
            "content-length": str(len(body)),
            "x-rivet-error": code,
        }
        self.answer(status, headers, body)

    def answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        """Send the one ``ToRivetResponseStart`` with the whole body and end the exchange."""
        if self.responded:
            return
        self.responded = True
        self._emit(p.ToRivetResponseStart(status=status, headers=headers, body=body,
                                          stream=False))
        self._end_exchange()

    def _end_exchange(self) -> None:
        if not self._finished:
            self._emit(p.ToRivetRequestBodyCancel())  # the rest of the body is not wanted
            self._finished = True
        self._disconnected = True
        self._credit.set()

    def _emit(self, kind: p.ToRivetTunnelMessageKind) -> None:
        index = self._out_index
        self._out_index = (index + 1) % U16
        self.owner.emit(self.gateway_id, self.request_id, index, kind)

