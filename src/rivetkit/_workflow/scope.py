"""One scope of a workflow and the positional replay of its operations.

A scope (the workflow body, a loop iteration, a join or race branch, a try block) holds an
ordered list of entries. Every operation claims the next position of its scope
(:meth:`ScopeReplay._enter`): the recorded entry there must have the same kind and name, or the
history has diverged, and the error says where and how, with what the history continues with.
Past the last recorded entry, operations execute and are recorded. When the code leaves a scope,
entries it did not reach are a divergence too (:meth:`ScopeReplay._finish_scope`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine import WorkflowEngine, _RollbackStop, in_step
from .errors import HistoryDivergedError, code_error
from .history import KIND_LABELS, Entry, entry_segment

if TYPE_CHECKING:
    from .._runtime.context import ActorContext

__all__ = ["MIGRATION_HINT", "Scope", "ScopeReplay"]


class Scope:
    """One sequential scope: the workflow body, a loop iteration, a join or race branch.

    Attributes:
        path: where its entries live (see :mod:`.history`).
        label: readable location for messages, e.g. ``/poll[3]`` or ``/both{a}``.
        cursor: position of the next operation.
        names: names used in this run (they must be unique in the scope).
        busy: the operation in progress, if any (operations of one scope run one at a time).
        checkpoint: a rollback checkpoint was reached (rollback handlers are allowed).
        open_messages: ids of completable queue messages received and not completed.
    """

    __slots__ = ("busy", "checkpoint", "cursor", "label", "names", "open_messages", "path")

    def __init__(self, path: bytes, label: str, *, checkpoint: bool = False) -> None:
        self.path = path
        self.label = label
        self.cursor = 0
        self.names: set[str] = set()
        self.busy: str | None = None
        self.checkpoint = checkpoint
        self.open_messages: set[int] = set()  # completable queue messages not completed yet


class _Busy:
    """The operation in progress in a scope (a class, not a generator: one per operation)."""

    __slots__ = ("_kind", "_name", "_scope")

    def __init__(self, scope: Scope, kind: str, name: str) -> None:
        self._scope = scope
        self._kind = kind
        self._name = name

    def __enter__(self) -> None:
        self._scope.busy = f'{KIND_LABELS.get(self._kind, self._kind)} "{self._name}"'

    def __exit__(self, *exc: object) -> None:
        self._scope.busy = None


class ScopeReplay:
    """The replay machinery of :class:`~.context.WorkflowContext` (its base class)."""

    __slots__ = ("_actor_ctx", "_engine", "_scope")

    def __init__(self, engine: WorkflowEngine, scope: Scope, actor_ctx: ActorContext) -> None:
        self._engine = engine
        self._scope = scope
        self._actor_ctx = actor_ctx

    def _enter(self, kind: str, name: str) -> tuple[Entry | None, int]:
        """Claim the next position of the scope for operation ``kind`` ``name``.

        Returns the recorded entry at that position (its kind and name match) or ``None`` at
        the live frontier, and the position.

        Raises:
            HistoryDivergedError: the history recorded something else at this position.
            WorkflowError: ``workflow.duplicate_entry_name``, ``workflow.entry_in_progress``.
        """
        engine = self._engine
        scope = self._scope
        self._check_name(kind, name)
        engine.check_evicted()
        scope.names.add(name)
        position = scope.cursor
        recorded = engine.history.at(scope.path, position)
        if recorded is not None:
            if recorded.kind != kind or recorded.name != name:
                raise self._diverged(position, recorded, kind, name)
            scope.cursor += 1
            return recorded, position
        if engine.rollback_mode:
            raise _RollbackStop
        scope.cursor += 1
        return None, position

    def _check_name(self, kind: str, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"a workflow {KIND_LABELS.get(kind, kind)} needs a non-empty name, got {name!r}"
            )
        scope = self._scope
        what = f'{KIND_LABELS.get(kind, kind)} "{name}"'
        if in_step(self._engine):
            raise code_error(
                "entry_in_progress",
                f"{what} was called inside a step function: workflow operations belong in the "
                "workflow body (or a loop, join or race body), not in steps",
                location=f"{scope.label}/{name}",
            )
        if scope.busy is not None:
            raise code_error(
                "entry_in_progress",
                f"{what} started while {scope.busy} is still running in the same scope "
                f"({scope.label or '/'}): await each workflow operation before the next one, "
                "use ctx.join(...) for parallel work, and inside a loop body or a join/race "
                "branch use the context it receives",
                location=f"{scope.label}/{name}",
            )
        if name in scope.names:
            raise code_error(
                "duplicate_entry_name",
                f'the name "{name}" is used twice in {scope.label or "/"}: each step, sleep, '
                "loop, join, race, queue wait, checkpoint and version gate needs a unique name "
                "within its scope (loop iterations and branches are scopes of their own)",
                location=f"{scope.label}/{name}",
                name=name,
            )

    def _busy(self, kind: str, name: str) -> _Busy:
        """``with ctx._busy(kind, name):`` marks the scope's operation in progress."""
        return _Busy(self._scope, kind, name)

    def _new_entry(self, kind: str, name: str, position: int, **data: Any) -> Entry:
        engine = self._engine
        entry = Entry(
            path=self._scope.path + entry_segment(position),
            kind=kind,
            name=name,
            created_at=engine.clock.now_ms(),
            data=data,
        )
        engine.history.add(entry, self._scope.path)
        return entry

    def _diverged(
        self, position: int, recorded: Entry, kind: str, name: str
    ) -> HistoryDivergedError:
        scope = self._scope
        history = self._engine.history
        found = f'{KIND_LABELS.get(kind, kind)} "{name}"'
        later = history.scope_entries(scope.path)[position + 1 : position + 4]
        lines = [
            (
                f"workflow history diverged at {scope.label}/{name} "
                f"(operation #{position + 1} of {scope.label or '/'}):"
            ),
            f"  recorded: {recorded.describe()}",
            f"  code:     {found}",
        ]
        if later:
            lines.append("  the history continues with: " + ", ".join(e.describe() for e in later))
        lines.append(MIGRATION_HINT)
        return HistoryDivergedError(
            "\n".join(lines),
            metadata={
                "location": f"{scope.label}/{name}",
                "position": position,
                "expected": {"kind": recorded.kind, "name": recorded.name},
                "found": {"kind": kind, "name": name},
            },
        )

    def _finish_scope(self) -> None:
        """The code left the scope: the history must not hold entries the code skipped.

        Raises:
            HistoryDivergedError: recorded entries were not reached.
        """
        scope = self._scope
        history = self._engine.history
        total = history.count(scope.path)
        if total <= scope.cursor:
            return
        missing = history.scope_entries(scope.path)[scope.cursor :]
        listing = ", ".join(e.describe() for e in missing[:5])
        if len(missing) > 5:
            listing += f", ... ({len(missing)} in all)"
        raise HistoryDivergedError(
            f"workflow history diverged at {scope.label or '/'}: the code finished this scope "
            f"after {scope.cursor} operation(s), but the history recorded {total}:\n"
            f"  recorded next: {missing[0].describe()}\n"
            f"  code:          (end of scope)\n"
            f"  not reached: {listing}\n{MIGRATION_HINT}",
            metadata={
                "location": scope.label or "/",
                "position": scope.cursor,
                "expected": {"kind": missing[0].kind, "name": missing[0].name},
                "found": None,
            },
        )


MIGRATION_HINT = (
    "The workflow code no longer matches its recorded history. Keep recorded operations in "
    "their order; for a removed one call ctx.removed(name, kind) where it was; gate new "
    "behaviour with ctx.get_version(name, latest)."
)
