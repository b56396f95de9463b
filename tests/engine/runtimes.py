"""The official TypeScript runtime and ours as separate processes hosting the same ``counter``
actor (``ts_runtime/ts_host.mjs`` and its Python twin ``compat_counter_app.py``) on an engine.
Used by the data-compatibility tests and by ``bench/engine/wake_by_size.py``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests._npm import npm_install
from tests._proc import ServerProcess
from tests.engine.engine_proc import Engine
from tests.engine.helpers import envoys

ENGINE_TESTS = Path(__file__).resolve().parent
ROOT = ENGINE_TESTS.parents[1]
COMPAT_DIR = ROOT / "tests" / "compat"
TS_HOST = ENGINE_TESTS / "ts_runtime" / "ts_host.mjs"
PY_APP = ENGINE_TESTS / "compat_counter_app.py"
RIVETKIT_VERSION = "2.3.19"
ENVOY_VERSION = 1  # the same deployment version on both sides (a lower one gets no actors, §2.7)

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
POLL = 0.05


def child_env() -> dict[str, str]:
    # RIVET_* variables of the outer environment would redirect either runtime.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RIVET_", "RIVETKIT_"))}
    env.pop("_RIVET_TEST_INSPECTOR_TOKEN", None)
    env["PYTHONUNBUFFERED"] = "1"
    # Without it the official runtime, seeing a loopback endpoint, also starts its "Services"
    # actor host: one more envoy, in pool `services` (spec §13).
    env["RIVET_RUN_SERVICES"] = "0"
    env["RIVET_LOG_LEVEL"] = "warn"
    return env


def live_envoys(engine: Engine, pool: str) -> list[dict[str, Any]]:
    return [e for e in envoys(engine, pool) if e.get("stop_ts") is None]


class Runtime:
    """One runtime process hosting the pool's actors on the engine."""

    name = ""

    def __init__(self, engine: Engine, pool: str, log_dir: Path) -> None:
        self.engine = engine
        self.pool = pool
        self.env: dict[str, str] = {}  # added to the process's environment
        self.log_dir = log_dir
        self.starts = 0
        self.log_path = log_dir / f"{self.name}-0.log"
        self.proc: ServerProcess | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def is_ours(self, envoy: dict[str, Any]) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        assert not live_envoys(self.engine, self.pool), "another runtime still serves the pool"
        self.starts += 1
        self.log_path = self.log_dir / f"{self.name}-{self.starts}.log"  # one per process
        self.proc = ServerProcess(
            self.argv(), port=0, log_path=self.log_path, env=child_env() | self.env, cwd=ROOT
        )
        self.proc.start()
        self._wait(
            lambda: any(self.is_ours(e) for e in live_envoys(self.engine, self.pool)),
            READY_TIMEOUT,
            "its envoy to register with the engine",
        )

    def stop(self) -> None:
        """Graceful stop (SIGTERM: drain), then wait until the engine no longer lists the envoy."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        status = proc.stop(STOP_TIMEOUT)
        assert status == 0, f"{self.name} runtime exited with {status}\n{proc.log_tail()}"
        deadline = time.monotonic() + STOP_TIMEOUT
        while live_envoys(self.engine, self.pool):
            assert time.monotonic() < deadline, f"the engine still lists the {self.name} envoy"
            time.sleep(POLL)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not ready():
            code = self.proc.returncode
            if code is not None:
                raise AssertionError(
                    f"{self.name} runtime exited with {code} before {what}\n{self.proc.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{self.name} runtime: no {what} after {timeout:g} s\n{self.proc.log_tail()}"
                )
            time.sleep(POLL)


class TsRuntime(Runtime):
    """``node ts_host.mjs``: the official runtime in envoy mode against our engine."""

    name = "typescript"

    def __init__(self, engine: Engine, pool: str, log_dir: Path, node: str, modules: Path) -> None:
        super().__init__(engine, pool, log_dir)
        self.node = node
        self.modules = modules

    def argv(self) -> list[str]:
        return [
            self.node,
            str(TS_HOST),
            "--endpoint",
            self.engine.endpoint,
            "--pool",
            self.pool,
            "--version",
            str(ENVOY_VERSION),
            "--modules",
            str(self.modules),
        ]

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log().splitlines():
            if line.startswith('{"event":'):
                found.append(json.loads(line))
        return found

    def is_ours(self, envoy: dict[str, Any]) -> bool:
        # Its metadata names the npm version only ({"rivetkit": {"version": "2.3.19"}}, §4.4).
        meta = envoy.get("metadata") or {}
        return (
            meta.get("rivetkit", {}).get("version") == RIVETKIT_VERSION
            and "runtime" not in meta.get("rivetkit", {})
            and any(e["event"] == "ready" for e in self.events())
        )

    def stop(self) -> None:
        had = self.proc is not None
        super().stop()
        if had:
            kinds = [e["event"] for e in self.events()]
            assert kinds == ["ready", "stopped"], f"ts_host events {kinds}\n{self.log()[-4000:]}"


class PyRuntime(Runtime):
    """``python -m rivetkit serve compat_counter_app.py --engine ...``: our runtime."""

    name = "python"

    def __init__(self, engine: Engine, pool: str, log_dir: Path, storage: Path) -> None:
        super().__init__(engine, pool, log_dir)
        self.storage = storage

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rivetkit",
            "serve",
            str(PY_APP),
            "--engine",
            self.engine.endpoint,
            "--pool",
            self.pool,
            "--version",
            str(ENVOY_VERSION),
            "--storage",
            str(self.storage),
        ]

    def is_ours(self, envoy: dict[str, Any]) -> bool:
        meta = envoy.get("metadata") or {}
        return bool(meta.get("rivetkit", {}).get("runtime") == "python")


def ts_modules(what: str) -> Path:
    """``tests/compat/node_modules`` (npm ``rivetkit`` and its native runtime, from the
    lockfile), installed first if missing; ``what`` names who needs it in npm's messages."""
    modules = npm_install(COMPAT_DIR, what=what)
    for package in ("rivetkit", "@rivetkit/rivetkit-napi"):
        manifest = json.loads((modules / package / "package.json").read_text())
        if manifest["version"] != RIVETKIT_VERSION:
            raise RuntimeError(
                f"{package} {manifest['version']} installed, the tests pin {RIVETKIT_VERSION}"
            )
    return modules
