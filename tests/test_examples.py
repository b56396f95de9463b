"""The example actors work, driven through ``rivetkit.testing`` with a fake clock."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from rivetkit.errors import ActorError

pytestmark = pytest.mark.anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


async def test_reminders_fire_on_time_across_sleep(actor_test: Any) -> None:
    from reminders import registry

    async with actor_test(registry) as t:
        h = t.client.get_or_create("reminders", ["ada"])
        first = await h.remind_in("stretch", 60)
        second = await h.remind_at("lunch", t.clock.now_ms() + 3_600_000)
        assert [r["text"] for r in await h.pending()] == ["stretch", "lunch"]
        actor_id = await h.resolve()

        await t.clock.advance(seconds=30)  # idle for sleep_timeout (10 s): asleep
        assert actor_id not in t.registry.driver.awake
        await t.clock.advance(seconds=30)  # the first alarm wakes it
        assert [r["id"] for r in await h.pending()] == [second]

        assert await h.cancel(second) is True
        assert await h.cancel(first) is False  # already fired
        assert await h.pending() == []
        with pytest.raises(ActorError) as info:
            await h.remind_in("", 5)
        assert info.value.code == "empty_text"
