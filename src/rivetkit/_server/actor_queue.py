"""``POST /queue/{name}``: a client's queue send (spec §10), in json, cbor and bare.

The message is stored (one transaction) before the answer. Without ``wait`` the answer is
``{"status": "completed"}`` at once (as the official runtime). With ``wait`` the request waits for
``message.complete(response)`` or the ``timeout`` (``{"status": "timedOut"}``). The wait does not
keep the actor awake: the request stops counting as work in flight once the message is stored,
so the consumer may sleep; if it does, the sender wakes it again, and the completion made by the
next generation answers the sender (waiters are kept by the host, not by the instance).
"""

from __future__ import annotations

import asyncio
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
    conn = await instance.open_conn(params)
    try:
        if spec is not None and spec.can_publish is not None:
            allowed = await maybe_await(spec.can_publish(ActionContext(instance, conn)))
            if not isinstance(allowed, bool):
                raise TypeError(
                    f"can_publish of queue {name!r} must return a bool, got {type(allowed).__name__}"
                )
            if not allowed:
                raise errors.RivetError("auth", "forbidden", "Forbidden", status=403)
    finally:
        await instance.close_conn(conn)

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


async def _send_and_wait(
    pin: Pin, name: str, body: Any, timeout_ms: int | None
) -> HttpQueueSendResponse:
    instance = pin.instance
    host = instance.host
    waiters = host.queue_completions
    actor_id = instance.actor_id
    completion: asyncio.Future[Any] | None = None

    def on_stored(message_id: int) -> None:
        nonlocal completion
        completion = waiters.register(actor_id, message_id)

    message = await instance.queue.enqueue(name, body, on_stored=on_stored)
    assert completion is not None
    pin.release()  # waiting is not work of the actor: it may sleep meanwhile
    loop = asyncio.get_running_loop()
    timed_out: asyncio.Future[None] = loop.create_future()
    timer = None
    if timeout_ms is not None:
        timer = instance.clock.call_later(timeout_ms / 1000, _resolve, timed_out)
    try:
        while True:
            stopping = asyncio.ensure_future(instance.abort_signal.wait())
            try:
                await asyncio.wait(
                    {completion, timed_out, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
            if completion.done():
                response = completion.result()
                return HttpQueueSendResponse("completed", response)
            if timed_out.done():
                return HttpQueueSendResponse("timedOut")
            # The consumer went to sleep with the message still to complete: wake it again.
            await host.wait_stopped(actor_id)
            if completion.done():
                continue
            record = host.get_record(actor_id)
            if record is None:
                raise errors.actor_not_found()
            instance.log.debug("waking actor for a waiting queue sender message_id=%s", message.id)
            instance = await host.instance(record)
    finally:
        if timer is not None:
            timer.cancel()
        if not completion.done():
            waiters.forget(actor_id, message.id)

