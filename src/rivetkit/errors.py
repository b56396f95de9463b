"""The one error model of rivetkit.

Every error that crosses the wire is a ``RivetError``: a ``group`` and a ``code`` (together the
stable identifier clients match on, e.g. ``actor.not_found``), a human ``message``, optional JSON-like
``metadata`` and a ``public`` flag. Public errors reach clients as they are; anything else is
masked as ``rivetkit.internal_error`` (unless ``RIVET_EXPOSE_ERRORS=1``) and logged in full.

Hierarchy::

    RivetError                      group, code, message, metadata, public, status
    ├── UserError                   raised by actor code; group "user"; always public
    └── ActorError                  raised by the client for any error envelope it receives

Use builtin ``TimeoutError`` for client-side timeouts; server-side timeouts are ``RivetError``
with the codes RivetKit uses (``actor.action_timed_out``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "RivetError",
    "UserError",
    "ActorError",
    "INTERNAL_ERROR_MESSAGE",
]

INTERNAL_ERROR_MESSAGE = "An internal error occurred"


class RivetError(Exception):
    """An error with a stable ``group.code`` identifier.

    Args:
        group: error family, e.g. ``"actor"``, ``"user"``, ``"guard"``.
        code: code within the family, e.g. ``"not_found"``.
        message: human readable explanation.
        metadata: optional JSON-like details sent to clients with public errors.
        public: whether clients may see message and metadata. Non-public errors are masked.
        status: HTTP status used when the error answers an HTTP request.
    """

    group: str
    code: str
    message: str
    metadata: Any
    public: bool
    status: int

    def __init__(
        self,
        group: str,
        code: str,
        message: str,
        *,
        metadata: Any = None,
        public: bool = True,
        status: int = 500,
    ) -> None:
        super().__init__(message)
        self.group = group
        self.code = code
        self.message = message
        self.metadata = metadata
        self.public = public
        self.status = status

    @property
    def full_code(self) -> str:
        """``group.code``, the identifier used in close reasons and ``x-rivet-error``."""
        return f"{self.group}.{self.code}"

    def __str__(self) -> str:
        return f"{self.group}.{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(group={self.group!r}, code={self.code!r}, "
            f"message={self.message!r}, metadata={self.metadata!r})"
        )


class UserError(RivetError):
    """An error raised by actor code that the caller is meant to see.

    The message, code and metadata reach the client unchanged, as RivetKit's ``UserError``.

    Example::

        @counter.action
        def increment(c, amount):
            if amount <= 0:
                raise UserError("amount must be positive", code="bad_amount", metadata={"amount": amount})
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "user_error",
        metadata: Any = None,
    ) -> None:
        if not isinstance(code, str) or not code:
            raise ValueError("UserError code must be a non-empty string")
        super().__init__("user", code, message, metadata=metadata, public=True, status=500)


class ActorError(RivetError):
    """An error envelope received from a server by the client.

    Attributes:
        actor: the ``{"actorId", "generation", "key"}`` specifier the server attached, if any.
    """

    actor: Mapping[str, Any] | None

    def __init__(
        self,
        group: str,
        code: str,
        message: str,
        metadata: Any = None,
        *,
        actor: Mapping[str, Any] | None = None,
        status: int = 0,
    ) -> None:
        super().__init__(group, code, message, metadata=metadata, public=True, status=status)
        self.actor = actor


# Constructors for the errors the server produces. Status codes follow client-protocol §2.4.


class ActorStopping(RivetError):
    """``actor.stopping``: the actor began to sleep or to be destroyed before the request was
    dispatched. The server holds such requests and retries them on the next generation."""

    def __init__(self, actor_id: str) -> None:
        super().__init__(
            "actor",
            "stopping",
            "The actor is stopping.",
            metadata={"actorId": actor_id},
            status=503,
        )


def actor_not_found() -> RivetError:
    return RivetError(
        "actor", "not_found", "The actor does not exist or was destroyed.", status=404
    )


def input_too_large(limit: int) -> RivetError:
    return RivetError(
        "actor",
        "input_too_large",
        f"Input too large (max {limit}).",
        metadata={"max_size": limit},
        status=400,
    )


def key_too_large(message: str, limit: int) -> RivetError:
    return RivetError(
        "actor", "key_too_large", message, metadata={"max_size": limit}, status=400
    )


def route_not_found(path: str) -> RivetError:
    return RivetError(
        "actor",
        "not_found",
        f"Route `{path}` was not found.",
        metadata={"resource": "route", "id": path},
        status=404,
    )


def action_not_found(name: str) -> RivetError:
    return RivetError("actor", "action_not_found", f"Action `{name}` was not found.", status=404)


def action_timed_out(name: str, seconds: float) -> RivetError:
    return RivetError(
        "actor",
        "action_timed_out",
        f"Action `{name}` timed out after {seconds:g} s.",
        status=408,
    )


def method_not_allowed(method: str, path: str) -> RivetError:
    return RivetError(
        "actor",
        "method_not_allowed",
        f"Method {method} is not allowed for {path}.",
        metadata={"method": method, "path": path},
        status=405,
    )


def invalid_request(message: str) -> RivetError:
    """A body, header or frame that could not be decoded (client-protocol §2.4: 400)."""
    return RivetError("actor", "invalid_request", message, status=400)


def incoming_too_long(size: int, limit: int) -> RivetError:
    return RivetError(
        "message",
        "incoming_too_long",
        f"Incoming message of {size} bytes is larger than the limit of {limit} bytes.",
        metadata={"size": size, "limit": limit},
        status=400,
    )


def outgoing_too_long(size: int, limit: int) -> RivetError:
    return RivetError(
        "message",
        "outgoing_too_long",
        f"Outgoing message of {size} bytes is larger than the limit of {limit} bytes.",
        metadata={"size": size, "limit": limit},
        status=400,
    )


def internal_error(message: str = INTERNAL_ERROR_MESSAGE) -> RivetError:
    return RivetError("rivetkit", "internal_error", message, public=False, status=500)


def guard_error(code: str, message: str, *, status: int = 400, metadata: Any = None) -> RivetError:
    """Errors of the gateway layer (``guard.*``), e.g. bad ``rvt-*`` parameters."""
    return RivetError("guard", code, message, metadata=metadata, status=status)
