"""A richer example: a to-do list per owner, mounted inside a FastAPI application.

Shows creation input (``create_state`` sees it), a dataclass state, ephemeral ``vars``, user
errors with codes and metadata, connection params, and mounting the registry under a path
prefix next to ordinary routes.

Run::

    uvicorn examples.todos:app --port 8000

then call it with the official client at ``http://127.0.0.1:8000/api/rivet``::

    const client = createClient("http://127.0.0.1:8000/api/rivet");
    const list = client.todoList.getOrCreate(["alice"], { createWithInput: { owner: "Alice" } });
    await list.add("buy milk");
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import rivetkit
from rivetkit import ActionContext, ActorContext, UserError

MAX_ITEMS = 100


@dataclass
class Todo:
    id: int
    text: str
    done: bool = False


@dataclass
class TodoState:
    owner: str
    items: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1


todo_list = rivetkit.actor(
    "todoList",
    events={"changed": rivetkit.event(list)},
    options=rivetkit.ActorOptions(action_timeout=10.0),
)


@todo_list.create_state
def create_state(c: ActorContext, input: Any) -> TodoState:
    owner = input.get("owner") if isinstance(input, dict) else None
    if not isinstance(owner, str) or not owner:
        raise UserError("create the list with input {owner: <name>}", code="owner_required")
    return TodoState(owner=owner)


@todo_list.create_vars
def create_vars(c: ActorContext) -> dict[str, Any]:
    # Vars are rebuilt on every wake and never stored.
    return {"woke_at": int(time.time() * 1000)}


@todo_list.action
def add(c: ActionContext, text: str) -> dict[str, Any]:
    if not isinstance(text, str) or not text.strip():
        raise UserError("a to-do needs some text", code="empty_text")
    state: TodoState = c.state
    if len(state.items) >= MAX_ITEMS:
        raise UserError("the list is full", code="list_full", metadata={"max": MAX_ITEMS})
    todo = Todo(id=state.next_id, text=text.strip())
    state.next_id += 1
    state.items.append({"id": todo.id, "text": todo.text, "done": todo.done})
    c.broadcast("changed", state.items)
    return state.items[-1]


@todo_list.action
def toggle(c: ActionContext, todo_id: int) -> dict[str, Any]:
    for item in c.state.items:
        if item["id"] == todo_id:
            item["done"] = not item["done"]
            c.broadcast("changed", c.state.items)
            return item
    raise UserError(f"no to-do with id {todo_id}", code="not_found", metadata={"id": todo_id})


@todo_list.action
def items(c: ActionContext) -> dict[str, Any]:
    viewer = c.conn.params.get("viewer") if c.conn and isinstance(c.conn.params, dict) else None
    return {
        "owner": c.state.owner,
        "items": c.state.items,
        "viewer": viewer,
        "awake_since": c.vars["woke_at"],
    }


registry = rivetkit.setup(todo_list)


def create_app() -> Any:
    """A FastAPI app with the actors under ``/api/rivet`` next to a plain route."""
    from fastapi import FastAPI

    api = FastAPI(lifespan=registry.lifespan)

    @api.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    api.mount("/api/rivet", registry.asgi())
    return api


app = create_app()
