"""The asyncio client: :class:`Client` and :class:`ActorHandle`.

A thin I/O layer over :mod:`._protocol`, which decides every URL, header, body and retry. The
requests go through the client's transport (:mod:`._transport`): over the network, one
``aiohttp.ClientSession`` per :class:`Client` (keep-alive, created lazily inside the running loop
on first use) carries all HTTP traffic; with ``Client(app=...)`` the ASGI app is called in the
same event loop instead (:mod:`._asgi`), with the same URLs, retries and errors.

Errors:

* any non-2xx answer becomes :class:`~rivetkit.errors.ActorError` with the server's
  ``group``/``code``/``message``/``metadata``/``actor`` and the HTTP ``status``;
* an answer that is not an error envelope: ``ActorError("client", "http_error")``;
* a 2xx answer that cannot be decoded: ``ActorError("client", "invalid_response")``;
* the server could not be reached (refused, reset, DNS), or an in-process app failed in the middle
  of its answer: ``ActorError("client", "network_error")`` with the aiohttp exception (if any) as
  ``__cause__``; it is not retried;
* aiohttp's socket timeouts surface as the builtin :class:`TimeoutError`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from .. import __version__
from .._log import client_logger
from .._protocol import DecodeError, HttpQueueSendRequest, get_codec
from .._protocol.messages import MISSING
from .._protocol.encoding import CONTENT_TYPES, Codec, Encoding
from .._runtime.keys import serialize_key
from ..errors import ActorError
from ._asgi import IN_PROCESS_ENDPOINT, ASGIApp, AsgiTransport
from ._conn import ActorConn, GetParams
from ._protocol import (
    ActorQuery,
    ClientConfig,
    QueueSendResult,
    actor_id_from_response,
    api_url,
    apply_metadata,
    create_body,
    direct_gateway_url,
    encode_uri_component,
    error_from_response,
    get_or_create_body,
    is_lifecycle_retryable,
    is_request_retryable,
    is_scheduling_error,
    is_stale_actor_error,
    json_loads,
    lifecycle_max_attempts,
    query_gateway_url,
    resolve_config,
    retry_backoff,
)
from ._raw import ActorResponse, fetch, open_websocket
from ._transport import NetworkTransport, Transport, WebSocket

__all__ = ["ActorHandle", "Client"]

USER_AGENT: Final = f"RivetKit-Python/{__version__}"

_REQUEST_MAX_ATTEMPTS: Final = 5


def _params_header(params: Any) -> str | None:
    # Connection params are plain JSON, never the compat layer (spec §6.2); ASCII-only so the
    # header value is valid whatever the params contain.
    if params is None:
        return None
    return json.dumps(params, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


class Client:
    """Client of a RivetKit server (or a Rivet Engine), async flavour.

    Args:
        endpoint: base URL, ``RIVET_ENGINE`` / ``RIVET_ENDPOINT`` or ``http://localhost:6420``
            when ``None``. May carry a path prefix (``http://host/api/rivet``) and the URL auth
            syntax ``http://NAMESPACE:TOKEN@host`` / ``http://NAMESPACE@host``; a query string or
            fragment is refused.
        namespace: namespace; ``None`` means the one in the endpoint URL, ``RIVET_NAMESPACE`` or
            ``"default"``.
        token: access token sent with every request; ``None`` means the one in the endpoint URL,
            ``RIVET_TOKEN`` or no token.
        encoding: ``"bare"`` (default), ``"cbor"`` or ``"json"``: the encoding of action bodies.
        pool_name: runner pool for actors this client creates; ``RIVET_POOL`` or ``"default"``.
        headers: extra headers added to every HTTP request.
        app: an ASGI 3 application (``registry.asgi()``, or a host application that mounts it)
            to call in-process instead of reaching ``endpoint`` over the network: every request
            and WebSocket runs the app in the client's event loop, with no socket. ``endpoint``
            then defaults to ``http://rivetkit.in-process`` and only its path prefix matters
            (``http://x/api/rivet`` for an app that mounts the registry under ``/api/rivet``);
            ``RIVET_ENGINE``/``RIVET_ENDPOINT`` are ignored. Everything else (``/metadata``,
            retries, errors, encodings, connections and their reconnects) behaves as over the
            network. The app must already be started (``await registry.start()``); the client
            does not run its lifespan.

    Raises:
        ValueError: for a malformed endpoint, an unknown encoding, or a namespace/token given both
            in the URL and as an argument.
        TypeError: ``app`` is not callable.

    Before its first request the client fetches ``GET {endpoint}/metadata`` once (retrying
    connection failures and 5xx answers with backoff, like the official client) and follows its
    ``clientEndpoint`` if the server names one. The client is bound to the event loop it is first
    used in; close it with ``aclose()`` or use it as an async context manager.

    Example::

        async with Client("http://127.0.0.1:6420") as client:
            counter = client.get_or_create("counter", ["my-counter"])
            print(await counter.increment(1))              # attribute sugar
            print(await counter.action("getCount"))        # explicit form

    In-process, from code running in the registry's event loop::

        await registry.start()
        async with Client(app=registry.asgi()) as client:
            print(await client.get_or_create("counter", ["a"]).increment(1))
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
        app: ASGIApp | None = None,
    ) -> None:
        if app is not None and endpoint is None:
            endpoint = IN_PROCESS_ENDPOINT
        self._config = resolve_config(
            endpoint,
            namespace=namespace,
            token=token,
            pool_name=pool_name,
            encoding=encoding,
            headers=headers,
            env=os.environ,
        )
        self._codec: Codec = get_codec(self._config.encoding)
        self._resolved: ClientConfig | None = None  # config after GET /metadata
        self._transport: Transport = (
            NetworkTransport(USER_AGENT) if app is None else AsgiTransport(app, USER_AGENT)
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._metadata_lock: asyncio.Lock | None = None
        self._closed = False
        # Retry timing in seconds (private so tests can shorten them).
        self._retry_delay = 0.1  # lifecycle retry window of get/getOrCreate handles
        self._request_retry_delay = (0.025, 0.2)  # initial, maximum
        self._metadata_retry_delay = (0.5, 15.0)  # initial, maximum
        self._metadata_attempts = 8
        self._reconnect_delay = (0.25, 30.0)  # connections: initial, maximum backoff
        self._open_timeout = 10.0  # WebSocket opening handshake
        self._user_agent = USER_AGENT
        self._conns: weakref.WeakSet[ActorConn] = weakref.WeakSet()

    def __repr__(self) -> str:
        config = self._resolved or self._config
        where = " in-process" if isinstance(self._transport, AsgiTransport) else ""
        return (
            f"<Client endpoint={config.endpoint!r} namespace={config.namespace!r} "
            f"encoding={config.encoding!r}{where}>"
        )

    # -- handles ----------------------------------------------------------------------------

    def get(self, name: str, key: str | Sequence[str] = (), *, params: Any = None) -> ActorHandle:
        """A handle to the existing actor ``name`` with ``key``.

        Nothing is sent until an action is called; a missing actor then fails with
        ``actor.not_found`` after the official client's retries (24 attempts, ~100 ms apart).

        Args:
            name: actor name.
            key: actor key: a ``str`` (one part) or a sequence of ``str``, each ≤ 128 characters.
                The gateway joins parts with ``,`` without escaping, so a part containing ``,``
                addresses another actor (official behaviour).
            params: connection params, sent as JSON in ``x-rivet-conn-params``; ``None`` sends
                none.

        Raises:
            ValueError: for an empty name or a key part longer than 128 characters.
            TypeError: for a key part that is not a ``str`` or params that are not JSON.
        """
        return ActorHandle(self, ActorQuery.get(name, key), params)

    def get_or_create(
        self,
        name: str,
        key: str | Sequence[str] = (),
        *,
        input: Any = None,
        params: Any = None,
        create_in_region: str | None = None,
    ) -> ActorHandle:
        """A handle to actor ``name`` with ``key``, created on first use if it does not exist.

        Args:
            name: actor name.
            key: actor key, as in :meth:`get`.
            input: value handed to ``create_state``/``on_create`` if the actor is created
                (ignored when it exists); ``None`` sends no input. Its CBOR form travels in the
                URL and may be at most 4096 bytes.
            params: connection params, as in :meth:`get`.
            create_in_region: region to create the actor in, ``None`` for the server's choice.

        Raises:
            ValueError: for an empty name, a key part longer than 128 characters, or an input
                larger than 4096 bytes of CBOR.
            TypeError: for values that cannot be serialized.
        """
        query = ActorQuery.get_or_create(name, key, input=input, region=create_in_region)
        return ActorHandle(self, query, params)

    def get_for_id(self, name: str, actor_id: str, *, params: Any = None) -> ActorHandle:
        """A handle to the actor with id ``actor_id`` (direct gateway form, never retried).

        Args:
            name: actor name.
            actor_id: the actor's id.
            params: connection params, as in :meth:`get`.
        """
        return ActorHandle(self, ActorQuery.get_for_id(name, actor_id), params)

    async def create(
        self,
        name: str,
        key: str | Sequence[str] = (),
        *,
        input: Any = None,
        params: Any = None,
        region: str | None = None,
    ) -> ActorHandle:
        """Create a new actor (``POST /actors``) and return a handle addressing it by id.

        Args:
            name: actor name.
            key: actor key, as in :meth:`get`.
            input: value handed to ``create_state``/``on_create``; ``None`` sends no input.
            params: connection params for the returned handle, as in :meth:`get`.
            region: region to create the actor in, ``None`` for the server's choice.

        Raises:
            ActorError: ``actor.duplicate_key`` if an actor with this name and key exists, or any
                other error the server answers.
        """
        query = ActorQuery.get(name, key)
        _params_header(params)  # fail before creating anything if params are not JSON
        config = await self._ready()
        body = create_body(config, query.name, query.key, input=input, region=region)
        data = await self._api("POST", "/actors", json_body=body)
        try:
            actor_id = actor_id_from_response(data)
        except ValueError as exc:
            raise ActorError("client", "invalid_response", f"POST /actors: {exc}") from None
        return ActorHandle(self, ActorQuery.get_for_id(query.name, actor_id), params)

    # -- lifecycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Dispose the connections made with this client and close the HTTP session.

        An in-process client (``app=``) also closes the raw WebSockets it opened (1001) and
        waits up to 2 s for the app's tasks serving it to finish, then cancels the rest.
        Idempotent; the client cannot be used afterwards."""
        self._closed = True
        conns = list(self._conns)
        self._conns.clear()
        for conn in conns:
            await conn.dispose()
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- transport --------------------------------------------------------------------------

    def _register_conn(self, conn: ActorConn) -> None:
        if self._closed:
            raise RuntimeError("this Client is closed")
        self._conns.add(conn)

    def _bind_loop(self) -> Transport:
        """The transport, after checking the client is open and bound to the running loop."""
        if self._closed:
            raise RuntimeError("this Client is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._metadata_lock = asyncio.Lock()
        elif self._loop is not loop:
            raise RuntimeError(
                "this Client is bound to the event loop it was first used in; "
                "create one Client per event loop"
            )
        return self._transport

    async def _fetch(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> tuple[int, str | None, bytes]:
        transport = self._bind_loop()
        async with transport.request(method, url, headers, body) as response:
            data = await response.read()
            return response.status, response.headers.get("Content-Type"), data

    def _headers(self, config: ClientConfig) -> dict[str, str]:
        return dict(config.headers)

    async def _ready(self) -> ClientConfig:
        """The configuration to use, after the one-time ``GET /metadata`` lookup."""
        resolved = self._resolved
        if resolved is not None:
            self._bind_loop()
            return resolved
        self._bind_loop()
        assert self._metadata_lock is not None
        async with self._metadata_lock:
            if self._resolved is None:
                self._resolved = await self._lookup_metadata()
            return self._resolved

    async def _lookup_metadata(self) -> ClientConfig:
        config = self._config
        url = api_url(config, "/metadata")
        headers = self._headers(config)
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token}"
        attempt = 0
        while True:
            try:
                status, content_type, data = await self._fetch("GET", url, headers)
            except ActorError as err:
                failure, retryable = err, True
            else:
                if 200 <= status < 300:
                    try:
                        return apply_metadata(config, json_loads(data))
                    except ValueError as exc:
                        raise ActorError(
                            "client", "invalid_response", f"GET /metadata: {exc}", status=status
                        ) from None
                failure = error_from_response(status, content_type, data, "json")
                retryable = status in (408, 429) or status >= 500
            attempt += 1
            if not retryable or attempt >= self._metadata_attempts:
                raise failure
            delay = retry_backoff(attempt - 1, *self._metadata_retry_delay)
            client_logger.warning(
                "metadata lookup failed, retrying in %.2f s attempt=%d error=%s",
                delay,
                attempt,
                failure,
            )
            await asyncio.sleep(delay)

    async def _api(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        json_body: Any = None,
    ) -> Any:
        """Call the management API; returns the decoded JSON answer."""
        config = await self._ready()
        headers = self._headers(config)
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token}"
        body: bytes | None = None
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(json_body, separators=(",", ":")).encode()
        status, content_type, data = await self._fetch(
            method, api_url(config, path, query), headers, body
        )
        if not 200 <= status < 300:
            raise error_from_response(status, content_type, data, "json")
        try:
            return json_loads(data)
        except ValueError as exc:
            raise ActorError(
                "client", "invalid_response", f"{method} {path}: invalid JSON: {exc}", status=status
            ) from None

    async def _post_action(
        self,
        config: ClientConfig,
        url: str,
        body: bytes,
        params_header: str | None,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Any:
        encoding = config.encoding
        headers = self._headers(config)
        headers["x-rivet-encoding"] = encoding
        headers["Content-Type"] = CONTENT_TYPES[encoding]
        if params_header is not None:
            headers["x-rivet-conn-params"] = params_header
        if config.token is not None:
            headers["x-rivet-token"] = config.token
        status, content_type, data = await self._fetch("POST", url, headers, body)
        if not 200 <= status < 300:
            raise error_from_response(status, content_type, data, encoding)
        try:
            return (decode or self._codec.decode_action_response)(data)
        except DecodeError as exc:
            raise ActorError(
                "client", "invalid_response", f"undecodable response: {exc}", status=status
            ) from None


class ActorHandle:
    """A stateless handle to one actor; every call is one HTTP request.

    Create handles with :meth:`Client.get`, :meth:`Client.get_or_create`,
    :meth:`Client.get_for_id` or :meth:`Client.create`. ``get``/``get_or_create`` handles address
    the actor by name and key through the gateway's query form, so the server resolves (and for
    ``get_or_create`` creates) the actor on every request; after :meth:`resolve` they use the
    cached actor id until the server says it is gone. Handles from ``get_for_id``/``create``
    address the actor by id.

    Any public attribute that is not one of the methods below is an action::

        await handle.increment(1)    # same as await handle.action("increment", 1)
    """

    __slots__ = ("_actor_id", "_client", "_params", "_params_header", "_query")

    def __init__(self, client: Client, query: ActorQuery, params: Any) -> None:
        self._client = client
        self._query = query
        self._params = params
        self._params_header = _params_header(params)
        self._actor_id: str | None = query.actor_id

    def _with_params_header(self, params_header: str | None) -> ActorHandle:
        """This handle with other connection params (already encoded as the header)."""
        handle = ActorHandle(self._client, self._query, None)
        handle._params_header = params_header
        handle._actor_id = self._actor_id
        return handle

    def __repr__(self) -> str:
        q = self._query
        if q.method == "getForId":
            return f"<ActorHandle {q.name} id={q.actor_id!r}>"
        return f"<ActorHandle {q.method} {q.name} key={list(q.key)!r} id={self._actor_id!r}>"

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        return functools.partial(self.action, name)

    @property
    def name(self) -> str:
        """The actor name."""
        return self._query.name

    @property
    def key(self) -> list[str]:
        """The actor key (``[]`` for handles addressing an id)."""
        return list(self._query.key)

    @property
    def actor_id(self) -> str | None:
        """The actor id: known for ``get_for_id``/``create`` handles, and for ``get``/
        ``get_or_create`` handles after :meth:`resolve`; ``None`` otherwise."""
        return self._actor_id

    def gateway_url(self) -> str:
        """The gateway URL of this actor, without an actor path (``getGatewayUrl()``, §4.3).

        Direct form ``{endpoint}/gateway/{id}[@token]`` for ``get_for_id``/``create`` handles,
        query form ``{endpoint}/gateway/{name}?rvt-...`` for ``get``/``get_or_create`` handles.
        Append ``/request/...`` to reach the actor's request handler. The endpoint is the one
        ``/metadata`` named if the client has already made a request.
        """
        client = self._client
        config = client._resolved or client._config
        if self._query.actor_id is not None:
            return direct_gateway_url(config, self._query.actor_id)
        return query_gateway_url(config, self._query)

    def connect(self, params: Any = None, *, get_params: GetParams | None = None) -> ActorConn:
        """Open a stateful connection to the actor (WebSocket ``/connect``).

        Returns at once; inside a running event loop the connection starts connecting
        immediately (else on first use). Use it as an async context manager, or call
        ``await conn.dispose()`` when done::

            async with handle.connect() as conn:
                conn.on("newCount", print)
                await conn.increment(1)

        Args:
            params: connection params (JSON); ``None`` uses the handle's ``params``. They reach
                the actor's ``on_before_connect``/``create_conn_state`` and ``c.conn.params``.
            get_params: called (and awaited if it returns an awaitable) before every connection
                attempt, including reconnects; its result replaces ``params``. If it raises, the
                attempt fails with ``client.get_params_failed`` and is retried.

        Raises:
            TypeError: ``params`` cannot be serialized as JSON.
        """
        return ActorConn(self, self._params if params is None else params, get_params)

    async def fetch(
        self,
        path: str = "",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> ActorResponse:
        """Send a raw HTTP request to the actor's ``on_request`` handler.

        The request goes to ``{gateway}/request/{path}`` (``path`` may start with ``/`` and carry
        a ``?query``); the handle's params travel in ``x-rivet-conn-params``. The whole answer
        is read before this returns, over the network and in-process alike (the official stack
        does not stream ``onRequest`` responses either), so a streamed answer (server-sent
        events) is returned once the handler ends it.

        Args:
            path: path below the handler, e.g. ``"/hello?x=1"``.
            method: HTTP method.
            headers: request headers.
            body: request body (``str`` is sent as UTF-8).

        Returns:
            An :class:`ActorResponse` with ``status``, ``reason``, ``headers``, ``ok``,
            ``content`` and ``await read()``/``text()``/``json()``. Non-2xx answers are returned,
            not raised (``get``/``get_or_create`` handles first retry gateway answers saying the
            actor is missing or starting, like actions).

        Raises:
            ActorError: ``client.network_error`` if the server could not be reached.
        """
        return await fetch(self, path, method=method, headers=headers, body=body)

    async def websocket(
        self, path: str = "", *, protocols: Sequence[str] | None = None
    ) -> WebSocket:
        """Open a raw WebSocket to the actor's ``on_websocket`` handler.

        Connects to ``{gateway}/websocket/{path}`` offering the subprotocols ``rivet``,
        ``rivet_encoding.bare``, ``rivet_conn_params.…`` (when the handle has params) and then
        ``protocols``. Frames are passed through unchanged.

        Returns:
            The open connection: a ``websockets.asyncio.client.ClientConnection`` over the
            network, an object with the same ``send``, ``recv``, ``async for``, ``close``,
            ``wait_closed``, ``subprotocol``, ``close_code`` and ``close_reason`` in-process
            (raising the same ``websockets.exceptions.ConnectionClosed``); close it when done.

        Raises:
            ActorError: the upgrade was refused (the server's error) or the server could not be
                reached (``client.network_error``).
        """
        return await open_websocket(self, path, protocols)

    async def resolve(self) -> str:
        """The actor id; ``get`` looks the actor up (``GET /actors``), ``get_or_create``
        gets or creates it (``PUT /actors``). The id is cached on the handle.

        Raises:
            ActorError: ``actor.not_found`` for a ``get`` handle whose actor does not exist.
        """
        query = self._query
        if query.actor_id is not None:
            return query.actor_id
        client = self._client
        if query.method == "get":
            actor_id = await self._lookup()
        else:
            config = await client._ready()
            data = await client._api("PUT", "/actors", json_body=get_or_create_body(config, query))
            try:
                actor_id = actor_id_from_response(data)
            except ValueError as exc:
                raise ActorError("client", "invalid_response", f"PUT /actors: {exc}") from None
        self._actor_id = actor_id
        return actor_id

    async def _lookup(self) -> str:
        query = self._query
        params = [("name", query.name), ("key", serialize_key(list(query.key)))]
        try:
            data = await self._client._api("GET", "/actors", query=params)
        except ActorError as err:
            if err.group == "actor" and err.code == "not_found":
                data = {}
            else:
                raise
        actors = data.get("actors") if isinstance(data, dict) else None
        for actor in actors if isinstance(actors, list) else ():
            if isinstance(actor, dict) and actor.get("name") == query.name:
                actor_id = actor.get("actor_id")
                if isinstance(actor_id, str) and actor_id:
                    return actor_id
        raise ActorError(
            "actor",
            "not_found",
            f"Actor {query.name!r} with key {list(query.key)!r} was not found.",
            status=404,
        )

    async def action(self, name: str, *args: Any) -> Any:
        """Call action ``name`` with ``args`` over HTTP and return its output.

        Arguments and output are Python values: ``None``, ``bool``, ``int``, ``float``, ``str``,
        ``bytes``, lists, dicts with ``str`` keys and :class:`~rivetkit.BigInt` (plus
        dataclasses, msgspec and pydantic models on the way in).

        Retries as the official client: ``get``/``get_or_create`` handles retry while the actor
        is missing, starting or stopping (24 / 60 attempts ~100 ms apart), and every handle
        retries ``actor.restarting`` and transient gateway errors up to 5 times.

        Raises:
            ActorError: the error the actor or server answered (``user.*`` for ``UserError``,
                ``actor.action_not_found``, ``rivetkit.internal_error``...), or a ``client.*``
                error (see the module documentation).
            TypeError: if an argument cannot be serialized.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"action name must be a non-empty string, got {name!r}")
        body = self._client._codec.encode_action_request(args)
        return await self._post_with_retries(name, "/action/" + encode_uri_component(name), body)

    async def send(
        self, name: str, body: Any = None, *, wait: bool = False, timeout: float | None = None
    ) -> QueueSendResult | None:
        """Send ``body`` to the actor's queue ``name`` (``POST /queue/{name}``).

        Without ``wait`` this returns ``None`` once the message is durably stored. With
        ``wait=True`` it returns when the consumer calls ``message.complete(response)``
        (``QueueSendResult("completed", response)``) or after ``timeout`` seconds
        (``QueueSendResult("timedOut")``); the actor may sleep and wake meanwhile.

        Raises:
            ActorError: ``queue.full``, ``queue.message_too_large``, ``queue.not_declared``,
                ``auth.forbidden`` (``can_publish`` refused) and the errors of :meth:`action`.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"queue name must be a non-empty string, got {name!r}")
        if timeout is not None and (isinstance(timeout, bool) or timeout < 0):
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        codec = self._client._codec
        request = HttpQueueSendRequest(
            body, name, wait, None if timeout is None else int(round(timeout * 1000))
        )
        data = codec.encode_queue_send_request(request)
        response = await self._post_with_retries(
            name,
            "/queue/" + encode_uri_component(name),
            data,
            codec.decode_queue_send_response,
        )
        if not wait:
            return None
        return QueueSendResult(
            response.status, None if response.response is MISSING else response.response
        )

    async def _post_with_retries(
        self,
        name: str,
        path: str,
        body: bytes,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Any:
        client = self._client
        attempt = 0
        while True:
            try:
                return await self._send_action(name, path, body, decode)
            except ActorError as err:
                attempt += 1
                if (
                    name == "destroy"
                    or attempt >= _REQUEST_MAX_ATTEMPTS
                    or not is_request_retryable(err.group, err.code)
                ):
                    raise
                delay = retry_backoff(attempt - 1, *client._request_retry_delay)
                client_logger.debug("retrying action %s after %s in %.3f s", name, err, delay)
                await asyncio.sleep(delay)

    async def _send_action(
        self, name: str, path: str, body: bytes, decode: Callable[[bytes], Any] | None = None
    ) -> Any:
        """One action, with the lifecycle retries of ``get``/``get_or_create`` handles."""
        client = self._client
        query = self._query
        max_attempts = lifecycle_max_attempts(query)
        attempt = 0
        while True:
            attempt += 1
            config = await client._ready()
            direct_id = self._actor_id
            if direct_id is not None:
                url = direct_gateway_url(config, direct_id, path)
            else:
                url = query_gateway_url(config, query, path)
            try:
                return await client._post_action(config, url, body, self._params_header, decode)
            except ActorError as err:
                group, code = err.group, err.code
                if not query.is_dynamic:
                    if group == "actor" and code == "destroyed_while_waiting_for_ready":
                        raise ActorError(
                            "actor",
                            "not_found",
                            "The actor does not exist or was destroyed.",
                            err.metadata,
                            actor=err.actor,
                            status=err.status,
                        ) from err
                    raise
                if attempt >= max_attempts:
                    raise
                if is_scheduling_error(group, code):
                    if direct_id is not None:
                        await self._raise_scheduling_error(err, direct_id)
                elif name == "destroy" or not is_lifecycle_retryable(group, code):
                    if direct_id is not None and is_stale_actor_error(group, code):
                        self._actor_id = None  # stale id: go back to the query form at once
                        continue
                    raise
                self._actor_id = None
                client_logger.debug(
                    "actor %s %s not ready (%s), retry %d/%d",
                    query.name,
                    list(query.key),
                    err.full_code,
                    attempt,
                    max_attempts - 1,
                )
                await asyncio.sleep(client._retry_delay)

    async def _raise_scheduling_error(self, err: ActorError, actor_id: str) -> None:
        """If the actor record carries a scheduling ``error``, raise it instead of retrying."""
        try:
            data = await self._client._api("GET", "/actors", query=[("actor_ids", actor_id)])
        except ActorError as lookup_error:
            client_logger.warning("scheduling error check failed: %s", lookup_error)
            return
        actors = data.get("actors") if isinstance(data, dict) else None
        for actor in actors if isinstance(actors, list) else ():
            if (
                isinstance(actor, dict)
                and actor.get("actor_id") == actor_id
                and actor.get("name") == self._query.name
                and actor.get("error")
            ):
                raise ActorError(
                    err.group,
                    err.code,
                    f"Actor failed to start: {actor['error']!r}",
                    {"actorId": actor_id, "error": actor["error"]},
                    actor=err.actor,
                    status=err.status,
                ) from err
