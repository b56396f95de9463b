"""The engine host: the Rivet Engine places actors on this process; the runtime is the same.

The engine decides where and when an actor runs. It sends ``CommandStartActor`` (a new
*generation*) and ``CommandStopActor``; this host turns them into the very same
:class:`~rivetkit._runtime.instance.ActorInstance` lifecycle as the local host, with the actor's
database held by the engine (:mod:`.sqlite`) and client traffic arriving through the tunnel
(:mod:`.tunnel`) into the same ASGI app.

The actor's own requests go the other way, as events: sleeping or destroying itself is an
*intent* (the engine answers with a stop command), an alarm is ``SetAlarm``. The one rule the
engine imposes on every path (spec §7.2): ``Stopped{OK}`` destroys the actor unless the engine
asked for the stop or the actor announced an intent, so a stop we did not plan reports
``Stopped{ERROR}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any

from ... import errors
from ..._protocol import envoy as p
from ..._runtime.clock import REAL_CLOCK, Clock
from ..._runtime.hibernation import delete_conns, load_conns
from ..._runtime.instance import ActorInstance
from ..._runtime.keys import parse_key
from ..._runtime.queue import CompletionWaiters
from ..._runtime.storage import StorePool
from ...config import EngineConfig, RegistryConfig
from ...definition import ActorDefinition
from ..local import ActorRecord
from .cache import CacheDir
from .envoy import Envoy, EnvoyError, destroy_actor
from .legacy_import import import_legacy_kv
from .sqlite import DepotStore
from ._tunnel_ws import TunnelWebSocket
from .tunnel import Tunnel

__all__ = ["EngineDriver"]

log = logging.getLogger("rivetkit.envoy")

_STOPPED_KEPT = 10_000
"""Actors remembered as stopped here (see :meth:`EngineDriver._stopped_here`)."""

# Engine stop reasons -> the runtime's shutdown reason.
_STOP_REASONS = {
    p.StopActorReason.SLEEP_INTENT: "sleep",
    p.StopActorReason.STOP_INTENT: "destroy",
    p.StopActorReason.DESTROY: "destroy",
    p.StopActorReason.GOING_AWAY: "sleep",
    p.StopActorReason.LOST: "sleep",
}


class _Hosted:
    """One actor generation on this process, from its start command to ``Stopped``."""

    __slots__ = ("record", "instance", "stop_command", "stopping", "intent_sent", "lost")

    def __init__(self, record: ActorRecord) -> None:
        self.record = record
        self.instance: ActorInstance | None = None
        self.stop_command: asyncio.Future[p.StopActorReason] = (
            asyncio.get_running_loop().create_future()
        )
        self.stopping: asyncio.Task[None] | None = None
        self.intent_sent: str | None = None  # "sleep" or "destroy": the intent told the engine
        self.lost: str | None = None  # why it was given up (never Stopped{OK} then)


class EngineDriver:
    """Hosts the registry's actors on the Rivet Engine (engine mode)."""

    def __init__(
        self,
        definitions: Mapping[str, ActorDefinition],
        config: RegistryConfig,
        engine: EngineConfig,
        *,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.definitions = definitions
        self.config = config
        self.engine = engine
        self.clock = clock
        self.registry: Any = None
        self.awake: dict[str, ActorInstance] = {}
        self._hosted: dict[str, _Hosted] = {}  # actor id -> its live generation
        self._stopped: dict[str, None] = {}  # actors that stopped here, oldest first
        self._tasks: set[asyncio.Task[Any]] = set()
        self.queue_completions = CompletionWaiters()
        self.wakes_actors = False  # only the engine starts actors
        self.pool = StorePool(config.max_open_databases)
        self._cache_root = Path(config.storage_path) / "engine-cache"
        self.caches: CacheDir | None = None  # this process's actor caches, made by open()
        self.envoy: Envoy | None = None
        self.tunnel: Tunnel | None = None
        self._client: Any = None
        self._draining = False
        # serverless mode: futures resolved when a generation reports Stopped (POST /start's SSE)
        self._stop_waiters: dict[tuple[str, int], list[asyncio.Future[None]]] = {}
        self.pool_configured = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect to the engine (in the background; reconnects by itself)."""
        if self.envoy is not None:
            return
        from ... import __version__

        self.caches = CacheDir.claim(self._cache_root, keep_bytes=self.engine.keep_cache_bytes)
        names = {name: p.ActorName(metadata="{}") for name in sorted(self.definitions)}
        self.envoy = Envoy(
            self.engine,
            self,
            actor_names=names,
            metadata={"rivetkit": {"version": __version__, "runtime": "python"}},
            clock=self.clock,
        )
        self.tunnel = Tunnel(
            self.registry.asgi(),
            self.envoy.send_tunnel,
            self._running_generation,
            can_hibernate=_hibernatable,
            stopped_here=self._stopped_here,
        )
        if self.engine.serverless is not None:
            # The engine calls us (POST /start); the envoy connects on the first start.
            self._spawn(self._configure_serverless_pool())
            log.info("serverless engine mode url=%s pool=%s",
                     self.engine.serverless.public_url, self.engine.pool)
            return
        self.envoy.start()
        log.info(
            "envoy starting endpoint=%s namespace=%s pool=%s key=%s",
            self.engine.endpoint, self.engine.namespace, self.engine.pool, self.envoy.envoy_key,
        )

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once connected and initialised by the engine (serverless mode: once the
        pool's runner config is written; the envoy connects on the first start)."""
        if self.envoy is None:
            raise RuntimeError("the engine driver is not open")
        if self.engine.serverless is not None:
            await asyncio.wait_for(self.pool_configured.wait(), timeout)
            return
        await asyncio.wait_for(self.envoy.connected_once.wait(), timeout)

    async def _configure_serverless_pool(self) -> None:
        import aiohttp

        from .envoy import EnvoyError, ensure_pool

        attempt = 0
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await ensure_pool(self.engine, session)
                    break
                except (EnvoyError, OSError, aiohttp.ClientError, asyncio.TimeoutError,
                        ValueError) as exc:
                    log.warning("serverless pool not configured yet error=%s", exc)
                attempt += 1
                await asyncio.sleep(min(0.5 * 2 ** min(attempt, 6), 30.0))
        self.pool_configured.set()

    async def serverless_envoy(self, timeout: float) -> Envoy:
        """The envoy, connected (serverless mode: connects on the first ``POST /start``)."""
        envoy = self.envoy
        if envoy is None:
            raise RuntimeError("the engine driver is not open")
        envoy.start()  # idempotent
        await asyncio.wait_for(envoy.wait_ready(), timeout)
        return envoy

    def generation_stopped(self, actor_id: str, generation: int) -> asyncio.Future[None]:
        """Resolved once this actor generation reported ``Stopped`` (or the driver closed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop_waiters.setdefault((actor_id, generation), []).append(future)
        return future

    def _resolve_stopped(self, actor_id: str, generation: int) -> None:
        for future in self._stop_waiters.pop((actor_id, generation), ()):
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        """Graceful drain: ask the engine to move our actors away, wait for their stops, close."""
        envoy = self.envoy
        if envoy is None:
            return
        self._draining = True
        if envoy.ready and self._hosted:
            envoy.send_stopping()
            deadline = asyncio.get_running_loop().time() + self.engine.drain_timeout
            while self._hosted and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
        # Whatever is left (engine gone, drain timed out) stops here, reported as an error so
        # the engine does not take it for a deliberate destroy.
        for hosted in list(self._hosted.values()):
            if not hosted.stop_command.done():  # the engine will not answer any more
                hosted.lost = "runtime shut down before the engine answered"
                hosted.stop_command.set_result(p.StopActorReason.GOING_AWAY)
            self._begin_stop(hosted, "sleep", planned=False)
        pending = [h.stopping for h in self._hosted.values() if h.stopping is not None]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.tunnel is not None:
            await self.tunnel.close()
        await envoy.close()
        for key in list(self._stop_waiters):
            self._resolve_stopped(*key)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.envoy = None
        if self.caches is not None:
            caches, self.caches = self.caches, None
            caches.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- envoy handler ---------------------------------------------------------------------

    def on_ready(self, init: p.ToEnvoyInit) -> None:
        if self.tunnel is not None:
            self.tunnel.max_response_payload_size = init.metadata.max_response_payload_size

    def on_command(self, checkpoint: p.ActorCheckpoint, command: p.Command) -> None:
        if isinstance(command, p.CommandStartActor):
            current = self._hosted.get(checkpoint.actor_id)
            if current is not None and current.record.generation >= checkpoint.generation:
                log.warning(
                    "start for an older generation ignored actor_id=%s generation=%d",
                    checkpoint.actor_id, checkpoint.generation,
                )
                if current.record.generation > checkpoint.generation:
                    self._resolve_stopped(checkpoint.actor_id, checkpoint.generation)
                return
            self._spawn(self._start(checkpoint, command))
        else:
            hosted = self._hosted.get(checkpoint.actor_id)
            if hosted is None or hosted.record.generation != checkpoint.generation:
                # Not ours (any more): answer so the engine is not left waiting.
                log.info("stop for an actor not running here actor_id=%s generation=%d",
                         checkpoint.actor_id, checkpoint.generation)
                self._event(checkpoint.actor_id, checkpoint.generation,
                            _stopped(p.StopCode.ERROR, "actor not running on this envoy"),
                            final=True)
                return
            if not hosted.stop_command.done():
                hosted.stop_command.set_result(command.reason)
            reason = _STOP_REASONS.get(command.reason, "sleep")
            if command.reason == p.StopActorReason.LOST:
                self._begin_stop(hosted, reason, planned=False)
            else:
                self._begin_stop(hosted, reason, planned=True)

    def on_tunnel(self, message: p.ToEnvoyTunnelMessage) -> None:
        if self.tunnel is not None:
            self.tunnel.on_message(message)

    def on_lost(self) -> None:
        for hosted in list(self._hosted.values()):
            hosted.lost = "actor lost due to timeout"
            if not hosted.stop_command.done():  # a stop waiting for the engine's answer
                hosted.stop_command.set_result(p.StopActorReason.LOST)
            self._begin_stop(hosted, "sleep", planned=False, message="actor lost due to timeout")

    # -- start -----------------------------------------------------------------------------

    def _running_generation(self, actor_id: str) -> int | None:
        instance = self.awake.get(actor_id)
        return None if instance is None else instance.generation

    def _stopping(self, actor_id: str) -> bool:
        hosted = self._hosted.get(actor_id)
        return hosted is not None and hosted.stopping is not None

    def _stopped_here(self, actor_id: str) -> bool:
        """The actor is stopping on this envoy or reported ``Stopped`` from it lately."""
        return actor_id in self._stopped or self._stopping(actor_id)

    async def _start(self, cp: p.ActorCheckpoint, command: p.CommandStartActor) -> None:
        actor_id, generation = cp.actor_id, cp.generation
        self._stopped.pop(actor_id, None)
        config = command.config
        definition = self.definitions.get(config.name)
        if definition is None:
            self._event(actor_id, generation, _stopped(
                p.StopCode.ERROR, f"no actor named {config.name!r} is defined on this runtime"
            ), final=True)
            return
        record = ActorRecord(
            actor_id=actor_id,
            namespace=self.engine.namespace,
            name=config.name,
            key=tuple(parse_key(config.key)),
            generation=generation,
            created_at=config.create_ts,
            started_at=self.clock.now_ms(),
            slept_at=None,
            destroyed_at=None,
            alarm_at=None,
        )
        log.debug("actor starting actor_id=%s generation=%d name=%s", actor_id, generation,
                  config.name)
        hosted = _Hosted(record)
        previous = self._hosted.get(actor_id)
        if previous is not None and previous.stopping is not None:
            await asyncio.shield(previous.stopping)  # two generations never share the cache
        self._hosted[actor_id] = hosted
        assert self.envoy is not None and self.caches is not None
        try:
            store = await DepotStore.open(
                self.envoy,
                actor_id=actor_id,
                generation=generation,
                cache_path=self.caches.file_for(actor_id),
                input=config.input,
                kept_head=self.caches.take(actor_id),
                pool=self.pool,
                on_failure=lambda error: self._storage_failed(hosted, error),
            )
        except Exception as exc:
            log.error("actor storage failed to open actor_id=%s error=%s", actor_id, exc)
            if hosted.stopping is None:
                self._finish(hosted, _stopped(p.StopCode.ERROR, f"storage failed to open: {exc}"))
            return
        try:  # actors of RivetKit <= 2.2: data still in the engine's KV (spec §10.2)
            await import_legacy_kv(self.envoy, actor_id, store, input=config.input)
        except Exception as exc:
            log.error("legacy KV import failed actor_id=%s error=%s", actor_id, exc)
            with contextlib.suppress(Exception):
                store.delete()
            if hosted.stopping is None:
                self._finish(hosted, _stopped(p.StopCode.ERROR, f"legacy KV import failed: {exc}"))
            return
        if hosted.stopping is not None:  # stopped while its database was loading
            store.delete()  # (and stops a lazy load: the engine keeps the data)
            return
        instance = ActorInstance(
            definition,
            actor_id=actor_id,
            key=record.key,
            generation=generation,
            store=store,
            codec=definition.state_codec,
            clock=self.clock,
            host=self,
        )
        instance.max_outgoing = self.config.max_outgoing_message_size
        hosted.instance = instance
        try:
            await instance.start(arm_alarms=True)
        except Exception as exc:
            instance.stopped = True
            instance.log.error("actor failed to start error=%r", exc)
            with contextlib.suppress(Exception):
                store.close()
            self._finish(hosted, _stopped(p.StopCode.ERROR, f"actor failed to start: {exc}"))
            return
        if hosted.stopping is not None or instance.stopping is not None:
            return  # stopped while starting (the stop task reports it)
        try:
            await self._restore_conns(instance, command.hibernating_requests)
        except Exception as exc:
            instance.log.exception("hibernated connections not restored")
            self._begin_stop(hosted, "sleep", planned=False,
                             message=f"connections not restored: {exc}")
            return
        self.awake[actor_id] = instance
        self._event(actor_id, generation, p.EventActorStateUpdate(state=p.ActorStateRunning()))
        instance.log.debug("actor running generation=%d", generation)

    def _storage_failed(self, hosted: _Hosted, error: errors.RivetError) -> None:
        """A commit was refused or lost: the actor cannot go on (its cache is ahead of the
        engine). Stop it with an error; the engine starts it again from what it has."""
        if self._hosted.get(hosted.record.actor_id) is hosted:
            self._begin_stop(hosted, "sleep", planned=False, message=f"actor storage failed: {error}")

    async def _restore_conns(
        self, instance: ActorInstance, requests: list[p.HibernatingRequest]
    ) -> None:
        """Reattach the sockets the gateway held while the actor was away (spec §6.7.4): each
        one listed by the start command and stored by an earlier generation gets its connection
        back and ``WebSocketOpen`` before ``Running``; stored ones the gateway no longer holds
        are deleted; listed ones with no rows (the last generation died before it stored them)
        are closed (``ws.meta_not_found_during_restore``), so their clients connect again
        instead of talking to nobody."""
        persisted = await instance.store.run(load_conns)
        assert self.tunnel is not None
        stored = {(pc.hibernation.gateway_id, pc.hibernation.request_id) for pc in persisted}
        for r in requests:
            if (r.gateway_id, r.request_id) not in stored:
                self.tunnel.refuse_restore(instance.actor_id, r.gateway_id, r.request_id)
        if not persisted:
            return
        held = {(r.gateway_id, r.request_id) for r in requests}
        stale = [pc.conn_id for pc in persisted
                 if (pc.hibernation.gateway_id, pc.hibernation.request_id) not in held]
        if stale:
            def forget(db: Any) -> None:
                with db:
                    delete_conns(db, stale)

            await instance.store.run(forget)
        for pc in persisted:
            if pc.conn_id in stale:
                continue
            conn = instance.restore_conn(pc)
            await self.tunnel.restore_websocket(
                instance.actor_id, instance.generation, conn.id, pc.hibernation
            )

    # -- stop ------------------------------------------------------------------------------

    def stop_actor(self, instance: ActorInstance, reason: str) -> asyncio.Task[None]:
        """The actor asks to sleep or to be destroyed: tell the engine (an intent) and stop.

        A sleeping actor keeps serving until the engine's stop command: the gateway routes
        requests to it until the engine has taken the intent, and refusing those would fail
        them (``envoy.actor_not_found`` is not retried). A destroy stops at once.
        """
        hosted = self._hosted.get(instance.actor_id)
        if hosted is None or hosted.instance is not instance:
            raise RuntimeError(f"actor {instance.actor_id} is not hosted here")
        if hosted.stopping is not None:
            return hosted.stopping
        if reason == "destroy":
            if hosted.intent_sent == "sleep":
                # The engine took the sleep intent and ignores a stop intent now: the stop
                # goes on as a sleep, and the engine's API destroys the actor after it.
                instance._destroy_after_sleep = True
                return self._spawn(self._stop_when_asked(hosted))
            hosted.intent_sent = "destroy"
            self._event(instance.actor_id, instance.generation,
                        p.EventActorIntent(intent=p.ActorIntentStop()))
            return self._begin_stop(hosted, reason, planned=True)
        if not hosted.intent_sent:
            hosted.intent_sent = "sleep"
            self._event(instance.actor_id, instance.generation,
                        p.EventActorIntent(intent=p.ActorIntentSleep()))
        return self._spawn(self._stop_when_asked(hosted))

    async def _stop_when_asked(self, hosted: _Hosted) -> None:
        """Wait for the engine's answer to a sleep intent; its stop command begins the stop."""
        await asyncio.shield(hosted.stop_command)
        if hosted.stopping is not None:
            await asyncio.shield(hosted.stopping)

    def _begin_stop(
        self, hosted: _Hosted, reason: str, *, planned: bool, message: str | None = None
    ) -> asyncio.Task[None]:
        if hosted.stopping is not None:
            return hosted.stopping
        instance = hosted.instance
        if instance is not None:
            if self.awake.get(instance.actor_id) is instance:
                del self.awake[instance.actor_id]
            if instance.stopping is None:
                instance.begin_stop(reason)
        hosted.stopping = self._spawn(self._stop(hosted, reason, planned, message))
        return hosted.stopping

    async def _stop(
        self, hosted: _Hosted, reason: str, planned: bool, message: str | None
    ) -> None:
        instance = hosted.instance
        error: str | None = message
        if instance is not None:
            try:
                await instance.shutdown(reason)
                flush = getattr(instance.store, "flush", None)
                if flush is not None:
                    await flush()
            except Exception as exc:
                instance.log.exception("actor failed to stop cleanly reason=%s", reason)
                error = error or f"actor failed to stop: {exc}"
                instance.stopped = True
                with contextlib.suppress(Exception):
                    instance.store.close()
        if planned and error is None:
            # An intent or the engine's own stop: Stopped{OK} is safe once the engine asked.
            if not hosted.stop_command.done():
                await hosted.stop_command
        if planned and error is None and hosted.lost is None:
            destroy_after = instance is not None and instance._destroy_after_sleep
            if reason == "destroy" or destroy_after:
                self.queue_completions.drop_actor(hosted.record.actor_id, errors.actor_not_found())
            sleeps = reason != "destroy" and not destroy_after
            self._finish(hosted, _stopped(p.StopCode.OK, None), keep_cache=sleeps)
            if destroy_after and reason != "destroy":
                await self._destroy_through_api(hosted.record.actor_id)
        else:
            if hosted.lost is not None:
                error = hosted.lost
            self._finish(hosted, _stopped(p.StopCode.ERROR, error or "actor stopped by its host"))

    async def _destroy_through_api(self, actor_id: str) -> None:
        """Destroy an actor that was asked to be destroyed after its sleep had begun."""
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session:
                await destroy_actor(self.engine, session, actor_id)
        except (EnvoyError, OSError, aiohttp.ClientError, TimeoutError) as exc:
            log.error("destroy after sleep refused by the engine, the actor stays asleep "
                      "actor_id=%s error=%s", actor_id, exc)
            return
        log.info("actor destroyed after its sleep began actor_id=%s", actor_id)

    def _finish(self, hosted: _Hosted, event: p.Event, *, keep_cache: bool = False) -> None:
        """Report the generation stopped and forget it; its cache is kept for the next
        generation (``keep_cache``: a clean sleep) or removed."""
        record = hosted.record
        self._event(record.actor_id, record.generation, event, final=True)
        if self._hosted.get(record.actor_id) is hosted:
            del self._hosted[record.actor_id]
        self._stopped[record.actor_id] = None
        if len(self._stopped) > _STOPPED_KEPT:
            del self._stopped[next(iter(self._stopped))]
        if hosted.instance is not None and self.awake.get(record.actor_id) is hosted.instance:
            del self.awake[record.actor_id]
        if self.envoy is not None:
            self.envoy.forget_generation(record.actor_id, record.generation)
        if hosted.instance is not None:
            try:
                self._release_cache(record.actor_id, hosted.instance.store, keep_cache)
            except Exception:
                log.exception("actor cache not removed actor_id=%s", record.actor_id)

    def _release_cache(self, actor_id: str, store: Any, keep: bool) -> None:
        """Close the generation's store; keep its cache file for the next generation when it
        is exactly the engine's database, else remove it (the engine keeps the data)."""
        caches = self.caches
        if keep and caches is not None and caches.keep_bytes and isinstance(store, DepotStore):
            head = store.keep()
            if head is not None:
                caches.keep(actor_id, head)
            return
        store.delete()

    def _event(self, actor_id: str, generation: int, event: p.Event, *, final: bool = False) -> None:
        if self.envoy is None:
            raise RuntimeError("the engine driver is closed")
        self.envoy.send_event(actor_id, generation, event, final=final)
        if final and self._stop_waiters:
            self._resolve_stopped(actor_id, generation)

    # -- what the runtime and the app ask of a host ----------------------------------------

    def set_alarm(self, actor_id: str, at_ms: int | None) -> None:
        hosted = self._hosted.get(actor_id)
        if hosted is None:
            raise RuntimeError(f"actor {actor_id} is not hosted here")
        self._event(actor_id, hosted.record.generation, p.EventActorSetAlarm(alarm_ts=at_ms))

    def definition(self, name: str) -> ActorDefinition:
        definition = self.definitions.get(name)
        if definition is None:
            raise errors.RivetError(
                "actor", "name_not_found",
                f"No actor named {name!r} is defined on this server.",
                metadata={"name": name}, status=404,
            )
        return definition

    def names(self) -> list[str]:
        return sorted(self.definitions)

    def get_record(self, actor_id: str) -> ActorRecord | None:
        hosted = self._hosted.get(actor_id)
        return None if hosted is None else hosted.record

    async def instance(self, record: ActorRecord) -> ActorInstance:
        """The running instance; the engine alone starts actors, so none is started here."""
        instance = self.awake.get(record.actor_id)
        if instance is None:
            if self._stopping(record.actor_id):
                raise errors.ActorStopping(record.actor_id)
            raise _not_here(record.actor_id)
        return instance

    async def wait_stopped(self, actor_id: str) -> None:
        hosted = self._hosted.get(actor_id)
        if hosted is not None and hosted.stopping is not None:
            await asyncio.shield(hosted.stopping)

    def awake_by_key(self, namespace: str, name: str, key: tuple[str, ...]) -> ActorInstance | None:
        return None  # query addressing is resolved by the engine's gateway

    def lookup(self, namespace: str, name: str, key: tuple[str, ...]) -> ActorRecord | None:
        raise _engine_owns("actor lookup by key")

    def get_or_create(self, namespace: str, name: str, key: tuple[str, ...],
                      input: bytes | None) -> tuple[ActorRecord, bool]:
        raise _engine_owns("getOrCreate")

    def create(self, namespace: str, name: str, key: tuple[str, ...],
               input: bytes | None) -> ActorRecord:
        raise _engine_owns("actor creation")

    def list_by_name(self, namespace: str, name: str, **kwargs: Any) -> list[ActorRecord]:
        raise _engine_owns("actor listing")

    async def destroy(self, actor_id: str) -> bool:
        raise _engine_owns("actor destruction")

    def client(self) -> Any:
        """The client actors use to call each other: through the engine's gateway."""
        if self._client is None:
            from ...client import Client

            self._client = Client(
                self.engine.endpoint,
                namespace=self.engine.namespace,
                token=self.engine.token,
                pool_name=self.engine.pool,
            )
        return self._client


def _hibernatable(socket: TunnelWebSocket) -> bool:
    """Client-protocol connections outlive a sleep of their actor (RivetKit's default); raw
    WebSocket handlers hold Python state of their own, so they keep the actor awake."""
    return urlsplit(socket.path).path == "/connect"


def _stopped(code: p.StopCode, message: str | None) -> p.Event:
    return p.EventActorStateUpdate(state=p.ActorStateStopped(code=code, message=message))


def _not_here(actor_id: str) -> errors.RivetError:
    return errors.RivetError(
        "envoy", "actor_not_found", "Actor not found", metadata={"actorId": actor_id}, status=503
    )


def _engine_owns(what: str) -> errors.RivetError:
    return errors.RivetError(
        "engine", "not_supported",
        f"In engine mode the Rivet Engine handles {what}; call the engine's API instead.",
        status=400,
    )
