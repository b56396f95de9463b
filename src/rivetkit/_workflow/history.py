"""Workflow history: entries, their locations, and how they are stored in ``_rivet_wf_kv``.

A workflow's history is a tree. Every sequential *scope* (the workflow body, one loop iteration,
one join or race branch) holds an ordered list of entries; an entry that opens scopes (a loop, a
join, a race) is their parent. Replay walks each scope in order: the n-th operation the code
performs in a scope must match the n-th recorded entry (same kind, same name), or the history
has diverged.

Storage (format 1; not byte-compatible with RivetKit's engine, which nothing requires). Every key
of the table starts with ``PREFIX`` (``b"wf\\x01"``, the format version in its last byte, so a
later format can live next to this one or migrate it):

* ``PREFIX + b"w"``: the workflow record, CBOR ``{"state", "output", "error", "startedAt",
  "finishedAt"}``;
* ``PREFIX + b"e" + path``: one entry, CBOR ``{"kind", "name", "id", "status", "attempts",
  "error", "createdAt", "lastAttemptAt", "completedAt", "rollbackCompletedAt", "rollbackError",
  "data"}`` (absent fields are ``None``).

A *path* is the entry's location, a concatenation of fixed-width segments whose byte order is
the replay order, so a range of keys is a subtree (loop pruning and race cleanup delete ranges):

* ``0x01`` + u32 big-endian: position of the entry in its scope;
* ``0x02`` + u64 big-endian: loop iteration (the scope of that iteration);
* ``0x03`` + u16 big-endian: join or race branch, by its index in the order recorded (the
  body of a try block is its branch 0);
* ``0x04`` + UTF-8 name: a version pin of ``ctx.get_version`` in that scope (kept out of the
  ordered entries, so that a gate added to old code does not shift them).

Values are CBOR of the JSON-compatible value tree (``rivetkit._protocol.cbor``): step outputs,
loop states and message bodies may be anything an action could return.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator
from typing import Any

import apsw
import cbor2

from .._protocol import DecodeError
from .._protocol.cbor import cbor_dumps_compat, cbor_loads
from .._runtime.ids import random_uuid
from .errors import WorkflowError, code_error

__all__ = [
    "KIND_LABELS",
    "PREFIX",
    "Entry",
    "History",
    "WorkflowRecord",
    "apply_replay_cut",
    "branch_segment",
    "decode_value",
    "encode_value",
    "entry_segment",
    "iteration_segment",
    "load_record",
    "new_entry_id",
    "replay_cut",
    "roundtrip",
    "version_segment",
]

PREFIX = b"wf\x01"
_RECORD_KEY = PREFIX + b"w"
_ENTRY = PREFIX + b"e"

SEG_ENTRY = 0x01
SEG_ITERATION = 0x02
SEG_BRANCH = 0x03
SEG_VERSION = 0x04

KIND_LABELS = {
    "step": "step",
    "loop": "loop",
    "sleep": "sleep",
    "message": "queue wait",
    "rollback_checkpoint": "rollback checkpoint",
    "join": "join",
    "race": "race",
    "removed": "removed entry",
    "version_check": "version gate",
    "try": "try block",
}


def entry_segment(position: int) -> bytes:
    return struct.pack(">BI", SEG_ENTRY, position)


def iteration_segment(iteration: int) -> bytes:
    return struct.pack(">BQ", SEG_ITERATION, iteration)


def branch_segment(index: int) -> bytes:
    return struct.pack(">BH", SEG_BRANCH, index)


def version_segment(name: str) -> bytes:
    return bytes([SEG_VERSION]) + name.encode()


def split_path(path: bytes) -> list[tuple[int, int | str]]:
    """The segments of ``path``: ``(kind, position | iteration | branch index | name)``."""
    out: list[tuple[int, int | str]] = []
    i = 0
    while i < len(path):
        kind = path[i]
        if kind == SEG_ENTRY:
            out.append((kind, struct.unpack_from(">I", path, i + 1)[0]))
            i += 5
        elif kind == SEG_ITERATION:
            out.append((kind, struct.unpack_from(">Q", path, i + 1)[0]))
            i += 9
        elif kind == SEG_BRANCH:
            out.append((kind, struct.unpack_from(">H", path, i + 1)[0]))
            i += 3
        elif kind == SEG_VERSION:
            out.append((kind, path[i + 1 :].decode()))
            break
        else:
            raise ValueError(f"bad workflow path segment 0x{kind:02x} in {path.hex()}")
    return out


def parent_scope(path: bytes) -> bytes:
    """The scope path an entry path lives in (the path without its last segment)."""
    i = 0
    start = 0
    while i < len(path):
        kind = path[i]
        if kind == SEG_VERSION:  # a version pin: everything after the marker is the name
            return path[:i]
        start = i
        i += _SEG_SIZE[kind]
    return path[:start]


_SEG_SIZE = {SEG_ENTRY: 5, SEG_ITERATION: 9, SEG_BRANCH: 3}


# -- values ------------------------------------------------------------------------------------


def encode_value(value: Any) -> bytes:
    """CBOR of a value stored in the history.

    Raises:
        TypeError: the value has a type the value model cannot store.
    """
    return cbor_dumps_compat(value)


def decode_value(data: bytes) -> Any:
    return cbor_loads(data, revive=True)


def roundtrip(value: Any) -> Any:
    """``value`` as a replay will see it (tuples become lists, dataclasses dicts, ...).

    A live run hands this copy to the workflow code too, so that live and replayed runs see
    exactly the same values (and the code cannot mutate what was recorded).
    """
    return decode_value(encode_value(value))


# -- entries -----------------------------------------------------------------------------------


def new_entry_id() -> str:
    """A random (version 4) UUID string: every operation of a workflow gets one."""
    return random_uuid()



@dataclasses.dataclass(slots=True, eq=False)
class Entry:
    """One recorded operation of the workflow.

    ``status`` is ``"pending"`` (started, nothing final), ``"running"``, ``"completed"``,
    ``"failed"`` (an attempt failed, a retry is due) or ``"exhausted"`` (failed for good).
    ``data`` holds what is specific to the kind (a step's ``output``, a loop's ``state`` and
    ``iteration``, a sleep's ``deadline``, ...). Times are epoch milliseconds.
    """

    path: bytes
    kind: str
    name: str
    id: str = dataclasses.field(default_factory=new_entry_id)
    status: str = "pending"
    attempts: int = 0
    error: str | None = None
    created_at: int = 0
    last_attempt_at: int | None = None
    completed_at: int | None = None
    rollback_completed_at: int | None = None
    rollback_error: str | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The stored bytes of ``data`` of a completed step (which never changes again): written
    # as they are, so the output is encoded once, and later changes the workflow code makes
    # to the object it got back never reach the history.
    blob: bytes | None = dataclasses.field(default=None, repr=False)

    @property
    def key(self) -> bytes:
        return _ENTRY + self.path

    def encode(self) -> bytes:
        """The stored record: plain CBOR for the fields, ``data`` as a CBOR byte string of the
        JSON-compatible value tree (user values need the compat transform; the rest do not)."""
        blob = self.blob
        if blob is None or self.kind != "step" or self.status != "completed":
            blob = encode_value(self.data)
        return cbor2.dumps(
            {
                "kind": self.kind,
                "name": self.name,
                "id": self.id,
                "status": self.status,
                "attempts": self.attempts,
                "error": self.error,
                "createdAt": self.created_at,
                "lastAttemptAt": self.last_attempt_at,
                "completedAt": self.completed_at,
                "rollbackCompletedAt": self.rollback_completed_at,
                "rollbackError": self.rollback_error,
                "data": blob,
            }
        )

    @classmethod
    def decode(cls, path: bytes, raw: bytes) -> Entry:
        record = cbor2.loads(raw)
        blob = record.get("data")
        return cls(
            path=path,
            kind=str(record["kind"]),
            name=str(record["name"]),
            id=str(record.get("id") or new_entry_id()),
            status=str(record.get("status") or "pending"),
            attempts=int(record.get("attempts") or 0),
            error=record.get("error"),
            created_at=int(record.get("createdAt") or 0),
            last_attempt_at=record.get("lastAttemptAt"),
            completed_at=record.get("completedAt"),
            rollback_completed_at=record.get("rollbackCompletedAt"),
            rollback_error=record.get("rollbackError"),
            data=dict(decode_value(blob)) if blob else {},
            blob=blob,
        )

    def describe(self) -> str:
        return f'{KIND_LABELS.get(self.kind, self.kind)} "{self.name}"'


@dataclasses.dataclass(slots=True)
class WorkflowRecord:
    """The workflow as a whole: ``state`` is ``"pending"`` (never ran), ``"running"``,
    ``"rolling_back"``, ``"completed"`` or ``"failed"``."""

    state: str = "pending"
    output: Any = None
    error: dict[str, Any] | None = None
    started_at: int | None = None
    finished_at: int | None = None

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "state": self.state,
                "output": encode_value(self.output),
                "error": self.error,
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> WorkflowRecord:
        raw = cbor2.loads(data)
        output = raw.get("output")
        return cls(
            state=str(raw.get("state") or "pending"),
            output=decode_value(output) if output else None,
            error=raw.get("error"),
            started_at=raw.get("startedAt"),
            finished_at=raw.get("finishedAt"),
        )


class History:
    """The in-memory copy of a workflow's history, loaded once per run and kept in step with
    what is committed (writes are queued here and flushed with the next commit)."""

    __slots__ = ("_ranges", "_scopes", "_versions", "_writes", "entries", "record")

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.record = WorkflowRecord()
        self._scopes: dict[bytes, list[Entry]] = {}
        self._versions: dict[bytes, Entry] = {}
        self._writes: dict[bytes, Entry | WorkflowRecord | None] = {}  # key -> value to write
        self._ranges: list[tuple[bytes, bytes]] = []  # key ranges to delete

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, conn: apsw.Connection) -> History:
        """Read the history from the actor's database.

        Raises:
            WorkflowError: ``workflow.history_format_unsupported`` when the table holds rows of
                another format (RivetKit's own engine, or a newer rivetkit).
        """
        history = cls()
        foreign = conn.execute(
            "SELECT key FROM _rivet_wf_kv WHERE key < ? OR key >= ? LIMIT 1",
            (PREFIX, _upper(PREFIX)),
        ).fetchall()
        if foreign:
            raise code_error(
                "history_format_unsupported",
                "this actor's _rivet_wf_kv holds workflow history in a format this rivetkit "
                f"cannot read (key {foreign[0][0]!r}): it was written by another "
                "runtime or a newer version",
            )
        rows = conn.execute(
            "SELECT key, value FROM _rivet_wf_kv WHERE key >= ? AND key < ? ORDER BY key",
            (PREFIX, _upper(PREFIX)),
        ).fetchall()
        try:
            for key, value in rows:
                key = bytes(key)  # type: ignore[arg-type]
                if key == _RECORD_KEY:
                    history.record = WorkflowRecord.decode(bytes(value))  # type: ignore[arg-type]
                elif key.startswith(_ENTRY):
                    path = key[len(_ENTRY) :]
                    entry = Entry.decode(path, bytes(value))  # type: ignore[arg-type]
                    history._insert(entry)
        except (
            DecodeError,
            cbor2.CBORDecodeError,
            KeyError,
            ValueError,
            TypeError,
            AttributeError,
        ) as exc:
            raise WorkflowError(
                "history_corrupt", f"the workflow history cannot be decoded: {exc}"
            ) from None
        return history

    def _insert(self, entry: Entry) -> None:
        self.entries[entry.path] = entry
        if entry.kind == "version_check":
            self._versions[entry.path] = entry
            return
        scope = self._scopes.setdefault(parent_scope(entry.path), [])
        scope.append(entry)  # rows arrive in key order, which is position order

    # -- reads -----------------------------------------------------------------------------

    def at(self, scope: bytes, position: int) -> Entry | None:
        """The entry recorded at ``position`` of ``scope``, if any."""
        entries = self._scopes.get(scope)
        if entries is None or position >= len(entries):
            return None
        return entries[position]

    def count(self, scope: bytes) -> int:
        """How many entries ``scope`` holds (its positions are 0 .. count-1)."""
        entries = self._scopes.get(scope)
        return 0 if entries is None else len(entries)

    def scope_entries(self, scope: bytes) -> list[Entry]:
        return list(self._scopes.get(scope, ()))

    def version(self, scope: bytes, name: str) -> Entry | None:
        return self._versions.get(scope + version_segment(name))

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self.entries.values(), key=lambda e: e.path))

    # -- changes (queued until the next flush) ---------------------------------------------

    def add(self, entry: Entry, scope: bytes) -> None:
        """Append a new entry to ``scope`` (in memory; :meth:`save` queues its write)."""
        self.entries[entry.path] = entry
        if entry.kind == "version_check":
            self._versions[entry.path] = entry
        else:
            self._scopes.setdefault(scope, []).append(entry)

    def save(self, entry: Entry) -> None:
        """Queue ``entry`` to be written by the next flush."""
        self._writes[entry.key] = entry

    def save_record(self) -> None:
        self._writes[_RECORD_KEY] = self.record

    def delete_subtree(self, prefix: bytes, end: bytes | None = None) -> None:
        """Forget every entry whose path starts with ``prefix`` (or lies in ``[prefix, end)``)
        and queue the deletion of their rows."""
        upper = end if end is not None else _upper(prefix)
        doomed = [p for p in self.entries if prefix <= p < upper]
        for path in doomed:
            entry = self.entries.pop(path)
            self._writes.pop(entry.key, None)
            self._versions.pop(path, None)
        for scope in [s for s in self._scopes if prefix <= s < upper]:
            del self._scopes[scope]
        self._ranges.append((_ENTRY + prefix, _ENTRY + upper))

    @property
    def dirty(self) -> bool:
        return bool(self._writes or self._ranges)

    def unwritten_before(self, entry: Entry) -> bool:
        """Whether an entry of ``entry``'s scope at an earlier position has a queued write.

        An entry written on its own (a queue receive records its message in the queue's
        transaction) must not reach the file before the earlier entries of its scope: replay
        finds entries by their index in the scope, so a missing one would shift it.
        """
        scope = parent_scope(entry.path)
        for value in self._writes.values():
            if (
                isinstance(value, Entry)
                and value.path < entry.path
                and value.kind != "version_check"
                and parent_scope(value.path) == scope
            ):
                return True
        return False

    def take_writes(self) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        """Encode and hand out the queued writes: ``(upserts, deleted ranges)``.

        Raises:
            TypeError: a queued value cannot be encoded (nothing is taken then).
        """
        upserts = [
            (key, value.encode()) for key, value in self._writes.items() if value is not None
        ]
        ranges = self._ranges
        self._writes = {}
        self._ranges = []
        return upserts, ranges

    def restore_writes(
        self, upserts: list[tuple[bytes, bytes]], ranges: list[tuple[bytes, bytes]]
    ) -> None:
        """Put writes back after a failed commit, so the next flush retries them."""
        self._ranges = ranges + self._ranges
        for key, _ in upserts:
            if key == _RECORD_KEY:
                self._writes.setdefault(key, self.record)
                continue
            entry = self.entries.get(key[len(_ENTRY) :])
            if entry is not None:
                self._writes.setdefault(key, entry)


def load_record(conn: apsw.Connection) -> WorkflowRecord:
    """The workflow record alone (a fresh one when the workflow never ran)."""
    row = conn.execute("SELECT value FROM _rivet_wf_kv WHERE key = ?", (_RECORD_KEY,)).fetchone()
    return WorkflowRecord.decode(bytes(row[0])) if row else WorkflowRecord()


def replay_cut(history: History, entry_id: str | None) -> set[bytes]:
    """The paths of the entries a replay from step ``entry_id`` deletes (RivetKit's
    ``replayWorkflowFromStep``): the step and every entry created after it, or everything when
    ``entry_id`` is ``None``.

    As in RivetKit, a step inside a loop replays from the loop (the outermost one here: a loop
    records only its latest state, so it cannot resume at an older iteration). The cut is then
    closed so that replay stays positional: a loop or race with a deleted entry inside is
    deleted too (they return recorded results), so are the later entries of every scope that
    lost one (no gaps) and the subtrees of deleted entries.

    Raises:
        KeyError: no entry has id ``entry_id``.
        ValueError: the entry is not a step.
    """
    entries = history.entries
    if entry_id is None:
        return set(entries)
    target = next((e for e in entries.values() if e.id == entry_id), None)
    if target is None:
        raise KeyError(entry_id)
    if target.kind != "step":
        raise ValueError(f"{target.describe()} is not a step")
    boundary = target
    for path in _ancestors(target.path):
        ancestor = entries.get(path)
        if ancestor is not None and ancestor.kind == "loop":
            boundary = ancestor
            break  # the outermost: ancestors come root first
    ordered = sorted(entries.values(), key=lambda e: (e.created_at, e.path))
    doomed = {e.path for e in ordered[ordered.index(boundary) :]}
    while True:
        grown = set(doomed)
        for path in doomed:
            for ancestor_path in _ancestors(path):
                ancestor = entries.get(ancestor_path)
                if ancestor is not None and ancestor.kind in ("loop", "race"):
                    grown.add(ancestor_path)
        cut_from: dict[bytes, bytes] = {}  # scope -> first deleted position in it
        for path in grown:
            if entries[path].kind != "version_check":
                scope = parent_scope(path)
                if scope not in cut_from or path < cut_from[scope]:
                    cut_from[scope] = path
        for path, entry in entries.items():
            if path in grown:
                continue
            scope = parent_scope(path)
            later = entry.kind != "version_check" and scope in cut_from and path > cut_from[scope]
            if later or any(a in grown for a in _ancestors(path)):
                grown.add(path)
        if grown == doomed:
            return doomed
        doomed = grown


def _ancestors(path: bytes) -> list[bytes]:
    """The paths of the entries that contain the one at ``path``, root first."""
    out = []
    i = 0
    while i < len(path):
        kind = path[i]
        if kind == SEG_VERSION:
            break
        i += _SEG_SIZE[kind]
        if kind == SEG_ENTRY and i < len(path):
            out.append(path[:i])
    return out


def apply_replay_cut(conn: apsw.Connection, history: History, doomed: set[bytes]) -> None:
    """Delete ``doomed`` entries and reopen the workflow (inside the caller's transaction):
    the next run replays what is left and executes the rest."""
    conn.executemany(
        "DELETE FROM _rivet_wf_kv WHERE key = ?", [(_ENTRY + path,) for path in doomed]
    )
    for path in doomed:
        entry = history.entries.pop(path)
        history._versions.pop(path, None)
        scope = history._scopes.get(parent_scope(path))
        if scope is not None and entry in scope:
            scope.remove(entry)
    record = history.record
    started = bool(history.entries) and record.started_at is not None
    history.record = WorkflowRecord(
        state="running" if started else "pending",
        started_at=record.started_at if started else None,
    )
    conn.execute(
        "INSERT INTO _rivet_wf_kv (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (_RECORD_KEY, history.record.encode()),
    )


def write_rows(
    conn: apsw.Connection, upserts: list[tuple[bytes, bytes]], ranges: list[tuple[bytes, bytes]]
) -> None:
    """Apply a flush inside the caller's transaction (deletions first, then upserts)."""
    for start, end in ranges:
        conn.execute("DELETE FROM _rivet_wf_kv WHERE key >= ? AND key < ?", (start, end))
    if upserts:
        conn.executemany(
            "INSERT INTO _rivet_wf_kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            upserts,
        )


def _upper(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    raw = bytearray(prefix)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\xff" * (len(prefix) + 1)
    raw[-1] += 1
    return bytes(raw)
