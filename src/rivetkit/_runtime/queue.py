"""Durable queues of one actor (``c.queue``): ordered messages in ``_rivet_queue``.

Storage is RivetKit's: one row per message (``id`` ascending is the order, ``name``, ``body`` as
CBOR of the JSON-compat value, ``created_at``) and ``_rivet_runtime.queue_next_id``. A send is one
transaction, committed before it returns (and before the HTTP answer of a client's send).

Delivery rule (RivetKit's two documents disagree, see docs/queues.md):

* a message received without ``completable`` is removed in the same transaction that hands it
  out: at most once;
* a message received with ``completable=True`` stays stored until ``message.complete(...)``.
  If the process dies, the actor sleeps, or the ``run`` handler ends before that, it is delivered
  again, with ``failure_count`` one higher (counted durably in ``_rivet_queue_deliveries``, a
  table of this runtime next to RivetKit's). While a completable message is out and not
  completed, the next receive raises ``queue.previous_message_not_completed``, as in RivetKit.

Senders that wait (``wait=True``) register with the host, not with the actor instance, so a
completion made by the next generation of the actor (after a sleep) still answers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import apsw

from .. import errors
from .._protocol.cbor import cbor_dumps_compat, cbor_loads
from .._protocol.messages import MISSING

if TYPE_CHECKING:
    from .instance import ActorInstance

__all__ = ["ActorQueue", "CompletionWaiters", "QueueMessage", "encoded_message_size"]

_NEXT_ID = "SELECT queue_next_id FROM _rivet_runtime WHERE id = 1"
_STATS = "SELECT COUNT(*), MAX(id) FROM _rivet_queue"
_INSERT = "INSERT INTO _rivet_queue (id, name, body, created_at) VALUES (?, ?, ?, ?)"
_SET_NEXT_ID = "UPDATE _rivet_runtime SET queue_next_id = ? WHERE id = 1"
_DELIVERIES = """
CREATE TABLE IF NOT EXISTS _rivet_queue_deliveries (id INTEGER PRIMARY KEY,
  attempts INTEGER NOT NULL, last_delivered_at INTEGER NOT NULL) STRICT
"""
_BUMP_DELIVERY = (
    "INSERT INTO _rivet_queue_deliveries (id, attempts, last_delivered_at) VALUES (?, 1, ?) "
    "ON CONFLICT (id) DO UPDATE SET attempts = attempts + 1, "
    "last_delivered_at = excluded.last_delivered_at RETURNING attempts"
)


def encoded_message_size(name: str, body: bytes) -> int:
    """Bytes of a message as RivetKit measures it against ``max_queue_message_size``: its
    persisted record (version, name, body, created_at and four empty optional fields)."""
    name_len = len(name.encode())
    return 2 + _uvarint_len(name_len) + name_len + _uvarint_len(len(body)) + len(body) + 8 + 4


def _uvarint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


class CompletionWaiters:
    """Senders waiting for ``message.complete(...)``, per actor and message id (host-wide)."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, int], asyncio.Future[Any]] = {}

    def register(self, actor_id: str, message_id: int) -> asyncio.Future[Any]:
        key = (actor_id, message_id)
        if key in self._waiting:
            raise errors.RivetError(
                "queue",
                "completion_waiter_conflict",
                f"Queue completion waiter is already registered for message {message_id}.",
                status=500,
            )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        return future

    def forget(self, actor_id: str, message_id: int) -> None:
        self._waiting.pop((actor_id, message_id), None)

    def resolve(self, actor_id: str, message_id: int, response: Any) -> None:
        future = self._waiting.pop((actor_id, message_id), None)
        if future is not None and not future.done():
            future.set_result(response)

    def drop_actor(self, actor_id: str, error: BaseException) -> None:
        """The actor is gone (destroyed): every sender waiting on it gets ``error``."""
        for key in [k for k in self._waiting if k[0] == actor_id]:
            future = self._waiting.pop(key)
            if not future.done():
                future.set_exception(error)


class QueueMessage:
    """A received message: ``id``, ``name``, ``body``, ``created_at`` (epoch ms) and, for a
    message received with ``completable=True``, :meth:`complete` and ``failure_count`` (how many
    earlier deliveries of it ended without completion)."""

    __slots__ = ("_completed", "_queue", "body", "created_at", "failure_count", "id", "name")

    def __init__(
        self,
        queue: ActorQueue | None,
        id: int,
        name: str,
        body: Any,
        created_at: int,
        failure_count: int = 0,
    ) -> None:
        self._queue = queue  # set for completable messages only
        self.id = id
        self.name = name
        self.body = body
        self.created_at = created_at
        self.failure_count = failure_count
        self._completed = False

    def __repr__(self) -> str:
        return (
            f"QueueMessage(id={self.id}, name={self.name!r}, body={self.body!r}, "
            f"created_at={self.created_at})"
        )

    @property
    def completable(self) -> bool:
        return self._queue is not None

    async def complete(self, response: Any = MISSING) -> None:
        """Acknowledge the message: it is removed from the queue (durably, before this returns)
        and a sender waiting with ``wait=True`` receives ``response`` (none when omitted).

        Raises:
            RivetError: ``queue.complete_not_configured`` for a message received without
                ``completable=True``; ``queue.already_completed`` on a second call.
        """
        queue = self._queue
        if queue is None:
            raise errors.RivetError(
                "queue",
                "complete_not_configured",
                f"Queue '{self.name}' message was not received with completable=True.",
                metadata={"name": self.name},
                status=400,
            )
        if self._completed:
            raise errors.RivetError(
                "queue", "already_completed", "Queue message was already completed.", status=400
            )
        await queue._complete(self, response)
        self._completed = True


class ActorQueue:
    """``c.queue``: send, receive and complete messages of the actor's durable queue."""

    __slots__ = ("_actor", "_deliveries", "_in_flight", "_loaded", "_next_id", "_size", "_waiters")

    def __init__(self, actor: ActorInstance) -> None:
        self._actor = actor
        self._loaded = False
        self._deliveries = False  # _rivet_queue_deliveries exists in the file
        self._next_id = 1
        self._size = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._in_flight: dict[int, QueueMessage] = {}  # completable, not completed (this run)

    # -- sending ---------------------------------------------------------------------------

    async def send(self, name: str, body: Any = None) -> QueueMessage:
        """Append a message; returns once it is durably stored (not when it is processed).

        Raises:
            RivetError: ``queue.not_declared`` for a name missing from the actor's ``queues``;
                ``queue.message_too_large``, ``queue.full`` past the actor's limits.
        """
        return await self.enqueue(name, body)

    async def enqueue(
        self, name: str, body: Any, *, on_stored: Callable[[int], None] | None = None
    ) -> QueueMessage:
        """:meth:`send`; ``on_stored(id)`` runs right after the commit, before any receiver can
        take the message (a waiting sender registers there)."""
        actor = self._actor
        self.check_name(name)
        try:
            encoded = cbor_dumps_compat(body)
        except (TypeError, ValueError) as exc:
            raise errors.RivetError(
                "queue",
                "invalid_body",
                f"Queue '{name}' message body cannot be encoded: {exc}",
                status=400,
            ) from None
        options = actor.definition.options
        size = encoded_message_size(name, encoded)
        if size > options.max_queue_message_size:
            raise errors.RivetError(
                "queue",
                "message_too_large",
                f"Queue message too large ({size} bytes). Limit is "
                f"{options.max_queue_message_size} bytes.",
                metadata={"size": size, "limit": options.max_queue_message_size},
                status=400,
            )
        created_at = actor.clock.now_ms()

        def write(conn: apsw.Connection) -> int:
            self._load(conn)
            if self._size >= options.max_queue_size:
                raise errors.RivetError(
                    "queue",
                    "full",
                    f"Queue is full. Limit is {options.max_queue_size} messages.",
                    metadata={"limit": options.max_queue_size},
                    status=400,
                )
            message_id = self._next_id
            with conn:
                conn.execute(_INSERT, (message_id, name, encoded, created_at))
                conn.execute(_SET_NEXT_ID, (message_id + 1,))
            self._next_id = message_id + 1
            self._size += 1
            return message_id

        message_id = await actor.store.run(write)
        if on_stored is not None:
            on_stored(message_id)
        self._wake_receivers()
        return QueueMessage(None, message_id, name, body, created_at)

    def check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise errors.RivetError(
                "queue", "invalid_name", "Queue name must be a non-empty string.", status=400
            )
        queues = self._actor.definition.queues
        if queues is not None and name not in queues:
            raise errors.RivetError(
                "queue",
                "not_declared",
                f"Queue `{name}` is not declared by actor `{self._actor.name}`.",
                metadata={"name": name},
                status=400,
            )

    # -- receiving -------------------------------------------------------------------------

    async def next(
        self,
        names: Sequence[str] | str | None = None,
        *,
        timeout: float | None = None,
        completable: bool = False,
    ) -> QueueMessage | None:
        """Wait for the next message (of ``names``, default any queue); ``None`` after
        ``timeout`` seconds. The actor may sleep while this waits; a sleep ends the wait with
        ``actor.aborted``."""
        messages = await self.next_batch(1, names, timeout=timeout, completable=completable)
        return messages[0] if messages else None

    async def next_batch(
        self,
        count: int,
        names: Sequence[str] | str | None = None,
        *,
        timeout: float | None = None,
        completable: bool = False,
    ) -> list[QueueMessage]:
        """Wait for up to ``count`` messages (at least one); ``[]`` after ``timeout`` seconds."""
        return await self._receive(names, count, timeout, completable, None)

    async def try_next(
        self, names: Sequence[str] | str | None = None, *, completable: bool = False
    ) -> QueueMessage | None:
        """The next message if one is stored, else ``None``, without waiting."""
        messages = await self._receive(names, 1, 0.0, completable, None)
        return messages[0] if messages else None

    async def try_next_batch(
        self, count: int, names: Sequence[str] | str | None = None, *, completable: bool = False
    ) -> list[QueueMessage]:
        """Up to ``count`` stored messages, without waiting."""
        return await self._receive(names, count, 0.0, completable, None)

    async def iter(
        self, names: Sequence[str] | str | None = None, *, completable: bool = False
    ) -> AsyncIterator[QueueMessage]:
        """Messages as they arrive, until the actor stops (then the loop just ends)::

            async for message in c.queue.iter(["jobs"], completable=True):
                await message.complete(handle(message.body))
        """
        while True:
            try:
                message = await self.next(names, completable=completable)
            except errors.RivetError as exc:
                if exc.group == "actor" and exc.code == "aborted":
                    return
                raise
            if message is not None:
                yield message

    async def take(
        self,
        names: Sequence[str] | str | None,
        count: int,
        *,
        timeout: float | None,
        record: Callable[[apsw.Connection, list[QueueMessage]], None],
    ) -> list[QueueMessage]:
        """Wait like :meth:`next_batch`, then remove the messages and call
        ``record(conn, messages)`` in the same transaction (exactly once: a workflow records
        what it received together with its removal)."""
        return await self._receive(names, count, timeout, False, record)

    async def _receive(
        self,
        names: Sequence[str] | str | None,
        count: int,
        timeout: float | None,
        completable: bool,
        record: Callable[[apsw.Connection, list[QueueMessage]], None] | None,
    ) -> list[QueueMessage]:
        actor = self._actor
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise errors.RivetError(
                "queue", "invalid_count", f"count must be a positive integer, got {count!r}",
                status=400,
            )
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise errors.RivetError(
                "queue", "invalid_timeout",
                f"timeout must be a non-negative number of seconds, got {timeout!r}", status=400,
            )
        wanted = _normalize_names(names)
        if self._in_flight:
            raise errors.RivetError(
                "queue",
                "previous_message_not_completed",
                "Previous completable queue message is not completed. Call "
                "`message.complete(...)` before receiving the next message.",
                status=400,
            )
        clock = actor.clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            messages = await actor.store.run(
                lambda conn: self._take(conn, wanted, count, completable, record)
            )
            if messages:
                return messages
            remaining = None if deadline is None else deadline - clock.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            if actor.stopping is not None:
                raise _aborted()
            with actor.idle_wait():
                await self._wait(remaining)

    def _take(
        self,
        conn: apsw.Connection,
        names: tuple[str, ...] | None,
        count: int,
        completable: bool,
        record: Callable[[apsw.Connection, list[QueueMessage]], None] | None,
    ) -> list[QueueMessage]:
        self._load(conn)
        if self._size == 0:
            return []
        skip = self._in_flight  # taken by a concurrent completable receive of this run
        limit = count + len(skip)
        if names is None:
            rows = list(
                conn.execute(
                    "SELECT id, name, body, created_at FROM _rivet_queue ORDER BY id LIMIT ?",
                    (limit,),
                )
            )
        else:
            marks = ",".join("?" * len(names))
            rows = list(
                conn.execute(
                    "SELECT id, name, body, created_at FROM _rivet_queue INDEXED BY "
                    f"_rivet_queue_name_id WHERE name IN ({marks}) ORDER BY id LIMIT ?",
                    (*names, limit),
                )
            )
        if skip:
            rows = [row for row in rows if row[0] not in skip][:count]
        if not rows:
            return []
        ids = [row[0] for row in rows]
        if completable:
            now = self._actor.clock.now_ms()
            with conn:
                if not self._deliveries:
                    conn.execute(_DELIVERIES)
                    self._deliveries = True
                attempts = [
                    int(conn.execute(_BUMP_DELIVERY, (message_id, now)).fetchall()[0][0])  # type: ignore[arg-type]
                    for message_id in ids
                ]
            messages = [
                QueueMessage(self, row[0], row[1], _decode(row[2]), row[3], attempts[i] - 1)
                for i, row in enumerate(rows)
            ]
            for message in messages:
                self._in_flight[message.id] = message
            return messages
        messages = [QueueMessage(None, row[0], row[1], _decode(row[2]), row[3]) for row in rows]
        with conn:
            self._delete(conn, ids)
            if record is not None:
                record(conn, messages)
        self._size -= len(ids)
        return messages

    async def _complete(self, message: QueueMessage, response: Any) -> None:
        actor = self._actor
        if self._in_flight.get(message.id) is not message:
            raise errors.RivetError(
                "queue",
                "message_released",
                "Queue message was released (the run handler ended or the actor restarted) and "
                "will be delivered again; it cannot be completed through this object.",
                status=400,
            )

        def write(conn: apsw.Connection) -> None:
            with conn:
                self._delete(conn, [message.id])

        await actor.store.run(write)
        self._size -= 1
        del self._in_flight[message.id]
        waiters = getattr(actor.host, "queue_completions", None)
        if waiters is not None:
            waiters.resolve(actor.actor_id, message.id, response)

    def _delete(self, conn: apsw.Connection, ids: list[int]) -> None:
        marks = ",".join("?" * len(ids))
        conn.execute(f"DELETE FROM _rivet_queue WHERE id IN ({marks})", ids)
        if self._deliveries:
            conn.execute(f"DELETE FROM _rivet_queue_deliveries WHERE id IN ({marks})", ids)

    def release_in_flight(self) -> None:
        """Completable messages handed out and not completed go back to the queue (the run
        handler ended): the next receive delivers them again."""
        self._in_flight.clear()

    # -- waiting ---------------------------------------------------------------------------

    async def _wait(self, timeout: float | None) -> None:
        """Until a message is stored, ``timeout`` seconds pass, or the actor stops."""
        actor = self._actor
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        timer = None
        if timeout is not None:
            timer = actor.clock.call_later(timeout, _resolve, future)
        try:
            await future
        finally:
            self._waiters.discard(future)
            if timer is not None:
                timer.cancel()

    def _wake_receivers(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for future in waiters:
            _resolve(future)

    def abort(self) -> None:
        """The actor began to stop: receivers waiting wake up and raise ``actor.aborted``."""
        self._wake_receivers()

    # -- inspection ------------------------------------------------------------------------

    @property
    def size(self) -> int:
        self._load(self._actor.store.conn)
        return self._size

    def inspect(self, limit: int) -> tuple[int, list[tuple[int, str, int]]]:
        """``(size, [(id, name, created_at), ...])`` of the first ``limit`` stored messages."""
        conn = self._actor.store.conn
        self._load(conn)
        rows = conn.execute(
            "SELECT id, name, created_at FROM _rivet_queue ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return self._size, [(int(row[0]), str(row[1]), int(row[2])) for row in rows]  # type: ignore[arg-type]

    def _load(self, conn: apsw.Connection) -> None:
        if self._loaded:
            return
        row = conn.execute(_NEXT_ID).fetchone()
        stored_next = row[0] if row and isinstance(row[0], int) else 1
        size, max_id = conn.execute(_STATS).fetchone() or (0, None)
        self._size = int(size)
        self._next_id = max(stored_next, (max_id or 0) + 1, 1)
        self._deliveries = (
            conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' "
                "AND name = '_rivet_queue_deliveries'"
            ).fetchone()
            is not None
        )
        self._loaded = True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _decode(raw: bytes | None) -> Any:
    return None if not raw else cbor_loads(raw)


def _normalize_names(names: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    unique = tuple(dict.fromkeys(names))
    for name in unique:
        if not isinstance(name, str) or not name:
            raise errors.RivetError(
                "queue", "invalid_name", f"Queue names must be non-empty strings, got {name!r}",
                status=400,
            )
    return unique or None


def _aborted() -> errors.RivetError:
    return errors.RivetError("actor", "aborted", "Actor aborted.", status=400)
