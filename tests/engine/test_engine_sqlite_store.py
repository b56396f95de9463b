"""DepotStore against an honest stand-in for the engine's depot (no engine needed).

``PageDepot`` keeps an actor's database the way the engine exposes it: a SQLite-format file of
4096-byte pages, a head txid and the engine's checks (generation and head fencing, the 320-page
single-commit limit, shard-aligned ascending staged segments, nothing visible before finalize).
The lead adds the same scenarios against the real engine once the envoy client exists.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import pytest

from rivetkit import actor, errors
from rivetkit._protocol import envoy as p
from rivetkit._runtime.db import ActorDb, migrate
from rivetkit._runtime.instance import ActorInstance
from rivetkit.drivers.engine.sqlite import (
    MAX_COMMIT_DIRTY_PAGES,
    PAGE_SIZE,
    SEGMENT_MAX_SHARDS,
    SHARD_SIZE,
    DepotStore,
    DepotUnavailable,
)

pytestmark = pytest.mark.anyio

ACTOR_ID = "actor-0001"
MAX_STAGED_PAGES = 32_768

INTERNAL_TABLES = {
    "_rivet_meta",
    "_rivet_runtime",
    "_rivet_actor",
    "_rivet_actor_state",
    "_rivet_schedule_events",
    "_rivet_schedule_history",
    "_rivet_conns",
    "_rivet_conn_state",
    "_rivet_queue",
    "_rivet_wf_kv",
    "_rivet_user_kv",
}


def _error(code: str, message: str) -> p.SqliteErrorResponse:
    return p.SqliteErrorResponse(group="depot", code=code, message=message)


@dataclass
class _Stage:
    txid: int
    generation: int | None
    firsts: list[int] = field(default_factory=list)
    pages: dict[int, bytes] = field(default_factory=dict)


class PageDepot:
    """One actor's database as the engine keeps it (single actor, single node)."""

    def __init__(self, path: Path, *, generation: int = 1) -> None:
        self.path = path
        self.generation = generation
        self.head_txid: int | None = None  # None: the engine has no database for the actor
        self.size_pages = 0
        self.requests: list[Any] = []
        self.stage: _Stage | None = None
        self.hold_commits: asyncio.Event | None = None  # set() releases held commit answers
        self.fail_next: Callable[[Any], Any] | None = None  # request -> response | raise
        self.pages_past_the_end = 0  # accepted by the engine, but a client bug
        # The engine adds the overflow pages of the leaves asked for, wherever they are: here
        # page 2 and the page before the first one asked for stand in for those.
        self.adds_unasked_pages = False
        # GetPages asking for this page wait until `reads_released` is set (a slow engine).
        self.hold_reads_of: int | None = None
        self.reads_released = asyncio.Event()

    # -- helpers for tests -----------------------------------------------------------------

    def kinds(self) -> list[str]:
        return [type(r).__name__ for r in self.requests]

    def commit_requests(self) -> list[Any]:
        return [r for r in self.requests if not isinstance(r, p.SqliteGetPagesRequest)]

    def _check_generation(self, request: Any) -> p.SqliteErrorResponse | None:
        if request.expected_generation is None:
            return p.SqliteErrorResponse(
                group="sqlite", code="invalid_request", message="missing expectedGeneration"
            )
        if request.expected_generation != self.generation:
            return p.SqliteErrorResponse(
                group="actor", code="not_found", message="actor does not exist"
            )
        return None

    def _fence(self, expected: int | None) -> p.SqliteErrorResponse | None:
        actual = self.head_txid or 0
        if expected is not None and expected != actual:
            return _error(
                "head_fence_mismatch", f"expected head txid {expected}, current is {actual}"
            )
        return None

    async def _answer(self, request: Any, *, held: bool = False) -> Any | None:
        self.requests.append(request)
        await asyncio.sleep(0)  # a network hop
        if held and self.hold_commits is not None:
            await self.hold_commits.wait()
        hook = self.fail_next
        if hook is not None:
            self.fail_next = None
            return hook(request)
        return None

    def _check_pages(self, dirty: list[p.SqliteDirtyPage]) -> p.SqliteErrorResponse | None:
        seen = set()
        for page in dirty:
            if page.pgno < 1 or len(page.bytes) != PAGE_SIZE or page.pgno in seen:
                return _error("invalid_request", f"bad or duplicated page {page.pgno}")
            seen.add(page.pgno)
        return None

    def _read(self, pgnos: list[int]) -> list[p.SqliteFetchedPage]:
        pages = []
        with open(self.path, "rb") as f:
            for pgno in pgnos:
                data = None
                if 1 <= pgno <= self.size_pages:
                    f.seek((pgno - 1) * PAGE_SIZE)
                    data = f.read(PAGE_SIZE)
                pages.append(p.SqliteFetchedPage(pgno=pgno, bytes=data))
        return pages

    def _apply(self, pages: dict[int, bytes], size_pages: int) -> None:
        self.pages_past_the_end += sum(1 for pgno in pages if pgno > size_pages)
        mode = "r+b" if self.path.exists() else "w+b"
        with open(self.path, mode) as f:
            for pgno, data in pages.items():
                if pgno <= size_pages:
                    f.seek((pgno - 1) * PAGE_SIZE)
                    f.write(data)
            f.truncate(size_pages * PAGE_SIZE)
        self.size_pages = size_pages

    # -- the transport ---------------------------------------------------------------------

    async def sqlite_get_pages(
        self, request: p.SqliteGetPagesRequest
    ) -> p.SqliteGetPagesOk | p.SqliteErrorResponse:
        hooked = await self._answer(request)
        if hooked is not None:
            return hooked  # type: ignore[no-any-return]
        if self.hold_reads_of in request.pgnos:
            await self.reads_released.wait()
        refused = self._check_generation(request)
        if refused is not None:
            return refused
        if self.head_txid is None:
            return _error("database_not_found", "Database was not found in this bucket branch.")
        fenced = self._fence(request.expected_head_txid)
        if fenced is not None:
            return fenced
        pgnos = list(request.pgnos)
        if self.adds_unasked_pages:
            pgnos += [n for n in (2, pgnos[0] - 1) if n >= 1 and n not in pgnos]
        pages = self._read(pgnos)
        return p.SqliteGetPagesOk(pages=pages, head_txid=self.head_txid)

    async def sqlite_commit(
        self, request: p.SqliteCommitRequest
    ) -> p.SqliteCommitOk | p.SqliteErrorResponse:
        hooked = await self._answer(request, held=True)
        if hooked is not None:
            return hooked  # type: ignore[no-any-return]
        refused = self._check_generation(request) or self._fence(request.expected_head_txid)
        if refused is not None:
            return refused
        if len(request.dirty_pages) > MAX_COMMIT_DIRTY_PAGES:
            return _error("commit_too_large", f"{len(request.dirty_pages)} dirty pages")
        refused = self._check_pages(request.dirty_pages)
        if refused is not None:
            return refused
        self._apply({pg.pgno: pg.bytes for pg in request.dirty_pages}, request.db_size_pages)
        self.head_txid = (self.head_txid or 0) + 1
        return p.SqliteCommitOk(head_txid=self.head_txid)

    async def sqlite_commit_stage_begin(
        self, request: p.SqliteCommitStageBeginRequest
    ) -> p.SqliteCommitStageBeginOk | p.SqliteErrorResponse:
        hooked = await self._answer(request)
        if hooked is not None:
            return hooked  # type: ignore[no-any-return]
        refused = self._check_generation(request) or self._fence(request.expected_head_txid)
        if refused is not None:
            return refused
        txid = (self.head_txid or 0) + 1
        self.stage = _Stage(txid, request.expected_generation)  # replaces an abandoned one
        return p.SqliteCommitStageBeginOk(txid=txid)

    async def sqlite_commit_stage_segment(
        self, request: p.SqliteCommitStageSegmentRequest
    ) -> p.SqliteCommitStageSegmentOk | p.SqliteErrorResponse:
        hooked = await self._answer(request)
        if hooked is not None:
            return hooked  # type: ignore[no-any-return]
        stage = self.stage
        if request.txid != (self.head_txid or 0) + 1:
            return _error("head_fence_mismatch", f"txid {request.txid}")
        if stage is None or stage.txid != request.txid:
            return _error("stage_not_found", f"txid {request.txid}")
        if stage.generation != request.expected_generation:
            return _error("stage_segment_invalid", "other generation")
        first = request.first_pgno
        if not request.dirty_pages or first % SHARD_SIZE != 0:
            return _error("stage_segment_invalid", f"first page {first} is not shard-aligned")
        if stage.firsts and first < stage.firsts[-1] + SHARD_SIZE * SEGMENT_MAX_SHARDS:
            return _error("stage_segment_invalid", f"segment {first} overlaps the previous one")
        refused = self._check_pages(request.dirty_pages)
        if refused is not None:
            return refused
        limit = first // SHARD_SIZE + SEGMENT_MAX_SHARDS
        for page in request.dirty_pages:
            if page.pgno < first or page.pgno // SHARD_SIZE >= limit or page.pgno in stage.pages:
                return _error("stage_segment_invalid", f"page {page.pgno} outside the segment")
        for page in request.dirty_pages:
            stage.pages[page.pgno] = page.bytes
        if len(stage.pages) > MAX_STAGED_PAGES:
            return _error("commit_too_large", f"{len(stage.pages)} staged pages")
        stage.firsts.append(first)
        return p.SqliteCommitStageSegmentOk(staged_bytes=len(request.dirty_pages) * PAGE_SIZE)

    async def sqlite_commit_finalize(
        self, request: p.SqliteCommitFinalizeRequest
    ) -> p.SqliteCommitFinalizeOk | p.SqliteErrorResponse:
        hooked = await self._answer(request)
        if hooked is not None:
            return hooked  # type: ignore[no-any-return]
        stage = self.stage
        if request.txid != (self.head_txid or 0) + 1:
            return _error("head_fence_mismatch", f"txid {request.txid}")
        if stage is None or stage.txid != request.txid:
            return _error("stage_segment_invalid", "no staged commit is open")
        if stage.firsts != list(request.segment_first_pgnos):
            return _error("stage_segment_invalid", "segment list differs from what was staged")
        self._apply(stage.pages, request.new_db_size_pages)
        self.stage = None
        self.head_txid = request.txid
        return p.SqliteCommitFinalizeOk(head_txid=self.head_txid)


# -- helpers -----------------------------------------------------------------------------------


async def _open(
    depot: PageDepot,
    cache: Path,
    input: bytes | None = None,
    *,
    lazy_from_pages: int = 10**9,
    kept_head: int | None = None,
) -> DepotStore:
    """Open the store (every page fetched before it opens, unless ``lazy_from_pages``)."""
    return await DepotStore.open(
        depot,
        actor_id=ACTOR_ID,
        generation=depot.generation,
        cache_path=cache,
        input=input,
        lazy_from_pages=lazy_from_pages,
        kept_head=kept_head,
    )


def _dump(path: Path) -> dict[str, list[Any]]:
    """Every table's rows, read with SQLite's own VFS (the file must be a valid database)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {
            name: conn.execute(f'SELECT * FROM "{name}" ORDER BY 1').fetchall() for name in tables
        }
    finally:
        conn.close()


def _insert(sql: str, *args: Any) -> Callable[[apsw.Connection], None]:
    def write(conn: apsw.Connection) -> None:
        with conn:
            conn.execute(sql, args)

    return write


async def _ticks(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# -- tests -------------------------------------------------------------------------------------


async def test_new_actor_gets_the_official_schema_in_one_first_commit(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db", generation=3)
    store = await _open(depot, tmp_path / "cache" / "a.db", input=b"\xa1\x61x\x01")
    await store.flush()

    assert isinstance(depot.requests[0], p.SqliteGetPagesRequest)
    assert depot.requests[0].pgnos == list(range(1, 129))
    assert depot.requests[0].expected_generation == 3
    assert depot.requests[0].expected_head_txid is None
    (first,) = depot.commit_requests()
    assert isinstance(first, p.SqliteCommitRequest)
    assert first.expected_head_txid == 0 and first.expected_generation == 3
    assert [pg.pgno for pg in first.dirty_pages] == list(range(1, first.db_size_pages + 1))
    assert depot.head_txid == 1

    raw = depot.path.read_bytes()
    assert raw == (tmp_path / "cache" / "a.db").read_bytes()
    assert struct.unpack(">H", raw[16:18])[0] == PAGE_SIZE
    assert raw[18:20] == b"\x01\x01"  # rollback journal, not WAL (as the official runtime)
    assert struct.unpack(">I", raw[52:56])[0] == 0  # no auto-vacuum
    rows = _dump(depot.path)
    assert INTERNAL_TABLES <= set(rows)
    # No kv_import_state: the legacy import step writes it after probing (legacy_import.py).
    assert dict(rows["_rivet_meta"]) == {"schema_version": struct.pack("<q", 2)}
    assert rows["_rivet_actor"] == [(1, 0, b"\xa1\x61x\x01")]
    ((_, alarm, token, next_id),) = rows["_rivet_runtime"]
    assert alarm is None and next_id == 1 and isinstance(token, str) and len(token) == 43
    assert store.load() == (False, b"\xa1\x61x\x01", None, 0)
    store.close()


async def test_database_round_trips_through_the_depot(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    store = await _open(depot, cache)
    store.initialize(b"\xa0")
    for seq in range(1, 6):
        store.save_state(cbor_count(seq), seq)
    await store.run(_insert("CREATE TABLE notes (id INTEGER PRIMARY KEY, body BLOB)"))
    await store.run(_insert("INSERT INTO notes (body) VALUES (?)", b"hello"))

    before = cache.stat().st_size

    def big(conn: apsw.Connection) -> None:  # ~5 MB: spills the page cache, needs staging
        with conn:
            for i in range(1280):
                conn.execute("INSERT INTO notes (body) VALUES (?)", (os.urandom(4000),))
            assert cache.stat().st_size > before  # spilled: written before the commit point

    await store.run(big)
    kinds = depot.kinds()
    assert "SqliteCommitStageBeginRequest" in kinds and "SqliteCommitFinalizeRequest" in kinds
    segments = [r for r in depot.requests if isinstance(r, p.SqliteCommitStageSegmentRequest)]
    assert len(segments) > 1
    assert all(len(s.dirty_pages) <= MAX_COMMIT_DIRTY_PAGES for s in segments)
    await store.flush()

    assert depot.path.read_bytes() == cache.read_bytes()
    content = _dump(depot.path)
    assert len(content["notes"]) == 1281
    assert content["_rivet_actor_state"] == [(1, cbor_count(5))]
    store.close()

    # A batch refused midway fails the open with the engine's reason (the batches in flight
    # with it are cancelled) and leaves no cache behind.
    depot.generation = 2
    fetched = 0
    answer = depot.sqlite_get_pages

    async def third_refused(request: p.SqliteGetPagesRequest) -> Any:
        nonlocal fetched
        fetched += 1
        if fetched == 3:
            return _error("head_fence_mismatch", "another writer committed")
        return await answer(request)

    depot.sqlite_get_pages = third_refused  # type: ignore[method-assign]
    with pytest.raises(errors.RivetError) as caught:
        await _open(depot, tmp_path / "b.db")
    assert caught.value.full_code == "sqlite.open_failed"
    assert caught.value.metadata["depot_code"] == "head_fence_mismatch"
    assert not (tmp_path / "b.db").exists()
    depot.sqlite_get_pages = answer  # type: ignore[method-assign]

    # The next generation fetches everything again, into a fresh cache, in several batches
    # (some at once), taking the pages the engine adds unasked.
    depot.requests.clear()
    depot.adds_unasked_pages = True
    again = await _open(depot, tmp_path / "b.db")
    fetches = [r for r in depot.requests if isinstance(r, p.SqliteGetPagesRequest)]
    assert len(fetches) > 2
    assert all(r.expected_head_txid == depot.head_txid for r in fetches[1:])
    assert (tmp_path / "b.db").read_bytes() == depot.path.read_bytes()
    assert again.load() == (True, None, cbor_count(5), 0)  # no commit numbers in engine mode
    rows = await again.run(lambda conn: conn.execute("SELECT count(*) FROM notes").fetchall())
    assert rows == [(1281,)]
    await again.run(_insert("DELETE FROM notes WHERE id > 1"))  # head fencing carries on
    await again.flush()
    assert _dump(depot.path)["notes"] == [(1, b"hello")]
    again.close()


def cbor_count(n: int) -> bytes:
    return b"\xa1\x65count" + bytes([n])


async def test_waiters_are_answered_only_after_the_ack(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    store = await _open(depot, tmp_path / "a.db")
    await store.flush()
    assert store.durable() is None
    await store.run(_insert("CREATE TABLE t (x)"))

    depot.hold_commits = asyncio.Event()
    task = asyncio.ensure_future(store.run(_insert("INSERT INTO t VALUES (1)")))
    await _ticks()
    assert not task.done()
    assert depot.head_txid == 2  # the commit is in flight, not applied
    # Reads do not wait; the local cache already has the row.
    assert await store.run(lambda conn: conn.execute("SELECT x FROM t").fetchall()) == [(1,)]
    durable = store.durable()
    assert durable is not None and not durable.done()
    depot.hold_commits.set()
    await task
    assert durable.done() and durable.exception() is None
    assert depot.head_txid == 3 and store.durable() is None
    store.close()


async def test_commits_made_while_one_is_in_flight_ship_merged(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    store = await _open(depot, cache)
    await store.run(_insert("CREATE TABLE t (k INTEGER PRIMARY KEY, v)"))
    depot.requests.clear()
    depot.hold_commits = asyncio.Event()
    first = asyncio.ensure_future(store.run(_insert("INSERT INTO t VALUES (1, 'a')")))
    await _ticks()
    later = [
        asyncio.ensure_future(store.run(_insert("INSERT OR REPLACE INTO t VALUES (1, ?)", v)))
        for v in ("b", "c", "d")
    ]
    await _ticks()
    depot.hold_commits.set()
    await asyncio.gather(first, *later)
    commits = depot.commit_requests()
    assert len(commits) == 2  # the first, then the three others as one
    assert commits[1].expected_head_txid == commits[0].expected_head_txid + 1
    assert _dump(depot.path)["t"] == [(1, "d")]
    assert depot.path.read_bytes() == cache.read_bytes()
    store.close()


async def test_commits_of_one_tick_go_as_one_and_send_commits_does_not_wait(
    tmp_path: Path,
) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    store = await _open(depot, cache)
    await store.run(_insert("CREATE TABLE t (x)"))
    depot.requests.clear()
    _insert("INSERT INTO t VALUES (1)")(store.conn)  # (a user transaction, then the state's)
    _insert("INSERT INTO t VALUES (2)")(store.conn)
    durable = store.durable()
    assert durable is not None and depot.requests == []
    store.send_commits()  # the runtime's call after a tick's state save: no tick's end to wait
    await asyncio.sleep(0)  # (this fake engine takes one tick to read a request)
    assert len(depot.commit_requests()) == 1
    await durable
    assert _dump(depot.path)["t"] == [(1,), (2,)]
    # Without it, the commits of a tick leave at its end, merged all the same.
    _insert("INSERT INTO t VALUES (3)")(store.conn)
    _insert("INSERT INTO t VALUES (4)")(store.conn)
    await asyncio.sleep(0)
    assert len(depot.commit_requests()) == 1
    await store.flush()
    assert len(depot.commit_requests()) == 2
    assert _dump(depot.path)["t"] == [(1,), (2,), (3,), (4,)]
    assert depot.path.read_bytes() == cache.read_bytes()
    store.send_commits()  # nothing queued: nothing sent
    await _ticks()
    assert len(depot.commit_requests()) == 2
    store.close()


async def test_a_rollback_ships_nothing(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    store = await _open(depot, tmp_path / "a.db")
    await store.run(_insert("CREATE TABLE t (x)"))
    depot.requests.clear()

    def rolled_back(conn: apsw.Connection) -> None:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.execute("ROLLBACK")

    await store.run(rolled_back)
    assert store.durable() is None
    await _ticks()
    assert depot.requests == []

    # A rollback after a cache spill puts the old pages back; the depot keeps its content.
    acked = depot.path.read_bytes()

    def spilled_then_rolled_back(conn: apsw.Connection) -> None:
        size = os.path.getsize(tmp_path / "a.db")
        conn.execute("BEGIN")
        for _ in range(800):
            conn.execute("INSERT INTO t VALUES (?)", (os.urandom(4000),))
        assert os.path.getsize(tmp_path / "a.db") > size  # spilled
        conn.execute("ROLLBACK")

    await store.run(spilled_then_rolled_back)
    assert store.durable() is None
    await _ticks()
    assert depot.requests == []
    assert depot.path.read_bytes() == acked
    await store.run(_insert("INSERT INTO t VALUES (1)"))  # and the next commit is right
    assert _dump(depot.path)["t"] == [(1,)]
    assert depot.path.read_bytes() == (tmp_path / "a.db").read_bytes()
    store.close()


async def test_commits_ship_whatever_the_synchronous_setting(tmp_path: Path) -> None:
    # The commit point is the end of the commit, not the sync SQLite skips with OFF.
    depot = PageDepot(tmp_path / "depot.db")
    store = await _open(depot, tmp_path / "a.db")
    await store.run(lambda conn: conn.execute("PRAGMA synchronous=OFF").fetchall())
    await store.run(_insert("CREATE TABLE t (x)"))
    await store.run(_insert("INSERT INTO t VALUES (7)"))
    assert _dump(depot.path)["t"] == [(7,)]
    store.close()


async def test_growth_merged_with_truncation_ships_the_final_size(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    store = await _open(depot, cache)
    await store.run(_insert("CREATE TABLE t (x)"))
    depot.requests.clear()
    depot.hold_commits = asyncio.Event()
    first = asyncio.ensure_future(store.run(_insert("INSERT INTO t VALUES (1)")))
    await _ticks()
    grow = asyncio.ensure_future(store.run(_insert("INSERT INTO t VALUES (zeroblob(200000))")))
    await _ticks()
    grown = cache.stat().st_size // PAGE_SIZE

    def shrink(conn: apsw.Connection) -> None:  # the runtime's own connection may VACUUM
        conn.execute("DELETE FROM t WHERE x != 1")
        conn.execute("VACUUM")

    shrunk = asyncio.ensure_future(store.run(shrink))
    await _ticks()
    depot.hold_commits.set()
    await asyncio.gather(first, grow, shrunk)
    commits = depot.commit_requests()
    assert len(commits) == 2  # the first, then the growth and the truncation as one
    assert commits[1].db_size_pages < grown
    assert depot.pages_past_the_end == 0  # pages the truncation dropped are not sent
    assert depot.path.read_bytes() == cache.read_bytes()
    assert _dump(depot.path)["t"] == [(1,)]
    store.close()


async def _kept_notes(depot: PageDepot, cache: Path, rows: int) -> int:
    """A store of ``rows`` notes of ~4 KB (past the first fetch), kept: its head txid."""
    store = await _open(depot, cache)

    def fill(conn: apsw.Connection) -> None:
        with conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body BLOB)")
            for _ in range(rows):
                conn.execute("INSERT INTO notes (body) VALUES (?)", (os.urandom(4000),))

    await store.run(fill)
    head = store.keep()
    assert head is not None and head == depot.head_txid
    assert cache.read_bytes() == depot.path.read_bytes()
    return head


async def _next_generation(depot: PageDepot, cache: Path, kept_head: int) -> DepotStore:
    """The actor's next generation opening with the head txid its cache was kept at; the cache
    is the engine's database afterwards, reused or fetched."""
    depot.generation += 1
    depot.requests.clear()
    store = await _open(depot, cache, kept_head=kept_head)
    assert cache.read_bytes() == depot.path.read_bytes()
    return store


async def test_a_kept_cache_is_used_only_while_the_engine_is_at_its_head(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    head = await _kept_notes(depot, cache, 300)

    # Nothing changed: one fetch (the first pages, compared with the cache), no more.
    store = await _next_generation(depot, cache, head)
    assert store.reused_cache
    assert depot.kinds() == ["SqliteGetPagesRequest"]
    await store.run(_insert("DELETE FROM notes WHERE id > 10"))  # fenced on the kept head
    await store.flush()
    assert depot.commit_requests()[0].expected_head_txid == head
    head = store.keep()
    assert head == depot.head_txid
    assert cache.read_bytes() == depot.path.read_bytes()
    assert len(_dump(cache)["notes"]) == 10

    # Another writer committed since: the engine's head moved on, everything is fetched again.
    other = apsw.Connection(str(depot.path))
    other.execute("INSERT INTO notes (body) VALUES (x'00')")
    other.close()
    depot.head_txid = head + 1
    store = await _next_generation(depot, cache, head)
    assert not store.reused_cache
    rows = await store.run(lambda conn: conn.execute("SELECT count(*) FROM notes").fetchall())
    assert rows == [(11,)]
    head = store.keep()
    assert head == depot.head_txid

    # Same head, but the cache's first pages differ from the engine's (not ours any more):
    # fetched again too.
    data = bytearray(cache.read_bytes())
    data[PAGE_SIZE + 100 : PAGE_SIZE + 108] = b"\xff" * 8
    cache.write_bytes(data)
    store = await _next_generation(depot, cache, head)
    assert not store.reused_cache
    store.delete()

    # No file left (removed meanwhile): fetched.
    store = await _next_generation(depot, cache, head)
    assert not store.reused_cache
    store.delete()


async def test_a_cache_is_not_kept_unless_the_engine_has_all_of_it(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    store = await _open(depot, cache)
    await store.flush()

    # A commit not acknowledged yet.
    depot.hold_commits = asyncio.Event()
    store.conn.execute("CREATE TABLE t (x)")
    await _ticks()
    assert store.keep() is None
    assert not cache.exists()
    depot.hold_commits.set()
    await _ticks()

    # A failed store.
    depot.hold_commits = None
    depot.generation = 2
    store = await _open(depot, cache)
    depot.fail_next = lambda request: _error("head_fence_mismatch", "another writer")
    store.conn.execute("CREATE TABLE u (x)")
    with pytest.raises(errors.RivetError):
        await store.flush()
    assert store.keep() is None
    assert not cache.exists()

    # A transaction left open that wrote pages early (spilled): the rollback at close puts
    # them back, but the cache is not trusted.
    depot.generation = 3
    store = await _open(depot, cache)
    store.conn.execute("BEGIN")
    for _ in range(800):  # ~3 MB, more than the page cache holds
        store.conn.execute("INSERT INTO t VALUES (?)", (os.urandom(4000),))
    assert store.keep() is None
    assert not cache.exists()

    # Without early writes the open transaction leaves the cache as the engine has it.
    depot.generation = 4
    store = await _open(depot, cache)
    store.conn.execute("BEGIN")
    store.conn.execute("INSERT INTO t VALUES (1)")
    assert store.keep() == depot.head_txid
    assert cache.read_bytes() == depot.path.read_bytes()


async def _notes_then_tail(depot: PageDepot, cache: Path) -> int:
    """A database of ~1,000 pages: the internal tables first, then ``notes`` (100 rows of ~3 KB
    and 20 of 10 KB, on overflow pages), then ``tail`` (1,500 rows of ~2 KB) up to the end;
    stored on the depot only. Its size in pages."""
    store = await _open(depot, cache)
    store.initialize(cbor_count(7))

    def fill(conn: apsw.Connection) -> None:
        with conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body BLOB)")
            for i in range(120):
                size = 10_000 if i % 6 == 0 else 3000
                conn.execute("INSERT INTO notes (body) VALUES (?)", (bytes([i]) * size,))
            conn.execute("CREATE TABLE tail (id INTEGER PRIMARY KEY, body BLOB)")
            for _ in range(1500):
                conn.execute("INSERT INTO tail (body) VALUES (?)", (os.urandom(2000),))

    await store.run(fill)
    await store.flush()
    store.delete()
    return depot.size_pages


async def _lazy_generation(depot: PageDepot, cache: Path) -> DepotStore:
    """The next generation, opened lazily (above 128 pages) with the reads of the database's
    last page held: the loader cannot finish until ``depot.reads_released`` is set."""
    depot.generation += 1
    depot.requests.clear()
    depot.hold_reads_of = depot.size_pages
    store = await _open(depot, cache, lazy_from_pages=128)
    assert store.loading
    return store


def _notes_body(i: int) -> bytes:
    return bytes([i]) * (10_000 if i % 6 == 0 else 3000)


async def test_a_big_database_opens_before_the_rest_is_local(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    size = await _notes_then_tail(depot, cache)
    assert size > 900

    store = await _lazy_generation(depot, cache)
    # Opened on the first 128 pages (the internal tables, the schema): no other request
    # waited for, and the state reads without a fetch.
    (first, *rest) = depot.requests
    assert first.pgnos == list(range(1, 129))
    assert all(isinstance(r, p.SqliteGetPagesRequest) for r in rest)
    assert store.load() == (True, None, cbor_count(7), 0)
    store.save_state(cbor_count(8), 1)

    # A statement reading pages not local yet fails, names them, and once they are loaded
    # runs again (here by hand; c.db does it itself).
    rows = None
    for _ in range(50):
        try:
            rows = store.conn.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
            break
        except apsw.IOError:
            missed = store.take_missed()
            assert missed and all(pgno > 128 for pgno in missed)
            await store.load_pages(missed)
    assert rows == [(i + 1, _notes_body(i)) for i in range(120)]
    assert store.loading and not depot.reads_released.is_set()

    # Writing while the rest loads: the loader never puts the engine's older copy of a page
    # over one written here.
    def change(conn: apsw.Connection) -> None:
        with conn:
            conn.execute("DELETE FROM notes WHERE id % 2 = 0")
            conn.execute("INSERT INTO notes (body) VALUES (?)", (b"new" * 1000,))

    for _ in range(50):
        try:
            await store.run(change)
            break
        except apsw.IOError:
            await store.load_pages(store.take_missed())
    assert store.keep() is None  # (not loaded: the cache cannot be kept) ...
    store = await _lazy_generation(depot, cache)  # ... so this one fetches again
    depot.reads_released.set()
    await store.load_pages()
    assert not store.loading
    await store.flush()
    assert cache.read_bytes() == depot.path.read_bytes()
    content = _dump(depot.path)
    assert [row[0] for row in content["notes"]] == [*range(1, 121, 2), 120]  # (max id + 1)
    assert len(content["tail"]) == 1500
    assert content["_rivet_actor_state"] == [(1, cbor_count(8))]
    head = store.keep()  # loaded and settled: kept
    assert head == depot.head_txid


async def test_a_lazy_open_walks_the_internal_tables_wherever_they_are(tmp_path: Path) -> None:
    """The runtime's own SQL is never run again: every page of the internal tables (a state on
    overflow pages, a WITHOUT ROWID table of large rows) and the freelist's trunk must be
    local when the open returns, even far past the first 128 pages."""
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    store = await _open(depot, cache)
    store.initialize(cbor_count(1))
    state = os.urandom(200_000)

    def fill(conn: apsw.Connection) -> None:
        with conn:
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body BLOB)")
            for _ in range(300):
                conn.execute("INSERT INTO notes (body) VALUES (?)", (os.urandom(3000),))
        store.save_state(state, 1)
        with conn:
            for i in range(400):
                conn.execute(
                    "INSERT INTO _rivet_user_kv (key, value) VALUES (?, ?)",
                    (b"k%04d" % i, os.urandom(1500)),
                )
        with conn:  # ~150 pages to the freelist, its trunk past the first fetch
            conn.execute("DELETE FROM notes WHERE id > 150")

    await store.run(fill)
    await store.flush()
    store.delete()
    (trunk,) = struct.unpack(">I", depot.path.read_bytes()[32:36])
    assert trunk > 128
    kv = _dump(depot.path)["_rivet_user_kv"]

    depot.generation += 1
    depot.requests.clear()
    store = await _open(depot, cache, lazy_from_pages=128)
    assert len(depot.requests) > 1  # the walk fetched pages past the first 128
    # (Synchronous from here: the loader has not fetched anything yet.)
    assert store.load() == (True, None, state, 0)
    assert store.conn.execute("SELECT key, value FROM _rivet_user_kv ORDER BY key").fetchall() == kv
    with store.conn:  # pages taken from the freelist
        for i in range(50):
            store.conn.execute(
                "INSERT INTO _rivet_user_kv (key, value) VALUES (?, ?)", (b"n%04d" % i, b"v" * 3000)
            )
    assert store.loading and not store.take_missed()
    await store.load_pages()
    await store.flush()
    assert cache.read_bytes() == depot.path.read_bytes()
    assert len(_dump(depot.path)["_rivet_user_kv"]) == 450
    store.delete()


async def test_sql_of_a_loading_database_runs_again_once_its_pages_are_loaded(
    tmp_path: Path,
) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    await _notes_then_tail(depot, cache)
    store = await _lazy_generation(depot, cache)
    db = ActorDb(store)

    rows = await db.execute("SELECT count(*) AS n, sum(length(body)) AS size FROM notes")
    assert rows == [{"n": 120, "size": sum(len(_notes_body(i)) for i in range(120))}]
    assert store.loading
    # A string of statements goes on from the one that failed (the third: the first two
    # write pages new to the file), so those before it ran once.
    before = len(depot.requests)
    rows = await db.execute(
        "CREATE TABLE marks (n INTEGER); INSERT INTO marks VALUES (1); "
        "SELECT count(*) AS n FROM tail WHERE id < 400; SELECT count(*) AS m FROM marks"
    )
    assert rows == [{"m": 1}]
    assert len(depot.requests) > before  # (the third statement did wait for pages)

    # A transaction waits for the whole database (a miss inside would roll it back).
    entered = asyncio.Event()

    async def transfer() -> None:
        async with db.transaction() as tx:
            entered.set()
            await tx.execute("UPDATE tail SET body = 'y' WHERE id = 300")

    task = asyncio.create_task(transfer())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not entered.is_set() and store.loading
    depot.reads_released.set()
    await task
    assert not store.loading
    assert (await db.execute("SELECT body FROM tail WHERE id = 300")) == [{"body": "y"}]
    await store.flush()
    assert cache.read_bytes() == depot.path.read_bytes()
    store.delete()


async def test_a_migration_reading_a_loading_database_runs_again(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    await _notes_then_tail(depot, cache)
    store = await _lazy_generation(depot, cache)
    db = ActorDb(store)
    runs: list[str] = []

    async def on_migrate(c: object, is_new: bool) -> None:
        await db.execute("CREATE TABLE IF NOT EXISTS marks (n INTEGER)")
        await db.execute("INSERT INTO marks VALUES (1)")
        try:  # (a hook swallowing the error does not commit half a migration)
            rows = await db.execute("SELECT count(*) AS n FROM tail")
        except errors.RivetError as exc:
            runs.append(exc.code)
            depot.reads_released.set()
            with pytest.raises(errors.RivetError):
                await db.execute("INSERT INTO marks VALUES (2)")
            return
        runs.append(f"tail {rows[0]['n']}")

    await migrate(None, on_migrate, db=db, is_new=False, timeout=30)
    assert runs == ["pages_not_loaded", "tail 1500"]
    assert (await db.execute("SELECT n FROM marks")) == [{"n": 1}]
    store.delete()


async def test_a_failed_load_fails_the_store(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    await _notes_then_tail(depot, cache)
    failures: list[errors.RivetError] = []
    depot.generation += 1
    depot.hold_reads_of = depot.size_pages
    store = await DepotStore.open(
        depot, actor_id=ACTOR_ID, generation=depot.generation, cache_path=cache, input=None,
        lazy_from_pages=128, on_failure=failures.append,
    )
    depot.generation += 1  # another generation took the actor: the held read is refused
    depot.reads_released.set()
    with pytest.raises(errors.RivetError) as caught:
        await store.load_pages()
    assert caught.value.code == "open_failed"  # (the engine's refusal, as for any fetch)
    assert [f.code for f in failures] == ["open_failed"]
    assert store.failure is not None
    assert store.keep() is None and not cache.exists()


async def test_an_evicted_store_reopens_its_cache(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    cache = tmp_path / "a.db"
    store = await _open(depot, cache)
    await store.run(_insert("CREATE TABLE t (x)"))
    store.close()  # what the StorePool does to the least recently used store
    assert not store.is_open
    await store.run(_insert("INSERT INTO t VALUES (42)"))
    assert store.is_open
    assert _dump(depot.path)["t"] == [(42,)]
    with pytest.raises(apsw.CantOpenError):  # only its store opens a cache through the VFS
        store.close()
        apsw.Connection(str(cache), vfs="rivetkit-depot")
    store.delete()
    assert not cache.exists()
    with pytest.raises(TypeError):
        DepotStore.create(cache, input=None)


@pytest.mark.parametrize("how", ["error", "unavailable"])
async def test_a_failed_commit_fails_waiters_and_the_store(tmp_path: Path, how: str) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    reported: list[errors.RivetError] = []
    store = await DepotStore.open(
        depot,
        actor_id=ACTOR_ID,
        generation=1,
        cache_path=tmp_path / "a.db",
        input=None,
        on_failure=reported.append,
    )
    await store.run(_insert("CREATE TABLE t (x)"))
    acked = depot.path.read_bytes()

    def fail(request: Any) -> Any:
        if how == "unavailable":
            raise DepotUnavailable("the envoy connection was lost during the request")
        return _error("quota_exceeded", "Not enough space left in Depot.")

    depot.fail_next = fail
    depot.hold_commits = asyncio.Event()
    first = asyncio.ensure_future(store.run(_insert("INSERT INTO t VALUES (1)")))
    await _ticks()
    second = asyncio.ensure_future(store.run(_insert("INSERT INTO t VALUES (2)")))
    await _ticks()
    waiter = store.durable()
    assert waiter is not None and not first.done() and not second.done()
    depot.hold_commits.set()
    results = await asyncio.gather(first, second, waiter, return_exceptions=True)
    code = "depot_unavailable" if how == "unavailable" else "commit_rejected"
    for result in results:
        assert isinstance(result, errors.RivetError)
        assert result.full_code == f"sqlite.{code}"
    assert store.failure is not None and store.failure.code == code
    assert [e.code for e in reported] == [code]  # the host hears of it once
    if how == "error":
        assert store.failure.metadata["depot_code"] == "quota_exceeded"
    # The schema merged with the CREATE, then the failed one; the queued second is never sent.
    assert len(depot.commit_requests()) == 2

    # Refuses all further work, with the same code.
    for attempt in (
        store.run(lambda conn: conn.execute("SELECT 1").fetchall()),
        store.flush(),
    ):
        with pytest.raises(errors.RivetError) as again:
            await attempt
        assert again.value.code == code
    with pytest.raises(errors.RivetError):
        _ = store.conn
    durable = store.durable()
    assert durable is not None
    with pytest.raises(errors.RivetError):
        await durable
    store.close()

    # The depot kept the last acknowledged state; the next generation starts from it.
    assert depot.path.read_bytes() == acked
    depot.generation = 2
    again = await _open(depot, tmp_path / "a.db")
    assert await again.run(lambda conn: conn.execute("SELECT count(*) FROM t").fetchall()) == [(0,)]
    again.close()


async def test_another_writer_fences_the_store_out(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db")
    store = await _open(depot, tmp_path / "a.db")
    await store.flush()
    depot.head_txid = (depot.head_txid or 0) + 1  # a commit this store has not seen
    with pytest.raises(errors.RivetError) as caught:
        await store.run(_insert("CREATE TABLE t (x)"))
    assert caught.value.code == "commit_rejected"
    assert caught.value.metadata["depot_code"] == "head_fence_mismatch"
    store.close()


async def test_open_refusals_are_clear_errors(tmp_path: Path) -> None:
    depot = PageDepot(tmp_path / "depot.db", generation=2)
    with pytest.raises(errors.RivetError) as caught:
        await DepotStore.open(
            depot, actor_id=ACTOR_ID, generation=1, cache_path=tmp_path / "a.db", input=None
        )
    assert caught.value.full_code == "sqlite.open_failed"
    assert not (tmp_path / "a.db").exists()

    def lost(request: Any) -> Any:
        raise DepotUnavailable("the envoy connection is closed")

    depot.fail_next = lost
    with pytest.raises(errors.RivetError) as caught:
        await _open(depot, tmp_path / "a.db")
    assert caught.value.full_code == "sqlite.depot_unavailable"

    # A database with another page size is refused, not misread.
    other = tmp_path / "other.db"
    conn = apsw.Connection(str(other))
    conn.execute("PRAGMA page_size=8192; CREATE TABLE t (x)")
    conn.close()
    depot.path.write_bytes(other.read_bytes()[:PAGE_SIZE] * 4)
    depot.head_txid, depot.size_pages = 5, 4
    with pytest.raises(errors.RivetError) as caught:
        await _open(depot, tmp_path / "a.db")
    assert caught.value.full_code == "sqlite.unsupported_database"


async def test_actor_instance_answers_after_the_engine_acknowledged(tmp_path: Path) -> None:
    counter = actor("counter", state={"count": 0})

    @counter.action
    def increment(c: Any) -> int:
        c.state["count"] += 1
        return int(c.state["count"])

    counter.freeze()  # as rivetkit.setup() does
    depot = PageDepot(tmp_path / "depot.db")
    store = await _open(depot, tmp_path / "a.db")
    instance = ActorInstance(
        counter,
        actor_id=ACTOR_ID,
        key=("k",),
        generation=1,
        store=store,
        codec=counter.state_codec,
    )
    await instance.start()
    assert store.durable() is None  # created, initialized and acknowledged
    assert _dump(depot.path)["_rivet_actor"] == [(1, 1, None)]
    assert _dump(depot.path)["_rivet_actor_state"] == [(1, b"\xa1\x65count\x00")]

    depot.hold_commits = asyncio.Event()
    call = asyncio.ensure_future(instance.call_action("increment", [], None))
    await _ticks()
    assert not call.done()
    depot.hold_commits.set()
    assert await call == 1
    assert _dump(depot.path)["_rivet_actor_state"][0][1] == b"\xa1\x65count\x01"

    def fail(request: Any) -> Any:
        return _error("head_fence_mismatch", "another writer")

    depot.fail_next = fail
    with pytest.raises(errors.RivetError) as caught:
        await instance.call_action("increment", [], None)
    assert caught.value.code == "commit_rejected"
    with pytest.raises(errors.RivetError):
        await instance.stop()
    assert not store.is_open
