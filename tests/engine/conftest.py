"""Fixtures of the engine-mode tests: a real ``rivet-engine`` 2.3.19 on loopback.

* ``engine`` (session): one shared engine with default settings, started once (about 0.15 s);
  pool ``default`` already has a runner config.
  Tests isolate themselves with their own pool (``pool``) and envoy keys instead of restarting
  it; the engine does not route an actor of one pool to another pool's envoys.
* ``module_engine`` (module): a fresh engine for one test module, for tests that need a pristine
  engine; the module may set ``ENGINE_OPTIONS = {...}`` (keyword arguments of
  :class:`~tests.engine.engine_proc.Engine`, e.g. ``{"admin_token": "secret"}``).
* ``engine_factory`` (function): ``engine_factory(admin_token=..., pegboard={...})`` starts
  another engine for one test (auth, short ping timeouts...); all are stopped after the test.
* ``pool`` (function): a fresh pool name with a runner config on the shared engine.
* ``bare_codegen`` (session): ``tools/bare_codegen.py`` loaded as a module.

The binary comes from ``tests/engine/package.json`` (npm ``@rivetkit/engine-cli``, installed on
first use by :func:`tests._npm.npm_install`). No test here is skipped when node/npm are missing:
they fail with the reason.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ENGINE_TESTS = Path(__file__).resolve().parent
ROOT = ENGINE_TESTS.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.engine.engine_proc import Engine, engine_binary


@pytest.fixture(scope="session")
def rivet_engine_binary() -> Path:
    """Path of the pinned ``rivet-engine`` (npm install on first use)."""
    return engine_binary()


@pytest.fixture(scope="session")
def engine(rivet_engine_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The shared engine of the session (default settings, no auth)."""
    with Engine(tmp_path_factory.mktemp("engine"), binary=rivet_engine_binary) as eng:
        yield eng


@pytest.fixture(scope="module")
def module_engine(
    request: pytest.FixtureRequest,
    rivet_engine_binary: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Engine]:
    """A fresh engine for the requesting module (options: the module's ``ENGINE_OPTIONS``)."""
    options: dict[str, Any] = dict(getattr(request.module, "ENGINE_OPTIONS", {}))
    with Engine(
        tmp_path_factory.mktemp("module-engine"), binary=rivet_engine_binary, **options
    ) as eng:
        yield eng


@pytest.fixture
def engine_factory(
    rivet_engine_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Engine]]:
    """Factory starting extra engines (``Engine`` keyword options); stopped after the test."""
    started: list[Engine] = []

    def factory(**options: Any) -> Engine:
        eng = Engine(tmp_path_factory.mktemp("engine-extra"), binary=rivet_engine_binary, **options)
        started.append(eng)
        return eng.start()

    yield factory
    for eng in started:
        eng.stop()


@pytest.fixture
def pool(engine: Engine) -> str:
    """A new pool of the shared engine, with a (normal, not serverless) runner config."""
    name = f"pool-{uuid.uuid4().hex[:12]}"
    engine.put_runner_config(name)
    return name


@pytest.fixture(scope="session")
def bare_codegen() -> ModuleType:
    """``tools/bare_codegen.py`` (not a package) imported from its path."""
    path = ROOT / "tools" / "bare_codegen.py"
    spec = importlib.util.spec_from_file_location("rivetkit_tools_bare_codegen", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module
