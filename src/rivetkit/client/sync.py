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
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from .._protocol.encoding import Encoding
from . import _aio

__all__ = ["ActorHandle", "Client"]

T = TypeVar("T")


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
    ) -> None:
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

    def resolve(self) -> str:
        """The actor id (looked up or created for ``get``/``get_or_create`` handles)."""
        return self._owner._portal.call(self._handle.resolve)

    def gateway_url(self) -> str:
        """The gateway URL of this actor, without an actor path (``getGatewayUrl()``)."""
        return self._handle.gateway_url()
