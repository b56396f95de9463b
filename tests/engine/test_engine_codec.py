"""The envoy v8 codec (rivetkit._protocol.envoy) without an engine.

Round trips of every schema class and every ToRivet/ToEnvoy member (hypothesis strategies
built from the schema text itself, so widths and fixed lengths are exact), wire vectors
written from the spec's byte dumps, the union tag orders of spec §6.1/§6.7, and strictness:
anything malformed raises DecodeError, never another exception.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rivetkit._protocol import DecodeError
from rivetkit._protocol import envoy as ev
from tests.engine.schema_strategies import Strategies

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "src/rivetkit/_protocol/schemas/envoy_v8.bare"

@cache
def _strategies(codegen: ModuleType) -> Strategies:
    return Strategies(codegen, SCHEMA, ev, size=12)


def _schema_classes() -> list[str]:
    """Names of the generated dataclasses and enums (not the aliases such as ``GatewayId``)."""
    return sorted(
        name
        for name in ev.__all__
        if dataclasses.is_dataclass(obj := getattr(ev, name))
        or (isinstance(obj, type) and issubclass(obj, enum.IntEnum))
    )


# Spec §6.1 and §6.7: v8 tag order of the top-level and tunnel unions.
TO_RIVET_TAGS = [
    "ToRivetMetadata", "ToRivetEvents", "ToRivetAckCommands", "ToRivetStopping", "ToRivetPong",
    "ToRivetKvRequest", "ToRivetTunnelMessage", "ToRivetSqliteGetPagesRequest",
    "ToRivetSqliteCommitRequest", "ToRivetSqliteCommitStageBeginRequest",
    "ToRivetSqliteCommitStageSegmentRequest", "ToRivetSqliteCommitFinalizeRequest",
    "ToRivetSqliteExecRequest", "ToRivetSqliteExecuteRequest", "ToRivetSqliteExecuteBatchRequest",
]  # fmt: skip
TO_ENVOY_TAGS = [
    "ToEnvoyInit", "ToEnvoyCommands", "ToEnvoyAckEvents", "ToEnvoyKvResponse",
    "ToEnvoyTunnelMessage", "ToEnvoyPing", "ToEnvoySqliteGetPagesResponse",
    "ToEnvoySqliteCommitResponse", "ToEnvoySqliteCommitStageBeginResponse",
    "ToEnvoySqliteCommitStageSegmentResponse", "ToEnvoySqliteCommitFinalizeResponse",
    "ToEnvoySqliteExecResponse", "ToEnvoySqliteExecuteResponse", "ToEnvoySqliteExecuteBatchResponse",
]  # fmt: skip
TO_ENVOY_TUNNEL_TAGS = [
    "ToEnvoyRequestStart", "ToEnvoyRequestChunk", "ToEnvoyRequestAbort", "ToEnvoyRequestBodyCancel",
    "ToEnvoyResponseBodyWindowUpdate", "ToEnvoyWebSocketOpen", "ToEnvoyWebSocketMessage",
    "ToEnvoyWebSocketClose",
]  # fmt: skip
TO_RIVET_TUNNEL_TAGS = [
    "ToRivetResponseStart", "ToRivetResponseChunk", "ToRivetResponseAbort",
    "ToRivetRequestBodyWindowUpdate", "ToRivetRequestBodyCancel", "ToRivetWebSocketOpen",
    "ToRivetWebSocketMessage", "ToRivetWebSocketMessageAck", "ToRivetWebSocketClose",
]  # fmt: skip

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_public_contract() -> None:
    assert ev.PROTOCOL_VERSION == 8
    for name in ("encode_to_rivet", "decode_to_envoy", "decode_to_rivet", "encode_to_envoy"):
        assert callable(getattr(ev, name)) and name in ev.__all__
    assert int(ev.StopCode.OK) == 0 and int(ev.StopActorReason.SLEEP_INTENT) == 0
    assert int(ev.HttpStreamAbortReasonKind.HANDLER_ERROR) == 2
    assert [f for f in ev.SqliteCommitRequest.__slots__] == [
        "actor_id", "dirty_pages", "db_size_pages", "now_ms", "expected_generation",
        "expected_head_txid",
    ]  # fmt: skip
    assert ev.ToRivetEvents(items=[]).items == [] and ev.KvListAllQuery() == ev.KvListAllQuery()


@pytest.mark.parametrize("name", _schema_classes())
@FAST
@given(data=st.data())
def test_every_schema_class_round_trips(
    bare_codegen: ModuleType, name: str, data: st.DataObject
) -> None:
    value = data.draw(_strategies(bare_codegen).named(name))
    encoded = ev.encode_value(value)
    decoded = ev.decode_value(type(value), encoded)
    assert decoded == value
    assert ev.encode_value(decoded) == encoded


@pytest.mark.parametrize(
    ("union", "members", "encode", "decode"),
    [
        ("ToRivet", TO_RIVET_TAGS, ev.encode_to_rivet, ev.decode_to_rivet),
        ("ToEnvoy", TO_ENVOY_TAGS, ev.encode_to_envoy, ev.decode_to_envoy),
    ],
)
@FAST
@given(data=st.data())
def test_every_message_type_round_trips_with_the_spec_tag(
    bare_codegen: ModuleType, union: str, members: list[str], encode: Any, decode: Any,
    data: st.DataObject,
) -> None:  # fmt: skip
    strategies = _strategies(bare_codegen)
    for tag, member in enumerate(members):  # every member in every example
        msg = data.draw(strategies.named(member), label=member)
        frame = encode(msg)
        assert frame[0] == tag, member
        assert decode(frame) == msg
        assert decode(bytearray(frame)) == msg and decode(memoryview(frame)) == msg


def test_tunnel_kind_tags_match_spec() -> None:
    mid = ev.MessageId(gateway_id=b"gwid", request_id=b"rqid", message_index=3)
    samples_envoy: list[Any] = [
        ev.ToEnvoyRequestStart("a", None, "GET", "/", {}, None, False, False),
        ev.ToEnvoyRequestChunk(b"", True),
        ev.ToEnvoyRequestAbort(None, None, ev.HttpStreamAbortReason(ev.HttpStreamAbortReasonKind.UNKNOWN, None)),
        ev.ToEnvoyRequestBodyCancel(),
        ev.ToEnvoyResponseBodyWindowUpdate(1),
        ev.ToEnvoyWebSocketOpen("a", None, "/connect", {}),
        ev.ToEnvoyWebSocketMessage(b"", True),
        ev.ToEnvoyWebSocketClose(None, None),
    ]  # fmt: skip
    for tag, kind in enumerate(samples_envoy):
        assert type(kind).__name__ == TO_ENVOY_TUNNEL_TAGS[tag]
        frame = ev.encode_to_envoy(ev.ToEnvoyTunnelMessage(mid, kind))
        assert frame[:12] == b"\x04gwidrqid\x03\x00" + bytes([tag])
    samples_rivet: list[Any] = [
        ev.ToRivetResponseStart(200, {}, None, False),
        ev.ToRivetResponseChunk(b"", True),
        ev.ToRivetResponseAbort(ev.HttpStreamAbortReason(ev.HttpStreamAbortReasonKind.CANCELLED, "x")),
        ev.ToRivetRequestBodyWindowUpdate(5),
        ev.ToRivetRequestBodyCancel(),
        ev.ToRivetWebSocketOpen(True),
        ev.ToRivetWebSocketMessage(b"", False),
        ev.ToRivetWebSocketMessageAck(1),
        ev.ToRivetWebSocketClose(1000, "bye", False),
    ]  # fmt: skip
    for tag, rkind in enumerate(samples_rivet):
        assert type(rkind).__name__ == TO_RIVET_TUNNEL_TAGS[tag]
        frame = ev.encode_to_rivet(ev.ToRivetTunnelMessage(mid, rkind))
        assert frame[:12] == b"\x06gwidrqid\x03\x00" + bytes([tag])


# -- wire vectors from the spec --------------------------------------------------------------


def test_pong_vector() -> None:
    # §4.3: `04 11dce8fda1010000` = tag 4 (ToRivetPong), i64 LE ts.
    frame = bytes.fromhex("0411dce8fda1010000")
    assert ev.decode_to_rivet(frame) == ev.ToRivetPong(ts=0x01A1FDE8DC11)
    assert ev.encode_to_rivet(ev.ToRivetPong(ts=0x01A1FDE8DC11)) == frame


def test_serverless_start_payload_vector() -> None:
    # §9: body after the `08 00` version prefix: ToEnvoyCommands[one CommandStartActor].
    actor_id = "9ibn8o8jzl6xlbbn7rgqxqfp0ccl00"
    create_ts = 1_795_283_992_717
    body = (
        b"\x01\x01\x1e" + actor_id.encode()
        + bytes.fromhex("01000000") + bytes.fromhex("0000000000000000")
        + b"\x00" + b"\x07counter" + b"\x01\x08sl-demo3" + struct.pack("<q", create_ts)
        + b"\x00\x00\x00"
    )  # fmt: skip
    msg = ev.decode_to_envoy(body)
    assert msg == ev.ToEnvoyCommands(
        items=[
            ev.CommandWrapper(
                checkpoint=ev.ActorCheckpoint(actor_id=actor_id, generation=1, index=0),
                inner=ev.CommandStartActor(
                    config=ev.ActorConfig(
                        name="counter", key="sl-demo3", create_ts=create_ts, input=None
                    ),
                    hibernating_requests=[],
                    preloaded_kv=None,
                ),
            )
        ]
    )
    assert ev.encode_to_envoy(msg) == body


def test_init_and_float_vectors() -> None:
    init = ev.ToEnvoyInit(ev.ProtocolMetadata(15000, 1_800_000, 20_971_520))
    assert ev.encode_to_envoy(init) == b"\x00" + struct.pack("<qqQ", 15000, 1_800_000, 20_971_520)
    value = ev.SqliteValueFloat(value=struct.pack("<d", 1.5))
    assert ev.encode_value(value) == struct.pack("<d", 1.5)  # data[8]: no length prefix


# -- strictness ------------------------------------------------------------------------------


def _samples() -> list[bytes]:
    mid = ev.MessageId(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 513)
    return [
        ev.encode_to_envoy(
            ev.ToEnvoyTunnelMessage(
                mid,
                ev.ToEnvoyRequestStart(
                    "actor", 2, "POST", "/action/x", {"a": "b", "é": "ü" * 70}, b"x" * 200, False, True
                ),
            )
        ),
        ev.encode_to_envoy(ev.ToEnvoyKvResponse(7, ev.KvGetResponse([b"k"], [b"v"], [ev.KvMetadata(b"2.3.19", 5)]))),
        ev.encode_to_envoy(ev.ToEnvoyPing(-5)),
    ]  # fmt: skip


@pytest.mark.parametrize("frame", _samples(), ids=["request-start", "kv-get", "ping"])
def test_every_truncation_and_trailing_byte_is_a_decode_error(frame: bytes) -> None:
    assert ev.encode_to_envoy(ev.decode_to_envoy(frame)) == frame
    for end in range(len(frame)):
        with pytest.raises(DecodeError):
            ev.decode_to_envoy(frame[:end])
    with pytest.raises(DecodeError, match="1 trailing byte"):
        ev.decode_to_envoy(frame + b"\x00")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x0e", "unknown ToEnvoy union tag 14"),
        (b"\x7f", "unknown ToEnvoy union tag 127"),
        (b"\x80\x00", "unknown ToEnvoy union tag 128"),
        # ToEnvoyRequestChunk{body, finish}: finish byte 2
        (b"\x04" + b"\x00" * 10 + b"\x01\x00\x02", "invalid bool 2"),
        # ToEnvoyWebSocketClose{code: optional flag 2}
        (b"\x04" + b"\x00" * 10 + b"\x07\x02", "invalid optional flag 2"),
        # ToEnvoyCommands[{checkpoint, CommandStopActor{reason 5}}]
        (b"\x01\x01\x01a" + b"\x00" * 12 + b"\x01\x05", "invalid StopActorReason value 5"),
        # non-canonical varint length of a str (0x81 0x00 = 1 written in two bytes)
        (b"\x03\x00\x00\x00\x00\x00\x81\x00x", "non-canonical uint"),
        # a varint longer than 10 bytes as a list count
        (b"\x01" + b"\xff" * 11, "longer than 10 bytes"),
        # 0xff...ff01 > 2**64 - 1
        (b"\x01" + b"\xff" * 9 + b"\x7f", "overflows 64 bits"),
        # list count far larger than the input: refused before allocating
        (b"\x01" + b"\xff\xff\xff\xff\x0f", "truncated list"),
        # KvErrorResponse with invalid UTF-8
        (b"\x03\x00\x00\x00\x00\x00\x01\xff", "invalid UTF-8"),
    ],
)
def test_malformed_frames_raise_decode_error(frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        ev.decode_to_envoy(frame)


def test_duplicate_map_key_is_rejected() -> None:
    start = ev.ToEnvoyRequestStart("a", None, "GET", "/", {"k": "1", "j": "2"}, None, False, False)
    frame = ev.encode_to_envoy(ev.ToEnvoyTunnelMessage(ev.MessageId(b"gwid", b"rqid", 0), start))
    dup = frame.replace(b"\x01j\x012", b"\x01k\x012")
    assert dup != frame
    with pytest.raises(DecodeError, match="duplicate map key"):
        ev.decode_to_envoy(dup)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_decode_to_a_canonical_message_or_a_decode_error(data: bytes) -> None:
    codecs: list[tuple[Any, Any]] = [
        (ev.decode_to_envoy, ev.encode_to_envoy),
        (ev.decode_to_rivet, ev.encode_to_rivet),
    ]
    for decode, encode in codecs:
        try:
            msg = decode(data)
        except DecodeError:
            continue
        assert encode(msg) == data  # strict decoding accepts only the canonical encoding


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255))
def test_corrupted_frames_never_raise_other_errors(index: int, byte: int) -> None:
    for frame in _samples():
        corrupted = bytearray(frame)
        corrupted[index % len(frame)] = byte
        try:
            ev.decode_to_envoy(bytes(corrupted))
        except DecodeError:
            pass


# -- encoding errors -------------------------------------------------------------------------


def test_encoding_rejects_values_outside_the_schema() -> None:
    mid = ev.MessageId(b"gwid", b"rqid", 0)
    with pytest.raises(TypeError, match="not a ToRivet member: ToEnvoyPing"):
        ev.encode_to_rivet(ev.ToEnvoyPing(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"data\[4\] needs 4 bytes, got 3"):
        ev.encode_to_rivet(
            ev.ToRivetTunnelMessage(ev.MessageId(b"gwi", b"rqid", 0), ev.ToRivetWebSocketOpen(True))
        )
    with pytest.raises(ValueError):
        ev.encode_to_rivet(
            ev.ToRivetTunnelMessage(
                ev.MessageId(b"gwid", b"rqid", 65536), ev.ToRivetWebSocketOpen(True)
            )
        )
    with pytest.raises(ValueError):
        ev.encode_to_rivet(ev.ToRivetPong(ts=2**63))
    with pytest.raises(ValueError):
        ev.encode_to_rivet(ev.ToRivetKvRequest("a", -1, ev.KvDropRequest()))
    with pytest.raises(ValueError, match="not a StopCode value"):
        state = ev.ActorStateStopped(code=7, message=None)  # type: ignore[arg-type]
        cp = ev.ActorCheckpoint("a", 1, 0)
        ev.encode_to_rivet(ev.ToRivetEvents([ev.EventWrapper(cp, ev.EventActorStateUpdate(state))]))
    with pytest.raises(TypeError):
        bad_headers: Any = {"a": 1}
        ev.encode_to_rivet(
            ev.ToRivetTunnelMessage(mid, ev.ToRivetResponseStart(200, bad_headers, None, False))
        )
    with pytest.raises(TypeError, match="not a schema class"):
        ev.encode_value(object())
