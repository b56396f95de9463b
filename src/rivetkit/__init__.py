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
from .config import ActorOptions as ActorOptions
from .config import RegistryConfig as RegistryConfig
from .definition import ActorDefinition as ActorDefinition
from .definition import DefinitionError as DefinitionError
from .definition import actor as actor
from .definition import event as event
from .errors import ActorError as ActorError
from .errors import RivetError as RivetError
from .errors import UserError as UserError
from .registry import Registry as Registry
from .registry import setup as setup

__all__ = [
    "ActionContext",
    "ActorContext",
    "ActorDefinition",
    "ActorError",
    "ActorOptions",
    "BigInt",
    "Conn",
    "DefinitionError",
    "Registry",
    "RegistryConfig",
    "RivetError",
    "UserError",
    "__version__",
    "actor",
    "event",
    "setup",
]

logging.getLogger("rivetkit").addHandler(logging.NullHandler())
