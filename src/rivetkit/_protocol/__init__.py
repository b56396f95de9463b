"""Sans-I/O codecs of the RivetKit client protocol (spec ``client-protocol.md`` §6-§8).

Layering, bottom up:

* :mod:`.bare`: BARE primitives and the u16 version prefix.
* :mod:`.values`: the Python value model (:class:`BigInt`) and the JSON-compat layer.
* :mod:`.messages`: frozen dataclasses for the v4 messages.
* :mod:`.encoding`: one :class:`Codec` per wire encoding (``json``, ``cbor``, ``bare``) turning
  messages and values into bodies/frames and back, for both the server and the client side.

Nothing here touches sockets or the event loop. Every decode failure raises
:class:`DecodeError`.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """Raised for any payload that cannot be decoded.

    Covers truncated or trailing bytes, unsupported BARE versions, malformed JSON or CBOR,
    messages of the wrong shape, unknown union tags and unknown ``$`` compat tags. The message
    says what was wrong; servers answer it with ``400 core.internal_error`` (HTTP) or close the
    socket with ``1011 actor.invalid_request``.
    """


# Submodules import DecodeError from this package, so it is defined before them.
from rivetkit._protocol.encoding import (  # noqa: E402
    BARE as BARE,
    CBOR as CBOR,
    CONTENT_TYPES as CONTENT_TYPES,
    JSON as JSON,
    Codec as Codec,
    Encoding as Encoding,
    encoding_from_header as encoding_from_header,
    encoding_from_subprotocol as encoding_from_subprotocol,
    get_codec as get_codec,
)
from rivetkit._protocol.messages import (  # noqa: E402
    MISSING as MISSING,
    ActionRequest as ActionRequest,
    ActionResponse as ActionResponse,
    ActorSpecifier as ActorSpecifier,
    Error as Error,
    Event as Event,
    HttpQueueSendRequest as HttpQueueSendRequest,
    HttpQueueSendResponse as HttpQueueSendResponse,
    HttpResponseError as HttpResponseError,
    Init as Init,
    SubscriptionRequest as SubscriptionRequest,
    ToClient as ToClient,
    ToServer as ToServer,
)
from rivetkit._protocol.values import (  # noqa: E402
    BigInt as BigInt,
    from_compat as from_compat,
    to_compat as to_compat,
)

__all__ = [
    "BARE",
    "CBOR",
    "CONTENT_TYPES",
    "JSON",
    "MISSING",
    "ActionRequest",
    "ActionResponse",
    "ActorSpecifier",
    "BigInt",
    "Codec",
    "DecodeError",
    "Encoding",
    "Error",
    "Event",
    "HttpQueueSendRequest",
    "HttpQueueSendResponse",
    "HttpResponseError",
    "Init",
    "SubscriptionRequest",
    "ToClient",
    "ToServer",
    "encoding_from_header",
    "encoding_from_subprotocol",
    "from_compat",
    "get_codec",
    "to_compat",
]
