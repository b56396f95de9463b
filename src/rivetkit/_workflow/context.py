"""``WorkflowContext``: what a workflow function receives.

Every operation (step, sleep, loop, join, race, try block, queue wait, rollback checkpoint) has
a name that is unique in its scope, and happens at a position: the n-th operation of the scope.
Replay matches the n-th operation against the n-th recorded entry of the scope (the machinery is
in :mod:`.scope`); past the last recorded entry the operation executes and is recorded.

Actor data (``state``, ``vars``, ``db``, ``kv``, ``schedule``, ``cron``, ``conns``,
``broadcast``, ``client()``, ``queue.send``) is reachable only while a step function runs: code
outside steps runs again on every replay, so an effect there would happen again after each wake.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .engine import _RollbackStop, in_step
from .errors import (
    CriticalError,
    StepExhaustedError,
    StepTimeoutError,
    outside_step,
)
from .history import KIND_LABELS, Entry, version_segment
from .scope import Scope, ScopeReplay
from .steps import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF_BASE,
    DEFAULT_RETRY_BACKOFF_MAX,
    DEFAULT_STEP_TIMEOUT,
    TryStepFailure,
    TryStepResult,
    _StepOptions,
    run_step,
    step_failure,
)

if TYPE_CHECKING:
    import logging

    from .._runtime.conn import Conn
    from .._runtime.db import ActorDb
    from .._runtime.kv import ActorKv
    from .._runtime.schedule import Cron, Schedule
    from ..client import Client
    from .flow import LoopBreak, LoopContinue, RaceResult, TryBlockResult
    from .queue import WorkflowQueue

__all__ = ["Scope", "TryStepFailure", "TryStepResult", "WorkflowContext"]

T = TypeVar("T")

_TRY_STEP_CATCH = ("critical", "timeout", "exhausted")
_CATCH_KINDS = frozenset({"critical", "timeout", "exhausted", "rollback"})


class WorkflowContext(ScopeReplay):
    """What a workflow function (and each loop iteration, join and race branch) receives.

    Workflow operations (``step``, ``sleep``, ``loop``, ``join``, ``race``, ``queue.next``, ...)
    are recorded; on a replay each returns what it recorded instead of running again. Code
    between operations runs again on every replay, so it must be deterministic: do I/O, read
    the clock and use randomness inside steps.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<WorkflowContext {self._engine.instance.name} at {self._scope.label or '/'}>"

    def _child(self, path: bytes, label: str) -> WorkflowContext:
        return WorkflowContext(
            self._engine, Scope(path, label, checkpoint=self._scope.checkpoint), self._actor_ctx
        )

    # -- usable anywhere -------------------------------------------------------------------

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        """The actor's logger."""
        return self._engine.log

    @property
    def key(self) -> list[str]:
        return list(self._engine.instance.key)

    @property
    def name(self) -> str:
        return self._engine.instance.name

    @property
    def actor_id(self) -> str:
        return self._engine.instance.actor_id

    @property
    def abort_signal(self) -> asyncio.Event:
        """Set when the actor starts to sleep or to be destroyed (pass it to long step work)."""
        return self._engine.instance.abort_signal

    @property
    def aborted(self) -> bool:
        """True once the actor began to stop; the workflow stops at its next operation."""
        return self._engine.instance.aborted

    def is_evicted(self) -> bool:
        """RivetKit's name for :attr:`aborted`."""
        return self.aborted

    @property
    def queue(self) -> WorkflowQueue:
        """Recorded queue receives: ``await ctx.queue.next("wait-order", names=["orders"])``."""
        from .queue import WorkflowQueue

        return WorkflowQueue(self)

    # -- actor data: inside steps only -----------------------------------------------------

    def _require_step(self, feature: str, refused: object = None) -> None:
        if not in_step(self._engine):
            if inspect.iscoroutine(refused):
                refused.close()  # it will never run: no "never awaited" warning on top
            raise outside_step(feature)

    @property
    def state(self) -> Any:
        """The actor's state (inside a step only)."""
        self._require_step("state")
        return self._engine.instance.state

    @state.setter
    def state(self, value: Any) -> None:
        self._require_step("state")
        self._engine.instance.set_state(value)

    @property
    def vars(self) -> Any:
        """The actor's ephemeral vars (inside a step only)."""
        self._require_step("vars")
        return self._engine.instance.vars

    @vars.setter
    def vars(self, value: Any) -> None:
        self._require_step("vars")
        self._engine.instance.vars = value

    @property
    def db(self) -> ActorDb:
        """The actor's SQLite database (inside a step only)."""
        self._require_step("db")
        return self._engine.instance.db

    @property
    def kv(self) -> ActorKv:
        self._require_step("kv")
        return self._engine.instance.kv

    @property
    def schedule(self) -> Schedule:
        self._require_step("schedule")
        return self._engine.instance.schedule

    @property
    def cron(self) -> Cron:
        self._require_step("cron")
        return self._engine.instance.cron

    @property
    def conns(self) -> Mapping[str, Conn]:
        self._require_step("conns")
        return self._engine.instance.conns

    def broadcast(self, name: str, *args: Any) -> None:
        """Send event ``name`` to subscribed connections (inside a step only)."""
        self._require_step("broadcast")
        self._engine.instance.broadcast(name, list(args))

    def client(self) -> Client:
        """A client for other actors of the registry (inside a step only)."""
        self._require_step("client")
        return self._engine.instance.client()

    def destroy(self) -> None:
        """Destroy the actor (inside a step only)."""
        self._require_step("destroy")
        self._engine.instance.request_stop("destroy")

    def keep_awake(self, awaitable: Awaitable[T]) -> asyncio.Future[T]:
        """Run ``awaitable`` as a background task that keeps the actor awake until it ends: no
        idle sleep, and a shutdown waits for it (inside a step only; the step does not wait for
        it). Returns the task; await it for the result. The task cannot use actor data once
        the step that started it has ended."""
        self._require_step("keep_awake", awaitable)
        return self._engine.instance.keep_awake(awaitable)

    def wait_until(self, awaitable: Awaitable[T]) -> asyncio.Future[T]:
        """Run ``awaitable`` as a background task that a shutdown waits for (within the sleep
        grace period) but that does not keep the actor from going idle: for best-effort
        flushes (inside a step only). Returns the task."""
        self._require_step("wait_until", awaitable)
        return self._engine.instance.wait_until(awaitable)

    # -- steps -----------------------------------------------------------------------------

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        timeout: float | None = ...,
        max_retries: int = ...,
        retry_backoff_base: float = ...,
        retry_backoff_max: float = ...,
        retry_on_timeout: bool = ...,
        rollback: Callable[..., Any] | None = ...,
        ephemeral: bool = ...,
    ) -> T: ...

    @overload
    async def step(
        self,
        name: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        timeout: float | None = ...,
        max_retries: int = ...,
        retry_backoff_base: float = ...,
        retry_backoff_max: float = ...,
        retry_on_timeout: bool = ...,
        rollback: Callable[..., Any] | None = ...,
        ephemeral: bool = ...,
    ) -> T: ...

    async def step(
        self,
        name: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        timeout: float | None = DEFAULT_STEP_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff_base: float = DEFAULT_RETRY_BACKOFF_BASE,
        retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX,
        retry_on_timeout: bool = False,
        rollback: Callable[..., Any] | None = None,
        ephemeral: bool = False,
    ) -> Any:
        """Run ``fn(*args)`` once, record its result, and return it (on a replay: the recorded
        result, without running ``fn``).

        ``fn`` may be sync or async. Inside it, actor data (``ctx.state``, ``ctx.db``, ...) is
        usable; its state changes are committed together with the step's record. A failing
        attempt is retried after a durable backoff; its state changes are kept (roll-forward).

        Args:
            name: unique within the scope; part of the history, keep it stable.
            fn: the step function; its return value must be storable (JSON-like data, bytes,
                dataclasses; tuples come back as lists, dataclasses as dicts).
            *args: passed to ``fn``.
            timeout: seconds an async ``fn`` may run (``None``: no limit; default 30). A
                timeout fails the step without retry unless ``retry_on_timeout``. A sync
                ``fn`` cannot be interrupted.
            max_retries: retries after the first attempt (default 3).
            retry_backoff_base: seconds before the first retry (default 0.1); doubled for each
                further retry.
            retry_backoff_max: the longest backoff in seconds (default 30).
            retry_on_timeout: retry timeouts like other errors.
            rollback: ``rollback(output)`` undoes the step if the workflow fails later (needs
                a prior ``rollback_checkpoint``); sync or async, runs like a step.
            ephemeral: do not commit right away; the record goes out with the next commit
                (faster; a crash before it runs the step again).

        Returns:
            The step's (recorded) result.

        Raises:
            StepExhaustedError: every attempt failed.
            StepTimeoutError: an attempt timed out (and ``retry_on_timeout`` is false).
            CriticalError: the step raised ``CriticalError`` (or ``RollbackError``).
            WorkflowError: ``workflow.step_output_not_serializable``.
        """
        options = _StepOptions.make(
            name,
            fn,
            timeout,
            max_retries,
            retry_backoff_base,
            retry_backoff_max,
            retry_on_timeout,
            rollback,
            ephemeral,
        )
        return await run_step(self, name, fn, args, options)

    async def try_step(
        self,
        name: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        catch: Sequence[str] = _TRY_STEP_CATCH,
        timeout: float | None = DEFAULT_STEP_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff_base: float = DEFAULT_RETRY_BACKOFF_BASE,
        retry_backoff_max: float = DEFAULT_RETRY_BACKOFF_MAX,
        retry_on_timeout: bool = False,
        rollback: Callable[..., Any] | None = None,
        ephemeral: bool = False,
    ) -> TryStepResult[Any]:
        """:meth:`step`, returning a :class:`TryStepResult` instead of raising on failure.

        Args:
            catch: the failure kinds turned into a result: any of ``"exhausted"``,
                ``"timeout"``, ``"critical"`` (default: those three) and ``"rollback"``.
                Other failures, waits, stops and divergences propagate.
        """
        kinds = tuple(catch)
        unknown = set(kinds) - _CATCH_KINDS
        if unknown:
            raise ValueError(
                f"try_step catch kinds must be among {sorted(_CATCH_KINDS)}, got {sorted(unknown)}"
            )
        options = _StepOptions.make(
            name,
            fn,
            timeout,
            max_retries,
            retry_backoff_base,
            retry_backoff_max,
            retry_on_timeout,
            rollback,
            ephemeral,
        )
        try:
            value = await run_step(self, name, fn, args, options)
        except (StepExhaustedError, StepTimeoutError, CriticalError) as exc:
            failure = step_failure(exc)
            if failure is None or failure.kind not in kinds:
                raise
            return TryStepResult(False, None, failure)
        return TryStepResult(True, value)

    async def try_block(
        self,
        name: str,
        block: Callable[[WorkflowContext], Awaitable[T]],
        /,
        *,
        catch: Sequence[str] = ("step", "join", "race"),
    ) -> TryBlockResult:
        """Run ``block(block_ctx)`` as a named scope whose failure is returned instead of
        failing the workflow (RivetKit's ``ctx.try``; ``try`` is a Python keyword).

        The block's operations are recorded under ``name``. If a step in it fails for good
        (every attempt, a timeout, ``CriticalError``), or a join or race in it fails, the
        result says so: ``TryBlockResult(ok=False, failure=TryBlockFailure(source, name,
        error, step))``. The block is not recorded as a value: a replay runs it again and it
        replays its operations, so it returns the same result. Other errors the block raises
        (a plain exception in the block's own code, a divergence) propagate as usual.

        Args:
            name: unique within the scope.
            block: ``async def block(block_ctx)``; use ``block_ctx`` for its operations.
            catch: failures turned into a result, among ``"step"``, ``"join"``, ``"race"``
                (the default) and ``"rollback"`` (a ``RollbackError``, raised by a step or by
                the block itself).

        Example::

            async def charge(b: WorkflowContext) -> str:
                await b.step("authorize", authorize, card, max_retries=2)
                return await b.step("capture", capture, card)

            result = await ctx.try_block("payment", charge)
            if not result.ok:
                await ctx.step("notify-failure", notify, result.failure.error)
        """
        from .flow import run_try

        return await run_try(self, name, block, catch)

    # -- sleeping --------------------------------------------------------------------------

    async def sleep(self, name: str, seconds: float) -> None:
        """Wait ``seconds``, durably: the actor may sleep meanwhile and is woken in time, also
        after a restart (the deadline is recorded the first time)."""
        if not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError(f'sleep "{name}": seconds must be a number >= 0, got {seconds!r}')
        await self._sleep(name, lambda: self._engine.clock.now_ms() + round(seconds * 1000))

    async def sleep_until(self, name: str, at_ms: int) -> None:
        """Wait until epoch milliseconds ``at_ms``, durably (see :meth:`sleep`)."""
        if not isinstance(at_ms, int) or isinstance(at_ms, bool):
            raise ValueError(
                f'sleep_until "{name}": at_ms must be an int (epoch ms), got {at_ms!r}'
            )
        await self._sleep(name, lambda: at_ms)

    async def _sleep(self, name: str, deadline: Callable[[], int]) -> None:
        engine = self._engine
        entry, position = self._enter("sleep", name)
        with self._busy("sleep", name):
            if entry is None:
                at_ms = deadline()
                entry = self._new_entry("sleep", name, position, deadline=at_ms)
                if at_ms > engine.clock.now_ms():
                    engine.history.save(entry)
                    await engine.flush()  # the deadline is durable before the wait
            elif entry.status == "completed":
                return
            elif engine.rollback_mode:
                raise _RollbackStop
            await engine.wait_until(int(entry.data["deadline"]))
            entry.status = "completed"
            entry.completed_at = engine.clock.now_ms()
            engine.history.save(entry)  # goes out with the next commit

    # -- rollback and versioning -----------------------------------------------------------

    async def rollback_checkpoint(self, name: str) -> None:
        """Mark where a rollback stops: if the workflow fails, the rollback handlers of steps
        completed after the last checkpoint run, newest first. Steps with ``rollback=`` need a
        checkpoint before them."""
        entry, position = self._enter("rollback_checkpoint", name)
        if entry is None:
            entry = self._new_entry("rollback_checkpoint", name, position)
            entry.status = "completed"
            self._engine.history.save(entry)
        self._scope.checkpoint = True
        self._engine.checkpoint_mark = len(self._engine.rollback_actions)

    def get_version(self, name: str, latest: int) -> int:
        """The version of the code path gated by ``name`` this workflow is pinned to.

        A workflow reaching the gate for the first time gets ``latest``; one that had already
        gone past this point under older code (its history holds later entries here) gets
        ``1``. The answer is recorded, so every replay takes the same branch::

            if ctx.get_version("pricing", 2) >= 2:
                total = await ctx.step("price-v2", price_v2, order)
            else:
                total = await ctx.step("price", price, order)

        Raises:
            ValueError: ``latest`` is not an int >= 1.
        """
        if not isinstance(latest, int) or isinstance(latest, bool) or latest < 1:
            raise ValueError(f'get_version("{name}"): latest must be an int >= 1, got {latest!r}')
        engine = self._engine
        scope = self._scope
        self._check_name("version_check", name)
        scope.names.add(name)
        pinned = engine.history.version(scope.path, name)
        if pinned is not None:
            return int(pinned.data["resolved"])
        behind = engine.history.count(scope.path) > scope.cursor
        resolved = 1 if behind else latest
        if not engine.rollback_mode:
            entry = Entry(
                path=scope.path + version_segment(name),
                kind="version_check",
                name=name,
                status="completed",
                created_at=engine.clock.now_ms(),
                data={"resolved": resolved, "latest": latest},
            )
            engine.history.add(entry, scope.path)
            engine.history.save(entry)
        return resolved

    def removed(self, name: str, original_type: str) -> None:
        """Declare that an operation the code used to run here was removed: a recorded entry
        ``original_type`` ``name`` at this position is skipped instead of diverging.

        Args:
            name: the removed operation's name.
            original_type: ``"step"``, ``"loop"``, ``"sleep"``, ``"message"`` (a queue wait),
                ``"join"``, ``"race"``, ``"rollback_checkpoint"`` or ``"version_check"``.
        """
        if original_type not in KIND_LABELS or original_type == "removed":
            kinds = sorted(k for k in KIND_LABELS if k != "removed")
            raise ValueError(
                f"removed(): original_type must be one of {kinds}, got {original_type!r}"
            )
        scope = self._scope
        self._check_name(original_type, name)
        scope.names.add(name)
        if original_type == "version_check":
            return  # version pins are kept outside the ordered entries
        recorded = self._engine.history.at(scope.path, scope.cursor)
        if recorded is None or recorded.name != name:
            return  # this workflow never ran it
        if recorded.kind != original_type:
            raise self._diverged(scope.cursor, recorded, original_type, name)
        scope.cursor += 1

    # -- loops, joins, races (see flow.py) -------------------------------------------------

    def loop_continue(self, state: Any = None) -> LoopContinue:
        """What a loop body returns to run again with ``state``."""
        from .flow import LoopContinue

        return LoopContinue(state)

    def loop_break(self, value: Any = None) -> LoopBreak:
        """What a loop body returns to end the loop; ``ctx.loop`` returns ``value``."""
        from .flow import LoopBreak

        return LoopBreak(value)

    async def loop(
        self,
        name: str,
        body: Callable[[WorkflowContext, Any], Any],
        /,
        *,
        state: Any = None,
        history_prune_interval: int = 20,
        history_size: int | None = None,
    ) -> Any:
        """Run ``body(loop_ctx, state)`` until it returns ``ctx.loop_break(value)``.

        Each iteration is a scope of its own (names repeat across iterations). The body returns
        ``ctx.loop_continue(new_state)`` (or ``None`` when the loop has no state). The state and
        iteration number are recorded, so a replay resumes at the last iteration instead of
        running them all again.

        Args:
            name: the loop's name.
            body: ``async def body(loop_ctx, state)``.
            state: the initial state (storable, like step outputs).
            history_prune_interval: every this many iterations, the history of old iterations
                is deleted (default 20).
            history_size: how many past iterations to keep (default: the prune interval).

        Returns:
            The value of ``loop_break``.
        """
        from .flow import run_loop

        return await run_loop(self, name, body, state, history_prune_interval, history_size)

    async def join(
        self, name: str, branches: Mapping[str, Callable[[WorkflowContext], Awaitable[Any]]]
    ) -> dict[str, Any]:
        """Run the branches concurrently, each ``async def branch(branch_ctx)`` in a scope of
        its own, and return ``{branch name: result}`` once all finished.

        Raises:
            JoinError: a branch failed (the others still ran to the end).
        """
        from .flow import run_join

        return await run_join(self, name, branches)

    async def race(
        self,
        name: str,
        branches: Mapping[str, Callable[[WorkflowContext], Awaitable[Any]]]
        | Sequence[
            Callable[[WorkflowContext], Awaitable[Any]]
            | tuple[str, Callable[[WorkflowContext], Awaitable[Any]]]
        ],
    ) -> RaceResult:
        """Run the branches concurrently; the first to finish wins, the others are cancelled.

        ``branches`` is ``{name: fn}``, or a list of functions (named by ``__name__``) or of
        ``(name, fn)`` pairs.

        Returns:
            ``RaceResult(winner, value)``.

        Raises:
            RaceError: every branch failed.
        """
        from .flow import run_race

        return await run_race(self, name, branches)
