"""The official npm client (``rivetkit@2.3.19``) drives Python actors THROUGH the real engine.

Nothing here talks to our process directly. ``python -m rivetkit serve tests/compat/app.py
--engine URL --pool P`` hosts the compat suite's actors on a real ``rivet-engine`` 2.3.19; the
scenario scripts of ``tests/compat`` (``scenarios.mjs`` with ``scenarios_conn.mjs`` and
``scenarios_queue.mjs``) run in Node with ``--endpoint`` set to the engine and ``--pool P``, so
every request and WebSocket goes client -> engine gateway -> envoy tunnel -> our ASGI app.

Each test is one scenario in one encoding behind one of the engine's two gateways:

* ``gateway2``: the engine's default. Request bodies arrive whole; responses cannot be
  streamed.
* ``gateway3``: ``features.guard_gateway_v3 = {mode: "on", percentage: 100}``. Request bodies
  always arrive in chunks, responses may be streamed (1 MiB window), and the gateway checks the
  index of every message we send for a request.

Set-up, per gateway (module-scoped): a fresh engine (see "Engine settings"), a fresh pool in
namespace ``default`` and in namespace ``ns`` (scenario 1 addresses ``http://ns:tok@engine``),
one runtime process per namespace, then one Node process per (encoding, scenario), the three
encodings in parallel and each encoding's scenarios one after the other. Every process is
stopped at the end. A failure prints the check's error, its HTTP exchanges and sockets, and the
tails of our runtime's log and the engine's log.

Engine settings: ``runtime.worker_cpu_max`` is raised because rivet-engine sheds load by CPU
usage: its workflow worker pulls fewer workflows when the engine process looks busy, and on a
loaded 2-core machine that holds actor creation for 5-30 s (``504
pegboard.route_resolve_query_timeout``), measured: 3 of 4 fresh engines stalled with the default
setting, none with the raised one. This needs a new engine here until ``tests/engine/
engine_proc.py`` sets it for every test engine (the shared ``engine`` fixture then fits).

Not applicable through the engine (checks skipped, every other check of the scenario counts):

* s01 ``path_prefix_endpoint``: mounting the registry under ``/api/rivet`` is an embedded-mode
  feature; the engine serves its API and gateway at its root.
* s04 ``create_existing_key_duplicate_key``: ``POST /actors`` on a key in use answers ``400
  actor.destroyed_during_creation`` instead of ``actor.duplicate_key`` about half the time
  (always for a pool without a connected envoy); decided inside the engine, our runtime never
  sees the request.
* s06 ``getForId_unknown_not_found_without_retry`` and s18 ``get_for_unknown_id_goes_idle``: the
  check makes an unknown id by rotating characters of a real one; the engine parses ids and
  answers ``500 core.internal_error`` ("invalid actor id in path: unsupported ID version")
  before any routing.
* s06 ``unknown_actor_name_fast_non_retryable``: the engine creates an actor for any name; our
  runtime cannot run it and reports it stopped, the gateway retries the wake 8 times and answers
  ``503 guard.actor_wake_retries_exceeded``, which the client retries. A fast answer needs the
  engine host to serve such actors with an error (see the report of this change).
* s24 ``sse_streaming_response`` (gateway2 only): gateway2 never lets a response stream
  (``responseStream`` false; a streamed start is turned into an empty body), so server-sent
  events arrive in one piece when the handler ends.
* s29 ``top_level_routes``: ``GET /`` and ``/metadata`` of the endpoint are the engine's own
  (``/`` answers 308 to its dashboard).
* s20 (restart of our server with open connections) needs its own stdin-driven Node process and
  server restarts; it stays in ``tests/compat`` (embedded mode).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests._proc import ServerProcess, start_process
from tests.engine.engine_proc import Engine, EngineError

ROOT = Path(__file__).resolve().parents[2]
COMPAT_DIR = ROOT / "tests" / "compat"
MARKER = "@@compat "
RIVETKIT_VERSION = "2.3.19"
ENCODINGS = ("json", "cbor", "bare")
AUTH_NAMESPACE = "ns"  # scenario 1: `http://ns:tok@<engine>`
NODE_TIMEOUT = 90.0  # seconds for one scenario's Node process (normally 0.5-4 s)
READY_TIMEOUT = 30.0

SCENARIOS = {
    1: "bootstrap_metadata_url_auth",
    2: "get_or_create_query_form_keys",
    3: "get_or_create_input",
    4: "create_and_get_for_id",
    5: "resolve_via_actors_api",
    6: "not_found",
    7: "token",
    8: "gateway_url",
    9: "value_round_trips",
    10: "conn_params",
    11: "errors",
    12: "body_robustness",
    13: "connect_init_ready",
    14: "events_subscriptions",
    15: "ws_actions_typed_ids_concurrency",
    16: "ws_action_errors",
    17: "connection_rejected",
    18: "connect_missing_actor",
    19: "server_disconnect_reconnect",
    21: "dispose_on_disconnect",
    22: "oversized_frame",
    23: "get_params_per_connect",
    24: "raw_request",
    25: "raw_websocket",
    26: "skip_ready_wait",
    27: "queues",
    29: "actor_router_routes",
}

# (scenario, check) -> why it cannot pass through the engine (see the module docstring).
NOT_APPLICABLE: dict[tuple[int, str], str] = {
    (1, "path_prefix_endpoint"): "embedded-mode mount under a path prefix",
    (4, "create_existing_key_duplicate_key"): "engine answers actor.destroyed_during_creation",
    (6, "getForId_unknown_not_found_without_retry"): "engine rejects the made-up id (500)",
    (18, "get_for_unknown_id_goes_idle"): "engine rejects the made-up id (500)",
    (6, "unknown_actor_name_fast_non_retryable"): "engine creates actors of any name",
    (29, "top_level_routes"): "the engine's own / and /metadata",
}
NOT_APPLICABLE_BY_GATEWAY: dict[str, dict[tuple[int, str], str]] = {
    "gateway2": {(24, "sse_streaming_response"): "gateway2 cannot stream a response"},
    "gateway3": {},
}
GATEWAY_FEATURES: dict[str, dict[str, Any] | None] = {
    "gateway2": None,
    "gateway3": {"guard_gateway_v3": {"mode": "on", "percentage": 100}},
}

pytestmark = [pytest.mark.compat, pytest.mark.slow]


# -- the engine and our runtime ----------------------------------------------------------------


class TunedEngine(Engine):
    """An :class:`Engine` with load shedding off and, optionally, engine ``features``."""

    def __init__(self, data_dir: Path, *, features: dict[str, Any] | None, **options: Any):
        super().__init__(data_dir, **options)
        self.features = features

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        # Millicores the worker compares its CPU use with: far above this machine, so it never
        # sheds (see the module docstring).
        cfg["runtime"] = {"worker_cpu_max": 64_000}
        if self.features is not None:
            cfg["features"] = self.features
        return cfg


def ensure_namespace(engine: Engine, name: str) -> None:
    _, body = engine.api("GET", "/namespaces", namespace=None)
    names = {ns.get("name") for ns in (body or {}).get("namespaces", [])}
    if name not in names:
        engine.api("POST", "/namespaces", {"name": name, "display_name": name}, namespace=None)


def start_runtime(engine: Engine, pool: str, namespace: str, base: Path) -> ServerProcess:
    """``python -m rivetkit serve tests/compat/app.py --engine ...`` (it opens no port)."""
    argv = [
        sys.executable, "-m", "rivetkit", "serve", str(COMPAT_DIR / "app.py"),
        "--engine", engine.endpoint, "--pool", pool, "--namespace", namespace,
        "--storage", str(base / f"storage-{namespace}"),
    ]  # fmt: skip
    return start_process(
        argv, port=0, env={"RIVET_RUN_SERVICES": "0"}, cwd=ROOT,
        log_path=base / f"runtime-{namespace}.log",
    )  # fmt: skip


def wait_envoy(engine: Engine, runtime: ServerProcess, pool: str, namespace: str) -> None:
    """Wait until the runtime's envoy is connected to the engine (listed in ``/envoys``)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if runtime.returncode is not None:
            raise EngineError(f"runtime exited with {runtime.returncode}\n{runtime.log_tail()}")
        _, body = engine.api("GET", f"/envoys?name={pool}", namespace=namespace, check=False)
        envoys = (body or {}).get("envoys", []) if isinstance(body, dict) else []
        if any(e.get("pool_name") == pool and e.get("stop_ts") is None for e in envoys):
            return
        if time.monotonic() > deadline:
            raise EngineError(f"no envoy of pool {pool} in {namespace}\n{runtime.log_tail()}")
        time.sleep(0.05)


# -- Node runs ---------------------------------------------------------------------------------


@dataclass
class NodeRun:
    """One ``node scenarios.mjs`` process (one scenario in one encoding) and what it printed."""

    encoding: str
    scenario: int
    argv: list[str]
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    lines: list[dict[str, Any]] = field(default_factory=list)
    other: str = ""

    def summary(self) -> str:
        killed = " (killed: timed out)" if self.timed_out else ""
        parts = [
            f"node exit status {self.returncode}{killed} after {self.seconds:.1f} s",
            f"command: {' '.join(self.argv)}",
        ]
        for line in self.lines:
            if line.get("type") in ("fatal", "unhandled_rejection"):
                parts.append(f"{line['type']}: {json.dumps(line.get('error'), indent=2)}")
        if self.other.strip():
            parts.append(f"other output (tail):\n{self.other[-3000:]}")
        return "\n".join(parts)


def scenario_argv(node: str, engine: Engine, pool: str, encoding: str, scenario: int) -> list[str]:
    return [
        node, str(COMPAT_DIR / "scenarios.mjs"),
        "--endpoint", engine.endpoint, "--pool", pool,
        "--encoding", encoding, "--scenarios", str(scenario),
        "--timeout", str(int(NODE_TIMEOUT - 5)),
    ]  # fmt: skip


def node_env() -> dict[str, str]:
    # RIVET_* variables would change the client's endpoint, namespace, pool or token.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVET_")}
    env["RIVET_LOG_LEVEL"] = "error"
    env["RIVET_RUN_SERVICES"] = "0"  # never start a local engine or Services (spec §13)
    return env


def run_node(run: NodeRun, log_dir: Path) -> NodeRun:
    out_path = log_dir / f"node-{run.encoding}-s{run.scenario:02d}.out"
    started = time.monotonic()
    with open(out_path, "wb") as out:
        popen = subprocess.Popen(
            run.argv, cwd=COMPAT_DIR, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, env=node_env(), start_new_session=True,
        )  # fmt: skip
        try:
            popen.wait(timeout=NODE_TIMEOUT)
        except subprocess.TimeoutExpired:
            run.timed_out = True
        finally:
            try:  # whatever happened, leave nothing of this process group behind
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            popen.wait()
    run.returncode = popen.returncode
    run.seconds = time.monotonic() - started
    other: list[str] = []
    for raw in out_path.read_text(errors="replace").splitlines():
        if raw.startswith(MARKER):
            try:
                run.lines.append(json.loads(raw[len(MARKER) :]))
                continue
            except ValueError:
                pass
        other.append(raw)
    run.other = "\n".join(other)
    return run


@dataclass
class GatewayResults:
    gateway: str
    engine: Engine
    runtimes: list[ServerProcess]
    runs: dict[tuple[str, int], NodeRun]
    seconds: float


def selected(session: pytest.Session, gateway: str) -> list[tuple[str, int]]:
    """(encoding, scenario) of this module's tests the session runs for ``gateway``."""
    pairs: set[tuple[str, int]] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or Path(str(item.fspath)) != Path(__file__):
            continue
        params = callspec.params
        if params.get("gateway") == gateway:
            pairs.add((params["encoding"], params["scenario"]))
    return sorted(pairs)


@pytest.fixture(scope="module")
def compat_modules() -> Path:
    from tests._npm import npm_install

    modules = npm_install(COMPAT_DIR, what="the engine compat tests (official npm client)")
    manifest = json.loads((modules / "rivetkit" / "package.json").read_text())
    if manifest.get("version") != RIVETKIT_VERSION:
        pytest.fail(f"npm installed rivetkit {manifest.get('version')!r}, need {RIVETKIT_VERSION}")
    return modules


@pytest.fixture(scope="module", params=list(GATEWAY_FEATURES))
def gateway(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def results(
    request: pytest.FixtureRequest,
    gateway: str,
    compat_modules: Path,
    rivet_engine_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayResults]:
    """Engine + runtimes for ``gateway``, then every selected scenario run through them."""
    base = tmp_path_factory.mktemp(f"engine-compat-{gateway}")
    pool = f"compat-{uuid.uuid4().hex[:10]}"
    started = time.monotonic()
    engine = TunedEngine(
        base / "engine", binary=rivet_engine_binary, features=GATEWAY_FEATURES[gateway]
    )
    runtimes: list[ServerProcess] = []
    with engine:
        try:
            ensure_namespace(engine, AUTH_NAMESPACE)
            for namespace in ("default", AUTH_NAMESPACE):
                engine.put_runner_config(pool, namespace=namespace)
                runtimes.append(start_runtime(engine, pool, namespace, base))
            for runtime, namespace in zip(runtimes, ("default", AUTH_NAMESPACE), strict=True):
                wait_envoy(engine, runtime, pool, namespace)
            node = shutil.which("node") or "node"
            runs = [
                NodeRun(encoding, scenario, scenario_argv(node, engine, pool, encoding, scenario))
                for encoding, scenario in selected(request.session, gateway)
            ]
            log_dir = base / "node"
            log_dir.mkdir()

            def run_encoding(encoding: str) -> list[NodeRun]:
                return [run_node(r, log_dir) for r in runs if r.encoding == encoding]

            done: dict[tuple[str, int], NodeRun] = {}
            with concurrent.futures.ThreadPoolExecutor(len(ENCODINGS)) as pool_:
                for finished in pool_.map(run_encoding, ENCODINGS):
                    done.update({(r.encoding, r.scenario): r for r in finished})
            yield GatewayResults(gateway, engine, runtimes, done, time.monotonic() - started)
        finally:
            for runtime in runtimes:
                runtime.stop(timeout=15.0)


# -- reporting ---------------------------------------------------------------------------------


def format_check(line: dict[str, Any]) -> str:
    out = [f"✗ {line['check']} ({line.get('ms', '?')} ms)"]
    error = line.get("error") or {}
    out.append(f"  error: {error.get('name', '')}: {error.get('message', '')}")
    for key in ("group", "code", "metadata", "actor"):
        if key in error:
            out.append(f"  error.{key}: {json.dumps(error[key])}")
    if line.get("notes"):
        out.append(f"  notes: {json.dumps(line['notes'])[:4000]}")
    for ex in line.get("exchanges") or []:
        out.append("  " + json.dumps(ex, ensure_ascii=False)[:1500])
    return "\n".join(out)


def failure_report(res: GatewayResults, encoding: str, scenario: int) -> str | None:
    """``None`` when every applicable check passed, else what went wrong."""
    run = res.runs.get((encoding, scenario))
    if run is None:
        return "no Node run for this scenario (selection bookkeeping failed)"
    skipped = {**NOT_APPLICABLE, **NOT_APPLICABLE_BY_GATEWAY[res.gateway]}
    events = [line for line in run.lines if line.get("scenario") == scenario]
    start = next((e for e in events if e.get("type") == "scenario_start"), None)
    end = next((e for e in events if e.get("type") == "scenario_end"), None)
    checks = {e["check"]: e for e in events if e.get("type") == "check"}
    problems: list[str] = []
    if start is None:
        problems.append("the scenario never started")
    else:
        applicable = [n for n in start["checks"] if (scenario, n) not in skipped]
        if not applicable:
            problems.append("the scenario has no applicable checks")
        missing = [n for n in applicable if n not in checks]
        if missing:
            problems.append(f"checks that never reported: {', '.join(missing)}")
        if end is None:
            problems.append("the scenario did not finish")
    failed = [
        line for name, line in checks.items()
        if not line.get("ok") and (scenario, name) not in skipped
    ]
    if not problems and not failed:
        return None
    parts = [f"scenario {scenario} ({SCENARIOS[scenario]}) in {encoding} via {res.gateway}:"]
    passed = [name for name, line in checks.items() if line.get("ok")]
    if passed:
        parts.append(f"passed: {', '.join(passed)}")
    parts += problems
    parts += [format_check(line) for line in failed]
    parts.append(run.summary())
    for runtime in res.runtimes:
        parts.append(runtime.log_tail(3000))
    parts.append(res.engine.log_tail(3000))
    return "\n".join(parts)


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.timeout(400)  # the first test of a gateway pays for its engine and Node runs
@pytest.mark.parametrize(
    "scenario", list(SCENARIOS), ids=[f"s{n:02d}_{name}" for n, name in SCENARIOS.items()]
)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_scenario_through_engine(results: GatewayResults, encoding: str, scenario: int) -> None:
    report = failure_report(results, encoding, scenario)
    if report is not None:
        pytest.fail(report, pytrace=False)


def test_not_applicable_checks_exist() -> None:
    """Every skipped check names a real check of the scenario scripts (no stale exclusions)."""
    sources = "".join(
        (COMPAT_DIR / name).read_text()
        for name in ("scenarios.mjs", "scenarios_conn.mjs", "scenarios_queue.mjs")
    )
    names = {name for by in NOT_APPLICABLE_BY_GATEWAY.values() for _, name in by}
    names |= {name for _, name in NOT_APPLICABLE}
    for name in sorted(names):
        assert f'"{name}"' in sources, f"no check named {name!r} in the scenario scripts"
    assert set(NOT_APPLICABLE_BY_GATEWAY) == set(GATEWAY_FEATURES)
