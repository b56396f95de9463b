"""Install a test folder's pinned npm packages once, shared by every pytest process (stdlib only).

``npm ci`` is tried first; it refuses a lockfile that lacks other platforms' optional binaries
(which a registry mirror may not serve, so npm cannot record them), and then ``npm install``
installs exactly the locked versions. A stamp file keyed on ``package.json`` and the lockfile
skips the install when nothing changed; a file lock keeps concurrent pytest runs from installing
at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

__all__ = ["file_lock", "npm_install"]

NPM_TIMEOUT = 900.0


@contextlib.contextmanager
def file_lock(name: str, folder: Path) -> Iterator[None]:
    """An exclusive lock named after ``name`` and ``folder``, shared across processes."""
    path = Path(tempfile.gettempdir()) / (
        f"rivetkit-{name}-" + hashlib.sha256(str(folder).encode()).hexdigest()[:12] + ".lock"
    )
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _install_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        path = folder / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    return digest.hexdigest()


def npm_install(
    folder: Path, *, what: str, env: Mapping[str, str] | None = None
) -> Path:
    """``folder/node_modules`` as the lockfile pins it, installing when needed.

    Args:
        folder: the directory holding ``package.json`` (and ``package-lock.json``).
        what: who needs it, for the error message (``"the compat tests"``).
        env: variables added to npm's environment.

    Fails the test (not an error) with npm's output when node/npm are missing or npm fails.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            f"{what} need `node` (20+) and `npm` on PATH; found node={node!r} npm={npm!r}. "
            "Install Node.js (e.g. apt-get install nodejs npm) and run again.",
            pytrace=False,
        )
    modules = folder / "node_modules"
    stamp = modules / ".rivetkit-install-stamp"
    wanted = _install_hash(folder)
    with file_lock("npm", folder):
        if stamp.exists() and stamp.read_text().strip() == wanted:
            return modules
        attempts = [[npm, "install", "--no-audit", "--no-fund"]]
        if (folder / "package-lock.json").exists():
            attempts.insert(0, [npm, "ci", "--no-audit", "--no-fund"])
        failures: list[str] = []
        for argv in attempts:
            try:
                done = subprocess.run(
                    argv,
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=False,
                    text=True,
                    timeout=NPM_TIMEOUT,
                    env={**os.environ, **(env or {})},
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
            pytest.fail(f"npm could not install {folder}:\n" + "\n".join(failures), pytrace=False)
        stamp.write_text(wanted + "\n")
    return modules
