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

Every process started here is stopped (whole process group) at the end of the session.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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

from tests._proc import ServerError, ServerProcess, free_port, start_process, start_server

MARKER = "@@compat "
RIVETKIT_VERSION = "2.3.19"
PREFIX = "/api/rivet"
NODE_RUN_TIMEOUT = 150.0  # seconds for one encoding's whole run (normally ~5 s)
NPM_TIMEOUT = 900.0


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


# -- npm ---------------------------------------------------------------------------------------


def _install_hash() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        path = COMPAT_DIR / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    return digest.hexdigest()


def _installed_version() -> str | None:
    try:
        manifest = json.loads((COMPAT_DIR / "node_modules/rivetkit/package.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("version")


@pytest.fixture(scope="session")
def compat_node_modules() -> Path:
    """``tests/compat/node_modules`` with the pinned client installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "the compat tests drive the official npm client and need `node` (20+) and `npm` on "
            f"PATH; found node={node!r} npm={npm!r}. Install Node.js (e.g. apt-get install nodejs "
            "npm) and run again.",
            pytrace=False,
        )
    stamp = COMPAT_DIR / "node_modules" / ".compat-install-stamp"
    wanted = _install_hash()
    lock_path = Path(tempfile.gettempdir()) / (
        "rivetkit-compat-npm-" + hashlib.sha256(str(COMPAT_DIR).encode()).hexdigest()[:12] + ".lock"
    )
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be installing right now
        current = stamp.read_text().strip() if stamp.exists() else None
        if current == wanted and _installed_version() == RIVETKIT_VERSION:
            return COMPAT_DIR / "node_modules"
        attempts = [[npm, "install", "--no-audit", "--no-fund"]]
        if (COMPAT_DIR / "package-lock.json").exists():
            # `npm ci` refuses a lockfile without the other platforms' optional binaries, which a
            # registry mirror may not serve (then npm cannot record them); `npm install` still
            # installs exactly the locked versions.
            attempts.insert(0, [npm, "ci", "--no-audit", "--no-fund"])
        failures: list[str] = []
        for argv in attempts:
            try:
                done = subprocess.run(
                    argv,
                    cwd=COMPAT_DIR,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=False,
                    text=True,
                    timeout=NPM_TIMEOUT,
                )
            except subprocess.TimeoutExpired:
                failures.append(f"`{' '.join(argv)}` took over {NPM_TIMEOUT:g} s")
                continue
            if done.returncode == 0:
                break
            failures.append(
                f"`{' '.join(argv)}` failed with status {done.returncode}:\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
        else:
            pytest.fail(
                f"npm could not install {COMPAT_DIR}:\n" + "\n".join(failures), pytrace=False
            )
        version = _installed_version()
        if version != RIVETKIT_VERSION:
            pytest.fail(
                f"npm installed rivetkit {version!r}, expected {RIVETKIT_VERSION} "
                "(check package.json / package-lock.json)",
                pytrace=False,
            )
        stamp.write_text(wanted + "\n")
    return COMPAT_DIR / "node_modules"


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
    selected = _selected_pairs(request.session)
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
