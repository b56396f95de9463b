"""How schedules are stored: the rows of ``_rivet_schedule_events`` and
``_rivet_schedule_history``, their SQL, and the public values they decode into.

The encodings are the official runtime's (rivetkit-core ``actor/schedule.rs``), so either runtime
reads what the other wrote:

* ``kind``: 0 one-shot (``at``), 1 cron expression (``cron``), 2 fixed interval (``every``);
* one-shot ids are random UUIDs, recurring ids are ``"cron:" + name``;
* ``args``: CBOR of the JSON-compat array of arguments (as ``encodeCborCompat(args)``);
* history ``result``: 0 running, 1 ok, 2 error, 3 skipped; error metadata is CBOR.

:mod:`.scheduler` runs these statements; :mod:`.schedule` re-exports the public values and
builds them from rows with the converters here; :mod:`.cron` computes the next ``trigger_at``
of recurring rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from .. import errors
from .._protocol.cbor import cbor_dumps_compat, cbor_loads

__all__ = [
    "ADVANCE",
    "CLAIM_ONE_SHOT",
    "COLUMNS",
    "COUNT_EVENTS",
    "CRON_ID_PREFIX",
    "DUE_EVENTS",
    "FINISH_HISTORY",
    "HISTORY",
    "INSERT_EVENT",
    "INSERT_HISTORY",
    "KIND_AT",
    "KIND_CRON",
    "KIND_EVERY",
    "KIND_NAMES",
    "MAX_HISTORY",
    "MIN_INTERVAL_MS",
    "NEXT_ALARM",
    "NEXT_FUTURE_ALARM",
    "PRUNE_ACTOR_HISTORY",
    "PRUNE_JOB_HISTORY",
    "RECOVER_HISTORY",
    "RESULT_ERROR",
    "RESULT_OK",
    "RESULT_RUNNING",
    "RESULT_SKIPPED",
    "UPSERT_RECURRING",
    "CronFire",
    "CronFireResult",
    "CronJob",
    "EventRow",
    "ScheduleErrorInfo",
    "ScheduleKind",
    "ScheduledEvent",
    "ScheduledFireInfo",
    "decode_args",
    "encode_args",
    "error_info",
    "parse_event",
    "schedule_error",
    "to_cron_fire",
    "to_cron_job",
    "to_scheduled_event",
]

ScheduleKind = Literal["at", "cron", "every"]
CronFireResult = Literal["running", "ok", "error", "skipped"]

KIND_AT, KIND_CRON, KIND_EVERY = 0, 1, 2
KIND_NAMES: dict[int, ScheduleKind] = {0: "at", 1: "cron", 2: "every"}
RESULT_RUNNING, RESULT_OK, RESULT_ERROR, RESULT_SKIPPED = 0, 1, 2, 3
_RESULT_NAMES: dict[int, CronFireResult] = {0: "running", 1: "ok", 2: "error", 3: "skipped"}

CRON_ID_PREFIX = "cron:"
MAX_HISTORY = 1_000  # most runs one job may keep
MIN_INTERVAL_MS = 5_000

COLUMNS = (
    "event_id, trigger_at, action, args, kind, cron_expression, timezone, interval_ms, "
    "last_started_at, max_history"
)
INSERT_EVENT = (
    f"INSERT INTO _rivet_schedule_events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_RECURRING = (
    INSERT_EVENT + " ON CONFLICT(event_id) DO UPDATE SET trigger_at = excluded.trigger_at, "
    "action = excluded.action, args = excluded.args, kind = excluded.kind, "
    "cron_expression = excluded.cron_expression, timezone = excluded.timezone, "
    "interval_ms = excluded.interval_ms, max_history = excluded.max_history"
)
CLAIM_ONE_SHOT = (
    "DELETE FROM _rivet_schedule_events WHERE kind = 0 AND event_id = ? AND trigger_at = ?"
)
# A skipped run (last_started_at NULL) keeps the time the running one started.
ADVANCE = (
    "UPDATE _rivet_schedule_events SET trigger_at = ?, "
    "last_started_at = COALESCE(?, last_started_at) WHERE event_id = ?"
)
COUNT_EVENTS = "SELECT COUNT(*) FROM _rivet_schedule_events"
DUE_EVENTS = (
    f"SELECT {COLUMNS} FROM _rivet_schedule_events WHERE trigger_at <= ? "
    "ORDER BY trigger_at, event_id"
)
NEXT_ALARM = "SELECT MIN(trigger_at) FROM _rivet_schedule_events"
NEXT_FUTURE_ALARM = "SELECT MIN(trigger_at) FROM _rivet_schedule_events WHERE trigger_at > ?"
INSERT_HISTORY = (
    "INSERT INTO _rivet_schedule_history (schedule_id, action, scheduled_at, fired_at, "
    "finished_at, result, error_group, error_code, error_message, error_metadata) "
    "VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL)"
)
FINISH_HISTORY = (
    "UPDATE _rivet_schedule_history SET finished_at = ?, result = ?, error_group = ?, "
    "error_code = ?, error_message = ?, error_metadata = ? WHERE id = ? AND result = 0"
)
RECOVER_HISTORY = (
    "UPDATE _rivet_schedule_history SET finished_at = ?, result = 2, error_group = 'schedule', "
    "error_code = 'interrupted', error_message = ?, error_metadata = NULL WHERE result = 0"
)
PRUNE_JOB_HISTORY = (
    "DELETE FROM _rivet_schedule_history WHERE id IN (SELECT id FROM _rivet_schedule_history "
    "WHERE schedule_id = ? ORDER BY fired_at DESC, id DESC LIMIT -1 OFFSET ?)"
)
PRUNE_ACTOR_HISTORY = (
    "DELETE FROM _rivet_schedule_history WHERE id IN (SELECT id FROM _rivet_schedule_history "
    "ORDER BY fired_at DESC, id DESC LIMIT -1 OFFSET ?)"
)
HISTORY = (
    "SELECT action, scheduled_at, fired_at, finished_at, result, error_group, error_code, "
    "error_message, error_metadata FROM _rivet_schedule_history WHERE schedule_id = ? "
    "ORDER BY fired_at DESC, id DESC LIMIT ?"
)


# -- public values -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduledEvent:
    """A pending one-shot schedule (``schedule.after`` / ``schedule.at``).

    Attributes:
        id: the event id (a UUID string) returned when it was scheduled.
        action: the action it will run.
        args: the arguments it will pass.
        run_at: when it fires, in epoch milliseconds.
    """

    id: str
    action: str
    args: tuple[Any, ...]
    run_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class CronJob:
    """A recurring job (``cron.set`` / ``cron.every``).

    Attributes:
        name: the job's name, unique per actor.
        kind: ``"cron"`` for an expression, ``"every"`` for a fixed interval.
        action: the action each run calls.
        args: the arguments each run passes.
        next_run_at: the next run, epoch ms.
        last_run_at: when the last run started, epoch ms (``None``: never ran).
        expression: the five-field cron expression (``kind == "cron"``), else ``None``.
        timezone: the IANA timezone the expression is read in (``kind == "cron"``), else ``None``.
        interval: seconds between runs (``kind == "every"``), else ``None``.
        max_history: how many runs the job keeps in its history.
    """

    name: str
    kind: Literal["cron", "every"]
    action: str
    args: tuple[Any, ...]
    next_run_at: int
    last_run_at: int | None
    expression: str | None
    timezone: str | None
    interval: float | None
    max_history: int


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleErrorInfo:
    """Why a recurring run failed. Errors that are not public are recorded as
    ``rivetkit.internal_error`` with a generic message, as clients would see them."""

    group: str
    code: str
    message: str
    metadata: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class CronFire:
    """One run of a recurring job, as kept in its history (newest first).

    Attributes:
        action: the action the run called.
        scheduled_at: the occurrence it ran for, epoch ms.
        fired_at: when it started, epoch ms.
        finished_at: when it ended, epoch ms (``None`` while running).
        result: ``"running"``, ``"ok"``, ``"error"`` or ``"skipped"`` (the previous run was
            still going).
        error: what failed, for ``"error"``.
    """

    action: str
    scheduled_at: int
    fired_at: int
    finished_at: int | None
    result: CronFireResult
    error: ScheduleErrorInfo | None


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduledFireInfo:
    """Passed to a scheduled action after its own arguments, when its signature has room.

    Attributes:
        kind: ``"at"`` (one-shot), ``"cron"`` or ``"every"``.
        id: the event id of a one-shot; the job name of a recurring job.
        name: the job name of a recurring job, ``None`` for a one-shot.
        scheduled_at: the time it was due, epoch ms.
        fired_at: the time it fired, epoch ms.

    Example::

        @a.action
        def report(c, region: str, fire: ScheduledFireInfo | None = None) -> None:
            if fire is not None:
                c.log.info("late by %s ms", fire.fired_at - fire.scheduled_at)
    """

    kind: ScheduleKind
    id: str
    name: str | None
    scheduled_at: int
    fired_at: int


# -- errors and codecs --------------------------------------------------------------------


def schedule_error(code: str, message: str, **metadata: Any) -> errors.RivetError:
    # RivetKit makes every ``schedule.*`` error public with status 400.
    return errors.RivetError("schedule", code, message, metadata=metadata or None, status=400)


def encode_args(args: tuple[Any, ...]) -> bytes:
    try:
        return cbor_dumps_compat(list(args))
    except (TypeError, ValueError, OverflowError) as exc:
        raise schedule_error(
            "invalid_arguments",
            f"Scheduled action arguments must be serializable: {exc}",
            reason=str(exc),
        ) from None


def decode_args(blob: bytes | None) -> list[Any]:
    if not blob:
        return []
    value = cbor_loads(blob, revive=True)
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def error_info(exc: BaseException) -> ScheduleErrorInfo:
    """What the history keeps of a failure: what a client would be shown, never more."""
    if isinstance(exc, errors.RivetError) and exc.public:
        return ScheduleErrorInfo(exc.group, exc.code, exc.message, exc.metadata)
    return ScheduleErrorInfo("rivetkit", "internal_error", errors.INTERNAL_ERROR_MESSAGE)


# -- rows ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class EventRow:
    event_id: str
    trigger_at: int
    action: str
    args: bytes | None
    kind: int
    cron_expression: str | None
    timezone: str | None
    interval_ms: int | None
    last_started_at: int | None
    max_history: int

    @property
    def name(self) -> str:
        return self.event_id[len(CRON_ID_PREFIX) :]


def _invalid_row(event_id: Any, reason: str) -> errors.RivetError:
    return schedule_error(
        "invalid_schedule_row",
        f"Stored schedule {event_id!r} is invalid: {reason}",
        schedule_id=str(event_id),
        reason=reason,
    )


def parse_event(row: tuple[Any, ...]) -> EventRow:
    """A stored row, checked as strictly as rivetkit-core reads it."""
    event = EventRow(*row)
    ints = (event.trigger_at, event.kind, event.max_history)
    if not isinstance(event.event_id, str) or not isinstance(event.action, str):
        raise _invalid_row(event.event_id, "id or action is not text")
    if not all(isinstance(v, int) for v in ints) or event.kind not in KIND_NAMES:
        raise _invalid_row(event.event_id, "trigger_at, kind or max_history is invalid")
    if event.args is not None and not isinstance(event.args, bytes):
        raise _invalid_row(event.event_id, "args is not a blob")
    recurring = (event.cron_expression, event.timezone, event.interval_ms)
    if event.kind == KIND_AT:
        if any(v is not None for v in recurring) or event.max_history != 0:
            raise _invalid_row(event.event_id, "invalid one-shot columns")
    else:
        if not event.event_id.startswith(CRON_ID_PREFIX):
            raise _invalid_row(event.event_id, "recurring id is missing cron prefix")
        if event.kind == KIND_CRON and (
            event.cron_expression is None or event.timezone is None or event.interval_ms is not None
        ):
            raise _invalid_row(event.event_id, "invalid cron columns")
        if event.kind == KIND_EVERY and (
            event.cron_expression is not None
            or event.timezone is not None
            or not isinstance(event.interval_ms, int)
            or event.interval_ms < MIN_INTERVAL_MS
        ):
            raise _invalid_row(event.event_id, "invalid interval columns")
    if not 0 <= event.max_history <= MAX_HISTORY:
        raise _invalid_row(event.event_id, "max_history is out of range")
    return event


def to_scheduled_event(event: EventRow) -> ScheduledEvent:
    return ScheduledEvent(
        event.event_id, event.action, tuple(decode_args(event.args)), event.trigger_at
    )


def to_cron_job(event: EventRow) -> CronJob:
    every = event.kind == KIND_EVERY
    return CronJob(
        name=event.name,
        kind="every" if every else "cron",
        action=event.action,
        args=tuple(decode_args(event.args)),
        next_run_at=event.trigger_at,
        last_run_at=event.last_started_at,
        expression=event.cron_expression,
        timezone=event.timezone,
        interval=event.interval_ms / 1000 if event.interval_ms is not None else None,
        max_history=event.max_history,
    )


def to_cron_fire(row: tuple[Any, ...]) -> CronFire:
    action, scheduled_at, fired_at, finished_at, result, group, code, message, metadata = row
    if result not in _RESULT_NAMES:
        raise _invalid_row("<history>", "unknown result")
    error = None
    if group is not None or code is not None or message is not None:
        if group is None or code is None or message is None:
            raise _invalid_row("<history>", "error columns are incomplete")
        error = ScheduleErrorInfo(
            group, code, message, cbor_loads(metadata) if metadata is not None else None
        )
    return CronFire(action, scheduled_at, fired_at, finished_at, _RESULT_NAMES[result], error)
