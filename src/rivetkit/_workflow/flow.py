"""Control flow of workflows: loops, joins and races.

* A **loop** entry records the loop's state and the number of the iteration in progress. Each
  iteration is a scope of its own. The progress is written with the next commit (a crash before
  that replays the previous iteration, whose history is still there), and every
  ``history_prune_interval`` iterations the history of iterations older than ``history_size``
  is deleted in the same transaction, so a loop that runs forever keeps a bounded history.
* A **join** runs its branches as concurrent tasks, each in a scope of its own, and waits for all
  of them. Branch results are recorded when the join ends; a branch that completed before a
  crash replays its recorded operations and returns the same value.
* A **race** runs its branches the same way; the first to finish wins. The winner and its value
  are recorded, the other branches are cancelled and their history is deleted.
* A **try block** runs its body in a scope of its own, every time (its value is not recorded:
  a replay runs the body again, which replays its operations); the failure of a step, join or
  race inside it is returned as a :class:`TryBlockResult` instead of failing the workflow.
  Recorded failures fail again on replay, so the result is the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .engine import _Evicted, _RollbackStop, control_flow_priority, is_control_flow
from .errors import JoinError, RaceError, RollbackError, code_error, describe_error
from .history import branch_segment, iteration_segment, roundtrip
from .steps import TryStepFailure, step_failure

if TYPE_CHECKING:
    from .context import WorkflowContext

__all__ = [
    "TRY_BLOCK_CATCH",
    "LoopBreak",
    "LoopContinue",
    "RaceResult",
    "TryBlockFailure",
    "TryBlockResult",
    "run_join",
    "run_loop",
    "run_race",
    "run_try",
]

Branch = Callable[["WorkflowContext"], Awaitable[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class LoopContinue:
    """Returned by a loop body to run another iteration with ``state``."""

    state: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class LoopBreak:
    """Returned by a loop body to end the loop with ``value``."""

    value: Any = None


class RaceResult(NamedTuple):
    """What ``ctx.race`` returns: the winning branch's name and its value."""

    winner: str
    value: Any


@dataclasses.dataclass(frozen=True, slots=True)
class TryBlockFailure:
    """Why a ``try_block`` failed.

    Attributes:
        source: ``"step"`` (a step failed for good), ``"join"`` (a join had failed branches),
            ``"race"`` (every branch of a race failed) or ``"block"`` (the body raised
            ``RollbackError`` outside a step).
        name: the step, join or race that failed (the block's own name for ``"block"``).
        error: the text of the error.
        step: for ``"step"``, how the step failed (as ``try_step`` reports it).
    """

    source: str
    name: str
    error: str
    step: TryStepFailure | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TryBlockResult:
    """The outcome of ``ctx.try_block``: ``ok`` and ``value``, or ``failure``."""

    ok: bool
    value: Any = None
    failure: TryBlockFailure | None = None


# -- loop ----------------------------------------------------------------------------------------


async def run_loop(
    ctx: WorkflowContext,
    name: str,
    body: Callable[..., Any],
    initial: Any,
    prune_interval: int,
    history_size: int | None,
) -> Any:
    if not callable(body):
        raise TypeError(f'loop "{name}" needs a body function, got {body!r}')
    if (
        not isinstance(prune_interval, int)
        or isinstance(prune_interval, bool)
        or prune_interval < 1
    ):
        raise ValueError(
            f'loop "{name}": history_prune_interval must be an int >= 1, got {prune_interval!r}'
        )
    keep = prune_interval if history_size is None else history_size
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f'loop "{name}": history_size must be an int >= 1, got {history_size!r}')
    engine = ctx._engine
    history = engine.history
    entry, position = ctx._enter("loop", name)
    with ctx._busy("loop", name):
        if entry is not None and entry.status == "completed":
            return entry.data.get("output")
        if entry is None:
            try:
                state = roundtrip(initial)
            except (TypeError, ValueError) as exc:
                raise code_error(
                    "loop_state_not_serializable",
                    f'loop "{name}": the initial state cannot be recorded ({exc})',
                ) from None
            entry = ctx._new_entry("loop", name, position, state=state, iteration=0)
            entry.status = "running"
            history.save(entry)
            iteration = 0
        else:
            state = entry.data.get("state")
            iteration = int(entry.data.get("iteration") or 0)
        pruned_to = 0  # after a restart, older iterations may still be there: start at 0
        label = f"{ctx._scope.label}/{name}"
        while True:
            engine.check_evicted()
            lctx = ctx._child(entry.path + iteration_segment(iteration), f"{label}[{iteration}]")
            result = body(lctx, state)
            if inspect.isawaitable(result):
                result = await result
            lctx._finish_scope()
            if isinstance(result, LoopBreak):
                try:
                    value = roundtrip(result.value)
                except (TypeError, ValueError) as exc:
                    raise code_error(
                        "loop_output_not_serializable",
                        f'loop "{name}": the value of loop_break cannot be recorded ({exc})',
                    ) from None
                if engine.rollback_mode:
                    return value
                entry.status = "completed"
                entry.completed_at = engine.clock.now_ms()
                entry.data = {"state": state, "iteration": iteration, "output": value}
                history.save(entry)
                start = entry.path + iteration_segment(pruned_to)
                end = entry.path + iteration_segment(max(pruned_to, iteration + 1 - keep))
                if start < end:
                    history.delete_subtree(start, end)
                await engine.flush()
                return value
            if result is None:
                if state is not None:
                    raise code_error(
                        "loop_body_returned_none",
                        f'loop "{name}" has a state but its body returned None: return '
                        "ctx.loop_continue(new_state) or ctx.loop_break(value)",
                    )
                result = LoopContinue(None)
            if not isinstance(result, LoopContinue):
                raise TypeError(
                    f'loop "{name}": the body must return ctx.loop_continue(state), '
                    f"ctx.loop_break(value) or None, got {result!r}"
                )
            try:
                state = roundtrip(result.state)
            except (TypeError, ValueError) as exc:
                raise code_error(
                    "loop_state_not_serializable",
                    f'loop "{name}": the state of iteration {iteration + 1} cannot be '
                    f"recorded ({exc})",
                ) from None
            iteration += 1
            if engine.rollback_mode:
                continue  # replaying only: record nothing
            entry.data = {"state": state, "iteration": iteration}
            history.save(entry)  # the progress goes out with the next commit
            if iteration % prune_interval == 0 and iteration - keep > pruned_to:
                history.delete_subtree(
                    entry.path + iteration_segment(pruned_to),
                    entry.path + iteration_segment(iteration - keep),
                )
                pruned_to = iteration - keep


# -- join and race -------------------------------------------------------------------------------


def _branch_list(kind: str, name: str, branches: Any) -> list[tuple[str, Branch]]:
    """Normalise branches to ``[(name, fn)]``, checking names and functions."""
    pairs: list[tuple[str, Branch]] = []
    if isinstance(branches, Mapping):
        pairs = list(branches.items())
    elif isinstance(branches, Sequence) and not isinstance(branches, (str, bytes)):
        for item in branches:
            if isinstance(item, tuple) and len(item) == 2:
                pairs.append((item[0], item[1]))
            elif callable(item):
                pairs.append((getattr(item, "__name__", ""), item))
            else:
                raise TypeError(
                    f'{kind} "{name}": a branch must be a function or (name, fn), got {item!r}'
                )
    else:
        raise TypeError(
            f'{kind} "{name}": branches must be a dict {{name: fn}} or a list, got {branches!r}'
        )
    if not pairs:
        raise ValueError(f'{kind} "{name}" needs at least one branch')
    seen: set[str] = set()
    for branch, fn in pairs:
        if not isinstance(branch, str) or not branch:
            raise ValueError(
                f'{kind} "{name}": branch names must be non-empty strings, got {branch!r}'
            )
        if branch in seen:
            raise ValueError(f'{kind} "{name}": the branch name "{branch}" is used twice')
        if not callable(fn):
            raise TypeError(f'{kind} "{name}": branch "{branch}" must be a function, got {fn!r}')
        seen.add(branch)
    return pairs


def _check_branches(
    ctx: WorkflowContext, kind: str, name: str, recorded: list[str], code: list[str]
) -> None:
    if recorded != code:
        from .errors import HistoryDivergedError

        raise HistoryDivergedError(
            f"workflow history diverged at {ctx._scope.label}/{name}: the branches of "
            f'{kind} "{name}" changed:\n  recorded: {recorded}\n  code:     {code}',
            metadata={
                "location": f"{ctx._scope.label}/{name}",
                "expected": {"kind": kind, "name": name, "branches": recorded},
                "found": {"kind": kind, "name": name, "branches": code},
            },
        )


async def _run_branch(ctx: WorkflowContext, path: bytes, label: str, fn: Branch) -> Any:
    """One branch as a task: its own scope, counted as an executing strand."""
    engine = ctx._engine
    bctx = ctx._child(path, label)
    engine.strand_resumes()
    try:
        result = fn(bctx)
        if inspect.isawaitable(result):
            result = await result
        bctx._finish_scope()
        try:
            return roundtrip(result)
        except (TypeError, ValueError) as exc:
            raise code_error(
                "branch_output_not_serializable",
                f"branch {label} returned a value that cannot be recorded ({exc})",
            ) from None
    finally:
        engine.strand_waits()


def _pick_control_flow(errors: list[BaseException]) -> BaseException | None:
    found = [e for e in errors if is_control_flow(e)]
    return min(found, key=control_flow_priority) if found else None


async def run_join(
    ctx: WorkflowContext, name: str, branches: Mapping[str, Branch]
) -> dict[str, Any]:
    pairs = _branch_list("join", name, branches)
    engine = ctx._engine
    entry, position = ctx._enter("join", name)
    with ctx._busy("join", name):
        order = [branch for branch, _ in pairs]
        if entry is None:
            entry = ctx._new_entry(
                "join",
                name,
                position,
                order=order,
                branches={b: {"status": "pending"} for b in order},
            )
            entry.status = "running"
        _check_branches(ctx, "join", name, list(entry.data.get("order") or []), order)
        statuses: dict[str, dict[str, Any]] = entry.data["branches"]
        label = f"{ctx._scope.label}/{name}"
        # Every branch runs, also those recorded as completed: they replay their history
        # (cheaply) and register their rollback handlers exactly as in the first run.
        tasks = {
            branch: asyncio.get_running_loop().create_task(
                _run_branch(ctx, entry.path + branch_segment(index), f"{label}{{{branch}}}", fn)
            )
            for index, (branch, fn) in enumerate(pairs)
        }
        results: dict[str, Any] = {}
        errors: dict[str, str] = {}
        flow_errors: list[BaseException] = []
        engine.strand_waits()
        try:
            pending: set[asyncio.Task[Any]] = set(tasks.values())
            while pending and not flow_errors:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                flow_errors.extend(
                    e for t in done if (e := _task_error(t)) is not None and is_control_flow(e)
                )
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            engine.strand_resumes()
        for branch, task in tasks.items():
            exc = _task_error(task)
            if exc is None:
                results[branch] = task.result()
                statuses[branch] = {"status": "completed", "output": results[branch]}
            elif not is_control_flow(exc):
                errors[branch] = describe_error(exc)
                statuses[branch] = {"status": "failed", "error": errors[branch]}
        control = _pick_control_flow(flow_errors)
        if not engine.rollback_mode and not isinstance(control, _Evicted):
            if control is None:
                entry.status = "failed" if errors else "completed"
                entry.completed_at = engine.clock.now_ms()
            engine.history.save(entry)
            await engine.flush()
        if control is not None:
            raise control
        if errors:
            raise JoinError(name, {b: errors[b] for b in order if b in errors})
        return {b: results[b] for b in order}


def _task_error(task: asyncio.Task[Any]) -> BaseException | None:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


async def run_race(ctx: WorkflowContext, name: str, branches: Any) -> RaceResult:
    pairs = _branch_list("race", name, branches)
    engine = ctx._engine
    entry, position = ctx._enter("race", name)
    with ctx._busy("race", name):
        order = [branch for branch, _ in pairs]
        if entry is None:
            entry = ctx._new_entry(
                "race",
                name,
                position,
                order=order,
                winner=None,
                branches={b: {"status": "pending"} for b in order},
            )
            entry.status = "running"
        _check_branches(ctx, "race", name, list(entry.data.get("order") or []), order)
        recorded_winner = entry.data.get("winner")
        if recorded_winner is not None:
            # Replay the winner (its history is complete) so that its rollback handlers are
            # registered as in the first run; the recorded value is what the race returns.
            index = order.index(recorded_winner)
            engine.strand_waits()
            try:
                await _run_branch(
                    ctx,
                    entry.path + branch_segment(index),
                    f"{ctx._scope.label}/{name}{{{recorded_winner}}}",
                    pairs[index][1],
                )
            finally:
                engine.strand_resumes()
            return RaceResult(
                recorded_winner, entry.data["branches"][recorded_winner].get("output")
            )
        statuses: dict[str, dict[str, Any]] = entry.data["branches"]
        label = f"{ctx._scope.label}/{name}"
        loop = asyncio.get_running_loop()
        tasks: dict[asyncio.Task[Any], str] = {}
        errors: dict[str, str] = {
            b: str(s.get("error")) for b, s in statuses.items() if s["status"] == "failed"
        }
        winner_name: str | None = None
        winner_value: Any = None
        flow_errors: list[BaseException] = []
        engine.strand_waits()
        try:
            for index, (branch, fn) in enumerate(pairs):
                if statuses[branch]["status"] in ("pending", "running"):
                    task = loop.create_task(
                        _run_branch(
                            ctx, entry.path + branch_segment(index), f"{label}{{{branch}}}", fn
                        )
                    )
                    tasks[task] = branch
            pending = set(tasks)
            while pending and winner_name is None and not flow_errors:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: order.index(tasks[t])):
                    branch = tasks[task]
                    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
                    if exc is None:
                        if winner_name is None:
                            winner_name, winner_value = branch, task.result()
                    elif is_control_flow(exc):
                        flow_errors.append(exc)
                    else:
                        errors[branch] = describe_error(exc)
                        statuses[branch] = {"status": "failed", "error": errors[branch]}
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            engine.strand_resumes()
        control = _pick_control_flow(flow_errors)
        if control is not None and winner_name is None:
            if not engine.rollback_mode and not isinstance(control, _Evicted):
                engine.history.save(entry)
                await engine.flush()
            raise control
        if winner_name is None and engine.rollback_mode:
            raise _RollbackStop
        if engine.rollback_mode:
            return RaceResult(winner_name, winner_value)  # type: ignore[arg-type]
        if winner_name is not None:
            for index, branch in enumerate(order):
                if branch == winner_name:
                    statuses[branch] = {"status": "completed", "output": winner_value}
                    continue
                if statuses[branch]["status"] != "failed":
                    statuses[branch] = {"status": "cancelled"}
                engine.history.delete_subtree(entry.path + branch_segment(index))
                engine.forget_rollbacks(entry.path + branch_segment(index))
            entry.data["winner"] = winner_name
            entry.status = "completed"
        else:
            entry.status = "failed"
        entry.completed_at = engine.clock.now_ms()
        engine.history.save(entry)
        await engine.flush()
        if winner_name is None:
            raise RaceError(name, {b: errors[b] for b in order if b in errors})
        return RaceResult(winner_name, winner_value)


# -- try block -----------------------------------------------------------------------------------

TRY_BLOCK_CATCH = ("step", "join", "race")
_TRY_BLOCK_KINDS = frozenset({"step", "join", "race", "rollback"})


async def run_try(
    ctx: WorkflowContext, name: str, block: Branch, catch: Sequence[str]
) -> TryBlockResult:
    kinds = tuple(catch)
    unknown = set(kinds) - _TRY_BLOCK_KINDS
    if isinstance(catch, str) or unknown:
        raise ValueError(
            f'try_block "{name}": catch must be a list of {sorted(_TRY_BLOCK_KINDS)}, '
            f"got {catch!r}"
        )
    if not callable(block):
        raise TypeError(f'try_block "{name}" needs a function to run, got {block!r}')
    engine = ctx._engine
    entry, position = ctx._enter("try", name)
    with ctx._busy("try", name):
        if entry is None:
            entry = ctx._new_entry("try", name, position)
            entry.status = "running"
            engine.history.save(entry)  # written with the first commit of its body, or after
        bctx = ctx._child(entry.path + branch_segment(0), f"{ctx._scope.label}/{name}")
        try:
            value = block(bctx)
            if inspect.isawaitable(value):
                value = await value
            bctx._finish_scope()
        except BaseException as exc:
            if is_control_flow(exc):
                raise
            failure = _block_failure(name, exc)
            if failure is None or not _catches(failure, kinds):
                raise
            _settle(ctx, entry, "failed")
            return TryBlockResult(False, None, failure)
        _settle(ctx, entry, "completed")
        return TryBlockResult(True, value)


def _settle(ctx: WorkflowContext, entry: Any, status: str) -> None:
    engine = ctx._engine
    if entry.status != status and not engine.rollback_mode:
        entry.status = status
        entry.completed_at = engine.clock.now_ms()
        engine.history.save(entry)  # goes out with the next commit


def _block_failure(name: str, exc: BaseException) -> TryBlockFailure | None:
    """What ``exc`` says failed inside the block, or ``None`` for errors a try block does not
    capture (anything else the code raised: it fails the workflow as usual)."""
    step = step_failure(exc)
    if step is not None:
        return TryBlockFailure("step", step.step, step.error, step)
    if isinstance(exc, JoinError):
        return TryBlockFailure("join", str(exc.metadata["join"]), describe_error(exc))
    if isinstance(exc, RaceError):
        return TryBlockFailure("race", str(exc.metadata["race"]), describe_error(exc))
    if isinstance(exc, RollbackError):
        return TryBlockFailure("block", name, describe_error(exc))
    return None


def _catches(failure: TryBlockFailure, kinds: tuple[str, ...]) -> bool:
    if failure.source == "step":
        rollback = failure.step is not None and failure.step.kind == "rollback"
        return ("rollback" if rollback else "step") in kinds
    if failure.source in ("join", "race"):
        return failure.source in kinds
    return "rollback" in kinds
