"""Contexts handed to actor code: ``ActorContext`` for hooks, ``ActionContext`` for actions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

T = TypeVar("T")

if TYPE_CHECKING:
    import logging

    from ..client import Client
    from .conn import Conn
    from .db import ActorDb
    from .instance import ActorInstance
    from .kv import ActorKv
    from .queue import ActorQueue
    from .schedule import Cron, Schedule

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

    @property
    def kv(self) -> ActorKv:
        """The actor's key-value store (persisted in its own database)."""
        return self._actor.kv

    @property
    def db(self) -> ActorDb:
        """The actor's own SQLite database (user tables beside RivetKit's ``_rivet_*``)."""
        return self._actor.db

    @property
    def queue(self) -> ActorQueue:
        """The actor's durable queues: ``await c.queue.send("jobs", body)``,
        ``await c.queue.next(["jobs"])``, ``async for m in c.queue.iter(...)``."""
        return self._actor.queue

    @property
    def schedule(self) -> Schedule:
        """One-off durable alarms: ``await c.schedule.after(60, "action", *args)``."""
        return self._actor.schedule

    @property
    def cron(self) -> Cron:
        """Recurring durable jobs: ``await c.cron.set("name", "0 * * * *", "action")``."""
        return self._actor.cron

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def abort_signal(self) -> asyncio.Event:
        """Set when the actor starts to sleep or to be destroyed: ``await c.abort_signal.wait()``
        ends a long wait; the actor stays fully usable for the rest of the grace period."""
        return self._actor.abort_signal

    @property
    def aborted(self) -> bool:
        """True once the actor began to sleep or to be destroyed (loop condition for ``run``)."""
        return self._actor.aborted

    def sleep(self) -> None:
        """Put the actor to sleep as soon as possible (after this call returns).

        The shutdown sequence runs in the background: ``abort_signal`` fires, ``run`` is
        awaited, ``on_sleep`` runs, connections are closed (clients reconnect and wake it), the
        state is saved. The next request wakes the actor again.
        """
        self._actor.request_stop("sleep")

    def destroy(self) -> None:
        """Destroy the actor: ``on_destroy`` runs, its storage is deleted, later requests get
        ``actor.not_found``, and its key may be used to create a new actor."""
        self._actor.request_stop("destroy")

    def keep_awake(self, awaitable: Awaitable[T]) -> asyncio.Future[T]:
        """Run ``awaitable`` in the background, keeping the actor awake until it finishes (no
        idle sleep; the shutdown window also waits for it). Returns its task."""
        return self._actor.keep_awake(awaitable)

    def wait_until(self, awaitable: Awaitable[T]) -> asyncio.Future[T]:
        """Run ``awaitable`` in the background; if the actor stops meanwhile, the shutdown
        window waits for it (it does not prevent idle sleep). Returns its task."""
        return self._actor.wait_until(awaitable)

    async def save_state(self) -> None:
        """Commit the state now (changes made by actions and hooks are committed anyway before
        they answer; use this in ``run`` handlers and background tasks)."""
        await self._actor.save_state()

    def client(self) -> Client:
        """A client for calling other actors of this registry (in process, no network)."""
        return self._actor.client()

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
