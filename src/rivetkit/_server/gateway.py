"""Gateway addressing: which actor a request is for (client-protocol §4).

Two forms, as the Rivet Engine's gateway:

* direct: ``/gateway/{actorId}[@{token}]/{actorPath}``; the actor path keeps its query string;
* query: ``/gateway/{name}/{actorPath}?...&rvt-namespace=..&rvt-method=get|getOrCreate&...``;
  any ``rvt-*`` query key selects this form and every ``rvt-*`` key is stripped before the actor
  sees the request.

Parsing is pure: it returns a target or raises a ``guard.*`` ``RivetError`` with the engine's
codes and messages.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

import cbor2

from ..errors import RivetError, guard_error

__all__ = ["DirectTarget", "QueryTarget", "parse_gateway_path"]

_RVT = "rvt-"
_KNOWN = frozenset(
    {
        "namespace",
        "method",
        "runner",
        "pool",
        "key",
        "input",
        "region",
        "crash-policy",
        "token",
        "skip-ready-wait",
    }
)


@dataclass(slots=True)
class DirectTarget:
    actor_id: str
    token: str | None
    path: str  # actor path, starting with "/"
    query: str  # raw query string without "?", "" when none


@dataclass(slots=True)
class QueryTarget:
    name: str
    namespace: str
    method: str  # "get" | "getOrCreate"
    key: list[str]
    input: bytes | None
    token: str | None
    skip_ready_wait: bool
    path: str
    query: str


def _decode_segment(segment: str, what: str) -> str:
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise guard_error(
            "query_invalid_percent_encoding",
            f"invalid percent-encoding for query gateway param '{what}'",
            metadata={"name": what},
        ) from None


def _form_decode(raw: str, name: str) -> str:
    try:
        return unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise guard_error(
            "query_invalid_percent_encoding",
            f"invalid percent-encoding for query gateway param '{name}'",
            metadata={"name": name},
        ) from None


def _invalid(detail: str) -> RivetError:
    return guard_error(
        "query_invalid_params", f"invalid query gateway params: {detail}", metadata={"detail": detail}
    )


def _decode_input(value: str) -> bytes:
    if len(value) % 4 == 1 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in value):
        raise guard_error("query_invalid_base64_input", "invalid base64url in query gateway input")
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise guard_error(
            "query_invalid_base64_input", "invalid base64url in query gateway input"
        ) from None
    try:
        cbor2.loads(data)
    except Exception as exc:
        raise guard_error(
            "query_invalid_cbor_input",
            f"invalid query gateway input cbor: {exc}",
            metadata={"detail": str(exc)},
        ) from None
    return data


def parse_gateway_path(path: str, query: str) -> DirectTarget | QueryTarget | None:
    """Parse a request path (raw, still percent-encoded, starting with ``/gateway``).

    Args:
        path: the raw path without the query string.
        query: the raw query string (without ``?``).

    Returns:
        The target, or ``None`` when the path is not a usable gateway path.

    Raises:
        RivetError: ``guard.query_*`` for a malformed query-form path.
    """
    segments = path.split("/")
    # segments[0] == "" and segments[1] == "gateway"
    if len(segments) < 3 or segments[2] == "":
        if query and any(p.split("=", 1)[0].startswith(_RVT) for p in query.split("&")):
            raise guard_error("query_empty_actor_name", "query gateway actor name must not be empty")
        return None
    actor_segment = segments[2]
    rest = segments[3:]
    actor_path = "/" + "/".join(rest) if rest else "/"

    has_rvt = bool(query) and any(
        part.split("=", 1)[0].startswith(_RVT) for part in query.split("&")
    )
    if not has_rvt:
        token: str | None = None
        if "@" in actor_segment:
            raw_id, _, raw_token = actor_segment.partition("@")
            if not raw_id or not raw_token:
                return None
            actor_id = unquote(raw_id)
            token = unquote(raw_token)
        else:
            actor_id = unquote(actor_segment)
        return DirectTarget(actor_id, token, actor_path, query)

    if "@" in actor_segment:
        raise guard_error(
            "query_path_token_syntax", "query gateway paths must not use @token syntax"
        )
    name = _decode_segment(actor_segment, "name")
    if not name:
        raise guard_error("query_empty_actor_name", "query gateway actor name must not be empty")

    params: dict[str, str] = {}
    actor_parts: list[str] = []
    for part in query.split("&"):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        if not raw_key.startswith(_RVT):
            actor_parts.append(part)
            continue
        stripped = raw_key[len(_RVT) :]
        if stripped in params:
            raise guard_error(
                "query_duplicate_param",
                f"duplicate query gateway param: {raw_key}",
                metadata={"name": raw_key},
            )
        params[stripped] = _form_decode(raw_value, raw_key)

    unknown = sorted(k for k in params if k not in _KNOWN)
    if unknown:
        raise _invalid(f"unknown field `{unknown[0]}`")
    namespace = params.get("namespace")
    if namespace is None:
        raise _invalid("missing field `namespace`")
    method = params.get("method")
    if method is None:
        raise _invalid("missing field `method`")
    skip_raw = params.get("skip-ready-wait")
    skip = False
    if skip_raw is not None:
        if skip_raw in ("true", "1"):
            skip = True
        elif skip_raw in ("false", "0"):
            skip = False
        else:
            raise _invalid("invalid type: string, expected a boolean for `skip-ready-wait`")
    raw_key_param = params.get("key")
    key = raw_key_param.split(",") if raw_key_param else []

    input_bytes: bytes | None = None
    if method == "get":
        if any(k in params for k in ("input", "region", "crash-policy", "runner", "pool")):
            raise guard_error(
                "query_get_disallowed_params",
                "query gateway method=get does not allow rvt-input, rvt-region, "
                "rvt-crash-policy, or rvt-pool params",
            )
    elif method == "getOrCreate":
        if "pool" not in params and "runner" not in params:
            raise guard_error(
                "query_missing_pool", "query gateway method=getOrCreate requires rvt-pool param"
            )
        if "input" in params:
            input_bytes = _decode_input(params["input"])
        policy = params.get("crash-policy")
        if policy is not None and policy not in ("restart", "sleep", "destroy"):
            raise _invalid(
                f"unknown crash policy: {policy}, expected restart, sleep, or destroy"
            )
    else:
        raise _invalid(f"unknown method: {method}, expected get or getOrCreate")

    return QueryTarget(
        name=name,
        namespace=namespace,
        method=method,
        key=key,
        input=input_bytes,
        token=params.get("token"),
        skip_ready_wait=skip,
        path=actor_path,
        query="&".join(actor_parts),
    )
