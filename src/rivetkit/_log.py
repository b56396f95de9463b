"""Named loggers. The library never configures logging; applications do."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

server_logger = logging.getLogger("rivetkit.server")
actor_logger = logging.getLogger("rivetkit.actor")
client_logger = logging.getLogger("rivetkit.client")
storage_logger = logging.getLogger("rivetkit.storage")


class ActorLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``c.log``: a logger that attaches the actor's name, key and id to every record.

    Fields are added as ``extra`` (``record.actor``, ``record.actor_key``, ``record.actor_id``)
    so structured handlers can pick them up, and appended to the message for plain handlers.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return f"{msg} actor={extra['actor']} key={extra['actor_key']} actor_id={extra['actor_id']}", kwargs
