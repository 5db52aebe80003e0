"""Process lifecycle: sockets, workers, the event loop, signals, graceful drain.

The HTTP server is Tornado's ``HTTP1ServerConnection`` driven directly (no ``web.Application``):
each request gets an ``Exchange`` delegate, which is the cheapest way through Tornado and gives
the proxy the streaming hooks it needs. Tornado's own limits are set so that they never answer
before we do: body size is enforced by the exchange (with the 413 envelope), not by Tornado's
bare 400.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters, HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpserver import TCPServer

from . import speedups
from .access_log import AccessLog
from .config import Config, ConfigError, load_config, parse_listen
from .connection import adopt
from .gateway import Gateway
from .metrics import Metrics
from .proxy import ClientContext, Exchange, InflightCounter

log = logging.getLogger("fastgw")

_UNLIMITED_BODY = 1 << 62  # the exchange enforces body_limit itself, with the 413 envelope


class GatewayServer(TCPServer, httputil.HTTPServerConnectionDelegate):
    """Accepts client connections and hands each request to an ``Exchange``."""

    def __init__(self, gateway: Gateway, ssl_options: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_options=ssl_options)
        self.gateway = gateway
        self.protocol = "https" if ssl_options is not None else "http"
        server = gateway.config.server
        # Head timing is the stream's job (see connection.py): Tornado's single timer would
        # make the keep-alive idle wait and the header deadline the same number.
        self.params = HTTP1ConnectionParameters(
            max_header_size=server.max_header_bytes,
            header_timeout=None,
            max_body_size=_UNLIMITED_BODY,
            decompress=False,
        )
        self.idle_timeout = server.idle_timeout
        self.header_timeout = server.header_timeout
        self.require_client_cert = server.tls is not None and server.tls.require_client_cert
        self.connections: set[HTTP1ServerConnection] = set()
        self.inflight = InflightCounter()
        self.draining = False

    def handle_stream(self, stream: IOStream, address: tuple[str, int] | str) -> Awaitable[None] | None:
        remote_ip = address[0] if isinstance(address, tuple) else "unix"
        adopt(stream, self.idle_timeout, self.header_timeout)
        if isinstance(stream, SSLIOStream):
            return self._serve_tls(stream, remote_ip)
        self._serve(stream, ClientContext(remote_ip, self.protocol))
        return None

    def _serve(self, stream: IOStream, context: ClientContext) -> None:
        conn = HTTP1ServerConnection(stream, self.params, context)
        self.connections.add(conn)
        conn.start_serving(self)

    async def _serve_tls(self, stream: SSLIOStream, remote_ip: str) -> None:
        """Finish the handshake (bounded like a request head), then learn the client's CN."""
        try:
            await asyncio.wait_for(stream.wait_for_handshake(), self.header_timeout)
        except (TimeoutError, StreamClosedError, ssl.SSLError, OSError):
            stream.close()
            return
        cert_user = None
        if self.require_client_cert:
            cert_user = _subject_cn(stream.socket.getpeercert())
        self._serve(stream, ClientContext(remote_ip, "https", cert_user))

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        assert isinstance(request_conn, HTTP1Connection)
        context = request_conn.context
        assert isinstance(context, ClientContext)
        if self.draining:
            request_conn._disconnect_on_finish = True  # tell keep-alive clients to go elsewhere
        return Exchange(self.gateway, request_conn, context, self.inflight)

    def on_close(self, server_conn: object) -> None:
        if isinstance(server_conn, HTTP1ServerConnection):
            self.connections.discard(server_conn)


class _MetricsHandler(tornado.web.RequestHandler):
    def initialize(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(self.metrics.exposition())


def _subject_cn(cert: dict[str, Any] | None) -> str | None:
    """The subject commonName of a verified peer certificate, as ssl.getpeercert() gives it."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _tls_context(config: Config) -> ssl.SSLContext | None:
    tls = config.server.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    if tls.client_ca:
        context.load_verify_locations(tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    return context


def bind(listen: str) -> list[socket.socket]:
    host, port = parse_listen(listen)
    return bind_sockets(port, host or None, reuse_port=False)


class Lifecycle:
    """One worker's serving state: the current gateway, reloads, and the drain on shutdown."""

    def __init__(self, config: Config, config_path: str | None, sockets: list[socket.socket]) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = Metrics()
        self.access_log = AccessLog(config.server.access_log)
        self.gateway = Gateway(config, self.metrics, self.access_log)
        self.server = GatewayServer(self.gateway, _tls_context(config))
        self.server.add_sockets(sockets)
        self.sockets = sockets
        self.stopping = asyncio.Event()
        self._retired: list[Gateway] = []

    def reload(self) -> None:
        """SIGHUP: swap in a new gateway for new requests; keep the old one on any error.

        In-flight requests keep the gateway they started with. Settings bound to the listening
        sockets (listen, workers, tls, metrics_listen) need a restart and are reported as such.
        """
        if self.config_path is None:
            log.warning("reload requested but the gateway was not started from a file")
            return
        try:
            config = load_config(self.config_path)
            new = Gateway(config, self.metrics, self.access_log, previous=self.gateway)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", "; ".join(exc.errors))
            return
        except Exception as exc:  # a config that validates but cannot be built (e.g. bad TLS file)
            log.error("reload refused, keeping the running config: %s", exc)
            return
        old_server, new_server = self.config.server, config.server
        for key in ("listen", "workers", "metrics_listen", "tls"):
            if getattr(old_server, key) != getattr(new_server, key):
                log.warning("reload: server.%s changed; it takes effect on restart", key)
        old = self.gateway
        self.gateway = self.server.gateway = new
        self.access_log.enabled = new_server.access_log
        self.config = config
        self._retired.append(old)
        asyncio.get_running_loop().call_later(max(new_server.shutdown_grace, 1.0), self._close_retired, old)
        log.info("config reloaded from %s: %d routes", self.config_path, len(new.routes))
        new.audit.record(None, "config.reloaded", "config", self.config_path, {"routes": len(new.routes)})

    def _close_retired(self, old: Gateway) -> None:
        if old in self._retired:
            self._retired.remove(old)
            old.close(successor=self.gateway)
            if old.limiter is not self.gateway.limiter:
                asyncio.ensure_future(old.limiter.close())

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish up to shutdown_grace, then close."""
        grace = self.config.server.shutdown_grace
        log.info("shutting down: draining for up to %ss", grace)
        self.server.stop()
        self.server.draining = True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.server.inflight.count > 0:
            await asyncio.sleep(0.05)
        for tunnel in list(self.server.inflight.tunnels):
            tunnel.going_away()
        for conn in list(self.server.connections):
            await conn.close()
        for gateway in self._retired:
            gateway.close(successor=self.gateway)
            if gateway.limiter is not self.gateway.limiter:
                await gateway.limiter.close()
        self.gateway.close()
        await self.gateway.limiter.close()
        self.access_log.flush()


async def serve_forever(
    config: Config,
    sockets: list[socket.socket],
    *,
    config_path: str | None = None,
    serve_metrics: bool = True,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT, reloading on SIGHUP; then drain and return the exit code."""
    life = Lifecycle(config, config_path, sockets)
    metrics_server: HTTPServer | None = None
    if serve_metrics and config.server.metrics_listen:
        host, port = parse_listen(config.server.metrics_listen)
        app = tornado.web.Application([(r"/metrics", _MetricsHandler, {"metrics": life.metrics})])
        metrics_server = HTTPServer(app)
        try:
            metrics_server.listen(port, host or "")
        except OSError as exc:
            # Metrics are not worth refusing traffic for: say so loudly and serve anyway.
            log.error("cannot serve /metrics on %s: %s", config.server.metrics_listen, exc.strerror or exc)
            metrics_server = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, life.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, life.reload)
    log.info(
        "serving on %s with %d routes (speedups: %s)",
        ", ".join(_address(s) for s in sockets),
        len(life.gateway.routes),
        speedups.IMPLEMENTATION,
    )
    if on_ready is not None:
        on_ready()
    await life.stopping.wait()
    if metrics_server is not None:
        metrics_server.stop()
    await life.drain()
    return 0


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def run(config: Config, config_path: str | None = None, on_ready: Callable[[], None] | None = None) -> int:
    """Bind, fork workers if asked, and serve; returns the process exit code."""
    if sys.flags.optimize:
        # Tornado checks chunk terminators with assert; under -O a smuggled body would pass.
        print("fastgw: refusing to run with python -O / PYTHONOPTIMIZE", file=sys.stderr)
        return 1
    # A reload signal that arrives before the event loop installs its handler must not kill
    # the process (SIGHUP's default action).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        sockets = bind(config.server.listen)
    except OSError as exc:
        print(f"fastgw: cannot listen on {config.server.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    workers = config.server.workers or os.cpu_count() or 1
    if workers > 1:
        return _run_workers(config, config_path, sockets, workers)
    return _run_loop(serve_forever(config, sockets, config_path=config_path, on_ready=on_ready))


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _run_workers(config: Config, config_path: str | None, sockets: list[socket.socket], workers: int) -> int:
    """Fork workers sharing the listening sockets; the parent relays signals and serves /metrics.

    Metrics from all workers are aggregated by prometheus-client's multiprocess mode: each worker
    writes its samples to files in PROMETHEUS_MULTIPROC_DIR (set by the CLI before
    prometheus_client was imported), and the parent's /metrics reads them all.
    """
    children: set[int] = set()
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            code = 1
            try:
                code = _run_loop(serve_forever(config, sockets, config_path=config_path, serve_metrics=False))
            finally:
                os._exit(code)
        children.add(pid)
    for sock in sockets:
        sock.close()
    log.info("started %d workers: %s", workers, ", ".join(str(pid) for pid in sorted(children)))
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if config.server.metrics_listen and metrics_dir:
        _serve_multiprocess_metrics(config.server.metrics_listen)

    def relay(signum: int, _frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, relay)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if metrics_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        if os.waitstatus_to_exitcode(code) not in (0, -signal.SIGTERM, -signal.SIGINT):
            status = 1
    return status


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the parent dies (even by SIGKILL): no orphans."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: workers are still stopped by the parent's signal relay


def _serve_multiprocess_metrics(listen: str) -> None:
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    host, port = parse_listen(listen)
    try:
        start_http_server(port, host or "0.0.0.0", registry)
    except OSError as exc:
        log.error("cannot serve /metrics on %s: %s", listen, exc.strerror or exc)
