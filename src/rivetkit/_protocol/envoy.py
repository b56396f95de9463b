"""The envoy protocol v8: messages between an engine-mode runtime and ``rivet-engine``.

One WebSocket per runtime process (``/envoys/connect?protocol_version=8&...``) carries binary
frames, each exactly one BARE value with no version prefix: :data:`ToRivet` from the runtime to
the engine, :data:`ToEnvoy` from the engine to the runtime (spec ``engine-envoy.md`` §4.3, §6).

Everything here is generated from ``schemas/envoy_v8.bare`` by ``tools/bare_codegen.py``
(module :mod:`rivetkit._protocol._generated.envoy_v8`) and re-exported under stable names:

* every schema ``struct`` is a ``@dataclass(slots=True)`` with the schema's type name and
  snake_case fields in schema order (``actorId`` -> ``actor_id``); ``void`` types are empty
  dataclasses (``ToRivetStopping()``); ``enum`` types are :class:`enum.IntEnum`;
* the list types that are union members (``ToRivetEvents``, ``ToEnvoyCommands``) are
  dataclasses with one field, ``items``;
* ``Id``/``Json`` are ``str``, ``GatewayId``/``RequestId`` (``data[4]``) are ``bytes``,
  ``MessageIndex`` is ``int``; ``optional<T>`` is ``T | None``;
* a union is a type alias of its member classes: the encoder picks the tag from the class;
* ``encode_to_rivet``/``decode_to_envoy`` are the runtime's directions, ``encode_to_envoy``/
  ``decode_to_rivet`` the engine's (tests); ``encode_value``/``decode_value`` handle any schema
  class on its own (no union tag).

Decoding is strict and raises :class:`rivetkit._protocol.DecodeError` for anything malformed;
encoding raises ``TypeError``/``ValueError`` for values that do not fit the schema. Nothing here
touches a socket.

Example::

    frame = encode_to_rivet(ToRivetPong(ts=ping.ts))
    msg = decode_to_envoy(frame_from_engine)
    if isinstance(msg, ToEnvoyCommands):
        for wrapper in msg.items: ...
"""

from __future__ import annotations

from typing import Final

from rivetkit._protocol._generated import envoy_v8 as _v8
from rivetkit._protocol._generated.envoy_v8 import *

__all__ = ["PROTOCOL_VERSION"]
__all__ += _v8.__all__  # every schema type and the encode_*/decode_* functions

PROTOCOL_VERSION: Final = 8
"""Envoy protocol version of this codec: the ``protocol_version`` query parameter to send."""
