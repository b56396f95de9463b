"""Start real server processes for tests (stdlib only).

A :class:`ServerProcess` is one child process listening on a loopback port: ``python -m rivetkit
serve TARGET`` by default (:func:`start_server`), or any command line that serves HTTP
(:func:`start_process`, e.g. uvicorn running an app that mounts the registry under a prefix).

The child runs in its own session (process group) so that ``kill()`` / ``stop()`` also reach any
children it spawned; its stdout and stderr go to a log file whose tail is attached to every error
this module raises.

Example::

    with start_server("tests/compat/app.py", storage=tmp_path / "data") as server:
        server.wait_ready(30)
        urllib.request.urlopen(f"{server.url}/metadata")
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["ServerError", "ServerProcess", "free_port", "start_process", "start_server"]

HOST = "127.0.0.1"
_LOG_TAIL_BYTES = 8000


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerError(RuntimeError):
    """The server process failed to start, died, or did not become ready in time."""


class ServerProcess:
    """A child process serving HTTP on ``127.0.0.1:port``.

    Args:
        argv: the full command line.
        port: the port the command listens on.
        log_path: file receiving the child's stdout and stderr.
        env: the complete environment of the child.
        cwd: working directory of the child (``None``: the current one).
        base_path: path prefix under which the server is mounted, e.g. ``"/api/rivet"``;
            part of :attr:`url` and of the readiness probe.
        remove_log: delete the log file in :meth:`stop` (for a temporary log the caller did
            not ask for; its tail is already part of every error raised before).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        base_path: str = "",
        remove_log: bool = False,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.log_path = Path(log_path)
        self.base_path = base_path.rstrip("/")
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._remove_log = remove_log
        self._popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        """Launch the process (does not wait for readiness)."""
        if self._popen is not None:
            raise ServerError("server process already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self._require_popen().pid

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` without the base path."""
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The endpoint clients use: origin plus base path, no trailing slash."""
        return self.origin + self.base_path

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has ended, else ``None``."""
        return self._require_popen().poll()

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def wait_ready(self, timeout: float = 30.0, *, path: str = "/health") -> None:
        """Poll ``GET {url}{path}`` until it answers 200.

        Raises:
            ServerError: the process exited, or ``timeout`` seconds passed; the message carries
                the tail of the log.
        """
        probe = self.url + path
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while True:
            code = self.returncode
            if code is not None:
                raise ServerError(
                    f"server exited with status {code} before becoming ready\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(probe, timeout=2.0) as response:
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
            except (OSError, urllib.error.URLError) as exc:
                last_error = repr(exc)
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"server not ready at {probe} after {timeout:g} s (last: {last_error})\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, as far as the server can tell)."""
        popen = self._require_popen()
        self._signal_group(signal.SIGKILL)
        popen.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, then SIGKILL it if it is still alive after ``timeout`` s.

        Returns:
            The exit status of the main process (negative for a signal), or ``None`` if it was
            never started.
        """
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Also reap any child the server left behind in its group.
        self._signal_group(signal.SIGKILL)
        status = self._popen.wait()
        if self._remove_log:
            self.log_path.unlink(missing_ok=True)
        return status

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The last ``max_bytes`` of the log, framed for inclusion in an error message."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - max_bytes))
                text = log.read().decode("utf-8", "replace")
        except OSError as exc:
            text = f"(log unavailable: {exc})"
        return f"--- server log {self.log_path} (tail) ---\n{text}\n--- end of server log ---"

    def __enter__(self) -> Self:
        if self._popen is None:
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
        state = "not started" if self._popen is None else f"pid={self._popen.pid}"
        return f"<ServerProcess {self.url} {state}>"

    # -- internals -----------------------------------------------------------------------------

    def _require_popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise ServerError("server process not started")
        return self._popen

    def _signal_group(self, sig: signal.Signals) -> None:
        popen = self._require_popen()
        try:
            # start_new_session=True made the child a group leader: its pgid is its pid.
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            if popen.poll() is None:
                popen.send_signal(sig)


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    merged["PYTHONUNBUFFERED"] = "1"
    if env:
        merged.update(env)
    return merged


def _default_log_path(port: int) -> Path:
    fd, name = tempfile.mkstemp(prefix=f"rivetkit-server-{port}-", suffix=".log")
    os.close(fd)
    return Path(name)


def start_process(
    argv: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    log_path: Path | None = None,
    base_path: str = "",
) -> ServerProcess:
    """Launch an arbitrary server command line that listens on ``127.0.0.1:port``.

    ``env`` is added to the current environment. Returns the started process; call
    :meth:`ServerProcess.wait_ready` before using it.
    """
    server = ServerProcess(
        argv,
        port=port,
        log_path=log_path or _default_log_path(port),
        env=_child_env(env),
        cwd=cwd,
        base_path=base_path,
        remove_log=log_path is None,
    )
    return server.start()


def start_server(
    target: str,
    *,
    storage: Path,
    port: int | None = None,
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> ServerProcess:
    """Launch ``python -m rivetkit serve TARGET`` on 127.0.0.1.

    Args:
        target: ``path/to/file.py[:attr]`` or ``module:attr``, as the CLI takes it.
        storage: data directory of the server (created if missing).
        port: port to listen on; ``None`` picks a free one.
        env: variables added to the current environment.
        extra_args: further CLI arguments.
        log_path: where stdout and stderr go; ``None``: a new temporary file.
        cwd: working directory; ``None``: the current one.

    Returns:
        The started process (not yet ready: call :meth:`ServerProcess.wait_ready`).
    """
    port = free_port() if port is None else port
    storage = Path(storage)
    storage.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "rivetkit",
        "serve",
        str(target),
        "--host",
        HOST,
        "--port",
        str(port),
        "--storage",
        str(storage),
        *extra_args,
    ]
    return start_process(argv, port=port, env=env, cwd=cwd, log_path=log_path)
