"""The state journal: one durable commit per event-loop tick for every actor of a local host.

Committing each actor's state to its own SQLite file costs one transaction per action per actor.
The journal instead writes the latest state of every actor that changed during a tick in a single
transaction of ``<storage>/journal.db``, before any of those actions answer: the durability promise
(committed before the response) holds, at the cost of one commit per tick instead of one per actor.

Write-behind: an actor's own file receives its state when the actor stops; the journal row is then
deleted. Every commit of an actor's state, to the journal or to its file, carries a number that
grows by one per commit (``seq``); when an actor starts after the process died, it loads whichever
of its journal row and its file has the higher number. (The file can be the newer one: a
workflow step commits the state with its history in the actor's file, and a crash between a final
write at sleep and the deletion of the row leaves both.) Rows are only ever read at actor start.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import apsw

if TYPE_CHECKING:
    from .instance import ActorInstance

__all__ = ["StateJournal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actor_state (
  actor_id TEXT PRIMARY KEY,
  state BLOB NOT NULL,
  seq INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
"""
_UPSERT = (
    "INSERT INTO actor_state (actor_id, state, seq) VALUES (?, ?, ?) "
    "ON CONFLICT (actor_id) DO UPDATE SET state = excluded.state, seq = excluded.seq"
)


class StateJournal:
    """Group commit of actor states, one transaction per event-loop tick."""

    def __init__(self, path: Path, *, synchronous: str = "NORMAL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = apsw.Connection(str(path))
        list(conn.execute("PRAGMA locking_mode=EXCLUSIVE"))
        list(conn.execute("PRAGMA journal_mode=WAL"))
        list(conn.execute(f"PRAGMA synchronous={synchronous}"))
        list(conn.execute(_SCHEMA))
        columns = {row[1] for row in conn.execute("PRAGMA table_info(actor_state)")}
        if "seq" not in columns:  # a journal written before commit numbers existed
            conn.execute("ALTER TABLE actor_state ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
        self._conn: apsw.Connection | None = conn
        self._dirty: list[ActorInstance] = []
        self._scheduled = False

    @property
    def conn(self) -> apsw.Connection:
        if self._conn is None:
            raise RuntimeError("the state journal is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, actor_id: str) -> tuple[bytes, int] | None:
        """The journaled state of ``actor_id`` and its commit number, if any."""
        rows = list(
            self.conn.execute("SELECT state, seq FROM actor_state WHERE actor_id = ?", (actor_id,))
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def forget(self, actor_id: str) -> None:
        """Drop the row of an actor whose file now holds its latest state (or that is gone)."""
        self.conn.execute("DELETE FROM actor_state WHERE actor_id = ?", (actor_id,))

    def mark_dirty(self, instance: ActorInstance) -> None:
        """Commit ``instance``'s state with everyone else's at the end of this tick."""
        self._dirty.append(instance)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty = self._dirty
        self._dirty = []
        staged: list[tuple[ActorInstance, bytes, int]] = []
        for instance in dirty:
            try:
                data = instance.prepare_commit()
            except BaseException as exc:
                instance.finish_commit(None, exc)
                continue
            if data is None:
                instance.finish_commit(None, None)
            else:
                staged.append((instance, data, instance.next_state_seq()))
        if not staged:
            return
        try:
            conn = self.conn
            with conn:
                conn.executemany(
                    _UPSERT, [(inst.actor_id, data, seq) for inst, data, seq in staged]
                )
        except BaseException as exc:
            for instance, _, _ in staged:
                instance.finish_commit(None, exc)
            return
        for instance, data, _ in staged:
            instance.finish_commit(data, None)
