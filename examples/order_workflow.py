"""Orders: a durable workflow per order (price, charge, ship, wait for delivery, ask for feedback).

Each ``order`` actor (key ``[order id]``) runs one workflow. Its completed steps are never run
again, whatever happens to the process: the card is charged once even if the server is killed
right after, and a transient payment error is retried with backoff. If shipping fails for good,
the charge is refunded (a rollback handler). Between steps the actor sleeps: a queue message
("delivered") or the feedback timer wakes it.

    rivetkit serve examples/order_workflow.py

    # then, from Python:
    h = client.get_or_create("order", ["o-1"])
    await h.send("place", {"items": ["book", "pen"], "card": "4242"})
    await h.status()                    # {"status": "shipped", "total": 14, ...}
    await h.send("delivered", {})
"""

from __future__ import annotations

from typing import Any

import rivetkit
from rivetkit import ActionContext

PRICES = {"book": 12, "pen": 2, "lamp": 40}
FEEDBACK_DELAY = 24 * 3600.0  # seconds after delivery
DELIVERY_TIMEOUT = 14 * 24 * 3600.0  # an order not delivered within two weeks is "lost"


class PaymentGateway:
    """Stands in for a payment provider (a real one would be called over HTTP)."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, int]] = []
        self.refunds: list[str] = []
        self.fail_next = 0  # transient failures to simulate

    async def charge(self, card: str, amount: int) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("payment provider unavailable")
        self.charges.append((card, amount))
        return f"ch_{len(self.charges)}"

    async def refund(self, charge_id: str) -> None:
        self.refunds.append(charge_id)


class Warehouse:
    def __init__(self) -> None:
        self.shipped: list[list[str]] = []
        self.out_of_stock: set[str] = set()

    def ship(self, items: list[str]) -> str:
        missing = [item for item in items if item in self.out_of_stock]
        if missing:
            raise rivetkit.CriticalError(f"out of stock: {', '.join(missing)}")
        self.shipped.append(items)
        return f"parcel-{len(self.shipped)}"


gateway = PaymentGateway()
warehouse = Warehouse()

order = rivetkit.actor(
    "order",
    state={"status": "waiting", "total": None, "charge": None, "parcel": None},
    queues={"place": rivetkit.queue(dict), "delivered": rivetkit.queue(dict)},
    events={"status": rivetkit.event(str)},
    options=rivetkit.ActorOptions(sleep_timeout=10.0),
)


def set_status(
    ctx: rivetkit.WorkflowContext, status: str, fields: dict[str, Any] | None = None
) -> None:
    ctx.state["status"] = status
    ctx.state.update(fields or {})
    ctx.broadcast("status", status)


def price(items: list[str]) -> int:
    unknown = [item for item in items if item not in PRICES]
    if unknown:
        raise rivetkit.CriticalError(f"unknown items: {', '.join(unknown)}")
    return sum(PRICES[item] for item in items)


@order.run
@rivetkit.workflow
async def fulfil(ctx: rivetkit.WorkflowContext) -> str:
    placed = await ctx.queue.next("placed", names=["place"])
    items: list[str] = placed.body["items"]
    total = await ctx.step("price", price, items)
    await ctx.step("priced", set_status, ctx, "priced", {"total": total})

    await ctx.rollback_checkpoint("payment")

    async def charge() -> str:
        charge_id = await gateway.charge(placed.body["card"], total)
        set_status(ctx, "charged", {"charge": charge_id})
        return charge_id

    async def refund(charge_id: str) -> None:
        await gateway.refund(charge_id)
        set_status(ctx, "refunded")

    await ctx.step("charge", charge, max_retries=5, retry_backoff_base=1.0, rollback=refund)
    parcel = await ctx.step("ship", warehouse.ship, items)
    await ctx.step("shipped", set_status, ctx, "shipped", {"parcel": parcel})

    delivered = await ctx.queue.next("delivery", names=["delivered"], timeout=DELIVERY_TIMEOUT)
    if delivered is None:
        await ctx.step("lost", set_status, ctx, "lost")
        return "lost"
    await ctx.step("delivered", set_status, ctx, "delivered")
    await ctx.sleep("feedback-delay", FEEDBACK_DELAY)
    await ctx.step("ask-feedback", set_status, ctx, "feedback requested")
    return "done"


@order.action
def status(c: ActionContext) -> dict[str, Any]:
    return dict(c.state)


registry = rivetkit.setup(order)

if __name__ == "__main__":
    registry.run()
