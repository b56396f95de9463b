"""Where a queue message's server time goes, in-process (no sockets, no HTTP parsing).

    .venv/bin/python bench/queue_cost.py [--n 5000] [--reps 3]

Part 1, the registry's ASGI app called directly (uvloop, fresh storage, the actors of
``bench/actors.py``), the same requests as the ``queue`` scenario of the harness: per request the
process CPU time of ``increment(1)`` on ``counter`` (reference), ``POST /queue/jobs`` with
``wait=true`` (send to completion: enqueue, the ``worker`` run loop takes and completes it) and with
``wait=false`` (enqueue; the run loop consumes meanwhile, timed until it has consumed them all),
one request at a time and 64 at a time. The queue's storage work is timed inside its
transactions and attributed to the operation that committed (send, take, complete): with the
queue of 2026-11-21 (``ActorQueue._commit``) a take commits the sends staged before it, so their
inserts count as take; with the earlier queue, the functions it ran through ``ActorStore.run``.
A commit hook on the worker's file counts commits and ``SQLITE_DBSTATUS_CACHE_WRITE`` the pages
written, per message.

Part 2, the SQLite work of one message replayed on a real actor file (``ActorStore.create``, then
reopened in WAL mode with the runtime's pragmas), with the runtime's statements: as the runtime
did it before 2026-11-21 (three transactions: enqueue = insert + ``queue_next_id``; take = the
``_rivet_queue_deliveries`` upsert; complete = two deletes), the same statements in one
transaction, without the delivery row and the ``queue_next_id`` update, and as it does now when
the consumer waits (two transactions: insert + delivery row + removal of the previous message's
delivery row; delete). Then the wall time of each message (as now) with SQLite's WAL
auto-checkpoint (every 1,000 pages, the default) and without: the messages that pay for a
checkpoint (it copies the pages back and, with ``synchronous=NORMAL``, fsyncs) stand out; and
how long a checkpoint of the WAL of 1,000 messages takes when it is run on its own (the stall a
checkpoint on the event loop costs, or the time a worker thread would hold the actor's file).

To compare two versions of the source A/B, run the script with ``PYTHONPATH`` pointing at a copy
of ``src`` (``PYTHONPATH=/tmp/old/src .venv/bin/python bench/queue_cost.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from memory import fmt

_QUERY = (
    "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key={key}"
    "&rvt-crash-policy=sleep"
)


async def call(app: Any, path: str, key: str, body: bytes) -> tuple[int, bytes]:
    """One request through the ASGI app: ``(status, body)``."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": _QUERY.format(key=key).encode(),
        "headers": [(b"x-rivet-encoding", b"json"), (b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("127.0.0.1", 1),
        "client": ("127.0.0.1", 2),
    }
    received = False
    status = 0
    out = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(out)


def time_store_ops() -> dict[str, list[float]]:
    """Attribute the queue's storage work to the operation that committed it (``[calls, cpu s]``
    per ``send`` / ``take`` / ``complete``)."""
    from rivetkit._runtime import queue, storage

    spent: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])

    def add(label: str, c0: float) -> None:
        entry = spent[label]
        entry[0] += 1
        entry[1] += time.process_time() - c0

    commit = getattr(queue.ActorQueue, "_commit", None)
    if commit is not None:  # staged sends, every queue transaction through one method

        def _commit(self: Any, conn: Any, body: Any, **kwargs: Any) -> Any:
            name = getattr(body, "__qualname__", "")
            label = "take" if "_take" in name else "complete" if "_complete" in name else "send"
            c0 = time.process_time()
            try:
                return commit(self, conn, body, **kwargs)
            finally:
                add(label, c0)

        queue.ActorQueue._commit = _commit  # type: ignore[method-assign]
        return spent

    original = storage.ActorStore.run  # the queue before 2026-11-21
    labels = {
        "ActorQueue.enqueue.<locals>.write": "send",
        "ActorQueue._receive.<locals>.<lambda>": "take",
        "ActorQueue._complete.<locals>.write": "complete",
    }

    async def run(self: Any, fn: Any) -> Any:
        label = labels.get(getattr(fn, "__qualname__", "?"), "other")

        def timed(conn: Any) -> Any:
            c0 = time.process_time()
            try:
                return fn(conn)
            finally:
                add(label, c0)

        return await original(self, timed)

    storage.ActorStore.run = run  # type: ignore[method-assign]
    return spent


_OPS = ("send", "take", "complete")


def watch_file(registry: Any, name: str) -> tuple[list[int], Any]:
    """Count the commits on the file of the awake actor ``name``: ``(counter, connection)``."""
    import apsw

    (instance,) = [i for i in registry.driver.awake.values() if i.name == name]
    conn = instance.store.conn
    commits = [0]

    def hook() -> bool:
        commits[0] += 1
        return False  # let it commit

    conn.set_commit_hook(hook)
    assert apsw.SQLITE_DBSTATUS_CACHE_WRITE
    return commits, conn


async def in_process(
    mode: str, n: int, parallel: int, spent: dict[str, list[float]]
) -> dict[str, Any]:
    import actors

    from rivetkit.config import RegistryConfig
    from rivetkit.registry import Registry

    with tempfile.TemporaryDirectory(prefix="queue-cost-") as d:
        registry = Registry(
            list(actors.registry.definitions.values()), RegistryConfig(storage_path=d)
        )
        await registry.start()
        try:
            app = registry.asgi()
            key = f"cost-{mode}-{parallel}"
            if mode == "action":
                path, stats_path = (
                    "/gateway/counter/action/increment",
                    "/gateway/counter/action/getCount",
                )

                def body(i: int, j: int) -> bytes:
                    return b'{"args":[1]}'
            else:
                path, stats_path = "/gateway/worker/queue/jobs", "/gateway/worker/action/stats"
                wait = b"true" if mode == "wait" else b"false"

                def body(i: int, j: int) -> bytes:
                    return b'{"body":{"s":%d,"n":%d},"wait":%s,"name":"jobs"}' % (j, i, wait)

            assert (await call(app, stats_path, key, b'{"args":[]}'))[0] == 200
            for i in range(200):  # warm-up (actor created, statements cached)
                await call(app, path, key, body(i, parallel))
            per = n // parallel
            watched = None
            if mode != "action":
                watched = watch_file(registry, "worker")
                pages0 = watched[1].status(_cache_write())[0]
                commits0 = watched[0][0]
            spent.clear()
            c0 = time.process_time()
            t0 = time.perf_counter()

            async def sender(j: int) -> None:
                for i in range(per):
                    status, reply = await call(app, path, key, body(i, j))
                    assert status == 200, reply

            await asyncio.gather(*(sender(j) for j in range(parallel)))
            if mode == "nowait":  # until the run loop has consumed everything
                while True:
                    _status, reply = await call(app, stats_path, key, b'{"args":[]}')
                    if json.loads(reply)["output"][0] >= 200 + per * parallel:
                        break
                    await asyncio.sleep(0)
            cpu = time.process_time() - c0
            wall = time.perf_counter() - t0
            count = per * parallel
            out = {"cpu_us": 1e6 * cpu / count, "per_s": count / wall}
            for label in _OPS:
                calls, secs = spent.get(label, (0, 0.0))
                out[f"{label}_us"] = 1e6 * secs / count if calls else None
            if watched is not None:
                out["commits"] = (watched[0][0] - commits0) / count
                out["pages"] = (watched[1].status(_cache_write())[0] - pages0) / count
            return out
        finally:
            await registry.stop()


# -- part 2: the SQLite statements of one message on a real actor file -----------------------

_SELECT = (
    "SELECT id, name, body, created_at FROM _rivet_queue INDEXED BY _rivet_queue_name_id "
    "WHERE name IN (?) ORDER BY id LIMIT ?"
)
_DELETE = "DELETE FROM _rivet_queue WHERE id IN (?)"
_DELETE_DELIVERY = "DELETE FROM _rivet_queue_deliveries WHERE id IN (?)"
_BODY = b"\xa2as\x00an\x19\x01\x00"  # CBOR {"s": 0, "n": 256}
# The runtime's statements (kept here so that the replay does not change with the source).
_INSERT = "INSERT INTO _rivet_queue (id, name, body, created_at) VALUES (?, ?, ?, ?)"
_SET_NEXT_ID = "UPDATE _rivet_runtime SET queue_next_id = ? WHERE id = 1"
_DELIVERIES = """
CREATE TABLE IF NOT EXISTS _rivet_queue_deliveries (id INTEGER PRIMARY KEY,
  attempts INTEGER NOT NULL, last_delivered_at INTEGER NOT NULL) STRICT
"""
_BUMP_DELIVERY = (
    "INSERT INTO _rivet_queue_deliveries (id, attempts, last_delivered_at) VALUES (?, 1, ?) "
    "ON CONFLICT (id) DO UPDATE SET attempts = attempts + 1, "
    "last_delivered_at = excluded.last_delivered_at RETURNING attempts"
)
_FIRST_DELIVERY = (
    "INSERT INTO _rivet_queue_deliveries (id, attempts, last_delivered_at) VALUES (?, 1, ?)"
)


def actor_file(directory: str, autocheckpoint: int) -> Any:
    from rivetkit._runtime.storage import ActorStore

    path = Path(directory) / "a.db"
    ActorStore.create(path, input=None).close()
    conn = ActorStore(path).conn  # WAL, exclusive lock, synchronous=NORMAL, as an actor's file
    conn.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint}").fetchall()
    conn.execute(_DELIVERIES)
    return conn


def message_as_before(conn: Any, i: int) -> None:
    with conn:  # enqueue
        conn.execute(_INSERT, (i, "jobs", _BODY, 1))
        conn.execute(_SET_NEXT_ID, (i + 1,))
    conn.execute(_SELECT, ("jobs", 1)).fetchall()  # take
    with conn:
        conn.execute(_BUMP_DELIVERY, (i, 1)).fetchall()
    with conn:  # complete
        conn.execute(_DELETE, (i,))
        conn.execute(_DELETE_DELIVERY, (i,))


def message_one_transaction(conn: Any, i: int) -> None:
    with conn:
        conn.execute(_INSERT, (i, "jobs", _BODY, 1))
        conn.execute(_SET_NEXT_ID, (i + 1,))
        conn.execute(_SELECT, ("jobs", 1)).fetchall()
        conn.execute(_BUMP_DELIVERY, (i, 1)).fetchall()
        conn.execute(_DELETE, (i,))
        conn.execute(_DELETE_DELIVERY, (i,))


def message_without_bookkeeping(conn: Any, i: int) -> None:
    with conn:
        conn.execute(_INSERT, (i, "jobs", _BODY, 1))
    conn.execute(_SELECT, ("jobs", 1)).fetchall()
    with conn:
        conn.execute(_DELETE, (i,))


def message_as_now(conn: Any, i: int) -> None:
    """A send to a waiting consumer: stored and handed out in one commit (the previous
    message's delivery row goes with it); the completion deletes the row only."""
    with conn:
        conn.execute(_INSERT, (i, "jobs", _BODY, 1))
        conn.execute(_SELECT, ("jobs", 1)).fetchall()
        conn.execute("DELETE FROM _rivet_queue_deliveries WHERE id = ?", (i - 1,))
        conn.execute(_FIRST_DELIVERY, (i, 1))
    with conn:
        conn.execute("DELETE FROM _rivet_queue WHERE id = ?", (i,))


def sqlite_replay(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    variants = [
        ("before", message_as_before),
        ("one_txn", message_one_transaction),
        ("no_bookkeeping", message_without_bookkeeping),
        ("now", message_as_now),
    ]
    for label, fn in variants:
        with tempfile.TemporaryDirectory(prefix="queue-cost-") as d:
            conn = actor_file(d, 1000)
            for i in range(1, 1001):
                fn(conn, i)
            pages0 = conn.status(_cache_write())[0]
            c0 = time.process_time()
            t0 = time.perf_counter()
            for i in range(1001, 1001 + n):
                fn(conn, i)
            out[f"{label}_cpu_us"] = 1e6 * (time.process_time() - c0) / n
            out[f"{label}_wall_us"] = 1e6 * (time.perf_counter() - t0) / n
            out[f"{label}_pages"] = (conn.status(_cache_write())[0] - pages0) / n
            conn.close()
    for ckpt in (1000, 0):
        with tempfile.TemporaryDirectory(prefix="queue-cost-") as d:
            conn = actor_file(d, ckpt)
            for i in range(1, 1001):
                message_as_now(conn, i)
            walls = []
            for i in range(1001, 1001 + n):
                t0 = time.perf_counter()
                message_as_now(conn, i)
                walls.append(1e6 * (time.perf_counter() - t0))
            if not ckpt:  # the checkpoint the default would have spread over the messages
                list(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
                for i in range(1001 + n, 2001 + n):
                    message_as_now(conn, i)
                t0 = time.perf_counter()
                list(conn.execute("PRAGMA wal_checkpoint(PASSIVE)"))
                out["checkpoint_1000_us"] = 1e6 * (time.perf_counter() - t0)
            conn.close()
        walls.sort()
        slow = [w for w in walls if w > 500]
        key = "ckpt" if ckpt else "no_ckpt"
        out[f"{key}_p50_us"] = walls[len(walls) // 2]
        out[f"{key}_p99_us"] = walls[int(len(walls) * 0.99)]
        out[f"{key}_max_us"] = walls[-1]
        out[f"{key}_slow_every"] = n / len(slow) if slow else None
        out[f"{key}_slow_median_us"] = statistics.median(slow) if slow else None
    return out


def _cache_write() -> int:
    import apsw

    return apsw.SQLITE_DBSTATUS_CACHE_WRITE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="messages per measurement (default 5000)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--part", choices=("1", "2", "both"), default="both", help="parts to run")
    p.add_argument("--json", type=Path, help="also write the raw results to this file")
    args = p.parse_args()
    import uvloop

    spent = time_store_ops()
    rows: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for _ in range(args.reps):
        if args.part != "2":
            for mode in ("action", "wait", "nowait"):
                for parallel in (1, 64):
                    rows[f"{mode} x{parallel}"].append(
                        uvloop.run(in_process(mode, args.n, parallel, spent))
                    )
        if args.part != "1":
            rows["sqlite"].append(sqlite_replay(args.n))
    if args.json is not None:
        args.json.write_text(json.dumps(rows))

    def col(key: str, field: str) -> str:
        return fmt([r.get(field) for r in rows.get(key, ())])

    print(f"\nPart 1: in-process, per request, median [min..max] over {args.reps} reps")
    print(
        f"{'request':48s} {'CPU us':>20s} {'per s':>22s} "
        f"{'queue storage work: send / take / complete, us':>54s} {'commits':>18s} {'pages':>18s}"
    )
    names = {
        "action": "increment(1) on counter",
        "wait": "queue send wait=true (to completion)",
        "nowait": "queue send wait=false (+ consume)",
    }
    for mode in ("action", "wait", "nowait"):
        for parallel in (1, 64):
            key = f"{mode} x{parallel}"
            sql = " / ".join(col(key, f"{op}_us") for op in _OPS)
            label = f"{names[mode]}, {parallel} at a time"
            print(
                f"{label:48s} {col(key, 'cpu_us'):>20s} {col(key, 'per_s'):>22s} {sql:>54s} "
                f"{col(key, 'commits'):>18s} {col(key, 'pages'):>18s}"
            )
    print(
        f"\nPart 2: SQLite work of one message on an actor file, median [min..max] over {args.reps} reps"
    )
    for label, text in (
        ("before", "before 2026-11-21: 3 transactions"),
        ("one_txn", "same statements, 1 transaction"),
        ("no_bookkeeping", "no delivery row, no queue_next_id"),
        ("now", "now, consumer waiting: 2 transactions"),
    ):
        print(
            f"{text:38s} CPU {col('sqlite', f'{label}_cpu_us')} us, wall {col('sqlite', f'{label}_wall_us')} us, "
            f"{col('sqlite', f'{label}_pages')} pages written"
        )
    for key, text in (
        ("ckpt", "now, WAL auto-checkpoint (default)"),
        ("no_ckpt", "now, auto-checkpoint off"),
    ):
        print(
            f"{text:38s} wall p50 {col('sqlite', f'{key}_p50_us')} us, p99 {col('sqlite', f'{key}_p99_us')} us, "
            f"max {col('sqlite', f'{key}_max_us')} us; over 0.5 ms: one message in {col('sqlite', f'{key}_slow_every')}, "
            f"those {col('sqlite', f'{key}_slow_median_us')} us"
        )
    print(
        f"{'a checkpoint of 1,000 messages alone':38s} {col('sqlite', 'checkpoint_1000_us')} us"
    )


if __name__ == "__main__":
    main()
