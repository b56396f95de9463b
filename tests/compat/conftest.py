"""Fixtures of the compat suite: the official npm client (``rivetkit@2.3.19``) against our server.

Session-wide, in order:

1. ``compat_node_modules``: ``npm ci`` in ``tests/compat`` unless ``node_modules`` already matches
   ``package.json`` + ``package-lock.json`` (a stamp file records the hash). Missing ``node`` or
   ``npm`` fails the tests: they are never skipped.
2. ``compat_server``: ``python -m rivetkit serve tests/compat/app.py`` on a free loopback port with
   a temporary storage directory; ``compat_prefixed_server``: the same registry mounted under
   ``/api/rivet`` in a Starlette app run by uvicorn (``prefixed_app.py``).
3. ``compat_results``: one ``node scenarios.mjs`` process per encoding, all three at once, each
   running the selected scenarios; their ``@@compat`` result lines are parsed and handed to the
   parametrised tests in ``test_compat.py``.
4. ``compat_restart_results`` (scenario 20 only): a server of its own and one ``node
   restart.mjs`` process holding a connection per encoding; the fixture stops the server
   (SIGTERM), starts it again on the same port and storage, and tells the Node side over stdin
   when each step is done.

Every process started here is stopped (whole process group) at the end of the session.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

COMPAT_DIR = Path(__file__).resolve().parent
ROOT = COMPAT_DIR.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests._npm import npm_install
from tests._proc import ServerError, ServerProcess, free_port, start_process, start_server

MARKER = "@@compat "
RIVETKIT_VERSION = "2.3.19"
PREFIX = "/api/rivet"
NODE_RUN_TIMEOUT = 150.0  # seconds for one encoding's whole run (normally ~5 s)
# Scenarios that need their own server and Node process (not part of the scenarios.mjs runs).
RESTART_SCENARIO = 20
RESTART_RUN_TIMEOUT = 100.0  # the whole restart run (normally ~3 s)


def _selected_pairs(session: pytest.Session) -> set[tuple[str, int]]:
    """The (encoding, scenario) pairs of the compat tests this session runs (after -k, -m...)."""
    selected: set[tuple[str, int]] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or Path(str(item.fspath)).parent != COMPAT_DIR:
            continue
        params = callspec.params
        if "encoding" in params and "scenario" in params:
            selected.add((params["encoding"], params["scenario"]))
    return selected


def _main_pairs(session: pytest.Session) -> set[tuple[str, int]]:
    """The selected pairs that the scenarios.mjs runs cover."""
    return {pair for pair in _selected_pairs(session) if pair[1] != RESTART_SCENARIO}


# -- npm ---------------------------------------------------------------------------------------


def _installed_version() -> str | None:
    try:
        manifest = json.loads((COMPAT_DIR / "node_modules/rivetkit/package.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("version")


@pytest.fixture(scope="session")
def compat_node_modules() -> Path:
    """``tests/compat/node_modules`` with the pinned client installed."""
    modules = npm_install(COMPAT_DIR, what="the compat tests (they drive the official npm client)")
    version = _installed_version()
    if version != RIVETKIT_VERSION:
        pytest.fail(
            f"npm installed rivetkit {version!r}, expected {RIVETKIT_VERSION} "
            "(check package.json / package-lock.json)",
            pytrace=False,
        )
    return modules


# -- servers -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def compat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Our server, as users start it: ``python -m rivetkit serve tests/compat/app.py``."""
    base = tmp_path_factory.mktemp("compat-server")
    server = start_server(
        str(COMPAT_DIR / "app.py"), storage=base / "storage", log_path=base / "server.log", cwd=ROOT
    )
    try:
        server.wait_ready(30.0)
        yield server
    finally:
        server.stop()


@dataclass
class PrefixedServer:
    """The registry mounted under ``/api/rivet`` (``process`` is None when it failed to start)."""

    process: ServerProcess | None
    error: str | None


@pytest.fixture(scope="session")
def compat_prefixed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefixedServer]:
    """``prefixed_app:app`` under uvicorn. A failure here only fails the path-prefix checks."""
    base = tmp_path_factory.mktemp("compat-prefixed")
    port = free_port()
    process = start_process(
        [
            sys.executable, "-m", "uvicorn",
            "--app-dir", str(COMPAT_DIR), "prefixed_app:app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ],
        port=port,
        env={"RIVETKIT_STORAGE_PATH": str(base / "storage")},
        log_path=base / "server.log",
        cwd=ROOT,
        base_path=PREFIX,
    )  # fmt: skip
    try:
        try:
            process.wait_ready(30.0)
        except ServerError as exc:
            yield PrefixedServer(None, str(exc))
        else:
            yield PrefixedServer(process, None)
    finally:
        process.stop()


# -- Node runs ---------------------------------------------------------------------------------


@dataclass
class EncodingRun:
    """One ``node scenarios.mjs --encoding X`` process and what it printed."""

    encoding: str
    scenarios: list[int]
    argv: list[str]
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    lines: list[dict[str, Any]] = field(default_factory=list)
    other_stdout: str = ""
    stderr: str = ""

    def events(self, scenario: int) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("scenario") == scenario]

    def process_summary(self) -> str:
        fatal = [
            line for line in self.lines if line.get("type") in ("fatal", "unhandled_rejection")
        ]
        parts = [
            (
                f"node run for {self.encoding}: exit status {self.returncode}"
                f"{' (killed: timed out)' if self.timed_out else ''} after {self.seconds:.1f} s"
            ),
            f"command: {' '.join(self.argv)}",
        ]
        for line in fatal:
            parts.append(f"{line['type']}: {json.dumps(line.get('error'), indent=2)}")
        if self.stderr.strip():
            parts.append(f"stderr (tail):\n{self.stderr[-3000:]}")
        if self.other_stdout.strip():
            parts.append(f"client log (tail):\n{self.other_stdout[-3000:]}")
        return "\n".join(parts)


@dataclass
class CompatResults:
    runs: dict[str, EncodingRun]
    server: ServerProcess
    prefixed: PrefixedServer


def _node_env() -> dict[str, str]:
    # RIVET_* variables would change the client's endpoint, namespace or token under the tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVET_")}
    env["RIVET_LOG_LEVEL"] = "error"
    return env


def _run_node(runs: list[EncodingRun], log_dir: Path) -> None:
    procs: list[tuple[EncodingRun, subprocess.Popen[bytes], Path, Path, float]] = []
    for run in runs:
        out_path = log_dir / f"node-{run.encoding}.out"
        err_path = log_dir / f"node-{run.encoding}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen(
                run.argv,
                cwd=COMPAT_DIR,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=_node_env(),
                start_new_session=True,
            )
        procs.append((run, popen, out_path, err_path, time.monotonic()))
    deadline = time.monotonic() + NODE_RUN_TIMEOUT
    for run, popen, out_path, err_path, started in procs:
        try:
            popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            run.timed_out = True
        # Whatever happened, leave nothing of this process group behind.
        try:
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
                except ValueError:
                    other.append(raw)
            else:
                other.append(raw)
        run.other_stdout = "\n".join(other)
        run.stderr = err_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def compat_results(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    compat_node_modules: Path,
    compat_server: ServerProcess,
    compat_prefixed_server: PrefixedServer,
) -> CompatResults:
    """Run the selected scenarios, one Node process per encoding, concurrently."""
    selected = _main_pairs(request.session)
    by_encoding: dict[str, set[int]] = {}
    for encoding, scenario in selected:
        by_encoding.setdefault(encoding, set()).add(scenario)
    node = shutil.which("node") or "node"
    runs: list[EncodingRun] = []
    for encoding, scenarios in sorted(by_encoding.items()):
        ordered = sorted(scenarios)
        argv = [
            node,
            str(COMPAT_DIR / "scenarios.mjs"),
            "--endpoint", compat_server.url,
            "--encoding", encoding,
            "--scenarios", ",".join(map(str, ordered)),
            "--timeout", str(int(NODE_RUN_TIMEOUT - 10)),
        ]  # fmt: skip
        if compat_prefixed_server.process is not None:
            argv += ["--prefixed-endpoint", compat_prefixed_server.process.url]
        runs.append(EncodingRun(encoding, ordered, argv))
    _run_node(runs, tmp_path_factory.mktemp("compat-node"))
    return CompatResults({run.encoding: run for run in runs}, compat_server, compat_prefixed_server)


# -- scenario 20: server restart -------------------------------------------------------------


class _LineReader:
    """Marker lines of a child's stdout, read on a thread so the test can wait with a timeout."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if text.startswith(MARKER):
                try:
                    line = json.loads(text[len(MARKER) :])
                except ValueError:
                    self.other.append(text)
                    continue
                self.lines.append(line)
                self._queue.put(line)
            else:
                self.other.append(text)
        self._queue.put(None)

    def wait_for(self, pred: Any, timeout: float) -> dict[str, Any] | None:
        """The next line satisfying ``pred``; ``None`` on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if line is None:
                return None
            if pred(line):
                return line

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


@dataclass
class RestartRun:
    """What the restart fixture did, for the failure report."""

    steps: list[str] = field(default_factory=list)
    error: str | None = None


@pytest.fixture(scope="session")
def compat_restart_results(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    compat_node_modules: Path,
) -> CompatResults:
    """Scenario 20: connections survive a graceful server restart on the same port and storage."""
    encodings = sorted(
        {enc for enc, n in _selected_pairs(request.session) if n == RESTART_SCENARIO}
    ) or ["json", "cbor", "bare"]
    base = tmp_path_factory.mktemp("compat-restart")
    storage = base / "storage"
    port = free_port()
    target = str(COMPAT_DIR / "app.py")
    node = shutil.which("node") or "node"
    argv = [
        node, str(COMPAT_DIR / "restart.mjs"),
        "--endpoint", f"http://127.0.0.1:{port}",
        "--encodings", ",".join(encodings),
        "--timeout", str(int(RESTART_RUN_TIMEOUT - 5)),
    ]  # fmt: skip
    run = EncodingRun(",".join(encodings), [RESTART_SCENARIO], argv)
    log = RestartRun()
    first = start_server(
        target, storage=storage, port=port, log_path=base / "server-1.log", cwd=ROOT
    )
    second: ServerProcess | None = None
    err_path = base / "node.err"
    popen: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        first.wait_ready(30.0)
        with open(err_path, "wb") as err:
            popen = subprocess.Popen(
                argv,
                cwd=COMPAT_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=_node_env(),
                start_new_session=True,
            )
        reader = _LineReader(popen.stdout)
        deadline = started + RESTART_RUN_TIMEOUT

        def phase(name: str) -> bool:
            line = reader.wait_for(
                lambda ln: ln.get("type") in ("phase", "fatal") and ln.get("phase", name) == name,
                max(0.1, deadline - time.monotonic()),
            )
            if line is None or line.get("type") != "phase":
                log.error = f"the Node side never reached phase {name!r}"
                return False
            return True

        def tell(word: str) -> None:
            assert popen is not None and popen.stdin is not None
            try:
                popen.stdin.write(word.encode() + b"\n")
                popen.stdin.flush()
            except OSError as exc:  # the Node side died; its output says why
                log.error = f"could not tell the Node side {word!r}: {exc}"

        if phase("ready"):
            t0 = time.monotonic()
            code = first.stop(timeout=15.0)
            log.steps.append(
                f"server stopped (SIGTERM) in {time.monotonic() - t0:.2f} s, exit {code}"
            )
            tell("stopped")
            if phase("down"):
                t0 = time.monotonic()
                second = start_server(
                    target, storage=storage, port=port, log_path=base / "server-2.log", cwd=ROOT
                )
                second.wait_ready(30.0)
                log.steps.append(
                    f"server started again on port {port} in {time.monotonic() - t0:.2f} s"
                )
                tell("started")
                reader.wait_for(
                    lambda ln: ln.get("type") in ("done", "fatal"),
                    max(0.1, deadline - time.monotonic()),
                )
    except ServerError as exc:
        log.error = str(exc)
    finally:
        if popen is not None:
            try:
                popen.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                run.timed_out = True
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            popen.wait()
            run.returncode = popen.returncode
            reader.join(2.0)
            for pipe in (popen.stdin, popen.stdout):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass
            run.lines = list(reader.lines)
            run.other_stdout = "\n".join(reader.other)
        run.stderr = err_path.read_text(errors="replace") if err_path.exists() else ""
        run.seconds = time.monotonic() - started
        first.stop()
        if second is not None:
            second.stop()
    if log.error:
        run.other_stdout += f"\nrestart fixture: {log.error}"
    run.other_stdout += "\nrestart fixture steps: " + "; ".join(log.steps)
    runs = {}
    for encoding in encodings:
        view = EncodingRun(
            encoding, [RESTART_SCENARIO], argv, run.returncode, run.timed_out, run.seconds
        )
        view.lines = [ln for ln in run.lines if ln.get("encoding") in (encoding, None)]
        view.other_stdout, view.stderr = run.other_stdout, run.stderr
        runs[encoding] = view
    return CompatResults(runs, second or first, PrefixedServer(None, None))
