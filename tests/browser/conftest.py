"""Fixtures of the browser test (client-protocol §15 scenario 30).

Session-wide, in order:

1. ``browser_node_modules``: ``npm ci`` (falling back to ``npm install``) in ``tests/browser``
   unless ``node_modules`` already matches ``package.json`` + ``package-lock.json``; missing
   ``node``/``npm`` fails the test, as in the compat suite.
2. ``chromium_path``: Debian's ``/usr/bin/chromium``; when missing and running as root,
   ``apt-get update`` + ``apt-get install -y chromium``; when it still cannot be had, the test is
   skipped with the reason. No browser is ever downloaded by npm or Playwright.
3. ``browser_run``: bundles the page (``build.mjs`` → ``dist/``), starts our server
   (``tests/compat/app.py``) and, on another port, a static server for the page (another origin,
   so CORS applies), then runs ``drive.mjs`` (playwright-core driving Chromium, one page per
   encoding) and parses its ``@@browser`` lines. Every process is stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BROWSER_DIR = Path(__file__).resolve().parent
ROOT = BROWSER_DIR.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests._npm import file_lock, npm_install
from tests._proc import ServerProcess, free_port, start_process, start_server

MARKER = "@@browser "
ENCODINGS = ("json", "cbor", "bare")
CHROMIUM = "/usr/bin/chromium"
APT_TIMEOUT = 900.0
DRIVE_TIMEOUT = 100.0  # the whole Chromium run (normally ~5 s)


@pytest.fixture(scope="session")
def browser_node_modules() -> Path:
    """``tests/browser/node_modules`` as the lockfile pins it."""
    # Never let Playwright fetch a browser of its own.
    return npm_install(
        BROWSER_DIR, what="the browser test", env={"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
    )


def _chromium_works(path: str) -> str | None:
    """``None`` when ``path --version`` runs, else why not."""
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} --version: {exc}"
    if done.returncode != 0:
        return f"{path} --version exited {done.returncode}: {done.stderr[-500:]}"
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium, installed with apt-get when missing and running as root."""
    with file_lock("browser-apt", BROWSER_DIR):
        notes: list[str] = []
        if not os.path.exists(CHROMIUM):
            if os.geteuid() != 0:
                pytest.skip(
                    f"{CHROMIUM} is missing and installing it needs root (apt-get install chromium)"
                )
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
                try:
                    done = subprocess.run(
                        argv,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        text=True,
                        timeout=APT_TIMEOUT,
                        check=False,
                        env=env,
                    )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    notes.append(f"`{' '.join(argv)}`: {exc}")
                    break
                if done.returncode != 0:
                    notes.append(
                        f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr[-1000:]}"
                    )
                    break
        if not os.path.exists(CHROMIUM):
            pytest.skip(f"Chromium is not available at {CHROMIUM}: " + "; ".join(notes))
        broken = _chromium_works(CHROMIUM)
        if broken:
            pytest.skip(f"Chromium at {CHROMIUM} does not run: {broken}")
    return CHROMIUM


def _kill_by_cmdline(marker: str) -> list[int]:
    """SIGKILL the processes whose command line contains ``marker`` (a path unique to this run)."""
    killed: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


@dataclass
class BrowserRun:
    """The ``drive.mjs`` run and what it printed."""

    argv: list[str]
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    lines: list[dict[str, Any]] = field(default_factory=list)
    other_stdout: str = ""
    stderr: str = ""
    server: ServerProcess | None = None

    def summary(self) -> str:
        parts = [
            (
                f"drive.mjs: exit status {self.returncode}"
                f"{' (killed: timed out)' if self.timed_out else ''} after {self.seconds:.1f} s"
            ),
            f"command: {' '.join(self.argv)}",
        ]
        for line in self.lines:
            if line.get("type") == "fatal":
                parts.append(f"fatal: {json.dumps(line, indent=1)}")
        if self.stderr.strip():
            parts.append(f"stderr (tail):\n{self.stderr[-3000:]}")
        if self.other_stdout.strip():
            parts.append(f"stdout (tail):\n{self.other_stdout[-2000:]}")
        if self.server is not None:
            parts.append(self.server.log_tail(3000))
        return "\n".join(parts)


@pytest.fixture(scope="session")
def browser_run(
    tmp_path_factory: pytest.TempPathFactory,
    browser_node_modules: Path,
    chromium_path: str,
) -> Iterator[BrowserRun]:
    base = tmp_path_factory.mktemp("browser")
    node = shutil.which("node") or "node"
    dist = BROWSER_DIR / "dist"
    with file_lock("browser-build", BROWSER_DIR):
        built = subprocess.run(
            [node, str(BROWSER_DIR / "build.mjs"), str(dist)],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if built.returncode != 0:
        pytest.fail(f"bundling the page failed:\n{built.stdout}\n{built.stderr}", pytrace=False)
    server = start_server(
        str(ROOT / "tests/compat/app.py"),
        storage=base / "storage",
        log_path=base / "server.log",
        cwd=ROOT,
    )
    page_port = free_port()
    pages = start_process(
        [
            sys.executable, "-m", "http.server", str(page_port),
            "--bind", "127.0.0.1", "--directory", str(dist),
        ],
        port=page_port,
        log_path=base / "pages.log",
    )  # fmt: skip
    profile = base / "chromium-profile"
    argv = [
        node, str(BROWSER_DIR / "drive.mjs"),
        "--page", f"{pages.url}/index.html",
        "--endpoint", server.url,
        "--chromium", chromium_path,
        "--user-data-dir", str(profile),
        "--encodings", ",".join(ENCODINGS),
        "--timeout", str(int(DRIVE_TIMEOUT - 5)),
    ]  # fmt: skip
    run = BrowserRun(argv, server=server)
    try:
        server.wait_ready(30.0)
        pages.wait_ready(30.0, path="/index.html")
        out_path, err_path = base / "drive.out", base / "drive.err"
        started = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            popen = subprocess.Popen(
                argv,
                cwd=BROWSER_DIR,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={k: v for k, v in os.environ.items() if not k.startswith("RIVET_")},
                start_new_session=True,
            )
        try:
            popen.wait(timeout=DRIVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            run.timed_out = True
            # SIGTERM first: Playwright closes the browser it launched on SIGTERM.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=5.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        # Playwright starts Chromium in a process group of its own; anything still running with
        # this run's profile directory on its command line is ours.
        _kill_by_cmdline(str(profile))
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
        run.other_stdout = "\n".join(other)
        run.stderr = err_path.read_text(errors="replace")
        yield run
    finally:
        pages.stop()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
