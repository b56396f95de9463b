"""Engine mode storage: an actor's SQLite database held by the engine ("depot"), run locally.

The official runtime runs SQLite in-process on a VFS whose pages travel over the envoy socket
(``spec/engine-envoy.md`` §6.6 (b)); so do we, so that the whole runtime keeps doing synchronous
SQL on an apsw connection:

* at start, every page is fetched (``SqliteGetPages``) into a local *cache file*; SQLite reads
  and writes that file through the ``rivetkit-depot`` VFS, so reads never leave the process and
  an awake actor's data lives on disk, not in Python memory. A cache the previous generation
  left (:meth:`DepotStore.keep`) is used as is while the engine's head txid is still the one it
  was kept at (only the first pages are fetched, and compared with it). A database above
  :data:`LAZY_FROM_PAGES` opens *lazily*: once the pages the runtime reads synchronously are
  local (the schema, the internal ``_rivet_*`` tables and their indexes, the freelist's trunk
  pages: the b-trees are walked a level per request), the actor starts and a task loads the
  rest. Until then, reading a page that is not local fails the statement with
  ``SQLITE_IOERR`` (SQLite rolls its transaction back) and records the page; ``c.db`` loads it
  (and the missing pages of the batch after it) and runs the statement again, a transaction
  or a migration waits for the whole database (a migration that read such a page runs again).
  A page written locally is never overwritten by a fetched copy;
* the VFS records which pages a transaction writes (``locking_mode=EXCLUSIVE``,
  ``journal_mode=MEMORY``: a commit writes its pages, a rollback without a cache spill writes
  nothing, pages a spill wrote early are final only at the commit). At the commit point, the
  ``SQLITE_FCNTL_COMMIT_PHASETWO`` file control SQLite sends once a commit is complete (never
  for a rollback; after the truncation that ends a ``VACUUM``, which follows the main file's
  sync), the pages written (as SQLite wrote them) are queued as one *local commit*;
* the store sends the queued commits to the engine one at a time (at the end of the tick, or
  at once when the runtime calls ``send_commits`` after its state save; a plain commit's answer
  is handled by a callback, no task), each fenced by the head txid the previous one was
  acknowledged with, merging every commit queued meanwhile into one (the later page wins).
  More than 320 pages go as a staged commit (begin, shard-aligned segments, finalize) in a
  task. A copy is dropped once acknowledged.

Durability: a local commit is *durable* once the engine acknowledged it. :meth:`DepotStore.run`
and :meth:`DepotStore.durable` let the runtime answer a client only then. An error response or a
lost connection while a commit is under way leaves the engine's state unknown: the store fails
for good (every waiter gets the error, every later call too) and the host stops the actor; the
next generation fetches from the engine again, never from this cache.

Data compatibility (§10.3): pages are 4096 bytes, ``auto_vacuum`` is off and the journal is not
in WAL mode (file format bytes 1/1), as the official runtime's files; a brand-new database gets
the internal schema at version 2 and its first commit carries every page.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import struct
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

import apsw

from ... import errors
from ..._log import storage_logger
from ..._protocol import envoy as p
from ..._runtime.storage import (
    INTERNAL_SCHEMA,
    SCHEMA_VERSION,
    UNBOUNDED_POOL,
    ActorStore,
    StorePool,
    new_inspector_token,
)

__all__ = [
    "MAX_COMMIT_DIRTY_PAGES",
    "MAX_STAGED_COMMIT_PAGES",
    "PAGE_SIZE",
    "SEGMENT_MAX_SHARDS",
    "SHARD_SIZE",
    "VFS_NAME",
    "DepotStore",
    "DepotTransport",
    "DepotUnavailable",
]

T = TypeVar("T")

PAGE_SIZE = 4096  # the official runtime's page size; the depot stores 4 KiB pages
SHARD_SIZE = 64  # pages per depot shard: staged segments start on a multiple of it
SEGMENT_MAX_SHARDS = 5  # shards one staged segment may span (depot COMMIT_SEGMENT_MAX_SHARDS)
MAX_COMMIT_DIRTY_PAGES = 320  # pages of one SqliteCommit (depot MAX_COMMIT_DIRTY_PAGES)
# Pages of one staged commit (the newest depot's MAX_COMMIT_DIRTY_PAGES). Queued commits are only
# merged while the result stays within it; one local commit above it is still sent (the engine
# decides, and a refusal fails the store).
MAX_STAGED_COMMIT_PAGES = 32_768
INITIAL_FETCH_PAGES = 128  # what the official runtime fetches at every start
FETCH_BATCH_PAGES = 256  # 1 MiB per GetPages response, far below the 20 MiB envoy limit
FETCH_CONCURRENCY = 4  # GetPages requests in flight while a start fetches the rest (2 cores: 8 no better)
# A database of more pages starts before all of it is local (the rest loads behind: lazy reads).
LAZY_FROM_PAGES = 1024
VFS_NAME = "rivetkit-depot"

_SQLITE_MAGIC = b"SQLite format 3\x00"
_ZERO_PAGE = bytes(PAGE_SIZE)  # a page the engine never had (reads as zeros)
# What a lazy start walks: b-tree pages (their children and overflow chains follow) and chains
# whose every page starts with the next one's number (overflow pages, freelist trunks).
_BTREE = 0
_CHAIN = 1
# The internal tables and indexes, all local before a lazy start opens the database.
_INTERNAL_ROOTS = (
    "SELECT rootpage FROM sqlite_schema WHERE rootpage > 0 AND "
    "(tbl_name LIKE '\\_rivet\\_%' ESCAPE '\\' OR tbl_name LIKE 'sqlite\\_%' ESCAPE '\\')"
)
_DATABASE_NOT_FOUND = ("depot", "database_not_found")

log = storage_logger


class DepotUnavailable(ConnectionError):
    """The envoy connection cannot carry a depot request (closed, lost or timed out).

    Raised by :class:`DepotTransport` implementations. Whether a commit in flight reached the
    engine is then unknown, so the store fails (``sqlite.depot_unavailable``).
    """


class DepotTransport(Protocol):
    """The depot calls of the envoy connection (one request, one response each).

    Each returns the engine's answer, ``SqliteErrorResponse`` included, and raises
    :class:`DepotUnavailable` when the connection cannot deliver the request or its answer.
    """

    async def sqlite_get_pages(
        self, request: p.SqliteGetPagesRequest
    ) -> p.SqliteGetPagesOk | p.SqliteErrorResponse: ...

    def sqlite_commit(
        self, request: p.SqliteCommitRequest
    ) -> Awaitable[p.SqliteCommitOk | p.SqliteErrorResponse]:
        """A coroutine, or (the envoy's) a future of a request already sent."""
        ...

    async def sqlite_commit_stage_begin(
        self, request: p.SqliteCommitStageBeginRequest
    ) -> p.SqliteCommitStageBeginOk | p.SqliteErrorResponse: ...

    async def sqlite_commit_stage_segment(
        self, request: p.SqliteCommitStageSegmentRequest
    ) -> p.SqliteCommitStageSegmentOk | p.SqliteErrorResponse: ...

    async def sqlite_commit_finalize(
        self, request: p.SqliteCommitFinalizeRequest
    ) -> p.SqliteCommitFinalizeOk | p.SqliteErrorResponse: ...


# -- errors ----------------------------------------------------------------------------------


def _error(code: str, message: str, *, status: int = 500, **metadata: Any) -> errors.RivetError:
    # Internal: clients see `rivetkit.internal_error`, the log has the details.
    return errors.RivetError(
        "sqlite", code, message, metadata=metadata or None, public=False, status=status
    )


def _unavailable(actor_id: str, what: str, exc: BaseException) -> errors.RivetError:
    return _error(
        "depot_unavailable",
        f"The engine could not be reached while {what} for actor {actor_id}: {exc}",
        status=503,
        actor_id=actor_id,
    )


def _refused(actor_id: str, what: str, response: p.SqliteErrorResponse) -> errors.RivetError:
    code = "open_failed" if what == "fetching pages" else "commit_rejected"
    return _error(
        code,
        f"The engine refused {what} for actor {actor_id}: "
        f"{response.group}.{response.code}: {response.message}",
        actor_id=actor_id,
        depot_group=response.group,
        depot_code=response.code,
    )


def _unexpected(actor_id: str, what: str, detail: str) -> errors.RivetError:
    return _error(
        "depot_protocol_error",
        f"Unexpected engine answer while {what} for actor {actor_id}: {detail}",
        actor_id=actor_id,
    )


def _copy(error: errors.RivetError) -> errors.RivetError:
    # A fresh instance per raise: one exception object raised from many places grows one
    # traceback forever.
    return errors.RivetError(
        error.group,
        error.code,
        error.message,
        metadata=error.metadata,
        public=error.public,
        status=error.status,
    )


# -- the VFS ---------------------------------------------------------------------------------

_COMMIT_PHASETWO: int = apsw.SQLITE_FCNTL_COMMIT_PHASETWO


class _PageLog:
    """Pages of one actor's cache file written since its last commit point."""

    __slots__ = (
        "dirty", "failed", "file_size", "missed", "missing", "on_commit", "on_error", "size_pages"
    )

    def __init__(
        self,
        on_commit: Callable[[dict[int, bytes], int], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        # pgno -> the page as last written whole, or None: read it back at the commit point.
        self.dirty: dict[int, bytes | None] = {}
        self.on_commit = on_commit
        self.on_error = on_error
        self.size_pages = 0  # the database size at the last commit point
        self.file_size = 0  # bytes of the open cache file, kept by its writes and truncations
        self.failed = False  # the store failed: refuse every further write
        # While a lazy start loads the rest: pages not local yet (a read fails), and the pages
        # reads failed on since the store last took them.
        self.missing: set[int] | None = None
        self.missed: set[int] = set()


class _CacheFile(apsw.VFSFile):
    """The main database file of one actor: the base VFS's file plus dirty-page tracking."""

    def __init__(self, name: apsw.URIFilename, flags: list[int], page_log: _PageLog) -> None:
        super().__init__("", name, flags)
        self._page_log = page_log
        page_log.file_size = self.xFileSize()  # then followed here: no fstat per commit

    def xWrite(self, data: Any, offset: int) -> None:
        page_log = self._page_log
        if page_log.failed:
            raise apsw.IOError("the actor's depot store has failed; no further writes")
        super().xWrite(data, offset)
        end = offset + len(data)
        if end > page_log.file_size:
            page_log.file_size = end
        if len(data) == PAGE_SIZE and not offset % PAGE_SIZE and type(data) is bytes:
            pgno = offset // PAGE_SIZE + 1
            page_log.dirty[pgno] = data  # the pager writes whole pages
            if page_log.missing:
                page_log.missing.discard(pgno)  # written here: never to be fetched
        else:
            first = offset // PAGE_SIZE + 1
            last = (offset + len(data) - 1) // PAGE_SIZE + 1
            page_log.dirty.update(dict.fromkeys(range(first, last + 1)))
            if page_log.missing:
                page_log.missing.difference_update(range(first, last + 1))

    def xTruncate(self, newsize: int) -> None:
        super().xTruncate(newsize)
        limit = -(-newsize // PAGE_SIZE)
        page_log = self._page_log
        page_log.file_size = newsize
        if any(pgno > limit for pgno in page_log.dirty):
            page_log.dirty = {pgno: v for pgno, v in page_log.dirty.items() if pgno <= limit}
        missing = page_log.missing
        if missing:  # pages past the end are gone: a later growth writes them anew
            missing.difference_update([pgno for pgno in missing if pgno > limit])

    def xSync(self, flags: int) -> None:
        # Not called (``synchronous=OFF``): after a crash the cache is fetched again from the
        # engine, which is where durability comes from. A failed store refuses in xWrite.
        if self._page_log.failed:
            raise apsw.IOError("the actor's depot store has failed; no further commits")

    def xFileControl(self, op: int, ptr: int) -> bool:
        if op == _COMMIT_PHASETWO:
            self._commit_point()
            return False  # not the base VFS's business (it answers SQLITE_NOTFOUND too)
        return bool(super().xFileControl(op, ptr))

    def _commit_point(self) -> None:
        """A transaction just committed: copy the pages it wrote and queue them.

        SQLite sends ``SQLITE_FCNTL_COMMIT_PHASETWO`` once a commit is complete, on commit
        only (a rollback, even one putting spilled pages back, never does), also with
        ``synchronous=OFF``, and after the truncation that ends a ``VACUUM`` (which comes
        after its sync, so the sync is not the commit point). SQLite ignores errors here: a
        commit that cannot be queued fails the store instead.
        """
        page_log = self._page_log
        if page_log.failed:
            return
        try:
            size = page_log.file_size
            size_pages = -(-size // PAGE_SIZE)
            dirty = page_log.dirty
            if not dirty and size_pages == page_log.size_pages:
                return
            pages: dict[int, bytes] = {}
            for pgno in sorted(dirty):
                if pgno <= size_pages:
                    data = dirty[pgno]
                    if data is None:
                        offset = (pgno - 1) * PAGE_SIZE
                        data = bytes(self.xRead(min(PAGE_SIZE, size - offset), offset))
                    pages[pgno] = data.ljust(PAGE_SIZE, b"\x00")
            page_log.dirty = {}
            page_log.size_pages = size_pages
            page_log.on_commit(pages, size_pages)
        except Exception as exc:  # noqa: BLE001 (SQLite ignores errors here: the store reports it)
            page_log.failed = True
            page_log.on_error(exc)

    def xDeviceCharacteristics(self) -> int:
        # Batch-atomic writes would route commits through file controls this VFS does not
        # implement; without them SQLite writes every page through xWrite.
        return int(super().xDeviceCharacteristics()) & ~apsw.SQLITE_IOCAP_BATCH_ATOMIC


class _LazyCacheFile(_CacheFile):
    """A cache file some pages of which are still being fetched: reading one fails with
    ``SQLITE_IOERR`` (SQLite rolls the statement's transaction back) and records it, so the
    caller can load it and run the statement again (:meth:`DepotStore.take_missed`)."""

    def xRead(self, amount: int, offset: int) -> bytes:
        page_log = self._page_log
        missing = page_log.missing
        if missing:
            first = offset // PAGE_SIZE + 1
            last = (offset + max(amount, 1) - 1) // PAGE_SIZE + 1
            absent = [pgno for pgno in range(first, last + 1) if pgno in missing]
            if absent:
                page_log.missed.update(absent)
                raise apsw.IOError(f"page {absent[0]} of the actor's database is not loaded yet")
        return super().xRead(amount, offset)


class _DepotVfs(apsw.VFS):
    """One per process. Main database files must be registered (by their full path) by the
    store that owns them; journals and temporary files are the base VFS's own."""

    def __init__(self) -> None:
        super().__init__(VFS_NAME, "")
        self.logs: dict[str, _PageLog] = {}

    def xOpen(self, name: Any, flags: list[int]) -> Any:
        if isinstance(name, apsw.URIFilename) and flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            path = name.filename()
            page_log = self.logs.get(path)
            if page_log is None:
                raise apsw.CantOpenError(f"{path} is not the cache file of an open depot store")
            if page_log.missing:
                return _LazyCacheFile(name, flags, page_log)
            return _CacheFile(name, flags, page_log)
        return super().xOpen(name, flags)


_vfs: _DepotVfs | None = None


def _the_vfs() -> _DepotVfs:
    global _vfs
    if _vfs is None:
        _vfs = _DepotVfs()
    return _vfs


# -- the store -------------------------------------------------------------------------------


class _Commit:
    """Pages of one or more local commits (copies, held until acknowledged)."""

    __slots__ = ("pages", "seq", "size_pages")

    def __init__(self, seq: int, pages: dict[int, bytes], size_pages: int) -> None:
        self.seq = seq  # number of the last local commit it contains
        self.pages = pages
        self.size_pages = size_pages


class DepotStore(ActorStore):
    """The database of one actor generation hosted on the engine (see the module docstring).

    Create with :meth:`open`. Used from the event loop only, like :class:`ActorStore`.
    """

    __slots__ = (
        "_acked_seq",
        "_failure",
        "_head_txid",
        "_key",
        "_load_fd",
        "_loaded",
        "_loader",
        "_local_seq",
        "_loop",
        "_on_failure",
        "_page_log",
        "_pending",
        "_ship_handle",
        "_shipping",
        "_transport",
        "_waiters",
        "_worker",
        "actor_id",
        "generation",
        "opened_lazily",
        "reused_cache",
    )

    records_state_seq = False  # no journal in engine mode: one page less per state commit

    def __init__(
        self,
        transport: DepotTransport,
        *,
        actor_id: str,
        generation: int,
        cache_path: Path,
        head_txid: int | None,
        pool: StorePool = UNBOUNDED_POOL,
        on_failure: Callable[[errors.RivetError], None] | None = None,
    ) -> None:
        super().__init__(cache_path, synchronous="OFF", pool=pool)
        self._on_failure = on_failure
        self.actor_id = actor_id
        self.generation = generation
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._key = os.path.realpath(cache_path)  # SQLite hands the VFS the resolved path
        self._page_log = _PageLog(self._committed_locally, self._commit_point_failed)
        self._head_txid = head_txid
        self._pending: collections.deque[_Commit] = collections.deque()
        self._local_seq = 0  # local commits made
        self._acked_seq = 0  # local commits the engine acknowledged
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._worker: asyncio.Task[None] | None = None  # a staged commit under way
        self._shipping = False  # a commit (plain or staged) is in flight
        self._ship_handle: asyncio.Handle | None = None  # queued commits go at the tick's end
        self._failure: errors.RivetError | None = None
        self.reused_cache = False  # opened on the cache its previous generation kept (keep())
        self.opened_lazily = False  # opened before all of it was local (the rest loads behind)
        # A lazy start: the file the rest is written to, the task loading it, done when loaded.
        self._load_fd: int | None = None
        self._loader: asyncio.Task[None] | None = None
        self._loaded: asyncio.Future[None] | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        transport: DepotTransport,
        *,
        actor_id: str,
        generation: int,
        cache_path: Path,
        input: bytes | None,
        kept_head: int | None = None,
        pool: StorePool = UNBOUNDED_POOL,
        on_failure: Callable[[errors.RivetError], None] | None = None,
        lazy_from_pages: int = LAZY_FROM_PAGES,
    ) -> DepotStore:
        """Fetch the actor's database from the engine into ``cache_path`` and open it.

        With ``kept_head``, ``cache_path`` is what the actor's previous generation left there
        (:meth:`keep`) at that head txid. When the engine's head is still that txid and the
        first pages it sends are the cache's, nothing more is fetched (``reused_cache``); else
        the cache is fetched again, as without it.

        A database of more than ``lazy_from_pages`` pages opens *lazily*: once the pages of the
        schema, of the internal ``_rivet_*`` tables and of the freelist's trunk are local, the
        rest loads behind (:attr:`loading`); a statement reading a page not local yet fails and
        may run again after :meth:`load_pages` (see :meth:`take_missed`).

        A database the engine does not have yet (``depot.database_not_found``) is created with
        the internal schema, ``input`` as the creation input and no state; its first commit,
        carrying every page, is on its way when this returns (await :meth:`flush` or a later
        commit's durability to know it landed).

        Args:
            transport: the envoy connection's depot calls.
            actor_id: the engine's actor id.
            generation: the generation being started (``expectedGeneration`` of every request).
            cache_path: the local cache file; overwritten unless reused (``kept_head``).
            input: CBOR creation input, stored only when the database is created here.
            kept_head: the head txid :meth:`keep` returned for ``cache_path``, if any.
            pool: bounds open connections (an evicted store reopens its cache on next use).
            on_failure: called once if the store fails later (a commit refused or lost), so the
                host can stop the actor at once rather than at its next database call.
            lazy_from_pages: database size in pages above which the open is lazy.

        Raises:
            RivetError: ``sqlite.depot_unavailable`` (connection lost), ``sqlite.open_failed``
                (the engine refused), ``sqlite.depot_protocol_error`` (malformed answer),
                ``sqlite.unsupported_database`` (not a 4096-byte-page SQLite database).
        """
        if not isinstance(actor_id, str) or not actor_id:
            raise ValueError(f"actor_id must be a non-empty str, got {actor_id!r}")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError(f"generation must be an int >= 0, got {generation!r}")
        if input is not None and not isinstance(input, bytes):
            raise ValueError(f"input must be CBOR bytes or None, got {type(input).__name__}")
        store = cls(
            transport,
            actor_id=actor_id,
            generation=generation,
            cache_path=cache_path,
            head_txid=None,
            pool=pool,
            on_failure=on_failure,
        )
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            first = await store._get_pages(list(range(1, INITIAL_FETCH_PAGES + 1)), None)
            page1 = None
            if isinstance(first, p.SqliteGetPagesOk):
                page1 = next((pg.bytes for pg in first.pages if pg.pgno == 1), None)
            if page1 is None:  # a brand-new actor
                head = first.head_txid if isinstance(first, p.SqliteGetPagesOk) else None
                store._head_txid = head if head is not None else 0
                store._create(input)
            else:
                assert isinstance(first, p.SqliteGetPagesOk)
                store._head_txid = first.head_txid
                size_pages = store._size_in_header(page1)
                if (
                    kept_head is not None
                    and first.head_txid == kept_head
                    and store._cache_matches(first, size_pages)
                ):
                    store._page_log.size_pages = size_pages
                    store.reused_cache = True
                else:
                    if kept_head is not None:
                        log.info(
                            "kept actor cache out of date actor_id=%s kept_head=%s head=%s",
                            actor_id, kept_head, first.head_txid,
                        )
                    if size_pages > lazy_from_pages and page1[52:56] == bytes(4):
                        await store._open_lazily(first, page1, size_pages)
                    else:  # (auto-vacuum files have pointer-map pages: fetched whole)
                        await store._fill_cache(first, size_pages)
                store._connect()  # opens the cache and checks the schema version
        except BaseException:
            store._stop_loading()
            store.close()
            with contextlib.suppress(OSError):
                os.unlink(cache_path)
            raise
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "depot store opened actor_id=%s generation=%s head_txid=%s pages=%s reused=%s "
                "lazily=%s",
                actor_id,
                generation,
                store._head_txid,
                store._page_log.size_pages,
                store.reused_cache,
                store.opened_lazily,
            )
        return store

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        input: bytes | None,
        synchronous: str = "NORMAL",
        pool: StorePool = UNBOUNDED_POOL,
    ) -> ActorStore:
        """Not for engine mode: the engine holds the database; use :meth:`open`."""
        raise TypeError(
            "DepotStore databases come from the engine: use `await DepotStore.open(...)`"
        )

    async def _get_pages(
        self, pgnos: list[int], expected_head_txid: int | None
    ) -> p.SqliteGetPagesOk | None:
        """Pages from the engine; ``None`` when it has no database for this actor."""
        request = p.SqliteGetPagesRequest(
            actor_id=self.actor_id,
            pgnos=pgnos,
            expected_generation=self.generation,
            expected_head_txid=expected_head_txid,
        )
        try:
            response = await self._transport.sqlite_get_pages(request)
        except DepotUnavailable as exc:
            raise _unavailable(self.actor_id, "fetching pages", exc) from exc
        if isinstance(response, p.SqliteErrorResponse):
            if (
                expected_head_txid is None
                and (response.group, response.code) == _DATABASE_NOT_FOUND
            ):
                return None  # only the first fetch of a start is unfenced
            raise _refused(self.actor_id, "fetching pages", response)
        if not isinstance(response, p.SqliteGetPagesOk):
            raise _unexpected(self.actor_id, "fetching pages", type(response).__name__)
        # The engine may add pages it was not asked for: the overflow pages the requested leaf
        # pages point to (a prefetch, read from the same snapshot, so as good as the others).
        for page in response.pages:
            if page.pgno < 1:
                raise _unexpected(self.actor_id, "fetching pages", f"page number {page.pgno}")
            if page.bytes is not None and len(page.bytes) != PAGE_SIZE:
                raise _unexpected(
                    self.actor_id,
                    "fetching pages",
                    f"page {page.pgno} has {len(page.bytes)} bytes, not {PAGE_SIZE}",
                )
        return response

    def _size_in_header(self, page1: bytes) -> int:
        """The database size in pages, from page 1 (checked to be a 4096-byte-page SQLite
        header)."""
        if page1[:16] != _SQLITE_MAGIC:
            raise _error(
                "unsupported_database",
                f"page 1 of actor {self.actor_id}'s database is not a SQLite header",
                actor_id=self.actor_id,
            )
        (raw_page_size,) = struct.unpack(">H", page1[16:18])
        page_size = 65536 if raw_page_size == 1 else raw_page_size
        if page_size != PAGE_SIZE:
            raise _error(
                "unsupported_database",
                f"actor {self.actor_id}'s database has {page_size}-byte pages; the engine "
                f"stores {PAGE_SIZE}-byte pages",
                actor_id=self.actor_id,
                page_size=page_size,
            )
        # The in-header size, as the official runtime reads it (SQLite keeps it current).
        (size_pages,) = struct.unpack(">I", page1[28:32])
        return max(int(size_pages), 1)

    def _cache_matches(self, first: p.SqliteGetPagesOk, size_pages: int) -> bool:
        """The cache file has the database's size and every page of the engine's first answer
        (the header, the schema, usually the internal tables' pages): a check on top of the
        equal head txid, which alone proves it."""
        try:
            fd = os.open(self._key, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(fd).st_size != size_pages * PAGE_SIZE:
                return False
            for page in first.pages:
                if page.pgno > size_pages:
                    continue
                stored = os.pread(fd, PAGE_SIZE, (page.pgno - 1) * PAGE_SIZE)
                if stored != (page.bytes if page.bytes is not None else _ZERO_PAGE):
                    return False
            return True
        finally:
            os.close(fd)

    async def _fill_cache(self, first: p.SqliteGetPagesOk, size_pages: int) -> None:
        fd = os.open(self._key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._write_pages(fd, first, size_pages)
            head = self._head_txid
            starts = iter(range(INITIAL_FETCH_PAGES + 1, size_pages + 1, FETCH_BATCH_PAGES))

            async def fetch_batches() -> None:
                for start in starts:  # shared: each batch is taken by one fetcher
                    end = min(start + FETCH_BATCH_PAGES, size_pages + 1)
                    # Fenced on the head of the first answer: a commit landing in between
                    # (another writer) would mix two versions of the database.
                    batch = await self._get_pages(list(range(start, end)), head)
                    assert batch is not None
                    self._write_pages(fd, batch, size_pages)

            # A failed batch cancels the others before the file is closed; its error is the
            # open's error.
            await _fetchers(fetch_batches)
            os.ftruncate(fd, size_pages * PAGE_SIZE)  # pages the engine never had read as zeros
        finally:
            os.close(fd)
        self._page_log.size_pages = size_pages

    # -- lazy opening ----------------------------------------------------------------------

    async def _open_lazily(self, first: p.SqliteGetPagesOk, page1: bytes, size_pages: int) -> None:
        """Write the first answer, fetch what the runtime reads without a retry (the schema,
        the internal tables and indexes, the freelist's trunk pages), then load the rest in a
        task. A walk that finds something it does not understand loads everything first."""
        fd = os.open(self._key, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self._load_fd = fd
        os.ftruncate(fd, size_pages * PAGE_SIZE)  # pages not written yet read as zeros
        page_log = self._page_log
        page_log.size_pages = size_pages
        missing = set(range(1, size_pages + 1))
        page_log.missing = missing
        self._store_fetched(first)
        self._loaded = self._loop.create_future()
        try:
            await self._walk([(1, _BTREE)], page1)
            (trunk,) = struct.unpack(">I", page1[32:36])
            if trunk:
                await self._walk([(trunk, _CHAIN)], page1)
            self._register()
            conn = apsw.Connection(self._key, flags=apsw.SQLITE_OPEN_READONLY, vfs=VFS_NAME)
            try:
                roots = [int(row[0]) for row in conn.execute(_INTERNAL_ROOTS)]
            finally:
                conn.close()
            await self._walk([(root, _BTREE) for root in roots], page1)
        except (ValueError, IndexError, struct.error, apsw.Error) as exc:
            log.warning(
                "lazy open fell back to loading everything actor_id=%s error=%s",
                self.actor_id, exc,
            )
            self._loader = self._loop.create_task(self._load_rest())
            await asyncio.shield(self._loaded)
            return
        page_log.missed.clear()
        self.opened_lazily = True
        self._loader = self._loop.create_task(self._load_rest())
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "depot store opens lazily actor_id=%s pages=%s still_missing=%s",
                self.actor_id, size_pages, len(missing),
            )

    async def _walk(self, frontier: list[tuple[int, int]], page1: bytes) -> None:
        """Make every page reachable from ``frontier`` local, a level of the trees at a time
        (one request per level)."""
        size_pages = self._page_log.size_pages
        usable = PAGE_SIZE - page1[20]
        fd = self._load_fd
        assert fd is not None
        seen: set[int] = set()
        while frontier:
            missing = self._page_log.missing
            need = sorted({pgno for pgno, _ in frontier if missing and pgno in missing})
            if need:
                await self._fetch_missing(need)
            following: list[tuple[int, int]] = []
            for pgno, kind in frontier:
                if not 1 <= pgno <= size_pages:
                    raise ValueError(f"page {pgno} is outside the database ({size_pages} pages)")
                if pgno in seen:
                    continue
                seen.add(pgno)
                data = os.pread(fd, PAGE_SIZE, (pgno - 1) * PAGE_SIZE)
                if kind == _CHAIN:
                    (following_pgno,) = struct.unpack_from(">I", data, 0)
                    if following_pgno:
                        following.append((following_pgno, _CHAIN))
                else:
                    following.extend(_btree_links(data, pgno, usable))
            frontier = following

    async def _fetch_missing(self, pgnos: list[int]) -> None:
        """Fetch pages (at the engine's current head: a page still missing here was never
        written by this generation, so it is what it was at the start) into the cache."""
        response = await self._get_pages(pgnos, None)
        if response is None:
            raise _unexpected(self.actor_id, "fetching pages", "the database is gone")
        self._store_fetched(response)

    def _store_fetched(self, response: p.SqliteGetPagesOk) -> None:
        """Write the pages of an answer that are still missing (a page written here since is
        newer than the engine's copy of it)."""
        missing = self._page_log.missing
        fd = self._load_fd
        if not missing or fd is None:
            return
        for page in response.pages:
            pgno = page.pgno
            if pgno in missing:
                if page.bytes is not None:
                    os.pwrite(fd, page.bytes, (pgno - 1) * PAGE_SIZE)
                missing.discard(pgno)

    async def _load_rest(self) -> None:
        """The loader task: fetch every page still missing, in order, a batch per request and
        :data:`FETCH_CONCURRENCY` requests at a time. A failure fails the store."""
        missing = self._page_log.missing
        assert missing is not None
        pages = iter(sorted(missing))

        async def fetch_batches() -> None:
            while True:
                batch: list[int] = []
                for pgno in pages:  # shared: each page is taken by one fetcher
                    if pgno in missing:
                        batch.append(pgno)
                        if len(batch) == FETCH_BATCH_PAGES:
                            break
                if not batch:
                    return
                await self._fetch_missing(batch)

        try:
            await _fetchers(fetch_batches)
            if missing:
                raise _unexpected(self.actor_id, "loading pages", f"{len(missing)} never came")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the load fails the store
            error = exc if isinstance(exc, errors.RivetError) else _error(
                "load_failed", f"loading the actor's database failed: {exc!r}"
            )
            self._loader = None  # (finishing: not to be cancelled by _fail)
            self._fail(error)
            return
        self._page_log.missing = None
        self._loader = None
        self._close_load_fd()
        loaded = self._loaded
        if loaded is not None and not loaded.done():
            loaded.set_result(None)
        log.debug("depot store loaded actor_id=%s", self.actor_id)

    def _stop_loading(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None and loader is not asyncio.current_task():
            loader.cancel()
        self._close_load_fd()
        loaded = self._loaded
        if loaded is not None and not loaded.done():
            loaded.set_exception(
                _copy(self._failure) if self._failure is not None else _error(
                    "store_closed", "the actor's database was closed before it was loaded",
                    status=503,
                )
            )
            loaded.exception()  # (retrieved: nobody may be waiting)

    def _close_load_fd(self) -> None:
        fd, self._load_fd = self._load_fd, None
        if fd is not None:
            os.close(fd)

    @property
    def loading(self) -> bool:
        return bool(self._page_log.missing)

    def take_missed(self) -> list[int]:
        missed = self._page_log.missed
        if not missed:
            return []
        pages = sorted(missed)
        missed.clear()
        return pages

    async def load_pages(self, pages: list[int] | None = None) -> None:
        """Return once ``pages`` (``None``: all) are local: fetched at once with the missing
        pages of the batch of pages starting at the first (tables are mostly read in page
        order), ahead of the loader.

        Raises:
            RivetError: the store's failure, or the fetch's error.
        """
        if self._failure is not None:
            raise _copy(self._failure)
        missing = self._page_log.missing
        if not missing:
            return
        if pages is None:
            assert self._loaded is not None
            await asyncio.shield(self._loaded)
            return
        want = sorted({pgno for pgno in pages if pgno in missing})
        if not want:
            return
        end = min(want[0] + FETCH_BATCH_PAGES, self._page_log.size_pages + 1)
        wanted = set(want).union(pgno for pgno in range(want[0] + 1, end) if pgno in missing)
        await self._fetch_missing(sorted(wanted))

    @staticmethod
    def _write_pages(fd: int, response: p.SqliteGetPagesOk, size_pages: int) -> None:
        for page in response.pages:
            if page.bytes is not None and page.pgno <= size_pages:
                os.pwrite(fd, page.bytes, (page.pgno - 1) * PAGE_SIZE)

    def _create(self, input: bytes | None) -> None:
        """Write a new database; its first commit carries every page (the engine has none)."""
        image = _new_database_image()
        with open(self._key, "wb") as f:
            f.write(image)
        self._page_log.dirty.update(dict.fromkeys(range(1, len(image) // PAGE_SIZE + 1)))
        conn = self.conn
        with conn:
            conn.execute(
                "INSERT INTO _rivet_runtime (id, last_pushed_alarm, inspector_token, "
                "queue_next_id) VALUES (1, NULL, ?, 1)",
                (new_inspector_token(),),
            )
            conn.execute(
                "INSERT INTO _rivet_actor (id, has_initialized, input) VALUES (1, 0, ?)", (input,)
            )

    # -- the connection --------------------------------------------------------------------

    @property
    def conn(self) -> apsw.Connection:
        """The open connection (reopening the cache file after a pool eviction).

        Raises:
            RivetError: the store's failure, once it failed.
        """
        if self._failure is not None:
            raise _copy(self._failure)
        conn = self._conn
        if conn is None:
            conn = self._connect()
        return conn

    def _register(self) -> _DepotVfs:
        """Make the cache file this store's for the VFS."""
        vfs = _the_vfs()
        other = vfs.logs.get(self._key)
        if other is not None and other is not self._page_log:
            raise RuntimeError(f"the cache file {self._key} is used by another depot store")
        vfs.logs[self._key] = self._page_log
        return vfs

    def _connect(self) -> apsw.Connection:
        vfs = self._register()
        try:
            conn = apsw.Connection(self._key, flags=apsw.SQLITE_OPEN_READWRITE, vfs=VFS_NAME)
        except apsw.CantOpenError:
            del vfs.logs[self._key]
            raise FileNotFoundError(f"cannot open the actor cache file {self._key}") from None
        try:
            # Exclusive: SQLite keeps its page cache between transactions and takes no locks.
            _pragma(conn, "locking_mode=EXCLUSIVE", "exclusive")
            # The journal never touches disk: after a crash the cache is fetched again anyway.
            _pragma(conn, "journal_mode=MEMORY", "memory")
            # No sync: durability is the engine's acknowledgement (two VFS calls per commit less).
            list(conn.execute("PRAGMA synchronous=OFF"))
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()  # type: ignore[misc]
            if page_size != PAGE_SIZE:
                raise _error(
                    "unsupported_database",
                    f"actor cache {self._key} has {page_size}-byte pages, not {PAGE_SIZE}",
                )
            try:
                self._check_schema(conn)
            except (RuntimeError, apsw.SQLError) as exc:  # no or another internal schema
                raise _error("unsupported_database", str(exc), actor_id=self.actor_id) from None
        except BaseException:
            conn.close()
            if vfs.logs.get(self._key) is self._page_log:
                del vfs.logs[self._key]
            raise
        self._conn = conn
        self.pool.opened(self)
        return conn

    def close(self) -> None:
        """Close the connection. Commits already made keep shipping; the cache file stays (the
        store reopens it on next use) until :meth:`delete`."""
        super().close()
        vfs = _vfs
        if vfs is not None and vfs.logs.get(self._key) is self._page_log:
            del vfs.logs[self._key]

    def keep(self) -> int | None:
        """Close the store, leaving the cache file for the actor's next generation in this
        process: the head txid the cache is exactly the engine's database at, to pass to
        :meth:`open` as ``kept_head``. ``None`` (and the file removed) when it may not be: the
        store failed, a commit is not acknowledged, or pages were written after the last
        commit point (a transaction left open)."""
        settled = (
            self._failure is None
            and self._acked_seq == self._local_seq
            and not self._pending
            and not self._shipping
            and self._ship_handle is None
            and self._head_txid is not None
            and not self.loading
        )
        self._stop_loading()
        self.close()  # (rolls back a transaction left open: its pages show up as dirty)
        if settled and not self._page_log.dirty:
            return self._head_txid
        self.delete()
        return None

    def compact(self) -> None:
        """Nothing to fold: the journal lives in memory and the engine holds the data."""

    def delete(self) -> None:
        """Close and remove the local cache file (the engine's copy is not touched).

        Call after :meth:`flush`: commits not acknowledged by then keep shipping from memory.
        """
        self._stop_loading()
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self._key)

    # -- durability ------------------------------------------------------------------------

    @property
    def failure(self) -> errors.RivetError | None:
        """Why the store failed, or ``None`` while it works."""
        return self._failure

    def durable(self) -> asyncio.Future[None] | None:
        """``None`` when every local commit made so far is acknowledged by the engine, else a
        future resolving once they are (failing with the store's error if it fails)."""
        if self._failure is not None:
            future: asyncio.Future[None] = self._loop.create_future()
            future.set_exception(_copy(self._failure))
            return future
        if self._acked_seq >= self._local_seq:
            return None
        future = self._loop.create_future()
        self._waiters.append((self._local_seq, future))
        return future

    async def flush(self) -> None:
        """Return once every local commit made so far is acknowledged by the engine.

        Raises:
            RivetError: the store's failure (``sqlite.commit_rejected``,
                ``sqlite.depot_unavailable``, ...).
        """
        future = self.durable()
        if future is not None:
            await future

    async def run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """As :meth:`ActorStore.run`; when ``fn`` committed, return only once that commit is
        acknowledged by the engine.

        Raises:
            RivetError: the store's failure, before or while waiting; else whatever ``fn`` raised.
        """
        if self._failure is not None:
            raise _copy(self._failure)
        committed = False

        def call(conn: apsw.Connection) -> T:
            nonlocal committed
            before = self._local_seq
            try:
                return fn(conn)
            finally:
                committed = self._local_seq != before

        try:
            result = await super().run(call)
        except BaseException:
            if committed:
                await self.flush()  # what it committed before failing counts too
            raise
        if committed:
            await self.flush()
        return result

    # -- shipping --------------------------------------------------------------------------

    def _commit_point_failed(self, exc: BaseException) -> None:
        log.error("queuing a commit failed actor_id=%s", self.actor_id, exc_info=exc)
        self._fail(_error("commit_failed", f"queuing a commit for the engine failed: {exc!r}"))

    def _committed_locally(self, pages: dict[int, bytes], size_pages: int) -> None:
        """Called by the VFS at each commit point with copies of the pages it wrote."""
        self._local_seq += 1
        self._pending.append(_Commit(self._local_seq, pages, size_pages))
        if not self._shipping and self._ship_handle is None:
            # At the end of this tick (or at send_commits): the commits made meanwhile go out
            # merged into one.
            self._ship_handle = self._loop.call_soon(self._ship_at_tick_end)

    def send_commits(self) -> None:
        handle = self._ship_handle
        if handle is not None:
            handle.cancel()
            self._ship_handle = None
            self._ship_next()

    def _ship_at_tick_end(self) -> None:
        self._ship_handle = None
        if not self._shipping:  # (one commit in flight at a time: each is fenced by the last)
            self._ship_next()

    def _ship_next(self) -> None:
        """Ship everything queued as one commit, unless the store failed; called again once
        the engine answered, while commits are queued. A plain commit needs no task: the
        request is sent at once and its answer handled by a callback."""
        if self._failure is not None or not self._pending:
            self._shipping = False
            return
        self._shipping = True
        commit = self._take_batch()
        dirty = [
            p.SqliteDirtyPage(pgno=pgno, bytes=commit.pages[pgno]) for pgno in sorted(commit.pages)
        ]
        now_ms = int(time.time() * 1000)
        if len(dirty) > MAX_COMMIT_DIRTY_PAGES:
            self._worker = self._loop.create_task(
                self._ship_staged_then_next(commit, dirty, now_ms)
            )
            return
        head = self._head_txid
        try:
            answer = asyncio.ensure_future(
                self._transport.sqlite_commit(
                    p.SqliteCommitRequest(
                        actor_id=self.actor_id,
                        dirty_pages=dirty,
                        db_size_pages=commit.size_pages,
                        now_ms=now_ms,
                        expected_generation=self.generation,
                        expected_head_txid=head,
                    )
                ),
                loop=self._loop,
            )
        except Exception as exc:  # noqa: BLE001 (refused before sending: the store fails)
            self._shipped(commit, exc)
            return
        answer.add_done_callback(functools.partial(self._on_commit_answer, commit, head))

    def _on_commit_answer(
        self, commit: _Commit, head: int | None, answer: asyncio.Future[Any]
    ) -> None:
        try:
            response = answer.result()
            if isinstance(response, p.SqliteErrorResponse):
                raise _refused(self.actor_id, "a commit", response)
            if not isinstance(response, p.SqliteCommitOk):
                raise _unexpected(self.actor_id, "committing", type(response).__name__)
        except BaseException as exc:  # noqa: BLE001 (a cancelled answer fails the store too)
            self._shipped(commit, exc)
            return
        self._advance(response.head_txid, None if head is None else head + 1)
        self._shipped(commit, None)

    async def _ship_staged_then_next(
        self, commit: _Commit, dirty: list[p.SqliteDirtyPage], now_ms: int
    ) -> None:
        try:
            await self._ship_staged(dirty, commit.size_pages, now_ms)
        except BaseException as exc:  # noqa: BLE001
            self._worker = None
            self._shipped(commit, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._worker = None
        self._shipped(commit, None)

    def _shipped(self, commit: _Commit, error: BaseException | None) -> None:
        """One shipped commit's outcome: acknowledged (``None``) or the store's failure."""
        if error is None:
            self._acked(commit.seq)
        elif isinstance(error, errors.RivetError):
            self._fail(error)
        elif isinstance(error, DepotUnavailable):
            self._fail(_unavailable(self.actor_id, "committing", error))
        elif isinstance(error, asyncio.CancelledError):
            self._fail(_error("commit_interrupted", "shipping commits to the engine was cancelled"))
        else:
            log.error("depot commit failed actor_id=%s", self.actor_id, exc_info=error)
            self._fail(_error("commit_failed", f"committing to the engine failed: {error!r}"))
        self._ship_next()

    def _take_batch(self) -> _Commit:
        """The oldest queued commit merged with those after it (later pages win), within
        :data:`MAX_STAGED_COMMIT_PAGES`."""
        commit = self._pending.popleft()
        if not self._pending:
            return commit
        pages = dict(commit.pages)
        size_pages = commit.size_pages
        seq = commit.seq
        while self._pending:
            later = self._pending[0]
            if len(pages) + len(later.pages) > MAX_STAGED_COMMIT_PAGES and (
                len(pages.keys() | later.pages.keys()) > MAX_STAGED_COMMIT_PAGES
            ):
                break
            self._pending.popleft()
            pages.update(later.pages)
            seq = later.seq
            if later.size_pages < size_pages:  # truncated: pages past the end are gone
                pages = {pgno: data for pgno, data in pages.items() if pgno <= later.size_pages}
            size_pages = later.size_pages
        return _Commit(seq, pages, size_pages)

    async def _ship_staged(
        self, dirty: list[p.SqliteDirtyPage], size_pages: int, now_ms: int
    ) -> None:
        """Begin, one shard-aligned segment per at most five shards, finalize."""
        head = self._head_txid
        begun = await self._transport.sqlite_commit_stage_begin(
            p.SqliteCommitStageBeginRequest(
                actor_id=self.actor_id,
                expected_generation=self.generation,
                expected_head_txid=head,
            )
        )
        if isinstance(begun, p.SqliteErrorResponse):
            raise _refused(self.actor_id, "a staged commit", begun)
        if not isinstance(begun, p.SqliteCommitStageBeginOk):
            raise _unexpected(self.actor_id, "beginning a staged commit", type(begun).__name__)
        txid = begun.txid
        if head is not None and txid != head + 1:
            raise _unexpected(
                self.actor_id, "beginning a staged commit", f"txid {txid} after head {head}"
            )
        firsts: list[int] = []
        for first_pgno, segment in _segments(dirty):
            staged = await self._transport.sqlite_commit_stage_segment(
                p.SqliteCommitStageSegmentRequest(
                    actor_id=self.actor_id,
                    expected_generation=self.generation,
                    txid=txid,
                    first_pgno=first_pgno,
                    dirty_pages=segment,
                )
            )
            if isinstance(staged, p.SqliteErrorResponse):
                raise _refused(self.actor_id, "a staged commit segment", staged)
            if not isinstance(staged, p.SqliteCommitStageSegmentOk):
                raise _unexpected(self.actor_id, "staging a segment", type(staged).__name__)
            firsts.append(first_pgno)
        done = await self._transport.sqlite_commit_finalize(
            p.SqliteCommitFinalizeRequest(
                actor_id=self.actor_id,
                expected_generation=self.generation,
                txid=txid,
                new_db_size_pages=size_pages,
                now_ms=now_ms,
                segment_first_pgnos=firsts,
            )
        )
        if isinstance(done, p.SqliteErrorResponse):
            raise _refused(self.actor_id, "finalizing a staged commit", done)
        if not isinstance(done, p.SqliteCommitFinalizeOk):
            raise _unexpected(self.actor_id, "finalizing a staged commit", type(done).__name__)
        self._advance(done.head_txid, txid)

    def _advance(self, head_txid: int | None, fallback: int | None) -> None:
        self._head_txid = head_txid if head_txid is not None else fallback

    def _acked(self, seq: int) -> None:
        self._acked_seq = seq
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)

    def _fail(self, error: errors.RivetError) -> None:
        """Refuse all further work and fail every waiter (the engine's state is unknown)."""
        if self._failure is not None:
            return
        self._failure = error
        self._page_log.failed = True
        self._pending.clear()  # drop the copies: they will never be sent
        self._stop_loading()
        log.error(
            "depot store failed actor_id=%s generation=%s code=%s error=%s",
            self.actor_id,
            self.generation,
            error.full_code,
            error.message,
        )
        waiters, self._waiters = self._waiters, collections.deque()
        for _, future in waiters:
            if not future.done():
                future.set_exception(_copy(error))
        if self._on_failure is not None:
            try:
                self._on_failure(_copy(error))
            except Exception:
                log.exception("depot store on_failure callback raised actor_id=%s", self.actor_id)


async def _fetchers(fetch: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run :data:`FETCH_CONCURRENCY` copies of ``fetch`` (sharing their work list); the first
    to fail cancels the others, and its error is raised."""
    try:
        async with asyncio.TaskGroup() as fetchers:
            for _ in range(FETCH_CONCURRENCY):
                fetchers.create_task(fetch())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


def _varint(page: bytes, pos: int) -> tuple[int, int]:
    """A SQLite varint (big-endian, 7 bits a byte, the ninth byte whole) and the position after
    it."""
    value = 0
    for index in range(8):
        byte = page[pos + index]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + index + 1
    return (value << 8) | page[pos + 8], pos + 9


def _btree_links(page: bytes, pgno: int, usable: int) -> list[tuple[int, int]]:
    """The pages a b-tree page points to: its children, and the first overflow page of each
    cell whose payload does not fit (file format §1.6).

    Raises:
        ValueError: not a b-tree page, or a cell that does not fit in it.
    """
    header = 100 if pgno == 1 else 0
    kind = page[header]
    if kind not in (2, 5, 10, 13):
        raise ValueError(f"page {pgno} is not a b-tree page (type {kind})")
    interior = kind in (2, 5)
    (cells,) = struct.unpack_from(">H", page, header + 3)
    pointers = header + (12 if interior else 8)
    if pointers + 2 * cells > usable:
        raise ValueError(f"page {pgno} has {cells} cells, more than fit")
    links: list[tuple[int, int]] = []
    if interior:
        links.append((struct.unpack_from(">I", page, header + 8)[0], _BTREE))
    # Largest payload kept on the page, and the least (file format §1.6).
    most = usable - 35 if kind == 13 else (usable - 12) * 64 // 255 - 23
    least = (usable - 12) * 32 // 255 - 23
    for index in range(cells):
        (cell,) = struct.unpack_from(">H", page, pointers + 2 * index)
        if not pointers + 2 * cells <= cell < usable:
            raise ValueError(f"page {pgno} cell {index} starts at {cell}")
        if interior:
            links.append((struct.unpack_from(">I", page, cell)[0], _BTREE))
            if kind == 5:
                continue  # an interior table cell: a child and a key, no payload
            cell += 4
        payload, cell = _varint(page, cell)
        if kind == 13:
            _, cell = _varint(page, cell)  # the rowid
        if payload > most:
            kept = least + (payload - least) % (usable - 4)
            if kept > most:
                kept = least
            if cell + kept + 4 > usable:
                raise ValueError(f"page {pgno} cell {index} overflows the page")
            links.append((struct.unpack_from(">I", page, cell + kept)[0], _CHAIN))
    return links


def _segments(dirty: list[p.SqliteDirtyPage]) -> list[tuple[int, list[p.SqliteDirtyPage]]]:
    """Cut pages (ascending) into segments that start on a shard boundary and span at most
    :data:`SEGMENT_MAX_SHARDS` shards: the engine folds a segment into whole shard images, so no
    shard may be split between two segments."""
    segments: list[tuple[int, list[p.SqliteDirtyPage]]] = []
    limit = -1
    for page in dirty:
        if page.pgno // SHARD_SIZE >= limit:
            shard = page.pgno // SHARD_SIZE
            limit = shard + SEGMENT_MAX_SHARDS
            segments.append((shard * SHARD_SIZE, []))
        segments[-1][1].append(page)
    return segments


def _pragma(conn: apsw.Connection, setting: str, expected: str) -> None:
    rows = list(conn.execute(f"PRAGMA {setting}"))
    if not rows or str(rows[0][0]).lower() != expected:
        raise _error(
            "unsupported_database", f"`PRAGMA {setting}` answered {rows!r}, expected {expected}"
        )


_new_image: bytes | None = None


def _new_database_image() -> bytes:
    """An empty actor database as the official runtime lays it out: 4096-byte pages, no
    auto-vacuum, rollback journal (not WAL) and the internal schema at version 2. Built once.

    ``kv_import_state`` is left out: an actor the engine has no database for may still have
    legacy KV data, which :mod:`.legacy_import` probes for (and then writes the state)."""
    global _new_image
    if _new_image is None:
        with tempfile.TemporaryDirectory(prefix="rivetkit-depot-") as tmp:
            path = os.path.join(tmp, "new.db")
            conn = apsw.Connection(path)
            try:
                list(conn.execute(f"PRAGMA page_size={PAGE_SIZE}"))
                list(conn.execute("PRAGMA auto_vacuum=NONE"))
                list(conn.execute("PRAGMA journal_mode=DELETE"))
                list(conn.execute("PRAGMA synchronous=OFF"))
                with conn:
                    list(conn.execute(INTERNAL_SCHEMA))
                    conn.execute(
                        "INSERT INTO _rivet_meta (key, value) VALUES ('schema_version', ?)",
                        (struct.pack("<q", SCHEMA_VERSION),),
                    )
            finally:
                conn.close()
            with open(path, "rb") as f:
                _new_image = f.read()
    return _new_image
