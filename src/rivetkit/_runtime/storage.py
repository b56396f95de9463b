"""Per-actor SQLite storage (local host): one apsw database file per actor.

The file holds RivetKit's internal tables at schema version 2 (``_rivet_*``, the same layout the
official runtime keeps in the engine) next to the user's own tables. State is CBOR in
``_rivet_actor_state``; creation input and the initialised flag live in ``_rivet_actor``.

Each file is opened by exactly one connection of one process, in ``locking_mode=EXCLUSIVE``:
SQLite then keeps the WAL index in memory instead of a shared ``-shm`` file and takes no locks per
transaction, which makes a commit about 40 % cheaper. (Other processes cannot read a file while
its actor is awake; stop the server to inspect it with the ``sqlite3`` shell.)

Durability: files run in WAL mode. A commit returns once SQLite has written the WAL, which
survives a crash of the process (``kill -9``); ``synchronous=FULL`` (``RegistryConfig``) also
survives power loss. A new file is set up with ``synchronous=OFF`` (it holds nothing acknowledged
yet) and switched to the configured level before the first acknowledged write: creating a file
costs about a millisecond instead of several fsyncs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

import apsw

__all__ = [
    "ActorStore",
    "StorePool",
    "SqlGate",
    "SCHEMA_VERSION",
    "INTERNAL_SCHEMA",
    "MAX_SQL_WAITERS",
    "PAGE_SIZE",
    "write_state",
]

MAX_SQL_WAITERS = 128  # RivetKit's transaction coordinator queue

# Page size of new actor files. Every table and index of the internal schema takes at least one
# page, so an empty actor file is 17 pages: 34 KiB at 2 KiB (68 KiB at SQLite's default 4 KiB),
# which keeps a million sleeping actors within tens of gigabytes of disk. Larger user tables are
# about 10 % slower to bulk-load than at 4 KiB; reads and state saves show no difference
# (bench/memory.py, docs/benchmarks.md). Existing files keep the page size they were made with.
PAGE_SIZE = 2048

SCHEMA_VERSION = 2

INTERNAL_SCHEMA = """
CREATE TABLE _rivet_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE _rivet_runtime (id INTEGER PRIMARY KEY CHECK (id = 1), last_pushed_alarm INTEGER,
  inspector_token TEXT, queue_next_id INTEGER NOT NULL) STRICT;
CREATE TABLE _rivet_actor (id INTEGER PRIMARY KEY CHECK (id = 1), has_initialized INTEGER NOT NULL,
  input BLOB) STRICT;
CREATE TABLE _rivet_actor_state (id INTEGER PRIMARY KEY CHECK (id = 1), state BLOB NOT NULL) STRICT;
CREATE TABLE _rivet_schedule_events (event_id TEXT PRIMARY KEY, trigger_at INTEGER NOT NULL,
  action TEXT NOT NULL, args BLOB, kind INTEGER NOT NULL, cron_expression TEXT, timezone TEXT,
  interval_ms INTEGER, last_started_at INTEGER, max_history INTEGER NOT NULL, ray_id TEXT,
  traceparent TEXT, tracestate TEXT) STRICT, WITHOUT ROWID;
CREATE INDEX _rivet_schedule_events_trigger_at ON _rivet_schedule_events (trigger_at);
CREATE TABLE _rivet_schedule_history (id INTEGER PRIMARY KEY, schedule_id TEXT NOT NULL,
  action TEXT NOT NULL, scheduled_at INTEGER NOT NULL, fired_at INTEGER NOT NULL,
  finished_at INTEGER, result INTEGER NOT NULL, error_group TEXT, error_code TEXT,
  error_message TEXT, error_metadata BLOB) STRICT;
CREATE INDEX _rivet_schedule_history_schedule ON _rivet_schedule_history
  (schedule_id, fired_at DESC, id DESC);
CREATE INDEX _rivet_schedule_history_fired_at ON _rivet_schedule_history (fired_at DESC, id DESC);
CREATE INDEX _rivet_schedule_history_running ON _rivet_schedule_history (result) WHERE result = 0;
CREATE TABLE _rivet_conns (conn_id TEXT PRIMARY KEY, parameters BLOB NOT NULL,
  gateway_id BLOB NOT NULL, request_id BLOB NOT NULL, request_path TEXT NOT NULL,
  request_headers BLOB NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE _rivet_conn_state (conn_id TEXT PRIMARY KEY, state BLOB NOT NULL,
  server_message_index INTEGER NOT NULL, client_message_index INTEGER NOT NULL,
  subscriptions BLOB NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE _rivet_queue (id INTEGER PRIMARY KEY, name TEXT NOT NULL, body BLOB NOT NULL,
  created_at INTEGER NOT NULL, ray_id TEXT, traceparent TEXT, tracestate TEXT) STRICT;
CREATE INDEX _rivet_queue_name_id ON _rivet_queue (name, id);
CREATE TABLE _rivet_wf_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE _rivet_user_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) STRICT, WITHOUT ROWID;
"""


_SAVE_STATE = (
    "INSERT INTO _rivet_actor_state (id, state) VALUES (1, ?) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state"
)
# The commit number of the state in the file (8 bytes little-endian, as ``schema_version``). The
# state journal numbers its rows the same way; at load the higher number wins (see journal.py).
_SAVE_STATE_SEQ = (
    "INSERT INTO _rivet_meta (key, value) VALUES ('state_seq', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_LOAD_STATE_SEQ = "SELECT value FROM _rivet_meta WHERE key = 'state_seq'"


def _run(conn: apsw.Connection, sql: str, bindings: Any = None) -> list[Any]:
    # apsw runs later statements of a multi-statement string lazily, so always drain.
    return list(conn.execute(sql, bindings))


def new_inspector_token() -> str:
    """32 random bytes, base64url without padding (43 chars), as the official runtime."""
    return secrets.token_urlsafe(32)


class StorePool:
    """Bounds how many actor databases are open at once (least recently used are closed).

    An open SQLite connection costs about 200 KB of memory and two file descriptors; an awake
    actor that is not touching its database needs neither. The state journal carries state
    saves, so most actors only open their file to load and again for ``c.db``, ``c.kv`` or
    schedules. Closing skips the checkpoint (``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE``): the WAL stays
    on disk and is read back at the next open, so a close costs no fsync.
    """

    __slots__ = ("max_open", "_open")

    def __init__(self, max_open: int = 256) -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self.max_open = max_open
        self._open: dict[ActorStore, None] = {}  # insertion order = least recently opened first

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, store: ActorStore) -> None:
        self._open[store] = None
        if len(self._open) > self.max_open:
            self._evict()

    def closed(self, store: ActorStore) -> None:
        self._open.pop(store, None)

    def _evict(self) -> None:
        excess = len(self._open) - self.max_open
        for store in list(self._open):
            if excess <= 0:
                return
            if store.gate.busy or store.in_transaction:
                continue  # a transaction spans awaits on this connection: keep it
            store.close()
            excess -= 1


UNBOUNDED_POOL = StorePool(max_open=1 << 30)


class ActorStore:
    """The SQLite database of one actor.

    Not thread-safe: used from the event loop only. Every method is a short synchronous
    transaction (tens of microseconds), cheaper than handing work to a thread.
    """

    __slots__ = ("path", "_conn", "_synchronous", "gate", "pool")

    records_state_seq = True
    """State commits carry their number (the state journal may hold a newer copy; see
    journal.py). Engine mode has no journal and skips it."""

    def __init__(
        self, path: Path, *, synchronous: str = "NORMAL", pool: StorePool = UNBOUNDED_POOL
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._conn: apsw.Connection | None = None
        self.gate = SqlGate()
        self.pool = pool

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        input: bytes | None,
        synchronous: str = "NORMAL",
        pool: StorePool = UNBOUNDED_POOL,
    ) -> ActorStore:
        """Create the file with the internal schema, the creation input and no state yet.

        The schema comes from a template image built once per process, so a new actor costs one
        file write and one small transaction instead of running the DDL again.

        Raises:
            FileExistsError: a database already exists at ``path``.
        """
        parent = path.parent
        if parent not in _known_dirs:
            parent.mkdir(parents=True, exist_ok=True)
            _known_dirs.add(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, _template())
        finally:
            os.close(fd)
        conn: apsw.Connection | None = None
        try:
            conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
            _run(conn, "PRAGMA locking_mode=EXCLUSIVE")
            _run(conn, "PRAGMA synchronous=OFF")
            with conn:
                conn.execute(
                    "INSERT INTO _rivet_runtime (id, last_pushed_alarm, inspector_token, "
                    "queue_next_id) VALUES (1, NULL, ?, 1)",
                    (new_inspector_token(),),
                )
                conn.execute(
                    "INSERT INTO _rivet_actor (id, has_initialized, input) VALUES (1, 0, ?)",
                    (input,),
                )
            _run(conn, f"PRAGMA synchronous={synchronous}")
        except BaseException:
            if conn is not None:
                conn.close()
            remove_if_exists(path)
            raise
        store = cls(path, synchronous=synchronous, pool=pool)
        store._conn = conn
        pool.opened(store)
        return store

    @property
    def conn(self) -> apsw.Connection:
        """The open connection, opening the file on first use."""
        conn = self._conn
        if conn is None:
            try:
                conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READWRITE)
            except apsw.CantOpenError:
                raise FileNotFoundError(f"actor database is missing: {self.path}") from None
            try:
                conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
                _run(conn, "PRAGMA locking_mode=EXCLUSIVE")
                _run(conn, "PRAGMA journal_mode=WAL")
                _run(conn, f"PRAGMA synchronous={self._synchronous}")
                self._check_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self.pool.opened(self)
        return conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def in_transaction(self) -> bool:
        """A transaction is open on the connection (user code between BEGIN and COMMIT)."""
        conn = self._conn
        return conn is not None and not conn.getautocommit()

    def _check_schema(self, conn: apsw.Connection) -> None:
        rows = _run(conn, "SELECT value FROM _rivet_meta WHERE key = 'schema_version'")
        if not rows:
            raise RuntimeError(f"actor database {self.path} has no schema version")
        (version,) = struct.unpack("<q", rows[0][0])
        if version != SCHEMA_VERSION:
            raise RuntimeError(
                f"actor database {self.path} has schema version {version}; "
                f"this rivetkit reads version {SCHEMA_VERSION}"
            )

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self.pool.closed(self)
            conn.close()

    def compact(self) -> None:
        """Fold the write-ahead log into the database file and remove it (the store is closed).

        Run when the actor goes to sleep, in a worker thread: a checkpoint writes and syncs the
        file (as ``synchronous`` asks), which may take milliseconds on a slow disk. Afterwards the
        sleeping actor is a single file of the size of its data. The caller makes sure nothing
        opens the store meanwhile (a wake waits for the stop to finish).
        """
        if self._conn is not None:
            raise RuntimeError(f"compact needs a closed store: {self.path}")
        try:
            if os.stat(str(self.path) + "-wal").st_size == 0:
                os.unlink(str(self.path) + "-wal")
                return
        except FileNotFoundError:
            return
        conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READWRITE)
        try:
            _run(conn, "PRAGMA locking_mode=EXCLUSIVE")
            _run(conn, f"PRAGMA synchronous={self._synchronous}")
            _run(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()  # the last connection removes the (now empty) log

    def delete(self) -> None:
        """Close and remove the database files."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    async def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run synchronous database work ``fn(conn)`` once no one holds the gate.

        ``fn`` must not await: it runs to completion between two event-loop turns, so it is a
        unit on its own (wrap several statements in ``with conn:`` to make them one
        transaction). When the gate is free, no waiting happens at all.
        """
        if self.gate.busy:
            from .db import owns_transaction

            if owns_transaction(self):  # this task holds the gate (transaction, migration)
                return fn(self.conn)
            async with self.gate.hold():
                return fn(self.conn)
        return fn(self.conn)

    def durable(self) -> asyncio.Future[None] | None:
        """``None`` when every commit made so far is durable, else a future resolving once they
        are (failing if they cannot be made durable).

        A local file's commit is durable when it returns, so this is always ``None`` here and
        costs nothing; engine mode (``DepotStore``) is durable once the engine acknowledged it.
        The runtime answers waiters of a commit only after this.
        """
        return None

    def send_commits(self) -> None:
        """Start making the commits so far durable now rather than at the end of the loop tick
        (the runtime calls it after the state save, its last commit of a tick). A local file's
        commits are durable already: nothing to do here."""

    # -- databases read lazily (engine mode) ---------------------------------------------------

    @property
    def loading(self) -> bool:
        """Some pages of the database are not local yet: a statement reading one fails (and
        :meth:`take_missed` names them). A local file never is."""
        return False

    def take_missed(self) -> list[int]:
        """The pages statements failed to read since the last call (they were not local yet),
        and forget them. A failed statement with some is safe to run again once they are
        loaded: SQLite rolled it back (and the transaction around it)."""
        return []

    async def load_pages(self, pages: list[int] | None = None) -> None:
        """Return once ``pages`` (``None``: every page) are local. A local file's are."""

    # -- reads -----------------------------------------------------------------------------

    def load(self) -> tuple[bool, bytes | None, bytes | None, int]:
        """``(has_initialized, input, state, state_seq)`` as stored (``state_seq`` 0 when the
        file never recorded one)."""
        conn = self.conn
        actor_rows = _run(conn, "SELECT has_initialized, input FROM _rivet_actor WHERE id = 1")
        if not actor_rows:
            raise RuntimeError(f"actor database {self.path} has no _rivet_actor row")
        has_initialized, input = actor_rows[0]
        state_rows = _run(conn, "SELECT state FROM _rivet_actor_state WHERE id = 1")
        seq_rows = _run(conn, _LOAD_STATE_SEQ)
        seq = struct.unpack("<q", seq_rows[0][0])[0] if seq_rows else 0
        return bool(has_initialized), input, state_rows[0][0] if state_rows else None, seq

    # -- writes ----------------------------------------------------------------------------

    def save_state(
        self,
        state: bytes | None,
        seq: int,
        also: Callable[[apsw.Connection], None] | None = None,
    ) -> None:
        """Commit the state bytes and their commit number in one transaction, with what
        ``also(conn)`` writes (``state`` ``None``: only that)."""
        conn = self.conn
        with conn:
            if state is not None:
                write_state(conn, state, seq if self.records_state_seq else None)
            if also is not None:
                also(conn)

    def initialize(self, state: bytes | None) -> None:
        """Commit the initial state and mark the actor initialised (one transaction)."""
        conn = self.conn
        with conn:
            if state is not None:
                conn.execute(
                    "INSERT INTO _rivet_actor_state (id, state) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                    (state,),
                )
            conn.execute("UPDATE _rivet_actor SET has_initialized = 1 WHERE id = 1")


def write_state(conn: apsw.Connection, state: bytes, seq: int | None) -> None:
    """Write the state and its commit number (inside the caller's transaction). ``seq`` is
    ``None`` where no journal competes with the file (engine mode): one page less per commit."""
    conn.execute(_SAVE_STATE, (state,))
    if seq is not None:
        conn.execute(_SAVE_STATE_SEQ, (struct.pack("<q", seq),))


class SqlGate:
    """First-in first-out exclusive access to one actor's database connection.

    Work that spans ``await`` points on the connection (a user transaction) must hold the gate, and
    so must every other statement while it is held, or it would join that transaction. Work that
    is synchronous from start to end may run without waiting when the gate is free.

    At most :data:`MAX_SQL_WAITERS` callers may wait; the next gets
    ``sqlite.transaction_queue_full``.
    """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: collections.deque[asyncio.Future[None]] | None = None  # made when needed

    @property
    def busy(self) -> bool:
        """Someone holds the gate or waits for it."""
        return self._held or bool(self._waiters)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the gate for the body (FIFO after earlier holders).

        Raises:
            RivetError: ``sqlite.transaction_queue_full`` with 128 callers already waiting.
        """
        if self._held or self._waiters:
            if self._waiters is None:
                self._waiters = collections.deque()
            if len(self._waiters) >= MAX_SQL_WAITERS:
                from .. import errors

                raise errors.RivetError(
                    "sqlite",
                    "transaction_queue_full",
                    f"Too many database operations waiting (limit {MAX_SQL_WAITERS}).",
                    status=503,
                )
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                await future
            except BaseException:
                if future.done() and not future.cancelled():
                    self._release()  # the gate was handed to us as we were cancelled
                else:
                    self._waiters.remove(future)
                raise
        else:
            self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            assert self._waiters is not None
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)  # ownership passes on; _held stays true
                return
        self._held = False


_known_dirs: set[Path] = set()
_template_image: bytes | None = None


def _template() -> bytes:
    """The bytes of an empty actor database in WAL mode with the internal schema."""
    global _template_image
    if _template_image is None:
        with tempfile.TemporaryDirectory(prefix="rivetkit-template-") as tmp:
            path = os.path.join(tmp, "template.db")
            conn = apsw.Connection(path)
            try:
                _run(conn, f"PRAGMA page_size={PAGE_SIZE}")
                _run(conn, "PRAGMA synchronous=OFF")
                _run(conn, "PRAGMA journal_mode=WAL")
                with conn:
                    _run(conn, INTERNAL_SCHEMA)
                    conn.execute(
                        "INSERT INTO _rivet_meta (key, value) VALUES ('schema_version', ?), "
                        "('kv_import_state', ?)",
                        (struct.pack("<q", SCHEMA_VERSION), b"done"),
                    )
                _run(conn, "PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            with open(path, "rb") as f:
                _template_image = f.read()
    return _template_image


def actor_db_path(root: Path, actor_id: str) -> Path:
    """``<root>/actors/<2-char shard>/<actor_id>.db``."""
    return root / "actors" / actor_id[:2] / f"{actor_id}.db"


def remove_if_exists(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(str(path) + suffix)
        except FileNotFoundError:
            pass
