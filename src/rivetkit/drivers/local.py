"""The local host: actors in this process, one SQLite file each, a directory in ``registry.db``.

``registry.db`` maps actor ids to (namespace, name, key) and records lifecycle timestamps.
Keys are stored as CBOR arrays of strings (never as joined strings), so every key maps to
exactly one row. Every directory operation is a short synchronous transaction, so a lookup and the
insert that follows it cannot interleave with another request on the event loop: two concurrent
``get_or_create`` calls for a new key create one actor.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import cbor2

from .. import errors
from .._log import storage_logger
from .._runtime.clock import REAL_CLOCK, Clock, TimerHandle
from .._runtime.instance import ActorInstance
from .._runtime.journal import StateJournal
from .._runtime.queue import CompletionWaiters
from .._runtime.storage import ActorStore, StorePool, actor_db_path, remove_if_exists
from ..config import RegistryConfig
from ..definition import ActorDefinition

__all__ = ["ActorRecord", "LocalDriver", "new_actor_id"]

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"

MAX_KEY_PART_BYTES = 128
MAX_KEY_BYTES = 1024

_DIRECTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS actors (
  actor_id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  key BLOB NOT NULL,
  generation INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  slept_at INTEGER,
  destroyed_at INTEGER,
  alarm_at INTEGER
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS actors_by_key ON actors (namespace, name, key)
  WHERE destroyed_at IS NULL;
CREATE INDEX IF NOT EXISTS actors_by_name ON actors (namespace, name, created_at);
"""
_ALARM_INDEX = """
CREATE INDEX IF NOT EXISTS actors_by_alarm ON actors (alarm_at)
  WHERE alarm_at IS NOT NULL AND destroyed_at IS NULL;
"""
# Asleep: slept, or created and never started. (At open, actors left awake by a crash are
# marked asleep first.)
_ASLEEP = "(slept_at IS NOT NULL OR started_at IS NULL)"


def new_actor_id() -> str:
    """30 lowercase base36 characters: URL-path safe, no ``@``, ``/`` or ``,``."""
    n = secrets.randbits(155)
    out = []
    for _ in range(30):
        n, r = divmod(n, 36)
        out.append(_BASE36[r])
    return "".join(out)


def validate_key(key: Iterable[str]) -> tuple[str, ...]:
    """Check a key against RivetKit's limits (128 bytes a part, 1024 in all)."""
    parts = tuple(key)
    total = 0
    for part in parts:
        if not isinstance(part, str):
            raise errors.RivetError(
                "actor", "invalid_key", "Actor key parts must be strings.", status=400
            )
        size = len(part.encode())
        total += size
        if size > MAX_KEY_PART_BYTES:
            raise errors.key_too_large(
                f"Key label too large (max {MAX_KEY_PART_BYTES} bytes): {part[:32]!r}",
                MAX_KEY_PART_BYTES,
            )
    if total > MAX_KEY_BYTES:
        raise errors.key_too_large(
            f"Key too large (max {MAX_KEY_BYTES} bytes in all).", MAX_KEY_BYTES
        )
    return parts


@dataclass(slots=True)
class ActorRecord:
    """One row of the actor directory. Timestamps are epoch milliseconds."""

    actor_id: str
    namespace: str
    name: str
    key: tuple[str, ...]
    generation: int
    created_at: int
    started_at: int | None = None
    slept_at: int | None = None
    destroyed_at: int | None = None
    alarm_at: int | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ActorRecord:
        actor_id, namespace, name, key, generation, created, started, slept, destroyed, alarm = row
        return cls(
            actor_id, namespace, name, tuple(cbor2.loads(key)), generation, created, started,
            slept, destroyed, alarm,
        )


_COLUMNS = (
    "actor_id, namespace, name, key, generation, created_at, started_at, slept_at, destroyed_at, "
    "alarm_at"
)


class LocalDriver:
    """Hosts actors in this process with local SQLite storage.

    Args:
        definitions: actor definitions by name.
        config: registry settings (storage path, SQLite durability).
    """

    def __init__(
        self,
        definitions: Mapping[str, ActorDefinition],
        config: RegistryConfig,
        *,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        self.definitions = definitions
        self.config = config
        self.clock = clock
        self.registry: Any = None
        self.root = Path(config.storage_path)
        self._db: apsw.Connection | None = None
        self.awake: dict[str, ActorInstance] = {}
        self._by_key: dict[tuple[str, str, tuple[str, ...]], ActorInstance] = {}
        self._starting: dict[str, asyncio.Future[ActorInstance]] = {}
        self._fresh: dict[str, ActorStore] = {}
        self.pool = StorePool(config.max_open_databases)
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._compacting: dict[str, asyncio.Task[None]] = {}
        self._alarm_timer: TimerHandle | None = None
        self._alarm_timer_at: int | None = None
        self._waking: set[asyncio.Task[None]] = set()
        self.journal: StateJournal | None = None
        self._closing = False
        self.queue_completions = CompletionWaiters()  # senders waiting with wait=True
        self.wakes_actors = True  # a request may wake a sleeping actor by itself

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) the storage directory and ``registry.db``."""
        if self._db is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        db = apsw.Connection(str(self.root / "registry.db"))
        list(db.execute("PRAGMA journal_mode=WAL"))
        list(db.execute(f"PRAGMA synchronous={self.config.sqlite_synchronous}"))
        db.set_busy_timeout(5000)
        with db:
            list(db.execute(_DIRECTORY_SCHEMA))
            columns = {row[1] for row in db.execute("PRAGMA table_info(actors)")}
            if "alarm_at" not in columns:  # a directory written before alarms existed
                db.execute("ALTER TABLE actors ADD COLUMN alarm_at INTEGER")
            list(db.execute(_ALARM_INDEX))
            # Actors that were awake when the process died are asleep now.
            db.execute(
                "UPDATE actors SET slept_at = ? WHERE slept_at IS NULL "
                "AND started_at IS NOT NULL AND destroyed_at IS NULL",
                (self.clock.now_ms(),),
            )
        self._db = db
        self.journal = StateJournal(
            self.root / "journal.db", synchronous=self.config.sqlite_synchronous
        )
        storage_logger.info("storage opened path=%s", self.root)
        self._arm_alarms()  # alarms missed while the server was down fire now

    async def close(self) -> None:
        """Put every awake actor to sleep (graceful shutdown, state committed) and close
        ``registry.db``."""
        self._closing = True  # write-ahead logs stay as they are: the next sleep folds them in
        if self._alarm_timer is not None:
            self._alarm_timer.cancel()
            self._alarm_timer = None
        for task in list(self._waking):
            task.cancel()
        for instance in list(self.awake.values()):
            self.stop_actor(instance, "sleep")
        while True:
            tasks = [
                task
                for task in (*self._stopping.values(), *self._compacting.values())
                if not task.done()
            ]
            if not tasks:
                break
            await asyncio.gather(*tasks, return_exceptions=True)
        self.awake.clear()
        self._by_key.clear()
        for store in self._fresh.values():
            store.close()
        self._fresh.clear()
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> apsw.Connection:
        if self._db is None:
            raise RuntimeError("the local driver is not open; start the registry first")
        return self._db

    # -- directory -------------------------------------------------------------------------

    def definition(self, name: str) -> ActorDefinition:
        definition = self.definitions.get(name)
        if definition is None:
            raise errors.RivetError(
                "actor",
                "name_not_found",
                f"No actor named {name!r} is defined on this server.",
                metadata={"name": name},
                status=404,
            )
        return definition

    def lookup(self, namespace: str, name: str, key: tuple[str, ...]) -> ActorRecord | None:
        rows = list(
            self.db.execute(
                f"SELECT {_COLUMNS} FROM actors WHERE namespace = ? AND name = ? AND key = ? "
                "AND destroyed_at IS NULL",
                (namespace, name, cbor2.dumps(list(key))),
            )
        )
        return ActorRecord.from_row(rows[0]) if rows else None

    def get_record(self, actor_id: str) -> ActorRecord | None:
        """The live record for ``actor_id``; ``None`` if unknown or destroyed."""
        rows = list(
            self.db.execute(
                f"SELECT {_COLUMNS} FROM actors WHERE actor_id = ? AND destroyed_at IS NULL",
                (actor_id,),
            )
        )
        return ActorRecord.from_row(rows[0]) if rows else None

    def list_by_name(
        self, namespace: str, name: str, *, limit: int = 100, after_created_at: int | None = None
    ) -> list[ActorRecord]:
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM actors WHERE namespace = ? AND name = ? "
            "AND destroyed_at IS NULL AND created_at > ? ORDER BY created_at LIMIT ?",
            (namespace, name, after_created_at if after_created_at is not None else -1, limit),
        )
        return [ActorRecord.from_row(row) for row in rows]

    def create(
        self, namespace: str, name: str, key: Iterable[str], input: bytes | None
    ) -> ActorRecord:
        """Create a new actor; ``actor.duplicate_key`` if the key is taken."""
        definition = self.definition(name)
        parts = validate_key(key)
        if input is not None and len(input) > self.config.max_input_size:
            raise errors.input_too_large(self.config.max_input_size)
        existing = self.lookup(namespace, name, parts)
        if existing is not None:
            from .._runtime.keys import serialize_key

            serialized = serialize_key(list(parts))
            raise errors.RivetError(
                "actor",
                "duplicate_key",
                f"Actor key '{serialized}' already in use for actor '{existing.actor_id}'",
                metadata={"existing_actor_id": existing.actor_id, "key": serialized},
                status=400,
            )
        actor_id = new_actor_id()
        path = actor_db_path(self.root, actor_id)
        store = ActorStore.create(
            path, input=input, synchronous=self.config.sqlite_synchronous, pool=self.pool
        )
        record = ActorRecord(actor_id, namespace, definition.name, parts, 1, self.clock.now_ms())
        try:
            with self.db:
                self.db.execute(
                    f"INSERT INTO actors ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, "
                    "NULL)",
                    (actor_id, namespace, name, cbor2.dumps(list(parts)), 1, record.created_at),
                )
        except BaseException:
            store.delete()
            raise
        # Keep the new file open for the start that almost always follows: closing a WAL
        # database checkpoints and syncs it, which would double the cost of a cold start.
        self._fresh[actor_id] = store
        return record

    def get_or_create(
        self, namespace: str, name: str, key: Iterable[str], input: bytes | None
    ) -> tuple[ActorRecord, bool]:
        self.definition(name)
        parts = validate_key(key)
        existing = self.lookup(namespace, name, parts)
        if existing is not None:
            return existing, False
        return self.create(namespace, name, parts, input), True

    def names(self) -> list[str]:
        return sorted(self.definitions)

    # -- instances -------------------------------------------------------------------------

    def awake_by_key(self, namespace: str, name: str, key: tuple[str, ...]) -> ActorInstance | None:
        return self._by_key.get((namespace, name, key))

    async def instance(self, record: ActorRecord) -> ActorInstance:
        """The awake instance of ``record``, starting it if needed (once, however many ask).

        A request for an actor that is going to sleep waits for the sleep to finish and wakes
        it again; for an actor being destroyed it gets ``actor.not_found``.

        Raises:
            RivetError: ``actor.not_found`` when the actor was destroyed meanwhile.
        """
        instance = self.awake.get(record.actor_id)
        if instance is not None:
            return instance
        stopping = self._stop_in_progress(record.actor_id)
        while stopping is not None:
            await asyncio.shield(stopping)
            fresh = self.get_record(record.actor_id)
            if fresh is None:
                raise errors.actor_not_found()
            record = fresh
            instance = self.awake.get(record.actor_id)
            if instance is not None:
                return instance
            stopping = self._stop_in_progress(record.actor_id)
        pending = self._starting.get(record.actor_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ActorInstance] = asyncio.get_running_loop().create_future()
        self._starting[record.actor_id] = future
        try:
            instance = await self._start(record)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: the caller re-raises it
            raise
        finally:
            del self._starting[record.actor_id]
        future.set_result(instance)
        return instance

    async def _start(self, record: ActorRecord) -> ActorInstance:
        definition = self.definition(record.name)
        store = self._fresh.pop(record.actor_id, None) or ActorStore(
            actor_db_path(self.root, record.actor_id),
            synchronous=self.config.sqlite_synchronous,
            pool=self.pool,
        )
        generation = record.generation
        if record.started_at is not None:
            generation += 1
        started_at = self.clock.now_ms()
        instance = ActorInstance(
            definition,
            actor_id=record.actor_id,
            key=record.key,
            generation=generation,
            store=store,
            codec=definition.state_codec,
            clock=self.clock,
            host=self,
        )
        instance.max_outgoing = self.config.max_outgoing_message_size
        instance.journal = self.journal
        with self.db:
            self.db.execute(
                "UPDATE actors SET generation = ?, started_at = ?, slept_at = NULL "
                "WHERE actor_id = ?",
                (generation, started_at, record.actor_id),
            )
        record.generation = generation
        record.started_at = started_at
        record.slept_at = None
        try:
            await instance.start(arm_alarms=record.alarm_at is not None)
        except BaseException:
            instance.stopped = True
            store.close()
            self._mark_asleep(record.actor_id)
            raise
        if instance.stopping is None:  # start hooks may already have asked to stop
            self.awake[record.actor_id] = instance
            self._by_key[(record.namespace, record.name, record.key)] = instance
        return instance

    def _forget_awake(self, instance: ActorInstance) -> None:
        if self.awake.get(instance.actor_id) is instance:
            del self.awake[instance.actor_id]
        record = self.get_record(instance.actor_id)
        if record is not None:
            by_key = (record.namespace, record.name, record.key)
            if self._by_key.get(by_key) is instance:
                del self._by_key[by_key]

    def _mark_asleep(self, actor_id: str) -> None:
        with self.db:
            self.db.execute(
                "UPDATE actors SET slept_at = ? WHERE actor_id = ? AND destroyed_at IS NULL",
                (self.clock.now_ms(), actor_id),
            )

    # -- sleep, destroy, alarms ------------------------------------------------------------

    def stop_actor(self, instance: ActorInstance, reason: str) -> asyncio.Task[None]:
        """Begin putting ``instance`` to sleep or destroying it; new requests for the actor
        wait for the stop (and then wake a new generation, unless it was destroyed)."""
        existing = self._stopping.get(instance.actor_id)
        if existing is not None:
            return existing
        self._forget_awake(instance)
        instance.begin_stop(reason)
        task = asyncio.get_running_loop().create_task(self._stop(instance, reason))
        self._stopping[instance.actor_id] = task
        return task

    async def _stop(self, instance: ActorInstance, reason: str) -> None:
        actor_id = instance.actor_id
        try:
            try:
                await instance.shutdown(reason)
            except Exception:
                instance.log.exception("actor failed to stop cleanly reason=%s", reason)
                instance.stopped = True
                instance.store.close()
            if reason == "destroy" or instance._destroy_after_sleep:
                self._remove(actor_id)
                self.queue_completions.drop_actor(actor_id, errors.actor_not_found())
                instance.log.info("actor destroyed")
            elif self._db is not None:
                self._mark_asleep(actor_id)
                instance.log.debug("actor asleep")
                self._arm_alarms()
                if not self._closing:
                    self._start_compaction(instance)
        finally:
            del self._stopping[actor_id]

    def _start_compaction(self, instance: ActorInstance) -> None:
        """Leave a sleeping actor as one file (no write-ahead log), in a worker thread. Anything
        that would open the file again (a wake, a destroy) waits for it first."""
        actor_id = instance.actor_id
        task = asyncio.get_running_loop().create_task(self._compact(instance))
        self._compacting[actor_id] = task

    async def _compact(self, instance: ActorInstance) -> None:
        store = instance.store
        try:
            if store.is_open:
                instance.log.warning("actor file still open after stop path=%s", store.path)
                return
            await asyncio.get_running_loop().run_in_executor(None, store.compact)
        except (apsw.Error, OSError) as exc:
            # The log stays and is read back at the next wake: nothing is lost, only disk.
            instance.log.warning("actor file not compacted path=%s error=%r", store.path, exc)
        finally:
            if self._compacting.get(instance.actor_id) is asyncio.current_task():
                del self._compacting[instance.actor_id]

    def _remove(self, actor_id: str) -> None:
        fresh = self._fresh.pop(actor_id, None)
        if fresh is not None:
            fresh.close()
        with self.db:
            self.db.execute(
                "UPDATE actors SET destroyed_at = ?, alarm_at = NULL WHERE actor_id = ?",
                (self.clock.now_ms(), actor_id),
            )
        if self.journal is not None:
            self.journal.forget(actor_id)
        remove_if_exists(actor_db_path(self.root, actor_id))

    def set_alarm(self, actor_id: str, at_ms: int | None) -> None:
        """Record the actor's next alarm (``None``: none) so it is woken for it when asleep."""
        with self.db:
            self.db.execute(
                "UPDATE actors SET alarm_at = ? WHERE actor_id = ? AND destroyed_at IS NULL",
                (at_ms, actor_id),
            )
        if actor_id not in self.awake:
            self._arm_alarms()

    def _arm_alarms(self) -> None:
        """Arm one timer for the earliest alarm of a sleeping actor."""
        if self._db is None:
            return
        rows = list(
            self.db.execute(
                f"SELECT min(alarm_at) FROM actors WHERE alarm_at IS NOT NULL "
                f"AND destroyed_at IS NULL AND {_ASLEEP}"
            )
        )
        at_ms = rows[0][0] if rows else None
        if at_ms == self._alarm_timer_at and self._alarm_timer is not None:
            return
        if self._alarm_timer is not None:
            self._alarm_timer.cancel()
            self._alarm_timer = None
        self._alarm_timer_at = at_ms
        if at_ms is not None:
            delay = max(0.0, (at_ms - self.clock.now_ms()) / 1000.0)
            self._alarm_timer = self.clock.call_later(delay, self._alarms_due)

    def _alarms_due(self) -> None:
        """Wake every sleeping actor whose alarm is due; they fire it themselves once awake."""
        self._alarm_timer = None
        self._alarm_timer_at = None
        if self._db is None:
            return
        now = self.clock.now_ms()
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM actors WHERE alarm_at IS NOT NULL AND alarm_at <= ? "
            f"AND destroyed_at IS NULL AND {_ASLEEP} ORDER BY alarm_at",
            (now,),
        )
        loop = asyncio.get_running_loop()
        for row in list(rows):
            record = ActorRecord.from_row(row)
            if record.actor_id in self.awake or record.actor_id in self._starting:
                continue
            task = loop.create_task(self._wake_for_alarm(record))
            self._waking.add(task)
            task.add_done_callback(self._waking.discard)
        self._arm_alarms()

    def _stop_in_progress(self, actor_id: str) -> asyncio.Task[None] | None:
        """The stop (or, after it, the compaction of the file) to wait for before the actor's
        file may be opened again."""
        for tasks in (self._stopping, self._compacting):
            task = tasks.get(actor_id)
            if task is not None and not task.done():  # awaiting a done task would not yield
                return task
        return None

    async def wait_stopped(self, actor_id: str) -> None:
        """Return once the actor is not on its way to sleep or destruction (its file is closed
        and compacted, or removed)."""
        stopping = self._stop_in_progress(actor_id)
        while stopping is not None:
            await asyncio.shield(stopping)
            stopping = self._stop_in_progress(actor_id)

    async def _wake_for_alarm(self, record: ActorRecord) -> None:
        try:
            await self.instance(record)
        except Exception:
            storage_logger.exception("failed to wake actor for its alarm actor_id=%s", record.actor_id)

    def client(self) -> Any:
        """The in-process client actors use to call each other (``c.client()``)."""
        if self.registry is None:
            raise RuntimeError("this driver is not part of a registry")
        return self.registry.in_process_client()

    async def destroy(self, actor_id: str) -> bool:
        """Destroy an actor: ``on_destroy`` runs (the actor is woken for it if asleep), its
        storage is deleted and its key freed. False if unknown or already destroyed."""
        stopping = self._stopping.get(actor_id)
        if stopping is not None:
            await asyncio.shield(stopping)
        record = self.get_record(actor_id)
        if record is None:
            return False
        instance = await self.instance(record)
        await asyncio.shield(self.stop_actor(instance, "destroy"))
        return True
