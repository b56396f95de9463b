"""examples/order_workflow.py, driven through the in-process client on a fake clock."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import snapshot

pytestmark = pytest.mark.anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))


@pytest.fixture
def example() -> Any:
    import order_workflow  # type: ignore[import-not-found]

    order_workflow.gateway.__init__()
    order_workflow.warehouse.__init__()
    return order_workflow


async def test_order_is_charged_once_shipped_and_followed_up(actor_test: Any, example: Any) -> None:
    example.gateway.fail_next = 2  # two transient payment errors: retried with backoff
    async with actor_test(example.registry) as t:
        h = t.client.get_or_create("order", ["o-1"])
        await h.send("place", {"items": ["book", "pen"], "card": "4242"})
        await t.clock.settle()
        assert (await h.status())["status"] == "priced"
        await t.clock.advance(seconds=3)  # retries after 1 s and 2 s
        state = await h.status()
        assert state == {"status": "shipped", "total": 14, "charge": "ch_1", "parcel": "parcel-1"}
        assert example.gateway.charges == [("4242", 14)]

        aid = await h.resolve()
        await t.clock.advance(hours=2)  # waiting for delivery: asleep
        assert aid not in t.registry.driver.awake
        await h.send("delivered", {})
        await t.clock.settle()
        assert (await h.status())["status"] == "delivered"
        await t.clock.advance(days=1)
        assert (await h.status())["status"] == "feedback requested"
        assert snapshot(t, aid)["workflowOutput"] == "done"
        assert example.gateway.charges == [("4242", 14)]  # replays never charged again


async def test_failed_shipping_refunds_the_charge(actor_test: Any, example: Any) -> None:
    example.warehouse.out_of_stock.add("lamp")
    async with actor_test(example.registry) as t:
        h = t.client.get_or_create("order", ["o-2"])
        await h.send("place", {"items": ["lamp"], "card": "1111"})
        await t.clock.settle()
        state = await h.status()
        assert state["status"] == "refunded"
        assert example.gateway.refunds == ["ch_1"]
        info = snapshot(t, await h.resolve())
        assert info["workflowState"] == "failed"
        assert "out of stock: lamp" in info["workflowError"]["message"]


async def test_undelivered_order_times_out_durably(actor_test: Any, example: Any) -> None:
    async with actor_test(example.registry) as t:
        h = t.client.get_or_create("order", ["o-3"])
        await h.send("place", {"items": ["pen"], "card": "2222"})
        await t.clock.advance(days=13)
        assert (await h.status())["status"] == "shipped"
        await t.clock.advance(days=1)
        assert (await h.status())["status"] == "lost"


async def test_all_examples_registry_serves_the_order_workflow(
    actor_test: Any, example: Any
) -> None:
    import all as everything  # examples/all.py

    assert set(everything.registry.definitions) == {"counter", "todoList", "reminders", "order"}
    async with actor_test(everything.registry) as t:
        h = t.client.get_or_create("order", ["o-4"])
        await h.send("place", {"items": ["book"], "card": "3333"})
        await t.clock.settle()
        assert (await h.status())["status"] == "shipped"
        assert example.gateway.charges == [("3333", 12)]
