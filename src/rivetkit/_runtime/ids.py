"""Random identifiers: version 4 UUID strings for connections, schedule events and workflow
entries.

``str(uuid.uuid4())`` makes a system call (``getrandom``) and a ``UUID`` object per id; an
HTTP action opens a connection, so that was one system call per action. :func:`random_uuid`
takes the same randomness (``os.urandom``) 4 KiB at a time and formats the string directly.
The unused rest is dropped in a forked child, which must not repeat its parent's ids.
"""

from __future__ import annotations

import os
import threading
from typing import Final

__all__ = ["random_uuid"]

_BATCH: Final = 4096  # bytes of randomness drawn at a time (256 ids)

_lock = threading.Lock()
_pool = b""
_pos = 0


def random_uuid() -> str:
    """A random (version 4, RFC 4122 variant) UUID string, as ``str(uuid.uuid4())`` makes."""
    global _pool, _pos
    with _lock:
        if _pos + 16 > len(_pool):
            _pool = os.urandom(_BATCH)
            _pos = 0
        h = _pool[_pos : _pos + 16].hex()
        _pos += 16
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _drop_pool() -> None:
    global _pool, _pos
    _pool = b""
    _pos = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_pool)
