"""``POST /queue/{name}``: a client's queue send (spec §10), in json, cbor and bare.

The message is stored (committed with the other sends of the same event-loop tick) before the
answer. Without ``wait`` the answer is
``{"status": "completed"}`` at once (as the official runtime). With ``wait`` the request waits for
``message.complete(response)`` or the ``timeout`` (``{"status": "timedOut"}``). The wait does not
keep the actor awake: the request stops counting as work in flight once the message is stored,
so the consumer may sleep; if it does, the sender wakes it again, and the completion made by the
next generation answers the sender (waiters are kept by the host, not by the instance).

As in RivetKit a send runs the connection hooks with a transient connection (its params from the
``x-rivet-conn-params`` header) when the actor has any, or when the queue's ``can_publish`` needs
``c.conn``; otherwise nothing could observe that connection and none is made.
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, Any

from .. import errors
from .._protocol import CONTENT_TYPES, get_codec
from .._protocol.messages import HttpQueueSendResponse
from .._runtime.context import ActionContext
from .._runtime.lifecycle import maybe_await
from .http import Receive, Scope, Send, header, send_response

if TYPE_CHECKING:
    from .._runtime.instance import ActorInstance
    from ..config import RegistryConfig

__all__ = ["Pin", "handle_queue_send"]

# Hooks that see the transient connection of a send.
_CONN_HOOKS = frozenset(("on_before_connect", "create_conn_state", "on_connect", "on_disconnect"))


class Pin:
    """An instance counted as busy for a request (it does not go idle and sleep); release once."""

    __slots__ = ("instance", "_held")

    def __init__(self, instance: ActorInstance) -> None:
        self.instance = instance
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self.instance.sleep_ctl.release()


async def handle_queue_send(
    scope: Scope,
    receive: Receive,
    send: Send,
    pin: Pin,
    name: str,
    encoding: str,
    config: RegistryConfig,
) -> None:
    from .actor_http import actor_headers, bad_request, decode_conn_params, read_request

    instance = pin.instance
    codec = get_codec(encoding)  # type: ignore[arg-type]
    request = await read_request(
        receive, config, encoding, codec.decode_queue_send_request, "queue send"
    )
    timeout_ms = request.timeout
    if timeout_ms is not None and (not isinstance(timeout_ms, int) or timeout_ms < 0):
        raise bad_request(f"queue send timeout must be a non-negative integer, got {timeout_ms!r}")
    queue = instance.queue
    queue.check_name(name)
    spec = instance.definition.queues.get(name) if instance.definition.queues else None
    params = decode_conn_params(header(scope, b"x-rivet-conn-params"))
    can_publish = spec.can_publish if spec is not None else None
    if can_publish is not None or not instance.definition.hooks.keys().isdisjoint(_CONN_HOOKS):
        conn = await instance.open_conn(params)
        try:
            if can_publish is not None:
                allowed = await maybe_await(can_publish(ActionContext(instance, conn)))
                if not isinstance(allowed, bool):
                    raise TypeError(
                        f"can_publish of queue {name!r} must return a bool, "
                        f"got {type(allowed).__name__}"
                    )
                if not allowed:
                    raise errors.RivetError("auth", "forbidden", "Forbidden", status=403)
        finally:
            await instance.close_conn(conn)
    elif instance.stopping is not None:  # as open_conn: the server retries on the next generation
        raise errors.ActorStopping(instance.actor_id)

    if not request.wait:
        await queue.enqueue(name, request.body)
        answer = HttpQueueSendResponse("completed")
    else:
        answer = await _send_and_wait(pin, name, request.body, timeout_ms)
    headers = [(b"content-type", CONTENT_TYPES[encoding].encode())]  # type: ignore[index]
    headers.extend(actor_headers(instance))
    await send_response(scope, send, 200, codec.encode_queue_send_response(answer), headers)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_with(future: asyncio.Future[None], _done: asyncio.Future[Any]) -> None:
    _resolve(future)


class _Deadline:
    """The ``timeout`` of a waiting send, on the actor's clock (spans wakes of the actor)."""

    __slots__ = ("expired", "wake")

    def __init__(self) -> None:
        self.expired = False
        self.wake: asyncio.Future[None] | None = None

    def fire(self) -> None:
        self.expired = True
        if self.wake is not None:
            _resolve(self.wake)


async def _send_and_wait(
    pin: Pin, name: str, body: Any, timeout_ms: int | None
) -> HttpQueueSendResponse:
    instance = pin.instance
    host = instance.host
    waiters = host.queue_completions
    actor_id = instance.actor_id
    message_id = 0
    completion: asyncio.Future[Any] | None = None

    def on_id(new_id: int) -> None:
        nonlocal completion, message_id
        message_id = new_id
        completion = waiters.register(actor_id, new_id)

    deadline = _Deadline()
    timer = None
    try:
        await instance.queue.enqueue(name, body, on_id=on_id)
        assert completion is not None
        if host.wakes_actors:
            pin.release()  # waiting is not work of the actor: it may sleep meanwhile
        # else (engine mode: only the engine wakes actors, and it cannot be asked to for a
        # request already inside the actor) the waiting sender keeps the actor awake.
        if timeout_ms is not None:
            timer = instance.clock.call_later(timeout_ms / 1000, deadline.fire)
        loop = asyncio.get_running_loop()
        while True:
            # One future, resolved by the completion, the timeout or the actor beginning to stop
            # (no task, no asyncio.wait: this runs once per message).
            if not completion.done() and not deadline.expired:
                wake = deadline.wake = loop.create_future()
                queue = instance.queue
                queue.watch_stop(wake)
                completion.add_done_callback(functools.partial(_resolve_with, wake))
                try:
                    await wake
                finally:
                    queue.unwatch_stop(wake)
                    deadline.wake = None
            if completion.done():
                return HttpQueueSendResponse("completed", completion.result())
            if deadline.expired:
                return HttpQueueSendResponse("timedOut")
            # The consumer went to sleep with the message still to complete: wake it again.
            await host.wait_stopped(actor_id)
            if completion.done():
                continue
            record = host.get_record(actor_id)
            if record is None:
                raise errors.actor_not_found()
            instance.log.debug("waking actor for a waiting queue sender message_id=%s", message_id)
            instance = await host.instance(record)
    finally:
        if timer is not None:
            timer.cancel()
        if completion is not None and not completion.done():
            waiters.forget(actor_id, message_id)
