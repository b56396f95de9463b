"""The workflow engine: one run of a workflow inside an awake actor.

``rivetkit.workflow(fn)`` makes a ``run`` handler. Every time the actor wakes, the handler loads
the history from ``_rivet_wf_kv`` and calls ``fn`` from the top; the context replays what the
history recorded (a completed step returns its recorded output without running again) and
executes, then records, whatever comes after. A workflow that completed or failed is not run
again.

Durability: each step's result is committed together with the actor state in one SQLite
transaction (``ActorInstance.commit_with``), so a crash can never keep the state change of a step
without its record, or the record without the state change. Entries whose loss is harmless (a
sleep that ended, a loop's progress, a version pin) are queued and go out with the next commit.

Waiting (durable sleeps, retry backoff, queue waits) happens inside ``ActorInstance.idle_wait``,
so the actor may go to sleep meanwhile, and the run alarm (``set_run_alarm``) wakes it in time.
While the workflow is executing, the run alarm points at the present: should the process die,
the actor is woken at the next start and the workflow carries on by itself. When the actor
starts to sleep, the workflow stops at its next operation (``_Evicted``) and replays on the
next wake.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import RivetError
from .errors import (
    CriticalError,
    HistoryDivergedError,
    StepTimeoutError,
    WorkflowError,
    describe_error,
)
from .history import Entry, History, write_rows

if TYPE_CHECKING:
    import apsw

    from .._runtime.context import ActorContext
    from .._runtime.instance import ActorInstance

__all__ = [
    "StepScope",
    "WorkflowEngine",
    "WorkflowErrorEvent",
    "WorkflowSpec",
    "active_step",
    "engine_of",
    "forget_engine",
    "in_step",
]


class StepScope:
    """One running step (or rollback handler, or ``on_error`` call) of ``engine``: actor data
    may be used while it is open. Tasks started inside the step inherit it, and it closes when
    the step ends, so such a task (``ctx.keep_awake(...)``) cannot reach actor data afterwards:
    what it would change there would belong to no step."""

    __slots__ = ("engine", "open")

    def __init__(self, engine: WorkflowEngine) -> None:
        self.engine = engine
        self.open = True


# The step running in this task. A context variable, so that concurrent join branches, each a
# task, see only their own step.
active_step: contextvars.ContextVar[StepScope | None] = contextvars.ContextVar(
    "rivetkit_workflow_step", default=None
)


def in_step(engine: WorkflowEngine) -> bool:
    """Whether the current task runs a step of ``engine`` (that has not ended)."""
    scope = active_step.get()
    return scope is not None and scope.open and scope.engine is engine

# The engine of each awake actor's workflow (the latest run), for the inspector.
_engines: weakref.WeakKeyDictionary[ActorInstance, WorkflowEngine] = weakref.WeakKeyDictionary()


def engine_of(instance: ActorInstance) -> WorkflowEngine | None:
    return _engines.get(instance)


def forget_engine(instance: ActorInstance) -> None:
    """The history of ``instance``'s workflow was changed outside its run (a replay): the
    inspector reads the database until the next run starts."""
    _engines.pop(instance, None)


class _Evicted(BaseException):
    """The actor began to sleep or to be destroyed: the workflow stops where it is and replays
    on the next wake. A ``BaseException`` so that ``except Exception`` in workflow code does not
    swallow it."""


class _RollbackStop(BaseException):
    """While replaying to find rollback handlers, the code reached what the history does not
    have (or has not finished): every handler that matters has been seen."""


@dataclasses.dataclass(frozen=True, slots=True)
class WorkflowErrorEvent:
    """What ``on_error`` receives (observational; it is not replayed).

    Attributes:
        kind: ``"step"`` (an attempt failed), ``"rollback"`` (a rollback handler failed) or
            ``"workflow"`` (the workflow failed, or stopped on a code error).
        error: the error's text.
        step: the step's name (``None`` for ``"workflow"``).
        attempt: the attempt that failed (steps).
        max_retries: the step's ``max_retries``.
        will_retry: whether the step runs again.
        retry_delay: seconds until the retry.
        retry_at: epoch ms of the retry.
    """

    kind: str
    error: str
    step: str | None = None
    attempt: int | None = None
    max_retries: int | None = None
    will_retry: bool = False
    retry_delay: float | None = None
    retry_at: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """What ``rivetkit.workflow(fn)`` recorded: the workflow function and its options."""

    fn: Callable[..., Awaitable[Any]]
    on_error: Callable[..., Any] | None = None


@dataclasses.dataclass(slots=True)
class _RollbackAction:
    entry: Entry
    handler: Callable[..., Any]
    output: Any


class WorkflowEngine:
    """One run of a workflow: its history, pending writes, waits, rollback and completion."""

    def __init__(self, instance: ActorInstance, spec: WorkflowSpec) -> None:
        # Weak: the engine outlives its run in ``_engines`` (for the inspector), keyed weakly
        # by the instance; a strong reference back would keep every slept actor alive.
        self._instance = weakref.ref(instance)
        self.spec = spec
        self.clock = instance.clock
        self.log = instance.log
        self.history = History()
        self.live_state = "pending"  # what the inspector shows as workflowState
        self.rollback_mode = False
        self.rollback_actions: list[_RollbackAction] = []
        self.checkpoint_mark = 0
        self.last_error: str | None = None  # a code error that stopped the last run
        self._deadlines: collections.Counter[int] = collections.Counter()
        self._active = 0  # execution strands (the body, join/race branches) not waiting
        self._resume_at = 0

    @property
    def instance(self) -> ActorInstance:
        instance = self._instance()
        if instance is None:  # pragma: no cover - the run keeps its instance alive
            raise _Evicted
        return instance

    # -- the run ---------------------------------------------------------------------------

    async def run(self, actor_ctx: ActorContext) -> None:
        """Replay and continue the workflow until it completes, fails, waits while the actor
        goes to sleep, or stops on a code error."""
        try:
            await self._run(actor_ctx)
        finally:
            self.rollback_actions = []  # their handlers may hold the workflow's context

    async def _run(self, actor_ctx: ActorContext) -> None:
        from .context import Scope, WorkflowContext

        instance = self.instance
        _engines[instance] = self
        try:
            self.history = await instance.store.run(History.load)
        except WorkflowError as exc:
            await self._stop_on_code_error(exc)
            return
        record = self.history.record
        if record.state in ("completed", "failed"):
            self.live_state = record.state
            self.log.debug("workflow already finished, not running it again state=%s", record.state)
            instance.set_run_alarm(None)
            return
        ctx = WorkflowContext(self, Scope(b"", ""), actor_ctx)
        if record.state == "rolling_back":
            await self._resume_rollback(ctx)
            return
        if record.state == "pending":
            record.state = "running"
            record.started_at = self.clock.now_ms()
            self.history.save_record()
        self.live_state = "running"
        self._active = 1
        self._resume_now()
        try:
            output = await self.spec.fn(ctx)
            ctx._finish_scope()
        except _Evicted:
            self.log.debug("workflow stopped, the actor is stopping; it resumes on the next wake")
            self.live_state = "sleeping"
            return
        except Exception as exc:
            if isinstance(exc, WorkflowError) and not exc.terminal:
                await self._stop_on_code_error(exc)
            else:
                await self._fail(exc)
            return
        try:
            await self._complete(output)
        except _Evicted:
            self.log.debug("workflow output not recorded, the actor stopped; it replays on wake")

    async def _complete(self, output: Any) -> None:
        from .history import roundtrip

        record = self.history.record
        try:
            record.output = roundtrip(output)
        except (TypeError, ValueError) as exc:
            self.log.error("workflow output cannot be stored, recording null instead error=%s", exc)
            record.output = None
        record.state = "completed"
        record.finished_at = self.clock.now_ms()
        self.history.save_record()
        await self.flush()
        self.live_state = "completed"
        self._active = 0
        self.instance.set_run_alarm(None)
        self.log.info("workflow completed")

    async def _stop_on_code_error(self, exc: WorkflowError) -> None:
        """The code does not match its history, or misuses the API: nothing is recorded, the
        run ends, and the next wake (with fixed code) replays from the top."""
        self.last_error = str(exc)
        self.live_state = "failed"
        self._active = 0
        self.instance.set_run_alarm(None)
        self.log.error(
            "workflow stopped on a code error (fix the code; the next wake resumes) %s",
            exc,
            extra={"workflow_error": exc},
        )
        await self.report(WorkflowErrorEvent("workflow", str(exc)))
        if self.history.dirty and not self.instance.stopped:
            try:
                await self.flush()  # what completed before the error (a sleep, a loop's progress)
            except Exception:
                self.log.exception("workflow history flush failed")

    async def _fail(self, exc: BaseException) -> None:
        """A terminal failure: record it, run the rollback handlers, mark the workflow failed."""
        record = self.history.record
        record.error = {"name": type(exc).__name__, "message": describe_error(exc)}
        if isinstance(exc, RivetError):
            record.error["code"] = exc.full_code
        record.state = "rolling_back"
        self.history.save_record()
        self.live_state = "rolling_back"
        self._active = 0
        self._resume_now()  # an interrupted rollback resumes at the next start
        self.log.warning("workflow failed, rolling back error=%s", describe_error(exc))
        await self.report(WorkflowErrorEvent("workflow", describe_error(exc)))
        try:
            await self.flush()
            await self._finish_rollback()
        except _Evicted:
            self.log.debug("workflow rollback interrupted by a stop; it resumes on the next wake")

    async def _resume_rollback(self, ctx: Any) -> None:
        """After a restart in the middle of a rollback: replay to find the rollback handlers
        (they are code, not data), then run those not run yet."""
        self.rollback_mode = True
        self.live_state = "rolling_back"
        self._resume_now()
        try:
            await self.spec.fn(ctx)
        except (_RollbackStop, Exception):
            pass  # the recorded failure, or the end of what the history holds
        except _Evicted:
            return
        self.rollback_mode = False
        try:
            await self._finish_rollback()
        except _Evicted:
            self.log.debug("workflow rollback interrupted by a stop; it resumes on the next wake")

    async def _finish_rollback(self) -> None:
        """Run the rollback handlers registered after the last checkpoint, newest first."""
        pending = [
            action
            for action in self.rollback_actions[self.checkpoint_mark :]
            if action.entry.rollback_completed_at is None
        ]
        for action in reversed(pending):
            if self.instance.aborted:
                raise _Evicted
            entry = action.entry
            try:
                await self.call_user(action.handler, (action.output,), None, entry.name)
            except Exception as exc:
                entry.rollback_error = describe_error(exc)
                self.history.save(entry)
                await self.flush()
                self.live_state = "rolling_back"
                self.log.error(
                    "workflow rollback handler failed; it runs again on the next wake "
                    "step=%s error=%s",
                    entry.name,
                    entry.rollback_error,
                )
                await self.report(WorkflowErrorEvent("rollback", entry.rollback_error, entry.name))
                self.instance.set_run_alarm(None)
                return
            entry.rollback_completed_at = self.clock.now_ms()
            entry.rollback_error = None
            self.history.save(entry)
            await self.flush()
        record = self.history.record
        record.state = "failed"
        record.finished_at = self.clock.now_ms()
        self.history.save_record()
        await self.flush()
        self.live_state = "failed"
        self.instance.set_run_alarm(None)
        self.log.warning("workflow failed error=%s", (record.error or {}).get("message"))

    def forget_rollbacks(self, prefix: bytes) -> None:
        """Drop the rollback handlers of steps under ``prefix`` (a race loser's history was
        deleted: a replay would not register them either)."""
        kept: list[_RollbackAction] = []
        mark = self.checkpoint_mark
        for index, action in enumerate(self.rollback_actions):
            if action.entry.path.startswith(prefix):
                if index < self.checkpoint_mark:
                    mark -= 1
                continue
            kept.append(action)
        self.rollback_actions = kept
        self.checkpoint_mark = mark

    # -- storage ---------------------------------------------------------------------------

    async def flush(self, extra: Callable[[apsw.Connection], None] | None = None) -> None:
        """Commit the queued history writes together with the actor's state (one transaction).

        Raises:
            _Evicted: the actor already stopped (its storage is closed).
        """
        instance = self.instance
        if instance.stopped:
            raise _Evicted
        upserts, ranges = self.history.take_writes()

        def write(conn: apsw.Connection) -> None:
            write_rows(conn, upserts, ranges)
            if extra is not None:
                extra(conn)

        try:
            await instance.commit_with(write)
        except BaseException:
            self.history.restore_writes(upserts, ranges)
            raise

    def write_pending(self, conn: apsw.Connection) -> None:
        """Write the queued history inside someone else's transaction (a queue receive)."""
        upserts, ranges = self.history.take_writes()
        write_rows(conn, upserts, ranges)

    # -- user code -------------------------------------------------------------------------

    async def call_user(
        self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None, step: str
    ) -> Any:
        """Run a step function (or rollback handler) as a step: actor data is usable, the actor
        does not sleep meanwhile, and an async function is bounded by ``timeout`` seconds.

        Raises:
            StepTimeoutError: the function ran longer than ``timeout``.
        """
        ctl = self.instance.sleep_ctl
        ctl.busy += 1
        step_scope = StepScope(self)
        token = active_step.set(step_scope)
        try:
            result = fn(*args)
            if not inspect.isawaitable(result):
                return result
            if timeout is None:
                return await result
            scope = self.clock.timeout(timeout)
            try:
                async with scope:
                    return await result
            except TimeoutError:
                if scope.expired():
                    raise StepTimeoutError(step, timeout) from None
                raise
        finally:
            step_scope.open = False
            active_step.reset(token)
            ctl.release()

    async def report(self, event: WorkflowErrorEvent) -> None:
        """Give ``event`` to the ``on_error`` hook (errors of the hook are logged)."""
        hook = self.spec.on_error
        if hook is None:
            return
        from .._runtime.context import ActorContext

        scope = StepScope(self)
        token = active_step.set(scope)  # the hook may touch state, like a step
        try:
            result = hook(ActorContext(self.instance), event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.log.exception("workflow on_error hook raised")
        finally:
            scope.open = False
            active_step.reset(token)

    # -- waiting ---------------------------------------------------------------------------

    def check_evicted(self) -> None:
        if self.instance.aborted:
            raise _Evicted

    async def wait_until(self, at_ms: int) -> None:
        """Wait durably until epoch ms ``at_ms``: the actor may sleep meanwhile (it is woken at
        ``at_ms``); a sleep of the actor ends the wait with ``_Evicted``."""
        instance = self.instance
        self.check_evicted()
        if at_ms <= self.clock.now_ms():
            return
        clock = self.clock
        self.strand_waits(at_ms)
        try:
            with instance.idle_wait():
                abort = instance.abort_signal
                while True:
                    if instance.aborted:
                        raise _Evicted
                    remaining = at_ms - clock.now_ms()
                    if remaining <= 0:
                        return
                    try:
                        async with clock.timeout(remaining / 1000.0):
                            await abort.wait()
                    except TimeoutError:
                        pass
        finally:
            self.strand_resumes(at_ms)

    def strand_waits(self, deadline: int | None = None) -> None:
        """An execution strand starts waiting (``deadline``: it needs a wake by then)."""
        self._active -= 1
        if deadline is not None:
            self._deadlines[deadline] += 1
        if self._active <= 0 and self.live_state == "running":
            self.live_state = "sleeping"
        self._update_alarm()

    def strand_resumes(self, deadline: int | None = None) -> None:
        self._active += 1
        if deadline is not None:
            self._deadlines[deadline] -= 1
            if not self._deadlines[deadline]:
                del self._deadlines[deadline]
        if self._active > 0 and self.live_state == "sleeping":
            self.live_state = "running"
        self._update_alarm()

    def _resume_now(self) -> None:
        """Ask to be woken at once should the actor stop before this work is done."""
        self._resume_at = self.clock.now_ms()
        self.instance.set_run_alarm(self._resume_at)

    def _update_alarm(self) -> None:
        """Tell the actor when the workflow needs it awake: now while something executes (a
        crash must not strand it), else the earliest deadline, else never (a queue send wakes
        it). Left alone once the actor stops: the last value is what wakes it again."""
        instance = self.instance
        if instance.aborted or instance.stopped:
            return
        if self._active > 0:
            at: int | None = self._resume_at
        elif self._deadlines:
            at = min(self._deadlines)
        else:
            at = None
        instance.set_run_alarm(at)


def is_control_flow(exc: BaseException) -> bool:
    """Errors that must travel up through joins, races and try_step untouched."""
    if isinstance(exc, (_Evicted, _RollbackStop, asyncio.CancelledError)):
        return True
    return isinstance(exc, WorkflowError) and not exc.terminal


def control_flow_priority(exc: BaseException) -> int:
    """Which of several control-flow errors of concurrent branches wins (lowest first)."""
    if isinstance(exc, _Evicted):
        return 0
    if isinstance(exc, HistoryDivergedError):
        return 1
    if isinstance(exc, WorkflowError):
        return 2
    if isinstance(exc, _RollbackStop):
        return 3
    return 4


def failure_kind(exc: BaseException) -> str:
    """How ``try_step`` classifies a terminal step failure."""
    from .errors import RollbackError, StepExhaustedError

    if isinstance(exc, RollbackError):
        return "rollback"
    if isinstance(exc, CriticalError):
        return "critical"
    if isinstance(exc, StepTimeoutError):
        return "timeout"
    if isinstance(exc, StepExhaustedError):
        return "timeout" if exc.timed_out else "exhausted"
    return "critical"
