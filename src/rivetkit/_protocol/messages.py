"""Client protocol v4 messages as frozen dataclasses (spec §6.4).

These are encoding-independent: every value field (``args``, ``output``, ``metadata``,
``body``, ``response``) holds a *Python* value (see :mod:`rivetkit._protocol.values`), never
CBOR bytes or compat tags. :mod:`rivetkit._protocol.encoding` turns them into JSON, CBOR or
BARE and back.

WebSocket server → client: :class:`Init`, :class:`Error`, :class:`ActionResponse`,
:class:`Event`. WebSocket client → server: :class:`ActionRequest`,
:class:`SubscriptionRequest`. HTTP: :class:`HttpQueueSendRequest`,
:class:`HttpQueueSendResponse`, :class:`HttpResponseError` (action bodies are just the args
list / output value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias, final

__all__ = [
    "MISSING",
    "ActionRequest",
    "ActionResponse",
    "ActorSpecifier",
    "Error",
    "Event",
    "HttpQueueSendRequest",
    "HttpQueueSendResponse",
    "HttpResponseError",
    "Init",
    "Missing",
    "SubscriptionRequest",
    "ToClient",
    "ToServer",
    "normalize_args",
]


@final
class Missing:
    """Type of :data:`MISSING`: a field that is absent on the wire (not ``null``)."""

    __slots__ = ()
    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()
"""Marks an optional field that is absent, as opposed to present with value ``None``."""


@dataclass(frozen=True, slots=True)
class ActorSpecifier:
    """Which actor produced an error (v4+).

    Attributes:
        actor_id: the actor id.
        generation: the actor's generation counter.
        key: the serialized actor key (§3.3), or ``None`` when unknown.
    """

    actor_id: str
    generation: int
    key: str | None = None


# MARK: WebSocket server -> client


@dataclass(frozen=True, slots=True)
class Init:
    """First frame on a connection: the resolved actor id and the new connection id."""

    actor_id: str
    connection_id: str


@dataclass(frozen=True, slots=True)
class Error:
    """An error frame.

    Attributes:
        group: error family, e.g. ``"user"``.
        code: code within the family.
        message: human readable message.
        metadata: optional public details (a Python value); ``None`` means absent.
        action_id: the failed action's id, or ``None`` for a connection-level error.
        actor: the actor that raised it, if known.
    """

    group: str
    code: str
    message: str
    metadata: Any = None
    action_id: int | None = None
    actor: ActorSpecifier | None = None


@dataclass(frozen=True, slots=True)
class ActionResponse:
    """Successful result of the action with id ``id``."""

    id: int
    output: Any


@dataclass(frozen=True, slots=True)
class Event:
    """A broadcast or per-connection event; ``args`` are the listener's arguments."""

    name: str
    args: list[Any]


# MARK: WebSocket client -> server


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """Call action ``name`` with ``args``; ``id`` is a per-connection counter."""

    id: int
    name: str
    args: list[Any]


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    """Start (``subscribe=True``) or stop receiving ``event_name`` events."""

    event_name: str
    subscribe: bool


# MARK: HTTP


@dataclass(frozen=True, slots=True)
class HttpQueueSendRequest:
    """Body of ``POST /queue/{name}``.

    Attributes:
        body: the message (a Python value).
        name: queue name repeated in the body (the 2.3.19 client always sends it).
        wait: wait for the consumer to complete the message; ``None`` when absent.
        timeout: wait timeout in milliseconds; ``None`` when absent.
    """

    body: Any
    name: str | None = None
    wait: bool | None = None
    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class HttpQueueSendResponse:
    """Answer to a queue send.

    Attributes:
        status: ``"completed"`` or ``"timedOut"``.
        response: the consumer's completion value, or :data:`MISSING` when there is none.
    """

    status: str
    response: Any = MISSING


@dataclass(frozen=True, slots=True)
class HttpResponseError:
    """The error envelope of a failed HTTP request (§2.3).

    Attributes:
        group: error family.
        code: code within the family.
        message: human readable message.
        metadata: optional public details; ``None`` means absent.
        actor: the actor that raised it, if known.
    """

    group: str
    code: str
    message: str
    metadata: Any = None
    actor: ActorSpecifier | None = None


ToClient: TypeAlias = Init | Error | ActionResponse | Event
"""Any WebSocket message the server sends."""

ToServer: TypeAlias = ActionRequest | SubscriptionRequest
"""Any WebSocket message the client sends."""


def normalize_args(value: Any) -> list[Any]:
    """Action/event args as a list, with the official server's leniency (§7).

    An array is used as is, ``null`` or a missing field is ``[]``, and any other value
    (including an object) becomes a one-element list, like the reference implementation.
    """
    if type(value) is list:
        return value
    if value is None:
        return []
    return [value]
