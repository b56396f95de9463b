"""Durable queues of one actor (``c.queue``): ordered messages in ``_rivet_queue``.

Storage is RivetKit's: one row per message (``id`` ascending is the order, ``name``, ``body`` as
CBOR of the JSON-compat value, ``created_at``) and ``_rivet_runtime.queue_next_id``; ids are never
reused, and at load the next id is ``max(queue_next_id, max(id) + 1)`` (as rivetkit-core does).

When a write is durable (the cost of a message, docs/queues.md "Cost"):

* A send is staged: it takes its id at once and is committed at the end of the event-loop tick
  with every other send of that tick (one commit for 64 concurrent senders), before ``send``
  returns and so before the HTTP answer of a client's send. A receive or a completion that runs
  before that commits the staged sends first, in its own transaction: a message sent to a
  waiting consumer is stored and handed out in one commit.
* A receive and a completion commit before they return; on an actor file nothing awaits
  between the commit and the return, so a receiver that is cancelled (a timeout, the end of a
  sleep grace period) never loses a message it took. (On the engine, ``DepotStore.run`` then
  waits for the engine's acknowledgement, and every answer waits for it too.)
* ``queue_next_id`` is written only when nothing else in the file keeps the newest id alive (its
  row or its delivery row): the row is enough for ``max(id) + 1``.

Delivery rule (RivetKit's two documents disagree, see docs/queues.md):

* a message received without ``completable`` is removed in the same transaction that hands it
  out: at most once;
* a message received with ``completable=True`` stays stored until ``message.complete(...)``.
  If the process dies, the actor sleeps, or the ``run`` handler ends before that, it is delivered
  again, with ``failure_count`` one higher. The count lives in ``_rivet_queue_deliveries`` (a
  table of this runtime next to RivetKit's) and a delivery is counted in the transaction that
  hands the message out, before any user code sees it: ``kill -9`` can land at any instruction,
  and a message whose handling kills the process must see its count grow, or it would be
  retried forever as a first attempt. A completed message's delivery row is deleted with the
  next delivery (or found stale at the next load): completion itself writes one row less.
  While a completable message is out and not completed, the next receive raises
  ``queue.previous_message_not_completed``, as in RivetKit.

Senders that wait (``wait=True``) register with the host, not with the actor instance, so a
completion made by the next generation of the actor (after a sleep) still answers them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import apsw

from .. import errors
from .._protocol.cbor import cbor_dumps_compat, cbor_loads
from .._protocol.messages import MISSING

if TYPE_CHECKING:
    from .instance import ActorInstance

__all__ = ["ActorQueue", "CompletionWaiters", "QueueMessage", "encoded_message_size"]

T = TypeVar("T")

_NEXT_ID = "SELECT queue_next_id FROM _rivet_runtime WHERE id = 1"
_STATS = "SELECT COUNT(*), MAX(id) FROM _rivet_queue"
_INSERT = "INSERT INTO _rivet_queue (id, name, body, created_at) VALUES (?, ?, ?, ?)"
_SET_NEXT_ID = "UPDATE _rivet_runtime SET queue_next_id = ? WHERE id = 1"
_DELETE = "DELETE FROM _rivet_queue WHERE id = ?"
_DELIVERIES = """
CREATE TABLE IF NOT EXISTS _rivet_queue_deliveries (id INTEGER PRIMARY KEY,
  attempts INTEGER NOT NULL, last_delivered_at INTEGER NOT NULL) STRICT
"""
_HAS_DELIVERIES = (
    "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_rivet_queue_deliveries'"
)
# Delivery rows and whether each is stale: its message is gone, or the row is older than the
# message with its id (written before that message existed: another runtime that does not know
# this table reused the id).
_MARKED = (
    "SELECT d.id, q.id IS NULL OR d.last_delivered_at < q.created_at "
    "FROM _rivet_queue_deliveries AS d LEFT JOIN _rivet_queue AS q ON q.id = d.id"
)
_FIRST_DELIVERY = (
    "INSERT INTO _rivet_queue_deliveries (id, attempts, last_delivered_at) VALUES (?, 1, ?)"
)
_BUMP_DELIVERY = (
    "INSERT INTO _rivet_queue_deliveries (id, attempts, last_delivered_at) VALUES (?, 1, ?) "
    "ON CONFLICT (id) DO UPDATE SET attempts = attempts + 1, "
    "last_delivered_at = excluded.last_delivered_at RETURNING attempts"
)
_FORGET_DELIVERY = "DELETE FROM _rivet_queue_deliveries WHERE id = ?"

_Row = tuple[int, str, bytes, int]  # id, name, body, created_at


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
        await queue._complete(self, response)  # sets _completed once the removal committed


class _Changes:
    """What one transaction does to the queue, applied to the in-memory view after it commits."""

    __slots__ = ("deleted", "forgotten", "marked")

    def __init__(self) -> None:
        self.deleted: Sequence[int] = ()  # message rows removed
        self.marked: Sequence[int] = ()  # delivery rows written
        self.forgotten: Sequence[int] = ()  # delivery rows removed


class ActorQueue:
    """``c.queue``: send, receive and complete messages of the actor's durable queue."""

    __slots__ = (
        "_actor",
        "_deliveries",
        "_flush_scheduled",
        "_in_flight",
        "_loaded",
        "_marked",
        "_newest",
        "_newest_stored",
        "_next_id",
        "_size",
        "_staged",
        "_stale",
        "_stop_watchers",
        "_stored_next",
        "_waiters",
    )

    def __init__(self, actor: ActorInstance) -> None:
        self._actor = actor
        self._loaded = False
        self._next_id = 1  # next id to hand out (ids of failed sends are skipped, not reused)
        self._size = 0  # stored and staged messages
        self._staged: list[tuple[_Row, asyncio.Future[None]]] = []  # sends not committed yet
        self._flush_scheduled = False
        self._newest = 0  # highest id ever committed
        self._newest_stored = False  # its row is still in _rivet_queue
        self._stored_next = 1  # _rivet_runtime.queue_next_id as committed
        self._deliveries = False  # _rivet_queue_deliveries exists in the file
        self._marked: set[int] = set()  # ids with a delivery row
        self._stale: list[int] = []  # delivery rows of removed messages, deleted with the next mark
        self._waiters: set[asyncio.Future[None]] = set()  # receivers waiting for a send
        self._stop_watchers: set[asyncio.Future[None]] = set()  # senders waiting with wait=True
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
        self, name: str, body: Any, *, on_id: Callable[[int], None] | None = None
    ) -> QueueMessage:
        """:meth:`send`; ``on_id(id)`` runs as soon as the message has its id, before any
        receiver can take it (a waiting sender registers there). If the send then fails, the
        message was not stored."""
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
        if actor.stopped:
            raise errors.ActorStopping(actor.actor_id)
        store = actor.store
        if store.gate.busy:
            # A transaction spans awaits on the file (this task's own one, which the message
            # joins, or another's, which it waits for): commit directly, not at the tick's end.
            def write(conn: apsw.Connection) -> int:
                self._load(conn)
                self._check_room()
                message_id = self._take_id(on_id)
                row = (message_id, name, encoded, created_at)
                self._commit(conn, lambda c, _: c.execute(_INSERT, row), inserted=message_id)
                self._size += 1
                return message_id

            message_id = await store.run(write)
            self._wake_receivers()
            return QueueMessage(None, message_id, name, body, created_at)

        self._load(store.conn)
        self._check_room()
        message_id = self._take_id(on_id)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._staged.append(((message_id, name, encoded, created_at), stored))
        self._size += 1
        # Receivers first, the commit after them: a waiting consumer takes the message in the
        # transaction that stores it (its wake-up runs before the flush callback).
        self._wake_receivers()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        await stored  # cancelled before the commit: the send is dropped from the batch
        return QueueMessage(None, message_id, name, body, created_at)

    def _check_room(self) -> None:
        limit = self._actor.definition.options.max_queue_size
        if self._size >= limit:
            raise errors.RivetError(
                "queue",
                "full",
                f"Queue is full. Limit is {limit} messages.",
                metadata={"limit": limit},
                status=400,
            )

    def _take_id(self, on_id: Callable[[int], None] | None) -> int:
        message_id = self._next_id
        self._next_id = message_id + 1
        if on_id is not None:
            on_id(message_id)
        return message_id

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

    # -- committing ------------------------------------------------------------------------

    def _flush(self) -> None:
        """End of the tick: commit the staged sends (one transaction)."""
        self._flush_scheduled = False
        if not self._staged:
            return
        actor = self._actor
        if actor.store.gate.busy:  # a transaction spans awaits on the file: commit after it
            actor._spawn(self._flush_gated())
            return
        self._flush_now()

    async def _flush_gated(self) -> None:
        try:
            async with self._actor.store.gate.hold():
                self._flush_now()
        except asyncio.CancelledError:  # the end of a sleep grace period
            self._fail_staged(errors.ActorStopping(self._actor.actor_id))
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. sqlite.transaction_queue_full
            self._fail_staged(exc)

    def _flush_now(self) -> None:
        actor = self._actor
        try:
            if actor.stopped:  # its file is closed (it may not be opened again)
                raise errors.ActorStopping(actor.actor_id)
            conn = actor.store.conn
            if not conn.getautocommit():
                raise errors.RivetError(
                    "queue",
                    "storage_busy",
                    "Queue messages could not be stored: the actor's database is inside a "
                    "transaction that is not the runtime's.",
                    status=500,
                )
            self._commit(conn, None)
        except BaseException as exc:  # noqa: BLE001 - a loop callback: the senders get it
            self._fail_staged(exc)  # nothing was stored
            actor.log.warning("queue send commit failed error=%s", exc)
            return
        self._wake_receivers()  # a receiver inside a user transaction could not see them

    def _fail_staged(self, exc: BaseException) -> None:
        staged, self._staged = self._staged, []
        self._fail(staged, exc)

    def _fail(self, staged: list[tuple[_Row, asyncio.Future[None]]], exc: BaseException) -> None:
        """The sends of ``staged`` were not stored: their senders get ``exc``."""
        if not isinstance(exc, Exception):  # the flush was cancelled: the actor is stopping
            exc = errors.ActorStopping(self._actor.actor_id)
        self._size -= len(staged)
        for _, future in staged:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # a sender that was cancelled meanwhile does not read it

    def _commit(
        self,
        conn: apsw.Connection,
        body: Callable[[apsw.Connection, _Changes], T] | None,
        *,
        inserted: int = 0,
    ) -> T | None:
        """Run ``body(conn, changes)`` in one transaction, after the staged sends when ``conn``
        is not inside a user transaction, and update the in-memory view once it committed.

        A failing ``body`` does not fail the staged sends: they commit, then its error is
        raised. ``inserted`` is the id ``body`` inserts, if it does.
        """
        staged: list[tuple[_Row, asyncio.Future[None]]] = []
        staged_newest = 0
        if self._staged and conn.getautocommit():
            staged, self._staged = self._staged, []
            kept = [item for item in staged if not item[1].cancelled()]
            self._size -= len(staged) - len(kept)
            staged = kept
            if staged:
                staged_newest = staged[-1][0][0]
        changes = _Changes()
        result: T | None = None
        error: Exception | None = None
        try:
            with conn:
                if staged:
                    conn.executemany(_INSERT, [row for row, _ in staged])
                if body is not None:
                    if staged:
                        try:
                            with conn:  # a savepoint: the sends commit even if body fails
                                result = body(conn, changes)
                        except Exception as exc:  # noqa: BLE001 - raised after the commit
                            error = exc
                            changes = _Changes()
                            inserted = 0
                    else:
                        result = body(conn, changes)
                inserted = max(inserted, staged_newest)
                newest_stored, stored_next = self._keep_next_id(conn, changes, inserted)
        except BaseException as exc:
            self._fail(staged, exc)
            raise
        # Committed: the in-memory view follows.
        self._newest = max(self._newest, inserted)
        self._newest_stored = newest_stored
        self._stored_next = stored_next
        if changes.marked:
            self._deliveries = True
            self._marked.update(changes.marked)
        if changes.forgotten:
            self._marked.difference_update(changes.forgotten)
            forgotten = set(changes.forgotten)
            self._stale = [i for i in self._stale if i not in forgotten]
        for message_id in changes.deleted:
            if message_id in self._marked:
                self._stale.append(message_id)
        if staged:
            self._when_durable(lambda error: _settle(staged, error))
        if error is not None:
            raise error
        return result

    def _when_durable(self, callback: Callable[[BaseException | None], object]) -> None:
        """Call ``callback(error)`` once the commits made so far are durable: at once for an
        actor file (a commit is durable when it returns), once the engine acknowledged them for
        an actor hosted on the engine (its store's ``durable()``)."""
        durable = getattr(self._actor.store, "durable", None)
        future = durable() if durable is not None else None
        if future is None:
            callback(None)
        else:
            future.add_done_callback(
                lambda done: callback(
                    asyncio.CancelledError() if done.cancelled() else done.exception()
                )
            )

    def _keep_next_id(
        self, conn: apsw.Connection, changes: _Changes, inserted: int
    ) -> tuple[bool, int]:
        """Write ``queue_next_id`` when the newest id would otherwise leave no trace in the
        file (its row removed and no delivery row of it left), so no id is ever reused.
        Returns whether the newest id's row is stored after this transaction and the stored
        ``queue_next_id``."""
        newest = self._newest
        if inserted > newest:
            newest, stored = inserted, True
        else:
            stored = self._newest_stored
        if stored and newest in changes.deleted:
            stored = False
        if not stored and self._stored_next <= newest:
            marked = newest in changes.marked or (
                newest in self._marked and newest not in changes.forgotten
            )
            if not marked:
                conn.execute(_SET_NEXT_ID, (newest + 1,))
                return stored, newest + 1
        return stored, self._stored_next

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
        messages = await self._receive(names, 1, timeout, completable, None)
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
        store = actor.store
        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            # With the gate free a local store runs this at once: nothing awaits between the
            # commit and the return (an actor hosted on the engine waits for its acknowledgement).
            messages = await store.run(
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
        if self._staged and conn.getautocommit():
            rows = None  # selected inside the transaction, once the staged sends are in
        else:
            # Inside a user transaction the staged sends stay out of reach; messages sent after
            # them wait behind them so the order holds.
            below = self._staged[0][0][0] if self._staged else None
            rows = self._select(conn, names, count, below)
            if not rows:
                return []

        def hand_out(conn: apsw.Connection, changes: _Changes) -> list[QueueMessage]:
            selected = rows if rows is not None else self._select(conn, names, count, None)
            if not selected:
                return []
            ids = [row[0] for row in selected]
            if completable:
                attempts = self._mark(conn, changes, ids)
                return [
                    QueueMessage(self, row[0], row[1], _decode(row[2]), row[3], attempts[i] - 1)
                    for i, row in enumerate(selected)
                ]
            messages = [
                QueueMessage(None, row[0], row[1], _decode(row[2]), row[3]) for row in selected
            ]
            conn.executemany(_DELETE, [(i,) for i in ids])
            changes.deleted = ids
            if record is not None:
                record(conn, messages)
            return messages

        messages = self._commit(conn, hand_out) or []
        if completable:
            for message in messages:
                self._in_flight[message.id] = message
        else:
            self._size -= len(messages)
        return messages

    def _select(
        self,
        conn: apsw.Connection,
        names: tuple[str, ...] | None,
        count: int,
        below: int | None,
    ) -> list[_Row]:
        skip = self._in_flight  # taken by a concurrent completable receive of this run
        limit = count + len(skip)
        bound = "" if below is None else " AND id < ?"
        tail = () if below is None else (below,)
        if names is None:
            sql = "SELECT id, name, body, created_at FROM _rivet_queue WHERE 1" + bound
            bindings: tuple[Any, ...] = (*tail, limit)
        else:
            marks = ",".join("?" * len(names))
            sql = (
                "SELECT id, name, body, created_at FROM _rivet_queue INDEXED BY "
                f"_rivet_queue_name_id WHERE name IN ({marks})" + bound
            )
            bindings = (*names, *tail, limit)
        rows: list[_Row] = conn.execute(sql + " ORDER BY id LIMIT ?", bindings).fetchall()  # type: ignore[assignment]
        if skip:
            rows = [row for row in rows if row[0] not in skip][:count]
        return rows

    def _mark(self, conn: apsw.Connection, changes: _Changes, ids: list[int]) -> list[int]:
        """Count a delivery of each of ``ids`` (inside the caller's transaction): the number of
        deliveries so far, this one included. Delivery rows of removed messages go too."""
        now = self._actor.clock.now_ms()
        if not self._deliveries:
            conn.execute(_DELIVERIES)
        if self._stale:
            conn.executemany(_FORGET_DELIVERY, [(i,) for i in self._stale])
            changes.forgotten = list(self._stale)
        marked = self._marked
        attempts = []
        for message_id in ids:
            if message_id in marked:
                row = conn.execute(_BUMP_DELIVERY, (message_id, now)).fetchall()
                attempts.append(int(row[0][0]))  # type: ignore[arg-type]
            else:
                conn.execute(_FIRST_DELIVERY, (message_id, now))
                attempts.append(1)
        changes.marked = ids
        return attempts

    async def _complete(self, message: QueueMessage, response: Any) -> None:
        actor = self._actor

        def write(conn: apsw.Connection) -> None:
            if message._completed:
                raise errors.RivetError(
                    "queue", "already_completed", "Queue message was already completed.",
                    status=400,
                )
            if self._in_flight.get(message.id) is not message:
                raise errors.RivetError(
                    "queue",
                    "message_released",
                    "Queue message was released (the run handler ended or the actor restarted) "
                    "and will be delivered again; it cannot be completed through this object.",
                    status=400,
                )

            def delete(conn: apsw.Connection, changes: _Changes) -> None:
                conn.execute(_DELETE, (message.id,))
                changes.deleted = (message.id,)

            self._commit(conn, delete)
            message._completed = True
            self._size -= 1
            del self._in_flight[message.id]
            waiters = getattr(actor.host, "queue_completions", None)
            if waiters is not None:

                def answer(error: BaseException | None) -> None:
                    if error is None:  # else the store failed: the actor stops
                        waiters.resolve(actor.actor_id, message.id, response)

                # Answered once the removal is durable, whatever happens to this task.
                self._when_durable(answer)

        await actor.store.run(write)

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
        if self._waiters:
            waiters, self._waiters = self._waiters, set()
            for future in waiters:
                _resolve(future)

    def watch_stop(self, future: asyncio.Future[None]) -> None:
        """Resolve ``future`` when the actor begins to stop (at once if it has)."""
        if self._actor.stopping is not None:
            _resolve(future)
        else:
            self._stop_watchers.add(future)

    def unwatch_stop(self, future: asyncio.Future[None]) -> None:
        self._stop_watchers.discard(future)

    def abort(self) -> None:
        """The actor began to stop: staged sends are committed now, receivers waiting wake up
        and raise ``actor.aborted``, senders waiting for a completion look again."""
        if self._staged:
            self._flush()
        self._wake_receivers()
        watchers, self._stop_watchers = self._stop_watchers, set()
        for future in watchers:
            _resolve(future)

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
        marked: set[int] = set()
        stale: list[int] = []
        self._deliveries = conn.execute(_HAS_DELIVERIES).fetchone() is not None
        if self._deliveries:
            for message_id, gone in conn.execute(_MARKED):
                if gone:
                    stale.append(message_id)  # deleted with the next delivery
                else:
                    marked.add(message_id)
        # Delivery rows keep their ids alive too (queue_next_id is not rewritten while one does).
        newest = max(stored_next - 1, max_id or 0, max(marked, default=0), max(stale, default=0))
        self._size = int(size)
        self._next_id = newest + 1
        self._newest = newest
        self._newest_stored = max_id is not None and max_id == newest
        self._stored_next = stored_next
        self._marked = marked
        self._stale = stale
        self._loaded = True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _settle(staged: list[tuple[_Row, asyncio.Future[None]]], error: BaseException | None) -> None:
    """Answer the senders of ``staged`` (committed; ``error`` if durability then failed)."""
    for _, future in staged:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
                future.exception()


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
