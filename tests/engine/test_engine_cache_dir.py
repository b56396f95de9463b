"""The per-process directory of engine-mode actor caches (``drivers/engine/cache.py``): real
files, real locks, a second real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rivetkit.config import EngineConfig
from rivetkit.drivers.engine.cache import CacheDir

_HOLDER = """
import sys, time
from pathlib import Path
from rivetkit.drivers.engine.cache import CacheDir
caches = CacheDir.claim(Path(sys.argv[1]), keep_bytes=0)
caches.file_for("actor").write_bytes(b"x")
print(caches.path, flush=True)
sys.stdin.read()  # until the test closes stdin or kills this process
caches.close()
"""


def _holder(root: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_each_process_has_its_own_directory_and_a_dead_ones_is_removed(tmp_path: Path) -> None:
    root = tmp_path / "engine-cache"
    live, live_dir = _holder(root)
    dead, dead_dir = _holder(root)
    try:
        dead.kill()  # no chance to clean up: its directory stays behind
        dead.wait(10)
        assert (dead_dir / "actor.db").exists()

        mine = CacheDir.claim(root, keep_bytes=0)
        assert mine.path not in (live_dir, dead_dir)
        assert not dead_dir.exists() and not dead_dir.with_suffix(".lock").exists()
        assert (live_dir / "actor.db").exists()  # still locked by its process

        mine.file_for("actor").write_bytes(b"mine")
        mine.close()
        assert not mine.path.exists() and not mine.path.with_suffix(".lock").exists()
    finally:
        assert live.stdin is not None
        live.stdin.close()  # a clean stop removes its own directory
        assert live.wait(10) == 0
        dead.kill()
        dead.wait(10)
        for proc in (live, dead):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            proc.stdout.close()
    assert not live_dir.exists()
    assert sorted(p.name for p in root.iterdir()) == []


def test_kept_caches_stay_within_their_budget(tmp_path: Path) -> None:
    caches = CacheDir.claim(tmp_path, keep_bytes=10_000)
    try:
        for name, size in (("a", 4000), ("b", 4000), ("c", 4000)):
            caches.file_for(name).write_bytes(b"\0" * size)
            caches.keep(name, head_txid=7)
        # "a", the least recently kept, made room for "c"
        assert not caches.file_for("a").exists()
        assert caches.kept_bytes == 8000
        assert caches.take("a") is None
        assert caches.take("b") == 7  # no longer counted; the file is the caller's now
        assert caches.file_for("b").exists() and caches.kept_bytes == 4000

        caches.file_for("big").write_bytes(b"\0" * 20_000)
        caches.keep("big", head_txid=1)  # larger than the budget on its own: not kept
        assert not caches.file_for("big").exists()
        assert not caches.file_for("c").exists()
        assert caches.kept_bytes == 0

        caches.keep("gone", head_txid=1)  # no file: nothing to keep
        assert caches.take("gone") is None
    finally:
        caches.close()


def test_the_keep_budget_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EngineConfig().keep_cache_bytes == 1 << 30
    assert EngineConfig(keep_cache_bytes=0).keep_cache_bytes == 0
    for bad in (-1, 1.5, "1"):
        with pytest.raises(ValueError, match="keep_cache_bytes must be an int >= 0"):
            EngineConfig(keep_cache_bytes=bad)  # type: ignore[arg-type]
    monkeypatch.setenv("RIVETKIT_ENGINE_KEEP_CACHE_BYTES", "0")
    assert EngineConfig().keep_cache_bytes == 0
    monkeypatch.setenv("RIVETKIT_ENGINE_KEEP_CACHE_BYTES", "a lot")
    with pytest.raises(ValueError, match="RIVETKIT_ENGINE_KEEP_CACHE_BYTES must be"):
        EngineConfig()
