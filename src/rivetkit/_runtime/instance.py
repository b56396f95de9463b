"""One awake actor: lifecycle, action dispatch, durable state saves.

Ordering invariants (carried over from RivetKit's lifecycle):

* create: ``create_state`` -> ``on_create`` -> initial state committed -> ``create_vars`` ->
  ``on_wake``; wake: ``create_vars`` -> ``on_wake``. No action runs before ``start`` finishes.
* A state change made by an action is committed before that action's response leaves the
  process. Saves requested in the same event-loop tick share one commit.
* A failing action still commits the state changes it made before failing (roll-forward).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import errors
from .._log import ActorLogger, actor_logger
from .clock import REAL_CLOCK, Clock
from .conn import HIBERNATE_REASON, Conn, ConnSocket, Hibernation
from .context import ActionContext, ActorContext
from .hibernation import PersistedConn, conn_snapshot, delete_conns, persist_conns
from .lifecycle import UNKNOWN_ALARM, ActorLifecycle, maybe_await
from .sleep import SleepController
from .state import StateCodec
from .storage import write_state

if TYPE_CHECKING:
    import apsw

    from ..definition import ActorDefinition
    from .db import ActorDb
    from .journal import StateJournal
    from .kv import ActorKv
    from .queue import ActorQueue
    from .schedule import Scheduler
    from .storage import ActorStore

__all__ = ["ActorInstance", "decode_input"]


async def _run_hook(
    clock: Clock, what: str, seconds: float | None, fn: Callable[..., Any], *args: Any
) -> Any:
    """Call a hook, awaiting it within ``seconds`` (on ``clock``) when it is async."""
    result = fn(*args)
    if not inspect.isawaitable(result):
        return result
    if seconds is None:
        return await result
    try:
        async with clock.timeout(seconds):
            return await result
    except TimeoutError:
        raise errors.RivetError(
            "actor", "callback_timed_out", f"{what} timed out after {seconds:g} s", status=500
        ) from None


def decode_input(data: bytes | None) -> Any:
    """Creation input as stored: CBOR of the JSON-compat form (client-protocol §3.4)."""
    if data is None:
        return None
    from .._protocol.cbor import cbor_loads

    return cbor_loads(data, revive=True)


def _invalid_args(name: str, got: int, lo: int, hi: int | None) -> errors.RivetError:
    if hi is None:
        wanted = f"at least {lo}"
    elif lo == hi:
        wanted = str(lo)
    else:
        wanted = f"{lo} to {hi}"
    return errors.RivetError(
        "actor",
        "invalid_arguments",
        f"Action `{name}` takes {wanted} argument(s), got {got}.",
        metadata={"action": name, "received": got},
        status=400,
    )


class ActorInstance(ActorLifecycle):
    """An awake actor and everything it holds in memory (lifecycle half: :mod:`.lifecycle`)."""

    # Slots: an awake actor should cost a few kilobytes (100k awake actors per process).
    __slots__ = (
        "__weakref__",
        "_abort",
        "_ack_tail",
        "_acks_waiting",
        "_action_timeout",
        "_after_save",
        "_autosave",
        "_changed",
        "_committed",
        "_conns_to_store",
        "_db",
        "_destroy_after_sleep",
        "_http_headers",
        "_in_file",
        "_kv",
        "_log",
        "_loop",
        "_pushed_alarm",
        "_queue",
        "_run_alarm",
        "_run_task",
        "_save_future",
        "_save_interval",
        "_save_scheduled",
        "_schedule_alarm",
        "_scheduler",
        "_state_seq",
        "_tasks",
        "_wait_until",
        "actor_id",
        "clock",
        "codec",
        "conns",
        "definition",
        "generation",
        "hibernatable_conns",
        "host",
        "journal",
        "key",
        "max_outgoing",
        "name",
        "ready",
        "sleep_ctl",
        "state",
        "stopped",
        "stopping",
        "store",
        "subscribers",
        "vars",
    )

    def __init__(
        self,
        definition: ActorDefinition,
        *,
        actor_id: str,
        key: tuple[str, ...],
        generation: int,
        store: ActorStore,
        codec: StateCodec,
        clock: Clock = REAL_CLOCK,
        host: Any = None,
    ) -> None:
        self.definition = definition
        self.clock = clock
        self.host = host  # the driver hosting this actor (alarms, sleep, destroy, client)
        self.name = definition.name
        self.actor_id = actor_id
        self.key = key
        self.generation = generation
        self.store = store
        self.codec = codec
        self.state: Any = None
        self.vars: Any = None
        self.conns: dict[str, Conn] = {}
        self.hibernatable_conns = 0  # of self.conns: those that do not keep the actor awake
        # Hibernatable connections whose rows the next state commit checks (and writes if their
        # state or subscriptions changed): opened, acted on or (un)subscribed since the last.
        self._conns_to_store: set[Conn] = set()
        self.subscribers: dict[str, set[Conn]] = {}
        self._log: ActorLogger | None = None
        self._committed: bytes | None = None  # last durable state (journal or file)
        self._in_file: bytes | None = None  # what the actor's own file holds
        self._state_seq = 0  # number of the last state commit (file or journal)
        self.journal: StateJournal | None = None
        self._save_future: asyncio.Future[None] | None = None
        self._after_save: list[Callable[[BaseException | None], None]] | None = None
        # Engine mode: commits whose waiters wait for the engine's acknowledgement, and the last
        # one's future (later waiters are answered after earlier ones, never before).
        self._acks_waiting = 0
        self._ack_tail: asyncio.Future[None] | None = None
        self._save_scheduled = False
        self._save_interval = definition.options.state_save_interval
        self._action_timeout = definition.options.action_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self.max_outgoing = 1024 * 1024
        self.ready = False  # start() finished: hooks ran, dispatch allowed
        self.stopping: str | None = None  # "sleep" or "destroy" once shutdown began
        self.stopped = False  # final state written, storage released
        self.sleep_ctl = SleepController(self, definition.options.sleep_timeout)
        self._abort: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] | None = None  # run, keep_awake, wait_until
        self._wait_until: set[asyncio.Task[Any]] | None = None
        self._destroy_after_sleep = False
        self._http_headers: Any = None
        self._run_task: asyncio.Task[Any] | None = None
        self._autosave: Any = None
        self._changed: asyncio.Event | None = None  # set when busy work or conns go away
        self._kv: ActorKv | None = None
        self._db: ActorDb | None = None
        self._scheduler: Scheduler | None = None
        self._queue: ActorQueue | None = None
        self._schedule_alarm: Any = UNKNOWN_ALARM  # earliest schedule (scheduler reports it)
        self._run_alarm: int | None = None  # a workflow's durable sleep
        self._pushed_alarm: Any = UNKNOWN_ALARM  # what the host was told last

    def __repr__(self) -> str:
        return f"<ActorInstance {self.name} {self.key!r} {self.actor_id}>"

    @property
    def log(self) -> ActorLogger:
        """The actor's logger (``c.log``), tagging records with its name, key and id."""
        log = self._log
        if log is None:
            log = self._log = ActorLogger(
                actor_logger,
                {"actor": self.name, "actor_key": list(self.key), "actor_id": self.actor_id},
            )
        return log

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, arm_alarms: bool = True) -> None:
        """Load the actor from storage, running the create hooks the first time.

        Args:
            arm_alarms: load the actor's schedules and arm its next alarm (the host passes
                false when it knows the actor has none, to save a query per wake).
        """
        self._loop = asyncio.get_running_loop()
        definition = self.definition
        hooks = definition.hooks
        opts = definition.options
        ctx = ActorContext(self)
        has_initialized, input_bytes, state_bytes, self._state_seq = self.store.load()
        on_migrate = hooks.get("on_migrate")
        if on_migrate is not None:
            from .db import migrate

            await migrate(
                ctx,
                on_migrate,
                db=self.db,
                is_new=not has_initialized,
                timeout=opts.on_migrate_timeout,
                clock=self.clock,
            )
        self._in_file = state_bytes
        if self.journal is not None:
            journaled = self.journal.get(self.actor_id)
            if journaled is not None and journaled[1] > self._state_seq:
                state_bytes, self._state_seq = journaled  # committed after the file's state
        if not has_initialized:
            input_value = decode_input(input_bytes)
            create_state = hooks.get("create_state")
            if create_state is not None:
                state = await maybe_await(create_state(ctx, input_value))
                if self.codec.kind == "plain" and StateCodec.for_type(type(state)).kind != "plain":
                    raise TypeError(
                        f"create_state of actor {self.name!r} returned a "
                        f"{type(state).__name__}; annotate its return type "
                        f"(`-> {type(state).__name__}`) so the state can be restored after a "
                        "restart"
                    )
                self.codec.to_builtin(state)  # type check with a clear message
            elif definition.state is not None:
                state = self.codec.copy(definition.state)
            else:
                state = None
            self.state = state
            on_create = hooks.get("on_create")
            if on_create is not None:
                await maybe_await(on_create(ctx, input_value))
            encoded = self.codec.encode(self.state) if definition.has_state else None
            self.store.initialize(encoded)
            self._committed = self._in_file = encoded
            durable = self.store.durable()
            if durable is not None:  # engine mode: created (and migrated) once acknowledged
                await durable
        else:
            self._committed = state_bytes
            self.state = self.codec.decode(state_bytes) if state_bytes is not None else None
        create_vars = hooks.get("create_vars")
        if create_vars is not None:
            self.vars = await _run_hook(
                self.clock, "create_vars", opts.create_vars_timeout, create_vars, ctx
            )
        elif definition.vars is not None:
            self.vars = copy.deepcopy(definition.vars)
        on_wake = hooks.get("on_wake")
        if on_wake is not None:
            await maybe_await(on_wake(ctx))
        if definition.has_state and (on_wake is not None or create_vars is not None):
            await self.save_state()  # what the wake hooks changed is durable now
        durable = self.store.durable()
        if durable is not None:  # engine mode: whatever start wrote is acknowledged first
            await durable
        self.ready = True
        if arm_alarms or self._scheduler is not None:
            self.scheduler.arm()
        else:  # the host knows of no alarm: none is pending
            self._schedule_alarm = self._pushed_alarm = None
        run = hooks.get("run")
        if run is not None:
            self.sleep_ctl.run_active = True
            self._spawn(self._run_handler(run))
        self.sleep_ctl.check()
        if actor_logger.isEnabledFor(logging.DEBUG):  # the logger adapter costs ~340 B per actor
            self.log.debug("actor started generation=%s", self.generation)

    async def stop(self) -> None:
        """Commit pending state and release the database (the last step of a shutdown)."""
        if self.stopped:
            return
        self.stopped = True
        self.ready = False
        if self._autosave is not None:
            self._autosave.cancel()
            self._autosave = None
        try:
            if self.definition.has_state:
                data = self.codec.encode(self.state)
                changed = data != self._committed
                if data != self._in_file:
                    self.store.save_state(data, self.next_state_seq())
                    self._in_file = data
                self._committed = data
                if self.journal is not None:
                    self.journal.forget(self.actor_id)  # the file holds the latest state now
                if changed:
                    self._state_changed()
            durable = self.store.durable()
            if durable is not None:  # engine mode: stopped once every commit is acknowledged
                await durable
        finally:
            self.store.close()

    # -- state -----------------------------------------------------------------------------

    def set_state(self, value: Any) -> None:
        if not self.definition.has_state:
            raise errors.RivetError(
                "actor",
                "state_not_enabled",
                f"actor {self.name!r} has no state: give it state=... or @create_state",
                status=500,
                public=False,
            )
        self.codec.to_builtin(value)
        self.state = value

    def _state_changed(self) -> None:
        hook = self.definition.hooks.get("on_state_change")
        if hook is not None:
            try:
                hook(ActorContext(self), self.state)
            except Exception:
                self.log.exception("on_state_change raised")

    def next_state_seq(self) -> int:
        """The number of the next state commit (see journal.py)."""
        self._state_seq += 1
        return self._state_seq

    async def commit_with(self, write: Callable[[apsw.Connection], None]) -> None:
        """Commit the current state together with ``write(conn)``'s changes in one transaction
        of the actor's own file (a workflow step and the state changes it made are durable
        together, or not at all).

        ``write`` runs inside the transaction and must not await. The state's commit number
        makes this file write win over an older journal row after a crash.
        """
        has_state = self.definition.has_state
        data = self.codec.encode(self.state) if has_state else None

        def txn(conn: apsw.Connection) -> None:
            with conn:
                if data is not None and data != self._in_file:
                    write_state(
                        conn, data, self._state_seq + 1 if self.store.records_state_seq else None
                    )
                write(conn)

        await self.store.run(txn)
        if data is not None and data != self._in_file:
            self._state_seq += 1
            self._in_file = data
            if data != self._committed:
                self._committed = data
                self._state_changed()

    def prepare_commit(self) -> bytes | None:
        """The state's bytes if they changed since the last commit, else ``None``."""
        if self.stopped or not self.definition.has_state:
            return None  # stop() wrote the final state itself
        data = self.codec.encode(self.state)
        return None if data == self._committed else data

    def finish_commit(self, data: bytes | None, error: BaseException | None) -> None:
        """Record a commit (``data``: the bytes now durable) and answer everyone waiting on it."""
        self._save_scheduled = False
        if data is not None:
            self._committed = data
            self._state_changed()
        future = self._save_future
        self._save_future = None
        callbacks = self._after_save
        self._after_save = None
        self._answer_savers(future, callbacks, error)

    def _answer_savers(
        self,
        future: asyncio.Future[None] | None,
        callbacks: list[Callable[[BaseException | None], None]] | None,
        error: BaseException | None,
    ) -> None:
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        if callbacks is not None:
            for callback in callbacks:
                try:
                    callback(error)
                except Exception:
                    self.log.exception("error while answering after a state commit")

    def _save_tick(self, gated: bool = False) -> None:
        """Commit to the actor's own file (no journal, or a deferred ``state_save_interval``)."""
        if not gated and self.store.gate.busy and not self.stopped:
            # A user transaction spans awaits on the file: commit after it, not inside it.
            self._spawn(self._save_tick_after_gate())
            return
        try:
            data = self.prepare_commit()
            also = self._conn_rows() if self._conns_to_store else None
            if data is not None or also is not None:
                self.store.save_state(
                    data, self.next_state_seq() if data is not None else 0, also
                )
                if data is not None:
                    self._in_file = data
        except BaseException as exc:
            self.finish_commit(None, exc)
            return
        self.store.send_commits()  # (engine mode: this tick's commits, merged, leave now)
        durable = self.store.durable()
        if durable is None and self._acks_waiting:
            # Nothing of this commit to wait for, but earlier waiters are still to be answered:
            # answer these after them (responses leave in the order the actions finished).
            durable = self._ack_tail
        if durable is None:
            self.finish_commit(data, None)
        else:
            self._finish_when_durable(durable, data)

    def _conn_rows(self) -> Callable[[apsw.Connection], None] | None:
        """The writes of the connections to store whose state or subscriptions changed since
        their rows were written (``None``: none did)."""
        conns, self._conns_to_store = self._conns_to_store, set()
        if self.stopped:
            return None  # hibernate_conns() wrote them, or they are gone
        changed: list[Conn] = []
        snapshots: list[tuple[bytes, bytes]] = []
        for conn in conns:
            if conn.closed or conn.hibernating or conn.hibernation is None:
                continue
            snapshot = conn_snapshot(conn)
            if snapshot != conn.stored:
                changed.append(conn)
                snapshots.append(snapshot)
        if not changed:
            return None
        return functools.partial(persist_conns, conns=changed, snapshots=snapshots)

    def store_conn(self, conn: Conn) -> None:
        """Engine mode: have the next state commit write ``conn``'s rows if its state or
        subscriptions changed (a new connection: its first rows), so that it outlives this
        generation, a crash of this process included."""
        if conn.hibernation is not None and not conn.closed:
            self._conns_to_store.add(conn)

    def _store_conn_soon(self, conn: Conn) -> None:
        """:meth:`store_conn` with a commit at the end of this tick (a subscription change)."""
        if conn.hibernation is not None and not conn.closed:
            self._conns_to_store.add(conn)
            self._schedule_save()

    def _finish_when_durable(self, durable: asyncio.Future[None], data: bytes | None) -> None:
        """Engine mode: answer this commit's waiters once the engine acknowledged it.

        The waiters are taken now: a save requested while the engine answers belongs to the
        next commit, which this acknowledgement must not answer.
        """
        self._save_scheduled = False
        future, self._save_future = self._save_future, None
        callbacks, self._after_save = self._after_save, None
        if data is not None:
            self._committed = data  # what later saves compare with (a failure fails the store)
        self._acks_waiting += 1
        self._ack_tail = durable

        def acknowledged(done: asyncio.Future[None]) -> None:
            self._acks_waiting -= 1
            if not self._acks_waiting:
                self._ack_tail = None
            error = (
                errors.RivetError("sqlite", "commit_interrupted", "the commit was cancelled")
                if done.cancelled()
                else done.exception()
            )
            if data is not None and error is None:
                self._state_changed()
            self._answer_savers(future, callbacks, error)

        durable.add_done_callback(acknowledged)

    async def _save_tick_after_gate(self) -> None:
        async with self.store.gate.hold():
            self._save_tick(gated=True)

    def _schedule_save(self) -> None:
        if not self._save_scheduled:
            self._save_scheduled = True
            if self._save_interval is not None:
                (self._loop or asyncio.get_running_loop()).call_later(
                    self._save_interval, self._save_tick
                )
            elif self.journal is not None:
                self.journal.mark_dirty(self)  # one commit for every actor saving this tick
            else:
                (self._loop or asyncio.get_running_loop()).call_soon(self._save_tick)

    def save_state(self) -> Awaitable[None]:
        """Commit the state at the end of this loop tick; saves in one tick share a commit.

        With ``state_save_interval`` set, schedules a deferred save and returns at once.
        """
        self._schedule_save()
        if self._save_interval is not None:
            return _DONE
        future = self._save_future
        if future is None:
            future = self._save_future = (self._loop or asyncio.get_running_loop()).create_future()
        return future

    def save_then(self, callback: Callable[[BaseException | None], None]) -> None:
        """Commit the state at the end of this loop tick, then call ``callback(error)``.

        The cheap form of ``await save_state()`` for code that is not a coroutine: no future,
        no task. With ``state_save_interval`` set the callback runs at once (the save is
        deferred and not awaited, as with :meth:`save_state`).
        """
        self._schedule_save()
        if self._save_interval is not None:
            callback(None)
            return
        if self._after_save is None:
            self._after_save = [callback]
        else:
            self._after_save.append(callback)

    # -- connections -----------------------------------------------------------------------

    async def open_conn(self, params: Any, socket: ConnSocket | None = None) -> Conn:
        """Run the connect hooks and register a connection (transient when no ``socket``).

        Order (RivetKit): ``on_before_connect`` -> ``create_conn_state`` -> visible in
        ``c.conns`` -> ``on_connect``. A hook that raises rejects the connection.
        """
        if self.stopping is not None:
            raise errors.ActorStopping(self.actor_id)
        definition = self.definition
        hooks = definition.hooks
        opts = definition.options
        conn = Conn(self, params, socket)
        ctx = ActionContext(self, conn)
        before = hooks.get("on_before_connect")
        if before is not None:
            await _run_hook(
                self.clock, "on_before_connect", opts.on_before_connect_timeout, before, ctx, params
            )
        create_conn_state = hooks.get("create_conn_state")
        if create_conn_state is not None:
            conn.state = await _run_hook(
                self.clock,
                "create_conn_state", opts.create_conn_state_timeout, create_conn_state, ctx, params
            )
        elif definition.conn_state is not None:
            conn.state = copy.deepcopy(definition.conn_state)
        self.conns[conn.id] = conn
        on_connect = hooks.get("on_connect")
        if on_connect is not None:
            try:
                await _run_hook(
                    self.clock, "on_connect", opts.on_connect_timeout, on_connect, ctx, conn
                )
            except BaseException:
                await self.close_conn(conn)
                raise
        return conn

    def mark_hibernatable(self, conn: Conn, hibernation: Hibernation) -> None:
        """Engine mode: ``conn`` can outlive a sleep (the gateway holds its socket), so it does
        not keep the actor awake."""
        if conn.hibernation is None:
            self.hibernatable_conns += 1
            self.sleep_ctl.check()
        conn.hibernation = hibernation

    def restore_conn(self, persisted: PersistedConn) -> Conn:
        """Bring back a connection stored at the last sleep (no connect hooks run again)."""
        conn = Conn(self, persisted.params, conn_id=persisted.conn_id)
        conn.state = persisted.state
        self.conns[conn.id] = conn
        self.mark_hibernatable(conn, persisted.hibernation)
        for name in persisted.subscriptions:
            conn.subscriptions.add(name)
            self.subscribers.setdefault(name, set()).add(conn)
        conn.stored = conn_snapshot(conn)  # its rows are there
        return conn

    async def hibernate_conns(self) -> None:
        """Before sleeping: store every hibernatable connection and let its socket go without
        closing it (the gateway keeps the client connected until the actor wakes)."""
        conns = [c for c in self.conns.values() if c.hibernation is not None and not c.closed]
        if not conns:
            return

        def write(db: apsw.Connection) -> None:
            with db:
                persist_conns(db, conns)

        await self.store.run(write)
        for conn in conns:
            conn.hibernating = True
            if conn.socket is not None:
                conn.socket.close(1000, HIBERNATE_REASON)
            await self.close_conn(conn)

    async def close_conn(self, conn: Conn) -> None:
        """Forget a connection and run ``on_disconnect`` (once; errors are logged)."""
        if conn.closed:
            return
        conn.closed = True
        self.conns.pop(conn.id, None)
        self._conns_to_store.discard(conn)
        if conn.hibernation is not None:
            self.hibernatable_conns -= 1
            if conn.hibernating:  # asleep, not gone: no hooks, its rows stay
                for name in conn.subscriptions:
                    subs = self.subscribers.get(name)
                    if subs is not None:
                        subs.discard(conn)
                        if not subs:
                            del self.subscribers[name]
                return
            if not self.stopped:
                conn_id = conn.id

                def forget(db: apsw.Connection) -> None:
                    with db:
                        delete_conns(db, (conn_id,))

                await self.store.run(forget)
        self.sleep_ctl.busy += 1  # a pending disconnect callback keeps the actor awake
        for name in conn.subscriptions:
            subs = self.subscribers.get(name)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.subscribers[name]
        conn.subscriptions.clear()
        try:
            on_disconnect = self.definition.hooks.get("on_disconnect")
            if on_disconnect is not None:
                try:
                    await maybe_await(on_disconnect(ActionContext(self, conn), conn))
                except Exception:
                    self.log.exception("on_disconnect raised conn_id=%s", conn.id)
                if self.definition.has_state and not self.stopped:
                    await self.save_state()
        finally:
            self.sleep_ctl.release()

    async def subscribe(self, conn: Conn, name: str) -> None:
        """Subscribe ``conn`` to event ``name`` after the event's ``can_subscribe`` check.

        Raises:
            RivetError: ``actor.event_not_declared`` for an event missing from ``events``,
                ``auth.forbidden`` when ``can_subscribe`` returns false.
        """
        events = self.definition.events
        if events is not None:
            spec = events.get(name)
            if spec is None:
                raise errors.RivetError(
                    "actor",
                    "event_not_declared",
                    f"Event `{name}` is not declared by actor `{self.name}`.",
                    metadata={"event": name},
                    status=400,
                )
            if spec.can_subscribe is not None:
                allowed = await maybe_await(spec.can_subscribe(ActionContext(self, conn)))
                if not isinstance(allowed, bool):
                    raise TypeError(
                        f"can_subscribe of event {name!r} must return a bool, "
                        f"got {type(allowed).__name__}"
                    )
                if not allowed:
                    raise errors.RivetError("auth", "forbidden", "Forbidden", status=403)
        if conn.closed:
            return
        conn.subscriptions.add(name)
        self.subscribers.setdefault(name, set()).add(conn)
        self._store_conn_soon(conn)

    def unsubscribe(self, conn: Conn, name: str) -> None:
        conn.subscriptions.discard(name)
        subs = self.subscribers.get(name)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.subscribers[name]
        self._store_conn_soon(conn)

    # -- events ----------------------------------------------------------------------------

    def check_event_name(self, name: str) -> None:
        events = self.definition.events
        if events is not None and name not in events:
            raise errors.RivetError(
                "actor",
                "event_not_declared",
                f"event {name!r} is not declared in actor {self.name!r}'s events",
                status=500,
                public=False,
            )

    def check_outgoing(self, frame: bytes | str) -> None:
        size = len(frame)
        if size > self.max_outgoing:
            raise errors.outgoing_too_long(size, self.max_outgoing)

    def broadcast(self, name: str, args: list[Any]) -> None:
        """Send an event to every subscriber, encoding it once per encoding in use."""
        self.check_event_name(name)
        subs = self.subscribers.get(name)
        if not subs:
            return
        frames: dict[str, bytes | str] = {}
        for conn in subs:
            socket = conn.socket
            if socket is None:
                continue
            frame = frames.get(socket.encoding)
            if frame is None:
                frame = socket.encode_event(name, args)
                self.check_outgoing(frame)
                frames[socket.encoding] = frame
            socket.push(frame)

    # -- actions ---------------------------------------------------------------------------

    def start_action(
        self, name: str, args: list[Any], conn: Conn | None
    ) -> tuple[ActionContext, Any, bool]:
        """Validate and call action ``name``: ``(ctx, output, pending)``.

        ``pending`` is true when ``output`` is an awaitable still to run (async actions).
        A sync action has fully run when this returns; its state is not committed yet.

        Raises:
            RivetError: ``actor.action_not_found``, ``actor.invalid_arguments``, or whatever a
                sync action raised.
        """
        if self.stopped:
            raise errors.ActorStopping(self.actor_id)
        spec = self.definition.actions.get(name)
        if spec is None:
            raise errors.action_not_found(name)
        count = len(args)
        if count < spec.min_args or (spec.max_args is not None and count > spec.max_args):
            raise _invalid_args(name, count, spec.min_args, spec.max_args)
        ctx = ActionContext(self, conn)
        if conn is not None and conn.hibernation is not None:
            self._conns_to_store.add(conn)  # its state may change: checked at the next commit
        output = spec.fn(ctx, *args)
        return ctx, output, spec.is_async or inspect.isawaitable(output)

    @property
    def has_response_hook(self) -> bool:
        return "on_before_action_response" in self.definition.hooks

    async def finish_action(
        self, name: str, args: list[Any], ctx: ActionContext, output: Any, pending: bool
    ) -> Any:
        """Await a pending action within the action timeout, apply the response hook, and commit
        the state (also when the action failed: roll-forward), with the calling connection's
        rows when it is hibernatable."""
        conn = ctx.conn
        saves = self.definition.has_state or (conn is not None and conn.hibernation is not None)
        try:
            if pending:
                timeout = self.clock.timeout(self._action_timeout)
                try:
                    async with timeout:
                        output = await output
                except TimeoutError:
                    if timeout.expired():
                        raise errors.action_timed_out(name, self._action_timeout) from None
                    raise
            hook = self.definition.hooks.get("on_before_action_response")
            if hook is not None:
                output = await maybe_await(hook(ctx, name, args, output))
        except BaseException:
            if saves and not self.stopped:
                if conn is not None:
                    self.store_conn(conn)
                await self.save_state()
            raise
        if saves:
            if conn is not None:
                self.store_conn(conn)
            await self.save_state()
        return output

    async def call_action(self, name: str, args: list[Any], conn: Conn | None) -> Any:
        """Run action ``name``, commit the state it changed, and return its output.

        Raises:
            RivetError: ``actor.action_not_found``, ``actor.invalid_arguments``,
                ``actor.action_timed_out``, or whatever the action raised.
        """
        try:
            ctx, output, pending = self.start_action(name, args, conn)
        except BaseException:
            if self.definition.has_state and not self.stopped:
                await self.save_state()
            raise
        return await self.finish_action(name, args, ctx, output, pending)


class _Done:
    def __await__(self) -> Any:
        return
        yield  # pragma: no cover


_DONE = _Done()
