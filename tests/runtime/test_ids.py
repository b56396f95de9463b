"""Random ids: UUID version 4 strings, unique, and not shared with a forked child."""

from __future__ import annotations

import os
import uuid

import pytest

from rivetkit._runtime.ids import random_uuid


def test_ids_are_version_4_uuids_and_unique_across_batches() -> None:
    ids = [random_uuid() for _ in range(2000)]  # several 256-id batches
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_the_parents_next_ids() -> None:
    random_uuid()  # a batch is drawn and mostly unused
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        try:
            os.write(write, "\n".join(random_uuid() for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = set(pipe.read().decode().split("\n"))
    os.waitpid(pid, 0)
    parent = {random_uuid() for _ in range(4)}
    assert len(child) == 4
    assert not child & parent
