"""Contexts handed to actor code: ``ActorContext`` for hooks, ``ActionContext`` for actions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

    from .conn import Conn
    from .instance import ActorInstance

__all__ = ["ActorContext", "ActionContext"]


class ActorContext:
    """What actor code sees as ``c``.

    Attributes:
        state: the actor's durable state (read and write; assign to replace it).
        vars: ephemeral per-wake values (not persisted).
        key: the actor's key, a list of strings.
        name: the actor's name.
        actor_id: the actor's id.
        log: a logger that tags records with the actor's name, key and id.
        conns: the open connections, by id.
    """

    __slots__ = ("_actor",)

    def __init__(self, actor: ActorInstance) -> None:
        self._actor = actor

    @property
    def state(self) -> Any:
        return self._actor.state

    @state.setter
    def state(self, value: Any) -> None:
        self._actor.set_state(value)

    @property
    def vars(self) -> Any:
        return self._actor.vars

    @vars.setter
    def vars(self, value: Any) -> None:
        self._actor.vars = value

    @property
    def key(self) -> list[str]:
        return list(self._actor.key)

    @property
    def name(self) -> str:
        return self._actor.name

    @property
    def actor_id(self) -> str:
        return self._actor.actor_id

    @property
    def log(self) -> logging.LoggerAdapter[Any]:
        return self._actor.log

    @property
    def conns(self) -> Mapping[str, Conn]:
        return self._actor.conns

    def broadcast(self, name: str, *args: Any) -> None:
        """Send event ``name`` with ``args`` to every connection subscribed to it."""
        self._actor.broadcast(name, list(args))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._actor.name} {self._actor.key!r}>"


class ActionContext(ActorContext):
    """The context of an action: an :class:`ActorContext` plus the calling connection.

    Attributes:
        conn: the connection that called the action (a transient one for HTTP calls).
    """

    __slots__ = ("conn",)

    def __init__(self, actor: ActorInstance, conn: Conn | None) -> None:
        self._actor = actor
        self.conn = conn
