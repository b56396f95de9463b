"""``GET /inspector/workflow-history``: the workflow history in RivetKit's JSON shape.

The shape is what RivetKit's runtime answers (client-protocol §12; the transport types of
``inspector.ts``): ``{"history", "workflowState", "isWorkflowEnabled"}`` where ``history`` is
``{"nameRegistry": [names], "entries": [{"id", "location", "kind": {"tag", "val"}}],
"entryMetadata": {id: {"status", "error", "attempts", "lastAttemptAt", "createdAt",
"completedAt", "rollbackCompletedAt", "rollbackError"}}}``. A location is a list of
``{"tag": "WorkflowNameIndex", "val": i}`` (an index into ``nameRegistry``) and
``{"tag": "WorkflowLoopIterationMarker", "val": {"loop": i, "iteration": n}}``; statuses are
upper case (``"COMPLETED"``). Two keys are ours: ``workflowOutput`` and ``workflowError`` (the
result or failure of a finished workflow, and the code error that stopped the last run).

Differences in content: a queue wait is one ``WorkflowMessageEntry`` whose ``messageData`` is
the list of messages received (RivetKit writes one entry per message plus a count entry).

``POST /inspector/workflow/replay`` (:func:`replay_workflow`) deletes the history from a step on
(or all of it) and runs the workflow again, as RivetKit's ``replayWorkflowFromStep``: only while
the run handler is not running (the workflow completed, failed, or stopped on a code error),
else ``409 actor.workflow_in_flight``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import apsw

from .. import errors
from .engine import WorkflowSpec, engine_of, forget_engine
from .history import (
    SEG_BRANCH,
    SEG_ENTRY,
    SEG_ITERATION,
    SEG_VERSION,
    Entry,
    History,
    apply_replay_cut,
    load_record,
    replay_cut,
    split_path,
)

if TYPE_CHECKING:
    from .._runtime.instance import ActorInstance

__all__ = ["replay_workflow", "workflow_inspector", "workflow_spec"]

# How many event-loop turns a replay waits for the run handler of a finished workflow to return
# (right after a wake it is still starting: it loads the history, sees the end, returns).
_SETTLE_TURNS = 100


def workflow_spec(instance: ActorInstance) -> WorkflowSpec | None:
    """The workflow of the actor's ``run`` handler, if it is one."""
    run = instance.definition.hooks.get("run")
    spec = getattr(run, "__rivetkit_workflow__", None)
    return spec if isinstance(spec, WorkflowSpec) else None


def workflow_inspector(instance: ActorInstance) -> dict[str, Any]:
    """The workflow-history inspector payload of an awake actor (JSON-ready).

    Uses the running workflow's history when there is one, else reads the actor's database.
    """
    if workflow_spec(instance) is None:
        return {"history": None, "workflowState": None, "isWorkflowEnabled": False}
    engine = engine_of(instance)
    if engine is not None:
        history = engine.history
        state = engine.live_state
        last_error = engine.last_error
    else:
        history = History.load(instance.store.conn)
        state = {"running": "pending"}.get(history.record.state, history.record.state)
        last_error = None
    record = history.record
    error = record.error
    if last_error is not None and error is None:
        error = {"name": "WorkflowError", "message": last_error}
    return {
        "history": history_json(history),
        "workflowState": state,
        "isWorkflowEnabled": True,
        "workflowOutput": _json_safe(record.output) if record.state == "completed" else None,
        "workflowError": _json_safe(error),
    }


async def replay_workflow(instance: ActorInstance, entry_id: str | None) -> dict[str, Any]:
    """Delete the workflow's history from step ``entry_id`` on (all of it when ``None``) and run
    the workflow again: it replays what is left and executes the rest. Answers like
    :func:`workflow_inspector`, with the history as left by the cut.

    Raises:
        RivetError: ``actor.workflow_in_flight`` (409) while the run handler runs (the workflow
            executes or waits); ``workflow.entry_not_found`` (404) for an unknown id;
            ``workflow.replay_target_not_step`` (400) for an entry that is not a step;
            ``actor.stopping`` (503) when the actor began to stop.
    """
    if workflow_spec(instance) is None:
        return {"history": None, "workflowState": None, "isWorkflowEnabled": False}
    sleep_ctl = instance.sleep_ctl
    if sleep_ctl.run_active and await instance.store.run(_finished):
        # A finished workflow's run handler returns at once; right after a wake it may not have
        # had its turn yet.
        for _ in range(_SETTLE_TURNS):
            if not sleep_ctl.run_active:
                break
            await asyncio.sleep(0)

    def cut(conn: apsw.Connection) -> History:
        if instance.stopping is not None:
            raise errors.ActorStopping(instance.actor_id)
        if sleep_ctl.run_active:
            raise errors.RivetError(
                "actor",
                "workflow_in_flight",
                "Workflow replay is unavailable while the workflow is currently in flight.",
                status=409,
            )
        history = History.load(conn)
        try:
            doomed = replay_cut(history, entry_id)
        except KeyError:
            raise errors.RivetError(
                "workflow",
                "entry_not_found",
                f"Workflow step not found: {entry_id}",
                metadata={"entryId": entry_id},
                status=404,
            ) from None
        except ValueError as exc:
            raise errors.RivetError(
                "workflow",
                "replay_target_not_step",
                f"Workflow replay target must be a step: {exc}",
                metadata={"entryId": entry_id},
                status=400,
            ) from None
        with conn:
            apply_replay_cut(conn, history, doomed)
        return history

    history = await instance.store.run(cut)
    # Nothing awaited since the check: start the run handler again, as the actor's start does
    # (RivetKit restarts it the same way after a replay).
    forget_engine(instance)
    instance.log.info(
        "workflow replay requested entry_id=%s entries_left=%s", entry_id, len(history.entries)
    )
    instance.sleep_ctl.run_active = True
    instance._spawn(instance._run_handler(instance.definition.hooks["run"]))
    return {
        "history": history_json(history),
        "workflowState": "pending",  # the run starts at the next turn of the event loop
        "isWorkflowEnabled": True,
        "workflowOutput": None,
        "workflowError": None,
    }


def _finished(conn: apsw.Connection) -> bool:
    return load_record(conn).state in ("completed", "failed")


def history_json(history: History) -> dict[str, Any]:
    names: list[str] = []
    index: dict[str, int] = {}

    def name_index(name: str) -> int:
        found = index.get(name)
        if found is None:
            found = index[name] = len(names)
            names.append(name)
        return found

    entries: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {}
    for entry in history:
        if entry.kind == "try":
            continue  # RivetKit records no entry for ctx.try: its name is in its children's paths
        entries.append(
            {
                "id": entry.id,
                "location": _location(history, entry, name_index),
                "kind": _kind(entry),
            }
        )
        metadata[entry.id] = {
            "status": _STATUS.get(entry.status, "PENDING"),
            "error": entry.error,
            "attempts": entry.attempts,
            "lastAttemptAt": entry.last_attempt_at or 0,
            "createdAt": entry.created_at,
            "completedAt": entry.completed_at,
            "rollbackCompletedAt": entry.rollback_completed_at,
            "rollbackError": entry.rollback_error,
        }
    return {"nameRegistry": names, "entries": entries, "entryMetadata": metadata}


_STATUS = {
    "pending": "PENDING",
    "running": "RUNNING",
    "completed": "COMPLETED",
    "failed": "FAILED",
    "exhausted": "EXHAUSTED",
}


def _location(history: History, entry: Entry, name_index: Any) -> list[dict[str, Any]]:
    """RivetKit's location of ``entry``: names of its ancestors, loop iteration markers and
    branch names, down to its own name."""
    out: list[dict[str, Any]] = []
    prefix = b""
    parent: Entry | None = None
    for kind, value in split_path(entry.path):
        if kind == SEG_ENTRY:
            assert isinstance(value, int)
            prefix += bytes([SEG_ENTRY]) + value.to_bytes(4, "big")
            parent = history.entries.get(prefix)
            out.append(
                {"tag": "WorkflowNameIndex", "val": name_index(parent.name if parent else "?")}
            )
        elif kind == SEG_ITERATION:
            assert isinstance(value, int)
            prefix += bytes([SEG_ITERATION]) + value.to_bytes(8, "big")
            loop = name_index(parent.name) if parent is not None else 0
            out.append(
                {"tag": "WorkflowLoopIterationMarker", "val": {"loop": loop, "iteration": value}}
            )
        elif kind == SEG_BRANCH:
            assert isinstance(value, int)
            prefix += bytes([SEG_BRANCH]) + value.to_bytes(2, "big")
            if parent is not None and parent.kind == "try":
                continue  # the body of a try block: the block's name is already there
            order = parent.data.get("order", []) if parent is not None else []
            branch = order[value] if value < len(order) else str(value)
            out.append({"tag": "WorkflowNameIndex", "val": name_index(branch)})
        elif kind == SEG_VERSION:
            out.append({"tag": "WorkflowNameIndex", "val": name_index(str(value))})
    return out


def _branches(data: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "status": str(status.get("status", "pending")).upper(),
            "output": _json_safe(status.get("output")),
            "error": status.get("error"),
        }
        for name, status in (data.get("branches") or {}).items()
    }


def _kind(entry: Entry) -> dict[str, Any]:
    data = entry.data
    kind = entry.kind
    if kind == "step":
        return {
            "tag": "WorkflowStepEntry",
            "val": {"output": _json_safe(data.get("output")), "error": entry.error},
        }
    if kind == "loop":
        return {
            "tag": "WorkflowLoopEntry",
            "val": {
                "state": _json_safe(data.get("state")),
                "iteration": data.get("iteration", 0),
                "output": _json_safe(data.get("output")),
            },
        }
    if kind == "sleep":
        return {
            "tag": "WorkflowSleepEntry",
            "val": {
                "deadline": data.get("deadline") or 0,
                "state": "COMPLETED" if entry.status == "completed" else "PENDING",
            },
        }
    if kind == "message":
        completed = set(data.get("completed") or ())
        return {
            "tag": "WorkflowMessageEntry",
            "val": {
                "name": entry.name,
                "messageData": [
                    {**_json_safe(m), "completed": m.get("id") in completed}
                    for m in data.get("messages") or ()
                ],
            },
        }
    if kind == "rollback_checkpoint":
        return {"tag": "WorkflowRollbackCheckpointEntry", "val": {"name": entry.name}}
    if kind == "join":
        return {"tag": "WorkflowJoinEntry", "val": {"branches": _branches(data)}}
    if kind == "race":
        return {
            "tag": "WorkflowRaceEntry",
            "val": {"winner": data.get("winner"), "branches": _branches(data)},
        }
    if kind == "version_check":
        return {
            "tag": "WorkflowVersionCheckEntry",
            "val": {"resolved": data.get("resolved"), "latest": data.get("latest")},
        }
    return {
        "tag": "WorkflowRemovedEntry",
        "val": {"originalType": kind, "originalName": entry.name},
    }


def _json_safe(value: Any) -> Any:
    """Bytes become lists of byte values and big integers plain ints, as RivetKit's JSON
    inspector routes write them."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return list(bytes(value))
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    return value
