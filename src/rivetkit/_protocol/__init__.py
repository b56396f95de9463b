"""Sans-I/O codecs of the RivetKit client protocol (spec ``client-protocol.md`` §6-§8).

Layering, bottom up:

* :mod:`.values`: the Python value model (:class:`BigInt`), the JSON-compat layer and JSON.
* :mod:`.cbor`: CBOR of those values (native 8-byte bigints, width-aware decoding).
* :mod:`.messages`: frozen dataclasses for the v4 messages.
* :mod:`.bare`: BARE primitives, the u16 version prefix, and the bare codec.
* :mod:`._codec_base`, :mod:`._cbor_codec`: the json/cbor codec base and the cbor codec.
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
from rivetkit._protocol.encoding import (
    BARE as BARE,
)
from rivetkit._protocol.encoding import (
    CBOR as CBOR,
)
from rivetkit._protocol.encoding import (
    CONTENT_TYPES as CONTENT_TYPES,
)
from rivetkit._protocol.encoding import (
    JSON as JSON,
)
from rivetkit._protocol.encoding import (
    Codec as Codec,
)
from rivetkit._protocol.encoding import (
    Encoding as Encoding,
)
from rivetkit._protocol.encoding import (
    encoding_from_header as encoding_from_header,
)
from rivetkit._protocol.encoding import (
    encoding_from_subprotocol as encoding_from_subprotocol,
)
from rivetkit._protocol.encoding import (
    get_codec as get_codec,
)
from rivetkit._protocol.messages import (
    MISSING as MISSING,
)
from rivetkit._protocol.messages import (
    ActionRequest as ActionRequest,
)
from rivetkit._protocol.messages import (
    ActionResponse as ActionResponse,
)
from rivetkit._protocol.messages import (
    ActorSpecifier as ActorSpecifier,
)
from rivetkit._protocol.messages import (
    Error as Error,
)
from rivetkit._protocol.messages import (
    Event as Event,
)
from rivetkit._protocol.messages import (
    HttpQueueSendRequest as HttpQueueSendRequest,
)
from rivetkit._protocol.messages import (
    HttpQueueSendResponse as HttpQueueSendResponse,
)
from rivetkit._protocol.messages import (
    HttpResponseError as HttpResponseError,
)
from rivetkit._protocol.messages import (
    Init as Init,
)
from rivetkit._protocol.messages import (
    SubscriptionRequest as SubscriptionRequest,
)
from rivetkit._protocol.messages import (
    ToClient as ToClient,
)
from rivetkit._protocol.messages import (
    ToServer as ToServer,
)
from rivetkit._protocol.values import (
    BigInt as BigInt,
)
from rivetkit._protocol.values import (
    from_compat as from_compat,
)
from rivetkit._protocol.values import (
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
