"""``c.schedule`` and ``c.cron``: durable schedules and cron jobs of one actor (mirrors
rivetkit-core ``actor/schedule.rs``).

This module holds the two APIs on the context and the validation of what they are given. The
work is done by :class:`~.scheduler.Scheduler` (storage, the alarm timer, firing), the rows and
public values are in :mod:`.schedule_rows`, and cron expressions and next occurrences in
:mod:`.cron`. The public values and ``Scheduler`` are re-exported here, where the rest of the
package imports them from.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

from .cron import check_cron, next_cron_time, parse_timezone
from .schedule_rows import (
    CRON_ID_PREFIX,
    KIND_CRON,
    KIND_EVERY,
    MAX_HISTORY,
    MIN_INTERVAL_MS,
    CronFire,
    CronJob,
    ScheduledEvent,
    ScheduledFireInfo,
    ScheduleErrorInfo,
    schedule_error,
    to_cron_job,
    to_scheduled_event,
)
from .scheduler import Scheduler

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

DEFAULT_MAX_HISTORY = 100  # runs kept per recurring job unless told otherwise
DEFAULT_HISTORY_LIMIT = 20
_MAX_NAME_BYTES = 128
_MAX_TIMESTAMP = 2**63 - 1


# -- validation ----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_name(name: Any) -> str:
    if not isinstance(name, str):
        raise schedule_error(
            "invalid_name", "Schedule name is invalid: must be a string", reason="type"
        )
    reason = None
    if not name:
        reason = "must not be empty"
    elif len(name.encode()) > _MAX_NAME_BYTES:
        reason = f"must be at most {_MAX_NAME_BYTES} UTF-8 bytes"
    if reason is not None:
        raise schedule_error("invalid_name", f"Schedule name is invalid: {reason}", reason=reason)
    return name


def _validate_max_history(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_HISTORY:
        raise schedule_error(
            "invalid_max_history",
            f"Schedule max_history must be an integer between 0 and {MAX_HISTORY}; "
            f"received {value!r}.",
            max_history=value if _is_number(value) else None,
            maximum=MAX_HISTORY,
        )
    return value


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
            raise schedule_error(
                "invalid_delay",
                f"Schedule delay must be a finite number of seconds >= 0; received {seconds!r}.",
                delay=seconds if _is_number(seconds) and math.isfinite(seconds) else None,
            )
        now = self._s.now_ms()
        if seconds * 1000 > _MAX_TIMESTAMP - now:
            raise schedule_error(
                "invalid_delay", "Schedule delay is too far in the future.", delay=seconds
            )
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
            raise schedule_error(
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
        return to_scheduled_event(events[0]) if events else None

    async def list(self) -> builtins.list[ScheduledEvent]:
        """Pending one-shots, earliest first."""
        events = await self._s.select_events("kind = 0", ())
        return [to_scheduled_event(event) for event in events]

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
        tz = parse_timezone(tz_name)
        check_cron(expression)
        history = _validate_max_history(max_history)
        encoded = self._s.check_action(action, args)
        first_at = next_cron_time(expression, tz, self._s.now_ms())  # also: does it ever occur?
        await self._s.upsert_recurring(
            name,
            kind=KIND_CRON,
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
            raise schedule_error(
                "invalid_interval",
                f"Schedule interval must be a finite number of seconds; received {interval!r}.",
                interval_ms=None,
                minimum_ms=MIN_INTERVAL_MS,
            )
        interval_ms = round(interval * 1000)
        if interval_ms < MIN_INTERVAL_MS:
            raise schedule_error(
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
            kind=KIND_EVERY,
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
        return to_cron_job(events[0]) if events else None

    async def list(self) -> builtins.list[CronJob]:
        """Every recurring job, next to run first."""
        events = await self._s.select_events("kind != 0", ())
        return [to_cron_job(event) for event in events]

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
            raise schedule_error(
                "invalid_limit",
                f"History limit must be an integer between 1 and {MAX_HISTORY}; "
                f"received {limit!r}.",
                limit=limit if _is_number(limit) else None,
                maximum=MAX_HISTORY,
            )
        return await self._s.select_history(name, limit)

    def __repr__(self) -> str:
        return f"<Cron of {self._s._actor!r}>"
