"""The public surface is curated: this test pins it."""

from __future__ import annotations

import rivetkit


def test_top_level_exports() -> None:
    assert sorted(rivetkit.__all__) == [
        "ActionContext",
        "ActorContext",
        "ActorDefinition",
        "ActorError",
        "ActorOptions",
        "BigInt",
        "Conn",
        "DefinitionError",
        "Registry",
        "RegistryConfig",
        "RivetError",
        "UserError",
        "__version__",
        "actor",
        "event",
        "setup",
    ]
    for name in rivetkit.__all__:
        assert getattr(rivetkit, name) is not None
