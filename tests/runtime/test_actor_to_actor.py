"""``c.client()``: actors call each other through the registry's in-process client."""

from __future__ import annotations

from typing import Any

import pytest

import rivetkit
from rivetkit import ActionContext, UserError
from rivetkit.errors import ActorError

pytestmark = pytest.mark.anyio


def definitions() -> list[rivetkit.ActorDefinition]:
    inventory = rivetkit.actor("inventory", state={"stock": 3})

    @inventory.action
    def reserve(c: ActionContext, qty: int) -> int:
        if qty > c.state["stock"]:
            raise UserError("out of stock", code="out_of_stock", metadata={"left": c.state["stock"]})
        c.state["stock"] -= qty
        return int(c.state["stock"])

    order = rivetkit.actor("order", state={"items": 0})

    @order.action
    async def place(c: ActionContext, qty: int) -> dict[str, Any]:
        stock = c.client().get_or_create("inventory", ["main"])
        left = await stock.reserve(qty)
        c.state["items"] += qty
        return {"items": c.state["items"], "left": left}

    @order.action
    async def place_for(c: ActionContext, key: str, qty: int) -> int:
        # get_for_id through the client's own resolve
        handle = c.client().get_or_create("inventory", [key])
        actor_id = await handle.resolve()
        return int(await c.client().get_for_id("inventory", actor_id).reserve(qty))

    return [inventory, order]


async def test_actor_calls_another_actor_in_process(actor_test: Any) -> None:
    async with actor_test(*definitions()) as t:
        order = t.client.get_or_create("order", ["o1"])
        assert await order.place(2) == {"items": 2, "left": 1}
        with pytest.raises(ActorError) as info:
            await order.place(5)
        # The callee's UserError crosses both hops with its code and metadata.
        assert (info.value.group, info.value.code) == ("user", "out_of_stock")
        assert info.value.metadata == {"left": 1}
        assert await order.place_for("other", 1) == 2
        # One shared client per registry, no socket involved.
        assert t.registry.in_process_client() is t.registry.in_process_client()
