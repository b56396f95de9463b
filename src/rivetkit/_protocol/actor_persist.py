"""Legacy actor-persist values: what RivetKit <= 2.2 kept in the engine's raw actor KV.

Only the one-time import of such actors into SQLite reads these (spec ``engine-envoy.md``
§10.2, :mod:`rivetkit.drivers.engine.legacy_import`); new data never takes this form.

Every value is *versioned* (vbare): a ``u16`` little-endian schema version, then the BARE body of
that version (``schemas/actor_persist_v{1,2,4}.bare``, generated codecs in ``_generated``). The
decoders here read any version a legacy writer produced and upgrade it to the newest layout, as
the official runtime does:

* ``Actor`` (key ``[1]``): v1 and v2 ``PersistedActor`` (their connections and hibernatable
  WebSocket lists are dropped: RivetKit stopped persisting those in v3), v3 and v4 ``Actor``
  (identical layouts); a v4 value that is not valid ``Actor`` bytes is read with the layout of a
  short-lived writer that stored schedule arguments as plain ``data`` (empty = none);
* ``Conn`` (keys ``[2] + id``): v3 and v4 (identical layouts);
* ``QueueMetadata`` / ``QueueMessage``: v4 only;
* the last pushed alarm (key ``[6]``): its own versioning, v1 = ``optional<i64>``.

Decoders raise :class:`LegacyValueError` for anything malformed (unknown version, truncated or
trailing bytes, non-canonical encodings).
"""

from __future__ import annotations

import struct
from typing import Final

from . import DecodeError
from ._generated import actor_persist_v1 as _v1
from ._generated import actor_persist_v2 as _v2
from ._generated import actor_persist_v4 as _v4
from ._generated.actor_persist_v4 import (
    Actor,
    Conn,
    QueueMessage,
    QueueMetadata,
    ScheduleEvent,
    Subscription,
)

__all__ = [
    "CURRENT_VERSION",
    "Actor",
    "Conn",
    "LegacyValueError",
    "QueueMessage",
    "QueueMetadata",
    "ScheduleEvent",
    "Subscription",
    "decode_actor",
    "decode_conn",
    "decode_last_pushed_alarm",
    "decode_queue_message",
    "decode_queue_metadata",
    "encode_actor",
    "encode_conn",
    "encode_last_pushed_alarm",
    "encode_queue_message",
    "encode_queue_metadata",
]

CURRENT_VERSION: Final = 4
_I64_MAX: Final = (1 << 63) - 1
_VERSION = struct.Struct("<H")
_ALARM = struct.Struct("<q")


class LegacyValueError(ValueError):
    """A legacy KV value that cannot be decoded (the message says why)."""


def _split(value: bytes, what: str) -> tuple[int, bytes]:
    if len(value) < 2:
        raise LegacyValueError(f"{what}: {len(value)} bytes, too short for a version prefix")
    (version,) = _VERSION.unpack_from(value)
    return version, value[2:]


def _versioned(version: int, body: bytes) -> bytes:
    return _VERSION.pack(version) + body


# -- Actor -----------------------------------------------------------------------------------


def _from_v1(old: _v1.PersistedActor) -> Actor:
    return Actor(
        input=old.input,
        has_initialized=old.has_initialized,
        state=old.state,
        scheduled_events=[
            ScheduleEvent(
                event_id=event.event_id,
                timestamp=min(event.timestamp, _I64_MAX),
                action=event.kind.action,
                args=event.kind.args,
            )
            for event in old.scheduled_events
        ],
    )


def _from_v2(old: _v2.PersistedActor) -> Actor:
    return Actor(
        input=old.input,
        has_initialized=old.has_initialized,
        state=old.state,
        scheduled_events=[
            ScheduleEvent(
                event_id=event.event_id,
                timestamp=event.timestamp,
                action=event.kind.action,
                args=event.kind.args,
            )
            for event in old.scheduled_events
        ],
    )


def _v4_actor(body: bytes) -> Actor:
    try:
        return _v4.decode_actor(body)
    except DecodeError as current:
        try:
            raw = _v4.decode_raw_args_actor(body)
        except DecodeError:
            raise current from None
    return Actor(
        input=raw.input,
        has_initialized=raw.has_initialized,
        state=raw.state,
        scheduled_events=[
            ScheduleEvent(
                event_id=event.event_id,
                timestamp=event.timestamp,
                action=event.action,
                args=event.args or None,
            )
            for event in raw.scheduled_events
        ],
    )


def decode_actor(value: bytes) -> Actor:
    """The persisted actor of key ``[1]`` (any version 1..4), upgraded to the v4 layout."""
    version, body = _split(value, "persisted actor")
    try:
        if version == 1:
            return _from_v1(_v1.decode_persisted_actor(body))
        if version == 2:
            return _from_v2(_v2.decode_persisted_actor(body))
        if version == 3:
            return _v4.decode_actor(body)
        if version == 4:
            return _v4_actor(body)
    except DecodeError as exc:
        raise LegacyValueError(f"persisted actor (version {version}): {exc}") from None
    raise LegacyValueError(f"persisted actor: unknown version {version} (known: 1 to 4)")


def encode_actor(actor: Actor, version: int = CURRENT_VERSION) -> bytes:
    """``actor`` as a legacy writer stored it (version 3 or 4; tests)."""
    if version not in (3, 4):
        raise ValueError(f"can only encode versions 3 and 4, not {version}")
    return _versioned(version, _v4.encode_actor(actor))


# -- Conn, queue -----------------------------------------------------------------------------


def decode_conn(value: bytes) -> Conn:
    """A hibernatable connection of keys ``[2] + id`` (version 3 or 4)."""
    version, body = _split(value, "persisted connection")
    if version not in (3, 4):
        raise LegacyValueError(f"persisted connection: unknown version {version} (known: 3, 4)")
    try:
        return _v4.decode_conn(body)
    except DecodeError as exc:
        raise LegacyValueError(f"persisted connection (version {version}): {exc}") from None


def encode_conn(conn: Conn, version: int = CURRENT_VERSION) -> bytes:
    if version not in (3, 4):
        raise ValueError(f"can only encode versions 3 and 4, not {version}")
    return _versioned(version, _v4.encode_conn(conn))


def decode_queue_metadata(value: bytes) -> QueueMetadata:
    """The queue metadata of key ``[5, 1, 1]`` (version 4 only)."""
    version, body = _split(value, "queue metadata")
    if version != 4:
        raise LegacyValueError(f"queue metadata: unknown version {version} (known: 4)")
    try:
        return _v4.decode_queue_metadata(body)
    except DecodeError as exc:
        raise LegacyValueError(f"queue metadata: {exc}") from None


def encode_queue_metadata(metadata: QueueMetadata) -> bytes:
    return _versioned(4, _v4.encode_queue_metadata(metadata))


def decode_queue_message(value: bytes) -> QueueMessage:
    """A queue message of keys ``[5, 1, 2] + u64 BE id`` (version 4 only)."""
    version, body = _split(value, "queue message")
    if version != 4:
        raise LegacyValueError(f"queue message: unknown version {version} (known: 4)")
    try:
        return _v4.decode_queue_message(body)
    except DecodeError as exc:
        raise LegacyValueError(f"queue message: {exc}") from None


def encode_queue_message(message: QueueMessage) -> bytes:
    return _versioned(4, _v4.encode_queue_message(message))


# -- last pushed alarm -----------------------------------------------------------------------


def decode_last_pushed_alarm(value: bytes) -> int | None:
    """The last alarm the actor pushed to the engine (key ``[6]``, version 1: optional i64)."""
    version, body = _split(value, "last pushed alarm")
    if version != 1:
        raise LegacyValueError(f"last pushed alarm: unknown version {version} (known: 1)")
    if body == b"\x00":
        return None
    if len(body) == 1 + _ALARM.size and body[0] == 1:
        return int(_ALARM.unpack_from(body, 1)[0])
    raise LegacyValueError(f"last pushed alarm: malformed body {body.hex()}")


def encode_last_pushed_alarm(alarm_ms: int | None) -> bytes:
    body = b"\x00" if alarm_ms is None else b"\x01" + _ALARM.pack(alarm_ms)
    return _versioned(1, body)
