"""A real server for the client tests: the test registry under uvicorn, in a background thread.

The app mounts the registry at ``/`` and under ``/api/rivet`` (path-prefix endpoint) and wraps
everything in :class:`Recorder`, which remembers every HTTP request (method, path, query,
headers) and can answer the next matching requests with injected responses, so the retry rules
are tested against real sockets without timing tricks. ``/redirect/metadata`` answers a
``clientEndpoint`` pointing at ``/api/rivet``.

The socket is bound and listening before the server thread starts, so no readiness polling is
needed: early connections wait in the backlog.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import rivetkit
from rivetkit import ActionContext, ActorContext, UserError
from tests.client.realtime_app import chat

# -- the test registry ------------------------------------------------------------------------

probe = rivetkit.actor("probe")


@probe.create_state
def _create_state(c: ActorContext, input: Any) -> dict[str, Any]:
    return {"input": input, "count": 0}


@probe.action
def echo(c: ActionContext, value: Any) -> Any:
    return value


@probe.action(name="echoAll")
def echo_all(c: ActionContext, *values: Any) -> list[Any]:
    return list(values)


@probe.action
def increment(c: ActionContext, amount: int) -> int:
    c.state["count"] += amount
    return int(c.state["count"])


@probe.action(name="getInput")
def get_input(c: ActionContext) -> Any:
    return c.state["input"]


@probe.action(name="failUser")
def fail_user(c: ActionContext) -> None:
    raise UserError("boom happened", code="my_code", metadata={"a": 1})


@probe.action(name="failPlain")
def fail_plain(c: ActionContext) -> None:
    raise RuntimeError("secret internal detail")


@probe.action(name="connParams")
def conn_params(c: ActionContext) -> Any:
    assert c.conn is not None
    return c.conn.params


@probe.action
def whoami(c: ActionContext) -> dict[str, Any]:
    return {"actorId": c.actor_id, "key": list(c.key)}


# -- recording / fault injection --------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass
class Fault:
    path_contains: str
    status: int
    body: bytes
    content_type: str
    remaining: int


@dataclass
class Recorder:
    """ASGI wrapper recording requests and answering injected faults."""

    app: Any
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode()
            record = Recorded(
                scope["method"],
                raw.decode("latin-1"),
                scope["query_string"].decode("latin-1"),
                {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            )
            with self.lock:
                self.requests.append(record)
                fault = next(
                    (f for f in self.faults if f.remaining > 0 and f.path_contains in record.path),
                    None,
                )
                if fault is not None:
                    fault.remaining -= 1
            if fault is not None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": fault.status,
                        "headers": [(b"content-type", fault.content_type.encode())],
                    }
                )
                await send({"type": "http.response.body", "body": fault.body})
                return
        await self.app(scope, receive, send)


class TestServer:
    """Handle on the running server, given to tests by the ``server`` fixture."""

    __test__ = False

    def __init__(self, url: str, recorder: Recorder) -> None:
        self.url = url
        self.recorder = recorder

    @property
    def requests(self) -> list[Recorded]:
        with self.recorder.lock:
            return list(self.recorder.requests)

    def paths(self, contains: str = "") -> list[str]:
        return [r.path for r in self.requests if contains in r.path]

    def gateway_requests(self) -> list[Recorded]:
        return [r for r in self.requests if "/gateway/" in r.path]

    def inject(
        self,
        path_contains: str,
        status: int,
        body: Any,
        *,
        times: int = 1,
        content_type: str = "application/json",
    ) -> None:
        """Answer the next ``times`` requests whose path contains ``path_contains``."""
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        with self.recorder.lock:
            self.recorder.faults.append(Fault(path_contains, status, data, content_type, times))

    def reset(self) -> None:
        with self.recorder.lock:
            self.recorder.requests.clear()
            self.recorder.faults.clear()


def _build_app(url: str, storage: Path) -> Recorder:
    registry = rivetkit.setup(probe, chat, storage_path=storage)
    rivet = registry.asgi()

    async def redirect_metadata(request: Request) -> JSONResponse:
        return JSONResponse(
            {"runtime": "test", "clientEndpoint": f"{url}/api/rivet", "clientToken": "redirected"}
        )

    app = Starlette(
        routes=[
            Route("/redirect/metadata", redirect_metadata),
            Mount("/api/rivet", app=rivet),
            Mount("/", app=rivet),
        ],
        lifespan=registry.lifespan,
    )
    return Recorder(app)


@pytest.fixture(scope="session")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    recorder = _build_app(url, tmp_path_factory.mktemp("client-server"))
    config = uvicorn.Config(
        recorder, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-server")
    thread.start()
    try:
        yield TestServer(url, recorder)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "test server did not stop"


@pytest.fixture
def server(_server: TestServer) -> Iterator[TestServer]:
    """The shared test server, with recorded requests and injected faults reset."""
    _server.reset()
    yield _server
    _server.reset()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def key() -> list[str]:
    """A key no other test uses."""
    return [f"k-{uuid.uuid4().hex[:12]}"]


ENCODINGS = ("json", "cbor", "bare")
