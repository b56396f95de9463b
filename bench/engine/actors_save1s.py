"""``bench/actors.py`` with the official runtime's state durability: ``rivetkit serve`` target.

The official runtime (npm ``rivetkit`` 2.3.19) saves an actor's state at most once per
``stateSaveInterval`` (default 1000 ms) and answers actions without waiting for it; ours, by
default, commits every state change before the action's answer (in engine mode: one SQLite commit
acknowledged by the engine per answered action, or per event-loop tick on a hot actor). This
registry is the same as ``bench/actors.py`` except that the ``counter`` (the very functions of
``examples/counter.py``) has ``state_save_interval=1.0``, so that an engine-mode run can separate
the cost of that durability promise from the rest of the runtime::

    bench/run.sh --targets ours-engine,official --ours-app bench/engine/actors_save1s.py

``sleepy``, ``ticker`` and ``worker`` are the objects of ``bench/actors.py``, unchanged.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import rivetkit
from rivetkit import ActorOptions

_ACTORS = Path(__file__).resolve().parent.parent / "actors.py"


def _load_bench_actors() -> Any:
    name = "_rivetkit_bench_actors"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, _ACTORS)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


_bench = _load_bench_actors()
_example = _bench._example

counter = rivetkit.actor(
    "counter",
    state={"count": 0},
    events={"count": rivetkit.event(int)},
    options=ActorOptions(state_save_interval=1.0),
)
counter.action(_example.increment)
counter.action(name="getCount")(_example.get_count)
counter.action(_example.noop)

registry = rivetkit.setup(counter, _bench.sleepy, _bench.ticker, _bench.worker)
