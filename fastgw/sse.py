"""Keepalive comments for idle server-sent event streams (route key ``sse_keepalive``).

Load balancers close connections that carry nothing for a while (AWS: 60 s by default). While
an event stream is silent for ``interval``, the gateway writes the SSE comment ``: ping`` to
the client, and only between events: the upstream's own bytes are never split or altered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PING = b": ping\n\n"
_EVENT_ENDS = (b"\n\n", b"\r\r", b"\r\n\r\n")


class SseKeepalive:
    __slots__ = ("_write", "_interval", "_tail", "_last_write", "_timer")

    def __init__(self, write: Callable[[bytes], None], interval: float) -> None:
        self._write = write
        self._interval = interval
        self._tail = b"\n\n"
        self._last_write = time.monotonic()
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(interval, self._tick)

    def saw(self, data: bytes) -> None:
        """The upstream wrote ``data`` to the client."""
        self._last_write = time.monotonic()
        self._tail = (self._tail + data[-4:])[-4:]

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        now = time.monotonic()
        idle = now - self._last_write
        if idle >= self._interval and self._tail.endswith(_EVENT_ENDS):
            self._write(PING)
            self._last_write = now
            idle = 0.0
        wait = self._interval - idle if idle < self._interval else self._interval
        self._timer = asyncio.get_running_loop().call_later(wait, self._tick)
