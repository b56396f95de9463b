"""Envoy protocol v6 (spec engine-envoy.md "v6 -> v8 differences", §12.8, §12.29).

* the schema: ``schemas/envoy_v6.bare`` is the official ``v6.bare`` wire for wire, and every type
  v6 shares with v8 is encoded the same (the premise of ``rivetkit._protocol.envoy_v6``);
* the conversion, with hypothesis: random v6 frames (generated v6 codec) decode into the v8
  dataclasses and encode back to the same bytes; random v8 messages encode to the v6 frame of
  the same message; malformed frames only ever raise ``DecodeError``;
* what v6 cannot express raises ``envoy.unsupported_in_protocol_v6`` (also end to end: a SQLite
  transaction needing a staged commit fails its action and the actor);
* a registry in engine mode with ``protocol_version=6`` against the real engine: actions over
  HTTP, a WebSocket connection with events, sleep and wake with state and database (SQLite page
  commits over v6), hibernation; every frame the engine sent re-encodes byte for byte (§12.8)
  and every frame the runtime sent is a valid v6 frame;
* ``EngineConfig`` accepts 6 and 8 only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rivetkit
from rivetkit import ActionContext
from rivetkit._protocol import DecodeError
from rivetkit._protocol import envoy as v8
from rivetkit._protocol import envoy_v6 as conv
from rivetkit._protocol._generated import envoy_v6 as g6
from rivetkit.client import Client
from rivetkit.config import EngineConfig
from rivetkit.drivers.engine.envoy import Envoy
from rivetkit.errors import ActorError, RivetError
from tests.engine.engine_app import counter, keeper, notes
from tests.engine.engine_proc import Engine
from tests.engine.helpers import until, wait_actor
from tests.engine.schema_strategies import Strategies

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_V6 = ROOT / "src/rivetkit/_protocol/schemas/envoy_v6.bare"
SCHEMA_V8 = ROOT / "src/rivetkit/_protocol/schemas/envoy_v8.bare"
MIRROR = Path("/work/.mirror/rivet-dev+rivet/repo")
OFFICIAL_V6 = "engine/sdks/schemas/envoy-protocol/v6.bare"

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Everything v8 changed (spec "v6 -> v8 differences"); every other shared type is identical.
CHANGED = {
    "ToEnvoyRequestStart", "ToEnvoyRequestAbort", "ToRivetResponseAbort", "ToEnvoyWebSocketOpen",
    "ToRivetTunnelMessageKind", "ToEnvoyTunnelMessageKind", "ToRivet", "ToEnvoy",
}  # fmt: skip
V8_ONLY = {
    "SqliteCommitStageBeginRequest", "SqliteCommitStageBeginOk", "SqliteCommitStageBeginResponse",
    "SqliteCommitStageSegmentRequest", "SqliteCommitStageSegmentOk",
    "SqliteCommitStageSegmentResponse", "SqliteCommitFinalizeRequest", "SqliteCommitFinalizeOk",
    "SqliteCommitFinalizeResponse", "ToRivetRequestBodyWindowUpdate", "ToRivetRequestBodyCancel",
    "HttpStreamAbortReasonKind", "HttpStreamAbortReason", "ToEnvoyRequestBodyCancel",
    "ToEnvoyResponseBodyWindowUpdate", "ToRivetSqliteCommitStageBeginRequest",
    "ToRivetSqliteCommitStageSegmentRequest", "ToRivetSqliteCommitFinalizeRequest",
    "ToEnvoySqliteCommitStageBeginResponse", "ToEnvoySqliteCommitStageSegmentResponse",
    "ToEnvoySqliteCommitFinalizeResponse",
}  # fmt: skip
STAGED = (
    v8.ToRivetSqliteCommitStageBeginRequest,
    v8.ToRivetSqliteCommitStageSegmentRequest,
    v8.ToRivetSqliteCommitFinalizeRequest,
)
NOT_SENT = (v8.ToRivetRequestBodyWindowUpdate, v8.ToRivetRequestBodyCancel)
# The functions under test, kept before the ``wire`` fixture wraps the module's attributes.
DECODE_TO_ENVOY = conv.decode_to_envoy
ENCODE_TO_RIVET = conv.encode_to_rivet


# -- the schema ------------------------------------------------------------------------------


def _shape(codegen: ModuleType, text: str) -> dict[str, Any]:
    """Name -> wire structure of every declaration (comments and docs left out)."""

    def norm(t: Any) -> Any:
        if isinstance(t, codegen.Struct):
            return ("struct", tuple((f.name, norm(f.type)) for f in t.fields))
        if isinstance(t, codegen.Optional | codegen.ListOf):
            return (type(t).__name__, norm(t.inner))
        if isinstance(t, codegen.MapOf):
            return ("map", norm(t.key), norm(t.value))
        return t

    return {d.name: norm(d.type) for d in codegen.parse_schema(text)}


def test_our_v6_schema_is_the_official_one_on_the_wire(bare_codegen: ModuleType) -> None:
    if not MIRROR.exists():
        pytest.skip(f"no rivet-dev/rivet mirror at {MIRROR}")
    official = subprocess.run(
        ["git", f"--git-dir={MIRROR}", "show", f"HEAD:{OFFICIAL_V6}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    theirs = list(_shape(bare_codegen, official).items())
    ours = list(_shape(bare_codegen, SCHEMA_V6.read_text()).items())
    assert ours == theirs  # same names, same order, same structure


def test_v6_is_v8_minus_the_listed_additions(bare_codegen: ModuleType) -> None:
    six = _shape(bare_codegen, SCHEMA_V6.read_text())
    eight = _shape(bare_codegen, SCHEMA_V8.read_text())
    assert set(eight) - set(six) == V8_ONLY
    assert set(six) <= set(eight)
    for name, shape in six.items():
        if name not in CHANGED:
            assert shape == eight[name], name  # byte-level conversion relies on this
    for union in ("ToRivet", "ToEnvoy", "ToRivetTunnelMessageKind", "ToEnvoyTunnelMessageKind"):
        v6_members = [m for m, _ in six[union].members]
        v8_members = [m for m, _ in eight[union].members]
        assert v6_members == [m for m in v8_members if m not in V8_ONLY], union


def test_spec_tag_numbers() -> None:
    # §6.1: v6 ToRivet 9 Exec, 10 Execute, 11 ExecuteBatch; ToEnvoy 8/9/10 their responses.
    req = v8.SqliteExecRequest("default", "a", 1, "SELECT 1")
    assert conv.encode_to_rivet(v8.ToRivetSqliteExecRequest(1, req))[0] == 9
    batch = v8.SqliteExecuteBatchRequest("default", "a", 1, [])
    assert conv.encode_to_rivet(v8.ToRivetSqliteExecuteBatchRequest(1, batch))[0] == 11
    ok = v8.SqliteExecuteBatchOk([])
    assert conv.encode_to_envoy(v8.ToEnvoySqliteExecuteBatchResponse(1, ok))[0] == 10
    # §6.7: v6 ToRivet kinds 3 WsOpen .. 6 WsClose; ToEnvoy kinds 3 WsOpen, 4 WsMsg, 5 WsClose.
    mid = v8.MessageId(b"gwid", b"rqid", 3)
    for tag, kind in [
        (3, v8.ToRivetWebSocketOpen(True)),
        (6, v8.ToRivetWebSocketClose(1, None, False)),
    ]:
        frame = conv.encode_to_rivet(v8.ToRivetTunnelMessage(mid, kind))
        assert frame[:12] == b"\x06gwidrqid\x03\x00" + bytes([tag])
    close = v8.ToEnvoyTunnelMessage(mid, v8.ToEnvoyWebSocketClose(1000, "x"))
    assert conv.encode_to_envoy(close)[:12] == b"\x04gwidrqid\x03\x00\x05"
    assert conv.PROTOCOL_VERSION == 6 and v8.PROTOCOL_VERSION == 8


# -- hypothesis: conversion round trips ------------------------------------------------------


@cache
def _v6_strategies(codegen: ModuleType) -> Strategies:
    return Strategies(codegen, SCHEMA_V6, g6)


@cache
def _v8_strategies(codegen: ModuleType) -> Strategies:
    return Strategies(codegen, SCHEMA_V8, v8)


_V8_DEFAULTS = {  # what the v8 fields v6 lacks decode to
    "actor_generation": None,
    "response_stream": False,
    "actor_id": None,
    "reason": v8.HttpStreamAbortReason(v8.HttpStreamAbortReasonKind.UNKNOWN, None),
}


def convert(value: Any, target: ModuleType) -> Any:
    """The same message built from ``target``'s classes (by name; missing fields defaulted,
    fields the target lacks dropped). Independent of the module under test."""
    if isinstance(value, list):
        return [convert(v, target) for v in value]
    if isinstance(value, dict):
        return {k: convert(v, target) for k, v in value.items()}
    if isinstance(value, enum.IntEnum):
        return getattr(target, type(value).__name__)[value.name]
    if dataclasses.is_dataclass(value):
        cls = getattr(target, type(value).__name__)
        source = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        fields = {}
        for f in dataclasses.fields(cls):
            if f.name in source and not (f.name == "actor_id" and cls is v8.ToEnvoyRequestAbort):
                fields[f.name] = convert(source[f.name], target)
            else:
                fields[f.name] = _V8_DEFAULTS[f.name]
        return cls(**fields)
    return value


@FAST
@given(data=st.data())
def test_v6_engine_frames_decode_to_v8_and_encode_back(
    bare_codegen: ModuleType, data: st.DataObject
) -> None:
    strategies = _v6_strategies(bare_codegen)
    union = bare_codegen.parse_schema(SCHEMA_V6.read_text())
    members = next(d for d in union if d.name == "ToEnvoy").type.members
    for member, _tag in members:  # every member in every example
        message = data.draw(strategies.named(member), label=member)
        frame = g6.encode_to_envoy(message)
        decoded = conv.decode_to_envoy(frame)
        assert decoded == convert(message, v8)
        assert conv.encode_to_envoy(decoded) == frame
    kind = data.draw(strategies.named("ToEnvoyTunnelMessageKind"), label="kind")
    mid = data.draw(strategies.named("MessageId"), label="mid")
    frame = g6.encode_to_envoy(g6.ToEnvoyTunnelMessage(mid, kind))
    decoded = conv.decode_to_envoy(frame)
    assert decoded == convert(g6.ToEnvoyTunnelMessage(mid, kind), v8)
    assert conv.encode_to_envoy(decoded) == frame


@FAST
@given(data=st.data())
def test_v6_runtime_frames_round_trip(bare_codegen: ModuleType, data: st.DataObject) -> None:
    strategies = _v6_strategies(bare_codegen)
    members = [d for d in bare_codegen.parse_schema(SCHEMA_V6.read_text()) if d.name == "ToRivet"]
    for member, _tag in members[0].type.members:
        message = data.draw(strategies.named(member), label=member)
        frame = g6.encode_to_rivet(message)
        decoded = conv.decode_to_rivet(frame)
        assert decoded == convert(message, v8)
        assert conv.encode_to_rivet(decoded) == frame
    kind = data.draw(strategies.named("ToRivetTunnelMessageKind"), label="kind")
    message = g6.ToRivetTunnelMessage(data.draw(strategies.named("MessageId")), kind)
    frame = g6.encode_to_rivet(message)
    assert conv.encode_to_rivet(conv.decode_to_rivet(frame)) == frame


@FAST
@given(data=st.data())
def test_every_v8_runtime_message_becomes_the_same_v6_message_or_a_coded_refusal(
    bare_codegen: ModuleType, data: st.DataObject
) -> None:
    strategies = _v8_strategies(bare_codegen)
    members = next(
        d for d in bare_codegen.parse_schema(SCHEMA_V8.read_text()) if d.name == "ToRivet"
    ).type.members
    for member, _tag in members:
        message = data.draw(strategies.named(member), label=member)
        if isinstance(message, STAGED):
            with pytest.raises(RivetError) as info:
                conv.encode_to_rivet(message)
            assert (info.value.group, info.value.code) == ("envoy", "unsupported_in_protocol_v6")
            continue
        frame = conv.encode_to_rivet(message)
        if isinstance(message, v8.ToRivetTunnelMessage) and isinstance(
            message.message_kind, NOT_SENT
        ):
            assert frame == b""
            continue
        assert g6.decode_to_rivet(frame) == convert(message, g6)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=48))
def test_random_bytes_are_a_canonical_v6_frame_or_a_decode_error(data: bytes) -> None:
    for decode, encode, reference in (
        (conv.decode_to_envoy, conv.encode_to_envoy, g6.decode_to_envoy),
        (conv.decode_to_rivet, conv.encode_to_rivet, g6.decode_to_rivet),
    ):
        try:
            message = decode(data)
        except DecodeError:
            with pytest.raises(DecodeError):  # the generated v6 codec agrees it is malformed
                reference(data)
            continue
        assert encode(message) == data
        reference(data)  # ... and agrees it is well formed


def _v6_samples() -> list[bytes]:
    mid = g6.MessageId(b"\x01\x02\x03\x04", b"\x05\x06\x07\x08", 513)
    return [
        g6.encode_to_envoy(g6.ToEnvoyTunnelMessage(mid, g6.ToEnvoyRequestStart(
            "actor", "POST", "/action/x", {"a": "b", "é": "ü" * 70}, b"x" * 200, True))),
        g6.encode_to_envoy(g6.ToEnvoyTunnelMessage(mid, g6.ToEnvoyWebSocketOpen(
            "a" * 130, "/connect", {"sec-websocket-protocol": "rivet"}))),
        g6.encode_to_envoy(g6.ToEnvoyTunnelMessage(mid, g6.ToEnvoyRequestAbort())),
        g6.encode_to_envoy(g6.ToEnvoySqliteExecuteResponse(3, g6.SqliteErrorResponse("g", "c", "m"))),
        g6.encode_to_rivet(g6.ToRivetTunnelMessage(mid, g6.ToRivetResponseAbort())),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(5))
def test_every_truncation_and_trailing_byte_of_a_v6_frame_is_a_decode_error(index: int) -> None:
    frame = _v6_samples()[index]
    decode, encode = (
        (conv.decode_to_rivet, conv.encode_to_rivet)
        if index == 4
        else (conv.decode_to_envoy, conv.encode_to_envoy)
    )
    assert encode(decode(frame)) == frame
    for end in range(len(frame)):
        with pytest.raises(DecodeError):
            decode(frame[:end])
    for extra in (b"\x00", b"\x01", b"\x00\x00\x00\x00"):
        with pytest.raises(DecodeError):
            decode(frame + extra)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "empty"),
        (b"\x0b", "unknown ToEnvoy union tag 11 (protocol v6)"),  # v8's ExecResponse tag
        (b"\x0d", "unknown ToEnvoy union tag 13 (protocol v6)"),
        (b"\x80\x00", "unknown ToEnvoy union tag 128 (protocol v6)"),
        (b"\x04" + b"\x00" * 10 + b"\x06", "unknown ToEnvoyTunnelMessageKind union tag 6"),
        (b"\x04" + b"\x00" * 10 + b"\x07\x00\x00", "unknown ToEnvoyTunnelMessageKind union tag 7"),
        (b"\x04" + b"\x00" * 5, "truncated"),
        (b"\x04" + b"\x00" * 10 + b"\x00\x05ab", "truncated"),  # actorId longer than the frame
        (b"\x04" + b"\x00" * 10 + b"\x00" + b"\xff" * 11, "varint"),
        (b"\x04" + b"\x00" * 10 + b"\x02\x00", "trailing"),  # RequestAbort is void in v6
    ],
)
def test_v6_only_tags_and_malformed_frames_are_decode_errors(frame: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        conv.decode_to_envoy(frame)


def test_unknown_v6_runtime_tags_are_decode_errors() -> None:
    with pytest.raises(DecodeError, match=r"unknown ToRivet union tag 12 \(protocol v6\)"):
        conv.decode_to_rivet(b"\x0c")
    with pytest.raises(DecodeError, match="unknown ToRivetTunnelMessageKind union tag 7"):
        conv.decode_to_rivet(b"\x06" + b"\x00" * 10 + b"\x07")


# -- (c) what v6 cannot express ----------------------------------------------------------------


def _assert_unsupported(call: Any, what: str) -> None:
    with pytest.raises(RivetError) as info:
        call()
    err = info.value
    assert (err.group, err.code) == ("envoy", "unsupported_in_protocol_v6")
    assert what in str(err) and "protocol v6" in str(err)


def test_v8_only_messages_and_fields_are_refused_with_a_coded_error() -> None:
    _assert_unsupported(
        lambda: conv.encode_to_rivet(v8.ToRivetSqliteCommitStageBeginRequest(
            1, v8.SqliteCommitStageBeginRequest("a", 1, None))),
        "ToRivetSqliteCommitStageBeginRequest",
    )  # fmt: skip
    page = v8.SqliteDirtyPage(1, b"\x00" * 4096)
    _assert_unsupported(
        lambda: conv.encode_to_rivet(v8.ToRivetSqliteCommitStageSegmentRequest(
            2, v8.SqliteCommitStageSegmentRequest("a", 1, 5, 1, [page]))),
        "ToRivetSqliteCommitStageSegmentRequest",
    )  # fmt: skip
    _assert_unsupported(
        lambda: conv.encode_to_rivet(v8.ToRivetSqliteCommitFinalizeRequest(
            3, v8.SqliteCommitFinalizeRequest("a", 1, 5, 10, 0, [1]))),
        "ToRivetSqliteCommitFinalizeRequest",
    )  # fmt: skip
    mid = v8.MessageId(b"gwid", b"rqid", 0)
    start = v8.ToEnvoyRequestStart("a", 3, "GET", "/", {}, None, False, False)
    _assert_unsupported(
        lambda: conv.encode_to_envoy(v8.ToEnvoyTunnelMessage(mid, start)), "actorGeneration"
    )
    streamed = dataclasses.replace(start, actor_generation=None, response_stream=True)
    _assert_unsupported(
        lambda: conv.encode_to_envoy(v8.ToEnvoyTunnelMessage(mid, streamed)), "responseStream"
    )
    ws_open = v8.ToEnvoyWebSocketOpen("a", 2, "/connect", {})
    _assert_unsupported(
        lambda: conv.encode_to_envoy(v8.ToEnvoyTunnelMessage(mid, ws_open)), "actorGeneration"
    )
    for kind in (v8.ToEnvoyRequestBodyCancel(), v8.ToEnvoyResponseBodyWindowUpdate(5)):
        _assert_unsupported(
            lambda kind=kind: conv.encode_to_envoy(v8.ToEnvoyTunnelMessage(mid, kind)),
            type(kind).__name__,
        )
    ok = v8.SqliteCommitFinalizeOk(head_txid=3)
    _assert_unsupported(
        lambda: conv.encode_to_envoy(v8.ToEnvoySqliteCommitFinalizeResponse(1, ok)),
        "ToEnvoySqliteCommitFinalizeResponse",
    )


def test_fallbacks_for_what_v6_expresses_differently() -> None:
    mid = v8.MessageId(b"gwid", b"rqid", 4)
    # Request-body credit and cancel: the v6-era client sent nothing.
    for kind in (v8.ToRivetRequestBodyWindowUpdate(10), v8.ToRivetRequestBodyCancel()):
        assert conv.encode_to_rivet(v8.ToRivetTunnelMessage(mid, kind)) == b""
    # Abort reasons are dropped (void in v6).
    reason = v8.HttpStreamAbortReason(v8.HttpStreamAbortReasonKind.HANDLER_ERROR, "boom")
    frame = conv.encode_to_rivet(v8.ToRivetTunnelMessage(mid, v8.ToRivetResponseAbort(reason)))
    assert frame == b"\x06gwidrqid\x04\x00\x02"
    assert g6.decode_to_rivet(frame) == g6.ToRivetTunnelMessage(
        g6.MessageId(b"gwid", b"rqid", 4), g6.ToRivetResponseAbort()
    )
    # A v6 RequestStart is a v8 one without a generation and without response streaming.
    v6_start = g6.ToEnvoyRequestStart("act", "POST", "/action/x", {"h": "v"}, b"body", False)
    decoded = conv.decode_to_envoy(g6.encode_to_envoy(g6.ToEnvoyTunnelMessage(
        g6.MessageId(b"gwid", b"rqid", 0), v6_start)))  # fmt: skip
    assert isinstance(decoded, v8.ToEnvoyTunnelMessage)
    assert decoded.message_kind == v8.ToEnvoyRequestStart(
        "act", None, "POST", "/action/x", {"h": "v"}, b"body", False, False
    )


# -- (d) configuration -------------------------------------------------------------------------


def test_engine_config_accepts_6_and_8_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EngineConfig().protocol_version == 8
    assert EngineConfig(protocol_version=6).protocol_version == 6
    for bad in (7, 5, 9, 2, 0, -8, True, 8.0, "8"):
        with pytest.raises(ValueError, match="protocol_version must be one of"):
            EngineConfig(protocol_version=bad)  # type: ignore[arg-type]
    monkeypatch.setenv("RIVET_ENVOY_PROTOCOL_VERSION", "6")
    assert EngineConfig().protocol_version == 6
    monkeypatch.setenv("RIVET_ENVOY_PROTOCOL_VERSION", "7")
    with pytest.raises(ValueError, match=r"one of \(6, 8\).*got 7"):
        EngineConfig()
    monkeypatch.setenv("RIVET_ENVOY_PROTOCOL_VERSION", "v6")
    with pytest.raises(ValueError, match="RIVET_ENVOY_PROTOCOL_VERSION"):
        EngineConfig()


def test_envoy_uses_the_configured_version_in_its_url_and_codec() -> None:
    handler: Any = object()
    for version, module in ((6, conv), (8, v8)):
        config = EngineConfig(endpoint="http://127.0.0.1:1", pool="p", protocol_version=version)
        envoy = Envoy(config, handler, actor_names={}, metadata={})
        query = parse_qs(urlsplit(envoy.ws_url).query)
        assert query["protocol_version"] == [str(version)]
        assert envoy._encode is module.encode_to_rivet
        assert envoy._decode is module.decode_to_envoy


# -- the runtime on the real engine over v6 ----------------------------------------------------

big = rivetkit.actor("big", options=rivetkit.ActorOptions(sleep_timeout=30.0))


@big.on_migrate
async def _big_migrate(c: Any, is_new: bool) -> None:
    await c.db.execute("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, b BLOB)")


@big.action
async def put_blob(c: ActionContext, size: int) -> int:
    await c.db.execute("INSERT INTO blobs (b) VALUES (randomblob(?))", size)
    rows = await c.db.execute("SELECT count(*) AS n FROM blobs")
    return int(rows[0]["n"])


@big.action
async def blob_count(c: ActionContext) -> int:
    rows = await c.db.execute("SELECT count(*) AS n FROM blobs")
    return int(rows[0]["n"])


@big.action
def big_sleep(c: ActionContext) -> None:
    c.sleep()


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[bytes]]]:
    """Every v6 frame the runtime's envoy receives and sends (the envoy binds the functions of
    ``rivetkit._protocol.envoy_v6`` when it is created, so they are wrapped before that)."""
    frames: dict[str, list[bytes]] = {"received": [], "sent": []}
    decode, encode = DECODE_TO_ENVOY, ENCODE_TO_RIVET

    def recording_decode(data: Any) -> Any:
        frames["received"].append(bytes(data))
        return decode(data)

    def recording_encode(message: Any) -> bytes:
        frame = encode(message)
        frames["sent"].append(frame)
        return frame

    monkeypatch.setattr(conv, "decode_to_envoy", recording_decode)
    monkeypatch.setattr(conv, "encode_to_rivet", recording_encode)
    yield frames


@pytest.fixture
async def hosted_v6(
    engine: Engine, pool: str, tmp_path: Path, wire: dict[str, list[bytes]]
) -> AsyncIterator[tuple[rivetkit.Registry, Client]]:
    registry = rivetkit.setup(counter, notes, big, storage_path=tmp_path / "data")
    registry.use_engine(EngineConfig(endpoint=engine.endpoint, pool=pool, protocol_version=6))
    await registry.start()
    await registry.driver.wait_ready(10)
    client = Client(engine.endpoint, pool_name=pool)
    try:
        yield registry, client
    finally:
        await client.aclose()
        await registry.stop()


def _check_wire(wire: dict[str, list[bytes]]) -> set[str]:
    """§12.8 for v6: every received frame re-encodes byte for byte (generated v6 codec and our
    conversion), every sent frame is a valid v6 frame. Returns the kinds received."""
    kinds: set[str] = set()
    assert wire["received"], "no frame received"
    for frame in wire["received"]:
        message = g6.decode_to_envoy(frame)
        assert g6.encode_to_envoy(message) == frame
        assert conv.encode_to_envoy(DECODE_TO_ENVOY(frame)) == frame
        kinds.add(type(message).__name__)
        if isinstance(message, g6.ToEnvoyTunnelMessage):
            kinds.add(type(message.message_kind).__name__)
    for frame in wire["sent"]:
        if frame:
            assert g6.encode_to_rivet(g6.decode_to_rivet(frame)) == frame
    return kinds


pytestmark_anyio = pytest.mark.anyio


@pytestmark_anyio
async def test_registry_over_v6_serves_actions_websockets_sleep_and_wake(
    hosted_v6: Any, wire: dict[str, list[bytes]], engine: Engine
) -> None:
    registry, client = hosted_v6
    envoy = registry.driver.envoy
    assert parse_qs(urlsplit(envoy.ws_url).query)["protocol_version"] == ["6"]
    # actions over HTTP
    key = [uuid.uuid4().hex]
    handle = client.get_or_create("counter", key)
    assert await handle.increment(2) == 2
    assert await handle.increment(3) == 5
    actor_id, got_key = await handle.whoami()
    assert got_key == key
    with pytest.raises(ActorError) as info:
        await handle.increment(-1)
    assert info.value.code == "bad_amount"
    # a WebSocket connection with events
    seen: list[int] = []
    got = asyncio.Event()
    async with handle.connect() as conn:
        conn.on("count", lambda n: (seen.append(n), got.set()))
        assert await conn.increment(4) == 9
        await asyncio.wait_for(got.wait(), 10)
    assert seen == [9]
    # sleep and wake with the state (SQLite page commits and reads over v6)
    generation = registry.driver.awake[actor_id].generation
    await handle.go_to_sleep()
    await until(lambda: actor_id not in registry.driver._hosted)
    assert await handle.get() == 9
    assert registry.driver.awake[actor_id].generation > generation
    # the user's database too
    notes_handle = client.get_or_create("notes", [uuid.uuid4().hex])
    assert await notes_handle.add("one") == 1
    assert await notes_handle.add("two") == 2
    await notes_handle.go_to_sleep_notes()
    await until(lambda: not registry.driver._hosted)
    assert await notes_handle.bodies() == ["one", "two"]
    kinds = _check_wire(wire)
    assert {
        "ToEnvoyInit", "ToEnvoyCommands", "ToEnvoyTunnelMessage", "ToEnvoyRequestStart",
        "ToEnvoyWebSocketOpen", "ToEnvoyWebSocketMessage", "ToEnvoySqliteGetPagesResponse",
        "ToEnvoySqliteCommitResponse",
    } <= kinds, kinds  # fmt: skip
    sent_tags = {frame[0] for frame in wire["sent"] if frame}
    assert sent_tags <= set(range(12)) and {0, 1, 2, 6, 7, 8} <= sent_tags


@pytestmark_anyio
async def test_hibernation_over_v6(hosted_v6: Any, wire: dict[str, list[bytes]]) -> None:
    """A client connection survives a sleep: the engine lists it in the next start
    (``hibernatingRequests``) and the restored connection keeps its id and subscription."""
    registry, client = hosted_v6
    handle = client.get_or_create("counter", [uuid.uuid4().hex])
    seen: list[int] = []
    async with handle.connect() as conn:
        conn.on("count", seen.append)
        assert await conn.increment(1) == 1
        actor_id, _ = await conn.whoami()
        first = registry.driver.awake[actor_id]
        (conn_id,) = first.conns
        await until(lambda: actor_id not in registry.driver._hosted)  # sleep_timeout 0.5 s
        assert first.stopped
        assert await conn.increment(2) == 3  # the same socket wakes the actor
        second = registry.driver.awake[actor_id]
        assert second is not first
        assert list(second.conns) == [conn_id]
        await until(lambda: seen == [1, 3])
    _check_wire(wire)
    starts = [
        w.inner
        for frame in wire["received"]
        if isinstance(m := g6.decode_to_envoy(frame), g6.ToEnvoyCommands)
        for w in m.items
        if isinstance(w.inner, g6.CommandStartActor) and w.checkpoint.actor_id == actor_id
    ]
    assert len(starts) >= 2 and starts[-1].hibernating_requests  # woken with the socket


@pytestmark_anyio
async def test_a_commit_needing_a_staged_commit_fails_the_actor_over_v6(
    hosted_v6: Any, wire: dict[str, list[bytes]], engine: Engine
) -> None:
    """Over 320 dirty pages a commit must be staged, which v6 cannot express: the action fails,
    the actor stops with an error, and its database keeps the last commit."""
    registry, client = hosted_v6
    handle = client.get_or_create("big", [uuid.uuid4().hex])
    assert await handle.put_blob(10_000) == 1  # a small commit works
    (actor_id,) = registry.driver.awake
    with pytest.raises(ActorError):
        await handle.put_blob(400 * 4096)  # ~400 pages in one transaction
    actor = await wait_actor(engine, actor_id, lambda a: a.get("error") is not None, 15)
    message = actor["error"]["crashed"]["message"]  # Stopped{ERROR, message}: not destroyed
    assert "envoy.unsupported_in_protocol_v6" in message, message
    assert "ToRivetSqliteCommitStageBeginRequest" in message
    assert actor["destroy_ts"] is None
    assert not any(frame and frame[0] > 11 for frame in wire["sent"])
    assert await handle.blob_count() == 1  # woken again: the big transaction never landed


@pytestmark_anyio
async def test_v6_and_v8_envoys_in_one_pool_share_its_actors(
    engine: Engine, pool: str, tmp_path: Path
) -> None:
    """§12.29: envoys of both protocol versions with the same deployment version in one pool
    both receive actors; the actors of the v6 envoy, drained away, come back on the v8 envoy
    with their state (the database is the same whichever version wrote it)."""
    registries = {}
    for version in (6, 8):
        registry = rivetkit.setup(keeper, storage_path=tmp_path / f"v{version}")
        registry.use_engine(
            EngineConfig(endpoint=engine.endpoint, pool=pool, protocol_version=version)
        )
        await registry.start()
        registries[version] = registry
    client = Client(engine.endpoint, pool_name=pool)
    try:
        for registry in registries.values():
            await registry.driver.wait_ready(10)
        handles = [client.get_or_create("keeper", [f"mixed-{i}"]) for i in range(12)]
        ids = []
        for i, handle in enumerate(handles):
            assert await handle.increment(i + 1) == i + 1
            ids.append((await handle.whoami())[0])
        hosted = {v: {a for a in ids if a in r.driver.awake} for v, r in registries.items()}
        assert hosted[6] and hosted[8], f"actors not spread over both versions: {hosted}"
        assert hosted[6] | hosted[8] == set(ids) and not hosted[6] & hosted[8], hosted
        await registries.pop(6).stop()  # graceful drain: its actors move to the v8 envoy
        for i, handle in enumerate(handles):
            assert await handle.get() == i + 1, f"keeper mixed-{i} lost its state"
        assert set(registries[8].driver.awake) == set(ids)
    finally:
        await client.aclose()
        for registry in registries.values():
            await registry.stop()
