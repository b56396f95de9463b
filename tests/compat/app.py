"""Actors used by the compatibility suite (driven by the official npm client, see scenarios.mjs).

Served with ``python -m rivetkit serve tests/compat/app.py`` (and mounted under ``/api/rivet`` by
``prefixed_app.py``). Every action returns what it saw, so the Node side can compare real values.
"""

from __future__ import annotations

from typing import Any

import rivetkit
from rivetkit import ActionContext, ActorContext, UserError

counter = rivetkit.actor("counter", events={"count": rivetkit.event(int)})


@counter.create_state
def create_state(c: ActorContext, input: Any) -> dict[str, Any]:
    start = input.get("start", 0) if isinstance(input, dict) else 0
    return {"count": start, "input": input}


@counter.create_vars
def create_vars(c: ActorContext) -> dict[str, Any]:
    return {"before_connect_params": []}


@counter.on_before_connect
def before_connect(c: ActorContext, params: Any) -> None:
    if isinstance(params, dict) and params.get("reject"):
        raise UserError("connection rejected", code="rejected", metadata={"why": "test"})
    c.vars["before_connect_params"].append(params)


@counter.create_conn_state
def conn_state(c: ActorContext, params: Any) -> dict[str, Any]:
    return {"params": params, "made_by": "create_conn_state"}


@counter.action
def increment(c: ActionContext, amount: int) -> int:
    c.state["count"] += amount
    c.broadcast("count", c.state["count"])
    return c.state["count"]


@counter.action(name="getCount")
def get_count(c: ActionContext) -> int:
    return c.state["count"]


@counter.action
def echo(c: ActionContext, value: Any) -> Any:
    return value


@counter.action
def triple(c: ActionContext, a: Any, b: Any, d: Any) -> list[Any]:
    return [a, b, d]


@counter.action
def noop(c: ActionContext, value: Any) -> None:
    return None


@counter.action(name="returnNothing")
def return_nothing(c: ActionContext) -> None:
    pass


@counter.action
def whoami(c: ActionContext) -> dict[str, Any]:
    return {"actorId": c.actor_id, "name": c.name, "key": list(c.key)}


@counter.action(name="math.add")
def math_add(c: ActionContext, a: Any, b: Any) -> Any:
    return a + b


@counter.action(name="odd name/ü?#%")
def odd_name(c: ActionContext) -> str:
    return "odd"


@counter.action(name="getKey")
def get_key(c: ActionContext) -> list[str]:
    return list(c.key)


@counter.action(name="getInput")
def get_input(c: ActionContext) -> Any:
    return c.state["input"]


@counter.action(name="getParams")
def get_params(c: ActionContext) -> Any:
    return c.conn.params


@counter.action(name="getConnState")
def get_conn_state(c: ActionContext) -> Any:
    return c.conn.state


@counter.action(name="getConnId")
def get_conn_id(c: ActionContext) -> str:
    return c.conn.id


@counter.action(name="getBeforeConnectParams")
def get_before_connect_params(c: ActionContext) -> list[Any]:
    return c.vars["before_connect_params"]


@counter.action
def fail(c: ActionContext) -> None:
    raise UserError("boom happened", code="my_code", metadata={"a": 1})


@counter.action
def boom(c: ActionContext) -> None:
    raise RuntimeError("secret detail that must not leak")


# "ns" is served too: scenario 1 uses the URL-auth endpoint form http://ns:tok@host.
registry = rivetkit.setup(counter, namespaces=("default", "ns"))
