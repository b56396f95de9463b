"""The Python client of RivetKit actors: async first, with a blocking twin in
:mod:`rivetkit.client.sync` that has the same names.

Example::

    from rivetkit.client import Client

    async with Client("http://127.0.0.1:6420") as client:
        counter = client.get_or_create("counter", ["my-counter"])
        print(await counter.increment(1))

Layering: :mod:`._protocol` is sans-I/O (configuration, URLs, ``rvt-*`` parameters, error
decoding, retry rules); :mod:`._aio` performs the requests with aiohttp; :mod:`.sync` drives
:mod:`._aio` from a private event loop in a background thread.
"""

from __future__ import annotations

from .._protocol.encoding import Encoding as Encoding
from ..errors import ActorError as ActorError
from ._aio import ActorHandle as ActorHandle
from ._aio import Client as Client

__all__ = ["ActorError", "ActorHandle", "Client", "Encoding"]
