"""The one clock the runtime reads: wall time, timers, sleeps and timeouts.

Every time-based behaviour of the runtime (sleep timers, schedules, cron, hook and action timeouts,
transaction deadlines) goes through a :class:`Clock`, so that :class:`rivetkit.testing.FakeClock`
can replace real time in tests and advance it on demand, exactly.

Two kinds of time:

* wall time, ``now_ms()``: integer epoch milliseconds, for anything persisted (``*_at`` columns,
  schedule trigger times);
* timers, ``call_later`` / ``sleep`` / ``timeout``: relative durations in seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

__all__ = ["REAL_CLOCK", "Clock", "TimeoutScope", "TimerHandle"]


class TimerHandle(Protocol):
    """What ``call_later`` returns: something that can be cancelled."""

    def cancel(self) -> None: ...


class TimeoutScope(Protocol):
    """What ``timeout`` returns: an async context manager raising ``TimeoutError`` on expiry."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...

    def expired(self) -> bool: ...


class Clock:
    """Real time: the event loop's timers and the system's wall clock."""

    fake = False

    def now_ms(self) -> int:
        """Wall time in integer epoch milliseconds."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for measuring intervals)."""
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Call ``callback(*args)`` on the running loop after ``delay`` seconds."""
        return asyncio.get_running_loop().call_later(max(delay, 0.0), callback, *args)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def timeout(self, seconds: float | None) -> TimeoutScope:
        """A scope cancelling its body after ``seconds`` (``None``: never); see
        :func:`asyncio.timeout`."""
        return asyncio.timeout(seconds)

    def __repr__(self) -> str:
        return "<Clock real>"


REAL_CLOCK = Clock()
