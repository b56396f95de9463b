"""The compat registry mounted under ``/api/rivet`` inside a host Starlette app.

Scenario 1 points the official client at ``http://127.0.0.1:PORT/api/rivet``. Run with::

    python -m uvicorn --app-dir tests/compat prefixed_app:app --host 127.0.0.1 --port PORT

Storage comes from ``RIVETKIT_STORAGE_PATH``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route


def _load_registry() -> object:
    # Load the sibling app.py by path so this works whatever the import root is.
    spec = importlib.util.spec_from_file_location(
        "compat_actors", Path(__file__).with_name("app.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.registry


registry = _load_registry()


async def host_root(request: object) -> PlainTextResponse:
    return PlainTextResponse("host app")


app = Starlette(
    routes=[
        Route("/", host_root),
        Mount("/api/rivet", app=registry.asgi()),  # type: ignore[attr-defined]
    ],
    lifespan=registry.lifespan,  # type: ignore[attr-defined]
)
