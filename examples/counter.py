"""The counter: the smallest useful actor, and the one the benchmarks call.

Run it with ``rivetkit serve examples/counter.py`` (or ``python examples/counter.py``), then from
JavaScript ``createClient().counter.getOrCreate(["a"]).increment(1)`` or from Python::

    async with rivetkit.client.Client() as client:
        print(await client.get_or_create("counter", ["a"]).action("increment", 1))
"""

from __future__ import annotations

from typing import Any

import rivetkit
from rivetkit import ActionContext

counter = rivetkit.actor(
    "counter",
    state={"count": 0},
    events={"count": rivetkit.event(int)},
)


@counter.action
def increment(c: ActionContext, amount: int) -> int:
    """Add ``amount``, tell subscribers the new count, return it."""
    c.state["count"] += amount
    c.broadcast("count", c.state["count"])
    return int(c.state["count"])


@counter.action(name="getCount")
def get_count(c: ActionContext) -> int:
    return int(c.state["count"])


@counter.action
def noop(c: ActionContext, x: Any = None) -> Any:
    """Return the argument unchanged (used to measure the bare round trip)."""
    return x


registry = rivetkit.setup(counter)

if __name__ == "__main__":
    registry.run()
