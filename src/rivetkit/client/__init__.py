"""The Python client of RivetKit actors: async first, with a blocking twin in
:mod:`rivetkit.client.sync` that has the same names.

Example::

    from rivetkit.client import Client

    async with Client("http://127.0.0.1:6420") as client:
        counter = client.get_or_create("counter", ["my-counter"])
        print(await counter.increment(1))

Connections (``handle.connect()``) add WebSocket actions, events and reconnection::

    async with counter.connect() as conn:
        conn.on("newCount", lambda count: print("count is", count))
        await conn.increment(1)

In the process that hosts the registry, ``Client(app=registry.asgi())`` calls the ASGI app
directly in the same event loop (no socket), with the same behaviour::

    async with Client(app=registry.asgi()) as client:
        await client.get_or_create("counter", ["a"]).increment(1)

Layering: :mod:`._protocol` is sans-I/O (configuration, URLs, ``rvt-*`` parameters, error
decoding, retry rules) and so is :mod:`._conn_protocol` (the connection state machine: action
ids, subscriptions, queued actions, status, reconnect decisions); :mod:`._aio` performs the
requests, :mod:`._conn` drives connections, :mod:`._raw` does raw ``fetch``/``websocket``, all
through one transport seam (:mod:`._transport`: aiohttp and ``websockets`` over the network,
or :mod:`._asgi` in-process); :mod:`.sync` drives all of them from a private event loop in a
background thread.
"""

from __future__ import annotations

from .._protocol.encoding import Encoding as Encoding
from ..errors import ActorError as ActorError
from ._aio import ActorHandle as ActorHandle
from ._aio import Client as Client
from ._conn import ActorConn as ActorConn
from ._conn import EventStream as EventStream
from ._conn_protocol import ConnStatus as ConnStatus
from ._protocol import QueueSendResult as QueueSendResult
from ._raw import ActorResponse as ActorResponse
from ._transport import WebSocket as WebSocket

__all__ = [
    "ActorConn",
    "ActorError",
    "ActorHandle",
    "ActorResponse",
    "Client",
    "ConnStatus",
    "Encoding",
    "EventStream",
    "QueueSendResult",
    "WebSocket",
]
