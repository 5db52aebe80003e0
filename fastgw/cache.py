"""The in-memory response cache behind ``cache:`` routes (SPEC 13.3): one per process.

- Entries are whole 200 responses (status, relayed headers, body) with an expiry; the cache
  holds at most ``server.cache_memory`` bytes of them (bodies plus headers), the least
  recently used evicted first.
- Concurrent misses for one key make one upstream request: the first becomes the *leader*,
  the others wait (at most the route's read timeout) for it to finish, then look again. If the
  leader's answer could not be stored, each waiter goes upstream itself.
- ``freshness`` reads the upstream's ``Cache-Control``: ``no-store`` (and ``private`` in a
  cache shared between users) is never stored; a shorter ``s-maxage`` or ``max-age`` wins over
  the route's ``ttl``.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

# Headers never stored: recomputed for each answer (or hop-by-hop, already dropped upstream).
UNSTORED = frozenset({"content-length", "x-request-id", "traceparent", "age", "x-cache", "set-cookie"})


@dataclass(slots=True)
class Entry:
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float
    expires_at: float
    size: int = 0

    def age(self, now: float) -> int:
        return max(0, int(now - self.stored_at))


@dataclass(slots=True)
class Fill:
    """A miss being answered by its leader; waiters wait on ``done``."""

    done: asyncio.Event = field(default_factory=asyncio.Event)


def freshness(cache_control: str | None, ttl: float, shared: bool) -> float | None:
    """Seconds a response may be kept, or None when it must not be stored."""
    if not cache_control:
        return ttl
    lifetime = ttl
    max_age: float | None = None
    s_maxage: float | None = None
    for directive in cache_control.lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name == "no-store" or (name == "private" and shared) or name == "no-cache":
            return None
        if name in ("max-age", "s-maxage"):
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return None  # a malformed lifetime: do not guess
            if name == "max-age":
                max_age = seconds
            else:
                s_maxage = seconds
    upstream = s_maxage if s_maxage is not None and shared else max_age
    if upstream is not None:
        lifetime = min(lifetime, upstream)
    return lifetime if lifetime > 0 else None


class ResponseCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.fills: dict[str, Fill] = {}

    def get(self, key: str, now: float) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        entry.size = len(entry.body) + sum(len(n) + len(v) for n, v in entry.headers) + len(key) + 64
        if entry.size > self.capacity:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = entry
        self.used += entry.size
        while self.used > self.capacity:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self.used -= entry.size

    def __len__(self) -> int:
        return len(self._entries)
