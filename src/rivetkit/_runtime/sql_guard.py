"""How user SQL runs on an actor's database: arguments checked, statements authorised, SQLite
errors turned into ``sqlite.*`` RivetErrors.

Protection: user SQL runs with a SQLite authorizer that refuses every table, index, trigger or
view named ``_rivet_*`` (RivetKit documents the prefix as reserved for its runtime data in
``docs-internal/engine/rivetkit-core-internals.md`` but does not enforce it; we do, because those
tables hold the actor's state, queue, schedules and KV), renames onto reserved names or of
temporary tables (a temporary table would shadow an internal one), ``ATTACH``/``DETACH``,
``VACUUM`` (RivetKit's limits page advises against it; ``VACUUM INTO`` writes files), and the
pragmas that would break durability or the schema. User statements are never taken from the
statement cache, so they are always authorised afresh.

:mod:`.db` (``c.db``, its transactions and ``on_migrate``) runs every user statement through
:func:`run_user_sql`, inside or outside a transaction; it decides which, this module does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import apsw

from .. import errors

__all__ = ["SqlProgress", "check_bindings", "query_failed", "run_user_sql", "sqlite_error"]

# `ALTER TABLE ... RENAME TO _rivet_...`: the authorizer is told the old name only.
_SQL_GAP = r"(?>\s+|/\*.*?\*/|--[^\n]*\n)++"  # atomic: no backtracking
_RENAME_TO_RESERVED = re.compile(
    rf"\bRENAME{_SQL_GAP}TO{_SQL_GAP}[\"'`\[]?_rivet_", re.IGNORECASE | re.DOTALL
)

_RESERVED_PREFIX = "_rivet_"
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


# -- errors --------------------------------------------------------------------------------


def sqlite_error(
    code: str, message: str, *, status: int = 400, **metadata: Any
) -> errors.RivetError:
    return errors.RivetError("sqlite", code, message, metadata=metadata or None, status=status)


def _result_code_name(exc: apsw.Error) -> str | None:
    code = getattr(exc, "extendedresult", None)
    if not isinstance(code, int):
        return None
    name = apsw.mapping_extended_result_codes.get(code) or apsw.mapping_result_codes.get(code)
    return name if isinstance(name, str) else None


def query_failed(exc: apsw.Error) -> errors.RivetError:
    """A statement SQLite refused: masked for clients, as RivetKit sends statement errors as
    internal errors (their text can carry schema and data: ``UNIQUE constraint failed: ...``)."""
    name = _result_code_name(exc)
    detail = str(exc) or type(exc).__name__
    message = f"SQLite error: {detail}" + (f" ({name})" if name else "")
    return errors.RivetError(
        "sqlite",
        "query_failed",
        message,
        metadata={"sqlite_code": name} if name else None,
        public=False,
        status=500,
    )


# -- user statements -----------------------------------------------------------------------


def _is_blank(text: str) -> bool:
    """Whether ``text`` holds only whitespace, ``;`` and comments (no statement)."""
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace() or text[i] == ";":
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            if end < 0:
                return True
            i = end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                return True  # SQLite ends an unterminated comment at the end of the input
            i = end + 2
        else:
            return False
    return True


def _check_value(value: object, where: str) -> None:
    if value is None or isinstance(value, (str, float, bytes, bytearray, memoryview)):
        return
    if isinstance(value, int):  # bool included: SQLite stores it as 1 / 0
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise sqlite_error(
                "invalid_bind_parameter",
                f"SQL argument {where} is out of SQLite's 64-bit integer range.",
                name=where,
            )
        return
    raise sqlite_error(
        "invalid_bind_parameter",
        f"SQL argument {where} has type {type(value).__name__}; SQLite values are None, int, "
        "float, str or bytes.",
        name=where,
    )


def check_bindings(args: tuple[Any, ...], named: dict[str, Any]) -> Any:
    """Positional ``?`` arguments or named ``:name`` arguments, checked."""
    if len(args) == 1 and isinstance(args[0], Mapping) and not named:
        named = dict(args[0])  # RivetKit style: one object of named bindings
        args = ()
    if args and named:
        raise sqlite_error(
            "invalid_bind_parameter",
            "Pass SQL arguments either positionally (`?`) or by name (`:name`), not both.",
            name="*",
        )
    if named:
        for name, value in named.items():
            if not isinstance(name, str):
                raise sqlite_error(
                    "invalid_bind_parameter",
                    f"SQL argument names must be str, got {type(name).__name__}.",
                    name=repr(name),
                )
            _check_value(value, f":{name}")
        return named
    if args:
        for index, value in enumerate(args, 1):
            _check_value(value, f"#{index}")
        return args
    return None


class _Authorizer:
    """The SQLite authorizer user statements run under (see the module docstring)."""

    __slots__ = ("denied", "scoped", "sql")

    # Operations whose first argument (for the second set: first and second) names a table,
    # index, trigger or view.
    _TABLE_P1 = frozenset(
        {
            apsw.SQLITE_CREATE_TABLE,
            apsw.SQLITE_CREATE_TEMP_TABLE,
            apsw.SQLITE_DROP_TABLE,
            apsw.SQLITE_DROP_TEMP_TABLE,
            apsw.SQLITE_CREATE_VIEW,
            apsw.SQLITE_CREATE_TEMP_VIEW,
            apsw.SQLITE_DROP_VIEW,
            apsw.SQLITE_DROP_TEMP_VIEW,
            apsw.SQLITE_CREATE_VTABLE,
            apsw.SQLITE_DROP_VTABLE,
            apsw.SQLITE_READ,
            apsw.SQLITE_INSERT,
            apsw.SQLITE_UPDATE,
            apsw.SQLITE_DELETE,
            apsw.SQLITE_ANALYZE,
            apsw.SQLITE_REINDEX,
        }
    )
    _TABLE_P1_P2 = frozenset(
        {
            apsw.SQLITE_CREATE_INDEX,
            apsw.SQLITE_CREATE_TEMP_INDEX,
            apsw.SQLITE_DROP_INDEX,
            apsw.SQLITE_DROP_TEMP_INDEX,
            apsw.SQLITE_CREATE_TRIGGER,
            apsw.SQLITE_CREATE_TEMP_TRIGGER,
            apsw.SQLITE_DROP_TRIGGER,
            apsw.SQLITE_DROP_TEMP_TRIGGER,
        }
    )
    # Pragmas whose change would break durability, locking or the schema.
    _GUARDED_PRAGMAS = frozenset({"journal_mode", "locking_mode", "synchronous", "schema_version"})

    def __init__(self, sql: str, scoped: bool) -> None:
        self.sql = sql
        self.scoped = scoped
        self.denied: str | None = None

    def _deny(self, reason: str) -> int:
        if self.denied is None:
            self.denied = reason
        return apsw.SQLITE_DENY

    def __call__(
        self, op: int, p1: str | None, p2: str | None, db_name: str | None, source: str | None
    ) -> int:
        if op in self._TABLE_P1:
            names: tuple[str | None, ...] = (p1,)
        elif op in self._TABLE_P1_P2:
            names = (p1, p2)
        elif op == apsw.SQLITE_ALTER_TABLE:
            # Renaming could make a table shadow an internal one (temp tables are looked up
            # first) or take a reserved name.
            if (p1 or "").lower() == "temp":
                return self._deny("temporary tables cannot be altered on an actor's database")
            if _RENAME_TO_RESERVED.search(self.sql):
                return self._deny("names starting with `_rivet_` are reserved for RivetKit")
            names = (p2,)
        elif op == apsw.SQLITE_PRAGMA:
            pragma = (p1 or "").lower()
            if pragma == "writable_schema" or (pragma in self._GUARDED_PRAGMAS and p2 is not None):
                return self._deny(
                    f"`PRAGMA {pragma}` would change how RivetKit stores the actor's data"
                )
            return apsw.SQLITE_OK
        elif op in (apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH):
            if op == apsw.SQLITE_ATTACH and not p1:  # how plain VACUUM shows up
                return self._deny("VACUUM is not available on an actor's database")
            return self._deny(
                "ATTACH, DETACH and VACUUM INTO are not available on an actor's database"
            )
        elif op == apsw.SQLITE_TRANSACTION:
            if self.scoped:
                return self._deny(
                    f"`{p1}` inside c.db.transaction() or on_migrate: RivetKit begins and ends "
                    "that transaction (use SAVEPOINT for nested work)"
                )
            return apsw.SQLITE_OK
        elif op == apsw.SQLITE_SAVEPOINT:
            if p2 is not None and p2.lower().lstrip("_").startswith("rivet_"):
                return self._deny(f"savepoint `{p2}` is reserved for RivetKit")
            return apsw.SQLITE_OK
        else:
            return apsw.SQLITE_OK
        for name in names:
            if name is not None and name.lower().startswith(_RESERVED_PREFIX):
                return self._deny(
                    f"`{name}`: names starting with `_rivet_` are reserved for RivetKit"
                )
        return apsw.SQLITE_OK


class SqlProgress:
    """How far :func:`run_user_sql` got in a string of statements, to go on from the one that
    failed (the ones before it are committed): where it starts in the string (``-1``: not
    found, no going on) and the result rows of the statements before it."""

    __slots__ = ("columns", "offset", "rows")

    def __init__(self) -> None:
        self.offset = 0
        self.columns: list[str] = []
        self.rows: list[tuple[Any, ...]] = []


def run_user_sql(
    conn: apsw.Connection,
    sql: str,
    bindings: Any,
    *,
    scoped: bool,
    progress: SqlProgress | None = None,
) -> list[dict[str, Any]]:
    """Run user SQL synchronously and return the rows of its last statement that has columns.

    Without arguments, a string may hold several statements (RivetKit runs them all and
    returns the rows of the last one that returned rows). With arguments it must hold one.
    With ``progress``, the run starts at ``progress.offset`` and records there the statement
    it is at (for a run again from it, when it failed on a page not loaded yet).
    """
    base = 0
    columns: list[str] = []
    rows: list[tuple[Any, ...]] = []
    if progress is not None:
        base = progress.offset
        columns, rows = progress.columns, progress.rows
    text = sql[base:] if base else sql
    authorizer = _Authorizer(text, scoped)
    statements = 0
    searched = 0

    def trace(cursor: apsw.Cursor, statement: str, _bindings: Any) -> bool:
        nonlocal columns, rows, statements, searched
        statements += 1
        if statements == 1 and bindings is not None:
            at = text.find(statement)
            if at < 0 or not _is_blank(text[at + len(statement) :]):
                raise sqlite_error(
                    "invalid_argument",
                    "c.db.execute() with arguments runs a single statement; run the other "
                    "statements in separate calls.",
                )
        if progress is not None:
            at = text.find(statement, searched)
            if at < 0:
                progress.offset = -1
            else:
                searched = at + len(statement)
                progress.offset = base + at
                progress.columns, progress.rows = columns, rows
        description = cursor.get_description()
        if description:
            columns = [column[0] for column in description]
            rows = []
        return True

    conn.authorizer = authorizer
    try:
        cursor = conn.cursor()
        cursor.exec_trace = trace
        try:
            for row in cursor.execute(text, bindings, can_cache=False):
                rows.append(row)  # (`trace` swaps `rows` at each statement)
        finally:
            cursor.close()
    except errors.RivetError:
        raise
    except apsw.AuthError as exc:
        if authorizer.denied is None:
            raise query_failed(exc) from exc
        raise sqlite_error(
            "not_authorized", f"SQL statement refused: {authorizer.denied}."
        ) from exc
    except apsw.BindingsError as exc:
        raise sqlite_error("invalid_bind_parameter", f"SQL arguments: {exc}", name="*") from exc
    except KeyError as exc:  # a named parameter without a value
        raise sqlite_error(
            "invalid_bind_parameter",
            f"SQL parameter :{exc.args[0]} has no value.",
            name=f":{exc.args[0]}",
        ) from exc
    except apsw.Error as exc:
        raise query_failed(exc) from exc
    finally:
        conn.authorizer = None
    return [dict(zip(columns, row)) for row in rows]
