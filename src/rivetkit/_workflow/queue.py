"""Queue receives inside workflows: ``ctx.queue.next`` and ``ctx.queue.next_batch``.

A receive is an entry of the history (kind ``message``). The messages are removed from
``_rivet_queue`` and recorded in the history in one transaction (``ActorQueue.take``), so each
message is handed to the workflow exactly once: a replay returns the recorded messages and
takes nothing from the queue. While it waits, the actor may sleep; a send wakes it. With a
``timeout``, the deadline is recorded before the wait, so the timeout keeps counting across
sleeps and restarts (the actor is woken at the deadline).

``completable=True`` messages answer senders that wait (``handle.send(..., wait=True)``):
``await message.complete(response)`` resolves the sender and records the completion; on a replay
``complete`` of an already completed message does nothing. As with ``c.queue``, a scope must
complete such a message before it receives the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, overload

import apsw

from ..errors import RivetError
from .engine import _Evicted, _RollbackStop
from .errors import code_error
from .history import Entry

if TYPE_CHECKING:
    from .context import WorkflowContext

__all__ = ["WorkflowQueue", "WorkflowQueueMessage"]


class WorkflowQueueMessage:
    """A message received by a workflow.

    Attributes:
        id: the message's id in the actor's queue.
        name: the queue it was sent to.
        body: its body.
        created_at: when it was sent (epoch ms).
        completable: received with ``completable=True``.
    """

    __slots__ = ("_completed", "_ctx", "_entry", "body", "completable", "created_at", "id", "name")

    def __init__(
        self, ctx: WorkflowContext, entry: Entry, raw: dict[str, Any], completable: bool
    ) -> None:
        self._ctx = ctx
        self._entry = entry
        self.id: int = int(raw["id"])
        self.name: str = str(raw["name"])
        self.body: Any = raw.get("body")
        self.created_at: int = int(raw.get("createdAt") or 0)
        self.completable = completable
        self._completed = False

    def __repr__(self) -> str:
        return (
            f"WorkflowQueueMessage(id={self.id}, name={self.name!r}, body={self.body!r}, "
            f"created_at={self.created_at})"
        )

    async def complete(self, response: Any = None) -> None:
        """Answer a sender waiting with ``wait=True`` and record the completion (a replay of an
        already completed message does nothing).

        Raises:
            RivetError: ``queue.complete_not_configured`` without ``completable=True``;
                ``queue.already_completed`` on a second call.
        """
        if not self.completable:
            raise RivetError(
                "queue",
                "complete_not_configured",
                f"Queue '{self.name}' message was not received with completable=True.",
                metadata={"name": self.name},
                status=400,
            )
        if self._completed:
            raise RivetError(
                "queue", "already_completed", "Queue message was already completed.", status=400
            )
        scope = self._ctx._scope
        engine = self._ctx._engine
        entry = self._entry
        done: list[int] = entry.data.setdefault("completed", [])
        self._completed = True
        scope.open_messages.discard(self.id)
        if self.id in done:
            return  # completed in an earlier run: the sender was answered then
        instance = engine.instance
        waiters = getattr(instance.host, "queue_completions", None)
        if waiters is not None:
            waiters.resolve(instance.actor_id, self.id, response)
        done.append(self.id)
        if not engine.rollback_mode:
            engine.history.save(entry)  # goes out with the next commit


class WorkflowQueue:
    """``ctx.queue``: receive messages of the actor's queues as recorded workflow operations."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: WorkflowContext) -> None:
        self._ctx = ctx

    @overload
    async def next(
        self,
        name: str,
        *,
        names: Sequence[str] | str | None = ...,
        timeout: None = ...,
        completable: bool = ...,
    ) -> WorkflowQueueMessage: ...

    @overload
    async def next(
        self,
        name: str,
        *,
        names: Sequence[str] | str | None = ...,
        timeout: float,
        completable: bool = ...,
    ) -> WorkflowQueueMessage | None: ...

    async def next(
        self,
        name: str,
        *,
        names: Sequence[str] | str | None = None,
        timeout: float | None = None,
        completable: bool = False,
    ) -> WorkflowQueueMessage | None:
        """Wait for the next message and record it under ``name``.

        Args:
            name: the operation's name in the history (unique in the scope).
            names: queue names to receive from (default: any queue).
            timeout: seconds to wait at most; ``None`` after that. Durable: it keeps counting
                while the actor sleeps.
            completable: the message must be completed with ``await message.complete(...)``.

        Returns:
            The message, or ``None`` when ``timeout`` passed first.
        """
        messages = await self._receive(name, names, 1, timeout, completable)
        return messages[0] if messages else None

    async def next_batch(
        self,
        name: str,
        count: int,
        *,
        names: Sequence[str] | str | None = None,
        timeout: float | None = None,
        completable: bool = False,
    ) -> list[WorkflowQueueMessage]:
        """Wait for at least one message and take up to ``count``; ``[]`` after ``timeout``."""
        return await self._receive(name, names, count, timeout, completable)

    async def send(self, name: str, body: Any = None) -> None:
        """Send a message to this actor's own queue (inside a step only)."""
        self._ctx._require_step("queue.send")
        await self._ctx._engine.instance.queue.send(name, body)

    async def _receive(
        self,
        name: str,
        names: Sequence[str] | str | None,
        count: int,
        timeout: float | None,
        completable: bool,
    ) -> list[WorkflowQueueMessage]:
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f'queue wait "{name}": count must be an int >= 1, got {count!r}')
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f'queue wait "{name}": timeout must be >= 0 seconds, got {timeout!r}')
        wanted = _names(names)
        ctx = self._ctx
        engine = ctx._engine
        scope = ctx._scope
        if scope.open_messages:
            raise code_error(
                "previous_message_not_completed",
                f'queue wait "{name}": a completable message received earlier in '
                f"{scope.label or '/'} is not completed; call `await message.complete(...)` "
                "before receiving the next one",
            )
        entry, position = ctx._enter("message", name)
        with ctx._busy("message", name):
            if entry is None:
                deadline = None
                if timeout is not None:
                    deadline = engine.clock.now_ms() + round(timeout * 1000)
                entry = ctx._new_entry(
                    "message",
                    name,
                    position,
                    names=wanted,
                    deadline=deadline,
                    messages=[],
                    completed=[],
                )
                if deadline is not None and timeout:
                    engine.history.save(entry)
                    await engine.flush()  # the deadline is durable before the wait
            elif entry.status != "completed" and engine.rollback_mode:
                raise _RollbackStop
            if entry.status != "completed":
                await self._wait(entry, wanted, count)
            out = [
                WorkflowQueueMessage(ctx, entry, raw, completable)
                for raw in entry.data.get("messages", ())
            ]
            if completable:
                done = entry.data.get("completed", ())
                scope.open_messages.update(m.id for m in out if m.id not in done)
            return out

    async def _wait(self, entry: Entry, wanted: list[str] | None, count: int) -> None:
        ctx = self._ctx
        engine = ctx._engine
        instance = engine.instance
        clock = engine.clock
        history = engine.history
        deadline: int | None = entry.data.get("deadline")

        def record(conn: apsw.Connection, messages: list[Any]) -> None:
            # Runs inside the queue's transaction: the messages leave the queue and enter the
            # history together. Only this entry is written here (the state is not part of this
            # transaction); earlier entries of the scope were committed before the wait, and the
            # rest of the pending history goes out with the next commit, with the state.
            entry.status = "completed"
            entry.completed_at = clock.now_ms()
            entry.data["messages"] = [
                {"id": m.id, "name": m.name, "body": m.body, "createdAt": m.created_at}
                for m in messages
            ]
            conn.execute(
                "INSERT INTO _rivet_wf_kv (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (entry.key, entry.encode()),
            )

        if history.unwritten_before(entry):
            # An earlier entry of this scope (an ephemeral step, a checkpoint, a sleep that had
            # already passed) waits for the next commit, with the state changes it made: commit
            # it now, since the receive below writes its own entry in the queue's transaction.
            await engine.flush()
        engine.strand_waits(deadline)
        try:
            while True:
                engine.check_evicted()
                remaining = None
                if deadline is not None:
                    remaining = max(0.0, (deadline - clock.now_ms()) / 1000.0)
                try:
                    messages = await instance.queue.take(
                        wanted, count, timeout=remaining, record=record
                    )
                except RivetError as exc:
                    if exc.group == "actor" and exc.code == "aborted":
                        raise _Evicted from None
                    raise
                if messages:
                    return
                if deadline is not None and clock.now_ms() >= deadline:
                    entry.status = "completed"
                    entry.completed_at = clock.now_ms()
                    entry.data["messages"] = []
                    history.save(entry)  # timed out: goes out with the next commit
                    return
        finally:
            engine.strand_resumes(deadline)


def _names(names: Sequence[str] | str | None) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    unique = list(dict.fromkeys(names))
    for queue_name in unique:
        if not isinstance(queue_name, str) or not queue_name:
            raise ValueError(f"queue names must be non-empty strings, got {queue_name!r}")
    return unique or None
