"""Raw requests and WebSockets to an actor's ``on_request``/``on_websocket`` handlers (spec §9).

``handle.fetch(path)`` sends ``{gateway}/request/{path}`` through the client's transport and
buffers the answer in an :class:`ActorResponse`; ``handle.websocket(path)`` opens
``{gateway}/websocket/{path}`` and returns the open connection (``websockets`` over the network,
an in-process WebSocket with the same API for ``Client(app=...)``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict, CIMultiDictProxy
from websockets.exceptions import InvalidHandshake
from websockets.typing import Subprotocol

from .._log import client_logger
from ._conn import MAX_FRAME_SIZE, handshake_error
from ._conn_protocol import actor_path, conn_subprotocols, gateway_target_url, ws_scheme
from ._protocol import (
    error_from_response,
    is_lifecycle_retryable,
    is_stale_actor_error,
    lifecycle_max_attempts,
)
from ._transport import WebSocket

if TYPE_CHECKING:
    from ._aio import ActorHandle

__all__ = ["ActorResponse", "fetch", "open_websocket", "websocket_target"]


class ActorResponse:
    """The answer of :meth:`rivetkit.client.ActorHandle.fetch`, body already read.

    Attributes:
        status: HTTP status code.
        reason: HTTP reason phrase.
        headers: response headers (case-insensitive, repeated headers kept).
        url: the URL that was requested.
        content: the body.
    """

    __slots__ = ("content", "headers", "reason", "status", "url")

    def __init__(
        self, status: int, reason: str, headers: CIMultiDictProxy[str], url: str, content: bytes
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.url = url
        self.content = content

    def __repr__(self) -> str:
        return f"<ActorResponse {self.status} {self.reason!r} {len(self.content)} bytes>"

    @property
    def ok(self) -> bool:
        """``True`` for a 2xx status."""
        return 200 <= self.status < 300

    def _charset(self) -> str:
        content_type = self.headers.get("Content-Type", "")
        for part in content_type.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                return value.strip('"')
        return "utf-8"

    async def read(self) -> bytes:
        """The body as bytes."""
        return self.content

    async def text(self, encoding: str | None = None) -> str:
        """The body decoded with ``encoding``, the ``charset`` of ``Content-Type`` or UTF-8."""
        return self.content.decode(encoding or self._charset())

    async def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: the body is not JSON.
        """
        return json.loads(self.content)


def _request_headers(
    handle: ActorHandle, token: str | None, headers: Mapping[str, str] | None
) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict(handle._client._config.headers)
    for name, value in (headers or {}).items():
        out[name] = value
    if handle._params_header is not None:
        out["x-rivet-conn-params"] = handle._params_header
    if token is not None:
        out["x-rivet-token"] = token
    return out


async def fetch(
    handle: ActorHandle,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
) -> ActorResponse:
    """Send one request to the actor's ``on_request`` handler (see ``ActorHandle.fetch``)."""
    client = handle._client
    query = handle._query
    data = body.encode() if isinstance(body, str) else body
    target = actor_path("/request", path)
    max_attempts = lifecycle_max_attempts(query)
    attempt = 0
    while True:
        attempt += 1
        config = await client._ready()
        url = gateway_target_url(config, query, handle._actor_id, target)
        request_headers = _request_headers(handle, config.token, headers)
        transport = client._bind_loop()
        async with transport.request(method, url, request_headers, data) as response:
            content = await response.read()
            result = ActorResponse(response.status, response.reason, response.headers, url, content)
        if result.ok or not query.is_dynamic:
            return result
        # get/get_or_create handles retry answers that say the actor is missing or starting
        # (error envelopes only: a handler's own 404 is returned as it is).
        content_type = result.headers.get("Content-Type") or ""
        if "application/json" not in content_type:
            return result
        error = error_from_response(result.status, content_type, content, "json")
        if handle._actor_id is not None and is_stale_actor_error(error.group, error.code):
            handle._actor_id = None
            continue
        if attempt >= max_attempts or not is_lifecycle_retryable(error.group, error.code):
            return result
        client_logger.debug("actor %s not ready for fetch (%s), retrying", query.name, error)
        await asyncio.sleep(client._retry_delay)


async def websocket_target(
    handle: ActorHandle, path: str, protocols: Sequence[str] | None
) -> tuple[str, list[Subprotocol], dict[str, str]]:
    """``(url, subprotocols, headers)`` of a raw WebSocket to ``path`` (spec §9.2)."""
    config = await handle._client._ready()
    url = ws_scheme(
        gateway_target_url(config, handle._query, handle._actor_id, actor_path("/websocket", path))
    )
    offered = conn_subprotocols("bare", handle._params_header)
    offered += [p for p in protocols or () if p not in offered]
    return url, [Subprotocol(p) for p in offered], dict(config.headers)


async def open_websocket(
    handle: ActorHandle, path: str, protocols: Sequence[str] | None
) -> WebSocket:
    """Open a raw WebSocket to the actor's ``on_websocket`` handler (see
    ``ActorHandle.websocket``)."""
    client = handle._client
    url, subprotocols, headers = await websocket_target(handle, path, protocols)
    transport = client._bind_loop()
    try:
        return await transport.connect(
            url,
            subprotocols=subprotocols,
            headers=headers,
            user_agent=client._user_agent,
            open_timeout=client._open_timeout,
            close_timeout=None,
            max_size=MAX_FRAME_SIZE,
        )
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        error, _ = handshake_error(exc, url, dynamic=handle._query.is_dynamic)
        raise error from exc
