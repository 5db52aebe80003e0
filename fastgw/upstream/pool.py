"""Keep-alive connection pools per target, and the upstream group that picks a target.

Idle connections stay registered with the event loop, so an upstream that closes one is noticed
(``connection_lost``) before we hand it out again; the remaining race (a close in flight while
we write) is covered by the proxy retrying bodiless requests on a fresh connection.

``max_connections`` is exact (SPEC 13.7): ``active`` never exceeds it. A freed slot is handed to
the oldest waiter, never put back for whoever comes first; waiters are bounded in number
(``max_pending``) and in time (``connect_timeout``), and a waiter that is cancelled or times out
leaves the queue and never holds a slot. On a reload the old pool is ``retire``d: connections
released to it afterwards go to its successor's idle pool or are closed, never parked.
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
# Requests queued for a slot of one upstream beyond which a newcomer gets PoolExhausted at once
# (Envoy's max_pending_requests default): a slow upstream then sheds load instead of piling up
# an unbounded queue of requests that would mostly time out anyway.
MAX_PENDING_REQUESTS = 1024


class ConnectFailed(Exception):
    """The target could not be reached (refused, unreachable, or connect timeout)."""


class PoolExhausted(Exception):
    """``max_connections`` were busy for longer than the connect timeout, or the queue was full."""


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
        max_pending: int = MAX_PENDING_REQUESTS,
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
        self.max_pending = max_pending
        self.active = 0  # slots taken: connections handed out, plus connects under way
        # Queued connect() calls, oldest first; a future's result is a slot handed over to it.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.retired = False  # replaced by a reload (retire) or closed: it keeps no idle connection
        self._successor: Upstream | None = None

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

        At ``max_connections`` busy connections the caller queues (behind everyone already
        queued) for up to the connect timeout, then ``PoolExhausted``; with ``max_pending``
        callers already queued it gets ``PoolExhausted`` at once.
        """
        if self.active >= self.max_connections or self._waiters:
            await self._wait_for_slot()  # returns holding a slot handed over by _free_slot
        else:
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

    @property
    def pending(self) -> int:
        """How many connect() calls are queued for a slot."""
        return len(self._waiters)

    async def _wait_for_slot(self) -> None:
        if len(self._waiters) >= self.max_pending:
            raise PoolExhausted(f"{self.name}: {self.max_pending} requests already wait for a connection")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.connect_timeout, self._expire, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            # The caller went away (a client that hung up). Either it was still queued (the
            # future is cancelled with the task): leave the queue. Or a slot was handed to it
            # just before, and it never ran to take it: pass the slot on, never leak it.
            if waiter.cancelled():
                self._forget(waiter)
            elif waiter.exception() is None:
                self._free_slot()
            raise
        finally:
            timer.cancel()

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._forget(waiter)
            waiter.set_exception(
                PoolExhausted(f"{self.name}: no connection free within {self.connect_timeout}s")
            )

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _free_slot(self) -> None:
        """Give up one slot: to the oldest live waiter if any (``active`` stays), else free it."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1

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
        """Return a connection after its exchange; reusable ones go back to the idle pool (the
        successor's, once this pool is retired)."""
        target.active -= 1
        self._free_slot()
        if ok:
            target.failures = 0
        if not conn.reusable or conn.closed:
            conn.abort()
        elif self.retired:
            self._pass_on(target, [conn])
        elif len(target.idle) < _MAX_IDLE_PER_TARGET:
            target.idle.append(conn)
        else:
            conn.abort()

    def record_failure(self, target: Target) -> None:
        target.failures += 1
        if self.circuit_failures and target.failures >= self.circuit_failures:
            target.ejected_until = time.monotonic() + self.circuit_cooldown
            target.failures = 0

    def retire(self, successor: Upstream | None) -> None:
        """Reload: ``successor`` (the new config's upstream of this name, or None when it was
        removed) serves new requests from now on.

        The idle connections move to the successor's target of the same address while it has
        room, and so does every connection released here from now on; the rest are closed.
        Requests still running here finish on their connections; queued ones keep their place.
        """
        self.retired = True
        self._successor = successor
        for target in self.targets:
            idle, target.idle = target.idle, deque()
            self._pass_on(target, [conn for conn in reversed(idle) if not conn.closed])

    def close(self) -> None:
        """Close the idle connections; any released later are passed on (retired) or closed."""
        self.retired = True
        for target in self.targets:
            while target.idle:
                target.idle.pop().abort()

    def _pass_on(self, target: Target, conns: list[UpstreamConnection]) -> None:
        """Hand ``conns`` (freshest first) of a retired pool to the live successor, or close them."""
        heir = self._successor
        while heir is not None and heir.retired:  # reloaded again since
            heir = heir._successor
        if heir is not None:
            conns = heir._adopt(target, conns)
        for conn in conns:
            conn.abort()

    def _adopt(self, origin: Target, conns: list[UpstreamConnection]) -> list[UpstreamConnection]:
        """Take idle connections (freshest first) to ``origin``'s address while there is room;
        returns the ones not taken. Room: open connections (busy and idle) stay within
        ``max_connections`` and the idle ones within the per-target cap."""
        key = (origin.host, origin.port, origin.tls)
        target = next((t for t in self.targets if (t.host, t.port, t.tls) == key), None)
        if target is None:
            return conns
        room = min(
            _MAX_IDLE_PER_TARGET - len(target.idle),
            self.max_connections - self.active - sum(len(t.idle) for t in self.targets),
        )
        taken = conns[: max(room, 0)]
        # Older than the successor's own idle connections: to the left, the freshest rightmost.
        target.idle.extendleft(taken)
        return conns[len(taken) :]

    def _client_ssl(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl
