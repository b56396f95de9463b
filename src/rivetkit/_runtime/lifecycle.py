"""The lifecycle half of an awake actor: shutdown, background work, storage handles.

:class:`ActorLifecycle` is a mixin of :class:`~rivetkit._runtime.instance.ActorInstance` (which
holds the attributes): the graceful shutdown sequence (RivetKit's three steps, bounded by
``sleep_grace_period``), the ``run`` handler, ``keep_awake`` / ``wait_until`` tasks, the abort
signal, and lazy handles for ``c.kv``, ``c.db``, ``c.schedule``, ``c.cron`` and ``c.client()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from .context import ActorContext

if TYPE_CHECKING:
    from .._log import ActorLogger
    from ..client import Client
    from ..definition import ActorDefinition
    from .clock import Clock
    from .conn import Conn
    from .db import ActorDb
    from .instance import ActorInstance
    from .kv import ActorKv
    from .queue import ActorQueue
    from .schedule import Cron, Schedule, Scheduler
    from .sleep import SleepController
    from .storage import ActorStore

__all__ = ["ActorLifecycle", "UNKNOWN_ALARM", "maybe_await"]


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable (hooks may be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


class ActorLifecycle:
    """Shutdown, background work and storage handles of an :class:`ActorInstance`."""

    if not TYPE_CHECKING:
        __slots__ = ()  # the instance declares every slot

    def _self(self) -> ActorInstance:
        return cast("ActorInstance", self)

    if TYPE_CHECKING:
        definition: ActorDefinition
        clock: Clock
        host: Any
        name: str
        actor_id: str
        store: ActorStore
        conns: dict[str, Conn]
        ready: bool
        stopping: str | None
        stopped: bool
        sleep_ctl: SleepController
        _abort: asyncio.Event | None
        _tasks: set[asyncio.Task[Any]] | None
        _wait_until: set[asyncio.Task[Any]] | None
        _run_task: asyncio.Task[Any] | None
        _autosave: Any
        _changed: asyncio.Event | None
        _kv: ActorKv | None
        _db: ActorDb | None
        _scheduler: Scheduler | None
        _queue: ActorQueue | None
        _destroy_after_sleep: bool
        _save_interval: float | None
        _schedule_alarm: Any
        _run_alarm: int | None
        _pushed_alarm: Any

        @property
        def log(self) -> ActorLogger: ...

        async def stop(self) -> None: ...

        async def close_conn(self, conn: Conn) -> None: ...

        async def hibernate_conns(self) -> None: ...

        def save_state(self) -> Awaitable[None]: ...

        def _schedule_save(self) -> None: ...

        async def call_action(self, name: str, args: list[Any], conn: Conn | None) -> Any: ...

    # -- shutdown --------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask the host to put the actor to sleep (``"sleep"``) or destroy it (``"destroy"``).

        Returns at once; the shutdown sequence runs in the background. A second request while
        stopping is ignored, except that destroy wins over a sleep that has not finished.
        """
        if self.stopped or self.stopping == "destroy":
            return
        if self.stopping == "sleep":
            if reason == "destroy":
                self._destroy_after_sleep = True
            return
        if self.host is None:
            raise RuntimeError(f"actor {self.name!r} is not hosted by a registry")
        self.host.stop_actor(self, reason)

    @property
    def abort_signal(self) -> asyncio.Event:
        if self._abort is None:
            self._abort = asyncio.Event()
            if self.stopping is not None:
                self._abort.set()
        return self._abort

    def begin_stop(self, reason: str) -> None:
        """Step 1 of the shutdown, synchronous: from here on dispatch is refused."""
        self.stopping = reason
        self.sleep_ctl.cancel()
        if self._abort is not None:
            self._abort.set()
        if self._queue is not None:
            self._queue.abort()
        if self._scheduler is not None:
            self._scheduler.disarm()

    @property
    def aborted(self) -> bool:
        return self.stopping is not None

    async def shutdown(self, reason: str) -> None:
        """The graceful shutdown sequence (RivetKit lifecycle), bounded by ``sleep_grace_period``.

        1. The abort signal fires; new connections and dispatch are refused; alarms are
           disarmed (schedules stay persisted).
        2. Sleep waits for ``run`` to return; then ``on_sleep`` / ``on_destroy``; connections
           are closed (``ws.going_away`` on sleep, so clients reconnect and wake the actor) and
           ``on_disconnect`` runs for each; in-flight requests, ``keep_awake`` and
           ``wait_until`` work drain.
        3. Whatever is still running when the window ends is cancelled; the state is saved.
        """
        if self.stopping is None:
            self.begin_stop(reason)
        grace = self.definition.options.sleep_grace_period
        try:
            async with self.clock.timeout(grace):
                await self._graceful(reason)
        except TimeoutError:
            self.log.warning(
                "shutdown exceeded sleep_grace_period, proceeding reason=%s grace_s=%s",
                reason,
                grace,
            )
        except Exception:
            self.log.exception("shutdown hook failed reason=%s", reason)
        if self._scheduler is not None:
            self._scheduler.cancel_running()
        leftovers = [t for t in self._tasks or () if not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=1.0)
        if reason == "sleep":
            try:
                await self.hibernate_conns()
            except Exception:
                self.log.exception("hibernatable connections not stored; closing them")
        for conn in list(self.conns.values()):
            if conn.socket is not None:
                conn.socket.close(*_close_for(reason))
            await self.close_conn(conn)
        if self.store.gate.busy:  # the final write must not join a user transaction
            async with self.store.gate.hold():
                await self.stop()
        else:
            await self.stop()

    async def _graceful(self, reason: str) -> None:
        ctx = ActorContext(self._self())
        hooks = self.definition.hooks
        run = self._run_task
        if reason == "sleep" and run is not None and not run.done():
            await asyncio.wait({run})
        hook = hooks.get("on_sleep" if reason == "sleep" else "on_destroy")
        if hook is not None:
            await maybe_await(hook(ctx))
        if reason == "sleep":
            await self.hibernate_conns()  # engine mode: the gateway keeps these sockets
        code, why = _close_for(reason)
        for conn in list(self.conns.values()):
            if conn.socket is not None:
                conn.socket.close(code, why)
        while self.conns or self.sleep_ctl.busy or self._wait_until:
            changed = self._changed
            if changed is None:
                changed = self._changed = asyncio.Event()
            changed.clear()
            pending: set[Any] = {asyncio.ensure_future(changed.wait())}
            pending.update(self._wait_until or ())
            waiter = next(iter(pending))
            try:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    def _notify_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()

    # -- background work -------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_handler(self, fn: Callable[..., Any]) -> None:
        self._run_task = asyncio.current_task()
        self._arm_autosave()
        try:
            await fn(ActorContext(self._self()))
            self.log.debug("run handler returned")
        except asyncio.CancelledError:
            if self.stopping is None:
                raise
            self.log.warning("run handler cancelled at the end of the grace period")
        except Exception:
            self.log.exception("run handler raised")
        finally:
            self.sleep_ctl.run_active = False
            if self._queue is not None:
                self._queue.release_in_flight()  # delivered again by the next receive
            if self.definition.has_state and not self.stopped:
                try:
                    await self.save_state()
                except Exception:
                    self.log.exception("state save after run handler failed")
            self.sleep_ctl.check()

    def _arm_autosave(self) -> None:
        """While ``run`` is active, commit changes it makes to the state once a second."""
        if not self.definition.has_state:
            return
        interval = self._save_interval or 1.0

        def tick() -> None:
            self._autosave = None
            if self.stopped or not self.sleep_ctl.run_active:
                return
            self._schedule_save()
            self._autosave = self.clock.call_later(interval, tick)

        self._autosave = self.clock.call_later(interval, tick)

    def keep_awake(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``awaitable`` as a task that keeps the actor awake (no idle sleep, and the
        shutdown window waits for it). Returns the task; await it for the result."""
        self.sleep_ctl.busy += 1

        async def body() -> Any:
            try:
                return await awaitable
            finally:
                self.sleep_ctl.release()

        return self._spawn(body())

    def wait_until(self, awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``awaitable`` as a task the shutdown window waits for (it does not prevent idle
        sleep). Returns the task."""

        async def body() -> Any:
            return await awaitable

        task = self._spawn(body())
        if self._wait_until is None:
            self._wait_until = set()
        self._wait_until.add(task)
        task.add_done_callback(self._wait_until.discard)
        return task

    # -- storage APIs ----------------------------------------------------------------------

    @property
    def kv(self) -> ActorKv:
        if self._kv is None:
            from .kv import ActorKv

            self._kv = ActorKv(self.store)
        return self._kv

    @property
    def db(self) -> ActorDb:
        if self._db is None:
            from .db import ActorDb

            self._db = ActorDb(self.store, self.clock, log=self.log)
        return self._db

    @property
    def queue(self) -> ActorQueue:
        if self._queue is None:
            from .queue import ActorQueue

            self._queue = ActorQueue(self._self())
        return self._queue

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            from .schedule import Scheduler

            self._scheduler = Scheduler(self._self())
        return self._scheduler

    @property
    def schedule(self) -> Schedule:
        from .schedule import Schedule

        return Schedule(self.scheduler)

    @property
    def cron(self) -> Cron:
        from .schedule import Cron

        return Cron(self.scheduler)

    def client(self) -> Client:
        if self.host is None:
            raise RuntimeError(f"actor {self.name!r} is not hosted by a registry")
        client: Client = self.host.client()
        return client

    async def run_scheduled_action(self, name: str, args: list[Any]) -> Any:
        """Run action ``name`` for a schedule or cron job (no connection), committing its state.

        The actor counts as busy (it does not sleep) while the action runs.

        Raises:
            ActorStopping: the actor began to stop (the event stays persisted and fires after
                the next wake).
        """
        self.sleep_ctl.acquire()
        try:
            return await self.call_action(name, args, None)
        finally:
            self.sleep_ctl.release()

    def alarm_changed(self, at_ms: int | None) -> None:
        """The scheduler's earliest pending event changed (``None``: nothing pending)."""
        self._schedule_alarm = at_ms
        self._push_alarm()

    def set_run_alarm(self, at_ms: int | None) -> None:
        """When the run handler (a workflow's durable sleep) needs the actor awake again, in
        epoch ms (``None``: never). Together with the schedules this is the actor's alarm: a
        sleeping actor is woken for it, also after a restart of the server."""
        self._run_alarm = at_ms
        self._push_alarm()

    def _push_alarm(self) -> None:
        """Record the earliest of the scheduler's and the run handler's alarms with the host, so
        that a sleeping actor is woken for it and alarms missed while the server was down fire
        at restart."""
        if self.host is None:
            return
        schedule = self._schedule_alarm
        if schedule is UNKNOWN_ALARM:
            scheduler = self.scheduler
            schedule = scheduler.next_alarm_at()
            if not scheduler.loaded:
                return  # loading reports through alarm_changed, which pushes both
            self._schedule_alarm = schedule
        run = self._run_alarm
        candidates = [at for at in (schedule, run) if isinstance(at, int)]
        at_ms = min(candidates) if candidates else None
        if at_ms == self._pushed_alarm:
            return
        self.host.set_alarm(self.actor_id, at_ms)
        self._pushed_alarm = at_ms

    @contextlib.contextmanager
    def idle_wait(self) -> Iterator[None]:
        """Mark the run handler as waiting for something from outside (a queue message, the
        end of a workflow's durable sleep): the actor may sleep meanwhile, as RivetKit allows
        while ``run`` is blocked on a queue receive. A sleep ends the wait through the abort
        signal."""
        ctl = self.sleep_ctl
        ctl.queue_waits += 1
        ctl.check()
        try:
            yield
        finally:
            ctl.queue_waits -= 1


UNKNOWN_ALARM: Any = object()  # not known yet in this generation


def _close_for(reason: str) -> tuple[int, str]:
    """How connections are closed when the actor stops: on sleep with ``ws.going_away`` (the
    client reconnects, which wakes the actor); on destroy with ``actor.destroyed``."""
    if reason == "sleep":
        return 1001, "ws.going_away"
    return 1011, "actor.destroyed"
