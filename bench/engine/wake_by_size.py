"""Wake time of an engine-hosted actor by the size of its database.

Every start of an actor in engine mode fetches its whole database from the engine (the first
128 pages, then 1 MiB batches, 4 in flight) into a local cache file, so the wake grows with the
database. This script starts the pinned ``rivet-engine`` on free loopback ports, hosts the
engine tests' ``notes`` actor in this process, grows one actor per size to about that many MiB
(rows of 60,000 bytes, so they spill over pages), then puts it to sleep and times the next
action (wake, fetch, one insert and a ``count(*)``) ``--reps`` times.

    .venv/bin/python bench/engine/wake_by_size.py                  # 0, 1, 8, 32, 64 MiB
    .venv/bin/python bench/engine/wake_by_size.py --sizes 0 16 --reps 9
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import rivetkit
from rivetkit.client import Client
from rivetkit.config import EngineConfig
from tests.engine.engine_app import notes
from tests.engine.engine_proc import Engine, engine_binary

ROW = 60_000  # below the default 64 KiB action body limit


async def measure(sizes: list[int], reps: int) -> None:
    with (tempfile.TemporaryDirectory(prefix="wake-by-size-") as scratch,
          Engine(Path(scratch) / "engine", binary=engine_binary()) as engine):
        tmp = Path(scratch)
        engine.put_runner_config("wake-by-size")
        registry = rivetkit.setup(notes, storage_path=tmp / "data")
        registry.use_engine(EngineConfig(endpoint=engine.endpoint, pool="wake-by-size"))
        await registry.start()
        await registry.driver.wait_ready(10)
        client = Client(engine.endpoint, pool_name="wake-by-size")
        try:
            print("| database | rows | wake + first action p50 | min | max |")
            print("|---|---|---|---|---|")
            for mib in sizes:
                handle = client.get_or_create("notes", [uuid.uuid4().hex])
                rows = mib * (1 << 20) // ROW
                for start in range(0, rows, 8):
                    await asyncio.gather(
                        *(handle.add("x" * ROW) for _ in range(min(8, rows - start)))
                    )
                timings = []
                for rep in range(reps):
                    await handle.go_to_sleep_notes()
                    await asyncio.sleep(1.0)  # the stop is done well before
                    started = time.perf_counter()
                    assert await handle.add("y") == rows + rep + 1
                    timings.append((time.perf_counter() - started) * 1000)
                print(f"| {mib} MiB | {rows} | {statistics.median(timings):.1f} ms "
                      f"| {min(timings):.1f} | {max(timings):.1f} |", flush=True)
        finally:
            await client.aclose()
            await registry.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1, 8, 32, 64],
                        help="database sizes in MiB")
    parser.add_argument("--reps", type=int, default=5, help="wakes per size")
    args = parser.parse_args()
    asyncio.run(measure(args.sizes, args.reps))


if __name__ == "__main__":
    main()
