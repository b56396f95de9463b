from __future__ import annotations

import dataclasses
from typing import Any

import cbor2
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rivetkit._protocol import (
    BARE,
    CBOR,
    CONTENT_TYPES,
    JSON,
    MISSING,
    ActionRequest,
    ActionResponse,
    ActorSpecifier,
    BigInt,
    Codec,
    DecodeError,
    Error,
    Event,
    HttpQueueSendRequest,
    HttpQueueSendResponse,
    HttpResponseError,
    Init,
    SubscriptionRequest,
    encoding_from_header,
    encoding_from_subprotocol,
    get_codec,
)
from rivetkit._protocol.values import MAX_SAFE_INTEGER

ACTOR_ID = "xg2m1cvf8w2cr3ihdlh03ucwgxal00"  # 30 bytes, as in the spec transcripts
CONN_ID = "fe476904-b6a6-4230-a95e-12db41206f24"  # 36 bytes
ACTOR = ActorSpecifier(ACTOR_ID, 1, "k1")
CODECS = [JSON, CBOR, BARE]


def h(*parts: str) -> bytes:
    """Golden bytes written as in the spec: hex groups and "quoted text"."""
    out = b""
    for part in parts:
        if part.startswith('"'):
            out += part.strip('"').encode()
        else:
            out += bytes.fromhex(part)
    return out


def jloads(data: bytes | str) -> Any:
    return orjson.loads(data)


# ---------------------------------------------------------------------------------------------
# selection


@pytest.mark.parametrize(
    ("header", "encoding"),
    [
        (None, "json"),
        ("json", "json"),
        ("cbor", "cbor"),
        ("bare", "bare"),
        ("msgpack", "json"),
        ("", "json"),
    ],
)
def test_encoding_from_header(header: str | None, encoding: str) -> None:
    assert encoding_from_header(header) == encoding


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (None, "json"),
        ("rivet_encoding.json", "json"),
        ("rivet_encoding.cbor", "cbor"),
        ("rivet_encoding.bare", "bare"),
        ("bare", "bare"),
    ],
)
def test_encoding_from_subprotocol(value: str | None, encoding: str) -> None:
    assert encoding_from_subprotocol(value) == encoding


@pytest.mark.parametrize("value", ["rivet_encoding.msgpack", "rivet_encoding.", "xml"])
def test_encoding_from_subprotocol_unknown(value: str) -> None:
    with pytest.raises(DecodeError, match="unsupported websocket encoding"):
        encoding_from_subprotocol(value)


def test_codec_registry() -> None:
    assert get_codec("json") is JSON and get_codec("cbor") is CBOR and get_codec("bare") is BARE
    assert [c.encoding for c in CODECS] == ["json", "cbor", "bare"]
    assert CONTENT_TYPES == {
        "json": "application/json",
        "cbor": "application/octet-stream",
        "bare": "application/octet-stream",
    }
    assert JSON.content_type == "application/json" and not JSON.binary
    assert CBOR.binary and BARE.binary
    with pytest.raises(ValueError):
        get_codec("xml")  # type: ignore[arg-type]
    assert repr(BARE) == "<Codec bare>"


# ---------------------------------------------------------------------------------------------
# golden bytes: BARE (§8.5, §13.2, §13.3, §13.5, §10)

BARE_INIT = h("0400", "00", "1e", f'"{ACTOR_ID}"', "24", f'"{CONN_ID}"')
BARE_SUBSCRIBE = h("0400", "01", "08", '"newCount"', "01")
BARE_ACTION_REQ = h("0400", "00", "00", "09", '"increment"', "02", "8105")
BARE_EVENT = h("0400", "03", "08", '"newCount"', "03", "81181d")
BARE_ACTION_RES = h("0400", "02", "00", "02", "181d")
BARE_ERROR = h(
    "0400",
    "01",
    "04",
    '"user"',
    "07",
    '"my_code"',
    "0d",
    '"boom happened"',
    "01",
    "04",
    "a1616101",
    "01",
    "01",
    "01",
    "1e",
    f'"{ACTOR_ID}"',
    "01",
    "01",
    "02",
    '"k1"',
)
BARE_CONN_ERROR = h(
    "0400",
    "01",
    "04",
    '"user"',
    "08",
    '"rejected"',
    "13",
    '"connection rejected"',
    "01",
    "0a",
    "a163776879",
    "6474657374",
    "00",
    "00",
)
ERROR = Error("user", "my_code", "boom happened", {"a": 1}, 1, ACTOR)
CONN_ERROR = Error("user", "rejected", "connection rejected", {"why": "test"}, None, None)


@pytest.mark.parametrize(
    ("msg", "frame"),
    [
        (Init(ACTOR_ID, CONN_ID), BARE_INIT),
        (Event("newCount", [29]), BARE_EVENT),
        (ActionResponse(0, 29), BARE_ACTION_RES),
        (ERROR, BARE_ERROR),
        (CONN_ERROR, BARE_CONN_ERROR),
    ],
)
def test_bare_to_client_golden(msg: Any, frame: bytes) -> None:
    assert BARE.encode_to_client(msg) == frame
    assert BARE.decode_to_client(frame) == msg


@pytest.mark.parametrize(
    ("msg", "frame"),
    [
        (SubscriptionRequest("newCount", True), BARE_SUBSCRIBE),
        (ActionRequest(0, "increment", [5]), BARE_ACTION_REQ),
        (ActionRequest(1, "fail", []), h("0400", "00", "01", "04", "6661696c", "01", "80")),
    ],
)
def test_bare_to_server_golden(msg: Any, frame: bytes) -> None:
    assert BARE.encode_to_server(msg) == frame
    assert BARE.decode_to_server(frame) == msg


def test_bare_full_session_13_5() -> None:
    conn_id = "30c3a4f2-5a0b-4b1e-8f2a-1c2d3e4f5a96"
    init = BARE.encode_to_client(Init(ACTOR_ID, conn_id))
    assert isinstance(init, bytes)
    assert init.hex().startswith("0400001e7867") and init.hex().endswith("3936")
    assert BARE.decode_to_server(h("0400 01 08 6e6577436f756e74 01")) == SubscriptionRequest(
        "newCount", True
    )
    assert BARE.decode_to_server(h("0400 00 00 09 696e6372656d656e74 02 8105")) == ActionRequest(
        0, "increment", [5]
    )
    assert BARE.encode_to_client(Event("newCount", [29])) == h(
        "0400 03 08 6e6577436f756e74 03 81181d"
    )
    assert BARE.encode_to_client(ActionResponse(0, 29)) == h("0400 02 00 02 181d")
    assert BARE.decode_to_server(h("0400 00 01 04 6661696c 01 80")) == ActionRequest(1, "fail", [])
    error = BARE.encode_to_client(ERROR)
    assert isinstance(error, bytes)
    assert error.startswith(h("0400 01 04 75736572 07 6d795f636f6465 0d"))
    assert error.endswith(h("01 04 a1616101 01 01 01 1e") + ACTOR_ID.encode() + h("01 01 02 6b31"))


def test_bare_http_action_13_2() -> None:
    assert BARE.decode_action_request(h("0400 02 8101")) == [1]
    assert BARE.encode_action_response(24) == h("0400 02 1818")
    assert BARE.encode_action_request([1]) == h("0400 02 8101")
    assert BARE.decode_action_response(h("0400 02 1818")) == 24


def test_bare_echo_bigint_args() -> None:
    body = h("0400 0e 81 82 67 24426967496e74 63 313233")
    assert BARE.encode_action_request([BigInt(123)]) == body
    args = BARE.decode_action_request(body)
    assert args == [123] and type(args[0]) is BigInt
    assert BARE.encode_action_response(args[0]) == h("0400 0d 82 67 24426967496e74 63 313233")


BARE_HTTP_ERROR = h(
    "0400",
    "04",
    '"user"',
    "07",
    '"my_code"',
    "0d",
    '"boom happened"',
    "01",
    "04",
    "a1616101",
    "01",
    "1e",
    f'"{ACTOR_ID}"',
    "01",
    "01",
    "02",
    '"k1"',
)
HTTP_ERROR = HttpResponseError("user", "my_code", "boom happened", {"a": 1}, ACTOR)


def test_bare_http_error_13_3() -> None:
    assert BARE.encode_http_error(HTTP_ERROR) == BARE_HTTP_ERROR
    assert BARE.decode_http_error(BARE_HTTP_ERROR) == HTTP_ERROR


def test_bare_queue_example_10() -> None:
    request = h(
        "0400",
        "0b",
        "b9000166616d6f756e7401",
        "01",
        "04",
        '"jobs"',
        "0101",
        "01",
        "b80b000000000000",
    )
    assert BARE.decode_queue_send_request(request) == HttpQueueSendRequest(
        {"amount": 1}, "jobs", True, 3000
    )
    # The spec's bytes come from cbor-x (non-minimal map header); they decode the same.
    response = h("0400", "09", '"completed"', "01", "0b", "b900016576616c7565181e")
    assert BARE.decode_queue_send_response(response) == HttpQueueSendResponse(
        "completed", {"value": 30}
    )
    # We write minimal CBOR headers; the rest of the layout is identical.
    assert BARE.encode_queue_send_response(HttpQueueSendResponse("completed", {"value": 30})) == h(
        "0400", "09", '"completed"', "01", "09", "a16576616c7565181e"
    )
    assert BARE.encode_queue_send_response(HttpQueueSendResponse("completed")) == h(
        "0400", "09", '"completed"', "00"
    )
    assert BARE.encode_queue_send_request(
        HttpQueueSendRequest({"amount": 1}, "jobs", True, 3000)
    ) == h(
        "0400", "09", "a166616d6f756e7401", "01", "04", '"jobs"', "0101", "01", "b80b000000000000"
    )


# ---------------------------------------------------------------------------------------------
# golden bytes: CBOR (§8.5, §13.2, §13.3)

CBOR_INIT = h(
    "a1 64 626f6479 a2 63 746167 64 496e6974 63 76616c a2 67 6163746f724964 78 1e",
    f'"{ACTOR_ID}"',
    "6c 636f6e6e656374696f6e4964 78 24",
    f'"{CONN_ID}"',
)
CBOR_CLIENT_ACTION_REQ = h(
    "b9 0001 64 626f6479 b9 0002 63 746167 6d 416374696f6e52657175657374 63 76616c b9 0003"
    "62 6964 1b 0000000000000000 64 6e616d65 69 696e6372656d656e74 64 61726773 81 05"
)
CBOR_ACTION_RES = h(
    "a1 64 626f6479 a2 63 746167 6e 416374696f6e526573706f6e7365 63 76616c a2 62 6964"
    "1b 0000000000000000 66 6f7574707574 16"
)
CBOR_ACTOR_WS = h(
    "a3 67",
    '"actorId"',
    "78 1e",
    f'"{ACTOR_ID}"',
    "6a",
    '"generation"',
    "1b 0000000000000001",
    "63",
    '"key"',
    "62",
    '"k1"',
)
CBOR_ERROR = (
    h(
        "a1 64",
        '"body"',
        "a2 63",
        '"tag"',
        "65",
        '"Error"',
        "63",
        '"val"',
        "a6",
        "65",
        '"group"',
        "64",
        '"user"',
        "64",
        '"code"',
        "67",
        '"my_code"',
        "67",
        '"message"',
        "6d",
        '"boom happened"',
        "68",
        '"metadata"',
        "a1 61 61 01",
        "65",
        '"actor"',
    )
    + CBOR_ACTOR_WS
    + h("68", '"actionId"', "1b 0000000000000001")
)


def test_cbor_frames_8_5() -> None:
    assert CBOR.encode_to_client(Init(ACTOR_ID, CONN_ID)) == CBOR_INIT
    assert CBOR.encode_to_client(ActionResponse(0, 22)) == CBOR_ACTION_RES
    assert CBOR.encode_to_client(ERROR) == CBOR_ERROR
    assert CBOR.decode_to_server(CBOR_CLIENT_ACTION_REQ) == ActionRequest(0, "increment", [5])
    for frame, msg in [
        (CBOR_INIT, Init(ACTOR_ID, CONN_ID)),
        (CBOR_ACTION_RES, ActionResponse(0, 22)),
        (CBOR_ERROR, ERROR),
    ]:
        assert CBOR.decode_to_client(frame) == msg


def test_cbor_conn_error_has_null_action_id_and_no_actor() -> None:
    frame = CBOR.encode_to_client(Error("user", "rejected", "connection rejected"))
    assert isinstance(frame, bytes)
    assert frame.endswith(h("68", '"actionId"', "f6"))
    val = cbor2.loads(frame)["body"]["val"]
    assert list(val) == ["group", "code", "message", "actionId"]
    assert val["actionId"] is None


def test_cbor_client_action_request() -> None:
    assert CBOR.encode_to_server(ActionRequest(0, "increment", [5])) == h(
        "a1 64 626f6479 a2 63 746167 6d 416374696f6e52657175657374 63 76616c a3"
        "62 6964 1b 0000000000000000 64 6e616d65 69 696e6372656d656e74 64 61726773 81 05"
    )


def test_cbor_http_13_2() -> None:
    assert CBOR.decode_action_request(h("b9 0001 64 61726773 81 01")) == [1]
    assert CBOR.encode_action_response(17) == h("a1 66 6f7574707574 11")
    assert CBOR.decode_action_response(h("a1 66 6f7574707574 11")) == 17


def test_cbor_http_error_13_3() -> None:
    expected = h(
        "a5 65",
        '"actor"',
        "a3 67",
        '"actorId"',
        "78 1e",
        f'"{ACTOR_ID}"',
        "6a",
        '"generation"',
        "01 63",
        '"key"',
        "62",
        '"k1"',
        "64",
        '"code"',
        "67",
        '"my_code"',
        "65",
        '"group"',
        "64",
        '"user"',
        "67",
        '"message"',
        "6d",
        '"boom happened"',
        "68",
        '"metadata"',
        "a1 61 61 01",
    )
    assert CBOR.encode_http_error(HTTP_ERROR) == expected
    assert CBOR.decode_http_error(expected) == HTTP_ERROR


def test_cbor_native_values_in_envelope() -> None:
    body = CBOR.encode_action_response([BigInt(5), b"\x01", ["$x", 1], 2**40])
    assert body == h(
        "a1 66", '"output"', "84 1b0000000000000005 4101 82 63242478 01 fb4270000000000000"
    )
    out = CBOR.decode_action_response(body)
    assert out == [5, b"\x01", ["$x", 1], 2**40]
    assert [type(v) for v in out] == [BigInt, bytes, list, int]
    # cbor-x sends Uint8Array as tag 64 and undefined as f7.
    assert CBOR.decode_action_request(h("a1 64", '"args"', "83 d840 43 010203 f7 f6")) == [
        b"\x01\x02\x03",
        None,
        None,
    ]


def test_cbor_client_values_are_raw() -> None:
    # The official client CBOR-encodes requests without the compat layer: ["$foo", 1] arrives
    # as it is and must not be revived; answers are escaped because the client revives them.
    body = h(
        "b9 0001 64",
        '"args"',
        "83 82 64",
        '"$foo"',
        "01 82 65",
        '"$$bar"',
        "02 82 61",
        '"$"',
        "61",
        '"x"',
    )
    args = CBOR.decode_action_request(body)
    assert args == [["$foo", 1], ["$$bar", 2], ["$", "x"]]
    out = CBOR.encode_action_response(args)
    assert out == h(
        "a1 66",
        '"output"',
        "83 82 65",
        '"$$foo"',
        "01 82 66",
        '"$$$bar"',
        "02 82 62",
        '"$$"',
        "61",
        '"x"',
    )
    assert CBOR.decode_action_response(out) == args
    # Our client mirrors the official one: raw out, revive in.
    assert CBOR.encode_action_request(args) == h("a1 64", '"args"') + body[8:]
    frame = CBOR.encode_to_server(ActionRequest(1, "echo", [["$foo", 1]]))
    assert CBOR.decode_to_server(frame) == ActionRequest(1, "echo", [["$foo", 1]])
    # JSON and BARE escape in both directions, so unknown tags there are errors.
    with pytest.raises(DecodeError, match="unknown compat tag"):
        JSON.decode_action_request(b'{"args":[["$foo",1]]}')


def test_cbor_bigint_echo() -> None:
    # Scenario 9 of the compat suite: echo(123n) keeps the bigint type in cbor too.
    args = CBOR.decode_action_request(h("b9 0001 64 61726773 81 1b 000000000000007b"))
    assert args == [123] and type(args[0]) is BigInt
    assert CBOR.encode_action_response(args[0]) == h("a1 66 6f7574707574 1b 000000000000007b")
    args = CBOR.decode_action_request(h("b9 0001 64 61726773 81 3b 0000000000000004"))
    assert args == [-5] and type(args[0]) is BigInt
    assert CBOR.encode_action_response(123) == h("a1 66 6f7574707574 18 7b")


# ---------------------------------------------------------------------------------------------
# golden JSON (§8.3, §13.1, §13.3, §13.6, §13.8)


def test_json_frames_8_3() -> None:
    init = JSON.encode_to_client(Init(ACTOR_ID, CONN_ID))
    assert init == (
        '{"body":{"tag":"Init","val":{"actorId":"xg2m1cvf8w2cr3ihdlh03ucwgxal00",'
        '"connectionId":"fe476904-b6a6-4230-a95e-12db41206f24"}}}'
    )
    assert JSON.decode_to_server(
        '{"body":{"tag":"SubscriptionRequest","val":{"eventName":"newCount","subscribe":true}}}'
    ) == SubscriptionRequest("newCount", True)
    assert JSON.decode_to_server(
        b'{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","0"],"name":"increment","args":[5]}}}'
    ) == ActionRequest(0, "increment", [5])
    assert jloads(JSON.encode_to_client(Event("newCount", [15]))) == jloads(
        '{"body":{"tag":"Event","val":{"args":[15],"name":"newCount"}}}'
    )
    assert JSON.encode_to_client(ActionResponse(0, 15)) == (
        '{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","0"],"output":15}}}'
    )
    assert jloads(JSON.encode_to_client(ERROR)) == jloads(
        '{"body":{"tag":"Error","val":{"actionId":["$BigInt","1"],"actor":{"actorId":'
        '"xg2m1cvf8w2cr3ihdlh03ucwgxal00","generation":1,"key":"k1"},"code":"my_code",'
        '"group":"user","message":"boom happened","metadata":{"a":1}}}}'
    )


def test_json_conn_error_13_6() -> None:
    frame = JSON.encode_to_client(CONN_ERROR)
    assert isinstance(frame, str)
    assert jloads(frame) == {
        "body": {
            "tag": "Error",
            "val": {
                "actionId": None,
                "code": "rejected",
                "group": "user",
                "message": "connection rejected",
                "metadata": {"why": "test"},
            },
        }
    }
    assert JSON.decode_to_client(frame) == CONN_ERROR


def test_json_error_omits_absent_fields() -> None:
    val = jloads(JSON.encode_to_client(Error("g", "c", "m")))["body"]["val"]
    assert val == {"group": "g", "code": "c", "message": "m", "actionId": None}
    actor = jloads(JSON.encode_to_client(Error("g", "c", "m", actor=ActorSpecifier("a", 2))))
    assert actor["body"]["val"]["actor"] == {"actorId": "a", "generation": 2}
    http = jloads(JSON.encode_http_error(HttpResponseError("g", "c", "m")))
    assert http == {"group": "g", "code": "c", "message": "m"}


def test_json_http_13_1_and_13_3() -> None:
    assert JSON.decode_action_request(b'{"args":[1]}') == [1]
    assert JSON.encode_action_response(1) == b'{"output":1}'
    args = JSON.decode_action_request(b'{"args":[["$BigInt","123"]]}')
    assert args == [123] and type(args[0]) is BigInt
    assert JSON.encode_action_response(args) == b'{"output":[["$BigInt","123"]]}'
    args = JSON.decode_action_request(b'{"args":[["$Uint8Array","AQID"]]}')
    assert args == [b"\x01\x02\x03"]
    assert JSON.encode_action_response(args) == b'{"output":[["$Uint8Array","AQID"]]}'
    assert JSON.decode_action_response(b'{"output":["$Undefined",0]}') is None
    assert jloads(JSON.encode_http_error(HTTP_ERROR)) == jloads(
        '{"actor":{"actorId":"xg2m1cvf8w2cr3ihdlh03ucwgxal00","generation":1,"key":"k1"},'
        '"code":"my_code","group":"user","message":"boom happened","metadata":{"a":1}}'
    )
    gateway = b'{"group":"actor","code":"not_found","message":"The actor does not exist or was destroyed."}'
    assert JSON.decode_http_error(gateway) == HttpResponseError(
        "actor", "not_found", "The actor does not exist or was destroyed."
    )


def test_json_queue_10_and_13_8() -> None:
    assert JSON.decode_queue_send_request(
        b'{"body":{"amount":3},"name":"jobs","wait":true,"timeout":5000}'
    ) == HttpQueueSendRequest({"amount": 3}, "jobs", True, 5000)
    assert JSON.decode_queue_send_request(b'{"body":{"amount":3},"name":"jobs","wait":false}') == (
        HttpQueueSendRequest({"amount": 3}, "jobs", False, None)
    )
    assert JSON.decode_queue_send_request(b'{"body":1,"timeout":1500.0}').timeout == 1500
    assert jloads(
        JSON.encode_queue_send_response(HttpQueueSendResponse("completed", {"value": 5}))
    ) == {
        "response": {"value": 5},
        "status": "completed",
    }
    assert (
        JSON.encode_queue_send_response(HttpQueueSendResponse("timedOut"))
        == b'{"status":"timedOut"}'
    )
    assert JSON.decode_queue_send_response(b'{"status":"completed"}') == HttpQueueSendResponse(
        "completed"
    )
    assert (
        JSON.decode_queue_send_response(b'{"status":"completed","response":null}').response is None
    )


@pytest.mark.parametrize(
    ("body", "args"),
    [
        (b'{"args":5}', [5]),
        (b'{"args":null}', []),
        (b"{}", []),
        (b'{"args":"x"}', ["x"]),
        (b'{"args":{"a":1}}', [{"a": 1}]),  # official server: any non-array is wrapped
        (b'{"args":["$$x",1]}', ["$x", 1]),
        (b'{"args":[18446744073709552000]}', [1.8446744073709552e19]),  # JS prints 2**64 so
        (b'{"args":["\\u0024BigInt","5"]}', [5]),
    ],
)
def test_json_action_request_leniency(body: bytes, args: list[Any]) -> None:
    assert JSON.decode_action_request(body) == args


@pytest.mark.parametrize("codec", [JSON, CBOR])
def test_tree_codecs_accept_plain_number_ids(codec: Codec) -> None:
    frame: bytes | str
    if codec is JSON:
        frame = '{"body":{"tag":"ActionRequest","val":{"id":7,"name":"a","args":[]}}}'
    else:
        frame = h(
            "a1 64",
            '"body"',
            "a2 63",
            '"tag"',
            "6d",
            '"ActionRequest"',
            "63",
            '"val"',
            "a3 62",
            '"id"',
            "07 64",
            '"name"',
            "61",
            '"a"',
            "64",
            '"args"',
            "80",
        )
    assert codec.decode_to_server(frame) == ActionRequest(7, "a", [])


def test_output_types() -> None:
    assert isinstance(JSON.encode_to_client(Init("a", "b")), str)
    assert isinstance(JSON.encode_to_server(SubscriptionRequest("e", True)), str)
    for codec in (CBOR, BARE):
        assert isinstance(codec.encode_to_client(Init("a", "b")), bytes)
        assert isinstance(codec.encode_to_server(SubscriptionRequest("e", True)), bytes)
    assert JSON.decode_to_client(JSON.encode_to_client(Init("a", "b")).encode()) == Init("a", "b")  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# BARE versions


def _with_version(frame: bytes, version: int) -> bytes:
    return bytes([version, 0]) + frame[2:]


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_bare_accepts_request_versions(version: int) -> None:
    assert BARE.decode_action_request(_with_version(h("0400 02 8101"), version)) == [1]
    assert BARE.decode_to_server(_with_version(BARE_SUBSCRIBE, version)) == SubscriptionRequest(
        "newCount", True
    )
    assert BARE.decode_to_server(_with_version(BARE_ACTION_REQ, version)) == ActionRequest(
        0, "increment", [5]
    )
    assert BARE.decode_action_response(_with_version(h("0400 02 1818"), version)) == 24
    for frame, msg in [
        (BARE_EVENT, Event("newCount", [29])),
        (BARE_ACTION_RES, ActionResponse(0, 29)),
    ]:
        assert BARE.decode_to_client(_with_version(frame, version)) == msg


def test_bare_v1_init_has_connection_token() -> None:
    v1 = h("0100 00 01", '"a"', "01", '"c"', "03", '"tok"')
    assert BARE.decode_to_client(v1) == Init("a", "c")
    with pytest.raises(DecodeError, match="trailing"):
        BARE.decode_to_client(_with_version(v1, 2))
    with pytest.raises(DecodeError, match="truncated"):
        BARE.decode_to_client(_with_version(BARE_INIT, 1))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_bare_pre_v4_errors_have_no_actor(version: int) -> None:
    ws = h("00 01 01", '"g"', "01", '"c"', "01", '"m"', "00 01 07")
    assert BARE.decode_to_client(bytes([version]) + ws) == Error("g", "c", "m", None, 7, None)
    http = h("00 01", '"g"', "01", '"c"', "01", '"m"', "00")
    assert BARE.decode_http_error(bytes([version]) + http) == HttpResponseError("g", "c", "m")
    with pytest.raises(DecodeError, match="trailing"):
        BARE.decode_http_error(bytes([version]) + http + b"\x00")


@pytest.mark.parametrize("version", [3, 4])
def test_bare_queue_versions_accepted(version: int) -> None:
    body = h(f"0{version}00 01 01 00 00 00")
    assert BARE.decode_queue_send_request(body) == HttpQueueSendRequest(1)
    assert BARE.decode_queue_send_response(h(f"0{version}00 01", '"x"', "00")) == (
        HttpQueueSendResponse("x")
    )


@pytest.mark.parametrize("version", [0, 1, 2, 5, 9])
def test_bare_queue_versions_rejected(version: int) -> None:
    with pytest.raises(DecodeError, match=f"unsupported protocol version {version}"):
        BARE.decode_queue_send_request(bytes([version, 0]) + h("01 01 00 00 00"))
    with pytest.raises(DecodeError, match="unsupported protocol version"):
        BARE.decode_queue_send_response(bytes([version, 0]) + h("01 78 00"))


@pytest.mark.parametrize("version", [0, 5, 9, 0x104])
def test_bare_rejects_unknown_versions(version: int) -> None:
    prefix = version.to_bytes(2, "little")
    for call, frame in [
        (BARE.decode_action_request, h("0400 02 8101")),
        (BARE.decode_to_server, BARE_ACTION_REQ),
        (BARE.decode_to_client, BARE_INIT),
        (BARE.decode_action_response, h("0400 02 1818")),
        (BARE.decode_http_error, BARE_HTTP_ERROR),
    ]:
        with pytest.raises(DecodeError, match="unsupported protocol version"):
            call(prefix + frame[2:])


# ---------------------------------------------------------------------------------------------
# malformed input

BARE_DECODERS = [
    (BARE.decode_to_server, BARE_ACTION_REQ),
    (BARE.decode_to_server, BARE_SUBSCRIBE),
    (BARE.decode_to_client, BARE_INIT),
    (BARE.decode_to_client, BARE_ERROR),
    (BARE.decode_to_client, BARE_CONN_ERROR),
    (BARE.decode_to_client, BARE_EVENT),
    (BARE.decode_to_client, BARE_ACTION_RES),
    (BARE.decode_action_request, h("0400 02 8101")),
    (BARE.decode_action_response, h("0400 02 1818")),
    (BARE.decode_http_error, BARE_HTTP_ERROR),
    (BARE.decode_queue_send_request, h("0400 01 01 01 01", '"q"', "0101 01 0100000000000000")),
    (BARE.decode_queue_send_response, h("0400 01", '"x"', "01 01 01")),
]


@pytest.mark.parametrize(("decode", "frame"), BARE_DECODERS)
def test_bare_truncated_and_trailing(decode: Any, frame: bytes) -> None:
    decode(frame)
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            decode(frame[:cut])
    with pytest.raises(DecodeError, match="trailing"):
        decode(frame + b"\x00")


def test_bare_unknown_union_tags() -> None:
    with pytest.raises(DecodeError, match="unknown union tag 2"):
        BARE.decode_to_server(h("0400 02 00"))
    with pytest.raises(DecodeError, match="unknown union tag 4"):
        BARE.decode_to_client(h("0400 04 00"))


def test_bare_bad_cbor_inside() -> None:
    with pytest.raises(DecodeError, match="invalid CBOR"):
        BARE.decode_action_request(h("0400 01 ff"))
    with pytest.raises(DecodeError, match="trailing byte"):
        BARE.decode_action_request(h("0400 02 0101"))
    with pytest.raises(DecodeError, match="unknown compat tag"):
        BARE.decode_action_request(h("0400 08 81 82 64 24466f6f 01"))


@pytest.mark.parametrize("codec", [CBOR, BARE])
def test_binary_codecs_reject_text_frames(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="text frame"):
        codec.decode_to_server("{}")
    with pytest.raises(DecodeError, match="text frame"):
        codec.decode_to_client("{}")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "invalid JSON"),
        ("", "invalid JSON"),
        ("NaN", "invalid JSON"),
        ("[1]", "expected an object"),
        ("{}", "body: expected an object"),
        ('{"body":{"tag":1,"val":{}}}', "tag must be a string"),
        ('{"body":{"tag":"Nope","val":{}}}', "unknown tag 'Nope'"),
        ('{"body":{"tag":"ActionRequest"}}', "val: expected an object"),
        (
            '{"body":{"tag":"ActionRequest","val":{"name":"a","args":[]}}}',
            "'id' must be an unsigned",
        ),
        (
            '{"body":{"tag":"ActionRequest","val":{"id":"0","name":"a"}}}',
            "'id' must be an unsigned",
        ),
        ('{"body":{"tag":"ActionRequest","val":{"id":-1,"name":"a"}}}', "'id' out of range"),
        (
            '{"body":{"tag":"ActionRequest","val":{"id":true,"name":"a"}}}',
            "'id' must be an unsigned",
        ),
        (
            '{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","x"],"name":"a"}}}',
            "invalid integer",
        ),
        ('{"body":{"tag":"ActionRequest","val":{"id":0,"args":[]}}}', "'name' must be a string"),
        (
            '{"body":{"tag":"ActionRequest","val":{"id":0,"name":"a","args":[["$Foo",1]]}}}',
            "unknown compat tag",
        ),
        (
            '{"body":{"tag":"SubscriptionRequest","val":{"eventName":"e","subscribe":1}}}',
            "'subscribe' must be a boolean",
        ),
    ],
)
def test_json_to_server_errors(data: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        JSON.decode_to_server(data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b"\xff", "invalid JSON"),
        (b"[1]", "expected an object"),
        (b"5", "expected an object"),
        (b'{"args":[["$Foo",1]]}', "unknown compat tag '\\$Foo'"),
        (b'{"args":{"a":["$Foo",1]}}', "unknown compat tag"),
    ],
)
def test_json_action_request_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        JSON.decode_action_request(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"body":1,"wait":"yes"}', "'wait' must be a boolean"),
        (b'{"body":1,"timeout":-5}', "'timeout' out of range"),
        (b'{"body":1,"timeout":"5"}', "'timeout' must be an unsigned"),
        (b'{"body":1,"name":5}', "'name' must be a string"),
        (b"[]", "expected an object"),
    ],
)
def test_json_queue_request_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        JSON.decode_queue_send_request(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (h("ff"), "invalid CBOR"),
        (h("a1 64", '"args"', "81 01 00"), "trailing byte"),
        (h("a1 64", '"args"'), "invalid CBOR"),
        (h("81 01"), "expected an object"),
    ],
)
def test_cbor_action_request_errors(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        CBOR.decode_action_request(body)


def test_client_side_shape_errors() -> None:
    with pytest.raises(DecodeError, match="'group' must be a string"):
        JSON.decode_http_error(b'{"code":"c","message":"m"}')
    with pytest.raises(DecodeError, match="actor: expected an object"):
        JSON.decode_http_error(b'{"group":"g","code":"c","message":"m","actor":5}')
    with pytest.raises(DecodeError, match="'generation' must be an unsigned"):
        JSON.decode_http_error(b'{"group":"g","code":"c","message":"m","actor":{"actorId":"a"}}')
    with pytest.raises(DecodeError, match="'status' must be a string"):
        CBOR.decode_queue_send_response(h("a0"))
    with pytest.raises(DecodeError, match="unknown tag"):
        JSON.decode_to_client('{"body":{"tag":"ActionRequest","val":{}}}')


def test_encode_rejects_wrong_message_types() -> None:
    for codec in CODECS:
        with pytest.raises(TypeError):
            codec.encode_to_client(ActionRequest(0, "a", []))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            codec.encode_to_server(Init("a", "b"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not serializable"):
            codec.encode_action_response(object())


# ---------------------------------------------------------------------------------------------
# round trips of every message in every encoding

TAGGY = st.sampled_from(["$", "$x", "$$x", "$BigInt", "$Uint8Array", "$Undefined"])
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**66), max_value=2**66).map(BigInt)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | TAGGY
    | st.binary()
)
VALUE = st.recursive(
    SCALAR,
    lambda c: (
        st.lists(c, max_size=3)
        | st.tuples(TAGGY, c).map(list)
        | st.dictionaries(st.text() | TAGGY, c, max_size=3)
    ),
    max_leaves=12,
)
U64 = st.integers(min_value=0, max_value=2**64 - 1)
TEXT = st.text()
ACTORS = st.none() | st.builds(ActorSpecifier, TEXT, st.integers(0, 2**32), st.none() | TEXT)
METADATA = st.none() | VALUE.filter(lambda v: v is not None)

TO_CLIENT = st.one_of(
    st.builds(Init, TEXT, TEXT),
    st.builds(Error, TEXT, TEXT, TEXT, METADATA, st.none() | U64, ACTORS),
    st.builds(ActionResponse, U64, VALUE),
    st.builds(Event, TEXT, st.lists(VALUE, max_size=3)),
)
TO_SERVER = st.one_of(
    st.builds(ActionRequest, U64, TEXT, st.lists(VALUE, max_size=3)),
    st.builds(SubscriptionRequest, TEXT, st.booleans()),
)
VALUE_FIELDS = {"output", "args", "metadata", "body", "response"}


def expected_value(value: Any, encoding: str) -> Any:
    if type(value) is int and not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return BigInt(value)
    if (
        type(value) is float
        and encoding != "json"
        and value.is_integer()
        and 2**31 <= abs(value) <= MAX_SAFE_INTEGER
    ):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [expected_value(v, encoding) for v in value]
    if isinstance(value, dict):
        return {k: expected_value(v, encoding) for k, v in value.items()}
    return value


def assert_value(actual: Any, expected: Any, encoding: str) -> None:
    # Types are kept in every encoding (CBOR keeps bigints via the 8-byte integer form).
    assert type(actual) is type(expected), (actual, expected)
    if isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_value(a, e, encoding)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_value(actual[key], expected[key], encoding)
    else:
        assert actual == expected


def assert_message(actual: Any, expected: Any, encoding: str) -> None:
    assert type(actual) is type(expected)
    for field in dataclasses.fields(expected):
        a, e = getattr(actual, field.name), getattr(expected, field.name)
        if field.name in VALUE_FIELDS and e is not MISSING:
            assert_value(a, expected_value(e, encoding), encoding)
        else:
            assert a == e, (field.name, a, e)
            assert type(a) is type(e) or isinstance(e, ActorSpecifier)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.encoding)
@given(msg=TO_CLIENT)
def test_to_client_roundtrip(codec: Codec, msg: Any) -> None:
    assert_message(codec.decode_to_client(codec.encode_to_client(msg)), msg, codec.encoding)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.encoding)
@given(msg=TO_SERVER)
def test_to_server_roundtrip(codec: Codec, msg: Any) -> None:
    assert_message(codec.decode_to_server(codec.encode_to_server(msg)), msg, codec.encoding)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.encoding)
@given(args=st.lists(VALUE, max_size=4), output=VALUE)
def test_http_action_roundtrip(codec: Codec, args: list[Any], output: Any) -> None:
    assert_value(
        codec.decode_action_request(codec.encode_action_request(args)),
        expected_value(args, codec.encoding),
        codec.encoding,
    )
    assert_value(
        codec.decode_action_response(codec.encode_action_response(output)),
        expected_value(output, codec.encoding),
        codec.encoding,
    )


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.encoding)
@given(
    req=st.builds(
        HttpQueueSendRequest, VALUE, st.none() | TEXT, st.none() | st.booleans(), st.none() | U64
    ),
    resp=st.builds(
        HttpQueueSendResponse, st.sampled_from(["completed", "timedOut"]), st.just(MISSING) | VALUE
    ),
    err=st.builds(HttpResponseError, TEXT, TEXT, TEXT, METADATA, ACTORS),
)
def test_http_queue_and_error_roundtrip(
    codec: Codec, req: HttpQueueSendRequest, resp: HttpQueueSendResponse, err: HttpResponseError
) -> None:
    assert_message(
        codec.decode_queue_send_request(codec.encode_queue_send_request(req)), req, codec.encoding
    )
    assert_message(
        codec.decode_queue_send_response(codec.encode_queue_send_response(resp)),
        resp,
        codec.encoding,
    )
    assert_message(codec.decode_http_error(codec.encode_http_error(err)), err, codec.encoding)


@given(msg=TO_SERVER, version=st.sampled_from([1, 2, 3, 4]))
def test_bare_to_server_any_version(msg: Any, version: int) -> None:
    frame = BARE.encode_to_server(msg)
    assert isinstance(frame, bytes) and frame[:2] == b"\x04\x00"
    assert_message(BARE.decode_to_server(_with_version(frame, version)), msg, "bare")
