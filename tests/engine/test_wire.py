"""The envoy connection's WebSocket client (rivetkit.drivers.engine._wire) on real sockets.

Peers: a ``websockets`` server (the reference implementation) for the normal paths, raw
asyncio servers speaking bytes for what a correct server never sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.streams import StreamReader

from rivetkit.drivers.engine._wire import (
    MAX_BATCH_FRAMES,
    HandshakeError,
    ProtocolError,
    Wire,
    WireClosed,
    WireError,
    _encode_frame,
    _mask_big_int,
    open_wire,
)

anyio = pytest.mark.anyio

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- peers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def ws_server(
    handler: Callable[[ServerConnection], Awaitable[None]], **kwargs: Any
) -> AsyncIterator[str]:
    """A websockets server on loopback; yields its ``ws://`` base URL."""
    async with serve(
        handler, "127.0.0.1", 0, max_size=None, ping_interval=None, compression=None, **kwargs
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A byte-level server; on exit its handlers are awaited (their assertion errors raised)."""
    tasks: list[asyncio.Task[Any]] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(run, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        for task in tasks:
            await asyncio.wait_for(task, 2)
    finally:
        server.close()
        await server.wait_closed()


def accept_value(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


async def upgrade(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    accept: str | None = None,
    extra_headers: str = "",
    then: bytes = b"",
) -> dict[str, str]:
    """Answer the client's upgrade (101); ``then`` is written in the same write."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    headers = {"request-line": lines[0]}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    if accept is None:
        accept = accept_value(headers["sec-websocket-key"])
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n{extra_headers}\r\n"
        ).encode()
        + then
    )
    return headers


def server_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
    long: bool = False,
) -> bytes:
    """A frame as a server writes it (unmasked unless ``mask``); ``long``: 64-bit length."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    mbit = 0x80 if mask is not None else 0
    if long:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    elif n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is not None:
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def unmask(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from the client: ``(opcode, unmasked payload)``; it must be final and masked."""
    b0, b1 = await reader.readexactly(2)
    assert b0 & 0x80 and not b0 & 0x70, f"bad first byte {b0:#x}"
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    key = await reader.readexactly(4)
    return b0 & 0x0F, unmask(await reader.readexactly(n), key)


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


class Inbox:
    """on_message target: collects messages; ``get`` waits for the next one."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()

    def __call__(self, message: bytes) -> None:
        assert type(message) is bytes
        self.messages.append(message)
        self._queue.put_nowait(message)

    async def get(self) -> bytes:
        return await asyncio.wait_for(self._queue.get(), 5)


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


# -- 1. handshake and echo ------------------------------------------------------------------


@anyio
async def test_echo_of_every_length_encoding_and_order_with_the_chosen_subprotocol() -> None:
    requests: list[Request] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        requests.append(ws.request)
        await echo(ws)

    async with ws_server(handler, subprotocols=["rivet"]) as base:  # type: ignore[list-item]
        inbox = Inbox()
        wire = await open_wire(
            f"{base}/envoys/connect?namespace=default&x=1",
            on_message=inbox,
            subprotocols=["rivet", "rivet_token.secret"],
            extra_headers={"X-Test": "yes"},
        )
        try:
            assert wire.subprotocol == "rivet"
            assert not wire.closed
            request = requests[0]
            assert request.path == "/envoys/connect?namespace=default&x=1"
            assert request.headers["User-Agent"] == "rivetkit-python"
            assert request.headers["X-Test"] == "yes"
            assert request.headers["Sec-WebSocket-Protocol"] == "rivet, rivet_token.secret"
            if hasattr(socket, "TCP_QUICKACK"):
                assert wire._quick_sock is not None
            for size in (0, 1, 125, 126, 65535, 65536, 1 << 20):
                payload = bytes(i % 251 for i in range(size))
                wire.send(payload)
                assert await inbox.get() == payload
            wire.send_now(b"now")
            assert await inbox.get() == b"now"
            many = [i.to_bytes(4, "big") * (i % 7) + b"#" for i in range(1000)]
            for payload in many:
                wire.send(payload)
            assert [await inbox.get() for _ in many] == many
        finally:
            await wire.close()
        assert wire._quick_sock is None  # the duplicate descriptor is closed


@anyio
async def test_frames_right_behind_the_101_are_not_lost() -> None:
    inbox = Inbox()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        behind = server_frame(2, b"first") + server_frame(2, b"second")[:3]
        await upgrade(reader, writer, then=behind)
        await asyncio.sleep(0.01)
        writer.write(server_frame(2, b"second")[3:])
        await reader.read()  # until the client goes

    async with raw_server(handler) as base:
        wire = await open_wire(base, on_message=inbox)
        assert await inbox.get() == b"first"
        assert await inbox.get() == b"second"
        wire.abort()
        await wire.wait_closed()


@anyio
async def test_a_held_wire_delivers_nothing_before_start() -> None:
    """What the envoy relies on: rivet-engine may send Init right behind the 101, before the
    task that opened the connection has stored the wire."""
    inbox = Inbox()
    sent_all = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer, then=server_frame(2, b"init") + server_frame(9, b"p"))
        await asyncio.sleep(0.01)
        writer.write(server_frame(2, b"commands") + server_frame(2, b"more")[:2])
        await writer.drain()
        await asyncio.sleep(0.05)
        sent_all.set()
        await reader.read()  # until the client goes

    async with raw_server(handler) as base:
        wire = await open_wire(base, on_message=inbox, hold=True)
        await sent_all.wait()
        assert inbox.messages == []  # held: read and buffered, not delivered
        wire.start()
        assert inbox.messages == [b"init", b"commands"]  # at once, in order
        wire.start()  # idempotent
        assert inbox.messages == [b"init", b"commands"]
        wire.abort()
        await wire.wait_closed()


# -- 2. write coalescing --------------------------------------------------------------------


@anyio
async def test_sends_of_one_tick_leave_in_one_write_in_order() -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    async def accept() -> socket.socket:
        conn, _ = await loop.sock_accept(listener)
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(conn, 4096)
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        await loop.sock_sendall(
            conn,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_value(key).encode() + b"\r\n\r\n",
        )
        return conn

    with listener:
        server_side = asyncio.ensure_future(accept())
        wire = await open_wire(
            f"ws://127.0.0.1:{listener.getsockname()[1]}", on_message=lambda m: None
        )
        with await server_side as conn:
            # Count the transport's writes (asyncio's object, observed, not replaced).
            transport: Any = wire.transport
            writes: list[int] = []
            write = transport.write
            transport.write = lambda data: (writes.append(len(data)), write(data))
            few = [bytes([i]) * (i * 5) for i in range(MAX_BATCH_FRAMES - 1)]
            for payload in few:
                wire.send(payload)
            assert writes == []  # nothing written yet
            with pytest.raises(BlockingIOError):
                conn.recv(1 << 20)
            await asyncio.sleep(0)  # one tick: the flush
            assert len(writes) == 1
            # A burst leaves every MAX_BATCH_FRAMES frames while it is being sent (the first
            # part does not wait for the rest to be encoded), the rest at the end of the tick.
            burst = [bytes([i]) * (i * 3) for i in range(3 * MAX_BATCH_FRAMES + 2)]
            for i, payload in enumerate(burst):
                wire.send(payload)
                assert len(writes) == 1 + (i + 1) // MAX_BATCH_FRAMES
            await asyncio.sleep(0)
            assert len(writes) == 1 + 3 + 1
            payloads = few + burst
            received = b""
            async with asyncio.timeout(5):
                while len(received) < sum(writes):
                    received += await loop.sock_recv(conn, 1 << 20)
            reader = StreamReader()
            reader.feed_data(received)
            for payload in payloads:
                frame = _parse(reader)
                assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, payload)
            wire.abort()
            await wire.wait_closed()


def _parse(reader: StreamReader) -> Frame:
    """One client frame with websockets' own parser (server side: mask=True)."""
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


# -- 3. fragments and ping ------------------------------------------------------------------


@anyio
async def test_fragmented_message_with_an_interleaved_ping_and_the_pong() -> None:
    inbox = Inbox()
    pongs: list[tuple[int, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        writer.write(
            server_frame(2, b"abc", fin=False)
            + server_frame(9, b"ping-data")
            + server_frame(0, b"def", fin=False)
            + server_frame(0, b"ghi")
        )
        pongs.append(await client_frame(reader))
        for part in (server_frame(2, b"x" * 300, fin=False), server_frame(0, b"y" * 70000)):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.005)
        writer.write(server_frame(8, close_payload(1000)))
        assert await client_frame(reader) == (8, close_payload(1000))
        assert await reader.read() == b""

    async with raw_server(handler) as base:
        wire = await open_wire(base, on_message=inbox)
        assert await inbox.get() == b"abcdefghi"
        assert await inbox.get() == b"x" * 300 + b"y" * 70000
        await wire.wait_closed()
    assert pongs == [(10, b"ping-data")]
    assert inbox.messages == [b"abcdefghi", b"x" * 300 + b"y" * 70000]
    assert wire.close_code == 1000


# -- 4./5. closing --------------------------------------------------------------------------


@anyio
async def test_server_close_is_recorded_and_echoed() -> None:
    seen: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        await ws.close(4001, "ws.eviction#x")
        rcvd = ws.protocol.close_rcvd
        assert rcvd is not None
        seen.set_result((rcvd.code, rcvd.reason))

    async with ws_server(handler) as base:
        wire = await open_wire(base, on_message=Inbox())
        async with asyncio.timeout(2):
            await wire.wait_closed()
        assert (wire.close_code, wire.close_reason) == (4001, "ws.eviction#x")
        assert wire.closed
        assert (await asyncio.wait_for(seen, 2))[0] == 4001


@anyio
async def test_client_close_sends_code_and_reason_and_is_idempotent() -> None:
    seen: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        rcvd = ws.protocol.close_rcvd
        assert rcvd is not None
        seen.set_result((rcvd.code, rcvd.reason))

    async with ws_server(handler) as base:
        wire = await open_wire(base, on_message=Inbox())
        wire.send(b"queued before the close")  # flushed first
        started = time.monotonic()
        await wire.close(1000, "envoy.shutdown")
        assert time.monotonic() - started < 1  # the peer answered: no timeout
        assert wire.closed
        assert wire.close_code == 1000  # the server's answer
        await wire.close(1000, "again")  # idempotent
        await wire.wait_closed()
        assert await asyncio.wait_for(seen, 2) == (1000, "envoy.shutdown")


@anyio
async def test_close_gives_up_on_a_peer_that_does_not_answer() -> None:
    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        assert await client_frame(reader) == (8, close_payload(4000, "bye"))
        await reader.read()  # no answer; the client aborts

    async with raw_server(deaf) as base:
        wire = await open_wire(base, on_message=Inbox())
        with pytest.raises(ValueError):
            await wire.close(1005)  # not a code one may send
        started = time.monotonic()
        await wire.close(4000, "bye", timeout=0.1)
        assert 0.1 <= time.monotonic() - started < 1
        assert wire.closed and wire.close_code is None
        await wire.wait_closed()


@anyio
async def test_lost_connections_clean_and_reset() -> None:
    async def eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)

    async with raw_server(eof) as base:
        wire = await open_wire(base, on_message=Inbox())
        async with asyncio.timeout(2):
            await wire.wait_closed()  # closed without a close frame: not an error
        assert wire.closed and wire.close_code is None and wire.close_reason == ""

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        await writer.drain()
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()

    async with raw_server(reset) as base:
        wire = await open_wire(base, on_message=Inbox())
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(2):
                await wire.wait_closed()


# -- 6. refused handshakes ------------------------------------------------------------------


@anyio
async def test_refused_upgrade_carries_status_and_body() -> None:
    def refuse(ws: ServerConnection, request: Request) -> Any:
        return ws.respond(HTTPStatus.FORBIDDEN, "no entry for you\n")

    async with ws_server(echo, process_request=refuse) as base:
        with pytest.raises(HandshakeError) as caught:
            await open_wire(base, on_message=Inbox())
    assert caught.value.status == 403
    assert caught.value.body == b"no entry for you\n"
    assert "403" in str(caught.value)
    assert isinstance(caught.value, WireError) and isinstance(caught.value, OSError)

    async def no_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\ngo away")

    async with raw_server(no_length) as base:
        with pytest.raises(HandshakeError) as caught:
            await open_wire(base, on_message=Inbox())
    assert (caught.value.status, caught.value.body) == (503, b"go away")


def _bad_upgrade(**kwargs: Any) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer, **kwargs)
        await reader.read()

    return handler


@anyio
@pytest.mark.parametrize(
    "handler, message",
    [
        (_bad_upgrade(accept="d3Jvbmcgd3Jvbmcgd3Jvbmc="), "Sec-WebSocket-Accept"),
        (_bad_upgrade(extra_headers="Sec-WebSocket-Protocol: other\r\n"), "'other'"),
        (_bad_upgrade(extra_headers="Sec-WebSocket-Extensions: x\r\n"), "extension"),
    ],
    ids=["wrong-accept", "unoffered-subprotocol", "extension"],
)
async def test_invalid_upgrade_answers_are_refused(handler: Handler, message: str) -> None:
    async with raw_server(handler) as base:
        with pytest.raises(HandshakeError, match=message) as caught:
            await open_wire(base, on_message=Inbox(), subprotocols=["rivet"])
    assert caught.value.status == 101


@anyio
async def test_a_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up

    async with raw_server(silent) as base:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await open_wire(base, on_message=Inbox(), open_timeout=0.3)
        assert time.monotonic() - started < 1


@anyio
@pytest.mark.parametrize("url", ["http://127.0.0.1/", "ws:///path", "ws://h:99999/", "nope"])
async def test_invalid_urls(url: str) -> None:
    with pytest.raises(HandshakeError) as caught:
        await open_wire(url, on_message=Inbox())
    assert caught.value.status is None


# -- 7. protocol errors ---------------------------------------------------------------------


BAD_FRAMES = {
    "masked": server_frame(2, b"hello", mask=b"\x01\x02\x03\x04"),
    "rsv1": server_frame(2, b"hello", rsv=0x40),
    "rsv3-control": server_frame(9, b"", rsv=0x10),
    "unknown-opcode": server_frame(3, b"hello"),
    "unknown-control": server_frame(11, b""),
    "lone-continuation": server_frame(0, b"hello"),
    "data-inside-fragmented": server_frame(2, b"a", fin=False) + server_frame(2, b"b"),
    "fragmented-ping": server_frame(9, b"", fin=False),
    "long-ping": server_frame(9, b"p" * 126),
    "short-close": server_frame(8, b"\x03"),
    "bad-close-code": server_frame(8, close_payload(999)),
    "bad-close-reason": server_frame(8, close_payload(1000) + b"\xff"),
}


@anyio
@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
async def test_protocol_errors_close_with_1002(frame: bytes) -> None:
    closes: list[tuple[int, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer, then=frame + server_frame(2, b"never delivered"))
        closes.append(await client_frame(reader))
        assert await reader.read() == b""

    inbox = Inbox()
    async with raw_server(handler) as base:
        wire = await open_wire(base, on_message=inbox)
        with pytest.raises(ProtocolError):
            async with asyncio.timeout(2):
                await wire.wait_closed()
    assert closes == [(8, close_payload(1002))]
    assert inbox.messages == []
    assert wire.closed


# -- 8. on_message failing ------------------------------------------------------------------


@anyio
async def test_on_message_exception_stops_the_connection_and_is_raised() -> None:
    boom = ValueError("boom")
    delivered: list[bytes] = []

    def on_message(message: bytes) -> None:
        delivered.append(message)
        raise boom

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        writer.write(server_frame(2, b"1") + server_frame(2, b"2") + server_frame(2, b"3"))
        await reader.read()

    async with raw_server(handler) as base:
        wire = await open_wire(base, on_message=on_message)
        with pytest.raises(ValueError) as caught:
            async with asyncio.timeout(2):
                await wire.wait_closed()
        assert caught.value is boom
        assert delivered == [b"1"]
        with pytest.raises(WireClosed):
            wire.send(b"x")


@anyio
async def test_abort_from_on_message_stops_delivery_at_once() -> None:
    wires: list[Wire] = []
    delivered: list[bytes] = []

    def on_message(message: bytes) -> None:
        delivered.append(message)
        wires[0].abort()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        await asyncio.sleep(0.01)  # the client has its Wire
        writer.write(server_frame(2, b"1") + server_frame(2, b"2") + server_frame(2, b"3"))
        await reader.read()

    async with raw_server(handler) as base:
        wires.append(await open_wire(base, on_message=on_message))
        async with asyncio.timeout(2):
            await wires[0].wait_closed()  # aborted by us: not an error
    assert delivered == [b"1"]


# -- 9. sending after the end ---------------------------------------------------------------


@anyio
async def test_send_after_close_or_abort_raises() -> None:
    async with ws_server(echo) as base:
        wire = await open_wire(base, on_message=Inbox())
        await wire.close()
        with pytest.raises(WireClosed):
            wire.send(b"late")
        with pytest.raises(WireClosed):
            wire.send_now(b"late")

        wire = await open_wire(base, on_message=Inbox())
        close = asyncio.ensure_future(wire.close())
        await asyncio.sleep(0)  # the close frame is out, the answer not in yet
        assert wire.closed
        with pytest.raises(WireClosed):  # close started, not finished
            wire.send(b"late")
        await close

        wire = await open_wire(base, on_message=Inbox())
        wire.abort()
        with pytest.raises(WireClosed):
            wire.send(b"late")
        await wire.wait_closed()
        assert wire.closed


@anyio
async def test_drain_waits_while_the_peer_does_not_read() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        await release.wait()
        await reader.read()

    async with raw_server(handler) as base:
        wire = await open_wire(base, on_message=Inbox())
        await wire.drain()  # nothing buffered: returns at once
        chunk = b"z" * (1 << 20)
        while not wire._paused:
            wire.send_now(chunk)
        drained = asyncio.ensure_future(wire.drain())
        await asyncio.sleep(0.02)
        assert not drained.done()
        release.set()
        await asyncio.wait_for(drained, 5)
        wire.abort()
        await wire.wait_closed()


# -- 10. properties -------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(st.tuples(st.binary(max_size=3000), st.booleans()), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=40000), max_size=30),
)
def test_frames_split_anywhere_are_delivered_exactly(
    messages: list[tuple[bytes, bool]], cuts: list[int]
) -> None:
    """Any payloads, 7/16/64-bit lengths, the byte stream cut at random places."""
    stream = b"".join(server_frame(2, payload, long=long) for payload, long in messages)
    stream += server_frame(8, close_payload(1000))
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upgrade(reader, writer)
        await writer.drain()
        for start, end in itertools.pairwise(bounds):
            writer.write(stream[start:end])
            await writer.drain()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        await reader.read()

    async def main() -> list[bytes]:
        inbox = Inbox()
        async with raw_server(handler) as base:
            wire = await open_wire(base, on_message=inbox)
            async with asyncio.timeout(5):
                await wire.wait_closed()
            assert wire.close_code == 1000
        return inbox.messages

    assert asyncio.run(main()) == [payload for payload, _ in messages]


def _check_our_frame(opcode: int, payload: bytes, key: bytes) -> None:
    frame = _encode_frame(opcode, payload, key)
    body = len(frame) - len(payload)
    assert frame[body - 4 : body] == key
    assert frame[body:] == unmask(payload, key)  # the XOR of RFC 6455 §5.3
    again = _encode_frame(opcode, frame[body:], key)
    assert again[body:] == payload  # masking is its own inverse
    reader = StreamReader()
    reader.feed_data(frame)
    parsed = _parse(reader)
    assert (parsed.opcode, parsed.fin, parsed.data) == (Opcode(opcode), True, payload)
    assert not reader.buffer  # nothing left over


@settings(max_examples=200, deadline=None)
@given(
    frame=st.tuples(st.just(2), st.binary(max_size=3000))
    | st.tuples(st.sampled_from([8, 10]), st.binary(max_size=125)),
    key=st.binary(min_size=4, max_size=4),
)
def test_masking_round_trips_and_websockets_parses_our_frames(
    frame: tuple[int, bytes], key: bytes
) -> None:
    _check_our_frame(*frame, key)


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 200_001])
def test_our_frames_at_the_length_boundaries(size: int) -> None:
    _check_our_frame(2, bytes(i % 253 for i in range(size)), b"\x9a\x00\xff\x17")


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=3000), key=st.binary(min_size=4, max_size=4))
def test_the_pure_python_mask_equals_the_rfc_definition(payload: bytes, key: bytes) -> None:
    # the fallback used when websockets has no C speedups; _encode_frame uses the C helper here
    assert _mask_big_int(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_echo_under_uvloop() -> None:
    """The runtime runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[bytes]:
        async with ws_server(echo, subprotocols=["rivet"]) as base:  # type: ignore[list-item]
            inbox = Inbox()
            wire = await open_wire(f"{base}/x", on_message=inbox, subprotocols=["rivet"])
            try:
                for payload in (b"a", b"b" * 200, b"c" * 70_000):
                    wire.send(payload)
                return [await inbox.get() for _ in range(3)]
            finally:
                await wire.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == [b"a", b"b" * 200, b"c" * 70_000]


# -- 11. text messages ----------------------------------------------------------------------


@anyio
async def test_text_messages_are_not_delivered() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.send(["frag", "mented"])  # a fragmented text message
        await ws.send(b"binary")
        await ws.wait_closed()

    async with ws_server(handler) as base:
        inbox = Inbox()
        wire = await open_wire(base, on_message=inbox)
        assert await inbox.get() == b"binary"
        await wire.close()
        assert inbox.messages == [b"binary"]
