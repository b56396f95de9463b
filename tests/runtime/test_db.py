"""``c.db``: statements, bindings, errors, protection of the ``_rivet_*`` tables, transactions
(commit, rollback, FIFO, deadline, queue limit) and ``on_migrate``; directly on a real
``ActorStore`` and end to end through the client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

import rivetkit
from rivetkit import ActionContext, ActorContext
from rivetkit._runtime.db import ActorDb, migrate
from rivetkit._runtime.kv import ActorKv
from rivetkit._runtime.storage import MAX_SQL_WAITERS, ActorStore
from rivetkit.client import Client
from rivetkit.errors import ActorError, RivetError
from rivetkit.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ActorStore]:
    s = ActorStore.create(tmp_path / "actor.db", input=None)
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(store: ActorStore, clock: FakeClock) -> ActorDb:
    return ActorDb(store, clock)


async def expect_error(group: str, code: str, call: Awaitable[Any]) -> RivetError:
    with pytest.raises(RivetError) as info:
        await call
    assert (info.value.group, info.value.code) == (group, code), info.value
    return info.value


def waiting(gate: Any) -> int:
    """How many operations wait for the database gate."""
    return len(gate._waiters or ())


async def until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate()`` holds (work arriving over loopback sockets)."""
    for _ in range(2000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


# -- statements ----------------------------------------------------------------------------


async def test_rows_are_dicts_and_statements_without_rows_return_empty(db: ActorDb) -> None:
    assert await db.execute("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT, done)") == []
    assert await db.execute("INSERT INTO todos (title, done) VALUES (?, ?)", "write", 0) == []
    assert await db.execute(
        "INSERT INTO todos (title, done) VALUES (:title, :done) RETURNING id", title="ship", done=1
    ) == [{"id": 2}]
    assert await db.execute("SELECT id, title, done FROM todos ORDER BY id") == [
        {"id": 1, "title": "write", "done": 0},
        {"id": 2, "title": "ship", "done": 1},
    ]
    assert await db.execute("SELECT * FROM todos WHERE id > ?", 5) == []
    assert await db.execute("UPDATE todos SET done = 1") == []
    # Duplicate column names: the last one wins, as RivetKit's row objects.
    assert await db.execute("SELECT 1 AS x, 2 AS x") == [{"x": 2}]


async def test_value_types_round_trip(db: ActorDb) -> None:
    await db.execute("CREATE TABLE v (a, b, c, d, e, f, g)")
    await db.execute(
        "INSERT INTO v VALUES (?, ?, ?, ?, ?, ?, ?)",
        None,
        2**63 - 1,
        1.5,
        "text ☃",
        b"\x00\xff",
        True,
        bytearray(b"ba"),
    )
    assert await db.execute("SELECT * FROM v") == [
        {"a": None, "b": 2**63 - 1, "c": 1.5, "d": "text ☃", "e": b"\x00\xff", "f": 1, "g": b"ba"}
    ]


async def test_named_bindings_as_one_mapping_rivetkit_style(db: ActorDb) -> None:
    assert await db.execute("SELECT :a AS a, @b AS b, $c AS c", {"a": 1, "b": "x", "c": None}) == [
        {"a": 1, "b": "x", "c": None}
    ]


async def test_bad_bindings_get_invalid_bind_parameter(db: ActorDb) -> None:
    for call in [
        db.execute("SELECT ?, :a", 1, a=2),
        db.execute("SELECT ?", [1, 2]),
        db.execute("SELECT ?", {1, 2}),
        db.execute("SELECT ?", 2**63),
        db.execute("SELECT :a", a=object()),
        db.execute("SELECT :a, :b", a=1),
        db.execute("SELECT ?, ?", 1),
    ]:
        err = await expect_error("sqlite", "invalid_bind_parameter", call)
        assert err.public and err.status == 400
    await expect_error("sqlite", "invalid_argument", db.execute(b"SELECT 1"))  # type: ignore[arg-type]


async def test_multiple_statements_follow_rivetkit(db: ActorDb) -> None:
    # Without arguments: all run; the rows of the last statement with result columns return.
    assert await db.execute(
        "CREATE TABLE m (x); INSERT INTO m VALUES (1); SELECT x FROM m; INSERT INTO m VALUES (2);"
    ) == [{"x": 1}]
    assert await db.execute("SELECT x FROM m; SELECT x FROM m WHERE x > 5") == []
    # With arguments: one statement only, and nothing runs.
    await expect_error(
        "sqlite", "invalid_argument", db.execute("INSERT INTO m VALUES (?); DELETE FROM m", 3)
    )
    assert await db.execute("SELECT count(*) AS n FROM m") == [{"n": 2}]
    await expect_error(
        "sqlite", "invalid_argument", db.execute("SELECT ?; /* hidden */ DELETE FROM m", 3)
    )
    assert await db.execute("SELECT count(*) AS n FROM m") == [{"n": 2}]
    # Leading and trailing separators and comments are not statements.
    assert await db.execute("-- lead\nSELECT ? AS v; ; -- done\n/* end */", 7) == [{"v": 7}]


async def test_sql_errors_are_masked_query_failed_with_the_sqlite_message(db: ActorDb) -> None:
    await db.execute("CREATE TABLE u (email TEXT UNIQUE)")
    await db.execute("INSERT INTO u VALUES ('a@x')")
    cases = [
        ("SELEC 1", "syntax error", "SQLITE_ERROR", apsw.SQLError),
        ("SELECT * FROM missing", "no such table: missing", "SQLITE_ERROR", apsw.SQLError),
        (
            "INSERT INTO u VALUES ('a@x')",
            "UNIQUE constraint failed: u.email",
            "SQLITE_CONSTRAINT_UNIQUE",
            apsw.ConstraintError,
        ),
    ]
    for sql, text, sqlite_code, cause in cases:
        err = await expect_error("sqlite", "query_failed", db.execute(sql))
        assert text in err.message
        assert err.metadata == {"sqlite_code": sqlite_code}
        assert not err.public  # RivetKit sends statement errors as internal errors
        assert isinstance(err.__cause__, cause)


# -- the _rivet_* tables -------------------------------------------------------------------


async def test_internal_tables_are_out_of_reach(db: ActorDb, store: ActorStore) -> None:
    kv = ActorKv(store)
    await kv.put("secret", "v")
    await kv.get("secret")  # the runtime's statement is now in apsw's statement cache
    before = list(store.conn.execute("SELECT * FROM _rivet_actor"))
    await db.execute("CREATE TABLE mine (a)")
    refused = [
        "SELECT key, value FROM _rivet_user_kv WHERE key IN (?)",  # kv's own SQL text
        "SELECT * FROM _rivet_actor",
        "SELECT count(*) FROM _RIVET_USER_KV",
        "INSERT INTO _rivet_user_kv VALUES (x'0461', x'00')",
        "UPDATE _rivet_actor SET has_initialized = 0",
        "DELETE FROM _rivet_user_kv",
        "DROP TABLE _rivet_queue",
        "ALTER TABLE _rivet_queue ADD COLUMN x",
        "CREATE INDEX mine_idx ON _rivet_queue (name)",
        "DROP INDEX _rivet_queue_name_id",
        "CREATE TRIGGER t AFTER INSERT ON _rivet_queue BEGIN SELECT 1; END",
        "CREATE TABLE _rivet_mine (a)",
        "CREATE TEMP TABLE _rivet_tmp (a)",
        "CREATE VIEW _rivet_view AS SELECT 1",
        "INSERT INTO mine SELECT state FROM _rivet_actor_state",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA writable_schema = ON",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA locking_mode = NORMAL",
        "PRAGMA synchronous = OFF",
        "SAVEPOINT __rivet_on_migrate",
        "VACUUM",
        "VACUUM INTO 'copy.db'",
        "ALTER TABLE mine RENAME TO _rivet_queue2",
        'ALTER TABLE mine RENAME /* sneaky */ TO "_RIVET_x"',
        "CREATE TEMP TABLE shadow (id INTEGER PRIMARY KEY, state BLOB)",  # allowed, then:
        "ALTER TABLE temp.shadow RENAME TO _rivet_actor_state",  # would shadow the real one
    ]
    for sql in refused:
        if sql.startswith("CREATE TEMP TABLE shadow"):
            await db.execute(sql)
            continue
        args = (b"\x04secret",) if "?" in sql else ()
        err = await expect_error("sqlite", "not_authorized", db.execute(sql, *args))
        assert err.public and err.status == 400, sql
    # Views and triggers over internal tables can be created (SQLite authorises their bodies
    # when they are used) but never used.
    await db.execute("CREATE VIEW peek AS SELECT * FROM _rivet_user_kv")
    await expect_error("sqlite", "not_authorized", db.execute("SELECT * FROM peek"))
    await db.execute(
        "CREATE TRIGGER wipe AFTER INSERT ON mine BEGIN DELETE FROM _rivet_user_kv; END"
    )
    await expect_error("sqlite", "not_authorized", db.execute("INSERT INTO mine VALUES (1)"))
    # Reading pragmas and the schema is fine; the runtime's data is intact.
    assert await db.execute("PRAGMA journal_mode") == [{"journal_mode": "wal"}]
    assert await kv.get("secret") == "v"
    assert list(store.conn.execute("SELECT * FROM _rivet_actor")) == before
    assert list(store.conn.execute("SELECT count(*) FROM _rivet_queue")) == [(0,)]


async def test_manual_transaction_statements_log_one_warning(
    db: ActorDb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rivetkit.actor")
    await db.execute("CREATE TABLE t (a)")
    await db.execute("BEGIN")
    await db.execute("INSERT INTO t VALUES (1)")
    await db.execute("COMMIT")
    warnings = [r for r in caplog.records if "manual sqlite transaction" in r.getMessage()]
    assert len(warnings) == 1
    assert "c.db.transaction()" in warnings[0].getMessage()
    assert await db.execute("SELECT a FROM t") == [{"a": 1}]


async def test_manual_transaction_warning_can_be_turned_off(
    store: ActorStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "rivetkit.actor")
    db = ActorDb(store, warn_on_manual_transactions=False)
    await db.execute("BEGIN")
    await db.execute("ROLLBACK")
    assert not [r for r in caplog.records if "manual sqlite" in r.getMessage()]


# -- transactions --------------------------------------------------------------------------


async def test_transaction_commits_and_rolls_back(db: ActorDb, store: ActorStore) -> None:
    kv = ActorKv(store)
    await db.execute("CREATE TABLE t (a)")
    async with db.transaction() as tx:
        assert await tx.execute("INSERT INTO t VALUES (?) RETURNING a", 1) == [{"a": 1}]
        await db.execute("INSERT INTO t VALUES (2)")  # same task: joins the transaction
        await kv.put("k", "committed")  # KV joins too
        assert store.conn.in_transaction
    assert not store.conn.in_transaction
    assert await db.execute("SELECT a FROM t ORDER BY a") == [{"a": 1}, {"a": 2}]

    with pytest.raises(ValueError, match="boom"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (3)")
            await db.execute("INSERT INTO t VALUES (4)")
            await kv.put("k", "rolled back")
            raise ValueError("boom")
    assert await db.execute("SELECT a FROM t ORDER BY a") == [{"a": 1}, {"a": 2}]
    assert await kv.get("k") == "committed"
    err = await expect_error("sqlite", "transaction_terminal", tx.execute("SELECT 1"))
    assert err.metadata == {"state": "rolled back"}


async def test_failed_statement_in_transaction_rolls_back_when_it_propagates(db: ActorDb) -> None:
    await db.execute("CREATE TABLE t (a UNIQUE)")
    with pytest.raises(RivetError) as info:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            await tx.execute("INSERT INTO t VALUES (1)")
    assert info.value.code == "query_failed"
    assert await db.execute("SELECT * FROM t") == []


async def test_transaction_control_inside_a_transaction_is_refused(db: ActorDb) -> None:
    await db.execute("CREATE TABLE t (a)")
    for sql in ["COMMIT", "ROLLBACK", "BEGIN", "END"]:
        with pytest.raises(RivetError) as info:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t VALUES (1)")
                await tx.execute(sql)
        assert info.value.code == "not_authorized", sql
    async with db.transaction() as tx:  # user savepoints nest fine
        await tx.execute("SAVEPOINT inner_work")
        await tx.execute("INSERT INTO t VALUES (2)")
        await tx.execute("ROLLBACK TO inner_work")
        await tx.execute("RELEASE inner_work")
        await tx.execute("INSERT INTO t VALUES (3)")
    assert await db.execute("SELECT a FROM t") == [{"a": 3}]


async def test_nested_transaction_in_the_same_task_is_an_error_not_a_deadlock(db: ActorDb) -> None:
    async with db.transaction():
        await expect_error("sqlite", "transaction_nested", db.transaction().__aenter__())
    tx = db.transaction()
    async with tx:
        pass
    await expect_error("sqlite", "transaction_terminal", tx.__aenter__())


async def test_invalid_timeouts(db: ActorDb) -> None:
    for bad in [0, -1, float("inf"), float("nan"), "60", True]:
        with pytest.raises(RivetError) as info:
            db.transaction(timeout=bad)  # type: ignore[arg-type]
        assert info.value.code == "transaction_invalid_argument"


async def test_transactions_and_statements_are_fifo_and_do_not_interleave(
    db: ActorDb, store: ActorStore
) -> None:
    await db.execute("CREATE TABLE log (who TEXT, step INTEGER)")
    release = {name: asyncio.Event() for name in "AB"}
    order: list[str] = []

    async def tx_worker(name: str) -> None:
        async with db.transaction() as tx:
            order.append(f"{name} begin")
            await tx.execute("INSERT INTO log VALUES (?, 1)", name)
            await release[name].wait()
            await tx.execute("INSERT INTO log VALUES (?, 2)", name)
        order.append(f"{name} commit")

    async def statement(name: str) -> None:
        await db.execute("INSERT INTO log VALUES (?, 0)", name)
        order.append(f"{name} done")

    a = asyncio.create_task(tx_worker("A"))
    await until(lambda: order == ["A begin"])
    s1 = asyncio.create_task(statement("s1"))
    b = asyncio.create_task(tx_worker("B"))
    s2 = asyncio.create_task(statement("s2"))
    await until(lambda: waiting(store.gate) == 3)
    assert order == ["A begin"]  # everyone else waits for A
    release["B"].set()  # B must still wait its turn
    release["A"].set()
    await asyncio.gather(a, s1, b, s2)
    assert order == ["A begin", "A commit", "s1 done", "B begin", "B commit", "s2 done"]
    rows = await db.execute("SELECT who, step FROM log")
    assert [(r["who"], r["step"]) for r in rows] == [
        ("A", 1),
        ("A", 2),
        ("s1", 0),
        ("B", 1),
        ("B", 2),
        ("s2", 0),
    ]


async def test_tx_execute_works_from_other_tasks_of_the_block(db: ActorDb) -> None:
    await db.execute("CREATE TABLE t (a)")
    async with db.transaction() as tx:
        await asyncio.gather(*(tx.execute("INSERT INTO t VALUES (?)", i) for i in range(3)))
    assert await db.execute("SELECT count(*) AS n FROM t") == [{"n": 3}]


async def test_transaction_deadline_rolls_back_and_frees_the_database(
    db: ActorDb, store: ActorStore, clock: FakeClock
) -> None:
    await db.execute("CREATE TABLE t (a)")
    never = asyncio.Event()
    reached: list[str] = []

    async def stuck() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            await never.wait()
            reached.append("after wait")

    task = asyncio.create_task(stuck())
    waiting = asyncio.create_task(db.execute("SELECT count(*) AS n FROM t"))
    await clock.advance(seconds=59.999)
    assert not task.done() and not waiting.done()
    await clock.advance(seconds=0.001)
    err = await expect_error("sqlite", "transaction_expired", task)
    assert err.metadata == {"timeout_ms": 60_000}
    assert err.public
    assert reached == []
    assert await waiting == [{"n": 0}]  # queued work runs after the rollback
    assert not store.conn.in_transaction and not store.gate.busy


async def test_custom_deadline_and_swallowed_cancellation(db: ActorDb, clock: FakeClock) -> None:
    await db.execute("CREATE TABLE t (a)")

    async def stubborn() -> None:
        async with db.transaction(timeout=5) as tx:
            await tx.execute("INSERT INTO t VALUES (1)")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                pass  # the deadline still wins: nothing is committed
            await tx.execute("INSERT INTO t VALUES (2)")

    task = asyncio.create_task(stubborn())
    await clock.advance(seconds=5)
    err = await expect_error("sqlite", "transaction_expired", task)
    assert err.metadata == {"timeout_ms": 5000}
    assert await db.execute("SELECT * FROM t") == []


async def test_queue_is_full_at_129_waiters(db: ActorDb, store: ActorStore) -> None:
    assert MAX_SQL_WAITERS == 128
    await db.execute("CREATE TABLE t (a)")
    release = asyncio.Event()

    async def holder() -> None:
        async with db.transaction():
            await release.wait()

    hold = asyncio.create_task(holder())
    await until(lambda: store.conn.in_transaction)
    waiters = [
        asyncio.create_task(db.execute("INSERT INTO t VALUES (?)", i))
        for i in range(MAX_SQL_WAITERS)
    ]
    await until(lambda: waiting(store.gate) == MAX_SQL_WAITERS)
    err = await expect_error("sqlite", "transaction_queue_full", db.execute("SELECT 1"))
    assert err.public
    await expect_error("sqlite", "transaction_queue_full", db.transaction().__aenter__())
    await expect_error("sqlite", "transaction_queue_full", ActorKv(store).put("k", "v"))
    release.set()
    await asyncio.gather(hold, *waiters)
    assert await db.execute("SELECT count(*) AS n FROM t") == [{"n": MAX_SQL_WAITERS}]
    assert await ActorKv(store).get("k") is None


# -- migrations ----------------------------------------------------------------------------


async def test_migrate_commits_everything_the_hook_did(db: ActorDb, store: ActorStore) -> None:
    kv = ActorKv(store)
    seen: list[Any] = []

    async def on_migrate(c: Any, is_new: bool) -> None:
        seen.append((c, is_new))
        await db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        await db.execute("INSERT INTO items (name) VALUES ('seed')")
        await kv.put("schema", "1")

    await migrate("ctx", on_migrate, db=db, is_new=True, timeout=30)
    assert seen == [("ctx", True)]
    assert await db.execute("SELECT name FROM items") == [{"name": "seed"}]
    assert await kv.get("schema") == "1"
    assert not store.conn.in_transaction and not store.gate.busy


async def test_migrate_accepts_a_sync_hook_and_none(db: ActorDb) -> None:
    calls: list[bool] = []
    await migrate(None, lambda c, is_new: calls.append(is_new), db=db, is_new=False, timeout=30)
    await migrate(None, None, db=db, is_new=True, timeout=30)
    assert calls == [False]


async def test_failing_migration_leaves_nothing(db: ActorDb, store: ActorStore) -> None:
    kv = ActorKv(store)

    async def on_migrate(c: Any, is_new: bool) -> None:
        await db.execute("CREATE TABLE items (a)")
        await db.execute("INSERT INTO items VALUES (1)")
        await kv.put("half", "done")
        raise RuntimeError("migration bug")

    with pytest.raises(RuntimeError, match="migration bug"):
        await migrate(None, on_migrate, db=db, is_new=True, timeout=30)
    assert await db.execute("SELECT name FROM sqlite_master WHERE name = 'items'") == []
    assert await kv.get("half") is None
    assert not store.conn.in_transaction and not store.gate.busy


async def test_migration_statements_that_fail_roll_back_the_savepoint(db: ActorDb) -> None:
    async def on_migrate(c: Any, is_new: bool) -> None:
        await db.execute("CREATE TABLE a (x)")
        await db.execute("CREATE TABLE a (x)")

    err = await expect_error(
        "sqlite", "query_failed", migrate(None, on_migrate, db=db, is_new=True, timeout=30)
    )
    assert "already exists" in err.message
    assert await db.execute("SELECT name FROM sqlite_master WHERE name = 'a'") == []


async def test_migration_timeout_rolls_back(
    db: ActorDb, store: ActorStore, clock: FakeClock
) -> None:
    async def on_migrate(c: Any, is_new: bool) -> None:
        await db.execute("CREATE TABLE slow (a)")
        await asyncio.Event().wait()

    task = asyncio.create_task(migrate(None, on_migrate, db=db, is_new=True, timeout=30))
    other = asyncio.create_task(db.execute("SELECT count(*) AS n FROM sqlite_master"))
    await clock.advance(seconds=29.9)
    assert not task.done() and not other.done()  # other work waits for the migration
    await clock.advance(seconds=0.1)
    err = await expect_error("actor", "callback_timed_out", task)
    assert err.metadata == {"callback_name": "on_migrate", "duration_ms": 30_000}
    await other
    assert await db.execute("SELECT name FROM sqlite_master WHERE name = 'slow'") == []
    assert not store.conn.in_transaction


async def test_migration_cannot_commit_or_open_a_transaction(db: ActorDb) -> None:
    async def commits(c: Any, is_new: bool) -> None:
        await db.execute("CREATE TABLE a (x)")
        await db.execute("COMMIT")

    await expect_error(
        "sqlite", "not_authorized", migrate(None, commits, db=db, is_new=True, timeout=30)
    )

    async def opens(c: Any, is_new: bool) -> None:
        async with db.transaction():
            pass

    await expect_error(
        "sqlite", "transaction_nested", migrate(None, opens, db=db, is_new=True, timeout=30)
    )
    assert await db.execute("SELECT name FROM sqlite_master WHERE name = 'a'") == []


# -- end to end through the client ---------------------------------------------------------


def db_actor(
    gates: dict[str, asyncio.Event] | None = None, **options: Any
) -> rivetkit.ActorDefinition:
    gates = gates if gates is not None else {}
    a = rivetkit.actor("dbActor", options=rivetkit.ActorOptions(**options) if options else None)

    @a.action
    async def sql(c: ActionContext, statement: str, *args: Any) -> list[dict[str, Any]]:
        return await c.db.execute(statement, *args)

    @a.action
    async def sql_named(c: ActionContext, statement: str, values: dict[str, Any]) -> Any:
        return await c.db.execute(statement, **values)

    @a.action
    async def error_of(c: ActionContext, statement: str) -> list[Any]:
        try:
            await c.db.execute(statement)
        except RivetError as e:
            return [e.group, e.code, e.metadata]
        return []

    @a.action
    async def logged_tx(c: ActionContext, who: str, fail: bool = False) -> None:
        async with c.db.transaction() as tx:
            await tx.execute("INSERT INTO log VALUES (?, 1)", who)
            await gates[who].wait()
            await c.db.execute("INSERT INTO log VALUES (?, 2)", who)
            if fail:
                raise rivetkit.UserError("failed on purpose", code="on_purpose")

    @a.action
    async def hold_forever(c: ActionContext) -> None:
        async with c.db.transaction() as tx:
            await tx.execute("INSERT INTO log VALUES ('held', 1)")
            await asyncio.Event().wait()

    return a


def store_of(served: Any, actor_id: str) -> ActorStore:
    store: ActorStore = served.registry.driver.awake[actor_id].store
    return store


async def test_execute_through_the_client(serve_registry: Callable[..., Any]) -> None:
    async with serve_registry(db_actor()) as served, Client(served.url) as client:
        h = client.get_or_create("dbActor", ["sql"])
        assert await h.sql("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)") == []
        assert await h.sql("INSERT INTO todos (title) VALUES (?) RETURNING id", "a") == [{"id": 1}]
        await h.sql_named("INSERT INTO todos (title) VALUES (:title)", {"title": "b"})
        assert await h.sql("SELECT id, title FROM todos ORDER BY id") == [
            {"id": 1, "title": "a"},
            {"id": 2, "title": "b"},
        ]
        assert await h.sql("SELECT ? AS raw", b"\x00\x01") == [{"raw": b"\x00\x01"}]


async def test_sql_errors_reach_the_actor_with_their_code_and_clients_masked(
    serve_registry: Callable[..., Any],
) -> None:
    async with serve_registry(db_actor()) as served, Client(served.url) as client:
        h = client.get_or_create("dbActor", ["errors"])
        assert await h.error_of("SELECT * FROM missing") == [
            "sqlite",
            "query_failed",
            {"sqlite_code": "SQLITE_ERROR"},
        ]
        with pytest.raises(ActorError) as info:
            await h.sql("SELECT * FROM missing")
        assert (info.value.group, info.value.code) == ("rivetkit", "internal_error")
        assert "missing" not in info.value.message
        # Public codes reach the client as they are.
        with pytest.raises(ActorError) as info:
            await h.sql("SELECT * FROM _rivet_actor_state")
        assert (info.value.group, info.value.code) == ("sqlite", "not_authorized")
        with pytest.raises(ActorError) as info:
            await h.sql("SELECT ?", 1, 2)
        assert (info.value.group, info.value.code) == ("sqlite", "invalid_bind_parameter")


async def test_sql_error_message_with_expose_errors(serve_registry: Callable[..., Any]) -> None:
    async with (
        serve_registry(db_actor(), expose_errors=True) as served,
        Client(served.url) as client,
    ):
        with pytest.raises(ActorError) as info:
            await client.get_or_create("dbActor", ["x"]).sql("INSERT INTO nope VALUES (1)")
        assert "no such table: nope" in info.value.message


async def test_concurrent_actions_run_transactions_in_order(
    serve_registry: Callable[..., Any],
) -> None:
    gates = {name: asyncio.Event() for name in ["A", "B", "C"]}
    async with serve_registry(db_actor(gates)) as served, Client(served.url) as client:
        h = client.get_or_create("dbActor", ["fifo"])
        await h.sql("CREATE TABLE log (who TEXT, step INTEGER)")
        actor_id = await h.resolve()
        gate = store_of(served, actor_id).gate
        first = asyncio.create_task(h.action("logged_tx", "A"))
        await until(lambda: gate._held)
        second = asyncio.create_task(h.action("logged_tx", "B", True))
        await until(lambda: waiting(gate) == 1)
        third = asyncio.create_task(h.action("logged_tx", "C"))
        await until(lambda: waiting(gate) == 2)
        plain = asyncio.create_task(h.action("sql", "INSERT INTO log VALUES ('plain', 0)"))
        await until(lambda: waiting(gate) == 3)
        for name in ["C", "B", "A"]:  # release in reverse: order is still arrival order
            gates[name].set()
        await first
        with pytest.raises(ActorError) as info:
            await second
        assert info.value.code == "on_purpose"
        await third
        await plain
        rows = await h.sql("SELECT who, step FROM log")
        assert [(r["who"], r["step"]) for r in rows] == [
            ("A", 1),
            ("A", 2),
            ("C", 1),
            ("C", 2),
            ("plain", 0),
        ]


async def test_transaction_deadline_through_the_client(serve_registry: Callable[..., Any]) -> None:
    clock = FakeClock()
    # The action timeout (60 s by default) runs on the same clock: give it more room.
    actor = db_actor(action_timeout=120)
    async with serve_registry(actor, clock=clock) as served, Client(served.url) as client:
        h = client.get_or_create("dbActor", ["deadline"])
        await h.sql("CREATE TABLE log (who TEXT, step INTEGER)")
        store = store_of(served, await h.resolve())
        call = asyncio.create_task(h.action("hold_forever"))
        await until(lambda: store.conn.in_transaction)
        await clock.advance(seconds=59)
        assert not call.done()
        await clock.advance(seconds=1)
        with pytest.raises(ActorError) as info:
            await call
        assert (info.value.group, info.value.code) == ("sqlite", "transaction_expired")
        assert await h.sql("SELECT * FROM log") == []


def migrating_actor(log: list[str], fail: list[bool]) -> rivetkit.ActorDefinition:
    a = rivetkit.actor("migrating", state={"n": 0})

    @a.on_migrate
    async def on_migrate(c: ActorContext, is_new: bool) -> None:
        log.append(f"on_migrate is_new={is_new}")
        await c.db.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
        await c.kv.put("migrated", "yes")
        if fail and fail[0]:
            await c.db.execute("CREATE TABLE half_done (a)")
            raise RuntimeError("migration failed")

    @a.on_create
    async def on_create(c: ActorContext, input: Any) -> None:
        log.append("on_create")
        await c.db.execute("INSERT INTO notes VALUES ('from on_create')")

    @a.on_wake
    def on_wake(c: ActorContext) -> None:
        log.append("on_wake")

    @a.action
    async def notes(c: ActionContext) -> list[Any]:
        rows = await c.db.execute("SELECT body FROM notes")
        return [r["body"] for r in rows]

    @a.action
    async def add(c: ActionContext, body: str) -> None:
        await c.db.execute("INSERT INTO notes VALUES (?)", body)

    @a.action
    async def tables(c: ActionContext) -> list[str]:
        rows = await c.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_rivet\\_%' "
            "ESCAPE '\\' ORDER BY name"
        )
        return [r["name"] for r in rows]

    return a


async def test_on_migrate_runs_first_with_is_new_and_data_survives_restart(
    serve_registry: Callable[..., Any], tmp_path: Path
) -> None:
    log: list[str] = []
    storage = tmp_path / "restart"
    async with (
        serve_registry(migrating_actor(log, []), storage_path=storage) as served,
        Client(served.url) as client,
    ):
        h = client.get_or_create("migrating", ["m"])
        await h.add("from an action")
        assert await h.notes() == ["from on_create", "from an action"]
    assert log == ["on_migrate is_new=True", "on_create", "on_wake"]
    log.clear()
    async with (
        serve_registry(migrating_actor(log, []), storage_path=storage) as served,
        Client(served.url) as client,
    ):
        h = client.get_or_create("migrating", ["m"])
        assert await h.notes() == ["from on_create", "from an action"]
        assert await h.tables() == ["notes"]
    assert log == ["on_migrate is_new=False", "on_wake"]


async def test_failing_on_migrate_fails_the_start_and_leaves_nothing(
    serve_registry: Callable[..., Any], tmp_path: Path
) -> None:
    log: list[str] = []
    fail = [False]
    storage = tmp_path / "restart"
    async with (
        serve_registry(migrating_actor(log, fail), storage_path=storage) as served,
        Client(served.url) as client,
    ):
        await client.get_or_create("migrating", ["m"]).add("kept")
    fail[0] = True
    async with (
        serve_registry(migrating_actor(log, fail), storage_path=storage) as served,
        Client(served.url) as client,
    ):
        with pytest.raises(ActorError):
            await client.get_or_create("migrating", ["m"]).notes()
    fail[0] = False
    async with (
        serve_registry(migrating_actor(log, fail), storage_path=storage) as served,
        Client(served.url) as client,
    ):
        h = client.get_or_create("migrating", ["m"])
        assert await h.tables() == ["notes"]  # no half_done from the failed run
        assert await h.notes() == ["from on_create", "kept"]
