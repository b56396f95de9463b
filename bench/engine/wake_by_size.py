"""Wake time of an engine-hosted actor by the size of its database, ours and the official runtime.

Our runtime runs an engine-hosted actor on a local copy of its database. A start in the process
the actor slept in uses the copy it kept, when the engine's head is still the one it was kept
at (``python``); otherwise (``python-fetch``: the same runtime keeping no copy, as when the
engine starts the actor in another process) a database up to 4 MiB is fetched whole (the first
128 pages, then 1 MiB batches, 4 in flight), a bigger one opens lazily (the internal tables
first; the rest loads behind while SQL loads the pages it reads). The official runtime
(npm ``rivetkit`` 2.3.19, ``typescript``) reads pages from the engine as SQLite asks for them.
This script starts the pinned ``rivet-engine`` on free loopback ports and the runtimes as
processes, each in its own pool, hosting the same ``counter`` actor
(``tests/engine/compat_counter_app.py`` and its twin ``ts_runtime/ts_host.mjs``). For each size
and runtime it grows one actor's ``notes`` table to about that many MiB (rows of 60,000 bytes,
so they spill over pages), then ``--reps`` times: puts it to sleep, waits until the engine has
it asleep, and times the next action through the engine's gateway: ``get`` (reads the state
only), then, after another sleep, ``note_add`` (one insert and a ``count(*)`` of the notes).

    .venv/bin/python bench/engine/wake_by_size.py                  # 0, 1, 8, 32, 64 MiB, all
    .venv/bin/python bench/engine/wake_by_size.py --sizes 0 16 --reps 9 --runtimes python
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from rivetkit.client import Client
from tests.engine.engine_proc import Engine, engine_binary
from tests.engine.helpers import wait_actor
from tests.engine.runtimes import PyRuntime, Runtime, TsRuntime, ts_modules

ROW = 60_000  # below the default 64 KiB action body limit of both runtimes
FILL_BATCH = 8  # inserts in flight while growing a database
# python-fetch: ours keeping no cache of a sleeping actor, i.e. every wake fetches the database,
# as when the engine starts the actor in another process than the one it slept in.
RUNTIMES = ("python", "python-fetch", "typescript")
# The actions timed after a wake: one reading only the state, one using the notes table.
FIRST_ACTIONS: dict[str, tuple[object, ...]] = {"get": (), "note_add": ("y",)}
FIRST_ACTIONS_SHOWN = {"get": "`get` (state)", "note_add": "`note_add` (insert + count)"}


def _runtime(name: str, engine: Engine, scratch: Path) -> Runtime:
    pool = f"wake-{name}"
    engine.put_runner_config(pool)
    if name.startswith("python"):
        runtime = PyRuntime(engine, pool, scratch, scratch / f"{name}-storage")
        runtime.name = name
        if name == "python-fetch":
            runtime.env["RIVETKIT_ENGINE_KEEP_CACHE_BYTES"] = "0"
        return runtime
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is required for the official runtime (or: --runtimes python)")
    return TsRuntime(engine, pool, scratch, node, ts_modules("bench/engine/wake_by_size.py"))


async def _wakes(
    engine: Engine, runtime: Runtime, mib: int, reps: int
) -> tuple[int, dict[str, list[float]]]:
    """Grow a new actor to ``mib`` MiB, then time ``reps`` wakes by each first action;
    (rows, milliseconds by action)."""
    async with Client(engine.endpoint, pool_name=runtime.pool) as client:
        handle = client.get_or_create("counter", [uuid.uuid4().hex])
        rows = mib * (1 << 20) // ROW
        for start in range(0, rows, FILL_BATCH):
            batch = min(FILL_BATCH, rows - start)
            await asyncio.gather(*(handle.action("note_add", "x" * ROW) for _ in range(batch)))
        actor_id = await handle.resolve()
        timings: dict[str, list[float]] = {action: [] for action in FIRST_ACTIONS}
        notes = rows
        for _ in range(reps):
            for action, args in FIRST_ACTIONS.items():
                await handle.action("go_to_sleep")
                await wait_actor(engine, actor_id, lambda a: a.get("sleep_ts") is not None, 60)
                await asyncio.sleep(0.2)  # the runtime is done with the stop well before
                started = time.perf_counter()
                result = await handle.action(action, *args)
                timings[action].append((time.perf_counter() - started) * 1000)
                if action == "note_add":
                    notes += 1
                    if result != notes:
                        raise AssertionError(f"{runtime.name}: {result} notes, not {notes}")
        return rows, timings


async def measure(sizes: list[int], reps: int, names: list[str]) -> None:
    with (tempfile.TemporaryDirectory(prefix="wake-by-size-") as scratch,
          Engine(Path(scratch) / "engine", binary=engine_binary()) as engine):
        runtimes = [_runtime(name, engine, Path(scratch)) for name in names]
        try:
            for runtime in runtimes:
                await asyncio.to_thread(runtime.start)
            print("| database | rows | runtime | first action | wake + action p50 | min | max |")
            print("|---|---|---|---|---|---|---|")
            for mib in sizes:
                for runtime in runtimes:
                    rows, by_action = await _wakes(engine, runtime, mib, reps)
                    for action, timings in by_action.items():
                        print(f"| {mib} MiB | {rows} | {runtime.name} | {FIRST_ACTIONS_SHOWN[action]} "
                              f"| {statistics.median(timings):.1f} ms "
                              f"| {min(timings):.1f} | {max(timings):.1f} |", flush=True)
        finally:
            for runtime in runtimes:
                try:
                    await asyncio.to_thread(runtime.stop)
                finally:
                    runtime.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1, 8, 32, 64],
                        help="database sizes in MiB")
    parser.add_argument("--reps", type=int, default=5, help="wakes per size")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help="comma list of " + ",".join(RUNTIMES))
    args = parser.parse_args()
    names = [n for n in args.runtimes.split(",") if n]
    unknown = set(names) - set(RUNTIMES)
    if unknown or not names:
        parser.error(f"--runtimes: unknown {sorted(unknown)}; choose from {RUNTIMES}")
    asyncio.run(measure(args.sizes, args.reps, names))


if __name__ == "__main__":
    main()
