"""The blocking client: the same names as :mod:`rivetkit.client`, without ``await``.

There is one implementation. Each :class:`Client` owns a *portal*: a private event loop running in
a background thread (started on first use), which drives an async :class:`rivetkit.client.Client`.
Blocking calls submit a coroutine to that loop and wait for its result, so the sync client also
works from a thread that is itself running an event loop (it blocks that loop while it waits).
``close()`` closes the HTTP session and joins the thread; a client that is garbage collected
without being closed is cleaned up the same way.

Example::

    from rivetkit.client.sync import Client

    with Client("http://127.0.0.1:6420") as client:
        counter = client.get_or_create("counter", ["my-counter"])
        print(counter.increment(1))
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from multidict import CIMultiDictProxy
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from .._protocol.encoding import Encoding
from ..errors import ActorError
from . import _aio, _conn, _raw
from ._conn import GetParams, Overflow
from ._conn_protocol import ConnStatus
from ._protocol import QueueSendResult

__all__ = ["ActorConn", "ActorHandle", "ActorResponse", "Client", "ConnStatus", "EventStream"]

T = TypeVar("T")

# websockets ≥ 17.1 wants ``legacy=True`` to return an open connection without a ``with`` block.
_LEGACY_CONNECT: dict[str, Any] = (
    {"legacy": True} if "legacy" in inspect.signature(ws_connect).parameters else {}
)


class _Portal:
    """An event loop in a daemon thread, started lazily, stopped once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._stopped:
                raise RuntimeError("this Client is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(loop, ready), name="rivetkit-client-portal", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the portal loop and wait for its result."""
        loop = self._start()
        if threading.current_thread() is self._thread:
            raise RuntimeError("the sync client cannot be called from its own portal thread")
        future = asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt in the waiting thread: do not leave the request running.
            future.cancel()
            raise

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the plain function ``fn(*args)`` on the portal thread (where the async objects
        live) and return its result; called from the portal thread itself, run it directly."""
        if threading.current_thread() is self._thread:
            return fn(*args)

        async def call() -> T:
            return fn(*args)

        return self.call(call)

    def stop(self, cleanup: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Run ``cleanup`` on the loop (if it was started), stop the loop and join the thread.

        Idempotent. From the portal thread itself (a finalizer run there by the garbage
        collector) it only schedules the shutdown.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            if cleanup is not None:
                loop.create_task(cleanup()).add_done_callback(lambda _: loop.stop())
            else:
                loop.stop()
            return
        try:
            if cleanup is not None and not loop.is_closed():
                asyncio.run_coroutine_threadsafe(cleanup(), loop).result()
        finally:
            if not loop.is_closed():
                loop.call_soon_threadsafe(loop.stop)
            thread.join()


def _shutdown(portal: _Portal, client: _aio.Client) -> None:
    portal.stop(client.aclose)


class Client:
    """Client of a RivetKit server, blocking flavour of :class:`rivetkit.client.Client`.

    Takes the same arguments as the async client (see there for the defaults taken from
    ``RIVET_*`` environment variables and the URL auth syntax).

    Args:
        endpoint: base URL; ``None`` means ``RIVET_ENGINE``/``RIVET_ENDPOINT`` or
            ``http://localhost:6420``.
        namespace: namespace, ``None`` for the default.
        token: access token, ``None`` for the default.
        encoding: ``"bare"`` (default), ``"cbor"`` or ``"json"``.
        pool_name: runner pool for created actors.
        headers: extra headers added to every HTTP request.
        app: not supported by the blocking client (its requests run on a private event loop in
            another thread, where an in-process app cannot be called); must be ``None``. Use
            the async :class:`rivetkit.client.Client` with ``app=`` from the app's own loop.

    Raises:
        TypeError: ``app`` was given.

    Example::

        with Client("http://127.0.0.1:6420") as client:
            counter = client.get_or_create("counter", ["my-counter"])
            counter.increment(1)
            print(counter.action("getCount"))
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        namespace: str | None = None,
        token: str | None = None,
        encoding: Encoding | None = None,
        pool_name: str | None = None,
        headers: Mapping[str, str] | None = None,
        app: None = None,
    ) -> None:
        if app is not None:
            raise TypeError(
                "rivetkit.client.sync.Client does not support app= (an in-process ASGI app must "
                "be called from its own event loop); use the async rivetkit.client.Client(app=...)"
            )
        self._client = _aio.Client(
            endpoint,
            namespace=namespace,
            token=token,
            encoding=encoding,
            pool_name=pool_name,
            headers=headers,
        )
        self._portal = _Portal()
        self._finalizer = weakref.finalize(self, _shutdown, self._portal, self._client)

    def __repr__(self) -> str:
        return repr(self._client).replace("<Client", "<sync.Client", 1)

    def get(self, name: str, key: str | Sequence[str] = (), *, params: Any = None) -> ActorHandle:
        """A handle to the existing actor ``name`` with ``key`` (see the async
        :meth:`rivetkit.client.Client.get`)."""
        return ActorHandle(self._client.get(name, key, params=params), self)

    def get_or_create(
        self,
        name: str,
        key: str | Sequence[str] = (),
        *,
        input: Any = None,
        params: Any = None,
        create_in_region: str | None = None,
    ) -> ActorHandle:
        """A handle to actor ``name`` with ``key``, created on first use (see the async
        :meth:`rivetkit.client.Client.get_or_create`)."""
        handle = self._client.get_or_create(
            name, key, input=input, params=params, create_in_region=create_in_region
        )
        return ActorHandle(handle, self)

    def get_for_id(self, name: str, actor_id: str, *, params: Any = None) -> ActorHandle:
        """A handle to the actor with id ``actor_id``."""
        return ActorHandle(self._client.get_for_id(name, actor_id, params=params), self)

    def create(
        self,
        name: str,
        key: str | Sequence[str] = (),
        *,
        input: Any = None,
        params: Any = None,
        region: str | None = None,
    ) -> ActorHandle:
        """Create a new actor and return a handle addressing it by id (see the async
        :meth:`rivetkit.client.Client.create`).

        Raises:
            ActorError: ``actor.duplicate_key`` if an actor with this name and key exists.
        """
        handle = self._portal.call(
            self._client.create, name, key, input=input, params=params, region=region
        )
        return ActorHandle(handle, self)

    def close(self) -> None:
        """Close the HTTP session and stop the portal thread. Idempotent."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ActorHandle:
    """A stateless handle to one actor, blocking flavour of
    :class:`rivetkit.client.ActorHandle`.

    Any public attribute that is not one of the methods below is an action::

        handle.increment(1)    # same as handle.action("increment", 1)
    """

    __slots__ = ("_handle", "_owner")

    def __init__(self, handle: _aio.ActorHandle, owner: Client) -> None:
        self._handle = handle
        self._owner = owner  # keeps the client (and its portal thread) alive while in use

    def __repr__(self) -> str:
        return repr(self._handle).replace("<ActorHandle", "<sync.ActorHandle", 1)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self.action, name)

    @property
    def name(self) -> str:
        """The actor name."""
        return self._handle.name

    @property
    def key(self) -> list[str]:
        """The actor key (``[]`` for handles addressing an id)."""
        return self._handle.key

    @property
    def actor_id(self) -> str | None:
        """The actor id, once known (see :attr:`rivetkit.client.ActorHandle.actor_id`)."""
        return self._handle.actor_id

    def action(self, name: str, *args: Any) -> Any:
        """Call action ``name`` with ``args`` and return its output (blocking).

        Raises:
            ActorError: the error the actor or server answered, or a ``client.*`` error.
        """
        return self._owner._portal.call(self._handle.action, name, *args)

    def send(
        self, name: str, body: Any = None, *, wait: bool = False, timeout: float | None = None
    ) -> QueueSendResult | None:
        """Send to the actor's queue ``name`` (blocking); see the async
        :meth:`rivetkit.client.ActorHandle.send`."""
        return self._owner._portal.call(
            self._handle.send, name, body, wait=wait, timeout=timeout
        )

    def resolve(self) -> str:
        """The actor id (looked up or created for ``get``/``get_or_create`` handles)."""
        return self._owner._portal.call(self._handle.resolve)

    def gateway_url(self) -> str:
        """The gateway URL of this actor, without an actor path (``getGatewayUrl()``)."""
        return self._handle.gateway_url()

    def connect(self, params: Any = None, *, get_params: GetParams | None = None) -> ActorConn:
        """Open a stateful connection to the actor (see the async
        :meth:`rivetkit.client.ActorHandle.connect`); it starts connecting at once.

        ``get_params`` may be a plain function or a coroutine function; it runs on the client's
        portal thread before every attempt. Use the connection as a context manager or call
        ``dispose()``::

            with handle.connect() as conn:
                conn.on("newCount", print)
                conn.increment(1)
        """
        owner = self._owner

        async def start() -> _conn.ActorConn:
            return self._handle.connect(params, get_params=get_params)

        return ActorConn(owner._portal.call(start), owner)

    def fetch(
        self,
        path: str = "",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> ActorResponse:
        """Send a raw HTTP request to the actor's ``on_request`` handler (see the async
        :meth:`rivetkit.client.ActorHandle.fetch`); the body is read before this returns."""
        response = self._owner._portal.call(
            self._handle.fetch, path, method=method, headers=headers, body=body
        )
        return ActorResponse(response)

    def websocket(
        self, path: str = "", *, protocols: Sequence[str] | None = None
    ) -> ClientConnection:
        """Open a raw WebSocket to the actor's ``on_websocket`` handler (see the async
        :meth:`rivetkit.client.ActorHandle.websocket`).

        Returns:
            An open ``websockets.sync.client.ClientConnection`` (blocking ``send``, ``recv``,
            iteration, ``close``), used from any thread; close it when done.

        Raises:
            ActorError: the upgrade was refused or the server could not be reached.
        """
        client = self._handle._client
        url, subprotocols, headers = self._owner._portal.call(
            _raw.websocket_target, self._handle, path, protocols
        )
        try:
            connection = ws_connect(
                url,
                subprotocols=subprotocols,
                additional_headers=headers,
                user_agent_header=client._user_agent,
                proxy=None,
                open_timeout=client._open_timeout,
                max_size=_conn.MAX_FRAME_SIZE,
                **_LEGACY_CONNECT,
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            error, _ = _conn.handshake_error(exc, url, dynamic=self._handle._query.is_dynamic)
            raise error from exc
        assert isinstance(connection, ClientConnection)
        return connection


class ActorResponse:
    """The answer of :meth:`ActorHandle.fetch` (blocking flavour of
    :class:`rivetkit.client.ActorResponse`): ``status``, ``reason``, ``headers``, ``url``,
    ``ok``, ``content`` and ``read()``/``text()``/``json()``."""

    __slots__ = ("_response",)

    def __init__(self, response: _raw.ActorResponse) -> None:
        self._response = response

    def __repr__(self) -> str:
        return repr(self._response)

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def reason(self) -> str:
        return self._response.reason

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._response.headers

    @property
    def url(self) -> str:
        return self._response.url

    @property
    def ok(self) -> bool:
        return self._response.ok

    @property
    def content(self) -> bytes:
        return self._response.content

    def read(self) -> bytes:
        """The body as bytes."""
        return self._response.content

    def text(self, encoding: str | None = None) -> str:
        """The body decoded with ``encoding``, the ``Content-Type`` charset or UTF-8."""
        return self._response.content.decode(encoding or self._response._charset())

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not)."""
        return json.loads(self._response.content)


class ActorConn:
    """A stateful connection to one actor, blocking flavour of
    :class:`rivetkit.client.ActorConn` (same names, no ``await``).

    The connection lives on the client's portal thread. Callbacks given to ``on``, ``once``,
    ``on_status_change``, ``on_open``, ``on_close`` and ``on_error`` run **on that thread**: keep
    them short, and do not call blocking methods of the sync client from them (that raises
    ``RuntimeError``, it would deadlock); hand work to another thread instead, or use
    :meth:`events` from your own thread. Subscribing and unsubscribing from a callback is fine.

    Any public attribute that is not one of the methods below is an action::

        conn.increment(1)    # same as conn.action("increment", 1)
    """

    __slots__ = ("_conn", "_owner")

    def __init__(self, conn: _conn.ActorConn, owner: Client) -> None:
        self._conn = conn
        self._owner = owner  # keeps the client (and its portal thread) alive while in use

    def __repr__(self) -> str:
        return repr(self._conn).replace("<ActorConn", "<sync.ActorConn", 1)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self.action, name)

    @property
    def status(self) -> ConnStatus:
        """``idle``, ``connecting``, ``connected`` or ``disconnected``."""
        return self._conn.status

    @property
    def actor_id(self) -> str | None:
        return self._conn.actor_id

    @property
    def connection_id(self) -> str | None:
        return self._conn.connection_id

    @property
    def error(self) -> ActorError | None:
        """The fatal error that stopped the connection, if one did."""
        return self._conn.error

    @property
    def is_disposed(self) -> bool:
        """``True`` after :meth:`dispose`."""
        return self._conn.is_disposed

    def action(self, name: str, *args: Any) -> Any:
        """Call action ``name`` over the connection and return its output (blocking; queued
        until connected). Raises as :meth:`rivetkit.client.ActorConn.action`."""
        return self._owner._portal.call(self._conn.action, name, *args)

    def send(
        self, name: str, body: Any = None, *, wait: bool = False, timeout: float | None = None
    ) -> QueueSendResult | None:
        """Send to the actor's queue ``name`` with this connection's params (blocking); see
        :meth:`rivetkit.client.ActorConn.send`."""
        return self._owner._portal.call(self._conn.send, name, body, wait=wait, timeout=timeout)

    def _unsubscriber(self, unsubscribe: Callable[[], None]) -> Callable[[], None]:
        portal = self._owner._portal

        def run() -> None:
            portal.run(unsubscribe)

        return run

    def on(self, name: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Call ``callback(*args)`` (on the portal thread) for every event ``name``; returns
        the unsubscribe function (callable from any thread)."""
        return self._unsubscriber(self._owner._portal.run(self._conn.on, name, callback))

    def once(self, name: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Like :meth:`on`, for the next event ``name`` only."""
        return self._unsubscriber(self._owner._portal.run(self._conn.once, name, callback))

    def on_status_change(self, callback: Callable[[ConnStatus], Any]) -> Callable[[], None]:
        """Call ``callback(status)`` on every status change (on the portal thread)."""
        portal = self._owner._portal
        return self._unsubscriber(portal.run(self._conn.on_status_change, callback))

    def on_open(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` every time the connection becomes usable."""
        return self._unsubscriber(self._owner._portal.run(self._conn.on_open, callback))

    def on_close(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` every time an established connection closes."""
        return self._unsubscriber(self._owner._portal.run(self._conn.on_close, callback))

    def on_error(self, callback: Callable[[ActorError], Any]) -> Callable[[], None]:
        """Call ``callback(error)`` for connection-level and fatal errors."""
        return self._unsubscriber(self._owner._portal.run(self._conn.on_error, callback))

    def events(
        self, name: str, *, max_queue: int = 1024, overflow: Overflow = "drop_oldest"
    ) -> EventStream:
        """A blocking iterator over the events ``name`` (see the async
        :meth:`rivetkit.client.ActorConn.events` for items, buffering and overflow); use it as a
        context manager or call ``close()`` to unsubscribe::

            with conn.events("message") as messages:
                for message in messages:
                    ...
        """
        stream = self._owner._portal.run(
            functools.partial(self._conn.events, name, max_queue=max_queue, overflow=overflow)
        )
        return EventStream(stream, self._owner)

    def wait_connected(self, timeout: float | None = None) -> None:
        """Block until connected (``ActorError`` if the connection gave up or was disposed,
        ``TimeoutError`` after ``timeout`` seconds)."""
        self._owner._portal.call(self._conn.wait_connected, timeout)

    def dispose(self) -> None:
        """Close the connection for good (close 1000 ``"Disposed"``). Idempotent."""
        self._owner._portal.call(self._conn.dispose)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.dispose()


class EventStream:
    """Blocking iterator over one event of an :class:`ActorConn`."""

    __slots__ = ("_owner", "_stream")

    def __init__(self, stream: _conn.EventStream, owner: Client) -> None:
        self._stream = stream
        self._owner = owner

    @property
    def name(self) -> str:
        return self._stream.name

    @property
    def dropped(self) -> int:
        """How many events ``overflow="drop_oldest"`` dropped."""
        return self._stream.dropped

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self._owner._portal.call(self._stream.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Unsubscribe and end the iteration."""
        self._owner._portal.call(self._stream.aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
