"""The in-process transport: requests and WebSockets served by an ASGI app in the same event loop.

``Client(app=registry.asgi())`` sends everything here instead of to a socket. Each HTTP request
and each WebSocket runs the app as its own task (in a fresh ``contextvars`` context, as a server
would), fed and drained through the ASGI ``receive``/``send`` callables; nothing is serialized
beyond what the client and the app already do, and no socket is opened.

What the client sees mirrors a uvicorn server, so the code above cannot tell the difference:

* HTTP (ASGI spec 2.3): the body arrives as it is sent, with back-pressure on the app past
  1 MiB buffered; ``receive()`` returns ``http.disconnect`` once the response is complete or the
  client has gone, and what the app sends after the client has gone is dropped. An app that
  fails before ``http.response.start`` answers ``500 Internal Server Error``; one that fails (or
  returns) mid-body ends in ``client.network_error``.
* WebSocket (ASGI spec 2.4, with ``websocket.http.response``): ``websocket.accept`` opens the
  connection; ``websocket.close`` before it is a refused upgrade (``InvalidStatus`` 403, as
  uvicorn answers), a ``websocket.http.response.*`` denial is refused with its status, headers
  and body, and an app that ends before accepting is refused with 500. Once open, a close from
  either side is echoed at once (``websockets.exceptions.ConnectionClosed`` carries both frames),
  an app that ends without closing leaves the client with an abnormal closure (1006), a message
  above ``max_size`` fails the connection with 1009, and the app's ``send`` raises an
  ``OSError`` after the client has gone. Each direction buffers 64 messages before the sender
  waits.

:meth:`AsgiTransport.aclose` closes the WebSockets still open (1001), gives the app tasks two
seconds to finish and cancels the rest, so nothing outlives the client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import http
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Mapping,
    MutableMapping,
    Sequence,
)
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
    PayloadTooBig,
)
from websockets.frames import OK_CLOSE_CODES, Close, CloseCode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from .._log import client_logger
from ..errors import ActorError
from ._transport import HttpResponse, WebSocket

__all__ = ["IN_PROCESS_ENDPOINT", "ASGIApp", "AsgiTransport", "InProcessWebSocket"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application: ``async def app(scope, receive, send)``."""

IN_PROCESS_ENDPOINT: Final = "http://rivetkit.in-process"
"""Endpoint of an in-process client when none is given (only its path prefix matters)."""

_CLIENT_ADDRESS: Final = ("127.0.0.1", 0)
_HTTP_HIGH_WATER: Final = 1 << 20  # bytes of response body buffered before the app's send waits
_WS_HIGH_WATER: Final = 64  # messages buffered in each direction before the sender waits
_CLOSE_GRACE: Final = 2.0  # seconds aclose() lets the app tasks finish before cancelling them
_INTERNAL_ERROR: Final = b"Internal Server Error"


class ClientDisconnected(OSError):
    """Raised by the app's ``send`` once the client has gone (uvicorn raises an ``OSError`` too,
    which Starlette turns into ``WebSocketDisconnect``)."""


def _scope(
    kind: str, url: str, headers: Mapping[str, str], defaults: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    parts = urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    raw_path = parts.path or "/"
    header_list: list[tuple[bytes, bytes]] = []
    given = {name.lower() for name in headers}
    if "host" not in given:
        header_list.append((b"host", parts.netloc.encode("utf-8")))
    for name, value in headers.items():
        header_list.append((name.lower().encode("latin-1"), value.encode("utf-8")))
    for name, value in defaults:
        if name not in given:
            header_list.append((name.encode("latin-1"), value.encode("utf-8")))
    return {
        "type": kind,
        "asgi": {"version": "3.0", "spec_version": "2.3" if kind == "http" else "2.4"},
        "http_version": "1.1",
        "scheme": parts.scheme,
        "server": (parts.hostname or "", parts.port or (443 if secure else 80)),
        "client": _CLIENT_ADDRESS,
        "root_path": "",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("utf-8"),
        "query_string": parts.query.encode("utf-8"),
        "headers": header_list,
        # Lets the server tell an in-process caller apart; no network client can set it.
        "extensions": {"rivetkit.in_process": {}},
    }


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


# -------------------------------------------------------------------------------------------------
# HTTP


class _HttpExchange:
    """One request: the app's ``receive``/``send`` on one side, an :class:`HttpResponse` on the
    other."""

    def __init__(self, method: str, url: str, scope: Scope, body: bytes) -> None:
        self.method = method
        self.url = url
        self.scope = scope
        self._body = body
        self._body_sent = False
        self._status = 0
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: CIMultiDictProxy[str] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._content: bytes | None = None
        self._started = False
        self._complete = False
        self._failure: str | None = None  # why the response cannot be completed
        self._disconnected = False  # the client is done with the response
        self._done = asyncio.Event()  # complete, failed or disconnected: receive() says so
        self._progress = asyncio.Event()  # something for the client to look at
        self._drained = asyncio.Event()  # the client made room in the body buffer
        self._drained.set()

    # -- the app's side --------------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self._disconnected:
            return  # the client has gone: dropped, as a server drops it
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("'http.response.start' sent twice")
            self._status = int(message["status"])
            self._raw_headers = list(message.get("headers", ()))
            self._started = True
            self._progress.set()
        elif kind == "http.response.body":
            if not self._started:
                raise RuntimeError("'http.response.body' sent before 'http.response.start'")
            if self._complete:
                raise RuntimeError("'http.response.body' sent after the response was complete")
            body = bytes(message.get("body", b""))
            if body:
                self._chunks.append(body)
                self._buffered += len(body)
            if not message.get("more_body", False):
                self._complete = True
                self._done.set()
            self._progress.set()
            while self._buffered > _HTTP_HIGH_WATER and not self._disconnected:
                self._drained.clear()
                await self._drained.wait()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in an HTTP response")

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception as exc:  # noqa: BLE001 - reported as a server would: 500 or cut short
            client_logger.error(
                "exception in in-process ASGI application path=%s", self.scope["path"], exc_info=exc
            )
            if not self._started:
                self._respond_internal_error()
            else:
                self._fail(f"the application raised {type(exc).__name__}: {exc}")
        else:
            if not self._started and not self._disconnected:
                client_logger.error(
                    "in-process ASGI application returned without starting a response path=%s",
                    self.scope["path"],
                )
                self._respond_internal_error()
            elif not self._complete:
                self._fail("the application returned without completing the response")
        finally:
            # Cancelled (the client was closed) or interrupted: the answer will never come.
            self._fail("the in-process request was interrupted")

    def _respond_internal_error(self) -> None:
        self._status = 500
        self._raw_headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(_INTERNAL_ERROR)).encode()),
        ]
        self._chunks.append(_INTERNAL_ERROR)
        self._started = self._complete = True
        self._done.set()
        self._progress.set()

    def _fail(self, reason: str) -> None:
        if self._complete or self._failure is not None:
            return
        self._failure = reason
        self._done.set()
        self._progress.set()

    def _error(self) -> ActorError:
        scheme, _, rest = self.url.partition("://")
        origin = f"{scheme}://{rest.split('/', 1)[0]}"
        return ActorError(
            "client",
            "network_error",
            f"{self.method} request to {origin} failed: {self._failure}",
        )

    # -- the client's side -----------------------------------------------------------------

    async def wait_started(self) -> None:
        while not self._started:
            if self._failure is not None:
                raise self._error()
            self._progress.clear()
            await self._progress.wait()

    def disconnect(self) -> None:
        self._disconnected = True
        self._done.set()
        self._drained.set()

    @property
    def status(self) -> int:
        return self._status

    @property
    def reason(self) -> str:
        return _phrase(self._status)

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(
                CIMultiDict(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in self._raw_headers
                )
            )
        return self._headers

    async def read(self) -> bytes:
        if self._content is None:
            self._content = b"".join([chunk async for chunk in self.iter_chunks()])
        return self._content

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= _HTTP_HIGH_WATER:
                    self._drained.set()
                yield chunk
            elif self._complete:
                return
            elif self._failure is not None:
                raise self._error()
            else:
                self._progress.clear()
                await self._progress.wait()


# -------------------------------------------------------------------------------------------------
# WebSocket


class InProcessWebSocket:
    """A WebSocket to an in-process ASGI app, with the API of ``websockets``' asyncio
    ``ClientConnection`` that rivetkit uses: ``send``, ``recv``, ``async for``, ``close``,
    ``wait_closed``, ``subprotocol``, ``close_code``, ``close_reason``, ``state`` and
    ``response``;
    ``recv``/``send`` raise ``websockets.exceptions.ConnectionClosed`` once it is closed.
    """

    def __init__(self, scope: Scope, offered: Sequence[str], max_size: int) -> None:
        self._scope = scope
        self._offered = list(offered)
        self._max_size = max_size
        self._state = State.CONNECTING
        self._accepted = False  # stays True once the app accepted, even after a close
        self._subprotocol: Subprotocol | None = None
        self.response: Response | None = None
        """The app's answer to the upgrade (``101`` with the accept's headers), as in
        ``websockets``; ``None`` until it answered."""
        self._refusal: Exception | None = None  # the handshake failed with this
        self._denial: tuple[int, list[tuple[bytes, bytes]], bytearray] | None = None
        self._close_rcvd: Close | None = None
        self._close_sent: Close | None = None
        self._rcvd_then_sent: bool | None = None
        self._to_app: collections.deque[Message] = collections.deque(
            [{"type": "websocket.connect"}]
        )
        self._to_client: collections.deque[str | bytes] = collections.deque()
        self._app_disconnect: Message | None = None  # what receive() answers once drained
        self._app_event = asyncio.Event()  # the app has something to receive
        self._client_event = asyncio.Event()  # the client has something to look at
        self._app_room = asyncio.Event()  # room in _to_app, or closed
        self._client_room = asyncio.Event()  # room in _to_client, or closed
        self._app_room.set()
        self._client_room.set()
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<InProcessWebSocket {self._scope['path']} state={self._state.name}>"

    # -- public, client side ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """``CONNECTING``, ``OPEN`` or ``CLOSED`` (a close is echoed at once, so never
        ``CLOSING``)."""
        return self._state

    @property
    def subprotocol(self) -> Subprotocol | None:
        """The subprotocol the app selected, if any."""
        return self._subprotocol

    @property
    def close_code(self) -> int | None:
        """The close code received: ``None`` while open, 1006 after an abnormal closure."""
        if self._state is not State.CLOSED:
            return None
        if self._close_rcvd is None:
            return int(CloseCode.ABNORMAL_CLOSURE)
        return self._close_rcvd.code

    @property
    def close_reason(self) -> str | None:
        """The close reason received: ``None`` while open, ``""`` after an abnormal closure."""
        if self._state is not State.CLOSED:
            return None
        return "" if self._close_rcvd is None else self._close_rcvd.reason

    async def send(self, message: str | bytes | bytearray | memoryview) -> None:
        """Send a text (``str``) or binary (bytes-like) message.

        Raises:
            websockets.exceptions.ConnectionClosed: the connection is closed.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        if isinstance(message, str):
            event: Message = {"type": "websocket.receive", "text": message}
        elif isinstance(message, (bytes, bytearray, memoryview)):
            event = {"type": "websocket.receive", "bytes": bytes(message)}
        else:
            raise TypeError(f"message must be str or bytes-like, got {type(message).__name__}")
        while self._state is State.OPEN and len(self._to_app) >= _WS_HIGH_WATER:
            self._app_room.clear()
            await self._app_room.wait()
        if self._state is not State.OPEN:
            raise self._close_exc()
        self._to_app.append(event)
        self._app_event.set()

    async def recv(self, decode: bool | None = None) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary (``decode=True`` decodes
        binary messages as UTF-8, ``decode=False`` encodes text ones).

        Raises:
            websockets.exceptions.ConnectionClosed: the connection is closed and every message
                received before the close was returned.
        """
        while True:
            if self._to_client:
                item = self._to_client.popleft()
                if len(self._to_client) < _WS_HIGH_WATER:
                    self._client_room.set()
                if decode is True and isinstance(item, bytes):
                    return item.decode()
                if decode is False and isinstance(item, str):
                    return item.encode()
                return item
            if self._state is State.CLOSED:
                raise self._close_exc()
            self._client_event.clear()
            await self._client_event.wait()

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Messages until the connection closes; ends quietly after a normal closure, raises
        ``ConnectionClosedError`` otherwise."""
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason``; the app receives
        ``websocket.disconnect`` with them. Idempotent."""
        if self._state is State.OPEN:
            self._close_sent = self._close_rcvd = Close(code, reason)
            self._rcvd_then_sent = False
            self._set_closed(code, reason)
        # Let the app see the disconnect before the caller goes on, as a round trip would.
        await asyncio.sleep(0)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await self._closed.wait()

    def abort(self) -> None:
        """Drop the connection without a closing handshake (the app sees code 1006)."""
        if self._state is not State.CLOSED:
            self._set_closed(int(CloseCode.ABNORMAL_CLOSURE), "")

    # -- internals ---------------------------------------------------------------------------

    def _close_exc(self) -> ConnectionClosed:
        rcvd, sent = self._close_rcvd, self._close_sent
        if (
            rcvd is not None
            and sent is not None
            and rcvd.code in OK_CLOSE_CODES
            and sent.code in OK_CLOSE_CODES
        ):
            return ConnectionClosedOK(rcvd, sent, self._rcvd_then_sent)
        return ConnectionClosedError(rcvd, sent, self._rcvd_then_sent)

    def _set_closed(self, code: int, reason: str) -> None:
        self._state = State.CLOSED
        if self._app_disconnect is None:
            self._app_disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
        for event in (
            self._app_event,
            self._client_event,
            self._app_room,
            self._client_room,
            self._closed,
        ):
            event.set()

    def _refuse(self, refusal: Exception) -> None:
        if self._state is State.CONNECTING:
            self._refusal = refusal
            if isinstance(refusal, InvalidStatus):
                self.response = refusal.response
            self._set_closed(int(CloseCode.ABNORMAL_CLOSURE), "")

    async def wait_open(self, timeout: float) -> None:
        """Wait for the app to accept (or refuse) the connection.

        Raises:
            InvalidStatus: the app refused the upgrade (its HTTP answer).
            InvalidHandshake: the handshake failed otherwise.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        try:
            await asyncio.wait_for(self._client_event.wait(), timeout)
        except BaseException:
            self.abort()  # timed out or cancelled: the app sees the client go
            raise
        if not self._accepted:
            raise self._refusal or InvalidMessage("did not receive a valid HTTP response")

    # -- the app's side ----------------------------------------------------------------------

    async def _app_receive(self) -> Message:
        while True:
            if self._to_app:
                message = self._to_app.popleft()
                if len(self._to_app) < _WS_HIGH_WATER:
                    self._app_room.set()
                return message
            if self._app_disconnect is not None:
                return dict(self._app_disconnect)
            self._app_event.clear()
            await self._app_event.wait()

    async def _app_send(self, message: Message) -> None:
        kind = message["type"]
        state = self._state
        if state is State.CLOSED:
            raise ClientDisconnected("the in-process WebSocket client has gone")
        if state is State.CONNECTING:
            self._app_send_handshake(kind, message)
            return
        if kind == "websocket.send":
            data = message.get("bytes")
            text = message.get("text")
            item: str | bytes
            if data is not None:
                item = bytes(data)
            elif text is not None:
                item = str(text)
            else:
                return
            size = len(item) if isinstance(item, bytes) or item.isascii() else len(item.encode())
            if size > self._max_size:
                # The client fails the connection (1009) and the server echoes the close.
                reason = str(PayloadTooBig(size, self._max_size))
                self._close_sent = self._close_rcvd = Close(CloseCode.MESSAGE_TOO_BIG, reason)
                self._rcvd_then_sent = False
                self._set_closed(int(CloseCode.MESSAGE_TOO_BIG), reason)
                return
            self._to_client.append(item)
            self._client_event.set()
            while self._state is State.OPEN and len(self._to_client) >= _WS_HIGH_WATER:
                self._client_room.clear()
                await self._client_room.wait()
        elif kind == "websocket.close":
            code = message.get("code")
            code = 1000 if code is None else int(code)
            reason = message.get("reason") or ""
            # The client receives the close and echoes it.
            self._close_rcvd = self._close_sent = Close(code, reason)
            self._rcvd_then_sent = True
            self._set_closed(code, reason)
        else:
            raise RuntimeError(
                f"expected ASGI message 'websocket.send' or 'websocket.close', got {kind!r}"
            )

    def _app_send_handshake(self, kind: str, message: Message) -> None:
        denial = self._denial
        if denial is None and kind == "websocket.accept":
            subprotocol = message.get("subprotocol")
            if subprotocol is not None and subprotocol not in self._offered:
                # websockets refuses a subprotocol it did not offer and drops the connection.
                self._refuse(NegotiationError(f"unsupported subprotocol: {subprotocol}"))
                return
            self._subprotocol = None if subprotocol is None else Subprotocol(subprotocol)
            headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            if subprotocol is not None:
                headers.append(("Sec-WebSocket-Protocol", subprotocol))
            self.response = Response(101, "Switching Protocols", Headers(headers), b"")
            self._state = State.OPEN
            self._accepted = True
            self._client_event.set()
        elif denial is None and kind == "websocket.close":
            # A close before the accept: uvicorn refuses the upgrade with an empty 403.
            self._refuse(InvalidStatus(_refusal(403, [], b"")))
        elif denial is None and kind == "websocket.http.response.start":
            self._denial = (int(message["status"]), list(message.get("headers", ())), bytearray())
        elif denial is not None and kind == "websocket.http.response.body":
            denial[2].extend(message.get("body", b""))
            if not message.get("more_body", False):
                self._refuse(InvalidStatus(_refusal(denial[0], denial[1], bytes(denial[2]))))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} during the WebSocket handshake")

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self._scope, self._app_receive, self._app_send)
        except ClientDisconnected:
            pass
        except Exception as exc:  # noqa: BLE001 - reported as a server would: refused or dropped
            client_logger.error(
                "exception in in-process ASGI application path=%s",
                self._scope["path"],
                exc_info=exc,
            )
        finally:
            if self._state is State.CONNECTING:
                if self._denial is None:
                    # The app ended without answering the upgrade: uvicorn refuses it with 500.
                    body = _INTERNAL_ERROR
                    self._refuse(InvalidStatus(_refusal(500, [], body, text=True)))
                else:
                    self._refuse(InvalidMessage("did not receive a valid HTTP response"))
            elif self._state is State.OPEN:
                self.abort()  # the app ended without closing: the connection just drops


def _refusal(
    status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes, *, text: bool = False
) -> Response:
    """The HTTP answer of a refused upgrade, as ``websockets`` reports it in ``InvalidStatus``."""
    items = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
    names = {name.lower() for name, _ in items}
    if "content-length" not in names:
        items.append(("Content-Length", str(len(body))))
    if "content-type" not in names and (text or body):
        items.append(("Content-Type", "text/plain; charset=utf-8"))
    return Response(status, _phrase(status), Headers(items), body)


# -------------------------------------------------------------------------------------------------
# the transport


class AsgiTransport:
    """Serves the client's traffic by calling ``app`` in the running event loop."""

    def __init__(self, app: ASGIApp, user_agent: str) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {type(app).__name__}")
        self.app = app
        self._user_agent = user_agent
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: set[InProcessWebSocket] = set()
        self._closed = False
        self._close_grace = _CLOSE_GRACE  # private so tests can shorten it

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        if self._closed:
            coro.close()
            raise RuntimeError("this Client is closed")
        # A fresh context: the app must not see the caller's context variables (over the
        # network it would not either).
        task = asyncio.get_running_loop().create_task(
            coro, name=name, context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> AsyncIterator[HttpResponse]:
        defaults = [("user-agent", self._user_agent)]
        if body is not None or method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
            defaults.append(("content-length", str(len(body or b""))))
        scope = _scope("http", url, headers, defaults)
        scope["method"] = method
        exchange = _HttpExchange(method, url, scope, body or b"")
        self._spawn(exchange.run(self.app), f"rivetkit-in-process {method} {scope['path']}")
        try:
            await exchange.wait_started()
            yield exchange
        finally:
            exchange.disconnect()

    async def connect(
        self,
        url: str,
        *,
        subprotocols: Sequence[str],
        headers: Mapping[str, str],
        user_agent: str,
        open_timeout: float,
        close_timeout: float | None,
        max_size: int,
    ) -> WebSocket:
        if not url.startswith(("ws://", "wss://")):
            raise InvalidURI(url, "scheme isn't ws or wss")
        defaults = [
            ("user-agent", user_agent),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
        ]
        if subprotocols:
            defaults.append(("sec-websocket-protocol", ", ".join(subprotocols)))
        scope = _scope("websocket", url, headers, defaults)
        scope["subprotocols"] = list(subprotocols)
        scope["extensions"]["websocket.http.response"] = {}
        ws = InProcessWebSocket(scope, subprotocols, max_size)
        task = self._spawn(ws.run(self.app), f"rivetkit-in-process websocket {scope['path']}")
        self._sockets.add(ws)
        task.add_done_callback(lambda _: self._sockets.discard(ws))
        await ws.wait_open(open_timeout)
        return ws

    async def aclose(self) -> None:
        self._closed = True
        for ws in list(self._sockets):
            await ws.close(int(CloseCode.GOING_AWAY), "client closed")
        tasks = set(self._tasks)
        if not tasks:
            return
        try:
            await asyncio.wait(tasks, timeout=self._close_grace)
        finally:
            # Still running after the grace period (or aclose() itself was cancelled).
            pending = [task for task in tasks if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
