"""A clock that only moves when told to: :class:`FakeClock` (public as ``rivetkit.testing.FakeClock``).

Timers are kept in a heap of their own instead of the event loop's. ``await clock.advance(...)``
moves time forward timer by timer: it sets the time to the next due timer, runs it, lets the event
loop run until the work that timer started has settled, and repeats until the target time. A sleep
timer, a schedule or a cron job therefore fires at exactly its time, in order, with no real wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .clock import Clock

__all__ = ["FakeClock"]


class _FakeTimer:
    __slots__ = ("args", "callback", "cancelled", "seq", "when")

    def __init__(self, when: float, seq: int, callback: Callable[..., Any], args: tuple[Any, ...]):
        self.when = when
        self.seq = seq
        self.callback = callback
        self.args = args
        self.cancelled = False

    def __lt__(self, other: _FakeTimer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class _FakeTimeout:
    """``asyncio.timeout`` whose deadline is a fake timer."""

    def __init__(self, clock: FakeClock, seconds: float | None) -> None:
        self._clock = clock
        self._seconds = seconds
        self._inner = asyncio.timeout(None)
        self._timer: _FakeTimer | None = None

    async def __aenter__(self) -> _FakeTimeout:
        await self._inner.__aenter__()
        if self._seconds is not None:
            self._timer = self._clock.call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        self._timer = None
        # Expire on the loop's next iteration: asyncio then cancels the body and turns the
        # cancellation into TimeoutError, exactly as with a real deadline.
        self._inner.reschedule(asyncio.get_running_loop().time())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._inner.__aexit__(exc_type, exc, tb)
        return None

    def expired(self) -> bool:
        return self._inner.expired()


class FakeClock(Clock):
    """A clock for tests: time stands still until :meth:`advance` moves it.

    Args:
        start_ms: the wall time to start at, in epoch milliseconds (default: the real time now).

    Example::

        clock = FakeClock()
        registry = rivetkit.setup(counter, clock=clock)
        ...
        await clock.advance(minutes=5)   # sleep timers and schedules due in 5 minutes fire
    """

    fake = True

    def __init__(self, start_ms: int | None = None) -> None:
        self._now_ms = float(start_ms if start_ms is not None else time.time_ns() // 1_000_000)
        self._timers: list[_FakeTimer] = []
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"<FakeClock now_ms={self.now_ms()} timers={self.pending}>"

    # -- Clock -----------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._now_ms)

    def monotonic(self) -> float:
        return self._now_ms / 1000.0

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _FakeTimer:
        timer = _FakeTimer(self._now_ms + max(delay, 0.0) * 1000.0, next(self._seq), callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    def timeout(self, seconds: float | None) -> _FakeTimeout:
        return _FakeTimeout(self, seconds)

    # -- control ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many timers are waiting."""
        return sum(1 for t in self._timers if not t.cancelled)

    def next_at_ms(self) -> int | None:
        """When the next timer is due (epoch ms), or ``None``."""
        self._drop_cancelled()
        return int(self._timers[0].when) if self._timers else None

    async def advance(
        self,
        seconds: float = 0.0,
        *,
        minutes: float = 0.0,
        hours: float = 0.0,
        days: float = 0.0,
        ms: float = 0.0,
    ) -> None:
        """Move time forward, firing every timer that falls due, in order, and settling the
        event loop after each.

        Raises:
            ValueError: a negative duration.
        """
        delta_ms = ms + 1000.0 * (seconds + 60.0 * minutes + 3600.0 * hours + 86400.0 * days)
        if delta_ms < 0:
            raise ValueError(f"FakeClock.advance needs a duration >= 0, got {delta_ms} ms")
        target = self._now_ms + delta_ms
        await self.settle()
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0].when > target:
                break
            timer = heapq.heappop(self._timers)
            self._now_ms = max(self._now_ms, timer.when)
            timer.callback(*timer.args)
            await self.settle()
        self._now_ms = target
        await self.settle()

    async def advance_to(self, at_ms: int) -> None:
        """Move time forward to epoch milliseconds ``at_ms`` (see :meth:`advance`)."""
        await self.advance(ms=max(0.0, at_ms - self._now_ms))

    async def settle(self, rounds: int = 10_000) -> None:
        """Run the event loop until nothing is ready to run (the work of fired timers is done).

        Waits on real I/O are not awaited; only work that is ready on the loop.
        """
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)
        quiet = 0
        for _ in range(rounds):
            await asyncio.sleep(0)
            if ready is None:
                quiet += 1
                if quiet >= 50:
                    return
            elif not ready:
                quiet += 1
                if quiet >= 3:
                    return
            else:
                quiet = 0

    def _drop_cancelled(self) -> None:
        timers = self._timers
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
