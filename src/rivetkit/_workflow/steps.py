"""Steps: the attempts, retries, timeouts and failures of ``ctx.step`` and ``ctx.try_step``.

A step entry is created at the live frontier and written when an attempt ends: a success records
the output (committed with the actor state, one transaction); a failed attempt records the
attempt count, the error and ``status = "failed"`` (the state changes it made are committed too:
roll-forward) and the retry waits durably for its backoff; a step that failed for good records
``status = "exhausted"`` and how (``data["failure"]``), so that a replay raises the same error
again without running the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .engine import WorkflowErrorEvent, _RollbackAction, _RollbackStop, failure_kind
from .errors import (
    CriticalError,
    RollbackError,
    StepExhaustedError,
    StepTimeoutError,
    WorkflowError,
    code_error,
    describe_error,
)
from .history import Entry, decode_value, encode_value

if TYPE_CHECKING:
    from .context import WorkflowContext

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY_BACKOFF_BASE",
    "DEFAULT_RETRY_BACKOFF_MAX",
    "DEFAULT_STEP_TIMEOUT",
    "TryStepFailure",
    "TryStepResult",
    "register_rollback",
    "run_step",
    "step_failure",
]

T = TypeVar("T")

DEFAULT_STEP_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_BACKOFF_BASE = 0.1
DEFAULT_RETRY_BACKOFF_MAX = 30.0


@dataclasses.dataclass(frozen=True, slots=True)
class TryStepFailure:
    """Why a ``try_step`` failed.

    Attributes:
        kind: ``"exhausted"`` (every attempt failed), ``"timeout"``, ``"critical"`` (the step
            raised ``CriticalError``) or ``"rollback"`` (it raised ``RollbackError``).
        step: the step's name.
        attempts: how many attempts ran.
        error: the text of the (last) error.
    """

    kind: str
    step: str
    attempts: int
    error: str


@dataclasses.dataclass(frozen=True, slots=True)
class TryStepResult(Generic[T]):
    """The outcome of ``ctx.try_step``: ``ok`` and ``value``, or ``failure``."""

    ok: bool
    value: T | None = None
    failure: TryStepFailure | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _StepOptions:
    timeout: float | None
    max_retries: int
    backoff_base: float
    backoff_max: float
    retry_on_timeout: bool
    rollback: Callable[..., Any] | None
    ephemeral: bool

    @classmethod
    def make(
        cls,
        name: str,
        fn: Any,
        timeout: float | None,
        max_retries: int,
        retry_backoff_base: float,
        retry_backoff_max: float,
        retry_on_timeout: bool,
        rollback: Callable[..., Any] | None,
        ephemeral: bool,
    ) -> _StepOptions:
        if not callable(fn):
            raise TypeError(f'step "{name}" needs a function to run, got {fn!r}')
        if (
            timeout is DEFAULT_STEP_TIMEOUT
            and max_retries is DEFAULT_MAX_RETRIES
            and retry_backoff_base is DEFAULT_RETRY_BACKOFF_BASE
            and retry_backoff_max is DEFAULT_RETRY_BACKOFF_MAX
            and retry_on_timeout is False
            and rollback is None
            and ephemeral is False
        ):
            return _DEFAULT_OPTIONS  # the common case, checked once
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f'step "{name}": timeout must be > 0 seconds or None, got {timeout!r}')
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError(f'step "{name}": max_retries must be an int >= 0, got {max_retries!r}')
        for label, value in (
            ("retry_backoff_base", retry_backoff_base),
            ("retry_backoff_max", retry_backoff_max),
        ):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'step "{name}": {label} must be >= 0 seconds, got {value!r}')
        if rollback is not None and not callable(rollback):
            raise TypeError(f'step "{name}": rollback must be a function, got {rollback!r}')
        return cls(
            None if timeout is None else float(timeout),
            max_retries,
            float(retry_backoff_base),
            float(retry_backoff_max),
            bool(retry_on_timeout),
            rollback,
            bool(ephemeral),
        )

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before the retry that follows attempt number ``attempts``."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** (attempts - 1)))


_DEFAULT_OPTIONS = _StepOptions(
    DEFAULT_STEP_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF_BASE,
    DEFAULT_RETRY_BACKOFF_MAX,
    False,
    None,
    False,
)


async def run_step(
    ctx: WorkflowContext,
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    options: _StepOptions,
) -> Any:
    engine = ctx._engine
    scope = ctx._scope
    if options.rollback is not None and not scope.checkpoint:
        ctx._check_name("step", name)
        raise code_error(
            "rollback_checkpoint_missing",
            f'step "{name}" has a rollback handler but no rollback checkpoint precedes it: '
            f'call `await ctx.rollback_checkpoint("...")` before steps with rollback',
            location=f"{scope.label}/{name}",
        )
    entry, position = ctx._enter("step", name)
    with ctx._busy("step", name):
        if entry is None:
            entry = ctx._new_entry("step", name, position)
        elif entry.status == "completed":
            output = entry.data.get("output")
            register_rollback(ctx, entry, options, output)
            return output
        elif engine.rollback_mode:
            raise _RollbackStop
        try:
            return await _attempts(ctx, entry, fn, args, options)
        except (StepExhaustedError, StepTimeoutError, CriticalError) as exc:
            # The step failed for good (now, or in a recorded run): say which step and how,
            # for try_step and try_block up the stack.
            kind = failure_kind(exc)
            message = exc.last_error if isinstance(exc, StepExhaustedError) else exc.message
            setattr(exc, _FAILURE_ATTR, TryStepFailure(kind, name, entry.attempts, message))
            raise


_FAILURE_ATTR = "_rivetkit_step_failure"


def step_failure(exc: BaseException) -> TryStepFailure | None:
    """The step failure carried by ``exc``, when a step raised it as its final outcome."""
    failure = getattr(exc, _FAILURE_ATTR, None)
    return failure if isinstance(failure, TryStepFailure) else None


async def _attempts(
    ctx: WorkflowContext,
    entry: Entry,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    options: _StepOptions,
) -> Any:
    engine = ctx._engine
    history = engine.history
    name = entry.name
    while True:
        if entry.status == "exhausted":
            raise _stored_failure(entry)
        if entry.status == "failed":
            if entry.attempts > options.max_retries:
                entry.status = "exhausted"
                entry.data["failure"] = {"kind": "exhausted", "message": entry.error}
                history.save(entry)
                await engine.flush()
                raise _stored_failure(entry)
            retry_at = (entry.last_attempt_at or 0) + round(options.backoff(entry.attempts) * 1000)
            await engine.wait_until(retry_at)
        engine.check_evicted()
        entry.attempts += 1
        entry.last_attempt_at = engine.clock.now_ms()
        entry.status = "running"
        try:
            output = await engine.call_user(fn, args, options.timeout, name)
        except StepTimeoutError as exc:
            if options.retry_on_timeout:
                await _attempt_failed(ctx, entry, options, exc, timed_out=True)
                continue
            await _record_failure(ctx, entry, "timeout", exc, timeout=options.timeout)
            raise
        except CriticalError as exc:
            kind = "rollback" if isinstance(exc, RollbackError) else "critical"
            await _record_failure(ctx, entry, kind, exc)
            raise
        except WorkflowError as exc:
            if not exc.terminal:
                raise  # a mistake in the code (e.g. an operation inside the step)
            await _attempt_failed(ctx, entry, options, exc)
            continue
        except Exception as exc:
            await _attempt_failed(ctx, entry, options, exc)
            continue
        try:
            blob = encode_value({"output": output})
            value = decode_value(blob)["output"]
        except (TypeError, ValueError) as exc:
            entry.status = "failed"
            raise code_error(
                "step_output_not_serializable",
                f'step "{name}" returned a value that cannot be recorded ({exc}); return '
                "JSON-like data (dict, list, str, int, float, bool, None), bytes or a "
                "dataclass",
                step=name,
            ) from None
        entry.status = "completed"
        entry.error = None
        entry.completed_at = engine.clock.now_ms()
        entry.data = {"output": value}
        entry.blob = blob
        history.save(entry)
        if not options.ephemeral:
            await engine.flush()
        register_rollback(ctx, entry, options, value)
        return value


async def _attempt_failed(
    ctx: WorkflowContext,
    entry: Entry,
    options: _StepOptions,
    exc: BaseException,
    *,
    timed_out: bool = False,
) -> None:
    """Record a failed attempt (with the state changes it made: roll-forward); raise if it
    was the last one."""
    engine = ctx._engine
    entry.error = describe_error(exc)
    will_retry = entry.attempts <= options.max_retries
    delay = options.backoff(entry.attempts) if will_retry else None
    if will_retry:
        entry.status = "failed"
        engine.history.save(entry)
        await engine.flush()
        engine.log.warning(
            "workflow step failed, retrying step=%s attempt=%s delay_s=%s error=%s",
            entry.name,
            entry.attempts,
            delay,
            entry.error,
        )
    else:
        entry.status = "exhausted"
        entry.data["failure"] = {
            "kind": "timeout" if timed_out else "exhausted",
            "message": entry.error,
        }
        engine.history.save(entry)
        await engine.flush()
    retry_at = None
    if delay is not None and entry.last_attempt_at is not None:
        retry_at = entry.last_attempt_at + round(delay * 1000)
    await engine.report(
        WorkflowErrorEvent(
            "step",
            entry.error,
            entry.name,
            entry.attempts,
            options.max_retries,
            will_retry,
            delay,
            retry_at,
        )
    )
    if not will_retry:
        raise StepExhaustedError(
            entry.name, entry.attempts, entry.error, timed_out=timed_out
        ) from exc


async def _record_failure(
    ctx: WorkflowContext,
    entry: Entry,
    kind: str,
    exc: BaseException,
    *,
    timeout: float | None = None,
) -> None:
    engine = ctx._engine
    entry.error = describe_error(exc)
    entry.status = "exhausted"
    entry.data["failure"] = {
        "kind": kind,
        "message": exc.message if isinstance(exc, WorkflowError) else entry.error,
        "timeout": timeout,
    }
    engine.history.save(entry)
    await engine.flush()
    await engine.report(
        WorkflowErrorEvent("step", entry.error, entry.name, entry.attempts, None, False)
    )


def register_rollback(
    ctx: WorkflowContext, entry: Entry, options: _StepOptions, output: Any
) -> None:
    if options.rollback is None or entry.rollback_completed_at is not None:
        return
    ctx._engine.rollback_actions.append(_RollbackAction(entry, options.rollback, output))


def _stored_failure(entry: Entry) -> WorkflowError:
    """The error a recorded terminal failure raises again on replay."""
    failure = entry.data.get("failure") or {}
    kind = failure.get("kind", "exhausted")
    message = str(failure.get("message") or entry.error or "step failed")
    if kind == "timeout" and failure.get("timeout") is not None:
        return StepTimeoutError(entry.name, float(failure["timeout"]))
    if kind == "critical":
        return CriticalError(message)
    if kind == "rollback":
        return RollbackError(message)
    return StepExhaustedError(
        entry.name, entry.attempts, entry.error or message, timed_out=kind == "timeout"
    )
