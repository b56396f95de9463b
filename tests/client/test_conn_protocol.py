"""The connection state machine (sans-I/O): frames in, frames/outputs/decisions out."""

from __future__ import annotations

from typing import Any

import pytest

from rivetkit import BigInt
from rivetkit._protocol import get_codec
from rivetkit._protocol.encoding import Encoding
from rivetkit._protocol.messages import (
    ActionRequest,
    ActionResponse,
    ActorSpecifier,
    Error,
    Event,
    Init,
    SubscriptionRequest,
)
from rivetkit.client import ActorError, ConnStatus
from rivetkit.client._conn_protocol import (
    ActionRejected,
    ActionResolved,
    Closed,
    ConnProtocol,
    ErrorRaised,
    EventReceived,
    GiveUp,
    Opened,
    Reconnect,
    StatusChanged,
    actor_path,
    close_error,
    conn_subprotocols,
    gateway_target_url,
    handshake_status_retryable,
    is_retryable,
    params_json,
    parse_close_reason,
    ws_scheme,
)
from rivetkit.client._protocol import ActorQuery, ClientConfig

ENCODINGS: tuple[Encoding, ...] = ("json", "cbor", "bare")


class Peer:
    """The server side of the wire: encodes what it sends, decodes what the client sent."""

    def __init__(self, proto: ConnProtocol, encoding: Encoding) -> None:
        self.proto = proto
        self.codec = get_codec(encoding)

    def send(self, message: Any) -> Any:
        return self.proto.receive(self.codec.encode_to_client(message))

    def init(self, actor_id: str = "actor-1", conn_id: str = "conn-1") -> None:
        assert self.send(Init(actor_id, conn_id)) is None

    def sent(self) -> list[Any]:
        return [self.codec.decode_to_server(frame) for frame in self.proto.take_frames()]


def make(
    encoding: Encoding = "json", *, dynamic: bool = True, start: bool = True
) -> tuple[ConnProtocol, Peer]:
    proto = ConnProtocol(encoding, dynamic=dynamic, backoff=(0.25, 30.0))
    if start:
        proto.begin_attempt()
        proto.socket_opened()
    return proto, Peer(proto, encoding)


def connected(encoding: Encoding = "json", *, dynamic: bool = True) -> tuple[ConnProtocol, Peer]:
    proto, peer = make(encoding, dynamic=dynamic)
    peer.init()
    proto.take_outputs()
    assert peer.sent() == []
    return proto, peer


# -- opening ----------------------------------------------------------------------------------


def test_status_sequence_until_connected() -> None:
    proto, peer = make(start=False)
    assert proto.status is ConnStatus.IDLE
    assert str(proto.status) == "idle"
    proto.begin_attempt()
    proto.socket_opened()
    assert str(proto.status) == "connecting"
    peer.init("a1", "c1")
    assert str(proto.status) == "connected"
    assert (proto.actor_id, proto.connection_id) == ("a1", "c1")
    assert proto.take_outputs() == [
        StatusChanged(ConnStatus.IDLE, ConnStatus.CONNECTING),
        StatusChanged(ConnStatus.CONNECTING, ConnStatus.CONNECTED),
        Opened("a1", "c1"),
    ]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_nothing_is_sent_before_init_then_subscriptions_then_queued_actions(
    encoding: Encoding,
) -> None:
    proto, peer = make(encoding)
    proto.add_listener("b")
    proto.add_listener("a")
    assert proto.call("first", [1]) == 0
    assert proto.call("second", []) == 1
    assert proto.take_frames() == []
    assert proto.queued == [0, 1]
    peer.init()
    assert peer.sent() == [
        SubscriptionRequest("b", True),
        SubscriptionRequest("a", True),
        ActionRequest(0, "first", [1]),
        ActionRequest(1, "second", []),
    ]
    assert proto.queued == []
    assert proto.in_flight == [0, 1]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_frame_types_and_bigint_ids(encoding: Encoding) -> None:
    proto, _ = connected(encoding)
    proto.call("increment", [5])
    [frame] = proto.take_frames()
    if encoding == "json":
        assert isinstance(frame, str)
        assert '"id":["$BigInt","0"]' in frame
    else:
        assert isinstance(frame, bytes)
    if encoding == "cbor":
        assert b"\x62id\x1b\x00\x00\x00\x00\x00\x00\x00\x00" in frame  # 8-byte id (§8.4)
    if encoding == "bare":
        assert frame == bytes.fromhex("0400 00 00 09") + b"increment" + bytes.fromhex("02 8105")


def test_actions_sent_at_once_when_connected() -> None:
    proto, peer = connected()
    proto.call("x", ["a", {"b": [1, None]}])
    assert peer.sent() == [ActionRequest(0, "x", ["a", {"b": [1, None]}])]


def test_unserializable_argument_fails_at_call_and_uses_no_id() -> None:
    proto, peer = connected()
    with pytest.raises(TypeError):
        proto.call("x", [object()])
    assert proto.call("y", []) == 0
    assert peer.sent() == [ActionRequest(0, "y", [])]


# -- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_out_of_order_answers_match_by_id(encoding: Encoding) -> None:
    proto, peer = connected(encoding)
    for i in range(10):
        proto.call("work", [i])
    peer.sent()
    for i in reversed(range(10)):
        peer.send(ActionResponse(i, i * 10))
    outputs = proto.take_outputs()
    assert outputs == [ActionResolved(i, i * 10) for i in reversed(range(10))]
    assert proto.in_flight == []


def test_answer_to_unknown_id_is_ignored() -> None:
    proto, peer = connected()
    peer.send(ActionResponse(42, "x"))
    peer.send(Error("user", "x", "m", None, 42))
    assert proto.take_outputs() == []
    assert proto.status is ConnStatus.CONNECTED


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_action_error_rejects_that_action_only(encoding: Encoding) -> None:
    proto, peer = connected(encoding)
    proto.call("a", [])
    proto.call("b", [])
    peer.send(Error("user", "my_code", "boom", {"a": 1}, 1, ActorSpecifier("actor-1", 1, "k1")))
    [rejected] = proto.take_outputs()
    assert isinstance(rejected, ActionRejected)
    assert rejected.action_id == 1
    error = rejected.error
    assert (error.group, error.code, error.message, error.metadata) == (
        "user",
        "my_code",
        "boom",
        {"a": 1},
    )
    assert error.actor == {"actorId": "actor-1", "generation": 1, "key": "k1"}
    assert proto.in_flight == [0]
    assert proto.status is ConnStatus.CONNECTED


def test_connection_error_after_init_rejects_in_flight_and_keeps_status() -> None:
    proto, peer = connected()
    proto.call("a", [])
    proto.call("b", [])
    peer.send(Error("actor", "overloaded", "slow down", None, None))
    outputs = proto.take_outputs()
    assert [type(o) for o in outputs] == [ActionRejected, ActionRejected, ErrorRaised]
    assert all(isinstance(o, (ActionRejected, ErrorRaised)) for o in outputs)
    assert {o.error.full_code for o in outputs} == {"actor.overloaded"}  # type: ignore[union-attr]
    assert proto.status is ConnStatus.CONNECTED
    assert proto.in_flight == []


def test_bigint_and_bytes_outputs_survive() -> None:
    proto, peer = connected("bare")
    proto.call("x", [])
    peer.send(ActionResponse(0, {"big": BigInt(2**70), "raw": b"\x00\x01"}))
    assert proto.take_outputs() == [ActionResolved(0, {"big": BigInt(2**70), "raw": b"\x00\x01"})]


# -- events and subscriptions ---------------------------------------------------------------------


def test_listener_counts_drive_subscription_frames() -> None:
    proto, peer = connected()
    proto.add_listener("ev")
    proto.add_listener("ev")
    assert peer.sent() == [SubscriptionRequest("ev", True)]
    proto.remove_listener("ev")
    assert peer.sent() == []
    assert proto.listener_count("ev") == 1
    proto.remove_listener("ev")
    assert peer.sent() == [SubscriptionRequest("ev", False)]
    proto.remove_listener("ev")  # no listener left: nothing
    proto.remove_listener("never")
    assert peer.sent() == []
    assert proto.subscriptions == []


def test_events_only_for_names_with_listeners() -> None:
    proto, peer = connected()
    proto.add_listener("yes")
    peer.send(Event("no", [1]))
    peer.send(Event("yes", [1, "two"]))
    assert proto.take_outputs() == [EventReceived("yes", [1, "two"])]
    proto.remove_listener("yes")
    peer.send(Event("yes", [3]))
    assert proto.take_outputs() == []


def test_messages_before_init_are_ignored() -> None:
    proto, peer = make()
    proto.add_listener("ev")
    peer.send(Event("ev", [1]))
    peer.send(ActionResponse(0, 1))
    peer.send(Error("user", "x", "m", None, 0))
    assert proto.take_outputs() == [StatusChanged(ConnStatus.IDLE, ConnStatus.CONNECTING)]
    assert proto.status is ConnStatus.CONNECTING


def test_undecodable_frame_is_ignored() -> None:
    proto, _ = connected()
    assert proto.receive("{not json") is None
    assert proto.receive(b"\xff\xff") is None
    assert proto.take_outputs() == []
    assert proto.status is ConnStatus.CONNECTED


def test_subscriptions_not_queued_while_disconnected_but_resent_after_init() -> None:
    proto, peer = connected()
    proto.add_listener("kept")
    proto.add_listener("dropped")
    peer.sent()
    assert isinstance(proto.socket_closed(1006, ""), Reconnect)
    proto.remove_listener("dropped")
    proto.add_listener("new")
    assert proto.take_frames() == []
    proto.begin_attempt()
    proto.socket_opened()
    peer.init("actor-1", "conn-2")
    assert peer.sent() == [SubscriptionRequest("kept", True), SubscriptionRequest("new", True)]
    assert proto.connection_id == "conn-2"


def test_second_init_on_one_socket_does_not_resend() -> None:
    proto, peer = connected()
    proto.add_listener("ev")
    peer.sent()
    peer.init("actor-1", "conn-x")
    assert peer.sent() == []
    assert proto.connection_id == "conn-x"


# -- losing a working connection ------------------------------------------------------------------


def test_close_after_connected_rejects_in_flight_keeps_queue_and_reconnects_at_once() -> None:
    proto, peer = connected()
    proto.call("sent", [])
    peer.sent()
    decision = proto.socket_closed(1011, "ws.going_away")
    assert isinstance(decision, Reconnect)
    assert decision.delay == 0.0
    assert decision.error.full_code == "ws.going_away"
    outputs = proto.take_outputs()
    assert outputs[0] == ActionRejected(0, decision.error)
    assert outputs[1:] == [
        Closed(1011, "ws.going_away"),
        StatusChanged(ConnStatus.CONNECTED, ConnStatus.DISCONNECTED),
    ]
    # calls while disconnected queue up, ids continue
    assert proto.call("queued", [1]) == 1
    proto.begin_attempt()
    assert proto.status is ConnStatus.CONNECTING
    proto.socket_opened()
    peer.init()
    assert peer.sent() == [ActionRequest(1, "queued", [1])]


def test_unstructured_close_after_connected_is_connection_lost() -> None:
    proto, _ = connected()
    proto.call("x", [])
    decision = proto.socket_closed(1006, "")
    assert isinstance(decision, Reconnect)
    error = decision.error
    assert error.full_code == "client.connection_lost"
    assert error.metadata == {"closeCode": 1006, "closeReason": ""}


def test_even_a_user_close_after_connected_reconnects() -> None:
    # conn.disconnect("bye") closes 1000 "bye"; the official client reconnects (§15 #19).
    proto, _ = connected()
    assert isinstance(proto.socket_closed(1000, "bye"), Reconnect)
    proto, _ = connected()
    assert isinstance(proto.socket_closed(1011, "user.kicked"), Reconnect)


def test_action_ids_never_reset() -> None:
    proto, peer = connected()
    assert proto.call("a", []) == 0
    proto.socket_closed(1006, "")
    assert proto.call("b", []) == 1
    proto.begin_attempt()
    proto.socket_opened()
    peer.init()
    assert proto.call("c", []) == 2
    assert [m.id for m in peer.sent()] == [1, 2]


def test_backoff_doubles_caps_and_resets_after_init() -> None:
    proto, peer = connected()
    first = proto.socket_closed(1006, "")
    assert isinstance(first, Reconnect)
    assert first.delay == 0.0
    delays = []
    for _ in range(10):
        proto.begin_attempt()
        decision = proto.handshake_failed(
            ActorError("client", "network_error", "refused"), transient=True
        )
        assert isinstance(decision, Reconnect)
        delays.append(decision.delay)
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    proto.begin_attempt()
    proto.socket_opened()
    peer.init()
    proto.socket_closed(1006, "")
    proto.begin_attempt()
    decision = proto.handshake_failed(ActorError("client", "network_error", "x"), transient=True)
    assert isinstance(decision, Reconnect)
    assert decision.delay == 0.25


def test_connections_closed_right_after_init_back_off() -> None:
    # e.g. the server refuses a subscription: Init, then close 1011 "user.forbidden", forever
    proto, peer = make()
    delays = []
    for i in range(5):
        peer.init("actor-1", f"conn-{i}")
        proto.take_outputs()
        decision = proto.socket_closed(1011, "user.forbidden")
        assert isinstance(decision, Reconnect)
        delays.append(decision.delay)
        errors = [o for o in proto.take_outputs() if isinstance(o, ErrorRaised)]
        assert [e.error.full_code for e in errors] == ["user.forbidden"]
        proto.begin_attempt()
        proto.socket_opened()
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0]
    # a connection that carries traffic resets it: the next close reconnects at once again
    peer.init()
    proto.call("x", [])
    peer.send(ActionResponse(0, None))
    decision = proto.socket_closed(1001, "ws.going_away")
    assert isinstance(decision, Reconnect)
    assert decision.delay == 0.0
    assert not [o for o in proto.take_outputs() if isinstance(o, ErrorRaised)]


def test_structured_close_after_connected_is_reported() -> None:
    proto, _ = connected()
    decision = proto.socket_closed(1011, "user.forbidden")
    assert isinstance(decision, Reconnect)
    errors = [o for o in proto.take_outputs() if isinstance(o, ErrorRaised)]
    assert [e.error.full_code for e in errors] == ["user.forbidden"]


def test_status_while_retrying() -> None:
    proto, _ = make(start=False)
    proto.begin_attempt()
    proto.handshake_failed(ActorError("client", "network_error", "x"), transient=True)
    assert proto.status is ConnStatus.DISCONNECTED
    proto.begin_attempt()
    assert str(proto.status) == "connecting"
    assert [o.new for o in proto.take_outputs() if isinstance(o, StatusChanged)] == [
        "connecting",
        "disconnected",
        "connecting",
    ]


# -- failures before Init --------------------------------------------------------------------------

RETRY_TABLE: list[tuple[int, str, bool, bool]] = [
    # (close code, reason, dynamic handle, retried?)
    (1011, "user.rejected", True, False),
    (1011, "", True, False),  # observed: the official client gives up
    (1011, "foo.bar", True, False),  # observed: gives up
    (1011, "not structured at all", True, False),
    (1000, "", True, False),
    (1011, "ws.going_away", False, True),  # observed: retried
    (1000, "ws.going_away", False, True),
    (1011, "actor.restarting#ray123", False, True),
    (1011, "actor.stopped", False, True),
    (1011, "guard.service_unavailable", False, True),
    (1011, "guard.tunnel_request_aborted#r", False, True),
    (1011, "client.get_params_failed", False, True),
    (1011, "actor.not_found#lb6cwzf8", True, True),  # stale actor, get/getOrCreate
    (1011, "actor.not_found#lb6cwzf8", False, False),  # getForId goes idle
    (1011, "actor.destroyed_while_waiting_for_ready", True, True),
    (1011, "actor.destroyed_while_waiting_for_ready", False, False),
    (1011, "actor.starting", True, True),
    (1011, "guard.actor_ready_timeout#x", True, True),
    (1011, "guard.actor_ready_timeout#x", False, False),
    (1011, "message.incoming_too_long", True, False),
    (1011, "rivetkit.internal_error", True, False),
    (1011, "Actor abc-12 stopped", False, True),  # legacy transport text
    (1006, "", False, True),  # no close frame: the server went away
    (1001, "", False, True),
    (1012, "", False, True),  # uvicorn's shutdown close
    (1013, "", False, True),
    (1003, "actor.unsupported_websocket_encoding", True, False),
]


@pytest.mark.parametrize(("code", "reason", "dynamic", "retried"), RETRY_TABLE)
def test_close_before_init(code: int, reason: str, dynamic: bool, retried: bool) -> None:
    proto, _ = make(dynamic=dynamic)
    proto.call("queued", [])
    decision = proto.socket_closed(code, reason)
    if retried:
        assert isinstance(decision, Reconnect)
        assert decision.delay == 0.25
        assert proto.status is ConnStatus.DISCONNECTED
        assert proto.queued == [0]
        assert proto.fatal_error is None
    else:
        assert isinstance(decision, GiveUp)
        assert proto.status is ConnStatus.IDLE
        assert proto.fatal_error is decision.error
        outputs = proto.take_outputs()
        assert ActionRejected(0, decision.error) in outputs
        assert ErrorRaised(decision.error) in outputs
        assert proto.queued == []


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_error_frame_before_init_is_fatal(encoding: Encoding) -> None:
    proto, peer = make(encoding)
    proto.call("a", [])
    proto.call("b", [])
    decision = peer.send(
        Error("user", "forbidden", "no entry", {"why": "test"}, None, ActorSpecifier("x", 1))
    )
    assert isinstance(decision, GiveUp)
    error = decision.error
    assert (error.group, error.code, error.message, error.metadata) == (
        "user",
        "forbidden",
        "no entry",
        {"why": "test"},
    )
    outputs = proto.take_outputs()
    assert outputs.count(ErrorRaised(error)) == 1
    assert [o for o in outputs if isinstance(o, ActionRejected)] == [
        ActionRejected(0, error),
        ActionRejected(1, error),
    ]
    assert outputs[-1] == StatusChanged(ConnStatus.CONNECTING, ConnStatus.IDLE)
    # the close that follows changes nothing
    assert proto.socket_closed(1011, "user.forbidden") is None
    assert proto.take_outputs() == []
    with pytest.raises(ActorError) as info:
        proto.call("c", [])
    assert info.value is error
    with pytest.raises(ActorError):
        proto.begin_attempt()


def test_retryable_error_frame_before_init() -> None:
    proto, peer = make()
    proto.call("a", [])
    proto.take_outputs()
    decision = peer.send(Error("actor", "restarting", "later", None, None))
    assert isinstance(decision, Reconnect)
    outputs = proto.take_outputs()
    assert [type(o) for o in outputs] == [ErrorRaised, StatusChanged]
    assert proto.queued == [0]


def test_handshake_failures() -> None:
    proto, _ = make(start=False)
    proto.begin_attempt()
    refused = ActorError("client", "network_error", "refused")
    assert isinstance(proto.handshake_failed(refused, transient=True), Reconnect)
    proto.begin_attempt()
    params = ActorError("client", "get_params_failed", "boom")
    assert isinstance(proto.handshake_failed(params, transient=False), Reconnect)
    proto.begin_attempt()
    forbidden = ActorError("user", "forbidden", "no")
    assert proto.handshake_failed(forbidden, transient=False) == GiveUp(forbidden)
    assert proto.status is ConnStatus.IDLE


@pytest.mark.parametrize(
    ("status", "group_code", "dynamic", "retried"),
    [
        (503, None, False, True),
        (502, None, False, True),
        (504, None, False, True),
        (429, None, False, True),
        (408, None, False, True),
        (503, ("guard", "service_unavailable"), False, True),
        (500, None, False, False),
        (401, None, False, False),
        (403, ("user", "forbidden"), True, False),
        (404, ("actor", "not_found"), True, True),
        (404, ("actor", "not_found"), False, False),
        (400, ("guard", "query_invalid_params"), True, False),
    ],
)
def test_refused_upgrade_classification(
    status: int, group_code: tuple[str, str] | None, dynamic: bool, retried: bool
) -> None:
    error = None if group_code is None else ActorError(*group_code, "m")
    assert handshake_status_retryable(status, error, dynamic=dynamic) is retried


def test_is_retryable_codes() -> None:
    assert is_retryable("ws", "going_away", dynamic=False)
    assert is_retryable("actor", "restarting", dynamic=False)
    assert not is_retryable("user", "rejected", dynamic=True)
    assert not is_retryable("actor", "not_found", dynamic=False)
    assert is_retryable("actor", "destroyed_xyz", dynamic=True)


# -- dispose and cancel ----------------------------------------------------------------------------


def test_dispose_rejects_everything_and_stops() -> None:
    proto, peer = connected()
    proto.call("sent", [])
    proto.socket_closed(1006, "")
    proto.begin_attempt()
    proto.socket_opened()
    peer.init()
    proto.call("in_flight", [])
    proto.socket_closed(1006, "")
    proto.call("queued", [])
    proto.take_outputs()
    proto.dispose()
    outputs = proto.take_outputs()
    rejected = [o for o in outputs if isinstance(o, ActionRejected)]
    assert [o.action_id for o in rejected] == [2]
    assert rejected[0].error.full_code == "client.disposed"
    assert outputs[-1] == StatusChanged(ConnStatus.DISCONNECTED, ConnStatus.IDLE)
    assert proto.disposed
    proto.dispose()
    assert proto.take_outputs() == []
    with pytest.raises(ActorError) as info:
        proto.call("x", [])
    assert info.value.full_code == "client.disposed"


def test_dispose_while_connected_ignores_the_close_that_follows() -> None:
    proto, peer = connected()
    proto.call("x", [])
    proto.add_listener("ev")
    proto.dispose()
    assert proto.take_frames() == []
    outputs = proto.take_outputs()
    assert isinstance(outputs[0], ActionRejected)
    assert proto.socket_closed(1000, "Disposed") is None
    assert peer.send(Event("ev", [1])) is None
    assert proto.take_outputs() == []


def test_cancel() -> None:
    proto, peer = make()
    proto.call("never_sent", [])
    proto.call("sent", [])
    proto.cancel(0)
    peer.init()
    assert peer.sent() == [ActionRequest(1, "sent", [])]
    proto.cancel(1)
    proto.take_outputs()
    peer.send(ActionResponse(1, "late"))
    assert proto.take_outputs() == []


# -- errors and addressing helpers -----------------------------------------------------------------


def test_close_reason_parsing() -> None:
    assert parse_close_reason("actor.not_found#lb6cwzf8a5") == ("actor", "not_found")
    assert parse_close_reason("user.rejected") == ("user", "rejected")
    assert parse_close_reason("ws.going_away") == ("ws", "going_away")
    assert parse_close_reason("") is None
    assert parse_close_reason("Disposed") is None
    assert parse_close_reason("two words.x") is None
    error = close_error(1011, "user.rejected#ray")
    assert error.full_code == "user.rejected"
    assert error.metadata == {"closeCode": 1011, "closeReason": "user.rejected#ray"}


CONFIG = ClientConfig("http://h:1/api", "default", None, "default", "bare")
TOKEN_CONFIG = ClientConfig("https://h", "ns", "t/k", "pool", "json")


def test_connect_and_raw_urls() -> None:
    query = ActorQuery.get_or_create("chat", ["room 1"])
    assert ws_scheme(gateway_target_url(CONFIG, query, None, "/connect")) == (
        "ws://h:1/api/gateway/chat/connect?rvt-namespace=default&rvt-method=getOrCreate"
        "&rvt-runner=default&rvt-key=room+1&rvt-crash-policy=sleep"
    )
    assert ws_scheme(gateway_target_url(TOKEN_CONFIG, query, "abc", "/connect")) == (
        "wss://h/gateway/abc@t%2Fk/connect"
    )
    get = ActorQuery.get("chat", ["k"])
    assert gateway_target_url(TOKEN_CONFIG, get, None, actor_path("/request", "/a b?x=1")) == (
        "https://h/gateway/chat/request/a%20b?x=1&rvt-namespace=ns&rvt-method=get&rvt-key=k"
        "&rvt-token=t%2Fk"
    )
    assert gateway_target_url(CONFIG, get, "id1", actor_path("/websocket", "room?r=1")) == (
        "http://h:1/api/gateway/id1/websocket/room?r=1"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("", "/request"),
        ("/", "/request"),
        ("hello", "/request/hello"),
        ("/hello?x=1", "/request/hello?x=1"),
        ("?x=1", "/request?x=1"),
        ("/a/%2F/ü", "/request/a/%2F/%C3%BC"),
    ],
)
def test_actor_path(path: str, expected: str) -> None:
    assert actor_path("/request", path) == expected


def test_subprotocols() -> None:
    assert conn_subprotocols("cbor", None) == ["rivet", "rivet_encoding.cbor"]
    offered = conn_subprotocols("json", params_json({"token": "a b/é", "n": [1]}))
    assert offered == [
        "rivet",
        "rivet_encoding.json",
        "rivet_conn_params.%7B%22token%22%3A%22a%20b%2F%5Cu00e9%22%2C%22n%22%3A%5B1%5D%7D",
    ]
    with pytest.raises(TypeError):
        params_json({"x": object()})
