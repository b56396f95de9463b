"""Durable schedules and cron jobs of one actor (mirrors rivetkit-core ``actor/schedule.rs``).

Every pending schedule is a row of ``_rivet_schedule_events`` in the actor's own database, and
every run of a recurring job a row of ``_rivet_schedule_history``, with the encodings the official
runtime uses, so either runtime reads what the other wrote:

* ``kind``: 0 one-shot (``at``), 1 cron expression (``cron``), 2 fixed interval (``every``);
* one-shot ids are random UUIDs, recurring ids are ``"cron:" + name``;
* ``args``: CBOR of the JSON-compat array of arguments (as ``encodeCborCompat(args)``);
* history ``result``: 0 running, 1 ok, 2 error, 3 skipped; error metadata is CBOR.

Firing. While the actor is armed (between :meth:`Scheduler.arm` and :meth:`Scheduler.disarm`),
one clock timer waits for the earliest ``trigger_at``. When it fires, every due row is claimed in
one transaction: one-shots are deleted, recurring rows advance to their next occurrence after
now (missed occurrences collapse into one run, and intervals stay anchored to their deadlines).
Each claimed event then runs its action in a task of its own, in trigger order, with a
:class:`ScheduledFireInfo` appended to the arguments when the action's signature has room for
it (RivetKit always appends it; JavaScript ignores extra arguments, Python does not). Failed runs
are not retried. A recurring job still running when its next occurrence is due gets a
``skipped`` history row instead.

Every change of the earliest ``trigger_at`` is reported to the host (``alarm_changed``), which
wakes a sleeping actor for it; alarms missed while the actor slept or the server was down fire
as soon as the actor is armed again.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import math
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import apsw

from .. import errors
from .._protocol.cbor import cbor_dumps_compat, cbor_loads

if TYPE_CHECKING:
    from .clock import TimerHandle
    from .instance import ActorInstance

__all__ = [
    "Cron",
    "CronFire",
    "CronJob",
    "Schedule",
    "ScheduleErrorInfo",
    "ScheduledEvent",
    "ScheduledFireInfo",
    "Scheduler",
]

T = TypeVar("T")

ScheduleKind = Literal["at", "cron", "every"]
CronFireResult = Literal["running", "ok", "error", "skipped"]

_KIND_AT, _KIND_CRON, _KIND_EVERY = 0, 1, 2
_KIND_NAMES: dict[int, ScheduleKind] = {0: "at", 1: "cron", 2: "every"}
_RUNNING, _OK, _ERROR, _SKIPPED = 0, 1, 2, 3
_RESULT_NAMES: dict[int, CronFireResult] = {0: "running", 1: "ok", 2: "error", 3: "skipped"}

CRON_ID_PREFIX = "cron:"
DEFAULT_MAX_HISTORY = 100  # runs kept per recurring job unless told otherwise
MAX_HISTORY = 1_000  # most runs one job may keep
MAX_ACTOR_HISTORY = 10_000  # most history rows one actor keeps across its jobs
MIN_INTERVAL_MS = 5_000
DEFAULT_HISTORY_LIMIT = 20
_GLOBAL_PRUNE_EVERY = 100  # history inserts between two actor-wide prunes
_GLOBAL_RETAINED = MAX_ACTOR_HISTORY - _GLOBAL_PRUNE_EVERY
_MAX_NAME_BYTES = 128
_MAX_TIMESTAMP = 2**63 - 1
_RETRY_S = 1.0  # after a failure to read due schedules
_STARTUP_POLL_S = 0.05  # an alarm due before the actor is ready waits this long, repeatedly

_COLUMNS = (
    "event_id, trigger_at, action, args, kind, cron_expression, timezone, interval_ms, "
    "last_started_at, max_history"
)
_INSERT_EVENT = (
    f"INSERT INTO _rivet_schedule_events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_RECURRING = (
    _INSERT_EVENT + " ON CONFLICT(event_id) DO UPDATE SET trigger_at = excluded.trigger_at, "
    "action = excluded.action, args = excluded.args, kind = excluded.kind, "
    "cron_expression = excluded.cron_expression, timezone = excluded.timezone, "
    "interval_ms = excluded.interval_ms, max_history = excluded.max_history"
)
_CLAIM_ONE_SHOT = (
    "DELETE FROM _rivet_schedule_events WHERE kind = 0 AND event_id = ? AND trigger_at = ?"
)
# A skipped run (last_started_at NULL) keeps the time the running one started.
_ADVANCE = (
    "UPDATE _rivet_schedule_events SET trigger_at = ?, "
    "last_started_at = COALESCE(?, last_started_at) WHERE event_id = ?"
)
_COUNT_EVENTS = "SELECT COUNT(*) FROM _rivet_schedule_events"
_DUE_EVENTS = (
    f"SELECT {_COLUMNS} FROM _rivet_schedule_events WHERE trigger_at <= ? "
    "ORDER BY trigger_at, event_id"
)
_NEXT_ALARM = "SELECT MIN(trigger_at) FROM _rivet_schedule_events"
_NEXT_FUTURE_ALARM = "SELECT MIN(trigger_at) FROM _rivet_schedule_events WHERE trigger_at > ?"
_INSERT_HISTORY = (
    "INSERT INTO _rivet_schedule_history (schedule_id, action, scheduled_at, fired_at, "
    "finished_at, result, error_group, error_code, error_message, error_metadata) "
    "VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL)"
)
_FINISH_HISTORY = (
    "UPDATE _rivet_schedule_history SET finished_at = ?, result = ?, error_group = ?, "
    "error_code = ?, error_message = ?, error_metadata = ? WHERE id = ? AND result = 0"
)
_RECOVER_HISTORY = (
    "UPDATE _rivet_schedule_history SET finished_at = ?, result = 2, error_group = 'schedule', "
    "error_code = 'interrupted', error_message = ?, error_metadata = NULL WHERE result = 0"
)
_PRUNE_JOB_HISTORY = (
    "DELETE FROM _rivet_schedule_history WHERE id IN (SELECT id FROM _rivet_schedule_history "
    "WHERE schedule_id = ? ORDER BY fired_at DESC, id DESC LIMIT -1 OFFSET ?)"
)
_PRUNE_ACTOR_HISTORY = (
    "DELETE FROM _rivet_schedule_history WHERE id IN (SELECT id FROM _rivet_schedule_history "
    "ORDER BY fired_at DESC, id DESC LIMIT -1 OFFSET ?)"
)
_HISTORY = (
    "SELECT action, scheduled_at, fired_at, finished_at, result, error_group, error_code, "
    "error_message, error_metadata FROM _rivet_schedule_history WHERE schedule_id = ? "
    "ORDER BY fired_at DESC, id DESC LIMIT ?"
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


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


# -- validation ----------------------------------------------------------------------------


def _error(code: str, message: str, **metadata: Any) -> errors.RivetError:
    # RivetKit makes every ``schedule.*`` error public with status 400.
    return errors.RivetError("schedule", code, message, metadata=metadata or None, status=400)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_name(name: Any) -> str:
    if not isinstance(name, str):
        raise _error("invalid_name", "Schedule name is invalid: must be a string", reason="type")
    reason = None
    if not name:
        reason = "must not be empty"
    elif len(name.encode()) > _MAX_NAME_BYTES:
        reason = f"must be at most {_MAX_NAME_BYTES} UTF-8 bytes"
    if reason is not None:
        raise _error("invalid_name", f"Schedule name is invalid: {reason}", reason=reason)
    return name


def _validate_max_history(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_HISTORY:
        raise _error(
            "invalid_max_history",
            f"Schedule max_history must be an integer between 0 and {MAX_HISTORY}; "
            f"received {value!r}.",
            max_history=value if _is_number(value) else None,
            maximum=MAX_HISTORY,
        )
    return value


def _parse_timezone(name: Any) -> ZoneInfo:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            pass
    raise _error("invalid_timezone", f"Schedule timezone {name!r} is invalid.", timezone=str(name))


def _check_cron(expression: Any) -> str:
    """Accept standard five-field expressions only (like croner, RivetKit's parser)."""
    if not isinstance(expression, str):
        raise _error(
            "invalid_cron_expression",
            "Cron expression is invalid: must be a string",
            reason="must be a string",
        )
    fields = expression.split()
    reason = None
    if len(fields) != 5:
        reason = "expected exactly five fields"
    elif any(
        part.split("/")[0] in ("H", "R") or part.startswith(("H(", "R("))
        for field in fields
        for part in field.split(",")
    ):
        reason = "hashed (H) and random (R) fields are not supported"
    elif not _croniter().is_valid(expression):
        reason = "not a valid cron expression"
    if reason is not None:
        raise _error(
            "invalid_cron_expression", f"Cron expression is invalid: {reason}", reason=reason
        )
    return expression


def _croniter() -> Any:
    # Imported on first use: croniter takes ~0.1 s to import, too much for `import rivetkit`.
    from croniter import croniter  # type: ignore[import-untyped]

    return croniter


def _to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def next_cron_time(expression: str, tz: ZoneInfo, after_ms: int) -> int:
    """The first occurrence of ``expression`` strictly after ``after_ms``, in epoch ms.

    The expression is read in local wall time of ``tz``. A wall time skipped by a DST change
    (spring forward) has no occurrence; a wall time that happens twice (fall back) occurs once,
    at its first instant. Both as RivetKit.

    Raises:
        RivetError: ``schedule.invalid_cron_expression`` if it never occurs.
    """
    start = datetime.fromtimestamp(after_ms // 1000, tz).replace(
        microsecond=(after_ms % 1000) * 1000
    )
    try:
        it = _croniter()(expression, start.replace(tzinfo=None))
        for _ in range(10_000):  # at most one DST gap is skipped per day
            wall: datetime = it.get_next(datetime)
            best: int | None = None
            for fold in (0, 1):
                at_ms = _to_ms(wall.replace(tzinfo=tz, fold=fold))
                back = datetime.fromtimestamp(at_ms // 1000, tz).replace(tzinfo=None)
                if back != wall:
                    continue  # in a DST gap: this wall time does not exist
                if at_ms > after_ms and (best is None or at_ms < best):
                    best = at_ms
            if best is not None:
                return best
    except errors.RivetError:
        raise
    except Exception as exc:  # noqa: BLE001 - croniter raises assorted errors
        raise _error(
            "invalid_cron_expression", f"Cron expression is invalid: {exc}", reason=str(exc)
        ) from None
    raise _error(
        "invalid_cron_expression",
        "Cron expression is invalid: it has no next occurrence",
        reason="no next occurrence",
    )


def _encode_args(args: tuple[Any, ...]) -> bytes:
    try:
        return cbor_dumps_compat(list(args))
    except (TypeError, ValueError, OverflowError) as exc:
        raise _error(
            "invalid_arguments",
            f"Scheduled action arguments must be serializable: {exc}",
            reason=str(exc),
        ) from None


def _decode_args(blob: bytes | None) -> list[Any]:
    if not blob:
        return []
    value = cbor_loads(blob, revive=True)
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _error_info(exc: BaseException) -> ScheduleErrorInfo:
    """What the history keeps of a failure: what a client would be shown, never more."""
    if isinstance(exc, errors.RivetError) and exc.public:
        return ScheduleErrorInfo(exc.group, exc.code, exc.message, exc.metadata)
    return ScheduleErrorInfo("rivetkit", "internal_error", errors.INTERNAL_ERROR_MESSAGE)


# -- rows ----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Event:
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
    return _error(
        "invalid_schedule_row",
        f"Stored schedule {event_id!r} is invalid: {reason}",
        schedule_id=str(event_id),
        reason=reason,
    )


def _parse_event(row: tuple[Any, ...]) -> _Event:
    """A stored row, checked as strictly as rivetkit-core reads it."""
    event = _Event(*row)
    ints = (event.trigger_at, event.kind, event.max_history)
    if not isinstance(event.event_id, str) or not isinstance(event.action, str):
        raise _invalid_row(event.event_id, "id or action is not text")
    if not all(isinstance(v, int) for v in ints) or event.kind not in _KIND_NAMES:
        raise _invalid_row(event.event_id, "trigger_at, kind or max_history is invalid")
    if event.args is not None and not isinstance(event.args, bytes):
        raise _invalid_row(event.event_id, "args is not a blob")
    recurring = (event.cron_expression, event.timezone, event.interval_ms)
    if event.kind == _KIND_AT:
        if any(v is not None for v in recurring) or event.max_history != 0:
            raise _invalid_row(event.event_id, "invalid one-shot columns")
    else:
        if not event.event_id.startswith(CRON_ID_PREFIX):
            raise _invalid_row(event.event_id, "recurring id is missing cron prefix")
        if event.kind == _KIND_CRON and (
            event.cron_expression is None or event.timezone is None or event.interval_ms is not None
        ):
            raise _invalid_row(event.event_id, "invalid cron columns")
        if event.kind == _KIND_EVERY and (
            event.cron_expression is not None
            or event.timezone is not None
            or not isinstance(event.interval_ms, int)
            or event.interval_ms < MIN_INTERVAL_MS
        ):
            raise _invalid_row(event.event_id, "invalid interval columns")
    if not 0 <= event.max_history <= MAX_HISTORY:
        raise _invalid_row(event.event_id, "max_history is out of range")
    return event


def _next_recurring(event: _Event, now_ms: int) -> int:
    if event.kind == _KIND_CRON:
        assert event.cron_expression is not None and event.timezone is not None
        return next_cron_time(
            _check_cron(event.cron_expression), _parse_timezone(event.timezone), now_ms
        )
    assert event.interval_ms is not None
    # Anchored to the deadlines, not to when runs happen: no drift, and missed ticks collapse.
    elapsed = max(0, now_ms - event.trigger_at)
    return event.trigger_at + event.interval_ms * (elapsed // event.interval_ms + 1)


def _to_scheduled_event(event: _Event) -> ScheduledEvent:
    return ScheduledEvent(
        event.event_id, event.action, tuple(_decode_args(event.args)), event.trigger_at
    )


def _to_cron_job(event: _Event) -> CronJob:
    every = event.kind == _KIND_EVERY
    return CronJob(
        name=event.name,
        kind="every" if every else "cron",
        action=event.action,
        args=tuple(_decode_args(event.args)),
        next_run_at=event.trigger_at,
        last_run_at=event.last_started_at,
        expression=event.cron_expression,
        timezone=event.timezone,
        interval=event.interval_ms / 1000 if event.interval_ms is not None else None,
        max_history=event.max_history,
    )


def _to_cron_fire(row: tuple[Any, ...]) -> CronFire:
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


@dataclasses.dataclass(slots=True)
class _Dispatch:
    event: _Event
    fire: ScheduledFireInfo
    history_id: int | None


# -- the scheduler -------------------------------------------------------------------------


class Scheduler:
    """Schedules of one actor instance: storage, the alarm timer and the runs in flight.

    The host arms it once the actor is ready (:meth:`arm`) and disarms it when shutdown begins
    (:meth:`disarm`). Disarmed, it keeps accepting schedules (they are persisted and fire after
    the next wake) but fires nothing.
    """

    def __init__(self, actor: ActorInstance) -> None:
        self._actor = actor
        self._armed = False
        self._disarmed = False
        self._recovered = False
        self._timer: TimerHandle | None = None
        self._timer_at: int | None = None
        self._next_at: int | None = None
        self._loaded = False
        self._reported: int | None = None
        self._reported_any = False
        self._running: set[str] = set()  # recurring event ids with a run in flight
        self._tasks: set[asyncio.Task[Any]] = set()  # loading and firing
        self._runs: set[asyncio.Task[None]] = set()  # scheduled actions in flight
        self._history_inserts = 0

    # -- lifecycle -------------------------------------------------------------------------

    def arm(self) -> None:
        """Start firing: load the pending schedules and arm one timer for the earliest.

        Events already due (missed while the actor slept or the server was down) fire at once.
        Runs left ``running`` by a previous generation are recorded as ``schedule.interrupted``.
        Idempotent. The loading happens in a task of the scheduler.
        """
        if self._armed:
            return
        self._armed = True
        self._disarmed = False
        self._spawn(self._load())

    def disarm(self) -> None:
        """Stop firing (shutdown began): cancel the timer. Persisted events stay; actions in
        flight go on (the actor counts as busy while they run; see :meth:`cancel_running`)."""
        self._armed = False
        self._disarmed = True
        self._cancel_timer()

    @property
    def running(self) -> int:
        """How many scheduled actions are in flight."""
        return len(self._runs)

    def cancel_running(self) -> None:
        """Cancel the scheduled actions in flight. The history rows of recurring runs stay
        ``running`` and are recorded as ``schedule.interrupted`` at the next wake."""
        for task in list(self._runs):
            task.cancel()

    def next_alarm_at(self) -> int | None:
        """When the earliest pending schedule is due, in epoch ms (``None``: nothing pending)."""
        actor = self._actor
        if not self._loaded and not actor.stopped and not actor.store.gate.busy:
            self._next_at = self._query_next(actor.store.conn, future_only=False)
            self._loaded = True
        return self._next_at

    # -- internals: storage --------------------------------------------------------------

    async def _run(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn(conn)`` on the actor's database (one synchronous unit, see ActorStore)."""
        return await self._actor.store.run(fn)

    def _live(self) -> bool:
        """Whether timers may be set: from :meth:`arm`, or from the first schedule change of
        an actor that has not begun to stop (its host may skip :meth:`arm` when it knows that
        nothing is pending, and start hooks may schedule before the actor is ready)."""
        if self._armed:
            return True
        actor = self._actor
        if not self._disarmed and actor.stopping is None and not actor.stopped:
            self._armed = True
            return True
        return False

    def _query_next(self, conn: apsw.Connection, *, future_only: bool) -> int | None:
        if future_only:
            row = conn.execute(_NEXT_FUTURE_ALARM, (self._actor.clock.now_ms(),)).fetchone()
        else:
            row = conn.execute(_NEXT_ALARM).fetchone()
        value = row[0] if row else None
        return value if isinstance(value, int) else None

    def _refresh(self, conn: apsw.Connection, *, future_only: bool = False) -> None:
        """After a change: find the earliest trigger, report it to the host, re-arm the timer."""
        at = self._query_next(conn, future_only=future_only)
        self._next_at = at
        self._loaded = True
        if not self._reported_any or at != self._reported:
            try:
                self._actor.alarm_changed(at)
            except Exception:
                self._actor.log.exception("failed to record the next alarm at_ms=%s", at)
            else:
                self._reported_any = True
                self._reported = at
        if self._live():
            self._set_timer(at)

    def _recover(self, conn: apsw.Connection) -> None:
        if self._recovered:
            return
        self._recovered = True
        if not self._running:
            conn.execute(
                _RECOVER_HISTORY,
                (self._actor.clock.now_ms(), "Scheduled action was interrupted before completion."),
            )

    async def _load(self) -> None:
        if self._actor.stopped:
            return

        def load(conn: apsw.Connection) -> None:
            self._recover(conn)
            self._refresh(conn)

        await self._run(load)

    def _changed(self, conn: apsw.Connection) -> None:
        if self._live():
            self._recover(conn)
        self._refresh(conn)

    # -- internals: timer and firing -------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._actor.log.error("schedule task failed", exc_info=task.exception())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _set_timer(self, at: int | None) -> None:
        if at is None:
            self._cancel_timer()
            return
        if self._timer is not None and self._timer_at == at:
            return
        self._cancel_timer()
        clock = self._actor.clock
        delay = max(0.0, (at - clock.now_ms()) / 1000.0)
        self._timer = clock.call_later(delay, self._on_timer)
        self._timer_at = at

    def _retry_later(self) -> None:
        self._cancel_timer()
        if self._live():
            self._timer = self._actor.clock.call_later(_RETRY_S, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        actor = self._actor
        if not self._live() or actor.stopped:
            return
        if not actor.ready:  # due while start hooks still run: no action before start ends
            self._timer = actor.clock.call_later(_STARTUP_POLL_S, self._on_timer)
            return
        self._spawn(self._fire_due())

    async def _fire_due(self) -> None:
        if self._actor.stopped:
            return  # (the store would reopen a closed database)
        try:
            dispatches = await self._run(self._take_due)
        except Exception:
            self._actor.log.exception("failed to load due schedules")
            self._retry_later()
            return
        for dispatch in dispatches:  # trigger order: tasks start in creation order
            run = self._spawn(self._dispatch(dispatch))
            self._runs.add(run)
            run.add_done_callback(self._runs.discard)

    def _take_due(self, conn: apsw.Connection) -> list[_Dispatch]:
        """Claim every due event in one transaction (one-shots deleted, recurring advanced)."""
        actor = self._actor
        if not self._live() or actor.stopped:
            return []
        now = actor.clock.now_ms()
        dispatches: list[_Dispatch] = []
        inserts = self._history_inserts
        with conn:
            for row in conn.execute(_DUE_EVENTS, (now,)).fetchall():
                try:
                    event = _parse_event(row)
                    next_at = None if event.kind == _KIND_AT else _next_recurring(event, now)
                except errors.RivetError as exc:
                    actor.log.error("cannot fire stored schedule, skipping it error=%s", exc)
                    continue
                if next_at is None:
                    conn.execute(_CLAIM_ONE_SHOT, (event.event_id, event.trigger_at))
                    fire = ScheduledFireInfo("at", event.event_id, None, event.trigger_at, now)
                    dispatches.append(_Dispatch(event, fire, None))
                    continue
                skipped = event.event_id in self._running
                conn.execute(_ADVANCE, (next_at, None if skipped else now, event.event_id))
                history_id = None
                if event.max_history > 0:
                    finished_at, result = (now, _SKIPPED) if skipped else (None, _RUNNING)
                    conn.execute(
                        _INSERT_HISTORY,
                        (event.event_id, event.action, event.trigger_at, now, finished_at, result),
                    )
                    history_id = conn.last_insert_rowid()
                    conn.execute(_PRUNE_JOB_HISTORY, (event.event_id, event.max_history))
                    if inserts % _GLOBAL_PRUNE_EVERY == 0:  # the first insert, then every 100
                        conn.execute(_PRUNE_ACTOR_HISTORY, (_GLOBAL_RETAINED,))
                    inserts += 1
                if skipped:
                    actor.log.debug("recurring run skipped, still running name=%s", event.name)
                    continue
                kind = _KIND_NAMES[event.kind]
                fire = ScheduledFireInfo(kind, event.name, event.name, event.trigger_at, now)
                dispatches.append(_Dispatch(event, fire, history_id))
        self._history_inserts = inserts  # only once the transaction committed
        self._running.update(d.event.event_id for d in dispatches if d.fire.name is not None)
        self._refresh(conn, future_only=True)  # rows that cannot fire must not re-fire at once
        return dispatches

    async def _dispatch(self, dispatch: _Dispatch) -> None:
        """Run one claimed event's action and record how it went. Failures are not retried."""
        actor = self._actor
        event = dispatch.event
        error: Exception | None = None
        try:
            args = _decode_args(event.args)
            spec = actor.definition.actions.get(event.action)
            if spec is not None and (spec.max_args is None or len(args) < spec.max_args):
                args.append(dispatch.fire)  # RivetKit appends it; Python needs room for it
            await actor.run_scheduled_action(event.action, args)
        except errors.ActorStopping as exc:
            if actor.stopping is None:
                error = exc
            else:  # refused before it ran: put it back, it fires after the next wake
                if not actor.stopped:
                    await self._run(lambda conn: self._unclaim(conn, dispatch))
                return
        except Exception as exc:  # noqa: BLE001 - user code: recorded and logged below
            error = exc
        finally:
            # Also when cancelled: the history row then stays "running" and is recorded as
            # interrupted at the next wake.
            self._running.discard(event.event_id)
        if error is not None:
            actor.log.error(
                "scheduled action failed action=%s schedule_id=%s error=%s",
                event.action,
                event.event_id,
                error,
                exc_info=None if isinstance(error, errors.RivetError) else error,
            )
        if actor.stopped:
            return
        if dispatch.history_id is not None:
            finished = (actor.clock.now_ms(), dispatch.history_id, error)
            await self._run(lambda conn: self._finish(conn, *finished))
        if (
            not actor.stopped
            and dispatch.fire.name is not None
            and isinstance(error, errors.RivetError)
            and (error.group, error.code) == ("actor", "action_not_found")
        ):
            actor.log.warning(
                "deleting recurring schedule whose action no longer exists name=%s action=%s",
                event.name,
                event.action,
            )
            await self._run(lambda conn: self._delete_if_action(conn, event))

    def _finish(
        self, conn: apsw.Connection, now: int, history_id: int, error: Exception | None
    ) -> None:
        if error is None:
            conn.execute(_FINISH_HISTORY, (now, _OK, None, None, None, None, history_id))
            return
        info = _error_info(error)
        metadata = None
        if info.metadata is not None:
            try:
                metadata = cbor_dumps_compat(info.metadata)
            except (TypeError, ValueError, OverflowError):
                metadata = None
        conn.execute(
            _FINISH_HISTORY,
            (now, _ERROR, info.group, info.code, info.message, metadata, history_id),
        )

    def _delete_if_action(self, conn: apsw.Connection, event: _Event) -> None:
        conn.execute(
            "DELETE FROM _rivet_schedule_events WHERE event_id = ? AND kind != 0 AND action = ?",
            (event.event_id, event.action),
        )
        if conn.changes():
            self._refresh(conn)

    def _unclaim(self, conn: apsw.Connection, dispatch: _Dispatch) -> None:
        event = dispatch.event
        with conn:
            if event.kind == _KIND_AT:
                conn.execute(
                    "INSERT OR IGNORE INTO _rivet_schedule_events "
                    f"({_COLUMNS}) VALUES (?, ?, ?, ?, 0, NULL, NULL, NULL, NULL, 0)",
                    (event.event_id, event.trigger_at, event.action, event.args),
                )
            else:
                conn.execute(
                    "UPDATE _rivet_schedule_events SET trigger_at = MIN(trigger_at, ?), "
                    "last_started_at = ? WHERE event_id = ? AND action = ?",
                    (event.trigger_at, event.last_started_at, event.event_id, event.action),
                )
                if dispatch.history_id is not None:
                    conn.execute(
                        "DELETE FROM _rivet_schedule_history WHERE id = ?", (dispatch.history_id,)
                    )
        self._refresh(conn)

    # -- internals: mutations ----------------------------------------------------------------

    def check_action(self, action: Any, args: tuple[Any, ...]) -> bytes:
        """Validate the action and its arguments; return the encoded arguments."""
        actions = self._actor.definition.actions
        spec = actions.get(action) if isinstance(action, str) else None
        if spec is None:
            raise _error(
                "action_not_found",
                f"Cannot schedule action {action!r}: actor {self._actor.name!r} has no such action.",
                action=str(action),
            )
        count = len(args)
        if count < spec.min_args or (spec.max_args is not None and count > spec.max_args):
            wanted = (
                f"at least {spec.min_args}"
                if spec.max_args is None
                else str(spec.min_args)
                if spec.min_args == spec.max_args
                else f"{spec.min_args} to {spec.max_args}"
            )
            raise _error(
                "invalid_arguments",
                f"Action {action!r} takes {wanted} argument(s); {count} were scheduled.",
                action=action,
                received=count,
            )
        return _encode_args(args)

    def _ensure_capacity(self, conn: apsw.Connection) -> None:
        maximum = self._actor.definition.options.max_schedules
        (count,) = conn.execute(_COUNT_EVENTS).fetchone() or (0,)
        if count >= maximum:
            raise _error(
                "max_schedules_exceeded",
                f"Actor has reached its limit of {maximum} pending schedules.",
                maximum=maximum,
            )

    async def insert_one_shot(self, trigger_at: int, action: str, args: bytes) -> str:
        event_id = str(uuid.uuid4())

        def insert(conn: apsw.Connection) -> None:
            with conn:
                self._ensure_capacity(conn)
                conn.execute(
                    _INSERT_EVENT,
                    (event_id, trigger_at, action, args, _KIND_AT, None, None, None, None, 0),
                )
            self._changed(conn)

        await self._run(insert)
        return event_id

    async def upsert_recurring(
        self,
        name: str,
        *,
        kind: int,
        action: str,
        args: bytes,
        expression: str | None,
        timezone: str | None,
        interval_ms: int | None,
        max_history: int,
        first_at: Callable[[], int],
    ) -> None:
        event_id = CRON_ID_PREFIX + name

        def upsert(conn: apsw.Connection) -> None:
            with conn:
                existing = conn.execute(
                    "SELECT kind, cron_expression, timezone, interval_ms, trigger_at "
                    "FROM _rivet_schedule_events WHERE event_id = ?",
                    (event_id,),
                ).fetchone()
                if existing is None:
                    self._ensure_capacity(conn)
                # Same cadence: keep the next run. Changing only the action, arguments or
                # history size must not move the job.
                if existing is not None and tuple(existing[:4]) == (
                    kind,
                    expression,
                    timezone,
                    interval_ms,
                ):
                    trigger_at = existing[4]
                else:
                    trigger_at = first_at()
                conn.execute(
                    _UPSERT_RECURRING,
                    (
                        event_id,
                        trigger_at,
                        action,
                        args,
                        kind,
                        expression,
                        timezone,
                        interval_ms,
                        None,
                        max_history,
                    ),
                )
                conn.execute(_PRUNE_JOB_HISTORY, (event_id, max_history))
            self._changed(conn)

        await self._run(upsert)

    async def delete_where(self, sql: str, params: tuple[Any, ...]) -> bool:
        def delete(conn: apsw.Connection) -> bool:
            with conn:
                conn.execute(sql, params)
                removed = conn.changes() > 0
            if removed:
                self._changed(conn)
            return removed

        return await self._run(delete)

    async def delete_recurring(self, name: str) -> bool:
        event_id = CRON_ID_PREFIX + name

        def delete(conn: apsw.Connection) -> bool:
            with conn:
                conn.execute(
                    "DELETE FROM _rivet_schedule_history WHERE schedule_id = ? AND EXISTS "
                    "(SELECT 1 FROM _rivet_schedule_events WHERE event_id = ? AND kind != 0)",
                    (event_id, event_id),
                )
                conn.execute(
                    "DELETE FROM _rivet_schedule_events WHERE event_id = ? AND kind != 0",
                    (event_id,),
                )
                removed = conn.changes() > 0
            if removed:
                self._changed(conn)
            return removed

        return await self._run(delete)

    async def select_events(self, where: str, params: tuple[Any, ...]) -> builtins.list[_Event]:
        sql = f"SELECT {_COLUMNS} FROM _rivet_schedule_events WHERE {where} "
        sql += "ORDER BY trigger_at, event_id"
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [_parse_event(row) for row in rows]

    async def select_history(self, name: str, limit: int) -> builtins.list[CronFire]:
        rows = await self._run(
            lambda conn: conn.execute(_HISTORY, (CRON_ID_PREFIX + name, limit)).fetchall()
        )
        return [_to_cron_fire(row) for row in rows]

    def now_ms(self) -> int:
        return self._actor.clock.now_ms()


# -- the APIs on the context ----------------------------------------------------------------


class Schedule:
    """``c.schedule``: one-shot durable alarms that run an action of this actor.

    Example::

        @reminders.action
        async def remind_later(c, text: str) -> str:
            return await c.schedule.after(30, "send_reminder", text)
    """

    __slots__ = ("_s",)

    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    async def after(self, seconds: float, action: str, *args: Any) -> str:
        """Run ``action(*args)`` once, ``seconds`` from now.

        Returns:
            The event id, for :meth:`get` and :meth:`cancel`.

        Raises:
            RivetError: ``schedule.invalid_delay`` (negative or not finite),
                ``schedule.action_not_found``, ``schedule.invalid_arguments`` (wrong count or
                not serializable), ``schedule.max_schedules_exceeded``.
        """
        if not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
            raise _error(
                "invalid_delay",
                f"Schedule delay must be a finite number of seconds >= 0; received {seconds!r}.",
                delay=seconds if _is_number(seconds) and math.isfinite(seconds) else None,
            )
        now = self._s.now_ms()
        if seconds * 1000 > _MAX_TIMESTAMP - now:
            raise _error("invalid_delay", "Schedule delay is too far in the future.", delay=seconds)
        return await self._insert(now + round(seconds * 1000), action, args)

    async def at(self, timestamp_ms: int, action: str, *args: Any) -> str:
        """Run ``action(*args)`` once at ``timestamp_ms`` (epoch milliseconds). A time in the
        past fires at once.

        Returns:
            The event id, for :meth:`get` and :meth:`cancel`.

        Raises:
            RivetError: ``schedule.invalid_timestamp``, and as :meth:`after`.
        """
        if (
            not _is_number(timestamp_ms)
            or not math.isfinite(timestamp_ms)
            or not -_MAX_TIMESTAMP <= timestamp_ms <= _MAX_TIMESTAMP
        ):
            raise _error(
                "invalid_timestamp",
                f"Schedule time must be epoch milliseconds (an integer); received {timestamp_ms!r}.",
            )
        trigger_at = int(timestamp_ms)  # whole milliseconds, as stored
        return await self._insert(trigger_at, action, args)

    async def _insert(self, trigger_at: int, action: str, args: tuple[Any, ...]) -> str:
        encoded = self._s.check_action(action, args)
        return await self._s.insert_one_shot(trigger_at, action, encoded)

    async def get(self, event_id: str) -> ScheduledEvent | None:
        """The pending one-shot ``event_id`` (``None``: it fired, was cancelled, or never was)."""
        events = await self._s.select_events("event_id = ? AND kind = 0", (event_id,))
        return _to_scheduled_event(events[0]) if events else None

    async def list(self) -> builtins.list[ScheduledEvent]:
        """Pending one-shots, earliest first."""
        events = await self._s.select_events("kind = 0", ())
        return [_to_scheduled_event(event) for event in events]

    async def cancel(self, event_id: str) -> bool:
        """Cancel a pending one-shot. Returns whether it was pending."""
        return await self._s.delete_where(
            "DELETE FROM _rivet_schedule_events WHERE event_id = ? AND kind = 0", (event_id,)
        )

    def __repr__(self) -> str:
        return f"<Schedule of {self._s._actor!r}>"


class Cron:
    """``c.cron``: recurring durable jobs, by cron expression or fixed interval.

    Reusing a name updates the job. A new cadence computes a new next run; changing only the
    action, arguments or history size keeps the next run.

    Example::

        @reports.on_create
        async def setup_jobs(c, _input) -> None:
            await c.cron.set("daily", "0 9 * * *", "run_report", "sales",
                             timezone="America/Los_Angeles")
            await c.cron.every("sweep", 15, "sweep_presence")
    """

    __slots__ = ("_s",)

    def __init__(self, scheduler: Scheduler) -> None:
        self._s = scheduler

    async def set(
        self,
        name: str,
        expression: str,
        action: str,
        *args: Any,
        timezone: str | None = None,
        max_history: int = DEFAULT_MAX_HISTORY,
    ) -> None:
        """Run ``action(*args)`` at every occurrence of a five-field cron ``expression``.

        Args:
            name: the job's name (1 to 128 UTF-8 bytes), unique per actor.
            expression: minute, hour, day of month, month, day of week.
            action: the action to run.
            timezone: IANA name the expression is read in (default ``"UTC"``). Wall times that
                DST skips do not run; wall times it repeats run once.
            max_history: runs kept in :meth:`history`, 0 to 1000 (default 100; 0 disables and
                clears it).

        Raises:
            RivetError: ``schedule.invalid_name``, ``schedule.invalid_timezone``,
                ``schedule.invalid_cron_expression``, ``schedule.invalid_max_history``,
                ``schedule.action_not_found``, ``schedule.invalid_arguments``,
                ``schedule.max_schedules_exceeded``.
        """
        _validate_name(name)
        tz_name = "UTC" if timezone is None else timezone
        tz = _parse_timezone(tz_name)
        _check_cron(expression)
        history = _validate_max_history(max_history)
        encoded = self._s.check_action(action, args)
        first_at = next_cron_time(expression, tz, self._s.now_ms())  # also: does it ever occur?
        await self._s.upsert_recurring(
            name,
            kind=_KIND_CRON,
            action=action,
            args=encoded,
            expression=expression,
            timezone=tz_name,
            interval_ms=None,
            max_history=history,
            first_at=lambda: first_at,
        )

    async def every(
        self,
        name: str,
        interval: float,
        action: str,
        *args: Any,
        max_history: int = DEFAULT_MAX_HISTORY,
    ) -> None:
        """Run ``action(*args)`` every ``interval`` seconds (at least 5), the first run one
        interval from now. Runs stay anchored to their deadlines, so slow runs cause no drift.

        Raises:
            RivetError: ``schedule.invalid_interval``, and as :meth:`set`.
        """
        _validate_name(name)
        if not _is_number(interval) or not math.isfinite(interval):
            raise _error(
                "invalid_interval",
                f"Schedule interval must be a finite number of seconds; received {interval!r}.",
                interval_ms=None,
                minimum_ms=MIN_INTERVAL_MS,
            )
        interval_ms = round(interval * 1000)
        if interval_ms < MIN_INTERVAL_MS:
            raise _error(
                "invalid_interval",
                f"Schedule interval must be at least {MIN_INTERVAL_MS / 1000:g} s "
                f"({MIN_INTERVAL_MS} ms); received {interval_ms} ms.",
                interval_ms=interval_ms,
                minimum_ms=MIN_INTERVAL_MS,
            )
        history = _validate_max_history(max_history)
        encoded = self._s.check_action(action, args)
        now = self._s.now_ms()
        await self._s.upsert_recurring(
            name,
            kind=_KIND_EVERY,
            action=action,
            args=encoded,
            expression=None,
            timezone=None,
            interval_ms=interval_ms,
            max_history=history,
            first_at=lambda: now + interval_ms,
        )

    async def get(self, name: str) -> CronJob | None:
        """The job called ``name`` (``None``: no such job)."""
        _validate_name(name)
        events = await self._s.select_events("event_id = ? AND kind != 0", (CRON_ID_PREFIX + name,))
        return _to_cron_job(events[0]) if events else None

    async def list(self) -> builtins.list[CronJob]:
        """Every recurring job, next to run first."""
        events = await self._s.select_events("kind != 0", ())
        return [_to_cron_job(event) for event in events]

    async def delete(self, name: str) -> bool:
        """Delete a job and its history. Returns whether it existed."""
        _validate_name(name)
        return await self._s.delete_recurring(name)

    async def history(
        self, name: str, *, limit: int = DEFAULT_HISTORY_LIMIT
    ) -> builtins.list[CronFire]:
        """The job's most recent runs, newest first.

        Args:
            limit: at most this many, 1 to 1000 (default 20).

        Raises:
            RivetError: ``schedule.invalid_name``, ``schedule.invalid_limit``.
        """
        _validate_name(name)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_HISTORY:
            raise _error(
                "invalid_limit",
                f"History limit must be an integer between 1 and {MAX_HISTORY}; "
                f"received {limit!r}.",
                limit=limit if _is_number(limit) else None,
                maximum=MAX_HISTORY,
            )
        return await self._s.select_history(name, limit)

    def __repr__(self) -> str:
        return f"<Cron of {self._s._actor!r}>"
