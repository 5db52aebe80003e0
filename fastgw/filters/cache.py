"""``cache:`` on a route (SPEC 13.3): answer GET and HEAD from memory, coalesce misses.

The last request hook (after auth, limits and quota, so a cached answer is still admitted
like any other): a fresh entry is answered at once with ``X-Cache: HIT`` and ``Age``; a miss
whose key another request is already fetching waits for it (see ``fastgw.cache``). A miss
goes upstream with ``X-Cache: MISS`` added to its answer and, when that answer is a complete
200 of at most ``max_entry`` bytes that the upstream lets us keep, stores it. A request with
``Cache-Control: no-cache`` is not answered from the cache but refreshes it.

The key: the normalised path, the query, the ``vary`` request headers and, on an
authenticated route unless ``shared: true``, the caller's user id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..cache import UNSTORED, Entry, Fill, ResponseCache, freshness
from ..config import CacheConfig
from ..forwarding import relayed_headers
from ..metrics import Metrics
from ..pipeline import Filter

if TYPE_CHECKING:
    from ..exchange import Exchange


class _State:
    """What the cache knows about one exchange (kept on the exchange as ``ex.cache_state``)."""

    __slots__ = ("key", "fill", "body", "storable", "lifetime")

    def __init__(self, key: str, fill: Fill | None) -> None:
        self.key = key
        self.fill = fill  # set when this request is the leader of its key's miss
        self.body: bytearray | None = None
        self.storable = False
        self.lifetime = 0.0


class ResponseCaching(Filter):
    PRIORITY = 550

    def __init__(
        self,
        cache: ResponseCache,
        config: CacheConfig,
        per_user: bool,
        label: str,
        metrics: Metrics,
        wait: float,
    ) -> None:
        self.cache = cache
        self.config = config
        self.per_user = per_user
        self.vary = tuple(name.lower() for name in config.vary)
        self.wait = wait
        counter = metrics.cache_requests
        self.hits = counter.labels(label, "hit")
        self.misses = counter.labels(label, "miss")
        self.bypasses = counter.labels(label, "bypass")

    def _key(self, ex: Exchange) -> str:
        parts = [ex.path, ex.query]
        parts.extend(ex.headers.get(name) or "" for name in self.vary)
        if self.per_user:
            parts.append(ex.user_id or "")
        return "\x00".join(parts)

    def on_request(self, ex: Exchange) -> Awaitable[None] | None:
        if ex.method not in ("GET", "HEAD"):
            return None
        key = self._key(ex)
        refresh = "no-cache" in (ex.headers.get("Cache-Control") or "").lower()
        if not refresh and self._answer(ex, key):
            return None
        if refresh:
            self.bypasses.inc()
        fill = self.cache.fills.get(key)
        if fill is not None and not refresh:
            return self._after_leader(ex, key, fill)
        self._lead(ex, key)
        return None

    def _answer(self, ex: Exchange, key: str) -> bool:
        at = time.time()
        entry = self.cache.get(key, at)
        if entry is None:
            return False
        self.hits.inc()
        ex.answer_cached(200, entry.body, (*entry.headers, ("Age", str(entry.age(at))), ("X-Cache", "HIT")))
        return True

    async def _after_leader(self, ex: Exchange, key: str, fill: Fill) -> None:
        try:
            await asyncio.wait_for(fill.done.wait(), self.wait)
        except TimeoutError:
            pass
        if not self._answer(ex, key):
            self._lead(ex, key)

    def _lead(self, ex: Exchange, key: str) -> None:
        self.misses.inc()
        fill = None
        if ex.method == "GET" and key not in self.cache.fills:
            fill = self.cache.fills[key] = Fill()
        ex.cache_state = _State(key, fill)
        ex.limit_headers = (*ex.limit_headers, ("X-Cache", "MISS"))

    def on_response_head(self, ex: Exchange, status: int, content_type: str) -> None:
        state = ex.cache_state
        if state is None or state.fill is None or status != 200:
            return
        cache_control = next(
            (v.decode("latin-1") for n, v in ex.upstream_headers if n.lower() == b"cache-control"), None
        )
        lifetime = freshness(cache_control, self.config.ttl, shared=not self.per_user)
        if lifetime is not None:
            state.storable = True
            state.lifetime = lifetime
            state.body = bytearray()

    def on_response_data(self, ex: Exchange, data: bytes) -> None:
        state = ex.cache_state
        if state is None or not state.storable or state.body is None:
            return
        state.body += data
        if len(state.body) > self.config.max_entry:
            state.storable = False
            state.body = None

    def on_complete(self, ex: Exchange) -> None:
        state = ex.cache_state
        if state is None:
            return
        ex.cache_state = None
        if state.storable and state.body is not None and ex.response_complete and ex.status == 200:
            skip = UNSTORED | {n.lower() for n, _ in ex.limit_headers}  # per-request headers
            relayed = relayed_headers(ex.upstream_headers)
            headers = tuple((n, v) for n, v in relayed if n.lower() not in skip)
            stored = time.time()
            self.cache.put(state.key, Entry(headers, bytes(state.body), stored, stored + state.lifetime))
        if state.fill is not None:
            if self.cache.fills.get(state.key) is state.fill:
                del self.cache.fills[state.key]
            state.fill.done.set()
