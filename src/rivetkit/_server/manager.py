"""The engine-compatible management API: ``/actors``, ``/actors/names`` (client-protocol §3).

Bodies and answers are JSON with the engine's snake_case field names; timestamps on the wire are
the engine's ``*_ts`` epoch milliseconds. Errors are JSON envelopes with ``x-rivet-error``.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import cbor2
import orjson

from .. import errors
from .._runtime.keys import parse_key, serialize_key
from .http import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    read_body,
    send_gateway_error,
    send_json,
)

if TYPE_CHECKING:
    from ..drivers.local import ActorRecord, LocalDriver

__all__ = ["handle_manager", "actor_json"]


def _invalid_input(message: str) -> errors.RivetError:
    return errors.RivetError("validation", "invalid_input", message, status=400)


def actor_json(record: ActorRecord, *, awake: bool) -> dict[str, Any]:
    """The engine's Actor object (§3.2) for a directory record."""
    return {
        "actor_id": record.actor_id,
        "name": record.name,
        "key": serialize_key(list(record.key)),
        "namespace_id": record.namespace,
        "datacenter": "default",
        "runner_name_selector": "default",
        "crash_policy": "sleep",
        "create_ts": record.created_at,
        "start_ts": record.started_at,
        "pending_allocation_ts": None,
        "connectable_ts": record.started_at if awake else None,
        "sleep_ts": record.slept_at,
        "reschedule_ts": None,
        "destroy_ts": record.destroyed_at,
    }


def check_namespace(driver: LocalDriver, namespace: str) -> None:
    if namespace not in driver.config.namespaces:
        raise errors.RivetError(
            "namespace", "not_found", "The namespace does not exist.", status=400
        )


def _decode_input(value: Any, limit: int) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid_input("`input` must be a base64 string of CBOR")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid_input("`input` is not valid base64") from None
    if len(data) > limit:
        raise errors.input_too_large(limit)
    try:
        cbor2.loads(data)
    except Exception as exc:
        raise _invalid_input(f"`input` is not valid CBOR: {exc}") from None
    return data


async def _json_body(receive: Receive, limit: int) -> dict[str, Any]:
    try:
        raw = await read_body(receive, limit)
    except BodyTooLarge as exc:
        raise errors.incoming_too_long(exc.size, exc.limit) from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _invalid_input(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _invalid_input("request body must be a JSON object")
    return body


def _create_args(driver: LocalDriver, body: dict[str, Any]) -> tuple[str, list[str], bytes | None]:
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid_input("`name` must be a non-empty string")
    raw_key = body.get("key")
    if raw_key is None:
        key: list[str] = []
    elif isinstance(raw_key, str):
        key = parse_key(raw_key)
    else:
        raise _invalid_input("`key` must be a serialized key string")
    input_bytes = _decode_input(body.get("input"), driver.config.max_input_size)
    return name, key, input_bytes


async def handle_manager(
    scope: Scope, receive: Receive, send: Send, driver: LocalDriver, path: str
) -> bool:
    """Serve ``/actors…``. Returns ``False`` when ``path`` is not a management route."""
    if path != "/actors" and not path.startswith("/actors/"):
        return False
    method = scope["method"]
    query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
    namespace = query.get("namespace", "default")
    try:
        check_namespace(driver, namespace)
        limit = driver.config.max_input_size * 2 + 65536
        if path == "/actors":
            if method == "POST":
                name, key, input_bytes = _create_args(driver, await _json_body(receive, limit))
                record = driver.create(namespace, name, key, input_bytes)
                await send_json(scope, send, 200, {"actor": actor_json(record, awake=False)})
            elif method == "PUT":
                name, key, input_bytes = _create_args(driver, await _json_body(receive, limit))
                record, created = driver.get_or_create(namespace, name, key, input_bytes)
                awake = record.actor_id in driver.awake
                await send_json(
                    scope, send, 200, {"actor": actor_json(record, awake=awake), "created": created}
                )
            elif method == "GET":
                await send_json(scope, send, 200, _list(driver, namespace, query))
            else:
                raise errors.method_not_allowed(method, path)
        elif path == "/actors/names":
            if method != "GET":
                raise errors.method_not_allowed(method, path)
            names = driver.names()
            await send_json(
                scope,
                send,
                200,
                {
                    "names": {n: {"metadata": {}} for n in names},
                    "pagination": {"cursor": names[-1] if names else None},
                },
            )
        else:
            rest = path[len("/actors/") :]
            if "/" in rest or not rest:
                raise errors.route_not_found(path)
            if method != "DELETE":
                raise errors.method_not_allowed(method, path)
            if not await driver.destroy(unquote(rest)):
                raise errors.actor_not_found()
            await send_json(scope, send, 200, {})
    except errors.RivetError as err:
        await send_gateway_error(scope, send, err)
    return True


def _list(driver: LocalDriver, namespace: str, query: dict[str, str]) -> dict[str, Any]:
    ids = query.get("actor_ids")
    name = query.get("name")
    if ids:
        records = []
        for actor_id in ids.split(","):
            record = driver.get_record(actor_id)
            if record is not None and record.namespace == namespace:
                records.append(record)
        return {
            "actors": [actor_json(r, awake=r.actor_id in driver.awake) for r in records],
            "pagination": {"cursor": None},
        }
    if not name:
        raise _invalid_input("either `name` or `actor_ids` is required")
    if "key" in query:
        record = driver.lookup(namespace, name, tuple(parse_key(query["key"])))
        records = [record] if record is not None else []
        cursor = None
    else:
        try:
            page = max(1, min(int(query.get("limit", "100")), 1000))
            after = int(query["cursor"]) if query.get("cursor") else None
        except ValueError:
            raise _invalid_input("`limit` and `cursor` must be integers") from None
        records = driver.list_by_name(namespace, name, limit=page, after_created_at=after)
        cursor = str(records[-1].created_at) if len(records) == page else None
    return {
        "actors": [actor_json(r, awake=r.actor_id in driver.awake) for r in records],
        "pagination": {"cursor": cursor},
    }
