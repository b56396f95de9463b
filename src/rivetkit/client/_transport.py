"""The I/O seam of the client: one HTTP exchange and one WebSocket, nothing else.

Everything above this module (URLs, headers, retries, error envelopes, the connection state
machine) is written once; only the two operations below differ between a client that talks to a
server over the network and one that calls an ASGI application in its own event loop:

* :meth:`Transport.request` sends one HTTP request and yields an :class:`HttpResponse` whose body
  can be read whole or chunk by chunk as it arrives;
* :meth:`Transport.connect` opens a WebSocket and returns a :class:`WebSocket`, the subset of
  ``websockets.asyncio.client.ClientConnection`` the client (and the user of
  ``handle.websocket()``) relies on.

Failures are reported the same way by both implementations, so the code paths above cannot tell
them apart: an HTTP request that cannot be completed raises ``ActorError("client",
"network_error")``; a WebSocket upgrade that fails raises what ``websockets`` raises
(``InvalidStatus`` for a refused upgrade, ``OSError``/``TimeoutError`` for an unreachable server),
and a closed connection raises ``websockets.exceptions.ConnectionClosed``.

:class:`NetworkTransport` is aiohttp + ``websockets``; the in-process one is
:class:`._asgi.AsgiTransport`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from websockets.asyncio.client import ClientConnection, connect
from websockets.http11 import Response
from websockets.typing import Subprotocol
from yarl import URL

from ..errors import ActorError

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

__all__ = [
    "HttpResponse",
    "NetworkTransport",
    "Transport",
    "WebSocket",
    "abort_websocket",
    "network_error",
]


class HttpResponse(Protocol):
    """The answer to one HTTP request, valid inside the ``async with`` that produced it."""

    @property
    def status(self) -> int:
        """HTTP status code."""
        ...

    @property
    def reason(self) -> str:
        """HTTP reason phrase (``""`` when unknown)."""
        ...

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """Response headers (case-insensitive, repeated headers kept)."""
        ...

    async def read(self) -> bytes:
        """The whole body (waits for its end)."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as it arrives."""
        ...


class WebSocket(Protocol):
    """An open client WebSocket (the part of ``websockets``' ``ClientConnection`` we use).

    ``recv()`` and iteration raise ``websockets.exceptions.ConnectionClosed`` (``…OK`` after a
    normal closure, ``…Error`` otherwise) once the connection is closed and the messages
    received before the close were consumed; ``send()`` raises it on a closed connection.
    """

    @property
    def subprotocol(self) -> Subprotocol | None:
        """The subprotocol the server selected."""
        ...

    @property
    def response(self) -> Response | None:
        """The server's answer to the upgrade (status, headers)."""
        ...

    @property
    def close_code(self) -> int | None:
        """The close code received (``1006`` after an abnormal closure), ``None`` while open."""
        ...

    @property
    def close_reason(self) -> str | None:
        """The close reason received, ``None`` while open."""
        ...

    async def send(self, message: str | bytes) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        ...

    async def recv(self) -> str | bytes:
        """The next message."""
        ...

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        """Iterate over messages until the connection closes."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Perform the closing handshake."""
        ...

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        ...


class Transport(Protocol):
    """Where the client's requests and WebSockets go."""

    def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> AbstractAsyncContextManager[HttpResponse]:
        """Send one request; the response is usable inside the ``async with`` block.

        Raises:
            ActorError: ``client.network_error`` if the request could not be sent or the answer
                could not be read completely.
            TimeoutError: a socket timeout of the network implementation.
        """
        ...

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
        """Open a WebSocket to ``url`` (``ws://``/``wss://``).

        Raises:
            websockets.exceptions.InvalidHandshake: the upgrade was refused (``InvalidStatus``
                carries the HTTP answer) or is invalid.
            OSError: the server could not be reached.
            TimeoutError: the opening handshake took longer than ``open_timeout`` seconds.
        """
        ...

    async def aclose(self) -> None:
        """Release the transport's resources. Idempotent."""
        ...


def network_error(method: str, url: str, exc: BaseException) -> ActorError:
    """``client.network_error`` for a request to ``url`` that failed with ``exc``."""
    scheme, _, rest = url.partition("://")
    origin = f"{scheme}://{rest.split('/', 1)[0]}"
    error = ActorError(
        "client",
        "network_error",
        f"{method} request to {origin} failed: {type(exc).__name__}: {exc}",
    )
    error.__cause__ = exc
    return error


def abort_websocket(ws: WebSocket) -> None:
    """Drop ``ws`` at once, without a closing handshake (used when a reader is cancelled)."""
    if isinstance(ws, ClientConnection):
        ws.transport.abort()
    else:
        abort = getattr(ws, "abort", None)
        if abort is not None:
            abort()


# -------------------------------------------------------------------------------------------------
# over the network: aiohttp and websockets

_DEFAULT_CLOSE_TIMEOUT: Final = 10.0  # websockets' own default


class _AiohttpResponse:
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def reason(self) -> str:
        return self._response.reason or ""

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(CIMultiDict(self._response.headers))

    async def read(self) -> bytes:
        return await self._response.read()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk


class NetworkTransport:
    """HTTP with one keep-alive ``aiohttp.ClientSession`` (created on first use, inside the
    running loop), WebSockets with ``websockets.asyncio.client.connect``."""

    def __init__(self, user_agent: str) -> None:
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": self._user_agent})
        return self._session

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> AsyncIterator[HttpResponse]:
        session = self._get_session()
        try:
            async with session.request(
                method, URL(url, encoded=True), headers=headers, data=body
            ) as response:
                yield _AiohttpResponse(response)
        except TimeoutError:
            raise
        except aiohttp.ClientError as exc:
            raise network_error(method, url, exc) from exc

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
        return await connect(
            url,
            subprotocols=[Subprotocol(p) for p in subprotocols],
            additional_headers=dict(headers),
            user_agent_header=user_agent,
            proxy=None,
            open_timeout=open_timeout,
            close_timeout=_DEFAULT_CLOSE_TIMEOUT if close_timeout is None else close_timeout,
            max_size=max_size,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
