"""Shared fixtures: real upstream servers and real gateway processes on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.postgres_server import PostgresServer
from tests.redis_server import REDIS_SERVER, RedisServer
from tests.upstream_server import UpstreamServer

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the peer sends until it closes (a reset counts as closing)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


class GatewayProcess:
    """``python -m fastgw run -c FILE`` as a child process, with its output collected."""

    def __init__(
        self,
        config: dict[str, Any],
        tmp_path: Path,
        env: dict[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.tls_context = tls_context
        self.port = free_port()
        self.metrics_port = free_port()
        server = config.setdefault("server", {})
        server.setdefault("listen", f"127.0.0.1:{self.port}")
        server.setdefault("metrics_listen", f"127.0.0.1:{self.metrics_port}")
        self.config_path = tmp_path / "fastgw.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), child_env.get("PYTHONPATH")]))
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastgw", "run", "-c", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env,
            cwd=tmp_path,
            start_new_session=True,  # its own process group: cleanup reaches forked workers too
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._wait_ready()

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in iter(stream.readline, b""):
            sink.append(line.decode("utf-8", "replace"))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.1)
                raise RuntimeError(f"gateway exited {self.proc.returncode}: {''.join(self.stderr)}")
            # Ready means answering HTTP (signal handlers are installed by then), not just
            # accepting TCP: the listening socket is bound before the event loop starts.
            try:
                conn = self._connection(timeout=1)
                try:
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("gateway did not start: " + "".join(self.stderr))

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self._connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.tls_context is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=self.tls_context
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        status, headers, data = self.request(method, path, **kwargs)
        return status, headers, json.loads(data)

    def access_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout if line.startswith("{")]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything the gateway left behind
        except (ProcessLookupError, PermissionError):
            pass
        for reader in self._readers:
            reader.join(2)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer().start()
    yield server
    server.stop()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Any]:
    started: list[GatewayProcess] = []

    def start(
        config: dict[str, Any], env: dict[str, str] | None = None, tls_context: ssl.SSLContext | None = None
    ) -> GatewayProcess:
        gw = GatewayProcess(config, tmp_path, env, tls_context)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop(signal.SIGKILL)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port, for this test alone."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session; tests take a fresh database each."""
    server = PostgresServer().init()
    yield server
    server.remove()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this test alone, which it may stop and start again."""
    server = PostgresServer().init()
    yield server
    server.remove()


_STORES: dict[Path, str] = {}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store of one test, on each kind of database: a SQLite file, a PostgreSQL database.

    A module runs all its tests on both with ``pytestmark = pytest.mark.usefixtures("store_url")``
    and names the store as ``store_of(tmp_path)``.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gw.db'}"
    else:
        cluster: PostgresServer = request.getfixturevalue("postgres_cluster")
        url = cluster.new_database()
    _STORES[tmp_path] = url
    yield url
    _STORES.pop(tmp_path, None)


def store_of(tmp_path: Path) -> str:
    """The store URL of the test whose ``tmp_path`` this is (``store_url``), else a SQLite file there."""
    return _STORES.get(tmp_path, f"sqlite:///{tmp_path / 'gw.db'}")
