"""Run a real ``rivet-engine`` (npm ``@rivetkit/engine-cli`` 2.3.19) for tests (stdlib only).

:func:`engine_binary` installs the pinned npm package (``tests/engine/package.json`` and its
lockfile; the binary itself comes from the platform package that npm picks through
``optionalDependencies``, ``@rivetkit/engine-cli-linux-x64-musl`` here) and returns the path of
``rivet-engine``. :class:`Engine` starts ``rivet-engine --config <cfg.json> start`` as a
single-node engine on free loopback ports with a fresh data directory (spec ``engine-envoy.md``
§2.2):

* ``guard`` (public API, gateway and envoy WebSocket), ``api_peer`` and ``metrics`` all bind
  ``127.0.0.1``; ``topology`` names the chosen ports, because the default topology hard-codes
  6420/6421 and the engine hands ``public_url`` to clients;
* file-system (RocksDB) storage under the data directory, ``telemetry.enabled = false``;
* optional ``auth.admin_token`` and ``pegboard`` tunables (e.g. a short ``envoy_ping_timeout``).

The engine counts as started once it accepted the runner config of pool ``default`` (what
RivetKit itself puts at start): ``/health`` alone answers a few ms before the API works.

``RUST_BACKTRACE`` is removed from the engine's environment (with it the engine runs several
times slower: it captures a backtrace for every internal error it logs) and so are ``RIVET__*``
variables, which would override the config file. The engine runs in its own process group and
logs to ``<data dir>/engine.log``; every error raised here carries the tail of that log.

Example::

    with Engine(tmp_path / "engine") as engine:
        engine.put_runner_config("default")
        status, body = engine.api("GET", "/actors/names")
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ENGINE_DIR = Path(__file__).resolve().parent
ROOT = ENGINE_DIR.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests._proc import ServerProcess, free_port

__all__ = ["ENGINE_VERSION", "Engine", "EngineError", "engine_binary"]

ENGINE_VERSION = "2.3.19"
HOST = "127.0.0.1"
START_ATTEMPTS = 3  # a port picked by free_port() can be taken before the engine binds it

_PLATFORM_PACKAGES = {
    ("Linux", "x86_64"): "engine-cli-linux-x64-musl",
    ("Linux", "aarch64"): "engine-cli-linux-arm64-musl",
    ("Darwin", "arm64"): "engine-cli-darwin-arm64",
    ("Darwin", "x86_64"): "engine-cli-darwin-x64",
}


_POOL_CONFIG = {"datacenters": {"default": {"drain_on_version_upgrade": True, "normal": {}}}}


class EngineError(RuntimeError):
    """The engine did not start, died, or an API call failed (message ends with its log)."""


def engine_binary() -> Path:
    """``rivet-engine`` of the pinned npm package, installing it first when needed.

    Fails the calling test (``pytest.fail``) when node/npm are missing or npm fails.
    """
    from tests._npm import npm_install

    modules = npm_install(ENGINE_DIR, what="the engine tests (they run the real rivet-engine)")
    package = _PLATFORM_PACKAGES.get((platform.system(), platform.machine()))
    if package is None:
        raise EngineError(
            f"no rivet-engine npm package for {platform.system()}/{platform.machine()}"
        )
    folder = modules / "@rivetkit" / package
    manifest = json.loads((folder / "package.json").read_text())
    if manifest.get("version") != ENGINE_VERSION:
        raise EngineError(f"{folder} is version {manifest.get('version')}, need {ENGINE_VERSION}")
    binary = folder / "rivet-engine"
    if not binary.is_file():
        raise EngineError(f"npm installed {folder} without the rivet-engine binary")
    return binary


def _engine_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key != "RUST_BACKTRACE" and not key.startswith("RIVET__")
    }


class Engine:
    """One ``rivet-engine`` process with its own ports and data directory.

    Args:
        data_dir: fresh directory for the database, the config file and the log.
        binary: the ``rivet-engine`` executable (default: :func:`engine_binary`).
        admin_token: when set, the engine requires it (HTTP ``Authorization: Bearer``, envoy
            subprotocol ``rivet_token.<token>``); :meth:`api` sends it.
        pegboard: extra ``pegboard`` config keys (ms values), e.g. ``{"envoy_ping_timeout": 2000}``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        binary: Path | None = None,
        admin_token: str | None = None,
        pegboard: Mapping[str, Any] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.binary = binary
        self.admin_token = admin_token
        self.pegboard = dict(pegboard or {})
        self.guard_port = self.api_peer_port = self.metrics_port = 0
        self.start_seconds = 0.0
        """Wall time from spawning the process to being ready (see :meth:`start`)."""
        self._proc: ServerProcess | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<guard port>``: public API, gateway and envoy WebSocket."""
        return f"http://{HOST}:{self.guard_port}"

    @property
    def ws_endpoint(self) -> str:
        return f"ws://{HOST}:{self.guard_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "engine.log"

    def config(self) -> dict[str, Any]:
        """The config file contents for the current ports."""
        cfg: dict[str, Any] = {
            "guard": {"host": HOST, "port": self.guard_port},
            "api_peer": {"host": HOST, "port": self.api_peer_port},
            "metrics": {"host": HOST, "port": self.metrics_port},
            "file_system": {"path": str(self.data_dir / "db")},
            "telemetry": {"enabled": False},
            # The workflow worker backs off when the process looks busy, which on a loaded
            # 2-core machine stalls actor creation for 5-30 s (route_resolve_query_timeout).
            "runtime": {"worker_cpu_max": 64000},
            "topology": {
                "datacenter_label": 1,
                "datacenters": {
                    "default": {
                        "datacenter_label": 1,
                        "is_leader": True,
                        "public_url": f"http://{HOST}:{self.guard_port}",
                        "peer_url": f"http://{HOST}:{self.api_peer_port}",
                    }
                },
            },
        }
        if self.admin_token is not None:
            cfg["auth"] = {"admin_token": self.admin_token}
        if self.pegboard:
            cfg["pegboard"] = self.pegboard
        return cfg

    def start(self, timeout: float = 30.0) -> Self:
        """Start the engine and wait until it serves the API (pool ``default`` then exists).

        Raises:
            EngineError: the engine exited or was not healthy within ``timeout`` seconds.
        """
        if self._proc is not None:
            raise EngineError("engine already started")
        binary = self.binary or engine_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.data_dir / "engine.json"
        for attempt in range(1, START_ATTEMPTS + 1):
            self.guard_port, self.api_peer_port, self.metrics_port = _three_ports()
            cfg_path.write_text(json.dumps(self.config(), indent=2))
            proc = ServerProcess(
                [str(binary), "--config", str(cfg_path), "start"],
                port=self.guard_port,
                log_path=self.log_path,
                env=_engine_env(),
                cwd=self.data_dir,
            )
            started = time.monotonic()
            proc.start()
            self._proc = proc
            try:
                self._wait_ready(proc, timeout)
            except EngineError:
                if proc.returncode is None or attempt == START_ATTEMPTS:
                    self.stop()
                    raise
                self._proc = None  # it exited early (most likely a port race): try new ports
                proc.stop()
                continue
            self.start_seconds = time.monotonic() - started
            return self
        raise AssertionError("unreachable")

    def _wait_ready(self, proc: ServerProcess, timeout: float) -> None:
        """``GET /health`` answers 200, then a runner config for ``default`` is accepted.

        ``/health`` answers before the engine can serve: for a few ms the ``default`` namespace
        does not exist yet (400) or epoxy is not configured (500 "replica 1 has not been
        configured yet"). Creating the ``default`` pool, as RivetKit does at start, waits for
        both.
        """
        deadline = time.monotonic() + timeout
        last = "no attempt"
        healthy = False
        while True:
            code = proc.returncode
            if code is not None:
                raise EngineError(f"rivet-engine exited with status {code}\n{self.log_tail()}")
            try:
                if not healthy:
                    with urllib.request.urlopen(self.endpoint + "/health", timeout=1.0) as resp:
                        healthy = resp.status == 200
                        last = f"/health: HTTP {resp.status}"
                if healthy:
                    status, body = self.api(
                        "PUT", "/runner-configs/default", _POOL_CONFIG, check=False, timeout=2.0
                    )
                    if status == 200:
                        return
                    last = f"PUT /runner-configs/default: HTTP {status} {body}"
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            if time.monotonic() >= deadline:
                raise EngineError(
                    f"rivet-engine not ready after {timeout:g} s (last: {last})\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the engine's process group (SIGSTOP) for the block: its sockets stay open but
        it sends nothing, as an engine that hangs; SIGCONT afterwards, whatever happens."""
        if self._proc is None:
            raise EngineError("the engine is not running")
        group = os.getpgid(self._proc.pid)
        os.killpg(group, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(group, signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the engine's process group, SIGKILL after ``timeout`` s; returns the status."""
        proc, self._proc = self._proc, None
        return proc.stop(timeout) if proc is not None else None

    def log_tail(self, max_bytes: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - max_bytes))
                text = log.read().decode("utf-8", "replace")
        except OSError as exc:
            text = f"(log unavailable: {exc})"
        return f"--- engine log {self.log_path} (tail) ---\n{text}\n--- end of engine log ---"

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Engine {self.endpoint} running={self.is_running()}>"

    # -- HTTP API ------------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        namespace: str | None = "default",
        token: str | None = None,
        check: bool = True,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """Call the public API; ``?namespace=`` is added unless ``namespace`` is ``None``.

        Args:
            method: HTTP method.
            path: e.g. ``"/actors"`` (may already carry a query string).
            json_body: sent as JSON when not ``None``.
            token: bearer token (default: the engine's ``admin_token``; ``""`` sends none).
            check: raise :class:`EngineError` for a status >= 400.

        Returns:
            ``(status, decoded JSON body or the raw text when it is not JSON)``.
        """
        url = self.endpoint + path
        if namespace is not None:
            sep = "&" if "?" in path else "?"
            url += f"{sep}namespace={urllib.parse.quote(namespace)}"
        data = None if json_body is None else json.dumps(json_body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        bearer = self.admin_token if token is None else token
        if bearer:
            req.add_header("authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        text = raw.decode("utf-8", "replace")
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        if check and status >= 400:
            raise EngineError(f"{method} {path} -> {status}: {text[:2000]}\n{self.log_tail()}")
        return status, body

    def put_runner_config(self, pool: str = "default", *, namespace: str = "default") -> Any:
        """Create (or update) a normal (non-serverless) pool, as RivetKit does (§4.1)."""
        return self.api("PUT", f"/runner-configs/{pool}", _POOL_CONFIG, namespace=namespace)[1]

    def envoy_url(
        self,
        pool: str = "default",
        *,
        envoy_key: str,
        namespace: str = "default",
        version: int = 1,
        protocol_version: int = 8,
    ) -> str:
        """The envoy WebSocket URL (``/envoys/connect?...``, spec §4.2)."""
        query = urllib.parse.urlencode(
            {
                "protocol_version": protocol_version,
                "namespace": namespace,
                "envoy_key": envoy_key,
                "version": version,
                "pool_name": pool,
            }
        )
        return f"{self.ws_endpoint}/envoys/connect?{query}"


def _three_ports() -> tuple[int, int, int]:
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port(HOST))
    a, b, c = sorted(ports)
    return a, b, c
