"""The errors of durable workflows.

Hierarchy (all are :class:`~rivetkit.errors.RivetError` with group ``workflow``)::

    WorkflowError                   any workflow error; ``terminal``: it fails the workflow
    ├── HistoryDivergedError        history_diverged: the code does not match the history
    ├── StepExhaustedError          step_exhausted: a step failed on every allowed attempt
    ├── StepTimeoutError            step_timed_out: a step ran longer than its ``timeout``
    ├── CriticalError               critical: raised by a step to fail at once, without retries
    │   └── RollbackError           rollback: like CriticalError, and try_step does not catch it
    ├── JoinError                   join_failed: one or more join branches failed
    └── RaceError                   race_failed: every race branch failed

Two families, which the engine treats differently:

* *terminal* errors (a step exhausted its retries, a critical error, a failed join, any exception
  the workflow code does not catch) fail the workflow: its rollback handlers run and the failure
  is recorded, so the workflow is not run again on the next wake;
* errors that say the *code* is wrong (``history_diverged``, ``duplicate_entry_name``,
  ``entry_in_progress``, ``step_output_not_serializable``, ``outside_step``) stop the run without
  recording anything: after the code is fixed, the next wake replays the history and continues.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import RivetError

__all__ = [
    "CriticalError",
    "HistoryDivergedError",
    "JoinError",
    "RaceError",
    "RollbackError",
    "StepExhaustedError",
    "StepTimeoutError",
    "WorkflowError",
    "code_error",
    "outside_step",
]


class WorkflowError(RivetError):
    """An error of the workflow engine (group ``workflow``).

    Attributes:
        terminal: true when the error fails the workflow (rollbacks run, the failure is recorded);
            false for mistakes in the workflow code, which only stop the current run.
    """

    terminal = True

    def __init__(
        self, code: str, message: str, *, metadata: Any = None, terminal: bool | None = None
    ) -> None:
        super().__init__("workflow", code, message, metadata=metadata, public=False, status=500)
        if terminal is not None:
            self.terminal = terminal


class HistoryDivergedError(WorkflowError):
    """The workflow code reached a point its recorded history does not match.

    The message is a readable diff: where (the location path), what the history recorded there
    and what the code asked for. ``metadata`` carries the same as data: ``location``,
    ``expected`` (recorded) and ``found`` (code), each ``{"kind", "name"}`` or ``None``.
    """

    terminal = False

    def __init__(self, message: str, *, metadata: Any = None) -> None:
        super().__init__("history_diverged", message, metadata=metadata)


class StepExhaustedError(WorkflowError):
    """A step failed on its first attempt and on every retry (``max_retries``).

    Attributes:
        step: the step's name.
        attempts: how many attempts ran.
        last_error: the text of the last attempt's error.
        timed_out: the last attempt timed out (``retry_on_timeout=True``).
    """

    def __init__(
        self, step: str, attempts: int, last_error: str, *, timed_out: bool = False
    ) -> None:
        super().__init__(
            "step_exhausted",
            f'step "{step}" failed after {attempts} attempt(s): {last_error}',
            metadata={"step": step, "attempts": attempts, "lastError": last_error},
        )
        self.step = step
        self.attempts = attempts
        self.last_error = last_error
        self.timed_out = timed_out


class StepTimeoutError(WorkflowError):
    """A step ran longer than its ``timeout``. Not retried unless ``retry_on_timeout=True``."""

    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(
            "step_timed_out",
            f'step "{step}" timed out after {seconds:g} s',
            metadata={"step": step, "timeout": seconds},
        )
        self.step = step
        self.seconds = seconds


class CriticalError(WorkflowError):
    """Raise inside a step to fail it at once, without retries (an unrecoverable error).

    Example::

        def validate(order):
            if not order["items"]:
                raise rivetkit.CriticalError("an order needs items")
    """

    _code = "critical"

    def __init__(self, message: str, *, metadata: Any = None) -> None:
        super().__init__(self._code, message, metadata=metadata)


class RollbackError(CriticalError):
    """Raise inside a step to fail the workflow at once and run its rollback handlers.

    Unlike other step failures, ``try_step`` does not turn it into a value unless asked to
    (``catch=("rollback",)``).
    """

    _code = "rollback"


class JoinError(WorkflowError):
    """One or more branches of ``ctx.join`` failed (the others ran to the end).

    Attributes:
        errors: branch name -> the error text of each failed branch.
    """

    def __init__(self, name: str, errors: Mapping[str, str]) -> None:
        listing = "; ".join(f"{branch}: {error}" for branch, error in errors.items())
        super().__init__(
            "join_failed",
            f'join "{name}": {len(errors)} branch(es) failed: {listing}',
            metadata={"join": name, "errors": dict(errors)},
        )
        self.errors = dict(errors)


class RaceError(WorkflowError):
    """Every branch of ``ctx.race`` failed.

    Attributes:
        errors: branch name -> the error text of each branch.
    """

    def __init__(self, name: str, errors: Mapping[str, str]) -> None:
        listing = "; ".join(f"{branch}: {error}" for branch, error in errors.items())
        super().__init__(
            "race_failed",
            f'race "{name}": every branch failed: {listing}',
            metadata={"race": name, "errors": dict(errors)},
        )
        self.errors = dict(errors)


def code_error(code: str, message: str, **metadata: Any) -> WorkflowError:
    """A non-terminal error about the workflow code (fix the code; the next wake resumes)."""
    return WorkflowError(code, message, metadata=metadata or None, terminal=False)


def outside_step(feature: str) -> WorkflowError:
    """``workflow.outside_step``: actor data used by workflow code outside a step."""
    return code_error(
        "outside_step",
        f"{feature} is only available inside workflow steps: move this code into "
        f'`await ctx.step("name", fn)`, so that it runs once and its effect is recorded',
        feature=feature,
    )


def describe_error(exc: BaseException) -> str:
    """The text recorded for an error: ``Type: message`` (``group.code: message`` for ours)."""
    if isinstance(exc, RivetError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
