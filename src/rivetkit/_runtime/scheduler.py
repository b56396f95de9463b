"""The scheduler of one actor: the storage of its schedules, the alarm timer, and the
scheduled actions in flight (mirrors rivetkit-core ``actor/schedule.rs``).

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

The rows and statements are in :mod:`.schedule_rows`, next occurrences come from :mod:`.cron`,
and the ``c.schedule`` / ``c.cron`` APIs over this class are in :mod:`.schedule`.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import apsw

from .. import errors
from .._protocol.cbor import cbor_dumps_compat
from .cron import next_recurring
from .ids import random_uuid
from .schedule_rows import (
    ADVANCE,
    CLAIM_ONE_SHOT,
    COLUMNS,
    COUNT_EVENTS,
    CRON_ID_PREFIX,
    DUE_EVENTS,
    FINISH_HISTORY,
    HISTORY,
    INSERT_EVENT,
    INSERT_HISTORY,
    KIND_AT,
    KIND_NAMES,
    NEXT_ALARM,
    NEXT_FUTURE_ALARM,
    PRUNE_ACTOR_HISTORY,
    PRUNE_JOB_HISTORY,
    RECOVER_HISTORY,
    RESULT_ERROR,
    RESULT_OK,
    RESULT_RUNNING,
    RESULT_SKIPPED,
    UPSERT_RECURRING,
    CronFire,
    EventRow,
    ScheduledFireInfo,
    decode_args,
    encode_args,
    error_info,
    parse_event,
    schedule_error,
    to_cron_fire,
)

if TYPE_CHECKING:
    from .clock import TimerHandle
    from .instance import ActorInstance

__all__ = ["MAX_ACTOR_HISTORY", "Scheduler"]

T = TypeVar("T")

MAX_ACTOR_HISTORY = 10_000  # most history rows one actor keeps across its jobs
_GLOBAL_PRUNE_EVERY = 100  # history inserts between two actor-wide prunes
_GLOBAL_RETAINED = MAX_ACTOR_HISTORY - _GLOBAL_PRUNE_EVERY
_RETRY_S = 1.0  # after a failure to read due schedules
_STARTUP_POLL_S = 0.05  # an alarm due before the actor is ready waits this long, repeatedly


@dataclasses.dataclass(slots=True)
class _Dispatch:
    event: EventRow
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

    @property
    def loaded(self) -> bool:
        """The earliest pending event is known (read from storage in this generation)."""
        return self._loaded

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

    def _query_next(
        self, conn: apsw.Connection, *, future_only: bool, now: int | None = None
    ) -> int | None:
        if future_only:
            # ``now`` must be the time the due events were claimed at: with a second clock read,
            # an event falling due in between would be neither claimed nor re-armed.
            at = self._actor.clock.now_ms() if now is None else now
            row = conn.execute(NEXT_FUTURE_ALARM, (at,)).fetchone()
        else:
            row = conn.execute(NEXT_ALARM).fetchone()
        value = row[0] if row else None
        return value if isinstance(value, int) else None

    def _refresh(
        self, conn: apsw.Connection, *, future_only: bool = False, now: int | None = None
    ) -> None:
        """After a change: find the earliest trigger, report it to the host, re-arm the timer."""
        at = self._query_next(conn, future_only=future_only, now=now)
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
                RECOVER_HISTORY,
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
            for row in conn.execute(DUE_EVENTS, (now,)).fetchall():
                try:
                    event = parse_event(row)
                    next_at = None if event.kind == KIND_AT else next_recurring(event, now)
                except errors.RivetError as exc:
                    actor.log.error("cannot fire stored schedule, skipping it error=%s", exc)
                    continue
                if next_at is None:
                    conn.execute(CLAIM_ONE_SHOT, (event.event_id, event.trigger_at))
                    fire = ScheduledFireInfo("at", event.event_id, None, event.trigger_at, now)
                    dispatches.append(_Dispatch(event, fire, None))
                    continue
                skipped = event.event_id in self._running
                conn.execute(ADVANCE, (next_at, None if skipped else now, event.event_id))
                history_id = None
                if event.max_history > 0:
                    finished_at, result = (
                        (now, RESULT_SKIPPED) if skipped else (None, RESULT_RUNNING)
                    )
                    conn.execute(
                        INSERT_HISTORY,
                        (event.event_id, event.action, event.trigger_at, now, finished_at, result),
                    )
                    history_id = conn.last_insert_rowid()
                    conn.execute(PRUNE_JOB_HISTORY, (event.event_id, event.max_history))
                    if inserts % _GLOBAL_PRUNE_EVERY == 0:  # the first insert, then every 100
                        conn.execute(PRUNE_ACTOR_HISTORY, (_GLOBAL_RETAINED,))
                    inserts += 1
                if skipped:
                    actor.log.debug("recurring run skipped, still running name=%s", event.name)
                    continue
                kind = KIND_NAMES[event.kind]
                fire = ScheduledFireInfo(kind, event.name, event.name, event.trigger_at, now)
                dispatches.append(_Dispatch(event, fire, history_id))
        self._history_inserts = inserts  # only once the transaction committed
        self._running.update(d.event.event_id for d in dispatches if d.fire.name is not None)
        # Rows that cannot fire must not re-fire at once; rows due after `now` arm the timer.
        self._refresh(conn, future_only=True, now=now)
        return dispatches

    async def _dispatch(self, dispatch: _Dispatch) -> None:
        """Run one claimed event's action and record how it went. Failures are not retried."""
        actor = self._actor
        event = dispatch.event
        error: Exception | None = None
        try:
            args = decode_args(event.args)
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
            conn.execute(FINISH_HISTORY, (now, RESULT_OK, None, None, None, None, history_id))
            return
        info = error_info(error)
        metadata = None
        if info.metadata is not None:
            try:
                metadata = cbor_dumps_compat(info.metadata)
            except (TypeError, ValueError, OverflowError):
                metadata = None
        conn.execute(
            FINISH_HISTORY,
            (now, RESULT_ERROR, info.group, info.code, info.message, metadata, history_id),
        )

    def _delete_if_action(self, conn: apsw.Connection, event: EventRow) -> None:
        conn.execute(
            "DELETE FROM _rivet_schedule_events WHERE event_id = ? AND kind != 0 AND action = ?",
            (event.event_id, event.action),
        )
        if conn.changes():
            self._refresh(conn)

    def _unclaim(self, conn: apsw.Connection, dispatch: _Dispatch) -> None:
        event = dispatch.event
        with conn:
            if event.kind == KIND_AT:
                conn.execute(
                    "INSERT OR IGNORE INTO _rivet_schedule_events "
                    f"({COLUMNS}) VALUES (?, ?, ?, ?, 0, NULL, NULL, NULL, NULL, 0)",
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
            raise schedule_error(
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
            raise schedule_error(
                "invalid_arguments",
                f"Action {action!r} takes {wanted} argument(s); {count} were scheduled.",
                action=action,
                received=count,
            )
        return encode_args(args)

    def _ensure_capacity(self, conn: apsw.Connection) -> None:
        maximum = self._actor.definition.options.max_schedules
        (count,) = conn.execute(COUNT_EVENTS).fetchone() or (0,)
        if count >= maximum:
            raise schedule_error(
                "max_schedules_exceeded",
                f"Actor has reached its limit of {maximum} pending schedules.",
                maximum=maximum,
            )

    async def insert_one_shot(self, trigger_at: int, action: str, args: bytes) -> str:
        event_id = random_uuid()

        def insert(conn: apsw.Connection) -> None:
            with conn:
                self._ensure_capacity(conn)
                conn.execute(
                    INSERT_EVENT,
                    (event_id, trigger_at, action, args, KIND_AT, None, None, None, None, 0),
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
                    UPSERT_RECURRING,
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
                conn.execute(PRUNE_JOB_HISTORY, (event_id, max_history))
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

    async def select_events(self, where: str, params: tuple[Any, ...]) -> builtins.list[EventRow]:
        sql = f"SELECT {COLUMNS} FROM _rivet_schedule_events WHERE {where} "
        sql += "ORDER BY trigger_at, event_id"
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [parse_event(row) for row in rows]

    async def select_history(self, name: str, limit: int) -> builtins.list[CronFire]:
        rows = await self._run(
            lambda conn: conn.execute(HISTORY, (CRON_ID_PREFIX + name, limit)).fetchall()
        )
        return [to_cron_fire(row) for row in rows]

    def now_ms(self) -> int:
        return self._actor.clock.now_ms()
