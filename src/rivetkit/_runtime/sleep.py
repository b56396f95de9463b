"""When an awake actor may sleep: idleness as RivetKit defines it, and the idle timer.

An actor is idle when all of these hold (RivetKit lifecycle, ``can_arm_sleep_timer`` in
rivetkit-core): it finished starting and is not stopping; no HTTP request, scheduled action,
``keep_awake`` task, raw WebSocket handler or disconnect callback is in flight (``busy``); it has no
connection; and its ``run`` handler is not running, or is waiting on a queue.

The timer costs nothing on the hot path: becoming busy only increments a counter. Becoming idle
records the time and arms one clock timer if none is armed. When the timer fires it sleeps the
actor if it stayed idle for the whole ``sleep_timeout``, or re-arms itself for the remainder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import errors

if TYPE_CHECKING:
    from .clock import TimerHandle
    from .instance import ActorInstance

__all__ = ["SleepController"]


class SleepController:
    """Idle tracking and the sleep timer of one actor."""

    __slots__ = ("_actor", "_since", "_timeout", "_timer", "busy", "queue_waits", "run_active")

    def __init__(self, actor: ActorInstance, timeout: float) -> None:
        self._actor = actor
        self._timeout = timeout
        self.busy = 0  # requests, scheduled actions, keep_awake, raw websockets, disconnects
        self.run_active = False
        self.queue_waits = 0  # run handler blocked on a queue receive (sleep-compatible)
        self._timer: TimerHandle | None = None
        self._since = 0.0

    def acquire(self) -> None:
        """Count one unit of work in flight; the actor does not sleep until it is released.

        Raises:
            ActorStopping: the actor already began to sleep or to be destroyed.
        """
        actor = self._actor
        if actor.stopping is not None:
            raise errors.ActorStopping(actor.actor_id)
        self.busy += 1

    def release(self) -> None:
        self.busy -= 1
        if self.busy == 0:
            self.check()
            self._actor._notify_changed()

    def can_sleep(self) -> bool:
        actor = self._actor
        return (
            actor.ready
            and actor.stopping is None
            and self.busy == 0
            and len(actor.conns) == actor.hibernatable_conns
            and (not self.run_active or self.queue_waits > 0)
        )

    def check(self) -> None:
        """Something that kept the actor awake ended: start counting idle time if idle now."""
        if self.can_sleep():
            clock = self._actor.clock
            self._since = clock.monotonic()
            if self._timer is None:
                self._timer = clock.call_later(self._timeout, self._fire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if not self.can_sleep():
            return  # busy again: the end of that work re-arms the timer
        actor = self._actor
        remaining = self._since + self._timeout - actor.clock.monotonic()
        if remaining > 1e-6:
            self._timer = actor.clock.call_later(remaining, self._fire)
            return
        actor.log.debug("actor idle for sleep_timeout, sleeping timeout_s=%s", self._timeout)
        actor.request_stop("sleep")
