"""Process lifecycle: sockets, workers, the event loop, signals, graceful drain.

Client connections are ``asyncio.Protocol`` objects (``fastgw.http1``) on uvloop, each request
handled by an ``Exchange``; Tornado stays the host: ``tornado.netutil`` binds the sockets, its
IOLoop runs on the same uvloop loop, and the metrics endpoint is a Tornado application.
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
from collections.abc import Callable, Coroutine
from typing import Any

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from . import speedups
from .access_log import AccessLog
from .config import Config, ConfigError, load_config, parse_listen
from .exchange import Exchange
from .gateway import Gateway
from .http1.connection import ClientConnection
from .http1.server import ConnectionHub, ServerLimits
from .inflight import InflightCounter
from .metrics import Metrics

log = logging.getLogger("fastgw")


class GatewayServer:
    """Accepts client connections and hands each request to an ``Exchange``."""

    def __init__(self, gateway: Gateway, ssl_options: ssl.SSLContext | None = None) -> None:
        self.gateway = gateway
        server = gateway.config.server
        self.inflight = InflightCounter(server.max_inflight)
        self.hub = ConnectionHub(
            limits_of(gateway.config),
            self.start_request,
            ssl_options,
            require_client_cert=server.tls is not None and server.tls.require_client_cert,
        )

    def start_request(self, conn: ClientConnection) -> Exchange:
        return Exchange(self.gateway, conn, conn.context, self.inflight)

    @property
    def connections(self) -> set[ClientConnection]:
        return self.hub.connections


def limits_of(config: Config) -> ServerLimits:
    server = config.server
    return ServerLimits(
        max_header_bytes=server.max_header_bytes,
        header_timeout=server.header_timeout,
        idle_timeout=server.idle_timeout,
        body_timeout=server.body_timeout,
        send_timeout=server.send_timeout,
        max_connections=server.max_connections,
        backlog=server.backlog,
    )


class _MetricsHandler(tornado.web.RequestHandler):
    def initialize(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(self.metrics.exposition())


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


def bind(listen: str, backlog: int = 4096, copies: int = 1) -> list[list[socket.socket]]:
    """Bind before forking: one set of listening sockets per worker.

    With several workers every set is bound with ``SO_REUSEPORT`` to the same address, so each
    worker has its own accept queue and the kernel spreads new connections over them (one
    shared queue lets whichever worker wakes first take a whole burst). Port 0 picks one free
    port for all of them.
    """
    host, port = parse_listen(listen)
    reuse = copies > 1
    first = bind_sockets(port, host or None, backlog=backlog, reuse_port=reuse)
    sets = [first]
    port = first[0].getsockname()[1]
    try:
        for _ in range(copies - 1):
            sets.append(bind_sockets(port, host or None, backlog=backlog, reuse_port=True))
    except OSError:
        for sock in (s for group in sets for s in group):
            sock.close()
        raise
    return sets


class Lifecycle:
    """One worker's serving state: the current gateway, reloads, and the drain on shutdown."""

    def __init__(self, config: Config, config_path: str | None, sockets: list[socket.socket]) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = Metrics()
        self.access_log = AccessLog(config.server.access_log)
        self.gateway = Gateway(config, self.metrics, self.access_log)
        self.server = GatewayServer(self.gateway, _tls_context(config))
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
        self.server.hub.limits = limits_of(config)
        self.server.inflight.limit = new_server.max_inflight
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
        hub = self.server.hub
        hub.stop_accepting()
        hub.drain()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.server.inflight.count > 0:
            await asyncio.sleep(0.05)
        for tunnel in list(self.server.inflight.tunnels):
            tunnel.going_away()
        hub.close_all()
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
    await life.server.hub.listen(sockets)
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
    workers = config.server.workers or os.cpu_count() or 1
    try:
        socket_sets = bind(config.server.listen, config.server.backlog, workers)
    except OSError as exc:
        print(f"fastgw: cannot listen on {config.server.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if workers > 1:
        return _run_workers(config, config_path, socket_sets)
    return _run_loop(serve_forever(config, socket_sets[0], config_path=config_path, on_ready=on_ready))


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _run_workers(config: Config, config_path: str | None, socket_sets: list[list[socket.socket]]) -> int:
    """Fork one worker per socket set; the parent relays signals and serves /metrics.

    Metrics from all workers are aggregated by prometheus-client's multiprocess mode: each worker
    writes its samples to files in PROMETHEUS_MULTIPROC_DIR (set by the CLI before
    prometheus_client was imported), and the parent's /metrics reads them all.
    """
    children: set[int] = set()
    everything = [sock for group in socket_sets for sock in group]
    for own in socket_sets:
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            for sock in everything:
                if sock not in own:
                    sock.close()  # another worker's queue: never accepted from here
            code = 1
            try:
                code = _run_loop(serve_forever(config, own, config_path=config_path, serve_metrics=False))
            finally:
                os._exit(code)
        children.add(pid)
    for sock in everything:
        sock.close()
    log.info("started %d workers: %s", len(socket_sets), ", ".join(str(pid) for pid in sorted(children)))
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
