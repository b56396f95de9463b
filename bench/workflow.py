"""Workflow step overhead: persisted steps per second, one actor, in process and over HTTP.

Run from the repository root::

    .venv/bin/python bench/workflow.py                       # both modes, 1,000 steps, 5 reps
    .venv/bin/python bench/workflow.py --mode inprocess --steps 5000 --reps 3
    .venv/bin/python bench/workflow.py --mode server         # a real `rivetkit serve` process

What is measured (medians over ``--reps`` fresh actors, each in a fresh storage directory):

* ``steps``: a workflow runs N steps in a row (``s0`` .. ``sN-1``), each changing the actor's
  state; every step is one SQLite transaction committing the state and the step's record
  together (the default, durable mode);
* ``ephemeral``: the same with ``ephemeral=True`` (records go out with the next commit);
* ``loop``: ``ctx.loop`` with one step per iteration (history pruned every 20 iterations);
* ``replay``: the actor is put to sleep after the N steps and woken by a queue message: the
  time from ``on_wake`` until the workflow has loaded and replayed its N recorded steps and
  received the message.

The workflow times itself with steps that return ``time.perf_counter()``, so the client's
transport (in-process ASGI or HTTP on loopback) is outside the measured window; ``--mode server``
shows the same work in a server process (uvloop, the CLI's defaults). The actors are defined in
this file (``rivetkit serve bench/workflow.py`` serves them).

In process, a commit hook on the actor's SQLite file counts the commits per step (over the whole
run of N steps; a persisted step is one commit of three pages: the state row, its commit number
in ``_rivet_meta`` and the history row, as the WAL frames of such a run show).
To compare two versions of the source A/B, run with ``PYTHONPATH`` pointing at a copy of
``src`` (``PYTHONPATH=/tmp/old/src .venv/bin/python bench/workflow.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import rivetkit
from rivetkit import ActionContext, ActorContext

bench = rivetkit.actor(
    "wfbench",
    state={"count": 0, "results": {}},
    queues={"go": rivetkit.queue(dict), "again": rivetkit.queue(dict)},
    options=rivetkit.ActorOptions(sleep_timeout=3600.0),
)


@bench.on_wake
def on_wake(c: ActorContext) -> None:
    c.vars = {"woke": time.perf_counter()}


def bump(ctx: rivetkit.WorkflowContext) -> int:
    ctx.state["count"] += 1
    return int(ctx.state["count"])


def record(ctx: rivetkit.WorkflowContext, key: str, value: float) -> None:
    ctx.state["results"][key] = value


@bench.run
@rivetkit.workflow
async def run(ctx: rivetkit.WorkflowContext) -> None:
    job = await ctx.queue.next("job", names=["go"])
    n = int(job.body["n"])
    kind = str(job.body["kind"])
    t0 = await ctx.step("t0", time.perf_counter)
    if kind == "loop":

        async def body(lctx: rivetkit.WorkflowContext, i: int) -> Any:
            await lctx.step("s", bump, lctx)
            return lctx.loop_break(i) if i + 1 >= n else lctx.loop_continue(i + 1)

        await ctx.loop("l", body, state=0)
    else:
        for i in range(n):
            await ctx.step(f"s{i}", bump, ctx, ephemeral=kind == "ephemeral")
    t1 = await ctx.step("t1", time.perf_counter)
    await ctx.step("report", record, ctx, kind, t1 - t0)
    await ctx.queue.next("again", names=["again"])
    await ctx.step(
        "replayed", lambda: record(ctx, "replay", time.perf_counter() - ctx.vars["woke"])
    )


@bench.action
def results(c: ActionContext) -> dict[str, float]:
    return dict(c.state["results"])


@bench.action
def nap(c: ActionContext) -> None:
    c.sleep()


registry = rivetkit.setup(bench)


async def one_rep(
    client: Any, kind: str, n: int, key: str, registry: Any = None
) -> dict[str, float]:
    h = client.get_or_create("wfbench", [key])
    watched = None
    if registry is not None:  # in process: count the commits and pages of the actor's file
        await h.results()
        watched = _watch(registry.driver.awake[await h.resolve()].store.conn)
    await h.send("go", {"n": n, "kind": kind})
    out = await _until(h, kind)
    if watched is not None:
        out["commits_per_step"] = watched[0] / n
    await h.nap()
    await asyncio.sleep(0.2)  # let it finish going to sleep
    await h.send("again", {})  # wakes it: load + replay of the N steps
    out.update(await _until(h, "replay"))
    return out


def _watch(conn: Any) -> list[int]:
    commits = [0]

    def hook() -> bool:
        commits[0] += 1
        return False  # let it commit

    conn.set_commit_hook(hook)
    return commits


async def _until(h: Any, key: str, timeout: float = 600.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results: dict[str, float] = await h.results()
        if key in results:
            return results
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no {key!r} result within {timeout} s")


async def run_inprocess(kind: str, n: int, rep: int) -> dict[str, float]:
    from rivetkit.client import Client
    from rivetkit.config import RegistryConfig
    from rivetkit.registry import Registry

    with tempfile.TemporaryDirectory(prefix="wfbench-") as tmp:
        reg = Registry([bench], RegistryConfig(storage_path=Path(tmp)))
        await reg.start()
        try:
            async with Client(app=reg.asgi()) as client:
                return await one_rep(client, kind, n, f"{kind}-{rep}", reg)
        finally:
            await reg.stop()


async def run_server(kind: str, n: int, rep: int) -> dict[str, float]:
    from rivetkit.client import Client
    from tests._proc import start_server

    with (
        tempfile.TemporaryDirectory(prefix="wfbench-") as tmp,
        start_server(__file__, storage=Path(tmp) / "data") as server,
    ):
        server.wait_ready(30)
        async with Client(server.url) as client:
            return await one_rep(client, kind, n, f"{kind}-{rep}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["inprocess", "server", "both"], default="both")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--kinds", default="steps,ephemeral,loop")
    args = parser.parse_args()
    modes = ["inprocess", "server"] if args.mode == "both" else [args.mode]
    kinds = args.kinds.split(",")
    n = args.steps
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {n} steps, {args.reps} reps")
    print(
        f"{'mode':<10} {'kind':<10} {'steps/s (median)':>17} {'us/step':>9} "
        f"{'[min..max steps/s]':>22} {'replay ms':>10} {'replay us/step':>15} "
        f"{'commits/step':>13}"
    )
    for mode in modes:
        runner = run_inprocess if mode == "inprocess" else run_server
        for kind in kinds:
            rates: list[float] = []
            replays: list[float] = []
            commits: list[float] = []
            for rep in range(args.reps):
                out = asyncio.run(runner(kind, n, rep))
                rates.append(n / out[kind])
                replays.append(out["replay"])
                if "commits_per_step" in out:
                    commits.append(out["commits_per_step"])
            rate = statistics.median(rates)
            replay = statistics.median(replays)
            per_step = f"{statistics.median(commits):>13.2f}" if commits else f"{'-':>13}"
            print(
                f"{mode:<10} {kind:<10} {rate:>17,.0f} {1e6 / rate:>9.1f} "
                f"{f'[{min(rates):,.0f}..{max(rates):,.0f}]':>22} {replay * 1e3:>10.1f} "
                f"{replay * 1e6 / n:>15.1f} {per_step}"
            )


if __name__ == "__main__":
    main()
