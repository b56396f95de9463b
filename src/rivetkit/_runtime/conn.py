"""Connections: a caller of an actor, with its params and per-connection state.

HTTP actions get a transient connection that lives for one request; WebSocket connections
(``/connect``) live as long as the socket and carry event subscriptions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .instance import ActorInstance

__all__ = ["Conn"]


class Conn:
    """A connection to an actor, seen from actor code as ``c.conn`` and in ``c.conns``.

    Attributes:
        id: opaque connection id (UUID v4 string).
        params: the connection params the client sent (``x-rivet-conn-params`` or the
            ``rivet_conn_params`` subprotocol), decoded from JSON; ``None`` when absent.
        state: the per-connection state from ``create_conn_state`` or ``conn_state=``.
    """

    __slots__ = ("id", "params", "state", "subscriptions", "_actor", "_sender", "is_transient")

    def __init__(
        self,
        actor: ActorInstance,
        params: Any,
        *,
        sender: Callable[[str, list[Any]], None] | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.params = params
        self.state: Any = None
        self.subscriptions: set[str] = set()
        self._actor = actor
        self._sender = sender
        self.is_transient = sender is None

    def send(self, name: str, *args: Any) -> None:
        """Send event ``name`` with ``args`` to this connection only.

        On a transient (HTTP action) connection there is no socket to deliver to and the event
        is dropped, as in RivetKit.
        """
        self._actor.check_event_name(name)
        if self._sender is not None:
            self._sender(name, list(args))

    def __repr__(self) -> str:
        return f"<Conn {self.id} params={self.params!r}>"
