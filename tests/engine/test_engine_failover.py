"""Failover: two Python runtime processes under one engine; ``kill -9`` of one brings its actors
back on the other with every acknowledged update intact (issue 6, "Done when").

Each runtime is a real ``python -m rivetkit serve ... --engine URL`` process. The engine runs
with a short ``envoy_lost_threshold`` so that the killed process's actors are rescheduled within
seconds instead of the default 15 s.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rivetkit.client.sync import Client
from tests._proc import ServerProcess
from tests.engine.engine_proc import Engine
from tests.engine.helpers import envoys, runtime_process, wait_for


@pytest.fixture
def failover_engine(engine_factory: Callable[..., Engine]) -> Engine:
    return engine_factory(pegboard={"envoy_lost_threshold": 2000})


@pytest.fixture
def two_runtimes(failover_engine: Engine, tmp_path: Path) -> Iterator[tuple[str, list[ServerProcess]]]:
    pool = f"pool-{uuid.uuid4().hex[:12]}"
    failover_engine.put_runner_config(pool)
    procs = [runtime_process(failover_engine.endpoint, pool, tmp_path / f"rt{i}") for i in range(2)]
    try:
        wait_for(lambda: len(envoys(failover_engine, pool)) == 2, 30, "two envoys")
        yield pool, procs
    finally:
        for proc in procs:
            proc.stop()


def test_killed_runtime_actors_come_back_on_the_other_with_their_state(
    failover_engine: Engine, two_runtimes: tuple[str, list[ServerProcess]]
) -> None:
    pool, procs = two_runtimes
    pids = {proc.pid for proc in procs}
    with Client(failover_engine.endpoint, pool_name=pool) as client:
        handles = [client.get_or_create("keeper", [f"c{i}"]) for i in range(12)]
        hosts: dict[int, int] = {}
        for i, handle in enumerate(handles):
            for _ in range(i + 1):
                handle.increment(1)
            hosts[i] = handle.where()
        assert set(hosts.values()) <= pids
        assert len(set(hosts.values())) == 2, f"actors not spread over both runtimes: {hosts}"

        victim = procs[0]
        moved = [i for i, pid in hosts.items() if pid == victim.pid]
        victim.kill()

        survivor = procs[1].pid
        for i, handle in enumerate(handles):
            assert handle.get() == i + 1, f"counter c{i} lost acknowledged updates"
            assert handle.where() == survivor
        # Still writable after the move.
        for i in moved:
            assert handles[i].increment(100) == i + 101


def test_sigterm_drains_actors_to_the_other_runtime(
    failover_engine: Engine, two_runtimes: tuple[str, list[ServerProcess]]
) -> None:
    pool, procs = two_runtimes
    with Client(failover_engine.endpoint, pool_name=pool) as client:
        handles = [client.get_or_create("keeper", [f"d{i}"]) for i in range(8)]
        hosts = {}
        for i, handle in enumerate(handles):
            handle.increment(i + 1)
            hosts[i] = handle.where()
        assert len(set(hosts.values())) == 2, f"actors not spread over both runtimes: {hosts}"
        leaving = procs[0]
        status = leaving.stop(timeout=30)  # SIGTERM: Stopping, stop actors, close
        assert status == 0, f"runtime exited with {status}"
        for i, handle in enumerate(handles):
            assert handle.get() == i + 1
            assert handle.where() == procs[1].pid
        # A drain is a clean stop: the engine recorded no crash for any of the moved actors.
        ids = [handle.whoami()[0] for handle in handles]
        for actor_id in ids:
            _, body = failover_engine.api("GET", f"/actors?actor_ids={actor_id}")
            assert [a.get("error") for a in body["actors"]] == [None]
        remaining = envoys(failover_engine, pool)
        assert len(remaining) == 1


def test_a_connection_survives_its_runtime_being_killed(
    failover_engine: Engine, two_runtimes: tuple[str, list[ServerProcess]]
) -> None:
    """The gateway holds a client's (hibernatable) WebSocket while its actor moves to the other
    runtime: the same connection goes on there, with its id, its own state, its subscriptions
    and every acknowledged update, without the client reconnecting."""
    pool, procs = two_runtimes
    with Client(failover_engine.endpoint, pool_name=pool) as client:
        handle = client.get_or_create("greeter", ["survivor"])
        seen: list[int] = []
        statuses: list[str] = []
        with handle.connect() as conn:
            conn.on("count", seen.append)
            conn.on_status_change(lambda s: statuses.append(str(s)))
            assert conn.increment(1) == 1
            assert conn.note("a") == ["a"]
            assert conn.note("b") == ["a", "b"]
            conn_id = conn.connection_id
            host = conn.where()
            victim = next(proc for proc in procs if proc.pid == host)
            survivor = next(proc for proc in procs if proc.pid != host)
            statuses.clear()  # (the status changes of the connect)
            victim.kill()

            assert conn.where() == survivor.pid
            assert conn.connection_id == conn_id
            assert conn.note("c") == ["a", "b", "c"]
            assert conn.increment(1) == 2
            wait_for(lambda: seen == [1, 2], 10, f"both events (seen {seen})")
            assert statuses == [], f"the client saw its connection change: {statuses}"
