"""Sans-I/O pieces of the client: configuration, URLs, ``rvt-*`` parameters, errors, retry rules.

Everything here is pure (no sockets, no event loop), so the async client (:mod:`._aio`), the sync
twin (:mod:`.sync`) and the tests share one definition of what goes on the wire. References are to
``spec/client-protocol.md``:

* §1.1 endpoint, URL auth syntax, namespace, token and pool defaults;
* §3 management API bodies (``POST``/``PUT``/``GET /actors``);
* §4.1/§4.2 the direct and query gateway forms and the exact ``rvt-*`` parameter order;
* §2.3 the error envelope and which errors the official client retries.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import quote, unquote, urlsplit

import orjson

from .._protocol import DecodeError, get_codec
from .._protocol.cbor import cbor_dumps_compat
from .._protocol.encoding import ENCODINGS, Encoding
from .._protocol.messages import ActorSpecifier
from .._runtime.keys import serialize_key
from ..errors import ActorError

__all__ = [
    "DEFAULT_ENDPOINT",
    "MAX_INPUT_SIZE",
    "MAX_KEY_PART_LENGTH",
    "ActorQuery",
    "ClientConfig",
    "QueryMethod",
    "QueueSendResult",
    "actor_id_from_response",
    "api_url",
    "apply_metadata",
    "create_body",
    "direct_gateway_url",
    "encode_uri_component",
    "error_from_response",
    "form_encode",
    "get_or_create_body",
    "is_lifecycle_retryable",
    "is_request_retryable",
    "is_scheduling_error",
    "is_stale_actor_error",
    "join_url",
    "json_loads",
    "lifecycle_max_attempts",
    "normalize_key",
    "parse_endpoint",
    "query_gateway_url",
    "query_params",
    "resolve_config",
    "retry_backoff",
]

DEFAULT_ENDPOINT: Final = "http://localhost:6420"
"""Endpoint used when neither the argument nor ``RIVET_ENGINE``/``RIVET_ENDPOINT`` is set."""

MAX_INPUT_SIZE: Final = 4096
"""Largest CBOR-encoded ``rvt-input`` the client sends, in bytes (the official ``maxInputSize``)."""

MAX_KEY_PART_LENGTH: Final = 128
"""Longest actor key part, in characters (the official client's schema)."""

QueryMethod = Literal["get", "getOrCreate", "getForId"]

# -------------------------------------------------------------------------------------------------
# configuration (§1.1)


@dataclass(frozen=True, slots=True)
class QueueSendResult:
    """The answer to ``handle.send(..., wait=True)``.

    Attributes:
        status: ``"completed"`` (the consumer called ``message.complete``) or ``"timedOut"``.
        response: the value given to ``message.complete(response)`` (``None`` if none).
    """

    status: Literal["completed", "timedOut"] | str
    response: Any = None

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Resolved client settings.

    Attributes:
        endpoint: base URL without credentials, query or trailing slash, e.g.
            ``http://127.0.0.1:6420`` or ``http://h/api/rivet``.
        namespace: namespace sent with every request.
        token: token sent with every request, or ``None``.
        pool_name: runner pool (``rvt-runner`` / ``runner_name_selector``).
        encoding: wire encoding of action bodies.
        headers: extra headers added to every HTTP request.
    """

    endpoint: str
    namespace: str
    token: str | None
    pool_name: str
    encoding: Encoding
    headers: tuple[tuple[str, str], ...] = ()


def parse_endpoint(endpoint: str) -> tuple[str, str | None, str | None]:
    """Split an endpoint URL into ``(endpoint, namespace, token)``.

    The URL auth syntax ``http://NAMESPACE:TOKEN@host`` / ``http://NAMESPACE@host`` carries the
    namespace and token (percent-decoded); they are removed from the returned endpoint, as is a
    trailing ``/``. A path prefix (``http://h/api/rivet``) is kept.

    Raises:
        ValueError: for a URL that is not ``http(s)://host...``, has a query string or a
            fragment, or gives a token without a namespace.
    """
    if not isinstance(endpoint, str):
        raise TypeError(f"endpoint must be a str, got {type(endpoint).__name__}")
    try:
        parts = urlsplit(endpoint.strip())
    except ValueError as exc:
        raise ValueError(f"invalid endpoint URL {endpoint!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"invalid endpoint URL {endpoint!r}: expected http(s)://host[:port][/path]"
        )
    if parts.query or endpoint.rstrip().endswith("?"):
        raise ValueError(f"endpoint cannot contain a query string: {endpoint!r}")
    if parts.fragment or "#" in endpoint:
        raise ValueError(f"endpoint cannot contain a fragment: {endpoint!r}")
    userinfo, sep, hostport = parts.netloc.rpartition("@")
    namespace: str | None = None
    token: str | None = None
    if sep:
        raw_ns, _, raw_token = userinfo.partition(":")
        namespace = unquote(raw_ns) or None
        token = unquote(raw_token) or None
        if token is not None and namespace is None:
            raise ValueError("endpoint cannot have a token without a namespace")
    if not hostport:
        raise ValueError(f"invalid endpoint URL {endpoint!r}: missing host")
    try:
        _ = parts.port  # validates the port number
    except ValueError as exc:
        raise ValueError(f"invalid endpoint URL {endpoint!r}: {exc}") from None
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{hostport}{path}", namespace, token


def resolve_config(
    endpoint: str | None,
    *,
    namespace: str | None,
    token: str | None,
    pool_name: str | None,
    encoding: Encoding | None,
    headers: Mapping[str, str] | None,
    env: Mapping[str, str],
) -> ClientConfig:
    """Apply the official client's defaults (§1.1).

    Precedence: explicit argument, then URL auth in the endpoint, then the environment
    (``RIVET_ENGINE``/``RIVET_ENDPOINT``, ``RIVET_NAMESPACE``, ``RIVET_TOKEN``, ``RIVET_POOL``),
    then the defaults (``http://localhost:6420``, ``"default"``, no token, pool ``"default"``,
    encoding ``"bare"``).

    Raises:
        ValueError: for a malformed endpoint, an unknown encoding, or a namespace or token given
            both in the endpoint URL and as an argument.
        TypeError: for headers that are not strings.
    """
    raw = endpoint
    if raw is None:
        raw = env.get("RIVET_ENGINE") or env.get("RIVET_ENDPOINT") or DEFAULT_ENDPOINT
    base, url_namespace, url_token = parse_endpoint(raw)
    if url_namespace is not None and namespace is not None:
        raise ValueError("cannot give the namespace both in the endpoint URL and as an argument")
    if url_token is not None and token is not None:
        raise ValueError("cannot give the token both in the endpoint URL and as an argument")
    enc = "bare" if encoding is None else encoding
    if enc not in ENCODINGS:
        raise ValueError(f"unknown encoding {enc!r}; expected one of {', '.join(ENCODINGS)}")
    header_items: list[tuple[str, str]] = []
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"headers must map str to str, got {name!r}: {value!r}")
        header_items.append((name, value))
    return ClientConfig(
        endpoint=base,
        namespace=namespace or url_namespace or env.get("RIVET_NAMESPACE") or "default",
        token=token if token is not None else (url_token or env.get("RIVET_TOKEN") or None),
        pool_name=pool_name or env.get("RIVET_POOL") or "default",
        encoding=enc,
        headers=tuple(header_items),
    )


def apply_metadata(config: ClientConfig, metadata: Any) -> ClientConfig:
    """The configuration after ``GET /metadata`` (§3.1).

    When the answer has ``clientEndpoint``, all later traffic goes there, with
    ``clientNamespace``/``clientToken`` (or URL auth in ``clientEndpoint``) replacing the namespace
    and token. Other fields are ignored.

    Raises:
        ValueError: if the answer is not a JSON object or ``clientEndpoint`` is not a usable URL.
    """
    if not isinstance(metadata, dict):
        raise ValueError(  # noqa: TRY004 - a malformed answer, not a caller's type error
            f"metadata must be a JSON object, got {type(metadata).__name__}"
        )
    client_endpoint = metadata.get("clientEndpoint")
    if client_endpoint is None:
        return config
    if not isinstance(client_endpoint, str):
        raise ValueError("metadata clientEndpoint must be a string")  # noqa: TRY004
    base, url_namespace, url_token = parse_endpoint(client_endpoint)
    namespace = metadata.get("clientNamespace")
    token = metadata.get("clientToken")
    return dataclasses.replace(
        config,
        endpoint=base,
        namespace=namespace
        if isinstance(namespace, str) and namespace
        else (url_namespace or config.namespace),
        token=token if isinstance(token, str) and token else (url_token or config.token),
    )


# -------------------------------------------------------------------------------------------------
# URL building (§4)

_FORM_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-._")


def _form_quote(value: str) -> str:
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if byte in _FORM_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def form_encode(pairs: Sequence[tuple[str, str]]) -> str:
    """Serialize query parameters exactly like JavaScript's ``URLSearchParams.toString()``.

    Only ``A-Z a-z 0-9 * - . _`` stay as they are, a space becomes ``+``, every other UTF-8 byte
    is percent-encoded with upper-case hex.

    Example::

        >>> form_encode([("rvt-key", "a,b"), ("q", "sp ace~")])
        'rvt-key=a%2Cb&q=sp+ace%7E'
    """
    return "&".join(f"{_form_quote(name)}={_form_quote(value)}" for name, value in pairs)


def encode_uri_component(value: str) -> str:
    """JavaScript's ``encodeURIComponent``: keeps ``A-Z a-z 0-9 - _ . ! ~ * ' ( )``."""
    return quote(value, safe="!~*'()")


def join_url(endpoint: str, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
    """``{endpoint}{path}[?{query}]`` with duplicate slashes in the path collapsed.

    Args:
        endpoint: base URL (may carry a path prefix).
        path: absolute path, already percent-encoded.
        query: parameters, serialized with :func:`form_encode`.
    """
    scheme, sep, rest = endpoint.partition("://")
    host, slash, prefix = rest.partition("/")
    full = "/" + (prefix + slash if prefix else "") + path
    while "//" in full:
        full = full.replace("//", "/")
    url = f"{scheme}{sep}{host}{full}"
    if query:
        url += "?" + form_encode(query)
    return url


def api_url(config: ClientConfig, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
    """A management API URL: ``namespace=NS`` is appended to the parameters (§3)."""
    return join_url(config.endpoint, path, [*query, ("namespace", config.namespace)])


def normalize_key(key: str | Sequence[str]) -> tuple[str, ...]:
    """Validate an actor key: a ``str`` means a one-part key.

    Raises:
        TypeError: if the key or a part is not a string.
        ValueError: if a part is longer than 128 characters.
    """
    parts: tuple[Any, ...] = (key,) if isinstance(key, str) else tuple(key)
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"actor key parts must be str, got {type(part).__name__}: {part!r}")
        if len(part) > MAX_KEY_PART_LENGTH:
            raise ValueError(
                f"actor key part is {len(part)} characters; the limit is {MAX_KEY_PART_LENGTH}"
            )
    return parts


def _check_name(name: str, what: str = "actor name") -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class ActorQuery:
    """How a handle addresses its actor.

    Attributes:
        method: ``"get"``, ``"getOrCreate"`` (query gateway form) or ``"getForId"`` (direct form,
            also used by handles returned from ``create``).
        name: actor name.
        key: actor key parts (empty for ``getForId``).
        input_cbor: CBOR of the compat-transformed create input (``getOrCreate`` only), or
            ``None`` for no input.
        region: ``create_in_region`` (``getOrCreate`` only).
        actor_id: the actor id (``getForId`` only).
    """

    method: QueryMethod
    name: str
    key: tuple[str, ...] = ()
    input_cbor: bytes | None = None
    region: str | None = None
    actor_id: str | None = None

    @classmethod
    def get(cls, name: str, key: str | Sequence[str]) -> ActorQuery:
        return cls("get", _check_name(name), normalize_key(key))

    @classmethod
    def get_or_create(
        cls,
        name: str,
        key: str | Sequence[str],
        *,
        input: Any = None,
        region: str | None = None,
        max_input_size: int = MAX_INPUT_SIZE,
    ) -> ActorQuery:
        """Build a ``getOrCreate`` query.

        Raises:
            ValueError: if the CBOR input is larger than ``max_input_size`` bytes.
            TypeError: if the input cannot be serialized.
        """
        input_cbor = None if input is None else cbor_dumps_compat(input)
        if input_cbor is not None and len(input_cbor) > max_input_size:
            raise ValueError(
                f"actor input is {len(input_cbor)} bytes of CBOR; the limit for get_or_create "
                f"is {max_input_size} bytes (use create() for larger inputs)"
            )
        return cls("getOrCreate", _check_name(name), normalize_key(key), input_cbor, region)

    @classmethod
    def get_for_id(cls, name: str, actor_id: str) -> ActorQuery:
        if not isinstance(actor_id, str) or not actor_id:
            raise ValueError(f"actor_id must be a non-empty string, got {actor_id!r}")
        return cls("getForId", _check_name(name), actor_id=actor_id)

    @property
    def is_dynamic(self) -> bool:
        """``True`` for ``get``/``getOrCreate``: resolved by the gateway on every request."""
        return self.method != "getForId"


def query_params(
    query: ActorQuery, *, namespace: str, pool_name: str, token: str | None
) -> list[tuple[str, str]]:
    """The ``rvt-*`` parameters of the query gateway form, in the official order (§4.2)."""
    if not query.is_dynamic:
        raise ValueError("getForId handles use the direct gateway form")
    params = [("rvt-namespace", namespace), ("rvt-method", query.method)]
    if query.method == "getOrCreate":
        params.append(("rvt-runner", pool_name))
    if query.key:
        params.append(("rvt-key", ",".join(query.key)))
    if query.method == "getOrCreate":
        if query.input_cbor is not None:
            encoded = base64.urlsafe_b64encode(query.input_cbor).rstrip(b"=").decode("ascii")
            params.append(("rvt-input", encoded))
        if query.region is not None:
            params.append(("rvt-region", query.region))
        params.append(("rvt-crash-policy", "sleep"))
    if token is not None:
        params.append(("rvt-token", token))
    return params


def query_gateway_url(config: ClientConfig, query: ActorQuery, actor_path: str = "") -> str:
    """``{ep}/gateway/{name}{actor_path}?{rvt params}`` (§4.2).

    Args:
        config: the client configuration.
        query: a ``get``/``getOrCreate`` query.
        actor_path: percent-encoded path after the actor (``/action/x``), ``""`` for none.
    """
    params = query_params(
        query, namespace=config.namespace, pool_name=config.pool_name, token=config.token
    )
    return join_url(
        config.endpoint, f"/gateway/{encode_uri_component(query.name)}{actor_path}", params
    )


def direct_gateway_url(config: ClientConfig, actor_id: str, actor_path: str = "") -> str:
    """``{ep}/gateway/{id}[@{token}]{actor_path}`` (§4.1)."""
    segment = encode_uri_component(actor_id)
    if config.token is not None:
        segment += "@" + encode_uri_component(config.token)
    return join_url(config.endpoint, f"/gateway/{segment}{actor_path}")


# -------------------------------------------------------------------------------------------------
# management API bodies (§3.4)


def _api_input(input_cbor: bytes | None) -> str | None:
    return None if input_cbor is None else base64.b64encode(input_cbor).decode("ascii")


def create_body(
    config: ClientConfig,
    name: str,
    key: Sequence[str],
    *,
    input: Any = None,
    region: str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /actors``.

    Raises:
        TypeError: if the input cannot be serialized.
    """
    body: dict[str, Any] = {}
    if region is not None:
        body["datacenter"] = region
    body["name"] = name
    body["runner_name_selector"] = config.pool_name
    body["key"] = serialize_key(list(key))
    encoded = _api_input(None if input is None else cbor_dumps_compat(input))
    if encoded is not None:
        body["input"] = encoded
    body["crash_policy"] = "sleep"
    return body


def get_or_create_body(config: ClientConfig, query: ActorQuery) -> dict[str, Any]:
    """The JSON body of ``PUT /actors`` for a ``getOrCreate`` handle's ``resolve()``."""
    body: dict[str, Any] = {}
    if query.region is not None:
        body["datacenter"] = query.region
    body["name"] = query.name
    body["key"] = serialize_key(list(query.key))
    body["runner_name_selector"] = config.pool_name
    encoded = _api_input(query.input_cbor)
    if encoded is not None:
        body["input"] = encoded
    body["crash_policy"] = "sleep"
    return body


def actor_id_from_response(data: Any) -> str:
    """``actor.actor_id`` of a ``POST``/``PUT /actors`` answer.

    Raises:
        ValueError: if the answer does not have that shape.
    """
    actor = data.get("actor") if isinstance(data, dict) else None
    actor_id = actor.get("actor_id") if isinstance(actor, dict) else None
    if not isinstance(actor_id, str) or not actor_id:
        raise ValueError("response has no actor.actor_id")
    return actor_id


# -------------------------------------------------------------------------------------------------
# errors (§2.3)


def _actor_dict(actor: ActorSpecifier | None) -> dict[str, Any] | None:
    if actor is None:
        return None
    out: dict[str, Any] = {"actorId": actor.actor_id, "generation": actor.generation}
    if actor.key is not None:
        out["key"] = actor.key
    return out


def error_from_response(
    status: int, content_type: str | None, body: bytes, encoding: Encoding
) -> ActorError:
    """Turn a non-2xx answer into an :class:`~rivetkit.errors.ActorError`.

    A ``Content-Type`` containing ``application/json`` means a JSON envelope (the gateway and the
    management API always answer JSON); otherwise the body is decoded with the request's encoding.
    A body that is no envelope at all gives ``client.http_error`` with the status and the start
    of the body.
    """
    codec = get_codec("json" if content_type and "application/json" in content_type else encoding)
    try:
        envelope = codec.decode_http_error(body)
    except (DecodeError, ValueError, TypeError):
        text = body.decode("utf-8", "replace")
        return ActorError("client", "http_error", f"HTTP {status}: {text[:200]}", status=status)
    return ActorError(
        envelope.group,
        envelope.code,
        envelope.message,
        envelope.metadata,
        actor=_actor_dict(envelope.actor),
        status=status,
    )


def json_loads(body: bytes) -> Any:
    """Parse a management API answer.

    Raises:
        ValueError: for invalid JSON.
    """
    return orjson.loads(body)


# -------------------------------------------------------------------------------------------------
# retry rules (§2.3)

_LIFECYCLE_CODES: Final = frozenset(
    {"not_found", "starting", "stopping", "not_configured", "dropped_reply", "destroying"}
)

_REQUEST_RETRY_GUARD_CODES: Final = frozenset(
    {
        "service_unavailable",
        "actor_wake_retries_exceeded",
        "actor_stopped_while_waiting",
        "tunnel_request_aborted",
        "tunnel_message_timeout",
        "tunnel_response_closed",
        "gateway_response_start_timeout",
    }
)

_SCHEDULING_CODES: Final = frozenset({"actor_ready_timeout", "actor_runner_failed"})


def lifecycle_max_attempts(query: ActorQuery) -> int:
    """Attempts of the lifecycle retry loop: 24 for ``get``, 60 for ``getOrCreate``, else 1."""
    if query.method == "get":
        return 24
    if query.method == "getOrCreate":
        return 60
    return 1


def is_lifecycle_retryable(group: str, code: str) -> bool:
    """An actor that is missing, starting or stopping: retried by ``get``/``getOrCreate``
    handles every ~100 ms (the gateway re-resolves, and ``getOrCreate`` re-creates)."""
    return group == "actor" and (code in _LIFECYCLE_CODES or code.startswith("destroyed_"))


def is_scheduling_error(group: str, code: str) -> bool:
    """The gateway gave up waiting for the actor to be scheduled (``guard.actor_ready_timeout``,
    ``guard.actor_runner_failed``); ``get``/``getOrCreate`` handles retry these too."""
    return group == "guard" and code in _SCHEDULING_CODES


def is_stale_actor_error(group: str, code: str) -> bool:
    """The cached actor id no longer names a live actor: drop it."""
    return group == "actor" and (code == "not_found" or code.startswith("destroyed_"))


def is_request_retryable(group: str, code: str) -> bool:
    """Transient failures retried by every handle (≤5 attempts, 25 → 200 ms backoff)."""
    if group == "actor":
        return code == "restarting"
    return group == "guard" and code in _REQUEST_RETRY_GUARD_CODES


def retry_backoff(attempt: int, initial: float, maximum: float) -> float:
    """Delay before retry number ``attempt + 1``: ``min(initial * 2**attempt, maximum)`` seconds."""
    return float(min(initial * (2 ** min(attempt, 32)), maximum))
