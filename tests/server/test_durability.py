"""Zero acknowledged updates lost: kill -9 a real server right after acknowledged actions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests._proc import start_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

COUNTER = str(Path(__file__).resolve().parents[2] / "examples" / "counter.py")


def url(base: str, key: str, action: str) -> str:
    return (
        f"{base}/gateway/counter/action/{action}?rvt-namespace=default&rvt-method=getOrCreate"
        f"&rvt-runner=default&rvt-key={key}&rvt-crash-policy=sleep"
    )


async def increment(http: httpx.AsyncClient, base: str, key: str) -> int:
    response = await http.post(url(base, key, "increment"), json={"args": [1]})
    response.raise_for_status()
    return int(response.json()["output"])


async def get_count(http: httpx.AsyncClient, base: str, key: str) -> int:
    response = await http.post(url(base, key, "getCount"), json={"args": []})
    response.raise_for_status()
    return int(response.json()["output"])


async def test_kill_9_after_acknowledged_actions(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    keys = [f"k{i}" for i in range(8)]
    acked: dict[str, list[int]] = {k: [] for k in keys}
    with start_server(COUNTER, storage=storage) as server:
        server.wait_ready(30)
        async with httpx.AsyncClient() as http:

            async def worker(key: str) -> None:
                for _ in range(40):
                    acked[key].append(await increment(http, server.url, key))

            await asyncio.gather(*(worker(k) for k in keys), *(worker(k) for k in keys))
        server.kill()  # SIGKILL right after the last acknowledgement
        assert server.returncode is not None
    with start_server(COUNTER, storage=storage) as server:
        server.wait_ready(30)
        async with httpx.AsyncClient() as http:
            for key in keys:
                assert sorted(acked[key]) == list(range(1, 81))
                assert await get_count(http, server.url, key) == 80


async def test_kill_9_with_actions_in_flight(tmp_path: Path) -> None:
    storage = tmp_path / "data"
    acked: list[int] = []
    with start_server(COUNTER, storage=storage) as server:
        server.wait_ready(30)
        async with httpx.AsyncClient() as http:
            stop = asyncio.Event()

            async def worker() -> None:
                while not stop.is_set():
                    try:
                        acked.append(await increment(http, server.url, "hot"))
                    except (httpx.HTTPError, OSError):
                        return

            tasks = [asyncio.create_task(worker()) for _ in range(16)]
            while len(acked) < 300:
                await asyncio.sleep(0.01)
            server.kill()  # requests are in flight now
            stop.set()
            await asyncio.gather(*tasks)
    with start_server(COUNTER, storage=storage) as server:
        server.wait_ready(30)
        async with httpx.AsyncClient() as http:
            count = await get_count(http, server.url, "hot")
    # Every acknowledged value is durable; unacknowledged ones may or may not have landed.
    assert count >= max(acked)
    assert len(set(acked)) == len(acked)
