"""A minimal envoy written inside the tests: just enough protocol to talk to a real engine.

:class:`RawEnvoy` opens ``/envoys/connect`` with ``websockets``, sends ``ToRivetMetadata``,
waits for ``ToEnvoyInit`` and answers ``ToEnvoyPing`` on its own (unless told not to). Every
other message lands in an inbox that :meth:`RawEnvoy.recv` searches by predicate, so a test can
wait for "the KV response with request id 3" while commands or tunnel messages queue up.

Every binary frame the engine sends is decoded with :mod:`rivetkit._protocol.envoy` and
re-encoded; the raw bytes are kept in :attr:`RawEnvoy.frames` and any frame that does not
re-encode byte-identically is recorded in :attr:`RawEnvoy.mismatches` (spec §12 scenario 8; the
tests assert the list is empty). Undecodable frames are recorded too.

This is deliberately *not* the runtime's envoy client: no reconnect, no dedupe, no buffering.
Tests drive each protocol step by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rivetkit._protocol import DecodeError
from rivetkit._protocol import envoy as ev

__all__ = ["Closed", "EnvoyClosed", "RawEnvoy", "new_envoy_key", "open_and_wait_close"]

T = TypeVar("T")
DEFAULT_TIMEOUT = 10.0


@dataclass(slots=True)
class Closed:
    """How the engine closed a socket: close code and reason (``group.code#ray``)."""

    code: int | None
    reason: str

    @property
    def group_code(self) -> str:
        """``ws.eviction#ray`` -> ``ws.eviction``."""
        return self.reason.split("#", 1)[0]


class EnvoyClosed(Exception):
    """The socket closed while a test was waiting for a message."""

    def __init__(self, closed: Closed) -> None:
        super().__init__(f"envoy socket closed: {closed.code} {closed.reason!r}")
        self.closed = closed


@dataclass
class RawEnvoy:
    """One envoy connection (see module docstring). Create with :meth:`connect`."""

    ws: ClientConnection
    envoy_key: str
    auto_pong: bool = True
    init: ev.ToEnvoyInit | None = None
    frames: list[bytes] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    pings: list[int] = field(default_factory=list)
    closed: Closed | None = None
    _inbox: list[ev.ToEnvoy] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    _event_index: dict[tuple[str, int], int] = field(default_factory=dict)
    _request_id: int = 0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        envoy_key: str,
        token: str | None = None,
        metadata: ev.ToRivetMetadata | None = None,
        send_metadata: bool = True,
        wait_init: bool = True,
        auto_pong: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RawEnvoy:
        """Open the socket, send Metadata, and (by default) wait for ``ToEnvoyInit``."""
        protocols = ["rivet"] + ([f"rivet_token.{token}"] if token else [])
        ws = await connect(
            url,
            subprotocols=protocols,  # type: ignore[arg-type]
            max_size=None,
            open_timeout=timeout,
            ping_interval=None,  # the engine pings at the protocol level
        )
        self = cls(ws, envoy_key, auto_pong)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        if send_metadata:
            await self.send_quietly(
                metadata
                or ev.ToRivetMetadata(
                    prepopulate_actor_names=None,
                    metadata=json.dumps({"rivetkit": {"version": "python-tests"}}),
                )
            )
        if wait_init:
            self.init = await self.recv(ev.ToEnvoyInit, timeout=timeout)
        return self

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                if isinstance(frame, str):
                    self.mismatches.append(f"text frame from engine: {frame[:200]!r}")
                    continue
                self.frames.append(frame)
                try:
                    msg = ev.decode_to_envoy(frame)
                except DecodeError as exc:
                    self.mismatches.append(f"undecodable frame {frame[:64].hex()}: {exc}")
                    continue
                again = ev.encode_to_envoy(msg)
                if again != frame:
                    self.mismatches.append(
                        f"re-encoding differs: engine {frame.hex()} ours {again.hex()}"
                    )
                if isinstance(msg, ev.ToEnvoyPing):
                    self.pings.append(msg.ts)
                    if self.auto_pong:
                        await self.send_quietly(ev.ToRivetPong(ts=msg.ts))
                    continue
                self._inbox.append(msg)
                self._arrived.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed = Closed(self.ws.close_code, self.ws.close_reason or "")
            self._arrived.set()

    # -- sending and receiving -------------------------------------------------------------

    async def send(self, msg: ev.ToRivet) -> None:
        await self.ws.send(ev.encode_to_rivet(msg))

    async def send_quietly(self, msg: ev.ToRivet) -> None:
        """:meth:`send`, ignoring a socket the engine already closed (handshake errors)."""
        with contextlib.suppress(ConnectionClosed):
            await self.send(msg)

    async def recv(
        self,
        kind: type[T],
        match: Callable[[T], bool] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> T:
        """Take the oldest inbox message of class ``kind`` (and satisfying ``match``).

        Raises:
            EnvoyClosed: the socket closed first.
            TimeoutError: nothing matched within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                for i, msg in enumerate(self._inbox):
                    if isinstance(msg, kind) and (match is None or match(msg)):
                        del self._inbox[i]
                        return msg
                if self.closed is not None:
                    raise EnvoyClosed(self.closed)
                self._arrived.clear()
                await self._arrived.wait()

    def pending(self, kind: type[Any] = object) -> list[ev.ToEnvoy]:
        """Inbox messages of class ``kind`` not taken yet (not removed)."""
        return [m for m in self._inbox if isinstance(m, kind)]

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> Closed:
        """Wait until the engine (or we) closed the socket."""
        assert self._reader is not None
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._reader)
        assert self.closed is not None
        return self.closed

    async def close(self) -> None:
        """Close the socket (1000) and stop the reader."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def drop(self) -> None:
        """Abort the TCP connection without a close handshake (a crashed runtime)."""
        self.ws.transport.abort()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 5)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- protocol helpers ------------------------------------------------------------------

    async def next_start(self, *, timeout: float = DEFAULT_TIMEOUT) -> ev.CommandWrapper:
        """The next ``CommandStartActor`` (its wrapper), from any ``ToEnvoyCommands``."""
        return await self.next_command(ev.CommandStartActor, timeout=timeout)

    async def next_command(
        self, inner: type[Any], *, actor_id: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> ev.CommandWrapper:
        """The next command of class ``inner``; other commands of the same frame stay queued."""

        def has(msg: ev.ToEnvoyCommands) -> bool:
            return any(self._is(w, inner, actor_id) for w in msg.items)

        msg = await self.recv(ev.ToEnvoyCommands, has, timeout=timeout)
        found = next(w for w in msg.items if self._is(w, inner, actor_id))
        rest = [w for w in msg.items if w is not found]
        if rest:
            self._inbox.insert(0, ev.ToEnvoyCommands(items=rest))
        return found

    @staticmethod
    def _is(wrapper: ev.CommandWrapper, inner: type[Any], actor_id: str | None) -> bool:
        return isinstance(wrapper.inner, inner) and (
            actor_id is None or wrapper.checkpoint.actor_id == actor_id
        )

    async def ack(self, *checkpoints: ev.ActorCheckpoint) -> None:
        await self.send(ev.ToRivetAckCommands(last_command_checkpoints=list(checkpoints)))

    async def event(self, actor_id: str, generation: int, inner: ev.Event) -> int:
        """Send one event with the next index of (actor, generation), from 0; returns it."""
        index = self._event_index.get((actor_id, generation), 0)
        self._event_index[(actor_id, generation)] = index + 1
        checkpoint = ev.ActorCheckpoint(actor_id=actor_id, generation=generation, index=index)
        await self.send(ev.ToRivetEvents(items=[ev.EventWrapper(checkpoint, inner)]))
        return index

    async def running(self, actor_id: str, generation: int) -> None:
        await self.event(
            actor_id, generation, ev.EventActorStateUpdate(state=ev.ActorStateRunning())
        )

    async def stopped(
        self,
        actor_id: str,
        generation: int,
        code: ev.StopCode = ev.StopCode.OK,
        message: str | None = None,
    ) -> None:
        state = ev.ActorStateStopped(code=code, message=message)
        await self.event(actor_id, generation, ev.EventActorStateUpdate(state=state))

    async def start_actor(self, *, timeout: float = DEFAULT_TIMEOUT) -> ev.CommandWrapper:
        """Take the next start command, ack it and report ``Running``."""
        wrapper = await self.next_start(timeout=timeout)
        await self.ack(wrapper.checkpoint)
        await self.running(wrapper.checkpoint.actor_id, wrapper.checkpoint.generation)
        return wrapper

    def next_request_id(self) -> int:
        self._request_id += 1
        return self._request_id

    async def kv(
        self, actor_id: str, data: ev.KvRequestData, *, timeout: float = DEFAULT_TIMEOUT
    ) -> ev.KvResponseData:
        """One KV request and its response (matched by request id)."""
        rid = self.next_request_id()
        await self.send(ev.ToRivetKvRequest(actor_id=actor_id, request_id=rid, data=data))
        resp = await self.recv(ev.ToEnvoyKvResponse, lambda m: m.request_id == rid, timeout=timeout)
        return resp.data

    async def sql_execute(
        self, request: ev.SqliteExecuteRequest, *, timeout: float = DEFAULT_TIMEOUT
    ) -> ev.SqliteExecuteResponse:
        rid = self.next_request_id()
        await self.send(ev.ToRivetSqliteExecuteRequest(request_id=rid, data=request))
        resp = await self.recv(
            ev.ToEnvoySqliteExecuteResponse, lambda m: m.request_id == rid, timeout=timeout
        )
        return resp.data

    async def sql_batch(
        self, request: ev.SqliteExecuteBatchRequest, *, timeout: float = DEFAULT_TIMEOUT
    ) -> ev.SqliteExecuteBatchResponse:
        rid = self.next_request_id()
        await self.send(ev.ToRivetSqliteExecuteBatchRequest(request_id=rid, data=request))
        resp = await self.recv(
            ev.ToEnvoySqliteExecuteBatchResponse, lambda m: m.request_id == rid, timeout=timeout
        )
        return resp.data

    async def sql_exec(
        self, request: ev.SqliteExecRequest, *, timeout: float = DEFAULT_TIMEOUT
    ) -> ev.SqliteExecResponse:
        rid = self.next_request_id()
        await self.send(ev.ToRivetSqliteExecRequest(request_id=rid, data=request))
        resp = await self.recv(
            ev.ToEnvoySqliteExecResponse, lambda m: m.request_id == rid, timeout=timeout
        )
        return resp.data


def new_envoy_key() -> str:
    return str(uuid.uuid4())


async def open_and_wait_close(
    url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> Closed:
    """Connect (sending Metadata), expect the engine to close the socket; return how.

    Used for the handshake errors, which the engine reports after the upgrade as a close frame.
    Fails if an ``ToEnvoyInit`` arrives instead.
    """
    envoy = await RawEnvoy.connect(url, envoy_key="", token=token, wait_init=False, timeout=timeout)
    try:
        closed = await envoy.wait_closed(timeout)
        assert envoy.pending(ev.ToEnvoyInit) == [], "engine sent Init, expected a close"
        return closed
    finally:
        await envoy.close()
