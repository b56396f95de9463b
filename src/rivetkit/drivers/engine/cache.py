"""The local cache files of one runtime process's engine-hosted actors.

Each actor generation runs SQLite on a local copy of its database (``sqlite.DepotStore``). The
copies live in a directory of their own per process, under ``<storage>/engine-cache/``: two
processes given the same storage path never touch each other's files. A process holds an
exclusive ``flock`` on ``<name>.lock`` next to its directory for as long as it runs; a
directory whose lock anyone can take belonged to a process that is gone, and the next process
to start removes it.

When an actor goes to sleep cleanly, its cache may be *kept* (up to ``keep_bytes`` in all, the
least recently kept dropped first) with the head txid it is at, so that the actor's next
generation, if the engine starts it in this process again, skips the fetch when the engine's
head is still that one.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
from pathlib import Path

__all__ = ["CacheDir"]

log = logging.getLogger("rivetkit.storage")

_LOCK_SUFFIX = ".lock"


class CacheDir:
    """This process's directory of actor caches and the caches it keeps between generations.

    Create with :meth:`claim`; :meth:`close` removes the directory.
    """

    def __init__(self, root: Path, name: str, lock_fd: int, keep_bytes: int) -> None:
        self.path = root / name
        self._lock_path = root / (name + _LOCK_SUFFIX)
        self._lock_fd: int | None = lock_fd
        self.keep_bytes = keep_bytes
        self._kept: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self.kept_bytes = 0

    @classmethod
    def claim(cls, root: Path, *, keep_bytes: int) -> CacheDir:
        """Remove the directories of processes that are gone, then make and lock this one's.

        Raises:
            OSError: the directory cannot be made or locked.
        """
        root.mkdir(parents=True, exist_ok=True)
        sweep(root)
        while True:
            name = f"{os.getpid()}-{secrets.token_hex(4)}"
            lock_path = root / (name + _LOCK_SUFFIX)
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, lock_path):  # not swept between the open and the lock
                break
            os.close(fd)
        try:
            (root / name).mkdir()
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            raise
        return cls(root, name, fd, keep_bytes)

    def file_for(self, actor_id: str) -> Path:
        return self.path / f"{actor_id}.db"

    # -- kept caches -----------------------------------------------------------------------

    def keep(self, actor_id: str, head_txid: int) -> None:
        """Keep the actor's cache file (just closed at ``head_txid``) for its next generation,
        dropping the least recently kept ones beyond :attr:`keep_bytes` (this one too if it is
        larger on its own)."""
        self.take(actor_id)
        path = self.file_for(actor_id)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        self._kept[actor_id] = (head_txid, size)
        self.kept_bytes += size
        while self.kept_bytes > self.keep_bytes and self._kept:
            oldest = next(iter(self._kept))
            self.take(oldest)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.file_for(oldest))

    def take(self, actor_id: str) -> int | None:
        """The head txid of the actor's kept cache, no longer counted as kept (the file stays
        for the caller: a new generation opens or overwrites it); ``None`` if none is kept."""
        entry = self._kept.pop(actor_id, None)
        if entry is None:
            return None
        self.kept_bytes -= entry[1]
        return entry[0]

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the directory (kept caches included) and release its lock."""
        self._kept.clear()
        self.kept_bytes = 0
        shutil.rmtree(self.path, ignore_errors=True)
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)
            os.close(fd)


def sweep(root: Path) -> None:
    """Remove the cache directories under ``root`` whose process is gone (their lock is free)."""
    for lock_path in root.glob("*" + _LOCK_SUFFIX):
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process's
            if not _same_file(fd, lock_path):
                continue  # swept by another process meanwhile
            shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            log.info("removed the actor caches of a stopped process path=%s",
                     lock_path.with_suffix(""))
        finally:
            os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
