"""Sans-I/O state machine of an actor connection (``/connect``, spec §8).

:class:`ConnProtocol` owns everything about a connection that does not need a socket or an event
loop: the action id counter, the actions waiting for an answer, the per-event listener counts and
the subscription frames they imply, the queue of actions made while not connected, the status,
and the decision what to do after a failed or closed socket (retry after a delay, or give up).
The I/O layer (:mod:`._conn`) feeds it what happened (``begin_attempt``, ``handshake_failed``,
``socket_opened``, ``receive``, ``socket_closed``) and what the user asked for (``call``,
``add_listener``, ``remove_listener``, ``dispose``), then sends :meth:`ConnProtocol.take_frames`
on the socket and acts on :meth:`ConnProtocol.take_outputs`.

Reconnection follows the official client (spec §8.7):

* status ``idle → connecting → connected``; an attempt that fails in a retryable way goes to
  ``disconnected`` while it waits for the next attempt, which goes back to ``connecting``;
* once ``connected``, any close of the socket is unexpected: status ``disconnected``, the actions
  sent on that socket are rejected (the server may or may not have run them), the first reconnect
  attempt starts at once and later ones back off ``250 ms × 2ⁿ`` capped at 30 s, without jitter;
  connections that keep closing before any frame follows their ``Init`` (a refused subscription,
  say) back off the same way instead of reconnecting at once (the official client loops hot
  there), and a close with a structured, non-transient reason is also reported as an error;
* before ``Init`` a failure is only retried when it is transient (see :func:`is_retryable`);
  anything else is fatal: status ``idle``, every waiting action is rejected with the error and no
  further attempt is made;
* actions made while not connected are queued and sent, in call order, right after the next
  ``Init`` and after the subscriptions have been re-sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeAlias
from urllib.parse import quote

from .._log import client_logger
from .._protocol import DecodeError, get_codec
from .._protocol.encoding import Codec, Encoding
from .._protocol.messages import (
    ActionRequest,
    ActionResponse,
    ActorSpecifier,
    Error,
    Event,
    Init,
    SubscriptionRequest,
)
from ..errors import ActorError
from ._protocol import (
    _REQUEST_RETRY_GUARD_CODES,
    ActorQuery,
    ClientConfig,
    direct_gateway_url,
    is_lifecycle_retryable,
    is_scheduling_error,
    query_gateway_url,
    retry_backoff,
)

__all__ = [
    "DEFAULT_BACKOFF",
    "ActionRejected",
    "ActionResolved",
    "Closed",
    "ConnProtocol",
    "ConnStatus",
    "Decision",
    "ErrorRaised",
    "EventReceived",
    "GiveUp",
    "Opened",
    "Output",
    "Reconnect",
    "StatusChanged",
    "actor_path",
    "close_error",
    "conn_subprotocols",
    "disposed_error",
    "gateway_target_url",
    "handshake_status_retryable",
    "is_retryable",
    "params_json",
    "parse_close_reason",
    "ws_scheme",
]

DEFAULT_BACKOFF: Final = (0.25, 30.0)
"""Initial and maximum delay between reconnect attempts, in seconds (the official p-retry)."""


class ConnStatus(StrEnum):
    """Status of an :class:`~rivetkit.client.ActorConn` (compares equal to the plain strings)."""

    IDLE = "idle"
    """Not started, disposed, or given up after a fatal error."""
    CONNECTING = "connecting"
    """An attempt is under way (socket opening or waiting for ``Init``)."""
    CONNECTED = "connected"
    """``Init`` received: actions and subscriptions go out at once."""
    DISCONNECTED = "disconnected"
    """The connection was lost or an attempt failed; the next attempt is scheduled."""


# -- outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionResolved:
    """The action ``action_id`` returned ``output``."""

    action_id: int
    output: Any


@dataclass(frozen=True, slots=True)
class ActionRejected:
    """The action ``action_id`` failed with ``error``."""

    action_id: int
    error: ActorError


@dataclass(frozen=True, slots=True)
class EventReceived:
    """An event for a name that has listeners."""

    name: str
    args: list[Any]


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The status went from ``old`` to ``new``."""

    old: ConnStatus
    new: ConnStatus


@dataclass(frozen=True, slots=True)
class Opened:
    """``Init`` arrived: the connection is usable."""

    actor_id: str
    connection_id: str


@dataclass(frozen=True, slots=True)
class Closed:
    """A socket that had received ``Init`` closed (``code`` 1006 when no close frame came)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ErrorRaised:
    """A connection-level error: ``Error`` frame without ``actionId``, or a fatal failure."""

    error: ActorError


Output: TypeAlias = (
    ActionResolved | ActionRejected | EventReceived | StatusChanged | Opened | Closed | ErrorRaised
)


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Start the next attempt after ``delay`` seconds; ``error`` says why the last one ended."""

    delay: float
    error: ActorError


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Fatal: the connection is ``idle`` and will not retry."""

    error: ActorError


Decision: TypeAlias = Reconnect | GiveUp


# -- classification -------------------------------------------------------------------------------

# Close reasons are ``group.code`` optionally followed by ``#rayId`` (spec §8.6).
_REASON_RE: Final = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_.-]+?)(?:#.*)?$")
# A legacy transport message the official client still treats as "the actor restarted".
_LEGACY_STOPPED_RE: Final = re.compile(r"^Actor [A-Za-z0-9-]+ stopped$")

# Retried before ``Init`` for every handle (lifecycle boundaries, spec §8.7).
_RECONNECT_CODES: Final = frozenset(
    {
        ("ws", "going_away"),
        ("actor", "restarting"),
        ("actor", "stopped"),
        ("client", "get_params_failed"),
        ("client", "network_error"),
        ("client", "connection_lost"),
    }
    | {("guard", code) for code in _REQUEST_RETRY_GUARD_CODES}
)

# Close codes meaning "the server (or the path to it) went away", retried whatever the reason
# text: 1001 going away, 1006 no close frame (process killed, network cut), 1012 service restart,
# 1013 try again later. A 1011 with an unstructured reason is fatal, like the official client.
_TRANSIENT_CLOSE_CODES: Final = frozenset({1001, 1006, 1012, 1013})

# HTTP statuses of a refused upgrade that are retried whatever the body says.
_TRANSIENT_HTTP_STATUSES: Final = frozenset({408, 429, 502, 503, 504})


def is_retryable(group: str, code: str, *, dynamic: bool) -> bool:
    """Whether a failure before ``Init`` is retried.

    Args:
        group: error group.
        code: error code.
        dynamic: ``True`` for ``get``/``get_or_create`` handles, which also retry a missing,
            starting, stopping or destroyed actor (the gateway re-resolves or re-creates it) and
            the gateway's scheduling timeouts.
    """
    if (group, code) in _RECONNECT_CODES:
        return True
    return dynamic and (is_lifecycle_retryable(group, code) or is_scheduling_error(group, code))


def parse_close_reason(reason: str) -> tuple[str, str] | None:
    """``("group", "code")`` of a structured close reason ``group.code[#rayId]``, else ``None``."""
    match = _REASON_RE.match(reason)
    if match is None:
        return None
    return match.group(1), match.group(2)


def close_error(code: int, reason: str) -> ActorError:
    """The error a close frame stands for.

    A structured reason gives that group and code; anything else gives
    ``client.connection_lost``. ``metadata`` carries ``{"closeCode", "closeReason"}``.
    """
    metadata = {"closeCode": code, "closeReason": reason}
    parsed = parse_close_reason(reason)
    if parsed is not None:
        return ActorError(
            parsed[0],
            parsed[1],
            f"The connection was closed by the server (code {code}, reason {reason!r}).",
            metadata,
        )
    detail = f"code {code}, reason {reason!r}" if reason else f"code {code}"
    return ActorError(
        "client", "connection_lost", f"The connection was closed ({detail}).", metadata
    )


def _close_retryable(code: int, reason: str, *, dynamic: bool) -> bool:
    parsed = parse_close_reason(reason)
    if parsed is not None:
        return is_retryable(parsed[0], parsed[1], dynamic=dynamic)
    return code in _TRANSIENT_CLOSE_CODES or bool(_LEGACY_STOPPED_RE.match(reason))


def handshake_status_retryable(status: int, error: ActorError | None, *, dynamic: bool) -> bool:
    """Whether an upgrade refused with HTTP ``status`` is retried.

    ``error`` is the decoded error envelope of the body, if it had one. 408, 429, 502, 503 and 504
    are transient whatever the body; otherwise the envelope's code decides (so ``403
    user.forbidden`` or ``401 ...`` is fatal).
    """
    if status in _TRANSIENT_HTTP_STATUSES:
        return True
    return error is not None and is_retryable(error.group, error.code, dynamic=dynamic)


def disposed_error() -> ActorError:
    """``client.disposed``: the connection was disposed before the action completed."""
    return ActorError("client", "disposed", "The connection was disposed.")


def _actor_dict(actor: ActorSpecifier | None) -> dict[str, Any] | None:
    if actor is None:
        return None
    out: dict[str, Any] = {"actorId": actor.actor_id, "generation": actor.generation}
    if actor.key is not None:
        out["key"] = actor.key
    return out


def _frame_error(frame: Error) -> ActorError:
    return ActorError(
        frame.group, frame.code, frame.message, frame.metadata, actor=_actor_dict(frame.actor)
    )


# -- the state machine ----------------------------------------------------------------------------


class ConnProtocol:
    """State of one actor connection across all its sockets.

    Args:
        encoding: wire encoding of the frames.
        dynamic: ``True`` for ``get``/``get_or_create`` handles (see :func:`is_retryable`).
        backoff: initial and maximum delay between failed attempts, in seconds.

    Frames to send are collected in order and taken with :meth:`take_frames`; things the I/O
    layer must act on (resolve a future, call listeners...) with :meth:`take_outputs`.
    """

    def __init__(
        self,
        encoding: Encoding,
        *,
        dynamic: bool,
        backoff: tuple[float, float] = DEFAULT_BACKOFF,
    ) -> None:
        self._codec: Codec = get_codec(encoding)
        self.dynamic = dynamic
        self.backoff = backoff
        self.status = ConnStatus.IDLE
        self.actor_id: str | None = None
        self.connection_id: str | None = None
        self.fatal_error: ActorError | None = None
        """The error that made the connection give up, if it did."""
        self.disposed = False
        self._next_id = 0
        self._in_flight: dict[int, str] = {}  # sent on the current socket: id -> action name
        self._queued: dict[int, tuple[str, bytes | str]] = {}  # not sent yet: id -> (name, frame)
        self._listeners: dict[str, int] = {}
        self._frames: list[bytes | str] = []
        self._outputs: list[Output] = []
        self._failures = 0  # consecutive failed attempts since the last Init
        self._flaps = 0  # consecutive connections closed before any frame followed their Init
        self._healthy = False  # the current socket received a frame after Init
        self._attempt_open = False  # an attempt is under way and has not concluded
        self._initialized = False  # the current socket received Init

    # -- inspection -----------------------------------------------------------------------------

    @property
    def next_action_id(self) -> int:
        """The id the next :meth:`call` will use."""
        return self._next_id

    @property
    def in_flight(self) -> list[int]:
        """Ids of actions sent on the current socket and not answered yet."""
        return list(self._in_flight)

    @property
    def queued(self) -> list[int]:
        """Ids of actions waiting for the next ``Init``, in call order."""
        return list(self._queued)

    @property
    def subscriptions(self) -> list[str]:
        """Event names that have at least one listener."""
        return list(self._listeners)

    def listener_count(self, name: str) -> int:
        return self._listeners.get(name, 0)

    def take_frames(self) -> list[bytes | str]:
        """Frames to send, in order (JSON frames are ``str``: send them as text)."""
        frames, self._frames = self._frames, []
        return frames

    def take_outputs(self) -> list[Output]:
        """What happened since the last call, in order."""
        outputs, self._outputs = self._outputs, []
        return outputs

    # -- user side ------------------------------------------------------------------------------

    def call(self, name: str, args: Sequence[Any]) -> int:
        """Register action ``name(*args)`` and return its id.

        The frame is encoded now (so a value that cannot be serialized fails here) and sent at
        once when connected, else queued until the next ``Init``.

        Raises:
            ActorError: the connection is disposed (``client.disposed``) or gave up (the fatal
                error).
            TypeError: an argument cannot be serialized.
        """
        self._check_usable()
        action_id = self._next_id
        frame = self._codec.encode_to_server(ActionRequest(action_id, name, list(args)))
        self._next_id += 1
        if self.status is ConnStatus.CONNECTED:
            self._in_flight[action_id] = name
            self._frames.append(frame)
        else:
            self._queued[action_id] = (name, frame)
        return action_id

    def cancel(self, action_id: int) -> None:
        """Forget an action whose caller stopped waiting: a queued one is never sent, an answer
        to a sent one is ignored."""
        self._queued.pop(action_id, None)
        self._in_flight.pop(action_id, None)

    def add_listener(self, name: str) -> None:
        """One more listener for event ``name``; the first one subscribes (when connected; the
        subscription is sent after every ``Init`` anyway)."""
        count = self._listeners.get(name, 0)
        self._listeners[name] = count + 1
        if count == 0 and self.status is ConnStatus.CONNECTED:
            self._frames.append(self._codec.encode_to_server(SubscriptionRequest(name, True)))

    def remove_listener(self, name: str) -> None:
        """One listener fewer for ``name``; removing the last one unsubscribes (when connected).
        Removing a listener of a name without listeners does nothing."""
        count = self._listeners.get(name, 0)
        if count <= 0:
            return
        if count > 1:
            self._listeners[name] = count - 1
            return
        del self._listeners[name]
        if self.status is ConnStatus.CONNECTED:
            self._frames.append(self._codec.encode_to_server(SubscriptionRequest(name, False)))

    def dispose(self) -> None:
        """Stop for good: status ``idle``, every waiting action rejected with
        ``client.disposed``. Idempotent."""
        if self.disposed:
            return
        self.disposed = True
        self._attempt_open = False
        self._frames.clear()
        self._reject_all(disposed_error())
        self._set_status(ConnStatus.IDLE)

    # -- socket side ----------------------------------------------------------------------------

    def begin_attempt(self) -> None:
        """A connection attempt starts (before resolving params and opening the socket)."""
        self._check_usable()
        self._attempt_open = True
        self._initialized = False
        self._set_status(ConnStatus.CONNECTING)

    def handshake_failed(self, error: ActorError, *, transient: bool) -> Decision | None:
        """The socket could not be opened (or the params could not be computed).

        Args:
            error: what went wrong.
            transient: the I/O layer knows it is transient (server unreachable, 503...); if not,
                :func:`is_retryable` decides from the error's code.

        Returns:
            What to do next, or ``None`` when the connection is disposed.
        """
        if not self._attempt_open:
            return None
        retry = transient or is_retryable(error.group, error.code, dynamic=self.dynamic)
        return self._conclude_failed_attempt(error, retry=retry)

    def socket_opened(self) -> None:
        """The upgrade succeeded; nothing is sent until ``Init`` arrives."""
        self._initialized = False

    def receive(self, data: bytes | str) -> Decision | None:
        """Handle one frame from the server.

        Returns:
            A decision when the frame ended the attempt (an ``Error`` without ``actionId``
            before ``Init``): the I/O layer then closes the socket and acts on it. ``None``
            otherwise.
        """
        if self.disposed or not self._attempt_open:
            return None
        try:
            message = self._codec.decode_to_client(data)
        except DecodeError as exc:
            client_logger.warning("ignoring an undecodable frame from the server: %s", exc)
            return None
        if type(message) is Init:
            self._on_init(message)
            return None
        if not self._initialized:
            if type(message) is Error and message.action_id is None:
                error = _frame_error(message)
                self._outputs.append(ErrorRaised(error))
                retry = is_retryable(error.group, error.code, dynamic=self.dynamic)
                return self._conclude_failed_attempt(error, retry=retry, notify=False)
            client_logger.warning("ignoring %s received before Init", type(message).__name__)
            return None
        if not self._healthy:
            self._healthy = True
            self._flaps = 0
        if type(message) is ActionResponse:
            if self._in_flight.pop(message.id, None) is None:
                client_logger.debug("ignoring the answer to unknown action id %d", message.id)
            else:
                self._outputs.append(ActionResolved(message.id, message.output))
        elif type(message) is Error:
            error = _frame_error(message)
            if message.action_id is None:
                # Connection-level error after Init: every action in flight fails with it; the
                # server decides whether the socket stays open.
                for action_id in list(self._in_flight):
                    self._outputs.append(ActionRejected(action_id, error))
                self._in_flight.clear()
                self._outputs.append(ErrorRaised(error))
            elif self._in_flight.pop(message.action_id, None) is None:
                client_logger.debug("ignoring the error of unknown action id %d", message.action_id)
            else:
                self._outputs.append(ActionRejected(message.action_id, error))
        elif type(message) is Event and message.name in self._listeners:
            self._outputs.append(EventReceived(message.name, list(message.args)))
        return None

    def socket_closed(self, code: int, reason: str) -> Decision | None:
        """The socket closed (``code`` 1006 when it ended without a close frame).

        Returns:
            What to do next, or ``None`` when the attempt had already concluded (an ``Error``
            frame before ``Init``) or the connection is disposed.
        """
        if not self._attempt_open:
            return None
        error = close_error(code, reason)
        # Frames not written yet die with the socket: their actions fail below, and the
        # subscriptions are sent again after the next Init.
        self._frames.clear()
        if self._initialized:
            # Unexpected close of a working connection: always reconnect, at once, unless
            # connections keep being closed right after Init (e.g. a refused subscription):
            # then back off like failed attempts, so the client never loops hot.
            self._initialized = False
            self._attempt_open = False
            for action_id in list(self._in_flight):
                self._outputs.append(ActionRejected(action_id, error))
            self._in_flight.clear()
            self._outputs.append(Closed(code, reason))
            parsed = parse_close_reason(reason)
            if parsed is not None and not is_retryable(*parsed, dynamic=self.dynamic):
                self._outputs.append(ErrorRaised(error))  # e.g. 1011 "user.forbidden"
            delay = 0.0 if self._flaps == 0 else retry_backoff(self._flaps - 1, *self.backoff)
            if not self._healthy:
                self._flaps += 1
            self._set_status(ConnStatus.DISCONNECTED)
            return Reconnect(delay, error)
        retry = _close_retryable(code, reason, dynamic=self.dynamic)
        return self._conclude_failed_attempt(error, retry=retry)

    # -- internals ------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self.disposed:
            raise disposed_error()
        if self.fatal_error is not None:
            raise self.fatal_error

    def _on_init(self, message: Init) -> None:
        self.actor_id = message.actor_id
        self.connection_id = message.connection_id
        if self._initialized:
            client_logger.warning("second Init on one socket; keeping the connection")
            return
        self._initialized = True
        self._healthy = False
        self._failures = 0
        codec = self._codec
        # Subscriptions first, then the queued actions, in call order (spec §8.2).
        for name in self._listeners:
            self._frames.append(codec.encode_to_server(SubscriptionRequest(name, True)))
        for action_id, (name, frame) in self._queued.items():
            self._frames.append(frame)
            self._in_flight[action_id] = name
        self._queued.clear()
        self._set_status(ConnStatus.CONNECTED)
        self._outputs.append(Opened(message.actor_id, message.connection_id))

    def _conclude_failed_attempt(
        self, error: ActorError, *, retry: bool, notify: bool = True
    ) -> Decision:
        self._attempt_open = False
        self._initialized = False
        if not retry:
            self.fatal_error = error
            self._reject_all(error)
            if notify:
                self._outputs.append(ErrorRaised(error))
            self._set_status(ConnStatus.IDLE)
            return GiveUp(error)
        delay = retry_backoff(self._failures, *self.backoff)
        self._failures += 1
        self._set_status(ConnStatus.DISCONNECTED)
        return Reconnect(delay, error)

    def _reject_all(self, error: ActorError) -> None:
        for action_id in [*self._in_flight, *self._queued]:
            self._outputs.append(ActionRejected(action_id, error))
        self._in_flight.clear()
        self._queued.clear()

    def _set_status(self, status: ConnStatus) -> None:
        old = self.status
        if old is status:
            return
        self.status = status
        self._outputs.append(StatusChanged(old, status))


# -- socket and raw request targets (spec §8.1, §9) -----------------------------------------------

# Characters kept as they are in the path of a raw request/websocket (already-encoded `%XX`
# sequences stay as they are; a space or a non-ASCII character is percent-encoded).
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"


def ws_scheme(url: str) -> str:
    """``http(s)://…`` → ``ws(s)://…``."""
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


def actor_path(prefix: str, path: str) -> str:
    """``/request`` or ``/websocket`` followed by the user's ``path`` (leading ``/`` optional,
    may carry ``?query``): ``actor_path("/request", "/a/b?x=1") == "/request/a/b?x=1"``."""
    rest = path.lstrip("/")
    if rest and not rest.startswith("?"):
        rest = "/" + rest
    target, sep, query = rest.partition("?")
    return prefix + quote(target, safe=_PATH_SAFE) + sep + query


def gateway_target_url(
    config: ClientConfig, query: ActorQuery, actor_id: str | None, path: str
) -> str:
    """The gateway URL of ``path`` (an actor path with an optional ``?query``).

    Direct form ``{ep}/gateway/{id}[@token]{path}`` when ``actor_id`` is known, else the query form
    ``{ep}/gateway/{name}{path}?{user query&}{rvt params}`` (spec §4.2, §9.1).
    """
    target, sep, user_query = path.partition("?")
    if actor_id is not None:
        return direct_gateway_url(config, actor_id, target) + sep + user_query
    base, _, rvt = query_gateway_url(config, query, target).partition("?")
    return f"{base}?{user_query}&{rvt}" if user_query else f"{base}?{rvt}"


def params_json(params: Any) -> str | None:
    """Connection params as compact ASCII JSON (``None`` for no params).

    Raises:
        TypeError: the params are not JSON-serializable.
        ValueError: they contain NaN or infinities.
    """
    if params is None:
        return None
    return json.dumps(params, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def conn_subprotocols(encoding: Encoding, params: str | None) -> list[str]:
    """Subprotocols offered on ``/connect`` and raw websockets, in the official order (§8.1)."""
    offered = ["rivet", f"rivet_encoding.{encoding}"]
    if params is not None:
        offered.append("rivet_conn_params." + quote(params, safe=""))
    return offered
