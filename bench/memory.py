"""Memory per awake and per sleeping actor, in-process (no server, no HTTP).

    .venv/bin/python bench/memory.py                       # N=10000, 3 reps
    .venv/bin/python bench/memory.py --n 100000 --reps 3   # ~7 min per rep
    .venv/bin/python bench/memory.py --n 10000 --reps 1 --trace   # + Python heap by allocation site

Each repetition runs in a fresh child process (so RSS starts from the same point) with a fresh
storage directory under --dir (default: a temporary directory, removed afterwards), the event loop
the server uses (uvloop) and a registry holding the counter of ``examples/counter.py`` (same state,
events and action functions; idle sleep pushed out to an hour so actors created early stay awake
while the others are created: see ``bench/actors.py: counter_for_memory``). Phases:

A. warm-up: W actors (default 2,000, more than ``max_open_databases``) are created, woken, run
   ``increment(1)`` and are put to sleep. Measurement M0.
B. awake: N new actors are created and woken, each runs ``increment(1)``, 100 at a time. M1.
   Per awake actor: (M1 - M0) / N.
C. asleep: all N are put to sleep (``driver.stop_actor(instance, "sleep")``, 100 at a time). M2,
   then M2t after ``malloc_trim(0)`` (glibc keeps freed memory mapped; trimming shows what is
   really still in use). Per sleeping actor: (M2t - M0) / N.
D. sleeping population, directly: K more actors (default 20,000) each created, woken,
   ``increment(1)``, put to sleep (100 at a time, so never more than 100 awake), with
   ``tracemalloc`` started at the beginning of D: the Python memory still allocated at the end
   of D, divided by K, is what each additional sleeping actor costs in the process.

Every measurement runs ``gc.collect()`` first and records: ``VmRSS`` / ``RssAnon`` from
/proc/self/status, ``sys.getallocatedblocks()`` (live Python allocations), SQLite's own heap
(``apsw.memory_used()``: page caches and statements of the open databases, at most
``max_open_databases`` of them) and the open database count. Disk per sleeping actor: the bytes
of ``actors/**`` (each actor's ``.db`` + ``-wal``) plus ``registry.db`` / ``journal.db`` (+
``-wal``), divided by the number of actors, both apparent size and allocated blocks.

``--trace`` also runs tracemalloc during B (about 2x slower) and prints the Python heap per awake
actor and the top allocation sites per actor.

Output: one JSON object per repetition on stdout (``--json FILE`` appends them to FILE too), then
a summary with medians [min..max].
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def proc_status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM in bytes."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


_libc: Any = None


def malloc_trim() -> bool:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def measure(drv: Any, label: str, *, trim: bool = False) -> dict[str, Any]:
    import apsw

    gc.collect()
    gc.collect()
    if trim:
        malloc_trim()
    m: dict[str, Any] = {"label": label, **proc_status()}
    m["blocks"] = sys.getallocatedblocks()
    m["sqlite_heap"] = apsw.memory_used()
    m["open_dbs"] = len(drv.pool)
    m["awake"] = len(drv.awake)
    if tracemalloc.is_tracing():
        m["traced"] = tracemalloc.get_traced_memory()[0]
    return m


def disk_usage(root: Path) -> dict[str, int]:
    """Apparent bytes and allocated bytes of the actor files and of the shared files."""
    out = {
        "actor_files": 0,
        "actor_bytes": 0,
        "actor_alloc": 0,
        "shared_bytes": 0,
        "shared_alloc": 0,
    }
    for dirpath, _, files in os.walk(root / "actors"):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out["actor_files"] += 1
            out["actor_bytes"] += st.st_size
            out["actor_alloc"] += st.st_blocks * 512
    for name in ("registry.db", "registry.db-wal", "journal.db", "journal.db-wal"):
        try:
            st = os.stat(root / name)
        except FileNotFoundError:
            continue
        out["shared_bytes"] += st.st_size
        out["shared_alloc"] += st.st_blocks * 512
    return out


def _where(frame: Any) -> str:
    name = frame.filename
    for cut in ("/site-packages/", "/src/", "/lib/python3"):
        if cut in name:
            name = name.split(cut)[-1]
            break
    return f"{name}:{frame.lineno}"


def top_sites(stats: list[Any], n: int, limit: int = 25) -> list[dict[str, Any]]:
    """The allocation sites that grew most between two tracemalloc snapshots, per actor."""
    return [
        {
            "site": " < ".join(_where(f) for f in reversed(s.traceback)),
            "bytes_per_actor": s.size_diff / n,
            "blocks_per_actor": s.count_diff / n,
        }
        for s in stats[:limit]
    ]


async def wake(drv: Any, keys: list[str], batch: int) -> None:
    async def one(key: str) -> None:
        rec, _ = drv.get_or_create("default", "counter", [key], None)
        inst = await drv.instance(rec)
        await inst.call_action("increment", [1], None)

    for i in range(0, len(keys), batch):
        await asyncio.gather(*(one(k) for k in keys[i : i + batch]))


def install_forget_shim(drv: Any) -> None:
    """Bench-side workaround, NOT the runtime's code: ``LocalDriver._forget_awake`` scans the whole
    ``_by_key`` dict on every stop (O(awake actors); ~8 ms per stop with 10k awake, quadratic over
    a mass sleep), which would make phase C of a 100k run take over an hour. This replaces it,
    on this driver object only, by the same removal through a reverse map built once. Valid
    only while no actor starts (phase C); removed again by :func:`remove_forget_shim`.
    Memory is unaffected (the same entries are removed)."""
    reverse = {id(inst): key for key, inst in drv._by_key.items()}

    def forget(instance: Any) -> None:
        if drv.awake.get(instance.actor_id) is instance:
            del drv.awake[instance.actor_id]
        key = reverse.pop(id(instance), None)
        if key is not None and drv._by_key.get(key) is instance:
            del drv._by_key[key]

    drv._forget_awake = forget


def remove_forget_shim(drv: Any) -> None:
    drv.__dict__.pop("_forget_awake", None)


async def sleep_all(
    drv: Any, batch: int, timings: list[tuple[int, float]], shim_after: int = -1
) -> None:
    """Put every awake actor to sleep, ``batch`` at a time; record (awake count, s per stop).
    With ``shim_after >= 0``, :func:`install_forget_shim` after that many stops."""
    stopped = 0
    while drv.awake:
        if stopped == shim_after:
            install_forget_shim(drv)
        n_awake = len(drv.awake)
        insts = []
        for inst in drv.awake.values():
            insts.append(inst)
            if len(insts) == batch:
                break
        t0 = time.perf_counter()
        for inst in insts:
            drv.stop_actor(inst, "sleep")
        # The stop is done when the file is compacted too (a worker thread folds the WAL in).
        await asyncio.gather(*(drv.wait_stopped(inst.actor_id) for inst in insts))
        timings.append((n_awake, (time.perf_counter() - t0) / len(insts)))
        stopped += len(insts)
    remove_forget_shim(drv)


async def child(args: argparse.Namespace) -> dict[str, Any]:
    from actors import counter_for_memory

    import rivetkit

    root = Path(tempfile.mkdtemp(prefix="rivetkit-mem-", dir=args.dir))
    reg = rivetkit.setup(counter_for_memory(), storage_path=root)
    res: dict[str, Any] = {"n": args.n, "warmup": args.warmup, "k": args.k, "storage": str(root)}
    try:
        await reg.start()
        drv = reg.driver
        res["max_open_databases"] = drv.pool.max_open
        res["m_start"] = measure(drv, "start")
        t = time.perf_counter()
        await wake(drv, [f"w{i}" for i in range(args.warmup)], args.batch)
        await sleep_all(drv, args.batch, [])
        res["m0"] = measure(drv, "M0 after warm-up", trim=True)
        res["t_warmup_s"] = time.perf_counter() - t

        if args.trace:
            tracemalloc.start(args.trace_frames)
            snap0 = tracemalloc.take_snapshot()
        t = time.perf_counter()
        await wake(drv, [f"a{i}" for i in range(args.n)], args.batch)
        res["t_wake_s"] = time.perf_counter() - t
        res["m1"] = measure(drv, "M1 N awake")
        if args.trace:
            snap1 = tracemalloc.take_snapshot()
            res["m1"]["traced"] = tracemalloc.get_traced_memory()[0]
            res["top_sites"] = top_sites(snap1.compare_to(snap0, "traceback"), args.n)
            del snap0, snap1
            tracemalloc.stop()

        timings: list[tuple[int, float]] = []
        t = time.perf_counter()
        await sleep_all(drv, args.batch, timings, args.forget_shim_after)
        res["t_sleep_s"] = time.perf_counter() - t
        res["forget_shim_after"] = args.forget_shim_after
        # per-stop cost while many actors are awake vs when few are (with the shim: the first
        # stops, made before it was installed, against the last ones)
        if args.forget_shim_after >= 0:
            k = max(1, args.forget_shim_after // args.batch)
            head = [s for _, s in timings[:k]]
        else:
            head = [s for n, s in timings if n > args.n * 0.9]
        tail = [s for n, s in timings if n <= args.n * 0.1]
        res["sleep_ms_per_actor_first10pct"] = 1000 * statistics.mean(head) if head else None
        res["sleep_ms_per_actor_last10pct"] = 1000 * statistics.mean(tail) if tail else None
        res["m2"] = measure(drv, "M2 all asleep")
        res["m2t"] = measure(drv, "M2t all asleep, malloc_trim", trim=True)
        res["disk"] = disk_usage(root)
        res["actors_on_disk"] = args.warmup + args.n

        if args.k:
            tracemalloc.start(args.trace_frames)
            d0 = measure(drv, "D0", trim=True)
            dsnap0 = tracemalloc.take_snapshot() if args.trace else None
            t = time.perf_counter()
            checkpoints = [d0]
            step = max(args.batch, args.k // 4)
            done = 0
            while done < args.k:
                chunk = min(step, args.k - done)
                for i in range(done, done + chunk, args.batch):
                    keys = [f"s{j}" for j in range(i, min(i + args.batch, done + chunk))]
                    await wake(drv, keys, args.batch)
                    await sleep_all(drv, args.batch, [])
                done += chunk
                checkpoints.append(measure(drv, f"D {done}", trim=True))
            res["t_population_s"] = time.perf_counter() - t
            if dsnap0 is not None:
                res["population_top_sites"] = top_sites(
                    tracemalloc.take_snapshot().compare_to(dsnap0, "traceback"), args.k
                )
                del dsnap0
            tracemalloc.stop()
            res["population"] = checkpoints
    finally:
        await reg.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return res


async def directory_child(args: argparse.Namespace) -> dict[str, Any]:
    """``--directory M``: the directory of M sleeping actors, without their files.

    ``registry.db`` gets M rows of actors that ran and slept (as ``stop_actor`` leaves them; their
    actor files are not created: a sleeping actor's file is only opened when it wakes, and its size
    is measured by the normal mode). Then a registry opens that storage in this process: open time,
    RSS and SQLite heap before and after, lookups of existing keys, and 1,000 real actors
    created, woken, ``increment(1)`` and put to sleep next to the M rows (after 200 untimed
    ones), against the same on an empty directory.
    """
    import apsw
    import cbor2
    from actors import counter_for_memory

    import rivetkit
    from rivetkit.drivers.local import new_actor_id

    res: dict[str, Any] = {"directory": args.directory}
    roots = []
    try:
        for label, rows in (("empty", 0), ("full", args.directory)):
            root = Path(tempfile.mkdtemp(prefix="rivetkit-dir-", dir=args.dir))
            roots.append(root)
            reg = rivetkit.setup(counter_for_memory(), storage_path=root)
            await reg.start()  # creates registry.db with its schema
            await reg.stop()
            t = time.perf_counter()
            db = apsw.Connection(str(root / "registry.db"))
            now = int(time.time() * 1000)
            with db:
                db.executemany(
                    "INSERT INTO actors (actor_id, namespace, name, key, generation, created_at, "
                    "started_at, slept_at, destroyed_at, alarm_at) "
                    "VALUES (?, 'default', 'counter', ?, 1, ?, ?, ?, NULL, NULL)",
                    ((new_actor_id(), cbor2.dumps([f"z{i}"]), now, now, now) for i in range(rows)),
                )
            db.close()
            r: dict[str, Any] = {"rows": rows, "insert_s": time.perf_counter() - t}
            r["registry_db_bytes"] = sum(
                os.path.getsize(root / n)
                for n in ("registry.db", "registry.db-wal")
                if (root / n).exists()
            )
            reg = rivetkit.setup(counter_for_memory(), storage_path=root)
            drv = reg.driver
            r["m_before_open"] = measure(drv, "before open", trim=True)
            t = time.perf_counter()
            await reg.start()
            r["open_s"] = time.perf_counter() - t
            r["m_open"] = measure(drv, "open", trim=True)
            if rows:
                t = time.perf_counter()
                for i in range(0, rows, max(1, rows // 1000)):
                    assert drv.lookup("default", "counter", (f"z{i}",)) is not None
                r["lookup_us"] = (
                    1e6 * (time.perf_counter() - t) / len(range(0, rows, max(1, rows // 1000)))
                )
            for i in range(0, 200, args.batch):  # warm-up (first-use costs), not timed
                await wake(drv, [f"q{j}" for j in range(i, i + args.batch)], args.batch)
                await sleep_all(drv, args.batch, [])
            t = time.perf_counter()
            for i in range(0, 1000, args.batch):
                await wake(drv, [f"r{j}" for j in range(i, i + args.batch)], args.batch)
                await sleep_all(drv, args.batch, [])
            r["cycle_ms_per_actor"] = 1000 * (time.perf_counter() - t) / 1000
            r["m_after"] = measure(drv, "after 1000 cycles", trim=True)
            await reg.stop()
            res[label] = r
    finally:
        if not args.keep:
            for root in roots:
                shutil.rmtree(root, ignore_errors=True)
    return res


def per_actor(res: dict[str, Any]) -> dict[str, float | None]:
    n = res["n"]
    m0, m1, m2, m2t = res["m0"], res["m1"], res["m2"], res["m2t"]
    d = res["disk"]
    total = res["actors_on_disk"]
    out: dict[str, float | None] = {
        "awake_rss_B": (m1["VmRSS"] - m0["VmRSS"]) / n,
        "awake_anon_B": (m1["RssAnon"] - m0["RssAnon"]) / n,
        "awake_blocks": (m1["blocks"] - m0["blocks"]) / n,
        "awake_sqlite_heap_MiB": m1["sqlite_heap"] / 2**20,
        "awake_open_dbs": m1["open_dbs"],
        "awake_rss_minus_sqlite_B": (
            (m1["VmRSS"] - m0["VmRSS"]) - (m1["sqlite_heap"] - m0["sqlite_heap"])
        )
        / n,
        "awake_traced_B": m1["traced"] / n if "traced" in m1 else None,
        "asleep_rss_B": (m2["VmRSS"] - m0["VmRSS"]) / n,
        "asleep_rss_trimmed_B": (m2t["VmRSS"] - m0["VmRSS"]) / n,
        "asleep_blocks": (m2t["blocks"] - m0["blocks"]) / n,
        "asleep_sqlite_heap_MiB": m2t["sqlite_heap"] / 2**20,
        "disk_B": (d["actor_bytes"] + d["shared_bytes"]) / total,
        "disk_alloc_B": (d["actor_alloc"] + d["shared_alloc"]) / total,
        "disk_actor_file_B": d["actor_bytes"] / total,
        "disk_shared_B": d["shared_bytes"] / total,
        "files_per_actor": d["actor_files"] / total,
        "wake_ms_per_actor": 1000 * res["t_wake_s"] / n,
        "sleep_ms_per_actor": 1000 * res["t_sleep_s"] / n,
        "sleep_ms_first_stops": res.get("sleep_ms_per_actor_first10pct"),
        "sleep_ms_last10pct": res.get("sleep_ms_per_actor_last10pct"),
    }
    pop = res.get("population")
    if pop:
        k = res["k"]
        out["population_traced_B"] = pop[-1]["traced"] / k
        out["population_blocks"] = (pop[-1]["blocks"] - pop[0]["blocks"]) / k
        out["population_rss_trimmed_B"] = (pop[-1]["VmRSS"] - pop[0]["VmRSS"]) / k
        out["population_ms_per_actor"] = 1000 * res["t_population_s"] / k
    return out


def fmt(vals: list[float | None]) -> str:
    v = [x for x in vals if x is not None]
    if not v:
        return "-"

    def f(x: float) -> str:
        return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"

    if len(v) == 1:
        return f(v[0])
    return f"{f(statistics.median(v))} [{f(min(v))}..{f(max(v))}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="awake actors measured (phase B)")
    p.add_argument("--warmup", type=int, default=2_000, help="warm-up actors (phase A)")
    p.add_argument(
        "--k", type=int, default=20_000, help="sleeping-population actors (phase D), 0 = off"
    )
    p.add_argument("--batch", type=int, default=100, help="actors woken / put to sleep at a time")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--forget-shim-after",
        type=int,
        default=-1,
        help="phase C: after this many stops, bypass the O(awake) LocalDriver._forget_awake "
        "(bench-side workaround, see install_forget_shim; -1 = never)",
    )
    p.add_argument("--trace", action="store_true", help="tracemalloc during phase B (slower)")
    p.add_argument("--trace-frames", type=int, default=1)
    p.add_argument("--dir", default=None, help="parent of the storage dirs (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the storage dirs")
    p.add_argument("--json", default=None, help="append one JSON line per repetition to FILE")
    p.add_argument(
        "--directory",
        type=int,
        default=0,
        help="instead: open a storage whose registry.db lists this many sleeping actors (no files)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
        print(json.dumps(asyncio.run(directory_child(args) if args.directory else child(args))))
        return

    if args.directory:
        results = []
        for rep in range(1, args.reps + 1):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--directory",
                str(args.directory),
                "--batch",
                str(args.batch),
            ]
            if args.dir:
                cmd += ["--dir", args.dir]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            res["rep"] = rep
            results.append(res)
            print(json.dumps(res), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(res) + "\n")
        print(f"\n# memory.py --directory {args.directory} reps={args.reps}: median [min..max]")
        for label in ("empty", "full"):
            rs = [r[label] for r in results]
            print(
                f"{label}: rows {rs[0]['rows']}, registry.db {fmt([r['registry_db_bytes'] / 2**20 for r in rs])} MiB"
            )
            print(f"  open s                      {fmt([r['open_s'] for r in rs])}")
            print(
                f"  RSS MiB after open          {fmt([r['m_open']['VmRSS'] / 2**20 for r in rs])}"
            )
            print(
                f"  RSS MiB open - before open  {fmt([(r['m_open']['VmRSS'] - r['m_before_open']['VmRSS']) / 2**20 for r in rs])}"
            )
            print(
                f"  SQLite heap MiB after open  {fmt([r['m_open']['sqlite_heap'] / 2**20 for r in rs])}"
            )
            print(
                f"  RSS MiB after 1000 cycles   {fmt([r['m_after']['VmRSS'] / 2**20 for r in rs])}"
            )
            print(
                f"  SQLite heap MiB after       {fmt([r['m_after']['sqlite_heap'] / 2**20 for r in rs])}"
            )
            print(f"  ms per create+wake+sleep    {fmt([r['cycle_ms_per_actor'] for r in rs])}")
            if rs[0].get("lookup_us") is not None:
                print(f"  lookup of an existing key us {fmt([r['lookup_us'] for r in rs])}")
        return

    results = []
    for rep in range(1, args.reps + 1):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--n",
            str(args.n),
            "--warmup",
            str(args.warmup),
            "--k",
            str(args.k),
            "--batch",
            str(args.batch),
            "--trace-frames",
            str(args.trace_frames),
            "--forget-shim-after",
            str(args.forget_shim_after),
        ]
        if args.trace:
            cmd.append("--trace")
        if args.dir:
            cmd += ["--dir", args.dir]
        if args.keep:
            cmd.append("--keep")
        t = time.perf_counter()
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        res["rep"] = rep
        res["per_actor"] = per_actor(res)
        results.append(res)
        print(json.dumps(res), flush=True)
        print(
            f"# rep {rep}/{args.reps} done in {time.perf_counter() - t:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(res) + "\n")

    keys = list(results[0]["per_actor"])
    print(
        f"\n# memory.py n={args.n} warmup={args.warmup} k={args.k} reps={args.reps}: median [min..max]"
    )
    for k in keys:
        print(f"{k:28s} {fmt([r['per_actor'][k] for r in results])}")
    if args.trace:
        print("\n# top Python allocation sites per awake actor (rep 1), bytes / blocks")
        for s in results[0]["top_sites"]:
            print(f"{s['bytes_per_actor']:8.1f} B {s['blocks_per_actor']:6.2f}  {s['site']}")
        if results[0].get("population_top_sites"):
            print(
                "\n# top Python allocation sites still held per sleeping actor of phase D (rep 1)"
            )
            for s in results[0]["population_top_sites"]:
                print(f"{s['bytes_per_actor']:8.1f} B {s['blocks_per_actor']:6.2f}  {s['site']}")


if __name__ == "__main__":
    main()
