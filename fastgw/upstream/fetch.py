"""One whole upstream exchange collected in memory, for work done off a client connection.

The proxy streams; async jobs (``async: true`` routes) cannot, since nobody is waiting on the
other end: the response is kept, up to a bound, and stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from .client import UpstreamConnection
from .pool import ConnectFailed, PoolExhausted, Target, Upstream

MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class FetchFailed(Exception):
    """No usable response: ``reason`` is what a job status shows (never secrets)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Fetched:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class _Collector:
    """A ResponseSink that keeps the response and resolves a future with it."""

    done: asyncio.Future[Fetched]
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    last_activity: float = 0.0

    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
        self.last_activity = asyncio.get_running_loop().time()

    def on_data(self, data: bytes) -> bool:
        self.last_activity = asyncio.get_running_loop().time()
        if len(self.body) + len(data) > MAX_RESPONSE_BYTES:
            if not self.done.done():
                self.done.set_exception(FetchFailed("upstream response too large"))
            return True
        self.body += data
        return True

    def on_end(self) -> None:
        if not self.done.done():
            self.done.set_result(Fetched(self.status, self.headers, bytes(self.body)))

    def on_error(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(FetchFailed("upstream connection failed"))


async def fetch(
    upstream: Upstream,
    build_head: Callable[[Target], bytes],
    body: bytes,
    read_timeout: float,
) -> Fetched:
    """Send one request to a live target of ``upstream`` and collect the response.

    ``read_timeout`` bounds the wait for the first byte and each silence after it, as for
    proxied requests. Connect failures try another target once.
    """
    target = upstream.pick()
    if target is None:
        raise FetchFailed("no healthy upstream target")
    try:
        try:
            conn, _ = await upstream.connect(target)
        except ConnectFailed:
            target = upstream.pick(exclude=target) or target
            conn, _ = await upstream.connect(target)
    except (ConnectFailed, PoolExhausted):
        raise FetchFailed("upstream unreachable") from None
    loop = asyncio.get_running_loop()
    collector = _Collector(loop.create_future(), last_activity=loop.time())
    ok = False
    try:
        conn.begin(collector, build_head(target), head_request=False, body=body)
        while True:
            remaining = collector.last_activity + read_timeout - loop.time()
            if remaining <= 0:
                raise FetchFailed("upstream timed out")
            try:
                result = await asyncio.wait_for(asyncio.shield(collector.done), remaining)
            except TimeoutError:
                continue
            ok = True
            return result
    finally:
        if not ok:
            _give_up(conn)
            upstream.record_failure(target)
        upstream.release(target, conn, ok=ok)


def _give_up(conn: UpstreamConnection) -> None:
    conn.detach()
