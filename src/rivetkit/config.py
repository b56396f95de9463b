"""Configuration: per-actor options and registry settings.

Durations are seconds (floats), mapped one to one from RivetKit's millisecond options
(``actionTimeout: 60000`` becomes ``action_timeout=60.0``). Defaults are RivetKit's.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ActorOptions", "EngineConfig", "RegistryConfig", "ServerlessConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorOptions:
    """Per-actor options with RivetKit's defaults.

    Attributes:
        action_timeout: longest an action may run before the caller gets
            ``actor.action_timed_out`` (60 s).
        create_vars_timeout: bound on ``create_vars`` (5 s).
        create_conn_state_timeout: bound on ``create_conn_state`` (5 s).
        on_before_connect_timeout: bound on ``on_before_connect`` (5 s).
        on_connect_timeout: bound on ``on_connect`` (5 s).
        on_migrate_timeout: bound on ``on_migrate`` (30 s).
        sleep_timeout: idle time before an actor sleeps (30 s).
        sleep_grace_period: window for graceful sleep or destroy (15 s).
        state_save_interval: ``None`` (default) commits every state change before the action's
            response is sent; a number of seconds batches saves instead, trading durability of
            the last interval for throughput (RivetKit's behaviour with 1.0).
        connection_liveness_timeout: 2.5 s. connection_liveness_interval: 5 s.
        max_queue_size: 1000 messages. max_queue_message_size: 64 KiB.
        max_schedules: 1000.
    """

    action_timeout: float = 60.0
    create_vars_timeout: float = 5.0
    create_conn_state_timeout: float = 5.0
    on_before_connect_timeout: float = 5.0
    on_connect_timeout: float = 5.0
    on_migrate_timeout: float = 30.0
    sleep_timeout: float = 30.0
    sleep_grace_period: float = 15.0
    state_save_interval: float | None = None
    connection_liveness_timeout: float = 2.5
    connection_liveness_interval: float = 5.0
    max_queue_size: int = 1000
    max_queue_message_size: int = 64 * 1024
    max_schedules: int = 1000

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"ActorOptions.{field.name} must be a number, got {type(value).__name__}"
                )
            if value <= 0:
                raise ValueError(f"ActorOptions.{field.name} must be positive, got {value!r}")


def _env_path() -> Path:
    return Path(os.environ.get("RIVETKIT_STORAGE_PATH", ".rivetkit"))


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryConfig:
    """Settings of a registry and its embedded server.

    Attributes:
        host: interface to bind (``127.0.0.1``).
        port: TCP port (6420, the port the official client uses by default).
        storage_path: directory for actor databases; ``RIVETKIT_STORAGE_PATH`` or ``.rivetkit``.
        namespaces: namespaces this server answers; others get ``namespace.not_found``.
        max_incoming_message_size: request body / frame limit in bytes (64 KiB).
        max_outgoing_message_size: response / frame limit in bytes (1 MiB).
        max_input_size: actor input limit in bytes (4 MiB).
        expose_errors: send internal error messages to clients (``RIVET_EXPOSE_ERRORS=1``).
        sqlite_synchronous: SQLite ``synchronous`` pragma for actor files. ``NORMAL`` (default)
            survives a process crash (``kill -9``); ``FULL`` also survives power loss.
        ws_ping_interval: seconds between WebSocket pings to each client (5 s, RivetKit's
            liveness interval); ``None`` disables them.
        ws_ping_timeout: seconds without a pong before a connection is dropped and its
            ``on_disconnect`` runs (20 s).
        max_open_databases: actor database files kept open at once (256); the least recently
            opened are closed beyond that and reopened on use. Each open file costs about
            200 KB and two file descriptors.
    """

    host: str = "127.0.0.1"
    port: int = 6420
    storage_path: Path = dataclasses.field(default_factory=_env_path)
    namespaces: tuple[str, ...] = ("default",)
    max_incoming_message_size: int = 64 * 1024
    max_outgoing_message_size: int = 1024 * 1024
    max_input_size: int = 4 * 1024 * 1024
    expose_errors: bool = dataclasses.field(
        default_factory=lambda: os.environ.get("RIVET_EXPOSE_ERRORS", "") in ("1", "true")
    )
    sqlite_synchronous: str = "NORMAL"
    ws_ping_interval: float | None = 5.0
    ws_ping_timeout: float | None = 20.0
    max_open_databases: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "storage_path", Path(self.storage_path))
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        for name in (
            "max_incoming_message_size",
            "max_outgoing_message_size",
            "max_input_size",
            "max_open_databases",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if not self.namespaces:
            raise ValueError("namespaces must name at least one namespace")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerlessConfig:
    """Serverless engine mode: the engine calls this process over HTTP to start each actor.

    The pool's runner config points at ``public_url + base_path``; the engine polls
    ``GET .../metadata`` and sends ``POST .../start`` per actor start (spec §9). The envoy
    WebSocket is opened on the first start and reused for the later ones.

    Attributes:
        public_url: URL at which the engine reaches this process's HTTP server (scheme, host,
            port, optional prefix), e.g. ``http://10.0.0.5:8080``. ``None``: the address the
            server binds (``http://HOST:PORT``; not with port 0 or a wildcard host other than
            ``0.0.0.0``/``::``, which map to loopback).
        base_path: path of the serverless routes (``/api/rivet``, as RivetKit).
        request_lifespan: seconds the engine keeps one ``/start`` request open before it moves
            the actor away (300).
        drain_grace_period: seconds of that lifespan left for the actor to stop (30); must be
            smaller than ``request_lifespan``.
        metadata_poll_interval: milliseconds between the engine's ``GET /metadata`` (1000).
        min_runners / max_runners / runners_margin / slots_per_runner: the engine's scaling
            settings of the pool (0 / 100000 / 0 / 1, RivetKit's values).
        headers: extra headers the engine sends with every call.
        configure_pool: write the pool's runner config at start (True).
    """

    public_url: str | None = None
    base_path: str = "/api/rivet"
    request_lifespan: int = 300
    drain_grace_period: int = 30
    metadata_poll_interval: int = 1000
    min_runners: int = 0
    max_runners: int = 100000
    runners_margin: int = 0
    slots_per_runner: int = 1
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    configure_pool: bool = True

    def __post_init__(self) -> None:
        if self.public_url is not None:
            if not self.public_url.startswith(("http://", "https://")):
                raise ValueError(
                    f"serverless public_url must be an http(s) URL, got {self.public_url!r}"
                )
            object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        base = "/" + self.base_path.strip("/")
        object.__setattr__(self, "base_path", "" if base == "/" else base)
        for name in ("request_lifespan", "metadata_poll_interval", "max_runners",
                     "slots_per_runner"):
            if getattr(self, name) <= 0:
                raise ValueError(f"serverless {name} must be positive")
        for name in ("drain_grace_period", "min_runners", "runners_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"serverless {name} must not be negative")
        if self.drain_grace_period >= self.request_lifespan:
            raise ValueError("serverless drain_grace_period must be smaller than request_lifespan")
        if self.min_runners > self.max_runners:
            raise ValueError("serverless min_runners must not exceed max_runners")

    @property
    def pool_url(self) -> str:
        """The URL the engine calls: ``public_url`` + ``base_path``."""
        if self.public_url is None:
            raise ValueError("serverless mode needs a public_url (or a server address to derive it)")
        return self.public_url + self.base_path

    def for_address(self, host: str, port: int) -> ServerlessConfig:
        """This config, with ``public_url`` derived from the bound address when not given."""
        if self.public_url is not None:
            return self
        if port == 0:
            raise ValueError("serverless mode on port 0 needs an explicit public_url")
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "[::1]"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return dataclasses.replace(self, public_url=f"http://{host}:{port}")


ENVOY_PROTOCOL_VERSIONS = (6, 8)
"""Envoy protocol versions ``EngineConfig.protocol_version`` accepts."""


def _env_keep_cache_bytes() -> int:
    raw = os.environ.get("RIVETKIT_ENGINE_KEEP_CACHE_BYTES", str(1 << 30))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"RIVETKIT_ENGINE_KEEP_CACHE_BYTES must be a number of bytes, got {raw!r}"
        ) from None


def _env_protocol_version() -> int:
    raw = os.environ.get("RIVET_ENVOY_PROTOCOL_VERSION", "8")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"RIVET_ENVOY_PROTOCOL_VERSION must be one of {ENVOY_PROTOCOL_VERSIONS}, got {raw!r}"
        ) from None


_ENVOY_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """Where and how to join a Rivet Engine (engine mode).

    Attributes:
        endpoint: the engine's public URL (``http://127.0.0.1:6420``); ``RIVET_ENDPOINT``.
        namespace: namespace *name* the actors live in (``default``); ``RIVET_NAMESPACE``.
        token: admin token when the engine requires one; ``RIVET_TOKEN``.
        pool: the pool (runner config) this process serves (``default``); ``RIVET_POOL``.
        version: deployment version; the engine only places actors on the envoys with the
            highest version of a pool (1); ``RIVET_ENVOY_VERSION``.
        protocol_version: envoy protocol version spoken to the engine: 8 (rivet-engine 2.3.19,
            the default) or 6 (older engines; v8-only features such as staged commits of
            SQLite transactions over 320 pages then fail with
            ``envoy.unsupported_in_protocol_v6``); ``RIVET_ENVOY_PROTOCOL_VERSION``.
        envoy_key: identity of this process towards the engine, kept across reconnects; a
            random UUID when not given. Two processes must never share one.
        drain_timeout: longest a graceful shutdown waits for actors to stop (seconds).
        keep_cache_bytes: disk space for the local database copies of actors that went to
            sleep in this process (1 GiB), so that the engine starting one here again costs
            no fetch of its database when nothing changed it meanwhile; 0 keeps none;
            ``RIVETKIT_ENGINE_KEEP_CACHE_BYTES``.
        serverless: serverless mode (:class:`ServerlessConfig`): the engine starts actors by
            calling this process's HTTP server instead of the process connecting up front.
    """

    endpoint: str = dataclasses.field(
        default_factory=lambda: os.environ.get("RIVET_ENDPOINT", "http://127.0.0.1:6420")
    )
    namespace: str = dataclasses.field(
        default_factory=lambda: os.environ.get("RIVET_NAMESPACE", "default")
    )
    token: str | None = dataclasses.field(default_factory=lambda: os.environ.get("RIVET_TOKEN"))
    pool: str = dataclasses.field(default_factory=lambda: os.environ.get("RIVET_POOL", "default"))
    version: int = dataclasses.field(
        default_factory=lambda: int(os.environ.get("RIVET_ENVOY_VERSION", "1"))
    )
    protocol_version: int = dataclasses.field(default_factory=lambda: _env_protocol_version())
    envoy_key: str | None = None
    drain_timeout: float = 60.0
    keep_cache_bytes: int = dataclasses.field(default_factory=lambda: _env_keep_cache_bytes())
    serverless: ServerlessConfig | None = None

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"engine endpoint must be an http(s) URL, got {self.endpoint!r}")
        object.__setattr__(self, "endpoint", self.endpoint.rstrip("/"))
        if not self.namespace:
            raise ValueError("engine namespace must not be empty")
        if not self.pool or len(self.pool) > 128:
            raise ValueError("engine pool name must be 1..128 characters")
        if not 0 <= self.version <= 0xFFFFFFFF:
            raise ValueError(f"engine version must be a u32, got {self.version}")
        if type(self.protocol_version) is not int or self.protocol_version not in (
            ENVOY_PROTOCOL_VERSIONS
        ):
            raise ValueError(
                f"engine protocol_version must be one of {ENVOY_PROTOCOL_VERSIONS} (envoy "
                f"protocol versions this runtime speaks), got {self.protocol_version!r}"
            )
        key = self.envoy_key
        if key is not None and not (3 <= len(key) <= 128 and set(key) <= _ENVOY_KEY_CHARS):
            raise ValueError("envoy_key must be 3..128 characters of [A-Za-z0-9_-]")
        if self.drain_timeout <= 0:
            raise ValueError("drain_timeout must be positive")
        if type(self.keep_cache_bytes) is not int or self.keep_cache_bytes < 0:
            raise ValueError(
                f"keep_cache_bytes must be an int >= 0, got {self.keep_cache_bytes!r}"
            )
