"""The envoy connection: one WebSocket from this process to the Rivet Engine (protocol v8 or v6).

What the engine expects of a runtime (``spec/engine-envoy.md`` §4, §6, §7.1):

* the pool (runner config) exists before connecting (:func:`ensure_pool`);
* on every (re)connect: ``ToRivetMetadata`` first; ``ToEnvoyInit`` means ready: only then are the
  buffered messages flushed, unacknowledged events re-sent and replayed commands processed;
* pings are echoed at once (15 s without a pong closes the socket);
* every command is acknowledged once processed and processed once: the engine replays commands
  it has no ack for after a reconnect, so commands are de-duplicated by ``(actor, generation,
  index)``;
* events carry an index per ``(actor, generation)`` from 0 and are kept until the engine
  acknowledges them (it does so every 250 events), then re-sent after a reconnect;
* a close with ``ws.eviction`` means another process took our key: never reconnect. Any other
  loss reconnects with backoff; disconnected longer than ``envoyLostThreshold``, the actors of
  this process are given up (the handler stops them) and the engine reschedules them.

The connection is sans-actor: it hands commands and tunnel messages to an :class:`EnvoyHandler`
and offers the request/response calls the actor databases need (``sqlite_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import aiohttp

from ..._protocol import DecodeError
from ..._protocol import envoy as p
from ..._protocol import envoy_v6
from ..._runtime.clock import REAL_CLOCK, Clock
from ...config import EngineConfig
from ._wire import Wire, WireClosed, open_wire
from .sqlite import DepotUnavailable

__all__ = ["Envoy", "EnvoyError", "EnvoyHandler", "destroy_actor", "ensure_pool"]

log = logging.getLogger("rivetkit.envoy")

T = TypeVar("T")

_BACKOFF_BASE = 1.0
_BACKOFF_MAX = 30.0
_STABLE_SESSION = 60.0  # a session this long resets the backoff
_TERMINAL_EVENTS_KEPT = 60.0  # seconds a stopped generation's events stay for re-sending
_REQUEST_TIMEOUT = 30.0  # the reference client fails engine requests after 30 s
# the engine pings every 3 s; 20 s without one means the link is dead (the reference envoy's
# threshold for its health check)
PING_HEALTHY_MS = 20_000
_IDEMPOTENT = (p.ToRivetSqliteGetPagesRequest,)  # re-sent after a reconnect, never failed by it


class EnvoyError(Exception):
    """The engine refused this process (bad configuration, eviction): not retried."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class EnvoyHandler(Protocol):
    """What the connection drives (the engine host)."""

    def on_ready(self, init: p.ToEnvoyInit) -> None:
        """Connected (first time or again) and initialised."""

    def on_command(self, checkpoint: p.ActorCheckpoint, command: p.Command) -> None:
        """A new command (never a duplicate). Must not block: start work in a task."""

    def on_tunnel(self, message: p.ToEnvoyTunnelMessage) -> None:
        """Client traffic for an actor of this process."""

    def on_lost(self) -> None:
        """Disconnected longer than the engine's lost threshold: give up every actor."""


@dataclass(slots=True)
class _Generation:
    """Events of one actor generation, kept until the engine acknowledges them."""

    next_index: int = 0
    pending: deque[p.EventWrapper] = field(default_factory=deque)
    stopped_at: float | None = None  # monotonic time its final event was queued


def _close_code(reason: str) -> str:
    """``group.code`` of a close reason ``group.code#rayId``."""
    return reason.split("#", 1)[0]


def _backoff(attempt: int) -> float:
    base: float = min(_BACKOFF_BASE * 2.0 ** min(attempt, 16), _BACKOFF_MAX)
    return base * (1 + random.random() * 0.25)


async def ensure_pool(config: EngineConfig, session: aiohttp.ClientSession) -> None:
    """Create or update the pool's runner config (the engine refuses envoys of unknown pools):
    ``normal``, or ``serverless`` pointing at this process's URL (spec §9.1)."""
    serverless = config.serverless
    if serverless is not None and not serverless.configure_pool:
        return  # the operator manages the runner config
    headers = {"content-type": "application/json"}
    if config.token:
        headers["authorization"] = f"Bearer {config.token}"
    query = urlencode({"namespace": config.namespace})
    async with session.get(f"{config.endpoint}/datacenters?{query}", headers=headers) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise EnvoyError(
                "engine.datacenters_failed",
                f"GET /datacenters answered {resp.status}: {body[:300]!r}",
            )
        datacenters = [dc["name"] for dc in json.loads(body).get("datacenters", [])]
    if not datacenters:
        raise EnvoyError("engine.no_datacenter", "the engine reports no datacenter")
    kind: dict[str, Any] = {"normal": {}}
    if serverless is not None:
        kind = {"serverless": {
            "url": serverless.pool_url,
            "headers": dict(serverless.headers),
            "request_lifespan": serverless.request_lifespan,
            "drain_grace_period": serverless.drain_grace_period,
            "metadata_poll_interval": serverless.metadata_poll_interval,
            "min_runners": serverless.min_runners,
            "max_runners": serverless.max_runners,
            "runners_margin": serverless.runners_margin,
            "slots_per_runner": serverless.slots_per_runner,
        }, "metadata": {}}
    payload = {
        "datacenters": {
            name: {**kind, "drain_on_version_upgrade": True} for name in datacenters
        }
    }
    url = f"{config.endpoint}/runner-configs/{config.pool}?{query}"
    async with session.put(url, headers=headers, data=json.dumps(payload)) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise EnvoyError(
                "engine.runner_config_failed",
                f"PUT /runner-configs/{config.pool} answered {resp.status}: {body[:300]!r}",
            )


async def destroy_actor(config: EngineConfig, session: aiohttp.ClientSession, actor_id: str) -> None:
    """``DELETE /actors/<id>``: the engine destroys the actor, whatever it is doing (running,
    stopping after a sleep intent, asleep). Answers once the actor is destroyed."""
    headers = {"authorization": f"Bearer {config.token}"} if config.token else {}
    query = urlencode({"namespace": config.namespace})
    async with session.delete(
        f"{config.endpoint}/actors/{actor_id}?{query}", headers=headers
    ) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise EnvoyError(
                "engine.actor_destroy_failed",
                f"DELETE /actors/{actor_id} answered {resp.status}: {body[:300]!r}",
            )


class Envoy:
    """One envoy connection, reconnecting until :meth:`close` or eviction."""

    def __init__(
        self,
        config: EngineConfig,
        handler: EnvoyHandler,
        *,
        actor_names: dict[str, p.ActorName],
        metadata: dict[str, Any],
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.config = config
        self.handler = handler
        self.clock = clock
        # when the engine last showed it is alive (its Init or a ping), epoch ms; None before
        self.last_ping_at: int | None = None
        self.envoy_key = config.envoy_key or str(uuid.uuid4())
        self._actor_names = actor_names
        self._metadata = json.dumps(metadata, separators=(",", ":"))
        self.init: p.ToEnvoyInit | None = None
        self._ws: Wire | None = None
        self._ready = asyncio.Event()
        self._closed = False
        self._outbox: deque[bytes] = deque()  # encoded frames waiting for a ready connection
        self._generations: dict[tuple[str, int], _Generation] = {}
        self._last_command: dict[tuple[str, int], int] = {}
        self._requests: dict[tuple[type[Any], int], asyncio.Future[Any]] = {}
        self._unsent: dict[tuple[type[Any], int], p.ToRivet] = {}
        self._retriable: dict[tuple[type[Any], int], p.ToRivet] = {}  # safe to ask again
        # (loop time it expires, request name) per request; one timer sweeps them all (no
        # timer handle per request, which was measurable on the per-action commit)
        self._deadlines: dict[tuple[type[Any], int], tuple[float, str]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.request_timeout = _REQUEST_TIMEOUT
        self._next_request_id = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # (get_running_loop is a getpid)
        self._lost_timer: asyncio.TimerHandle | None = None
        self._terminated: EnvoyError | None = None
        self._is_lost = False  # disconnected past the lost threshold (until the next Init)
        self.connected_once = asyncio.Event()
        # The wire codec of config.protocol_version, chosen once: v6 frames are converted to and
        # from the v8 dataclasses everything else uses (rivetkit._protocol.envoy_v6).
        self._encode: Callable[[p.ToRivet], bytes] = p.encode_to_rivet
        self._decode: Callable[[bytes], p.ToEnvoy] = p.decode_to_envoy
        if config.protocol_version == envoy_v6.PROTOCOL_VERSION:
            self._encode = envoy_v6.encode_to_rivet
            self._decode = envoy_v6.decode_to_envoy

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        base = self.config.endpoint
        scheme = "wss" if base.startswith("https://") else "ws"
        host = base.split("://", 1)[1]
        query = urlencode(
            {
                "protocol_version": self.config.protocol_version,
                "namespace": self.config.namespace,
                "envoy_key": self.envoy_key,
                "version": self.config.version,
                "pool_name": self.config.pool,
            }
        )
        return f"{scheme}://{host}/envoys/connect?{query}"

    def start(self) -> asyncio.Task[None]:
        """Run the connection loop in a task (returned; it ends on close or eviction)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run())
        return self._task

    async def close(self) -> None:
        """Say goodbye (close 1000 ``envoy.shutdown``) and stop reconnecting."""
        self._closed = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(1000, "envoy.shutdown")  # sends what is queued first
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._lost_timer is not None:
            self._lost_timer.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._fail_requests(DepotUnavailable("the envoy connection is closed"))

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def ping_healthy(self) -> bool:
        """Whether the engine showed it is alive (its Init or a ping) in the last 20 s."""
        last = self.last_ping_at
        return last is not None and self.clock.now_ms() - last < PING_HEALTHY_MS

    async def _run(self) -> None:
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while not self._closed:
                started = time.monotonic()
                try:
                    await ensure_pool(self.config, session)
                    await self._session()
                except EnvoyError as exc:
                    if exc.code in ("ws.eviction",):
                        log.warning("envoy evicted: another process took its key key=%s",
                                    self.envoy_key)
                        self._terminated = exc
                        self.handler.on_lost()
                        return
                    log.error("envoy refused code=%s error=%s", exc.code, exc)
                except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    log.warning("envoy connection failed error=%r", exc)
                except DecodeError as exc:
                    log.error("envoy received an undecodable frame error=%s", exc)
                except Exception:  # a bug of ours: reconnect rather than stop serving
                    log.exception("envoy session failed")
                if self._closed:
                    return
                self._disconnected()
                if time.monotonic() - started >= _STABLE_SESSION:
                    attempt = 0
                delay = _backoff(attempt)
                attempt += 1
                log.info("envoy reconnecting delay_ms=%d attempt=%d", int(delay * 1000), attempt)
                await asyncio.sleep(delay)

    async def _session(self) -> None:
        subprotocols = ["rivet"]
        if self.config.token:
            subprotocols.append(f"rivet_token.{self.config.token}")
        # Frames are handed to _on_frame as they are read, synchronously (no reader task); what
        # we send in one event-loop tick leaves in one write. TCP_QUICKACK is set after every
        # read: the engine's writes meet Nagle's algorithm on its side and delayed acks on ours
        # (HTTP p50 at one request in flight 49 ms -> 6 ms with it).
        ws = await open_wire(
            self.ws_url,
            on_message=self._on_frame,
            subprotocols=subprotocols,
            open_timeout=10,
            hold=True,  # the engine may send Init before this task has the wire in hand
        )
        self._ws = ws
        try:
            ws.send_now(self._encode(self._metadata_message()))
            ws.start()
            await ws.wait_closed()
        finally:
            self._ws = None
            ws.abort()  # no-op once closed; a cancelled session must not leave the socket open
        reason = ws.close_reason
        if reason:
            code = _close_code(reason)
            if code == "ws.eviction":
                raise EnvoyError(code, reason)
            if ws.close_code == 1011:
                log.warning("envoy closed by the engine reason=%s", reason)
                if code in ("ws.no_runner_config", "namespace.not_found", "api.forbidden",
                            "ws.invalid_request", "guard.missing_header"):
                    raise EnvoyError(code, reason)

    def _metadata_message(self) -> p.ToRivetMetadata:
        return p.ToRivetMetadata(
            prepopulate_actor_names=self._actor_names, metadata=self._metadata
        )

    def _disconnected(self) -> None:
        was_ready = self._ready.is_set()
        self._ready.clear()
        # Reads on the wire are asked again after the next Init (a page fetch is idempotent);
        # writes have an unknown outcome: fail them now (the store decides what that means).
        in_flight = [key for key in self._requests if key not in self._unsent]
        for key in in_flight:
            retry = self._retriable.get(key)
            if retry is not None:
                self._unsent[key] = retry
                continue
            future = self._forget(key)
            if future is not None and not future.done():
                future.set_exception(
                    DepotUnavailable("the envoy connection was lost during the request")
                )
        if was_ready and self._lost_timer is None and self.init is not None:
            threshold = self.init.metadata.envoy_lost_threshold / 1000.0
            self._lost_timer = asyncio.get_running_loop().call_later(threshold, self._lost)

    def _lost(self) -> None:
        self._lost_timer = None
        if not self._ready.is_set():
            log.warning("envoy disconnected past the lost threshold: giving up its actors")
            # The engine reschedules these actors elsewhere: nothing they still want to write
            # may wait for the connection (it would land on a database that moved on).
            self._is_lost = True
            self._fail_requests(DepotUnavailable("the envoy lost its connection to the engine"))
            self.handler.on_lost()

    # -- incoming --------------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        """One binary message from the engine (a DecodeError ends the session)."""
        self._dispatch(self._decode(frame))

    def _dispatch(self, message: p.ToEnvoy) -> None:
        if isinstance(message, p.ToEnvoyTunnelMessage):
            self.handler.on_tunnel(message)
        elif isinstance(message, p.ToEnvoyPing):
            self.last_ping_at = self.clock.now_ms()
            self._send_now(p.ToRivetPong(ts=message.ts))
        elif isinstance(message, p.ToEnvoyCommands):
            self._commands(message.items)
        elif isinstance(message, p.ToEnvoyInit):
            self._on_init(message)
        elif isinstance(message, p.ToEnvoyAckEvents):
            self._ack_events(message.last_event_checkpoints)
        else:
            request_id: int = message.request_id
            future = self._forget((type(message), request_id))
            if future is None:
                log.debug("envoy response for no request type=%s id=%s",
                          type(message).__name__, request_id)
            elif not future.done():
                future.set_result(message.data)

    def _on_init(self, init: p.ToEnvoyInit) -> None:
        first = self.init is None
        self.init = init
        self.last_ping_at = self.clock.now_ms()
        self._is_lost = False
        if self._lost_timer is not None:
            self._lost_timer.cancel()
            self._lost_timer = None
        log.info("envoy ready key=%s first=%s", self.envoy_key, first)
        ws = self._ws
        if ws is None:  # (the wire is held until the session stores it)
            raise RuntimeError("envoy Init received outside a session")
        # 1. events the engine has not acknowledged, in order
        now = time.monotonic()
        for key, gen in list(self._generations.items()):
            if gen.stopped_at is not None and now - gen.stopped_at > _TERMINAL_EVENTS_KEPT:
                del self._generations[key]
                continue
            if gen.pending:
                ws.send(self._encode(p.ToRivetEvents(items=list(gen.pending))))
        # 2. requests queued while disconnected
        for message in self._unsent.values():
            ws.send(self._encode(message))
        self._unsent.clear()
        # 3. everything else buffered meanwhile (tunnel answers, a Stopping)
        outbox = self._outbox
        while outbox:
            ws.send(outbox.popleft())
        self._ready.set()
        self.connected_once.set()
        self.handler.on_ready(init)

    def _commands(self, wrappers: list[p.CommandWrapper]) -> None:
        acks: list[p.ActorCheckpoint] = []
        for wrapper in wrappers:
            cp = wrapper.checkpoint
            key = (cp.actor_id, cp.generation)
            last = self._last_command.get(key)
            if last is None or cp.index > last:
                self._last_command[key] = cp.index
                try:
                    self.handler.on_command(cp, wrapper.inner)
                except Exception:
                    log.exception("command failed actor_id=%s generation=%d",
                                  cp.actor_id, cp.generation)
            else:
                log.info("replayed command dropped actor_id=%s generation=%d index=%d",
                         cp.actor_id, cp.generation, cp.index)
            acks.append(cp)
        if acks:
            self._send_now(p.ToRivetAckCommands(last_command_checkpoints=acks))

    def _ack_events(self, checkpoints: list[p.ActorCheckpoint]) -> None:
        for cp in checkpoints:
            gen = self._generations.get((cp.actor_id, cp.generation))
            if gen is None:
                continue
            while gen.pending and gen.pending[0].checkpoint.index <= cp.index:
                gen.pending.popleft()
            if not gen.pending and gen.stopped_at is not None:
                del self._generations[(cp.actor_id, cp.generation)]

    def inject_commands(self, message: p.ToEnvoyCommands) -> None:
        """Commands delivered outside the socket (serverless ``POST /start``), handled exactly
        as if received on it: de-duplicated, handed to the handler, acknowledged."""
        self._commands(message.items)

    def forget_generation(self, actor_id: str, generation: int) -> None:
        """Drop the command de-duplication entry of a finished generation."""
        self._last_command.pop((actor_id, generation), None)

    # -- outgoing --------------------------------------------------------------------------

    def send_event(
        self, actor_id: str, generation: int, event: p.Event, *, final: bool = False
    ) -> None:
        """Queue an event of an actor generation; kept until the engine acknowledges it."""
        key = (actor_id, generation)
        gen = self._generations.get(key)
        if gen is None:
            gen = self._generations[key] = _Generation()
        wrapper = p.EventWrapper(
            checkpoint=p.ActorCheckpoint(
                actor_id=actor_id, generation=generation, index=gen.next_index
            ),
            inner=event,
        )
        gen.next_index += 1
        gen.pending.append(wrapper)
        if final:
            gen.stopped_at = time.monotonic()
        if self._ready.is_set():
            self._send_now(p.ToRivetEvents(items=[wrapper]))
        # else: re-sent with the rest of the pending events after the next Init

    def send_tunnel(self, message: p.ToRivetTunnelMessage) -> None:
        """Queue a tunnel message (buffered while disconnected, flushed after Init)."""
        frame = self._encode(message)
        if not frame:
            return  # nothing to send in this protocol version (v6: request-body flow control)
        ws = self._ws
        if ws is not None and self._ready.is_set():
            try:
                ws.send(frame)
                return
            except WireClosed:
                pass  # lost a moment ago: kept for the next connection, as while disconnected
        self._outbox.append(frame)

    def send_stopping(self) -> None:
        self._send_now(p.ToRivetStopping())

    def _send_now(self, message: p.ToRivet) -> None:
        self._send_frame(self._encode(message))

    def _send_frame(self, frame: bytes) -> None:
        ws = self._ws
        if ws is None:
            return  # dropped: events and requests are re-sent after the next Init
        if not self._ready.is_set():
            self._outbox.append(frame)  # buffered messages wait for Init (spec §4.4)
            return
        try:
            ws.send(frame)
        except WireClosed:
            pass  # lost a moment ago: events and requests are re-sent after the next Init

    # -- requests (SQLite pages, remote SQL, KV) -------------------------------------------

    async def _request(
        self, make: Callable[[int], p.ToRivet], response_type: type[Any]
    ) -> Any:
        key, future = self._start_request(make, response_type)
        try:
            return await future
        finally:
            self._forget(key)  # (already done unless this task was cancelled)

    def _start_request(
        self, make: Callable[[int], p.ToRivet], response_type: type[Any]
    ) -> tuple[tuple[type[Any], int], asyncio.Future[Any]]:
        """Send (or queue until ready) one request; its future is settled, and the request
        forgotten, by the answer, a timeout, a lost connection or :meth:`_fail_requests`."""
        request_id = self._next_request_id
        self._next_request_id = (request_id + 1) & 0xFFFFFFFF
        key = (response_type, request_id)
        message = make(request_id)
        # Encoded first: what the protocol version cannot express (v6: staged commits) fails
        # here, with its coded error, before anything waits for an answer.
        frame = self._encode(message)
        ready = self._ready.is_set()
        if not ready and (self._terminated is not None or self._closed or self._is_lost):
            raise DepotUnavailable("the envoy connection is closed or lost")
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._requests[key] = future
        self._deadlines[key] = (loop.time() + self.request_timeout, type(message).__name__)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)
        if isinstance(message, _IDEMPOTENT):
            self._retriable[key] = message
        if ready:
            self._send_frame(frame)
        else:
            self._unsent[key] = message
        return key, future

    def _forget(self, key: tuple[type[Any], int]) -> asyncio.Future[Any] | None:
        """Drop every trace of a request; its future (``None`` if already forgotten)."""
        self._unsent.pop(key, None)
        self._retriable.pop(key, None)
        self._deadlines.pop(key, None)
        return self._requests.pop(key, None)

    def _sweep_interval(self) -> float:
        return min(1.0, self.request_timeout / 4)

    def _sweep(self) -> None:
        """Fail the requests the engine has not answered within :attr:`request_timeout`."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key, (deadline, name) in list(self._deadlines.items()):
            if deadline > now:
                continue
            future = self._forget(key)
            if future is not None and not future.done():
                future.set_exception(DepotUnavailable(
                    f"the engine did not answer {name} within {self.request_timeout:g} s"
                ))
        if self._deadlines:
            self._sweeper = loop.call_later(self._sweep_interval(), self._sweep)

    async def _ask(self, wrapper: Callable[..., p.ToRivet], response: type[Any], data: Any) -> Any:
        """A request whose message is ``wrapper(request_id=..., data=data)``."""
        return await self._request(lambda rid: wrapper(request_id=rid, data=data), response)

    def _fail_requests(self, error: Exception) -> None:
        for future in self._requests.values():
            if not future.done():
                future.set_exception(error)
        self._requests.clear()
        self._unsent.clear()
        self._retriable.clear()
        self._deadlines.clear()

    async def sqlite_get_pages(
        self, request: p.SqliteGetPagesRequest
    ) -> p.SqliteGetPagesOk | p.SqliteErrorResponse:
        return await self._ask(  # type: ignore[no-any-return]
            p.ToRivetSqliteGetPagesRequest, p.ToEnvoySqliteGetPagesResponse, request
        )

    def sqlite_commit(
        self, request: p.SqliteCommitRequest
    ) -> asyncio.Future[p.SqliteCommitOk | p.SqliteErrorResponse]:
        """Sent at once (or queued until the connection is ready): the future is the answer.
        A plain future, not a coroutine: the store ships commits without a task."""
        return self._start_request(
            lambda rid: p.ToRivetSqliteCommitRequest(request_id=rid, data=request),
            p.ToEnvoySqliteCommitResponse,
        )[1]

    async def sqlite_commit_stage_begin(
        self, request: p.SqliteCommitStageBeginRequest
    ) -> p.SqliteCommitStageBeginOk | p.SqliteErrorResponse:
        return await self._ask(  # type: ignore[no-any-return]
            p.ToRivetSqliteCommitStageBeginRequest, p.ToEnvoySqliteCommitStageBeginResponse, request
        )

    async def sqlite_commit_stage_segment(
        self, request: p.SqliteCommitStageSegmentRequest
    ) -> p.SqliteCommitStageSegmentOk | p.SqliteErrorResponse:
        return await self._ask(  # type: ignore[no-any-return]
            p.ToRivetSqliteCommitStageSegmentRequest,
            p.ToEnvoySqliteCommitStageSegmentResponse,
            request,
        )

    async def sqlite_commit_finalize(
        self, request: p.SqliteCommitFinalizeRequest
    ) -> p.SqliteCommitFinalizeOk | p.SqliteErrorResponse:
        return await self._ask(  # type: ignore[no-any-return]
            p.ToRivetSqliteCommitFinalizeRequest, p.ToEnvoySqliteCommitFinalizeResponse, request
        )

    async def sqlite_execute(
        self, request: p.SqliteExecuteRequest
    ) -> p.SqliteExecuteOk | p.SqliteErrorResponse:
        return await self._ask(  # type: ignore[no-any-return]
            p.ToRivetSqliteExecuteRequest, p.ToEnvoySqliteExecuteResponse, request
        )

    async def kv(self, actor_id: str, data: p.KvRequestData) -> p.KvResponseData:
        return await self._request(  # type: ignore[no-any-return]
            lambda rid: p.ToRivetKvRequest(actor_id=actor_id, request_id=rid, data=data),
            p.ToEnvoyKvResponse,
        )
