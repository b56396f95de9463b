"""Actor connections over WebSocket (``handle.connect()``, spec §8), asyncio flavour.

The I/O around :class:`._conn_protocol.ConnProtocol`: one background task per connection opens
the socket through the client's transport (``websockets`` over the network, the in-process ASGI
app for ``Client(app=...)``), feeds frames and closes into the state machine, sends the frames it
produces, resolves action futures, calls listeners and sleeps between attempts.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeAlias

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .._log import client_logger
from ..errors import ActorError
from ._conn_protocol import (
    ActionRejected,
    ActionResolved,
    Closed,
    ConnProtocol,
    ConnStatus,
    Decision,
    ErrorRaised,
    EventReceived,
    GiveUp,
    Opened,
    StatusChanged,
    conn_subprotocols,
    disposed_error,
    gateway_target_url,
    handshake_status_retryable,
    params_json,
    ws_scheme,
)
from ._protocol import QueueSendResult, error_from_response, is_stale_actor_error
from ._transport import WebSocket, abort_websocket

if TYPE_CHECKING:
    from ._aio import ActorHandle

__all__ = ["ActorConn", "ConnStatus", "EventStream", "GetParams", "Overflow"]

GetParams: TypeAlias = Callable[[], Any]
"""A params resolver: a function returning the params, or a coroutine function."""

Overflow: TypeAlias = Literal["drop_oldest", "error"]

MAX_FRAME_SIZE: Final = 16 * 2**20
"""Largest frame accepted from the server (the official server sends at most 1 MiB)."""

_CLOSE_TIMEOUT: Final = 2.0


def handshake_error(exc: Exception, url: str, *, dynamic: bool) -> tuple[ActorError, bool]:
    """``(error, transient)`` for a WebSocket upgrade that failed with ``exc``.

    A refused upgrade decodes its body as an error envelope when it is one (gateway errors are
    JSON); the connection failing or timing out is ``client.network_error`` and transient.
    """
    origin = url.split("/", 3)
    where = "/".join(origin[:3])
    if isinstance(exc, InvalidStatus):
        response = exc.response
        status = response.status_code
        content_type = response.headers.get("Content-Type")
        body = bytes(response.body or b"")
        error = error_from_response(status, content_type or "application/json", body, "json")
        envelope = None if (error.group, error.code) == ("client", "http_error") else error
        return error, handshake_status_retryable(status, envelope, dynamic=dynamic)
    if isinstance(exc, InvalidURI):
        return ActorError("client", "invalid_url", f"invalid WebSocket URL: {exc}"), False
    return (
        ActorError(
            "client",
            "network_error",
            f"WebSocket connection to {where} failed: {type(exc).__name__}: {exc}",
        ),
        True,
    )


@dataclass(eq=False, slots=True)
class _Listener:
    callback: Callable[..., Any]
    once: bool
    active: bool = True


class ActorConn:
    """A stateful connection to one actor: actions over one WebSocket, events, reconnection.

    Create it with :meth:`rivetkit.client.ActorHandle.connect`; it starts connecting at once (or,
    when created outside a running event loop, on first use) and keeps reconnecting until
    :meth:`dispose` or a fatal error::

        async with handle.connect({"token": "t"}) as conn:
            unsubscribe = conn.on("message", lambda msg: print(msg))
            print(await conn.send_message("hi"))     # same as conn.action("send_message", "hi")

    Status (:attr:`status`, :class:`ConnStatus`): ``idle`` → ``connecting`` → ``connected``; a
    lost connection goes ``disconnected`` and back through ``connecting``; a fatal error (the
    actor rejected the connection, a ``get_for_id`` actor that does not exist, …) ends in ``idle``
    with :attr:`error` set. Reconnection retries transient failures (server unreachable, HTTP
    502/503/504, closes ``ws.going_away``, ``actor.restarting``, 1001/1006/1012/1013, …) forever
    with a 250 ms × 2ⁿ backoff capped at 30 s.

    Actions called while not connected are queued and sent after the next ``Init`` (after the
    subscriptions are re-sent). Actions already sent when the socket is lost fail with the close
    error (``client.connection_lost`` or the close reason's ``group.code``): the server may have
    run them, so they are not re-sent.

    Listener callbacks (``on``, ``once``, ``on_status_change``, ``on_open``, ``on_close``,
    ``on_error``) run in the event loop; one that returns an awaitable gets it scheduled as a
    task; exceptions they raise are logged and otherwise ignored.
    """

    def __init__(
        self, handle: ActorHandle, params: Any = None, get_params: GetParams | None = None
    ) -> None:
        client = handle._client
        self._handle = handle
        self._client = client
        self._params = params
        self._get_params = get_params
        if get_params is None:
            params_json(params)  # fail now if the params are not JSON
        self._proto = ConnProtocol(
            client._config.encoding,
            dynamic=handle._query.is_dynamic,
            backoff=client._reconnect_delay,
        )
        self._listeners: dict[str, list[_Listener]] = {}
        self._status_callbacks: list[Callable[[ConnStatus], Any]] = []
        self._open_callbacks: list[Callable[[], Any]] = []
        self._close_callbacks: list[Callable[[], Any]] = []
        self._error_callbacks: list[Callable[[ActorError], Any]] = []
        self._futures: dict[int, asyncio.Future[Any]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._background: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._ws: WebSocket | None = None
        self._send_lock: asyncio.Lock | None = None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self._ensure_started()

    def __repr__(self) -> str:
        return (
            f"<ActorConn {self._handle.name} status={self._proto.status.value!r} "
            f"actor_id={self._proto.actor_id!r} connection_id={self._proto.connection_id!r}>"
        )

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self.action, name)

    # -- properties -------------------------------------------------------------------------

    @property
    def status(self) -> ConnStatus:
        """``idle``, ``connecting``, ``connected`` or ``disconnected``."""
        return self._proto.status

    @property
    def actor_id(self) -> str | None:
        """The actor id from the last ``Init``, ``None`` before the first one."""
        return self._proto.actor_id

    @property
    def connection_id(self) -> str | None:
        """The connection id from the last ``Init`` (a new one after every reconnect)."""
        return self._proto.connection_id

    @property
    def error(self) -> ActorError | None:
        """The fatal error that stopped the connection, if one did."""
        return self._proto.fatal_error

    @property
    def is_disposed(self) -> bool:
        """``True`` after :meth:`dispose`."""
        return self._proto.disposed

    # -- actions ----------------------------------------------------------------------------

    async def action(self, name: str, *args: Any) -> Any:
        """Call action ``name`` with ``args`` over the connection and return its output.

        Waits for the connection if it is not connected (the call is queued).

        Raises:
            ActorError: the error the actor answered (the connection stays usable),
                ``client.connection_lost`` (or the close reason's error) when the socket was
                lost after the request was sent, ``client.disposed`` after :meth:`dispose`, or
                the fatal error of a connection that gave up.
            TypeError: an argument cannot be serialized.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"action name must be a non-empty string, got {name!r}")
        loop = self._ensure_started()
        action_id = self._proto.call(name, args)
        future: asyncio.Future[Any] = loop.create_future()
        self._futures[action_id] = future
        await self._flush()
        try:
            return await future
        except asyncio.CancelledError:
            self._futures.pop(action_id, None)
            self._proto.cancel(action_id)
            raise

    async def send(
        self, name: str, body: Any = None, *, wait: bool = False, timeout: float | None = None
    ) -> QueueSendResult | None:
        """Send to the actor's queue ``name`` as :meth:`ActorHandle.send` does (over HTTP, as
        the official client), with this connection's params (``get_params`` is asked afresh)."""
        if self._proto.disposed:
            raise disposed_error()
        handle = self._handle._with_params_header(await self._resolve_params())
        return await handle.send(name, body, wait=wait, timeout=timeout)

    # -- events -----------------------------------------------------------------------------

    def on(self, name: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Call ``callback(*args)`` for every event ``name``; returns the unsubscribe function.

        The first listener of a name subscribes on the server; calling the returned function
        for the last one unsubscribes. Subscriptions survive reconnects.
        """
        return self._add_listener(name, callback, once=False)

    def once(self, name: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Like :meth:`on`, for the next event ``name`` only."""
        return self._add_listener(name, callback, once=True)

    def events(
        self, name: str, *, max_queue: int = 1024, overflow: Overflow = "drop_oldest"
    ) -> EventStream:
        """An async iterator over the events ``name``, subscribed from this call on.

        Each item is the event's only argument, or a tuple of its arguments when it has none or
        several. Events are buffered in a queue of ``max_queue`` items; when it is full,
        ``overflow="drop_oldest"`` drops the oldest event (logging a warning) and
        ``overflow="error"`` ends the iteration with ``ActorError("client", "event_overflow")``
        after the buffered events. The iteration ends after :meth:`dispose` and raises the fatal
        error if the connection gives up. Leaving an ``async with`` block or calling ``aclose()``
        unsubscribes::

            async with conn.events("message") as messages:
                async for message in messages:
                    ...
        """
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if overflow not in ("drop_oldest", "error"):
            raise ValueError(f"overflow must be 'drop_oldest' or 'error', got {overflow!r}")
        stream = EventStream(self, name, max_queue, overflow)
        self._streams.add(stream)
        return stream

    def _add_listener(
        self, name: str, callback: Callable[..., Any], *, once: bool
    ) -> Callable[[], None]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"event name must be a non-empty string, got {name!r}")
        if not callable(callback):
            raise TypeError("callback must be callable")
        listener = _Listener(callback, once)
        self._listeners.setdefault(name, []).append(listener)
        self._proto.add_listener(name)
        self._schedule_flush()

        def unsubscribe() -> None:
            self._remove_listener(name, listener)

        return unsubscribe

    def _remove_listener(self, name: str, listener: _Listener) -> None:
        if not listener.active:
            return
        listener.active = False
        listeners = self._listeners.get(name)
        if listeners is not None:
            listeners.remove(listener)
            if not listeners:
                del self._listeners[name]
        self._proto.remove_listener(name)
        self._schedule_flush()

    # -- lifecycle callbacks -----------------------------------------------------------------

    def on_status_change(self, callback: Callable[[ConnStatus], Any]) -> Callable[[], None]:
        """Call ``callback(status)`` on every status change; returns the unsubscribe function."""
        return _register(self._status_callbacks, callback)

    def on_open(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` every time the connection becomes usable (each ``Init``)."""
        return _register(self._open_callbacks, callback)

    def on_close(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` every time an established connection closes (before the
        reconnect), and on :meth:`dispose` of a connected connection."""
        return _register(self._close_callbacks, callback)

    def on_error(self, callback: Callable[[ActorError], Any]) -> Callable[[], None]:
        """Call ``callback(error)`` for connection-level errors: an ``Error`` frame without
        action id, a close of an established connection with a structured reason that is not a
        lifecycle one (``1011 "user.forbidden"`` after a refused subscription, say), or the
        fatal error that makes the connection give up."""
        return _register(self._error_callbacks, callback)

    # -- waiting and disposal ----------------------------------------------------------------

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the status is ``connected`` (the official ``conn.ready``).

        Raises:
            ActorError: the connection gave up (its fatal error) or was disposed
                (``client.disposed``).
            TimeoutError: ``timeout`` seconds passed.
        """
        loop = self._ensure_started()
        proto = self._proto
        if proto.status is ConnStatus.CONNECTED:
            return
        if proto.disposed:
            raise disposed_error()
        if proto.fatal_error is not None:
            raise proto.fatal_error
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def dispose(self) -> None:
        """Close the connection for good (close 1000 ``"Disposed"``); pending actions fail with
        ``client.disposed``, event iterators end. Idempotent."""
        proto = self._proto
        was_connected = proto.status is ConnStatus.CONNECTED
        if not proto.disposed:
            proto.dispose()
            self._dispatch()
            if was_connected:
                for callback in list(self._close_callbacks):
                    self._invoke(callback)
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000, "Disposed"), _CLOSE_TIMEOUT * 2)
            except (TimeoutError, OSError, ConnectionClosed):
                pass
        task = self._task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        background = [t for t in self._background if t is not asyncio.current_task()]
        for pending in background:
            if not pending.done():
                pending.cancel()
        if background:
            await asyncio.gather(*background, return_exceptions=True)

    async def __aenter__(self) -> Self:
        self._ensure_started()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()

    # -- the connection task -----------------------------------------------------------------

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            if not self._proto.disposed:
                self._client._register_conn(self)  # RuntimeError if the client is closed
            self._loop = loop
            self._send_lock = asyncio.Lock()
            if not self._proto.disposed:
                self._proto.begin_attempt()
                self._dispatch()
                self._task = loop.create_task(
                    self._run(), name=f"rivetkit-conn-{self._handle.name}"
                )
        elif self._loop is not loop:
            raise RuntimeError("this ActorConn is bound to the event loop it was started in")
        return loop

    async def _run(self) -> None:
        proto = self._proto
        first = True
        while not proto.disposed:
            if not first:
                proto.begin_attempt()
                self._dispatch()
            first = False
            try:
                decision = await self._attempt()
            except Exception as exc:  # noqa: BLE001 - a bug must not leave callers waiting forever
                client_logger.exception("connection attempt to %s crashed", self._handle.name)
                error = ActorError(
                    "client", "internal_error", f"connection failed: {type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
                decision = proto.handshake_failed(error, transient=False)
            self._dispatch()
            if decision is None or isinstance(decision, GiveUp):
                return
            client_logger.info(
                "connection to %s lost or refused (%s); reconnecting in %.2f s",
                self._handle.name,
                decision.error,
                decision.delay,
            )
            if decision.delay > 0:
                await asyncio.sleep(decision.delay)

    async def _resolve_params(self) -> str | None:
        get_params = self._get_params
        if get_params is None:
            return params_json(self._params)
        value = get_params()
        if inspect.isawaitable(value):
            value = await value
        return params_json(value)

    async def _attempt(self) -> Decision | None:
        proto = self._proto
        handle = self._handle
        try:
            params = await self._resolve_params()
        except Exception as exc:  # noqa: BLE001 - any failure of user code is retried
            error = ActorError(
                "client", "get_params_failed", f"get_params failed: {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            return proto.handshake_failed(error, transient=True)
        try:
            config = await self._client._ready()
        except ActorError as err:
            return proto.handshake_failed(err, transient=False)
        url = ws_scheme(gateway_target_url(config, handle._query, handle._actor_id, "/connect"))
        client = self._client
        try:
            ws = await client._bind_loop().connect(
                url,
                subprotocols=conn_subprotocols(config.encoding, params),
                headers=dict(config.headers),
                user_agent=client._user_agent,
                open_timeout=client._open_timeout,
                close_timeout=_CLOSE_TIMEOUT,
                max_size=MAX_FRAME_SIZE,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            error, transient = handshake_error(exc, url, dynamic=proto.dynamic)
            return self._after_failure(proto.handshake_failed(error, transient=transient))
        if proto.disposed:
            await ws.close(1000, "Disposed")
            return None
        self._ws = ws
        proto.socket_opened()
        decision: Decision | None = None
        try:
            async for data in ws:
                decision = proto.receive(data)
                self._dispatch()
                if decision is not None:
                    # An Error frame before Init ended the attempt; the server closes next.
                    await ws.close()
                    break
                await self._flush()
        except ConnectionClosed:
            pass
        except BaseException:
            abort_websocket(ws)  # cancelled (dispose) or crashed: never leak the socket
            raise
        finally:
            if self._ws is ws:
                self._ws = None
        if decision is not None:
            return self._after_failure(decision)
        await ws.wait_closed()
        code = ws.close_code if ws.close_code is not None else 1006
        reason = ws.close_reason or ""
        return self._after_failure(proto.socket_closed(code, reason))

    def _after_failure(self, decision: Decision | None) -> Decision | None:
        handle = self._handle
        if (
            decision is not None
            and handle._query.is_dynamic
            and handle._actor_id is not None
            and is_stale_actor_error(decision.error.group, decision.error.code)
        ):
            handle._actor_id = None  # stale cached id: use the query form next time
        return decision

    # -- sending -----------------------------------------------------------------------------

    async def _flush(self) -> None:
        lock = self._send_lock
        if lock is None:
            return
        async with lock:
            frames = self._proto.take_frames()
            ws = self._ws
            if not frames or ws is None:
                return
            try:
                for frame in frames:
                    await ws.send(frame)
            except ConnectionClosed:
                pass  # the reader sees the close and fails what was in flight

    def _schedule_flush(self) -> None:
        loop = self._loop
        if loop is None or self._ws is None or self._proto.disposed:
            return
        self._spawn(self._flush())

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        loop = self._loop
        assert loop is not None
        task = loop.create_task(_as_coroutine(awaitable))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- dispatching outputs -----------------------------------------------------------------

    def _dispatch(self) -> None:
        for output in self._proto.take_outputs():
            if isinstance(output, ActionResolved):
                future = self._futures.pop(output.action_id, None)
                if future is not None and not future.done():
                    future.set_result(output.output)
            elif isinstance(output, ActionRejected):
                future = self._futures.pop(output.action_id, None)
                if future is not None and not future.done():
                    future.set_exception(output.error)
            elif isinstance(output, EventReceived):
                self._deliver(output.name, output.args)
            elif isinstance(output, StatusChanged):
                self._status_changed(output.new)
            elif isinstance(output, Opened):
                for callback in list(self._open_callbacks):
                    self._invoke(callback)
            elif isinstance(output, Closed):
                for callback in list(self._close_callbacks):
                    self._invoke(callback)
            elif isinstance(output, ErrorRaised):
                for on_error in list(self._error_callbacks):
                    self._invoke(on_error, output.error)

    def _deliver(self, name: str, args: list[Any]) -> None:
        for listener in list(self._listeners.get(name, ())):
            if not listener.active:
                continue
            if listener.once:
                self._remove_listener(name, listener)
            self._invoke(listener.callback, *args)

    def _status_changed(self, status: ConnStatus) -> None:
        proto = self._proto
        if status is ConnStatus.CONNECTED or proto.disposed or proto.fatal_error is not None:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if waiter.done():
                    continue
                if status is ConnStatus.CONNECTED:
                    waiter.set_result(None)
                elif proto.disposed:
                    waiter.set_exception(disposed_error())
                elif proto.fatal_error is not None:
                    waiter.set_exception(proto.fatal_error)
            if status is not ConnStatus.CONNECTED:
                for stream in list(self._streams):
                    stream._finish(None if proto.disposed else proto.fatal_error)
        for callback in list(self._status_callbacks):
            self._invoke(callback, status)

    def _invoke(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            result = callback(*args)
        except Exception:  # noqa: BLE001 - a listener must not break the connection
            client_logger.exception("connection callback %r raised", callback)
            return
        if inspect.isawaitable(result) and self._loop is not None:
            self._spawn(_logged(result, callback))


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _logged(awaitable: Awaitable[Any], callback: Callable[..., Any]) -> None:
    try:
        await awaitable
    except Exception:  # noqa: BLE001 - a listener must not break the connection
        client_logger.exception("connection callback %r raised", callback)


def _register(callbacks: list[Any], callback: Any) -> Callable[[], None]:
    if not callable(callback):
        raise TypeError("callback must be callable")
    callbacks.append(callback)

    def unsubscribe() -> None:
        if callback in callbacks:
            callbacks.remove(callback)

    return unsubscribe


_END: Final = object()


class EventStream:
    """Async iterator over one event of an :class:`ActorConn` (see :meth:`ActorConn.events`)."""

    def __init__(self, conn: ActorConn, name: str, max_queue: int, overflow: Overflow) -> None:
        self._name = name
        self._max_queue = max_queue
        self._overflow = overflow
        self._items: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: ActorError | None = None
        self._ended = False
        self._dropped = 0
        self._conn = conn
        push = weakref.WeakMethod(self._push)

        def listener(*args: Any) -> None:
            method = push()
            if method is not None:
                method(*args)

        # The connection holds the listener, not the stream: an abandoned stream is collected
        # and unsubscribes (see __del__).
        self._unsubscribe: Callable[[], None] | None = conn.on(name, listener)
        if conn._proto.disposed:
            self._finish(None)
        elif conn._proto.fatal_error is not None:
            self._finish(conn._proto.fatal_error)

    @property
    def name(self) -> str:
        """The event name."""
        return self._name

    @property
    def dropped(self) -> int:
        """How many events ``overflow="drop_oldest"`` dropped."""
        return self._dropped

    def _push(self, *args: Any) -> None:
        if self._ended:
            return
        item = args[0] if len(args) == 1 else tuple(args)
        if len(self._items) >= self._max_queue:
            if self._overflow == "error":
                self._finish(
                    ActorError(
                        "client",
                        "event_overflow",
                        f"more than {self._max_queue} {self._name!r} events were not consumed",
                    )
                )
                return
            self._items.popleft()
            self._dropped += 1
            client_logger.warning(
                "event queue of %r is full (%d); dropped the oldest event",
                self._name,
                self._max_queue,
            )
        self._items.append(item)
        self._wake()

    def _finish(self, error: ActorError | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._stop_listening()
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_listening(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._items:
                return self._items.popleft()
            if self._ended:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            await waiter

    async def aclose(self) -> None:
        """Unsubscribe and end the iteration (buffered events are discarded)."""
        self._items.clear()
        self._error = None
        self._finish(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # An iterator abandoned without aclose(): unsubscribe from its loop's thread.
        if self._unsubscribe is None:
            return
        loop = self._conn._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._stop_listening)
        except RuntimeError:
            pass
