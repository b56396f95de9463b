"""rivetkit: Rivet Actors for Python.

Long-lived, stateful actors addressed by name and key, with durable state, actions over HTTP and
WebSocket, and an embedded server that the official RivetKit clients use unchanged.

Example::

    import rivetkit

    counter = rivetkit.actor("counter", state={"count": 0})

    @counter.action
    def increment(c, amount: int) -> int:
        c.state["count"] += amount
        return c.state["count"]

    registry = rivetkit.setup(counter)
    registry.run()   # http://127.0.0.1:6420
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

from ._protocol.values import BigInt as BigInt
from ._runtime.conn import Conn as Conn
from ._runtime.context import ActionContext as ActionContext
from ._runtime.context import ActorContext as ActorContext
from ._runtime.db import ActorDb as ActorDb
from ._runtime.kv import ActorKv as ActorKv
from ._runtime.queue import ActorQueue as ActorQueue
from ._runtime.queue import QueueMessage as QueueMessage
from ._runtime.schedule import Cron as Cron
from ._runtime.schedule import CronFire as CronFire
from ._runtime.schedule import CronJob as CronJob
from ._runtime.schedule import Schedule as Schedule
from ._runtime.schedule import ScheduledEvent as ScheduledEvent
from ._runtime.schedule import ScheduledFireInfo as ScheduledFireInfo
from ._runtime.schedule import ScheduleErrorInfo as ScheduleErrorInfo
from ._workflow import CriticalError as CriticalError
from ._workflow import HistoryDivergedError as HistoryDivergedError
from ._workflow import JoinError as JoinError
from ._workflow import RaceError as RaceError
from ._workflow import RaceResult as RaceResult
from ._workflow import RollbackError as RollbackError
from ._workflow import StepExhaustedError as StepExhaustedError
from ._workflow import StepTimeoutError as StepTimeoutError
from ._workflow import TryBlockFailure as TryBlockFailure
from ._workflow import TryBlockResult as TryBlockResult
from ._workflow import TryStepFailure as TryStepFailure
from ._workflow import TryStepResult as TryStepResult
from ._workflow import WorkflowContext as WorkflowContext
from ._workflow import WorkflowError as WorkflowError
from ._workflow import WorkflowErrorEvent as WorkflowErrorEvent
from ._workflow import WorkflowQueueMessage as WorkflowQueueMessage
from ._workflow import workflow as workflow
from .config import ActorOptions as ActorOptions
from .config import RegistryConfig as RegistryConfig
from .definition import ActorDefinition as ActorDefinition
from .definition import DefinitionError as DefinitionError
from .definition import QueueSpec as QueueSpec
from .definition import actor as actor
from .definition import event as event
from .definition import queue as queue
from .errors import ActorError as ActorError
from .errors import RivetError as RivetError
from .errors import UserError as UserError
from .registry import Registry as Registry
from .registry import setup as setup

__all__ = [
    "ActionContext",
    "ActorContext",
    "ActorDb",
    "ActorDefinition",
    "ActorError",
    "ActorKv",
    "ActorOptions",
    "ActorQueue",
    "BigInt",
    "Conn",
    "CriticalError",
    "Cron",
    "CronFire",
    "CronJob",
    "DefinitionError",
    "HistoryDivergedError",
    "JoinError",
    "QueueMessage",
    "QueueSpec",
    "RaceError",
    "RaceResult",
    "Registry",
    "RegistryConfig",
    "RivetError",
    "RollbackError",
    "Schedule",
    "ScheduleErrorInfo",
    "ScheduledEvent",
    "ScheduledFireInfo",
    "StepExhaustedError",
    "StepTimeoutError",
    "TryBlockFailure",
    "TryBlockResult",
    "TryStepFailure",
    "TryStepResult",
    "UserError",
    "WorkflowContext",
    "WorkflowError",
    "WorkflowErrorEvent",
    "WorkflowQueueMessage",
    "__version__",
    "actor",
    "event",
    "queue",
    "setup",
    "workflow",
]

logging.getLogger("rivetkit").addHandler(logging.NullHandler())
