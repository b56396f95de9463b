"""Connections: a caller of an actor, with its params and per-connection state.

HTTP actions and raw requests get a transient connection that lives for one request; WebSocket
connections (``/connect``) live as long as the socket and carry event subscriptions. A connection
with a socket delivers events through a :class:`ConnSocket`, implemented by the server, which
owns the frame encoding and the ordered outgoing queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .ids import random_uuid

if TYPE_CHECKING:
    from .instance import ActorInstance

__all__ = [
    "HIBERNATE_REASON", "MESSAGE_INDEX_KEY", "TUNNEL_EXTENSION", "Conn", "ConnSocket",
    "Hibernation",
]

TUNNEL_EXTENSION = "rivet.tunnel"
"""ASGI scope extension the engine tunnel sets on requests it carries: ``gateway_id``,
``request_id``, ``path``, ``headers``, ``hibernatable``, ``send_now`` (the ASGI ``send`` of a
WebSocket as a plain function: it never waits); for a hibernatable socket ``ack`` (call
it with a message's index once the message is taken: cumulative, what is not acknowledged is sent
again after the actor's next wake) and, for a connection restored after a sleep, ``restore`` (its
id)."""

MESSAGE_INDEX_KEY = "rivet.message_index"
"""Key of a tunnelled ``websocket.receive`` event carrying the gateway's message index."""

HIBERNATE_REASON = "actor.hibernating"
"""Close reason of a socket whose actor goes to sleep while the engine's gateway keeps the client
connected (engine mode): the tunnel sends nothing to the gateway for it."""


@dataclass(slots=True)
class Hibernation:
    """What makes a connection restorable after its actor slept (engine mode): the tunnelled
    request it arrived on and how far each side's messages got (spec engine-envoy §6.7.4)."""

    gateway_id: bytes
    request_id: bytes
    request_path: str
    request_headers: dict[str, str]
    server_message_index: int = 0  # last gateway message index handled
    client_message_index: int = 0


class ConnSocket(Protocol):
    """The server side of a connection's socket, as the runtime sees it."""

    encoding: str

    def encode_event(self, name: str, args: list[Any]) -> bytes | str:
        """The ``Event`` frame for this socket's encoding."""

    def push(self, frame: bytes | str) -> None:
        """Queue a frame; frames leave in the order they were pushed."""

    def close(self, code: int, reason: str) -> None:
        """Close the socket after the frames already queued."""


class Conn:
    """A connection to an actor, seen from actor code as ``c.conn`` and in ``c.conns``.

    Attributes:
        id: opaque connection id (UUID v4 string).
        params: the connection params the client sent (``x-rivet-conn-params`` or the
            ``rivet_conn_params`` subprotocol), decoded from JSON; ``None`` when absent.
        state: the per-connection state from ``create_conn_state`` or ``conn_state=``.
        subscriptions: names of the events this connection receives.
    """

    __slots__ = (
        "id", "params", "state", "subscriptions", "_actor", "socket", "closed", "hibernation",
        "hibernating", "stored",
    )

    def __init__(
        self,
        actor: ActorInstance,
        params: Any,
        socket: ConnSocket | None = None,
        *,
        conn_id: str | None = None,
    ) -> None:
        self.id = conn_id or random_uuid()
        self.params = params
        self.state: Any = None
        self.subscriptions: set[str] = set()
        self._actor = actor
        self.socket = socket
        self.closed = False
        self.hibernation: Hibernation | None = None  # engine mode: restorable after a sleep
        self.hibernating = False  # left open for the gateway while the actor sleeps
        # Engine mode: (state, subscriptions) as the actor's database holds them, or None
        # before the connection's rows were written (see hibernation.py).
        self.stored: tuple[bytes, bytes] | None = None

    @property
    def is_transient(self) -> bool:
        """True for the one-request connection of an HTTP action or raw request."""
        return self.socket is None

    def send(self, name: str, *args: Any) -> None:
        """Send event ``name`` with ``args`` to this connection only.

        A transient (HTTP) connection has no socket to deliver to: the event is dropped, as in
        RivetKit.
        """
        self._actor.check_event_name(name)
        socket = self.socket
        if socket is None or self.closed:
            return
        frame = socket.encode_event(name, list(args))
        self._actor.check_outgoing(frame)
        socket.push(frame)

    def disconnect(self, reason: str | None = None) -> None:
        """Close this connection from the actor side (WebSocket close 1000 with ``reason``)."""
        socket = self.socket
        if socket is not None and not self.closed:
            socket.close(1000, reason or "")

    def __repr__(self) -> str:
        kind = "transient" if self.socket is None else "socket"
        return f"<Conn {self.id} {kind} params={self.params!r}>"
