"""The envoy protocol v6 on the wire, v8 dataclasses in memory.

Engines before v8 speak envoy protocol v6 at most (rivet-engine 2.3.19 accepts 2..8 and
converts). A runtime configured with ``EngineConfig(protocol_version=6)`` connects with
``protocol_version=6`` and uses the functions of this module instead of
:mod:`rivetkit._protocol.envoy`'s; everything else keeps using the v8 types only (protocol
versions are immutable: v8's encoding is never touched, v6 is added and converted).

* :func:`encode_to_rivet`: a v8 :data:`~rivetkit._protocol.envoy.ToRivet` -> a v6 frame;
* :func:`decode_to_envoy`: a v6 frame -> a v8 :data:`~rivetkit._protocol.envoy.ToEnvoy`;
* :func:`decode_to_rivet`/:func:`encode_to_envoy`: the engine's directions (tests, tools).

The schema is ``schemas/envoy_v6.bare`` (the official ``v6.bare`` of ``rivet-dev/rivet``, wire
for wire); its generated codec :mod:`rivetkit._protocol._generated.envoy_v6` is the reference
the tests check this module against.

How the conversion works: v6 is v8 minus additions (spec ``engine-envoy.md``, "v6 -> v8
differences"), and every type both versions share has the same encoding (the tests compare the
two parsed schemas). So a frame is converted at the byte level around the generated v8 codec:
the top-level union tag is renumbered and, for tunnel messages (whose 10-byte ``MessageId`` is
followed by the kind's tag), the kind's tag is renumbered and the few fields v6 lacks are
inserted or cut. No v6 object is built; the cost over v8 is a dictionary lookup and at most one
copy of the frame. Decoding stays as strict as the generated codecs (the spliced frame is
decoded by the strict v8 decoder, and every splice is checked to consume the v6 frame exactly).

Each v6 -> v8 difference and what happens to it:

``ToRivet`` (runtime -> engine):

* v8 tags 0-8 (metadata, events, command acks, stopping, pong, KV, tunnel, GetPages, Commit):
  same tags and bytes in v6 (tunnel kinds: see below).
* ``ToRivetSqliteExec/Execute/ExecuteBatchRequest``: v8 tags 12-14 are v6 tags 9-11.
* ``ToRivetSqliteCommitStageBegin/Segment/FinalizeRequest`` (staged commits of large SQLite
  transactions): v6 has no such messages and no way to make several commits atomic, so
  encoding them raises ``RivetError("envoy", "unsupported_in_protocol_v6")``. The SQLite store
  only stages commits of more than ``MAX_COMMIT_DIRTY_PAGES`` (320) pages; under v6 such a
  commit fails with this error and the actor stops with ``Stopped{ERROR}`` (its last durable
  state is the previous commit). Splitting it into plain commits is not done: a crash between
  them would leave a torn database.
* ``ToRivetResponseAbort{reason}`` is ``void`` in v6: the reason (diagnostics only) is dropped.
* ``ToRivetRequestBodyWindowUpdate`` and ``ToRivetRequestBodyCancel`` (v8 request-body flow
  control): v6 has none; the v6-era client neither returned credit nor cancelled a body, so
  nothing is sent: :func:`encode_to_rivet` returns ``b""`` (never a valid frame) and the
  envoy connection skips it. The per-request index sequence then has a gap; the v6-era gateways
  do not validate the indexes a runtime sends (``pegboard-gateway2``).
* tunnel kinds ``WebSocketOpen/Message/MessageAck/Close``: v8 kind tags 5-8 are v6 tags 3-6.

``ToEnvoy`` (engine -> runtime):

* v6 tags 0-7 are the same; v6 tags 8-10 (Exec/Execute/ExecuteBatch responses) are v8 tags
  11-13. A v6 tag above 10 (or a v6 tunnel kind above 5) is a ``DecodeError`` naming v6, like
  any malformed frame: never another exception.
* ``ToEnvoyRequestStart`` has no ``actorGeneration`` (decoded as ``None``: "the actor's live
  generation", what 2.3.19's default gateway sends too) and no ``responseStream`` (decoded as
  ``False``: the runtime answers with one whole ``ToRivetResponseStart``, never a stream, as it
  does whenever the gateway does not offer streaming).
* ``ToEnvoyWebSocketOpen`` has no ``actorGeneration``: ``None``.
* ``ToEnvoyRequestAbort`` is ``void``: decoded as ``ToEnvoyRequestAbort(actor_id=None,
  actor_generation=None, reason=HttpStreamAbortReason(UNKNOWN, None))``.
* v8's ``ToEnvoyRequestBodyCancel``, ``ToEnvoyResponseBodyWindowUpdate`` and the staged-commit
  responses cannot come from a v6 engine. :func:`encode_to_envoy` refuses them, and any v8 field
  v6 cannot carry (an ``actorGeneration``, ``responseStream=True``), with the coded error;
  abort reasons are dropped as in the other direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ..errors import RivetError
from . import DecodeError
from . import envoy as p

__all__ = [
    "PROTOCOL_VERSION",
    "UNSUPPORTED_CODE",
    "decode_to_envoy",
    "decode_to_rivet",
    "encode_to_envoy",
    "encode_to_rivet",
]

PROTOCOL_VERSION: Final = 6
"""The ``protocol_version`` query parameter of a v6 connection."""

UNSUPPORTED_CODE: Final = "unsupported_in_protocol_v6"
"""Code (group ``envoy``) of the error for v8 messages protocol v6 cannot express."""

_TAG: Final = tuple(bytes((i,)) for i in range(128))  # one-byte union tags
_TUNNEL: Final = 6  # ToRivetTunnelMessage's tag (the same in v6 and v8)
_ENVOY_TUNNEL: Final = 4  # ToEnvoyTunnelMessage's tag (the same in v6 and v8)
_KIND_AT: Final = 11  # frame[0] = union tag, frame[1:11] = MessageId (data[4], data[4], u16)
_NO_ABORT_REASON: Final = b"\x00\x00"  # HttpStreamAbortReason{UNKNOWN, detail: None}
_NO_ABORT_DETAILS: Final = b"\x00\x00" + _NO_ABORT_REASON  # actorId, actorGeneration: None


def unsupported(what: str) -> RivetError:
    """The error for a v8 message or field protocol v6 cannot express."""
    return RivetError(
        "envoy",
        UNSUPPORTED_CODE,
        f"{what} cannot be expressed in envoy protocol v6 (the engine connection was "
        "configured with protocol_version=6; use 8 with an engine that supports it)",
        public=False,
    )


# -- runtime -> engine -----------------------------------------------------------------------


def _retag(new_tag: int) -> Callable[[p.ToRivet], bytes]:
    def encode(message: p.ToRivet) -> bytes:
        frame = p.encode_to_rivet(message)
        return _TAG[new_tag] + frame[1:]

    return encode


def _refuse(message: p.ToRivet) -> bytes:
    raise unsupported(type(message).__name__)


def _not_sent(message: p.ToRivet) -> bytes:
    return b""


def _tunnel_kind_retag(new_kind: int) -> Callable[[bytes], bytes]:
    def convert(frame: bytes) -> bytes:
        return frame[:_KIND_AT] + _TAG[new_kind] + frame[_KIND_AT + 1 :]

    return convert


def _same(frame: bytes) -> bytes:
    return frame


_TO_RIVET_KINDS: Final[dict[type, Callable[[bytes], bytes] | None]] = {
    p.ToRivetResponseStart: _same,
    p.ToRivetResponseChunk: _same,
    p.ToRivetResponseAbort: lambda frame: frame[: _KIND_AT + 1],  # v6: void, no reason
    p.ToRivetRequestBodyWindowUpdate: None,  # v6: no flow control, nothing sent
    p.ToRivetRequestBodyCancel: None,
    p.ToRivetWebSocketOpen: _tunnel_kind_retag(3),
    p.ToRivetWebSocketMessage: _tunnel_kind_retag(4),
    p.ToRivetWebSocketMessageAck: _tunnel_kind_retag(5),
    p.ToRivetWebSocketClose: _tunnel_kind_retag(6),
}


def _encode_tunnel(message: p.ToRivet) -> bytes:
    assert isinstance(message, p.ToRivetTunnelMessage)
    convert = _TO_RIVET_KINDS.get(type(message.message_kind), _same)
    if convert is None:
        return b""
    return convert(p.encode_to_rivet(message))


_TO_RIVET: Final[dict[type, Callable[[p.ToRivet], bytes]]] = {
    p.ToRivetTunnelMessage: _encode_tunnel,
    p.ToRivetSqliteCommitStageBeginRequest: _refuse,
    p.ToRivetSqliteCommitStageSegmentRequest: _refuse,
    p.ToRivetSqliteCommitFinalizeRequest: _refuse,
    p.ToRivetSqliteExecRequest: _retag(9),
    p.ToRivetSqliteExecuteRequest: _retag(10),
    p.ToRivetSqliteExecuteBatchRequest: _retag(11),
}  # every other member has the same tag and bytes in v6


def encode_to_rivet(message: p.ToRivet) -> bytes:
    """Encode a v8 ``ToRivet`` as a v6 frame; ``b""`` when v6 sends nothing for it.

    Raises:
        RivetError: ``envoy.unsupported_in_protocol_v6`` for a staged-commit message.
        TypeError, ValueError: what the v8 encoder raises for a value that fits no schema.
    """
    return _TO_RIVET.get(type(message), p.encode_to_rivet)(message)


def _uvarint_end(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Value and end of the LEB128 varint at ``pos`` (canonical form is checked by v8)."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError(f"BARE {what} (protocol v6): truncated or oversized varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _str_end(data: bytes, pos: int, what: str) -> int:
    """End of the ``str`` starting at ``pos``."""
    length, pos = _uvarint_end(data, pos, what)
    end = pos + length
    if end > len(data):
        raise DecodeError(f"BARE {what} (protocol v6): truncated message ({len(data)} bytes)")
    return end


def _kind_of(data: bytes, what: str) -> int:
    if len(data) <= _KIND_AT:
        raise DecodeError(f"BARE {what} (protocol v6): truncated message ({len(data)} bytes)")
    return data[_KIND_AT]


def _void_kind(data: bytes, what: str) -> None:
    if len(data) != _KIND_AT + 1:
        raise DecodeError(
            f"BARE {what} (protocol v6): {len(data) - _KIND_AT - 1} trailing bytes after a "
            "void tunnel message"
        )


def decode_to_rivet(data: bytes | bytearray | memoryview) -> p.ToRivet:
    """Decode a v6 ``ToRivet`` frame (the engine's side) into the v8 dataclasses.

    Raises:
        DecodeError: on anything malformed, including tags v6 does not have.
    """
    buf = data if type(data) is bytes else bytes(data)
    if not buf:
        raise DecodeError("BARE ToRivet (protocol v6): empty message")
    tag = buf[0]
    if tag == _TUNNEL:
        kind = _kind_of(buf, "ToRivet")
        if kind == 2:  # ResponseAbort: void in v6
            _void_kind(buf, "ToRivet")
            buf = buf + _NO_ABORT_REASON
        elif 3 <= kind <= 6:  # WebSocket kinds
            buf = buf[:_KIND_AT] + _TAG[kind + 2] + buf[_KIND_AT + 1 :]
        elif kind > 6:
            raise DecodeError(f"unknown ToRivetTunnelMessageKind union tag {kind} (protocol v6)")
    elif tag >= 9:
        if tag > 11:
            raise DecodeError(f"unknown ToRivet union tag {tag} (protocol v6)")
        buf = _TAG[tag + 3] + buf[1:]
    return p.decode_to_rivet(buf)


# -- engine -> runtime -----------------------------------------------------------------------


def _decode_tunnel(buf: bytes) -> bytes:
    """A v6 ``ToEnvoyTunnelMessage`` frame as the equivalent v8 frame."""
    kind = _kind_of(buf, "ToEnvoy")
    if kind == 0:  # RequestStart: + actorGeneration (None) after actorId, + responseStream
        end = _str_end(buf, _KIND_AT + 1, "ToEnvoy")
        return buf[:end] + b"\x00" + buf[end:] + b"\x00"
    if kind == 1:  # RequestChunk
        return buf
    if kind == 2:  # RequestAbort: void in v6
        _void_kind(buf, "ToEnvoy")
        return buf + _NO_ABORT_DETAILS
    if kind == 3:  # WebSocketOpen: + actorGeneration (None) after actorId
        end = _str_end(buf, _KIND_AT + 1, "ToEnvoy")
        return buf[:_KIND_AT] + _TAG[5] + buf[_KIND_AT + 1 : end] + b"\x00" + buf[end:]
    if kind in (4, 5):  # WebSocketMessage, WebSocketClose
        return buf[:_KIND_AT] + _TAG[kind + 2] + buf[_KIND_AT + 1 :]
    raise DecodeError(f"unknown ToEnvoyTunnelMessageKind union tag {kind} (protocol v6)")


def decode_to_envoy(data: bytes | bytearray | memoryview) -> p.ToEnvoy:
    """Decode a v6 ``ToEnvoy`` frame into the v8 dataclasses.

    Raises:
        DecodeError: on anything malformed, including tags v6 does not have.
    """
    buf = data if type(data) is bytes else bytes(data)
    if not buf:
        raise DecodeError("BARE ToEnvoy (protocol v6): empty message")
    tag = buf[0]
    if tag == _ENVOY_TUNNEL:
        buf = _decode_tunnel(buf)
    elif tag >= 8:
        if tag > 10:
            raise DecodeError(f"unknown ToEnvoy union tag {tag} (protocol v6)")
        buf = _TAG[tag + 3] + buf[1:]
    return p.decode_to_envoy(buf)


def _encode_envoy_tunnel(message: p.ToEnvoy) -> bytes:
    assert isinstance(message, p.ToEnvoyTunnelMessage)
    kind = message.message_kind
    if isinstance(kind, p.ToEnvoyRequestStart | p.ToEnvoyWebSocketOpen):
        if kind.actor_generation is not None:
            raise unsupported(f"{type(kind).__name__}.actorGeneration")
        if isinstance(kind, p.ToEnvoyRequestStart) and kind.response_stream:
            raise unsupported("ToEnvoyRequestStart.responseStream")
    elif isinstance(kind, p.ToEnvoyRequestBodyCancel | p.ToEnvoyResponseBodyWindowUpdate):
        raise unsupported(type(kind).__name__)
    frame = p.encode_to_envoy(message)
    v8_kind = frame[_KIND_AT]
    if v8_kind == 0:  # RequestStart: cut actorGeneration (one 0 byte) and responseStream
        end = _str_end(frame, _KIND_AT + 1, "ToEnvoy")
        return frame[:end] + frame[end + 1 : -1]
    if v8_kind == 2:  # RequestAbort: void in v6
        return frame[: _KIND_AT + 1]
    if v8_kind == 5:  # WebSocketOpen: cut actorGeneration
        end = _str_end(frame, _KIND_AT + 1, "ToEnvoy")
        return frame[:_KIND_AT] + _TAG[3] + frame[_KIND_AT + 1 : end] + frame[end + 1 :]
    if v8_kind in (6, 7):  # WebSocketMessage, WebSocketClose
        return frame[:_KIND_AT] + _TAG[v8_kind - 2] + frame[_KIND_AT + 1 :]
    return frame  # RequestChunk


def _retag_envoy(new_tag: int) -> Callable[[p.ToEnvoy], bytes]:
    def encode(message: p.ToEnvoy) -> bytes:
        return _TAG[new_tag] + p.encode_to_envoy(message)[1:]

    return encode


def _refuse_envoy(message: p.ToEnvoy) -> bytes:
    raise unsupported(type(message).__name__)


_TO_ENVOY: Final[dict[type, Callable[[p.ToEnvoy], bytes]]] = {
    p.ToEnvoyTunnelMessage: _encode_envoy_tunnel,
    p.ToEnvoySqliteCommitStageBeginResponse: _refuse_envoy,
    p.ToEnvoySqliteCommitStageSegmentResponse: _refuse_envoy,
    p.ToEnvoySqliteCommitFinalizeResponse: _refuse_envoy,
    p.ToEnvoySqliteExecResponse: _retag_envoy(8),
    p.ToEnvoySqliteExecuteResponse: _retag_envoy(9),
    p.ToEnvoySqliteExecuteBatchResponse: _retag_envoy(10),
}


def encode_to_envoy(message: p.ToEnvoy) -> bytes:
    """Encode a v8 ``ToEnvoy`` as a v6 frame (the engine's side).

    Raises:
        RivetError: ``envoy.unsupported_in_protocol_v6`` for what v6 cannot carry.
    """
    return _TO_ENVOY.get(type(message), p.encode_to_envoy)(message)
