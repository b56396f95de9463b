"""Testing actors with pytest: an in-process registry with real storage and a fake clock.

``actor_test`` (a pytest fixture, registered through the ``pytest11`` entry point) runs a registry
in the test's event loop with its storage in a fresh temporary directory, a
:class:`FakeClock`, and a client that reaches the registry in process (no sockets). Time stands
still until the test advances it, so sleep timers, schedules, cron jobs and timeouts fire exactly
when the test says, with no real waiting::

    import rivetkit.testing
    from myapp import registry

    async def test_reminder(actor_test):
        async with actor_test(registry) as t:
            reminder = t.client.get_or_create("reminder", ["r1"])
            await reminder.remind_in(300, "stand up")
            await t.clock.advance(minutes=5)
            assert await reminder.fired() == ["stand up"]

Outside pytest, :func:`run_test_registry` is the same thing as an async context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._runtime.fake_clock import FakeClock
from .definition import ActorDefinition
from .registry import Registry

if TYPE_CHECKING:
    from .client import Client

__all__ = ["ActorTest", "FakeClock", "actor_test", "run_test_registry"]


@dataclasses.dataclass(slots=True)
class ActorTest:
    """What ``actor_test(...)`` yields.

    Attributes:
        registry: the running registry (a copy of the one given, with test storage and clock).
        client: an async client connected to it in process.
        clock: the fake clock every timer of the registry runs on.
        storage_path: the registry's storage directory (real SQLite files).
    """

    registry: Registry
    client: Client
    clock: FakeClock
    storage_path: Path


@contextlib.asynccontextmanager
async def run_test_registry(
    target: Registry | ActorDefinition,
    *definitions: ActorDefinition,
    clock: FakeClock | None = None,
    storage_path: str | Path | None = None,
    **config: Any,
) -> AsyncIterator[ActorTest]:
    """Run a registry in process for a test; stop it (committing every actor) on exit.

    Args:
        target: a registry (its definitions and settings are reused) or actor definitions.
        clock: the fake clock to use (a new one starting at the real time by default).
        storage_path: storage directory (a new temporary directory by default, removed after).
        **config: registry settings overriding the registry's own.
    """
    from .client import Client

    if isinstance(target, Registry):
        defs = list(target.definitions.values()) + list(definitions)
        base = dataclasses.asdict(target.config)
    else:
        defs = [target, *definitions]
        base = {}
    clock = clock or FakeClock()
    with contextlib.ExitStack() as stack:
        if storage_path is None:
            storage_path = stack.enter_context(tempfile.TemporaryDirectory(prefix="rivetkit-test-"))
        base.update(config)
        base["storage_path"] = Path(storage_path)
        from .config import RegistryConfig

        registry = Registry(defs, RegistryConfig(**base), clock=clock)
        await registry.start()
        try:
            client = Client(app=registry.asgi())
            try:
                yield ActorTest(registry, client, clock, Path(storage_path))
            finally:
                await client.aclose()
        finally:
            # Stopping runs each actor's graceful shutdown, bounded by its grace period on the
            # fake clock: let fake time pass until it is done.
            stopping = asyncio.ensure_future(registry.stop())
            try:
                for _ in range(3600):
                    done, _pending = await asyncio.wait({stopping}, timeout=0.01)
                    if done:
                        break
                    await clock.advance(seconds=1)
            finally:
                await stopping


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed to use the fixture
    pass
else:

    @pytest.fixture
    def actor_test(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[ActorTest]]:
        """Factory fixture: ``async with actor_test(registry_or_definitions, **config) as t:``.

        Storage goes to the test's ``tmp_path`` unless ``storage_path`` is given; pass
        ``clock=`` to share one :class:`FakeClock` between several registries.
        """

        def factory(
            target: Registry | ActorDefinition, *definitions: ActorDefinition, **config: Any
        ) -> contextlib.AbstractAsyncContextManager[ActorTest]:
            config.setdefault("storage_path", tmp_path / "rivetkit")
            return run_test_registry(target, *definitions, **config)

        return factory
