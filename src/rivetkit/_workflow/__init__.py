"""Durable workflows: ``rivetkit.workflow`` turns an async function into an actor's ``run``
handler whose completed steps are never repeated after a crash, a sleep or a redeploy.

Layers (each module's docstring says more):

* :mod:`.history`: entries, their locations and their storage in ``_rivet_wf_kv``;
* :mod:`.engine`: one run of a workflow (load, replay, commit, wait, fail, roll back);
* :mod:`.scope`: one scope and the positional replay of its operations;
* :mod:`.context`: ``WorkflowContext`` (the API), sleeps and versioning;
* :mod:`.steps`: step attempts, retries, timeouts and failures;
* :mod:`.flow`: loops, joins, races, try blocks; :mod:`.queue`: recorded queue receives;
* :mod:`.inspector`: the ``/inspector/workflow-history`` payload and the replay of a workflow.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, overload

from .context import TryStepFailure, TryStepResult, WorkflowContext
from .engine import WorkflowEngine, WorkflowErrorEvent, WorkflowSpec
from .errors import (
    CriticalError,
    HistoryDivergedError,
    JoinError,
    RaceError,
    RollbackError,
    StepExhaustedError,
    StepTimeoutError,
    WorkflowError,
)
from .flow import LoopBreak, LoopContinue, RaceResult, TryBlockFailure, TryBlockResult
from .inspector import replay_workflow, workflow_inspector, workflow_spec
from .queue import WorkflowQueueMessage

if TYPE_CHECKING:
    from .._runtime.context import ActorContext

__all__ = [
    "CriticalError",
    "HistoryDivergedError",
    "JoinError",
    "LoopBreak",
    "LoopContinue",
    "RaceError",
    "RaceResult",
    "RollbackError",
    "StepExhaustedError",
    "StepTimeoutError",
    "TryBlockFailure",
    "TryBlockResult",
    "TryStepFailure",
    "TryStepResult",
    "WorkflowContext",
    "WorkflowError",
    "WorkflowErrorEvent",
    "WorkflowQueueMessage",
    "replay_workflow",
    "workflow",
    "workflow_inspector",
    "workflow_spec",
]

WorkflowFn = Callable[[WorkflowContext], Awaitable[Any]]


@overload
def workflow(fn: WorkflowFn, /) -> Callable[[ActorContext], Awaitable[None]]: ...


@overload
def workflow(
    fn: None = None, /, *, on_error: Callable[..., Any] | None = None
) -> Callable[[WorkflowFn], Callable[[ActorContext], Awaitable[None]]]: ...


def workflow(fn: WorkflowFn | None = None, /, *, on_error: Callable[..., Any] | None = None) -> Any:
    """Make ``async def fn(ctx: WorkflowContext)`` a durable ``run`` handler.

    Usable as ``@rivetkit.workflow`` or ``@rivetkit.workflow(on_error=...)``, under
    ``@a.run``. Each time the actor wakes, the workflow replays its recorded history and
    continues where it stopped; once it returned (or failed) it does not run again.

    Args:
        fn: the workflow function.
        on_error: ``on_error(c, event: WorkflowErrorEvent)``, called (sync or async) when a
            step attempt fails, a rollback handler fails, or the workflow fails. Observational:
            it runs when the failure happens, not on replays; it may use ``c.state``.

    Example::

        order = rivetkit.actor("order", state={"charged": 0})

        @order.run
        @rivetkit.workflow
        async def process(ctx: rivetkit.WorkflowContext) -> None:
            message = await ctx.queue.next("wait-order", names=["orders"])
            total = await ctx.step("price", price, message.body)
            await ctx.step("charge", charge, total, max_retries=5)
            await ctx.sleep("cool-off", 60)

    Raises:
        DefinitionError: ``fn`` is not an async function of one argument.
    """
    from ..definition import DefinitionError

    def wrap(target: WorkflowFn) -> Callable[[ActorContext], Awaitable[None]]:
        if not inspect.iscoroutinefunction(target):
            raise DefinitionError(
                f"@workflow {getattr(target, '__qualname__', target)!r} must be an async "
                "function: `async def process(ctx: rivetkit.WorkflowContext)`"
            )
        try:
            inspect.signature(target).bind(None)
        except TypeError:
            raise DefinitionError(
                f"@workflow {target.__qualname__} must take exactly one argument, the "
                "WorkflowContext: `async def process(ctx)`"
            ) from None
        if on_error is not None and not callable(on_error):
            raise DefinitionError("workflow(on_error=...) must be a function (c, event)")
        spec = WorkflowSpec(target, on_error)

        @functools.wraps(target)
        async def run(c: ActorContext) -> None:
            await WorkflowEngine(c._actor, spec).run(c)

        run.__rivetkit_workflow__ = spec  # type: ignore[attr-defined]
        return run

    if fn is None:
        return wrap
    if not callable(fn):
        raise DefinitionError(f"@workflow must decorate a function, got {fn!r}")
    return wrap(fn)
