"""CPU cost of one tunnelled action in our runtime, without the real engine's noise.

``rivet-engine`` costs 3-5 ms of CPU per HTTP action on this machine and its scheduling moves our
runtime's figures by 2x from run to run (docs/engine.md), which hides changes of 10-20 %. This
script stands in for the engine on one envoy connection and nothing else: it answers the
runtime's pool and envoy handshake, starts one ``counter`` actor, keeps its database pages in
memory, and sends the HTTP actions exactly as rivet-engine 2.3.19's gateway does (``RequestStart``
with ``stream: true`` and the body in a separate ``RequestChunk``). It measures the runtime
process's CPU (``/proc/PID/stat``) per action.

    .venv/bin/python bench/engine/tunnel_cost.py                     # http, c=1,16,64
    .venv/bin/python bench/engine/tunnel_cost.py --concurrency 64 --seconds 10
    .venv/bin/python bench/engine/tunnel_cost.py --profile /tmp/p.prof   # runtime under cProfile
    .venv/bin/python bench/engine/tunnel_cost.py --callgrind /tmp/cg.out --concurrency 1 --actions 300

``--callgrind FILE`` runs the runtime under valgrind's callgrind with collection switched on only
for the measured actions: user-space instructions per action, the same from run to run (CPU
time on this VM drifts by 2x within an evening), and a per-function profile down to C
(``callgrind_annotate FILE``). Kernel time is not in it.

It does not replace ``bench/run.sh``: the figures the issue asks for come from the real engine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from rivetkit._protocol import envoy as p

ROOT = Path(__file__).resolve().parents[2]
ACTOR_ID = "benchactor000000000000000000"
_TICKS = os.sysconf("SC_CLK_TCK")
_PROFILED = """
import cProfile, runpy, sys, time
out = sys.argv[1]
sys.argv = ["rivetkit", *sys.argv[2:]]
profile = cProfile.Profile(time.process_time)
profile.enable()
try:
    runpy.run_module("rivetkit", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    profile.disable()
    profile.dump_stats(out)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _callgrind(pid: int, *options: str) -> None:
    for option in options:
        subprocess.run(["callgrind_control", option, str(pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _instructions(out: str) -> int:
    """Instructions of the newest dump callgrind wrote for ``out`` (``FILE.N``, the last N)."""
    dumps = sorted(Path(out).parent.glob(Path(out).name + ".*"),
                   key=lambda path: int(path.suffix[1:]) if path.suffix[1:].isdigit() else -1)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump next to {out}")
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("totals:"):  # "summary:" is 0 in a dump made with collection off
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {dumps[-1]}")


class FakeEngine:
    """One envoy connection's worth of rivet-engine: pages in a dict, tunnel requests out."""

    def __init__(self) -> None:
        self.ws: web.WebSocketResponse | None = None
        self.pages: dict[int, bytes] = {}
        self.head_txid = 0
        self.running = asyncio.Event()
        self.connected = asyncio.Event()
        self.waiting: dict[bytes, asyncio.Future[p.ToRivetResponseStart]] = {}
        self.commits = 0
        self._next_request = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/datacenters", self._datacenters)
        app.router.add_put("/runner-configs/{pool}", self._runner_config)
        app.router.add_get("/envoys/connect", self._connect)
        return app

    async def _datacenters(self, request: web.Request) -> web.Response:
        return web.json_response({"datacenters": [{"name": "default"}]})

    async def _runner_config(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    def send(self, message: p.ToEnvoy) -> None:
        assert self.ws is not None
        # aiohttp writes synchronously when the transport is not paused: one frame per write,
        # as the engine's writer does with Nagle off.
        asyncio.get_running_loop().create_task(self.ws.send_bytes(p.encode_to_envoy(message)))

    async def _connect(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("rivet",), max_msg_size=0)
        await ws.prepare(request)
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ws = ws
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            self._on_message(p.decode_to_rivet(msg.data))
        return ws

    def _on_message(self, message: p.ToRivet) -> None:
        if isinstance(message, p.ToRivetMetadata):
            self.send(p.ToEnvoyInit(metadata=p.ProtocolMetadata(
                envoy_lost_threshold=10_000, actor_stop_threshold=30_000,
                max_response_payload_size=20 * 1024 * 1024)))
            self.connected.set()
        elif isinstance(message, p.ToRivetSqliteGetPagesRequest):
            pages = [p.SqliteFetchedPage(pgno=n, bytes=self.pages.get(n))
                     for n in message.data.pgnos]
            self.send(p.ToEnvoySqliteGetPagesResponse(
                request_id=message.request_id,
                data=p.SqliteGetPagesOk(pages=pages, head_txid=self.head_txid)))
        elif isinstance(message, p.ToRivetSqliteCommitRequest):
            for page in message.data.dirty_pages:
                self.pages[page.pgno] = page.bytes
            self.head_txid += 1
            self.commits += 1
            self.send(p.ToEnvoySqliteCommitResponse(
                request_id=message.request_id, data=p.SqliteCommitOk(head_txid=self.head_txid)))
        elif isinstance(message, p.ToRivetKvRequest):
            data: Any = message.data
            if isinstance(data, p.KvGetRequest):
                answer: Any = p.KvGetResponse(keys=[], values=[], metadata=[])
            elif isinstance(data, p.KvListRequest):
                answer = p.KvListResponse(keys=[], values=[], metadata=[])
            elif isinstance(data, p.KvPutRequest):
                answer = p.KvPutResponse()
            else:
                answer = p.KvDeleteResponse()
            self.send(p.ToEnvoyKvResponse(request_id=message.request_id, data=answer))
        elif isinstance(message, p.ToRivetEvents):
            for wrapper in message.items:
                inner = wrapper.inner
                if isinstance(inner, p.EventActorStateUpdate) and isinstance(
                    inner.state, p.ActorStateRunning
                ):
                    self.running.set()
        elif isinstance(message, p.ToRivetStopping):  # drain: stop our one actor
            self.send(p.ToEnvoyCommands(items=[p.CommandWrapper(
                checkpoint=p.ActorCheckpoint(actor_id=ACTOR_ID, generation=1, index=1),
                inner=p.CommandStopActor(reason=p.StopActorReason.SLEEP_INTENT))]))
        elif isinstance(message, p.ToRivetTunnelMessage):
            kind = message.message_kind
            if isinstance(kind, p.ToRivetResponseStart):
                key = bytes(message.message_id.request_id)
                future = self.waiting.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(kind)

    def start_actor(self) -> None:
        self.send(p.ToEnvoyCommands(items=[p.CommandWrapper(
            checkpoint=p.ActorCheckpoint(actor_id=ACTOR_ID, generation=1, index=0),
            inner=p.CommandStartActor(
                config=p.ActorConfig(name="counter", key="bench", create_ts=int(time.time() * 1000),
                                     input=None),
                hibernating_requests=[], preloaded_kv=None))]))

    async def action(self, body: bytes) -> p.ToRivetResponseStart:
        """One HTTP action as gateway3 sends it: start (streamed body) then one final chunk."""
        request_id = self._next_request.to_bytes(4, "big")
        self._next_request = (self._next_request + 1) & 0xFFFFFFFF
        future: asyncio.Future[p.ToRivetResponseStart] = (
            asyncio.get_running_loop().create_future())
        self.waiting[request_id] = future
        headers = {
            "content-type": "application/json",
            "x-rivet-encoding": "json",
            "host": "127.0.0.1:6420",
            "content-length": str(len(body)),
            "x-rivet-ray-id": "9y7z5szoyt5e7ef1fzre7te9ppcl00",
        }
        gateway = b"gw01"
        self.send(p.ToEnvoyTunnelMessage(
            message_id=p.MessageId(gateway_id=gateway, request_id=request_id, message_index=0),
            message_kind=p.ToEnvoyRequestStart(
                actor_id=ACTOR_ID, actor_generation=1, method="POST", path="/action/increment",
                headers=headers, body=None, stream=True, response_stream=True)))
        self.send(p.ToEnvoyTunnelMessage(
            message_id=p.MessageId(gateway_id=gateway, request_id=request_id, message_index=1),
            message_kind=p.ToEnvoyRequestChunk(body=body, finish=True)))
        return await future


async def _load(
    engine: FakeEngine, concurrency: int, seconds: float, actions: int | None = None
) -> int:
    done = 0
    started = 0
    deadline = time.monotonic() + seconds

    def more() -> bool:
        nonlocal started
        if actions is not None:
            started += 1
            return started <= actions
        return time.monotonic() < deadline

    async def worker() -> None:
        nonlocal done
        while more():
            answer = await engine.action(b'{"args":[1]}')
            if answer.status != 200:
                raise RuntimeError(f"action failed: {answer.status} {answer.body!r}")
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--profile", default=None, help="run the runtime under cProfile, to FILE")
    parser.add_argument("--app", default="bench/actors.py")
    parser.add_argument("--actions", type=int, default=None,
                        help="measure this many actions per concurrency instead of --seconds")
    parser.add_argument("--callgrind", default=None,
                        help="run the runtime under callgrind (measured phase only), to FILE")
    args = parser.parse_args()

    engine = FakeEngine()
    runner = web.AppRunner(engine.app(), access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()

    with tempfile.TemporaryDirectory() as storage:
        serve = ["serve", args.app, "--engine", f"http://127.0.0.1:{port}"]
        cmd = [sys.executable, "-m", "rivetkit", *serve]
        if args.profile:  # CPU time, not wall time: the waits for the engine are not counted
            cmd = [sys.executable, "-c", _PROFILED, args.profile, *serve]
        if args.callgrind:
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--quiet",
                   f"--callgrind-out-file={args.callgrind}", *cmd]
        env = dict(os.environ, RIVETKIT_STORAGE_PATH=storage, RIVETKIT_LOG_LEVEL="warning")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        try:
            slow = 60 if args.callgrind else 1
            await asyncio.wait_for(engine.connected.wait(), 30 * slow)
            engine.start_actor()
            await asyncio.wait_for(engine.running.wait(), 30 * slow)
            print(f"{'c':>4} {'actions/s':>10} {'runtime CPU us/action':>22} {'commits/action':>15}"
                  + (f" {'instructions/action':>20}" if args.callgrind else ""))
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                await _load(engine, concurrency, args.warmup)
                if args.callgrind:
                    _callgrind(proc.pid, "--zero", "--instr=on")
                cpu0, commits0, t0 = _cpu_seconds(proc.pid), engine.commits, time.monotonic()
                n = await _load(engine, concurrency, args.seconds, args.actions)
                cpu = _cpu_seconds(proc.pid) - cpu0
                wall = time.monotonic() - t0
                extra = ""
                if args.callgrind:
                    _callgrind(proc.pid, "--instr=off", "--dump")
                    extra = f" {_instructions(args.callgrind) / n:>20,.0f}"
                print(f"{concurrency:>4} {n / wall:>10.0f} {cpu / n * 1e6:>22.1f} "
                      f"{(engine.commits - commits0) / n:>15.2f}{extra}", flush=True)
        finally:
            proc.terminate()  # drains through this fake engine: keep serving meanwhile
            for _ in range(200):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
