"""The actor's inspector HTTP endpoints (client-protocol §12): ``{gateway}/inspector/...``.

What the Rivet dashboard and agents read to look inside one actor: its queue, its workflow
history, and (as in RivetKit 2.3.19) a summary, the state, the action names and the open
connections; and one thing they do: replay a workflow from a step
(``POST /inspector/workflow/replay``). The answers are JSON whatever ``x-rivet-encoding`` says, errors included, because
the dashboard only speaks JSON here.

Every route needs ``Authorization: Bearer <token>``, even in local development (the official
runtime insists, whatever its OpenAPI says). The token is the actor's own: 32 random bytes made
when its file was created and stored in ``_rivet_runtime.inspector_token``. The environment
variable ``_RIVET_TEST_INSPECTOR_TOKEN``, when set and not empty, replaces every actor's token
(the official runtime's switch for tests; the stored token is then not consulted).

``RIVET_INSPECTOR_DISABLE=1`` takes the routes away: requests get the actor router's usual
``404 actor.not_found`` for an unknown route, as RivetKit did before 2.3 when the inspector was
off. RivetKit 2.3.19 reads the variable nowhere and always serves the inspector.
"""

from __future__ import annotations

import hmac
import importlib
import inspect
import math
import os
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from .. import errors
from .._protocol.values import to_compat
from .http import (
    JSON_CONTENT_TYPE,
    BodyTooLarge,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    header,
    public_error,
    read_body,
    send_json,
    send_response,
)

if TYPE_CHECKING:
    from .._runtime.instance import ActorInstance
    from ..config import RegistryConfig

__all__ = [
    "DEFAULT_QUEUE_LIMIT",
    "INSPECTOR_DISABLE_ENV",
    "INSPECTOR_TOKEN_ENV",
    "handle_inspector",
]

INSPECTOR_TOKEN_ENV = "_RIVET_TEST_INSPECTOR_TOKEN"
INSPECTOR_DISABLE_ENV = "RIVET_INSPECTOR_DISABLE"
DEFAULT_QUEUE_LIMIT = 100
# SQLite's LIMIT is a signed 64-bit integer; a larger ?limit= means "everything" anyway.
_MAX_SQL_LIMIT = 2**62
# Inspector request bodies are small JSON objects ({"entryId": ...}).
_MAX_BODY = 64 * 1024

_BEARER = re.compile(r"^Bearer\s+", re.IGNORECASE)
_TOKEN_SQL = "SELECT inspector_token FROM _rivet_runtime WHERE id = 1"
_NO_WORKFLOW: dict[str, Any] = {
    "history": None,
    "workflowState": None,
    "isWorkflowEnabled": False,
}

Handler = Callable[["ActorInstance", dict[str, list[str]]], Awaitable[dict[str, Any]]]
BodyHandler = Callable[["ActorInstance", Any], Awaitable[dict[str, Any]]]


def _unauthorized() -> errors.RivetError:
    return errors.RivetError(
        "inspector",
        "unauthorized",
        "Inspector request requires a valid bearer token",
        status=401,
    )


def _route_not_found() -> errors.RivetError:
    return errors.RivetError("actor", "not_found", "Inspector route was not found", status=404)


async def handle_inspector(
    scope: Scope,
    receive: Receive,
    send: Send,
    instance: ActorInstance,
    path: str,
    query: str,
    config: RegistryConfig,
) -> None:
    """Serve one ``/inspector/...`` request of ``instance``.

    Args:
        path: the actor path, starting with ``/inspector/``.
        query: the query string with the ``rvt-*`` parameters already removed.

    Raises:
        RivetError: ``actor.not_found`` (route) when ``RIVET_INSPECTOR_DISABLE=1``, for the actor
            router to answer as for any unknown route. Everything else is answered here.
    """
    if os.environ.get(INSPECTOR_DISABLE_ENV) == "1":
        raise errors.route_not_found(path)
    try:
        # Authentication comes before routing, so unknown routes do not reveal themselves.
        if not await _authorized(instance, _bearer_token(scope)):
            instance.log.debug("inspector request refused path=%s", path)
            raise _unauthorized()
        route = (scope["method"], path)
        body_handler = _BODY_ROUTES.get(route)
        if body_handler is not None:
            request = await _json_body(receive)
            body = orjson.dumps(await body_handler(instance, request))
        else:
            handler = _ROUTES.get(route)
            if handler is None:
                raise _route_not_found()
            body = orjson.dumps(await handler(instance, parse_qs(query, keep_blank_values=True)))
    except ClientDisconnected:
        return
    except Exception as exc:
        err = public_error(exc, expose=config.expose_errors)
        if not (isinstance(exc, errors.RivetError) and exc.public):
            instance.log.error("inspector request failed path=%s", path, exc_info=exc)
        await send_json(
            scope,
            send,
            err.status,
            {
                "group": err.group,
                "code": err.code,
                "message": err.message,
                "metadata": to_compat(err.metadata),
            },
        )
        return
    await send_response(scope, send, 200, body, [JSON_CONTENT_TYPE])


# -- auth ------------------------------------------------------------------------------------


def _bearer_token(scope: Scope) -> str | None:
    """The token of ``Authorization`` with a leading ``Bearer`` (any case) removed, exactly as
    the official runtime reads it: a value without that prefix is compared whole, so
    ``Basic <token>`` fails while a bare ``<token>`` passes there too."""
    raw = header(scope, b"authorization")
    if raw is None:
        return None
    return _BEARER.sub("", raw.decode("latin-1"), count=1)


async def _authorized(instance: ActorInstance, token: str | None) -> bool:
    if not token:
        return False
    expected = os.environ.get(INSPECTOR_TOKEN_ENV) or await instance.store.run(_stored_token)
    if not expected:
        return False  # a file without a token: nobody may inspect it
    # Constant time: the token guards the actor's whole state.
    return hmac.compare_digest(token.encode(), expected.encode())


def _stored_token(conn: Any) -> str | None:
    row = conn.execute(_TOKEN_SQL).fetchone()
    return row[0] if row and isinstance(row[0], str) else None


def _invalid_request(message: str) -> errors.RivetError:
    return errors.RivetError("actor", "invalid_request", message, status=400)


async def _json_body(receive: Receive) -> Any:
    """The request's JSON body (``None`` when empty).

    Raises:
        RivetError: ``actor.invalid_request`` (400) for a body that is not JSON or too large.
    """
    try:
        raw = await read_body(receive, _MAX_BODY)
    except BodyTooLarge as exc:
        raise _invalid_request(f"Inspector request body is too large ({exc}).") from None
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _invalid_request(f"Inspector request body must be JSON: {exc}") from None


# -- routes ----------------------------------------------------------------------------------


def _queue_limit(query: dict[str, list[str]]) -> int:
    """``?limit=``, read like the official runtime: a positive number (floored); anything
    else, or nothing, means the default of 100."""
    values = query.get("limit")
    if not values or not values[0].strip():
        return DEFAULT_QUEUE_LIMIT
    try:
        number = float(values[0])
    except ValueError:
        return DEFAULT_QUEUE_LIMIT
    if not math.isfinite(number) or number <= 0:
        return DEFAULT_QUEUE_LIMIT
    return max(1, min(math.floor(number), _MAX_SQL_LIMIT))


async def _queue(instance: ActorInstance, query: dict[str, list[str]]) -> dict[str, Any]:
    """``GET /inspector/queue?limit=N``: the first ``N`` stored messages, oldest first.

    ``size`` counts every stored message, including completable ones handed out and not yet
    completed (they are still in the queue until completed). Message ids are JSON numbers here
    (only ``POST /inspector/queue`` answers a string id in the official runtime).
    """
    limit = _queue_limit(query)
    size, rows = await instance.store.run(lambda conn: instance.queue.inspect(limit))
    return {
        "size": size,
        "maxSize": instance.definition.options.max_queue_size,
        "truncated": size > limit,
        "messages": [
            {"id": message_id, "name": name, "createdAtMs": created_at}
            for message_id, name, created_at in rows
        ],
    }


def _workflow_inspector() -> Callable[[ActorInstance], Any] | None:
    """``rivetkit._workflow.workflow_inspector`` when the workflow engine provides it.

    Looked up at request time, not at import: the workflow package must not be a dependency of
    the server, and an actor without workflows still gets the official "not enabled" answer.
    """
    try:
        module = importlib.import_module("rivetkit._workflow")
    except ModuleNotFoundError as exc:
        if exc.name != "rivetkit._workflow":
            raise
        return None
    fn = getattr(module, "workflow_inspector", None)
    return fn if callable(fn) else None


async def _workflow(instance: ActorInstance) -> dict[str, Any]:
    fn = _workflow_inspector()
    if fn is None:
        return dict(_NO_WORKFLOW)
    # Through the store's gate: the engine may read the actor's database (a sleeping workflow's
    # history), and must not do so inside a transaction some action holds open.
    result = await instance.store.run(lambda conn: fn(instance))
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, dict):
        raise TypeError(f"workflow_inspector returned {type(result).__name__}, expected a dict")
    return result


async def _workflow_history(instance: ActorInstance, query: dict[str, list[str]]) -> dict[str, Any]:
    """``GET /inspector/workflow-history``: ``{"history", "workflowState", "isWorkflowEnabled"}``."""
    return await _workflow(instance)


async def _workflow_replay(instance: ActorInstance, request: Any) -> dict[str, Any]:
    """``POST /inspector/workflow/replay`` with ``{"entryId"?}``: delete the workflow's history
    from that step on (all of it without ``entryId``) and run the workflow again; answers like
    ``GET /inspector/workflow-history``. ``409 actor.workflow_in_flight`` while it runs."""
    if request is None:
        request = {}
    if not isinstance(request, dict):
        raise _invalid_request('Workflow replay body must be an object: {"entryId": "..."}')
    entry_id = request.get("entryId")
    if entry_id is not None and (not isinstance(entry_id, str) or not entry_id):
        raise _invalid_request(f"entryId must be a non-empty string, got {entry_id!r}")
    try:
        module = importlib.import_module("rivetkit._workflow")
    except ModuleNotFoundError as exc:
        if exc.name != "rivetkit._workflow":
            raise
        return dict(_NO_WORKFLOW)
    result = await module.replay_workflow(instance, entry_id)
    if not isinstance(result, dict):
        raise TypeError(f"replay_workflow returned {type(result).__name__}, expected a dict")
    return result


async def _state(instance: ActorInstance, query: dict[str, list[str]]) -> dict[str, Any]:
    """``GET /inspector/state``: ``state`` is left out when the actor has none."""
    if not instance.definition.has_state:
        return {"isStateEnabled": False}
    return {"state": to_compat(instance.state), "isStateEnabled": True}


def _rpc_names(instance: ActorInstance) -> list[str]:
    return sorted(instance.definition.actions)


async def _rpcs(instance: ActorInstance, query: dict[str, list[str]]) -> dict[str, Any]:
    """``GET /inspector/rpcs``: the action names, sorted."""
    return {"rpcs": _rpc_names(instance)}


def _connections(instance: ActorInstance) -> list[dict[str, Any]]:
    # Transient connections (one HTTP request) are listed too, as the official runtime does
    # while their request runs; there is no hibernation here, so none is hibernatable.
    return [
        {
            "type": None,
            "id": conn.id,
            "details": {
                "type": None,
                "params": to_compat(conn.params),
                "stateEnabled": True,
                "state": to_compat(conn.state),
                "subscriptions": len(conn.subscriptions),
                "isHibernatable": False,
            },
        }
        for conn in list(instance.conns.values())
    ]


async def _connections_route(
    instance: ActorInstance, query: dict[str, list[str]]
) -> dict[str, Any]:
    """``GET /inspector/connections``."""
    return {"connections": _connections(instance)}


async def _summary(instance: ActorInstance, query: dict[str, list[str]]) -> dict[str, Any]:
    """``GET /inspector/summary``: what the dashboard shows first, in one request."""
    size, _ = await instance.store.run(lambda conn: instance.queue.inspect(0))
    workflow = await _workflow(instance)
    has_state = instance.definition.has_state
    return {
        "state": to_compat(instance.state) if has_state else None,
        "connections": _connections(instance),
        "rpcs": _rpc_names(instance),
        "queueSize": size,
        "isStateEnabled": has_state,
        "isDatabaseEnabled": True,  # every actor has its own SQLite database (c.db)
        "isWorkflowEnabled": workflow.get("isWorkflowEnabled", False),
        "workflowState": workflow.get("workflowState"),
        "workflowHistory": workflow.get("history"),
    }


_ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/inspector/queue"): _queue,
    ("GET", "/inspector/workflow-history"): _workflow_history,
    ("GET", "/inspector/summary"): _summary,
    ("GET", "/inspector/state"): _state,
    ("GET", "/inspector/rpcs"): _rpcs,
    ("GET", "/inspector/connections"): _connections_route,
}
_BODY_ROUTES: dict[tuple[str, str], BodyHandler] = {
    ("POST", "/inspector/workflow/replay"): _workflow_replay,
}
