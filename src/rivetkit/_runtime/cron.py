"""When recurring schedules fire next: five-field cron expressions read in an IANA timezone
(DST rules as RivetKit's), and fixed intervals anchored to their deadlines.

croniter is imported on first use, not with this module. :mod:`.schedule` validates expressions
and timezones with :func:`check_cron` and :func:`parse_timezone` when a job is set;
:mod:`.scheduler` advances stored rows (:class:`.schedule_rows.EventRow`) with
:func:`next_recurring` when they fire.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .. import errors
from .schedule_rows import KIND_CRON, EventRow, schedule_error

__all__ = ["check_cron", "next_cron_time", "next_recurring", "parse_timezone"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def parse_timezone(name: Any) -> ZoneInfo:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            pass
    raise schedule_error(
        "invalid_timezone", f"Schedule timezone {name!r} is invalid.", timezone=str(name)
    )


def check_cron(expression: Any) -> str:
    """Accept standard five-field expressions only (like croner, RivetKit's parser)."""
    if not isinstance(expression, str):
        raise schedule_error(
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
        raise schedule_error(
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
        raise schedule_error(
            "invalid_cron_expression", f"Cron expression is invalid: {exc}", reason=str(exc)
        ) from None
    raise schedule_error(
        "invalid_cron_expression",
        "Cron expression is invalid: it has no next occurrence",
        reason="no next occurrence",
    )


def next_recurring(event: EventRow, now_ms: int) -> int:
    if event.kind == KIND_CRON:
        assert event.cron_expression is not None and event.timezone is not None
        return next_cron_time(
            check_cron(event.cron_expression), parse_timezone(event.timezone), now_ms
        )
    assert event.interval_ms is not None
    # Anchored to the deadlines, not to when runs happen: no drift, and missed ticks collapse.
    elapsed = max(0, now_ms - event.trigger_at)
    return event.trigger_at + event.interval_ms * (elapsed // event.interval_ms + 1)
