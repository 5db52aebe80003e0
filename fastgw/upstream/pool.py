"""Keep-alive connection pools per target, and the upstream group that picks a target.

Idle connections stay registered with the event loop, so an upstream that closes one is noticed
(``connection_lost``) before we hand it out again; the remaining race (a close in flight while
we write) is covered by the proxy retrying bodiless requests on a fresh connection.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .client import UpstreamConnection

_MAX_IDLE_PER_TARGET = 256


class ConnectFailed(Exception):
    """The target could not be reached (refused, unreachable, or connect timeout)."""


class PoolExhausted(Exception):
    """``max_connections`` were busy for longer than the connect timeout."""


@dataclass(eq=False)
class Target:
    """One upstream address with its idle connections and passive health state."""

    host: str
    port: int
    tls: bool
    base_path: str
    host_header: str
    idle: deque[UpstreamConnection] = field(default_factory=deque)
    active: int = 0
    failures: int = 0
    ejected_until: float = 0.0

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        host = parts.hostname or "127.0.0.1"
        default_port = (tls and port == 443) or (not tls and port == 80)
        netloc_host = f"[{host}]" if ":" in host else host
        host_header = netloc_host if default_port else f"{netloc_host}:{port}"
        return cls(host, port, tls, parts.path.rstrip("/"), host_header)


class Upstream:
    """A named group of targets sharing timeouts, balancing and connection limits."""

    def __init__(
        self,
        name: str,
        targets: list[str],
        *,
        balance: str = "round_robin",
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 1,
        max_connections: int = 512,
        circuit_failures: int = 5,
        circuit_cooldown: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.targets = [Target.from_url(url) for url in targets]
        self.balance = balance
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.max_connections = max_connections
        self.circuit_failures = circuit_failures
        self.circuit_cooldown = circuit_cooldown
        self.extra_headers = tuple((headers or {}).items())
        self._next = 0
        self._ssl: ssl.SSLContext | None = None
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def pick(self, exclude: Target | None = None) -> Target | None:
        """Choose a live target (round robin or least active), or None when all are ejected."""
        now = time.monotonic()
        live = [t for t in self.targets if t.ejected_until <= now and t is not exclude]
        if not live:
            live = [t for t in self.targets if t.ejected_until <= now]
            if not live:
                return None
        self._next = (self._next + 1) % len(live)
        if self.balance == "least_conn":
            # Fewest active connections; ties rotate so idle targets share the load.
            rotated = live[self._next :] + live[: self._next]
            return min(rotated, key=lambda t: t.active)
        return live[self._next]

    async def connect(self, target: Target) -> tuple[UpstreamConnection, bool]:
        """An idle pooled connection to ``target`` or a new one; the bool says it was reused.

        At ``max_connections`` busy connections the caller queues for up to the connect timeout
        (a bounded wait, then ``PoolExhausted``) instead of opening more sockets than asked.
        """
        if self.active >= self.max_connections:
            await self._wait_for_slot()
        self.active += 1
        try:
            return await self._connect(target)
        except BaseException:
            self._free_slot()
            raise

    def take_idle(self, target: Target) -> UpstreamConnection | None:
        """A pooled idle connection to ``target`` without waiting, when one is free and nobody
        queues for a slot; None otherwise (then ``connect``). Counts as a busy connection."""
        if self.active >= self.max_connections or self._waiters:
            return None
        idle = target.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self.active += 1
                target.active += 1
                return conn
        return None

    async def _wait_for_slot(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.connect_timeout)
        except TimeoutError:
            raise PoolExhausted() from None
        finally:
            if not waiter.done():
                waiter.cancel()

    def _free_slot(self) -> None:
        self.active -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def _connect(self, target: Target) -> tuple[UpstreamConnection, bool]:
        idle = target.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                target.active += 1
                return conn, True
        loop = asyncio.get_running_loop()
        ssl_context = self._client_ssl() if target.tls else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    UpstreamConnection,
                    target.host,
                    target.port,
                    ssl=ssl_context,
                    server_hostname=target.host if ssl_context else None,
                ),
                self.connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            self.record_failure(target)
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        target.active += 1
        return conn, False

    def release(self, target: Target, conn: UpstreamConnection, ok: bool) -> None:
        """Return a connection after its exchange; reusable ones go back to the idle pool."""
        target.active -= 1
        self._free_slot()
        if ok:
            target.failures = 0
        if conn.reusable and not conn.closed and len(target.idle) < _MAX_IDLE_PER_TARGET:
            target.idle.append(conn)
        else:
            conn.abort()

    def record_failure(self, target: Target) -> None:
        target.failures += 1
        if self.circuit_failures and target.failures >= self.circuit_failures:
            target.ejected_until = time.monotonic() + self.circuit_cooldown
            target.failures = 0

    def close(self) -> None:
        for target in self.targets:
            while target.idle:
                target.idle.pop().abort()

    def _client_ssl(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl
