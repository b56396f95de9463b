"""``c.db``: the actor's own SQLite database (user tables beside RivetKit's ``_rivet_*`` tables).

Ordering (RivetKit's transaction coordinator, rivetkit-core ``actor/sqlite/tx.rs``): a
transaction holds the actor's :class:`~.storage.SqlGate` from ``BEGIN`` to ``COMMIT``; every
other statement (user SQL, KV, the runtime's own writes through ``store.run``) waits behind it
in first-in first-out order, at most 128 waiting (``sqlite.transaction_queue_full``).

Joining: the task that opened a transaction (or runs ``on_migrate``) is remembered in a context
variable. Its ``c.db.execute`` and ``c.kv`` calls run inside that transaction instead of waiting
for the gate it holds (in RivetKit they would wait until the deadline fires). Other tasks wait,
as in RivetKit; inside the block use ``tx.execute`` from any task, e.g. under
``asyncio.gather``.

Protection: user SQL runs under a SQLite authorizer that keeps it off RivetKit's ``_rivet_*``
tables; see :mod:`.sql_guard`, which runs every user statement for this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import math
import re
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import apsw

from .. import errors
from .clock import REAL_CLOCK, Clock
from .sql_guard import SqlProgress, check_bindings, query_failed, run_user_sql, sqlite_error

if TYPE_CHECKING:
    from .storage import ActorStore

__all__ = [
    "DEFAULT_TRANSACTION_TIMEOUT",
    "MIGRATION_SAVEPOINT",
    "ActorDb",
    "Transaction",
    "migrate",
    "owns_transaction",
    "run_sql",
]

T = TypeVar("T")

DEFAULT_TRANSACTION_TIMEOUT = 60.0  # seconds, RivetKit DEFAULT_TRANSACTION_TIMEOUT
# A statement failing on pages not loaded yet loads them and runs again; after this many
# times it waits for the whole database instead.
_LOAD_PAGES_TRIES = 8
MIGRATION_SAVEPOINT = "__rivet_on_migrate"  # RivetKit's savepoint name (common/database/mod.ts)

_log = logging.getLogger("rivetkit.actor")

# What RivetKit's `isManualTransactionControl` matches (common/database/shared.ts).
_MANUAL_TRANSACTION = re.compile(r"\s*(?:BEGIN|SAVEPOINT|COMMIT|END|ROLLBACK)\b", re.IGNORECASE)


# -- the transaction of the current task ---------------------------------------------------


class _Scope:
    """An open transaction or migration savepoint and the task it belongs to."""

    __slots__ = ("active", "broken", "store", "task")

    def __init__(self, store: ActorStore, task: asyncio.Task[Any] | None) -> None:
        self.store = store
        self.task = task
        self.active = True
        self.broken = False  # a statement read a page not loaded yet: SQLite rolled it all back


def _scoped_sql(scope: _Scope, sql: str, bindings: Any) -> list[dict[str, Any]]:
    """A statement inside an open transaction or migration. One that reads a page of a
    database still loading (engine mode) ends the scope: SQLite rolled the whole transaction
    back, so this and every later statement of it fail with ``sqlite.pages_not_loaded`` (a
    migration then runs again once the database is loaded)."""
    store = scope.store
    if scope.broken:
        raise _not_loaded()
    try:
        return run_user_sql(store.conn, sql, bindings, scoped=True)
    except errors.RivetError:
        if store.take_missed():
            scope.broken = True
            raise _not_loaded() from None
        raise


def _not_loaded() -> errors.RivetError:
    return sqlite_error(
        "pages_not_loaded",
        "The transaction read part of the actor's database that was still loading from the "
        "engine and was rolled back.",
        status=503,
    )


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "rivetkit_sql_scope", default=None
)


def _owned_scope(store: ActorStore) -> _Scope | None:
    """The open transaction of ``store`` that the current task owns, if any."""
    scope = _scope.get()
    if (
        scope is not None
        and scope.active
        and scope.store is store
        and scope.task is asyncio.current_task()
    ):
        return scope
    return None


def owns_transaction(store: ActorStore) -> bool:
    """Whether the current task runs inside an open ``c.db.transaction()`` or ``on_migrate`` of
    ``store`` (it holds the gate: its statements must run directly, not wait for the gate)."""
    return _owned_scope(store) is not None


async def run_sql(store: ActorStore, fn: Callable[[apsw.Connection], T]) -> T:
    """Run synchronous ``fn(conn)`` on ``store``: inside the current task's open transaction
    or migration if it has one, else through ``store.run`` (FIFO behind the gate)."""
    scope = _owned_scope(store)
    if scope is not None:
        if scope.broken:  # (rolled back: running it would commit outside the transaction)
            raise _not_loaded()
        return fn(store.conn)
    return await store.run(fn)


# -- errors --------------------------------------------------------------------------------


def _expired(timeout: float) -> errors.RivetError:
    ms = round(timeout * 1000)
    return sqlite_error(
        "transaction_expired",
        f"The database transaction ran past its {timeout:g} s deadline and was rolled back. "
        "Pass a larger `timeout` to c.db.transaction() if the work needs longer, and check "
        "that nothing in the block waits for another task's database work.",
        status=500,
        timeout_ms=ms,
    )


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise sqlite_error(
            "transaction_invalid_argument",
            f"c.db.transaction() timeout must be a positive finite number of seconds, "
            f"got {timeout!r}.",
        )
    return float(timeout)


# -- c.db and its transactions -------------------------------------------------------------


class ActorDb:
    """``c.db``: SQL on the actor's own SQLite database.

    Values are ``None``, ``int`` (64-bit), ``float``, ``str`` and ``bytes`` (``bytearray`` and
    ``memoryview`` too); ``bool`` is accepted and stored as ``1``/``0`` (SQLite has no boolean
    type and returns it as ``int``). Rows come back as dicts keyed by column name; with
    duplicate column names the last one wins, as in RivetKit.

    Example::

        @chat.on_migrate
        async def migrate(c, is_new):
            await c.db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, body TEXT)"
            )

        @chat.action
        async def post(c, body):
            await c.db.execute("INSERT INTO messages (body) VALUES (?)", body)
            return await c.db.execute("SELECT id, body FROM messages ORDER BY id")
    """

    __slots__ = ("_clock", "_log", "_store", "_warn_manual", "_warned")

    def __init__(
        self,
        store: ActorStore,
        clock: Clock = REAL_CLOCK,
        *,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        warn_on_manual_transactions: bool = True,
    ) -> None:
        self._store = store
        self._clock = clock
        self._log = log if log is not None else _log
        self._warn_manual = warn_on_manual_transactions
        self._warned = False

    def __repr__(self) -> str:
        return f"<ActorDb {self._store.path}>"

    async def execute(self, sql: str, /, *args: Any, **named: Any) -> list[dict[str, Any]]:
        """Run ``sql`` and return its rows as dicts (``[]`` for statements without rows).

        Args:
            sql: one statement with ``?`` or ``:name`` parameters; without arguments it may
                hold several statements separated by ``;`` (all run; the rows of the last one
                that has result columns are returned).
            *args: values for ``?`` parameters, in order (or one mapping of named values).
            **named: values for ``:name`` parameters. Not together with ``*args``.

        Raises:
            RivetError: ``sqlite.query_failed`` (not public: masked for clients) for SQL that
                SQLite refuses (syntax, constraints, missing tables), with the SQLite message;
                ``sqlite.invalid_bind_parameter`` / ``sqlite.invalid_argument`` for bad
                arguments; ``sqlite.not_authorized`` for statements touching ``_rivet_*``;
                ``sqlite.transaction_queue_full`` with 128 operations already waiting.

        Inside ``async with c.db.transaction()``, calls from the task running the block join
        the transaction.
        """
        if not isinstance(sql, str):
            raise sqlite_error("invalid_argument", f"SQL must be a str, got {type(sql).__name__}.")
        bindings = check_bindings(args, named)
        store = self._store
        scope = _owned_scope(store)
        if scope is not None:
            return _scoped_sql(scope, sql, bindings)
        if self._warn_manual and not self._warned and _MANUAL_TRANSACTION.match(sql):
            self._warned = True
            self._log.warning(
                "manual sqlite transaction statements can interleave with other actor work; "
                "use `async with c.db.transaction()` for coordinated transactions sql=%.40r",
                sql,
            )
        if not store.loading:
            return await store.run(lambda conn: run_user_sql(conn, sql, bindings, scoped=False))
        return await _run_while_loading(store, sql, bindings)

    def transaction(self, *, timeout: float = DEFAULT_TRANSACTION_TIMEOUT) -> Transaction:
        """An async context manager running its block as one transaction.

        The block waits its turn (FIFO with other transactions and statements), then runs
        between ``BEGIN`` and ``COMMIT``; if it raises, the transaction is rolled back and the
        error propagates. Statements run with ``tx.execute(...)`` (from any task) or
        ``c.db.execute(...)`` / ``c.kv`` from the task running the block.

        Args:
            timeout: deadline of the block in seconds once it has begun (60 s, RivetKit's
                safety timeout). When it passes, the block is cancelled and rolled back.

        Raises:
            RivetError: ``sqlite.transaction_expired`` after the deadline;
                ``sqlite.transaction_nested`` when the block's own task opens another one;
                ``sqlite.transaction_invalid_argument`` for a bad ``timeout``;
                ``sqlite.transaction_queue_full`` with 128 operations already waiting.

        Example::

            async with c.db.transaction() as tx:
                await tx.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", 10, a)
                await tx.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", 10, b)
        """
        return Transaction(self, _check_timeout(timeout))


class Transaction:
    """One ``c.db.transaction()``: an async context manager whose value runs statements.

    Entered once. ``execute`` works while the block runs; afterwards it raises
    ``sqlite.transaction_terminal``.
    """

    __slots__ = ("_cm", "_db", "_scope", "_state", "_timeout")

    def __init__(self, db: ActorDb, timeout: float) -> None:
        self._db = db
        self._timeout = timeout
        self._scope: _Scope | None = None
        self._cm: contextlib.AbstractAsyncContextManager[None] | None = None
        self._state = "new"  # new -> open -> committed | rolled back

    def __repr__(self) -> str:
        return f"<Transaction {self._state}>"

    async def execute(self, sql: str, /, *args: Any, **named: Any) -> list[dict[str, Any]]:
        """Run ``sql`` inside this transaction; see :meth:`ActorDb.execute`."""
        scope = self._scope
        if scope is None or not scope.active:
            raise sqlite_error(
                "transaction_terminal",
                f"This transaction is {self._state}; statements need an open "
                "`async with c.db.transaction()` block.",
                state=self._state,
            )
        if not isinstance(sql, str):
            raise sqlite_error("invalid_argument", f"SQL must be a str, got {type(sql).__name__}.")
        return _scoped_sql(scope, sql, check_bindings(args, named))

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise sqlite_error(
                "transaction_terminal", "A transaction object can be entered only once."
            )
        cm = _transaction(self)
        await cm.__aenter__()
        self._cm = cm
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        cm = self._cm
        assert cm is not None
        self._cm = None
        return await cm.__aexit__(exc_type, exc, tb)


async def _run_while_loading(store: ActorStore, sql: str, bindings: Any) -> list[dict[str, Any]]:
    """Run autocommit user SQL while the database loads (engine mode): a statement that reads a
    page not local yet fails and is rolled back; load the pages and run it again (a string of
    statements goes on from the one that failed: those before it are committed)."""
    progress = SqlProgress()
    tries = 0
    while True:
        try:
            return await store.run(
                lambda conn: run_user_sql(conn, sql, bindings, scoped=False, progress=progress)
            )
        except errors.RivetError:
            missed = store.take_missed()
            if not missed or progress.offset < 0:
                raise
        tries += 1
        _log.debug("sql read pages not loaded yet pages=%d first=%d tries=%d",
                   len(missed), missed[0], tries)
        await store.load_pages(missed if tries < _LOAD_PAGES_TRIES else None)


def _rollback(conn: apsw.Connection) -> None:
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except apsw.Error:
        _log.exception("sqlite rollback failed")


@contextlib.asynccontextmanager
async def _transaction(tx: Transaction) -> AsyncIterator[None]:
    db = tx._db
    store = db._store
    if _owned_scope(store) is not None:
        tx._state = "rolled back"
        raise sqlite_error(
            "transaction_nested",
            "c.db.transaction() inside a transaction of the same task would wait for itself; "
            "use the open transaction (or a SAVEPOINT) instead.",
        )
    if store.loading:  # (a read of a page not loaded yet would roll the block back)
        await store.load_pages()
    async with store.gate.hold():
        conn = store.conn
        try:
            conn.execute("BEGIN")
        except apsw.Error as exc:
            tx._state = "rolled back"
            raise query_failed(exc) from exc
        scope = _Scope(store, asyncio.current_task())
        tx._scope = scope
        tx._state = "open"
        token = _scope.set(scope)
        deadline = db._clock.timeout(tx._timeout)
        try:
            try:
                async with deadline:
                    yield
            except TimeoutError:
                if deadline.expired():
                    raise _expired(tx._timeout) from None
                raise
            if deadline.expired():  # the block swallowed its cancellation
                raise _expired(tx._timeout)
            try:
                conn.execute("COMMIT")
            except apsw.Error as exc:
                raise query_failed(exc) from exc
            tx._state = "committed"
        except BaseException:
            _rollback(conn)
            tx._state = "rolled back"
            raise
        finally:
            scope.active = False
            _scope.reset(token)
    durable = store.durable()
    if durable is not None:  # engine mode: the block ends once the engine has the commit
        await durable


# -- migrations ----------------------------------------------------------------------------


async def migrate(
    ctx: Any,
    hook: Callable[[Any, bool], Any] | None,
    *,
    db: ActorDb,
    is_new: bool,
    timeout: float,
    clock: Clock | None = None,
) -> None:
    """Run the actor's ``on_migrate`` hook ``hook(ctx, is_new)`` atomically.

    The hook (sync or async) runs while this actor's database gate is held, inside
    ``SAVEPOINT __rivet_on_migrate`` (RivetKit's name): ``c.db.execute`` and ``c.kv`` calls it
    makes from its own task join the savepoint, and either everything it did is released
    (committed) or, if it raises or runs out of time, everything is rolled back. Call it first
    in actor start, before any other hook.

    Args:
        ctx: the context passed to the hook as ``c``.
        hook: the ``on_migrate`` hook; ``None`` does nothing.
        db: the actor's :class:`ActorDb`.
        is_new: true when the actor is being created.
        timeout: ``on_migrate_timeout`` in seconds (30 s by default).
        clock: the clock for the deadline (default: the one of ``db``).

    Raises:
        RivetError: ``actor.callback_timed_out`` after ``timeout`` (RivetKit's code for hook
            timeouts); whatever the hook raised otherwise.
    """
    if hook is None:
        return
    store = db._store
    clock = clock if clock is not None else db._clock
    if await _migrate_once(ctx, hook, store, is_new, timeout, clock):
        _log.info("on_migrate read part of the database still loading: it runs again")
        await store.load_pages()
        if await _migrate_once(ctx, hook, store, is_new, timeout, clock):
            raise _not_loaded()  # (cannot happen: everything is loaded)


async def _migrate_once(
    ctx: Any,
    hook: Callable[[Any, bool], Any],
    store: ActorStore,
    is_new: bool,
    timeout: float,
    clock: Clock,
) -> bool:
    """Run the hook in its savepoint; True when it must run again (it read a page of the
    database that was not loaded yet, and SQLite rolled everything back)."""
    async with store.gate.hold():
        conn = store.conn
        conn.execute(f"SAVEPOINT {MIGRATION_SAVEPOINT}")
        scope = _Scope(store, asyncio.current_task())
        token = _scope.set(scope)
        deadline = clock.timeout(timeout)
        try:
            try:
                async with deadline:
                    result = hook(ctx, is_new)
                    if inspect.isawaitable(result):
                        await result
            except TimeoutError:
                if deadline.expired():
                    raise _migrate_timed_out(timeout) from None
                raise
            if deadline.expired():
                raise _migrate_timed_out(timeout)
            if scope.broken:
                return True
            conn.execute(f"RELEASE {MIGRATION_SAVEPOINT}")
        except BaseException as exc:
            if scope.broken and not isinstance(exc, asyncio.CancelledError):
                _rollback(conn)
                return True
            try:
                if conn.in_transaction:
                    conn.execute(f"ROLLBACK TO {MIGRATION_SAVEPOINT}")
                    conn.execute(f"RELEASE {MIGRATION_SAVEPOINT}")
            except apsw.Error:
                _log.exception("sqlite rollback of on_migrate failed")
                _rollback(conn)
            raise
        finally:
            scope.active = False
            _scope.reset(token)
    return False


def _migrate_timed_out(timeout: float) -> errors.RivetError:
    return errors.RivetError(
        "actor",
        "callback_timed_out",
        f"on_migrate timed out after {timeout:g} s",
        metadata={"callback_name": "on_migrate", "duration_ms": round(timeout * 1000)},
        status=500,
    )
