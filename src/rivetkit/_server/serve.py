"""uvicorn integration: the server class used by ``Registry.run()`` and ``Registry.serve()``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from ..registry import Registry

__all__ = ["RegistryServer"]


class RegistryServer(uvicorn.Server):
    """uvicorn's server, closing client connections with ``ws.going_away`` before shutdown.

    uvicorn itself would close every WebSocket with 1012 and no reason, which the official
    client does not retry before ``Init``; ``ws.going_away`` tells every client to come back.
    """

    def __init__(self, registry: Registry, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.registry = registry

    async def shutdown(self, sockets: Any = None) -> None:
        await self.registry.close_connections()
        await super().shutdown(sockets)
