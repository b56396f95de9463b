"""A runtime reaches its engine over TLS (``--engine https://...``), as it does a hosted engine.

Engines in production sit behind TLS (Rivet Cloud, or a load balancer in front of a self-hosted
engine). Here a TLS-terminating proxy on loopback, with a certificate of a test CA (``trustme``),
stands in front of the real engine; the runtime is a ``rivetkit serve --engine https://...``
process that trusts that CA through ``SSL_CERT_FILE`` (OpenSSL's standard variable, read by the
runtime's HTTP client and its envoy WebSocket alike). Clients talk to the engine directly.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
import trustme

from rivetkit.client.sync import Client
from tests.engine.engine_proc import Engine
from tests.engine.helpers import envoys, runtime_process, wait_for


class TlsProxy:
    """TLS on a loopback port in front of a plain TCP port; records the first request line of
    each connection (read after the handshake: only what arrived over TLS)."""

    def __init__(self, target_port: int, cert: trustme.LeafCert) -> None:
        self.target_port = target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.context)
        self.port = 0
        self.request_lines: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readline()
            self.request_lines.append(first.decode("latin-1").strip())
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def saw(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in list(self.request_lines))


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    finally:
        sink.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def proxy(engine: Engine, ca: trustme.CA) -> Iterator[TlsProxy]:
    with TlsProxy(engine.guard_port, ca.issue_cert("localhost", "127.0.0.1")) as tls:
        yield tls


def test_a_runtime_hosts_actors_through_an_engine_behind_tls(
    engine: Engine, proxy: TlsProxy, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    pool = f"pool-{uuid.uuid4().hex[:12]}"
    env = {"SSL_CERT_FILE": str(ca_file)}
    with runtime_process(f"https://localhost:{proxy.port}", pool, tmp_path / "rt", env) as proc:
        wait_for(lambda: envoys(engine, pool), 30, f"the envoy over TLS\n{proc.log_tail()}")
        # The pool set-up (GET /datacenters, then PUT /runner-configs on the same kept-alive
        # connection) and the envoy socket both went through the TLS proxy.
        assert proxy.saw("GET /datacenters?"), proxy.request_lines
        assert proxy.saw("GET /envoys/connect?"), proxy.request_lines
        with Client(engine.endpoint, pool_name=pool) as client:
            handle = client.get_or_create("keeper", ["tls"])
            assert handle.increment(2) == 2
            assert handle.increment(3) == 5
            assert handle.where() == proc.pid
            with handle.connect() as conn:
                assert conn.increment(1) == 6


def test_an_untrusted_engine_certificate_is_refused_with_the_reason(
    engine: Engine, proxy: TlsProxy, tmp_path: Path
) -> None:
    pool = f"pool-{uuid.uuid4().hex[:12]}"
    with runtime_process(f"https://localhost:{proxy.port}", pool, tmp_path / "rt", {}) as proc:
        wait_for(
            lambda: "certificate verify failed" in proc.log_path.read_text(errors="replace"),
            30,
            "the certificate error in the runtime's log",
        )
        assert proc.is_running(), "the runtime keeps retrying (the engine may be fixed meanwhile)"
        assert envoys(engine, pool) == []
        assert proxy.request_lines == [], "nothing was sent over an unverified connection"
