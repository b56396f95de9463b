"""The actors the bench serves as target ``ours``: ``rivetkit serve bench/actors.py``.

* ``counter``: the very definition object of ``examples/counter.py`` (imported, not copied), so the
  ``cold`` / ``http`` / ``ws`` / ``fanout`` scenarios measure exactly the example;
* ``sleepy``: the ``wake`` and ``mem`` scenarios. ``hit`` changes the durable state (a commit, as
  the counter's ``increment``) and counts its calls in ``vars``, which are ephemeral: a reply
  ``[count, 1]`` proves the call ran on a freshly woken instance and ``count`` that the state
  survived the sleep. ``nap`` puts the actor to sleep right after the call (``c.sleep()``). Idle
  sleep is pushed out to an hour so only ``nap`` puts it to sleep;
* ``ticker``: the ``schedule`` scenario. ``plan`` schedules ``n`` one-shot events with
  ``c.schedule.after``; each ``tick`` records its lateness (wall time when the action runs minus
  the event's ``scheduled_at``); ``results`` returns the records;
* ``worker``: the ``queue`` scenario. Its ``run`` loop consumes the queue ``jobs``
  (``completable=True``) and completes every message ``{"s": sender, "n": seq}`` with
  ``[n, done]`` (``done``: messages completed by this generation, in ``vars``); it counts
  per-sender order violations; ``stats`` returns ``[done, order violations]``.

``bench/official/server.mjs`` defines the same four actors on the official runtime.
``counter_for_memory`` builds the counter ``bench/memory.py`` uses in-process.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import rivetkit
from rivetkit import ActionContext, ActorContext, ActorOptions, ScheduledFireInfo

_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "counter.py"


def _load_example() -> Any:
    name = "_rivetkit_bench_example_counter"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, _EXAMPLE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


_example = _load_example()
counter = _example.counter

# Only `nap` (or a shutdown) puts these to sleep during a bench run.
_NO_IDLE_SLEEP = ActorOptions(sleep_timeout=3600.0)


def counter_for_memory(sleep_timeout: float = 3600.0) -> rivetkit.ActorDefinition:
    """``examples/counter.py``'s counter (same state, events and action functions) with a long
    idle timeout, so that actors created early stay awake while the rest are created."""
    d = rivetkit.actor(
        "counter",
        state={"count": 0},
        events={"count": rivetkit.event(int)},
        options=ActorOptions(sleep_timeout=sleep_timeout),
    )
    d.action(_example.increment)
    d.action(name="getCount")(_example.get_count)
    d.action(_example.noop)
    return d


# -- sleepy: wake-from-sleep latency, memory per awake actor over HTTP -----------------------

sleepy = rivetkit.actor("sleepy", state={"count": 0}, vars={"calls": 0}, options=_NO_IDLE_SLEEP)


@sleepy.action
def hit(c: ActionContext) -> list[int]:
    """Count one call durably and in this generation: ``[count, calls since this wake]``."""
    c.state["count"] += 1
    c.vars["calls"] += 1
    return [c.state["count"], c.vars["calls"]]


@sleepy.action
def nap(c: ActionContext) -> int:
    """Go to sleep right after this call."""
    c.sleep()
    return int(c.state["count"])


@sleepy.action(name="noop")
def sleepy_noop(c: ActionContext, x: Any = None) -> Any:
    return x


# -- ticker: schedule firing accuracy --------------------------------------------------------

ticker = rivetkit.actor("ticker", state={"late": []}, options=_NO_IDLE_SLEEP)


@ticker.action
async def plan(c: ActionContext, n: int, first_s: float, gap_s: float, nap: bool = False) -> int:
    """Schedule ``tick(j, nap)`` ``first_s + j * gap_s`` seconds from now, j = 0..n-1.

    With ``nap`` the actor sleeps after planning and after every tick, so each event has to wake
    it (the host's alarm timer)."""
    c.state["late"] = []
    for j in range(n):
        await c.schedule.after(first_s + j * gap_s, "tick", j, nap)
    if nap:
        c.sleep()
    return n


@ticker.action
def tick(c: ActionContext, j: int, nap: bool, fire: ScheduledFireInfo | None = None) -> None:
    """Record ``[j, wall ms now - scheduled_at, fired_at - scheduled_at]``."""
    now_ms = time.time() * 1000.0
    if fire is None:  # called directly, not by a schedule: nothing to measure
        return
    c.state["late"].append(
        [j, round(now_ms - fire.scheduled_at, 3), fire.fired_at - fire.scheduled_at]
    )
    if nap:
        c.sleep()


@ticker.action
def results(c: ActionContext) -> list[list[float]]:
    return list(c.state["late"])


@ticker.action(name="noop")
def ticker_noop(c: ActionContext, x: Any = None) -> Any:
    return x


# -- worker: queue throughput, send to completion, one consumer -------------------------------

# The enqueue-only variant (wait=False) can store far more than the default 1,000 messages before
# the one consumer catches up; the limit is raised alike on the official runtime.
worker = rivetkit.actor(
    "worker",
    vars={"done": 0, "last": {}, "disorder": 0},
    queues={"jobs": rivetkit.queue()},
    options=ActorOptions(sleep_timeout=3600.0, max_queue_size=1_000_000),
)


@worker.run
async def consume(c: ActorContext) -> None:
    """Complete every ``jobs`` message with ``[n, done]``, one at a time, in queue order."""
    v = c.vars
    last = v["last"]
    async for m in c.queue.iter(["jobs"], completable=True):
        body = m.body
        sender, n = body["s"], body["n"]
        if n <= last.get(sender, -1):
            v["disorder"] += 1
        last[sender] = n
        v["done"] += 1
        await m.complete([n, v["done"]])


@worker.action
def stats(c: ActionContext) -> list[int]:
    """``[messages completed by this generation, per-sender order violations]``."""
    return [c.vars["done"], c.vars["disorder"]]


@worker.action(name="noop")
def worker_noop(c: ActionContext, x: Any = None) -> Any:
    return x


registry = rivetkit.setup(counter, sleepy, ticker, worker)

if __name__ == "__main__":
    registry.run()
