"""Session cookies checked by an external auth service (SPEC section 4, e.g. Better Auth).

The gateway sends ``GET verify_url`` with ``Cookie: <name>=<value>`` (only that cookie) and
reads the user from the JSON answer: Better Auth's get-session returns
``{"session": {...}, "user": {"id": ..., "role": ...}}`` for a live session and ``null`` otherwise.

- An answer is a fact about the cookie: valid ones are cached for ``cache_ttl``, invalid ones for
  at most 5 s (a user who just logged in must not be locked out for long). The cache is a bounded
  LRU, and concurrent requests carrying the same uncached cookie share one lookup.
- The service failing is not a fact about the cookie: a 5xx, a timeout, a refused connection or
  a garbled 2xx is a 503 for the caller (never a 401 that would log a user out, never a pass),
  and is not cached. After a few straight failures the lookups stop for 2 s, so a dead service
  is not hammered by every request that carries a cookie.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from typing import NoReturn

from ..config import SessionConfig
from ..errors import LocalReply
from ..metrics import Metrics
from . import http
from .authenticator import AuthFailure, fingerprint
from .jwt import claim
from .principal import Principal

# RFC 6265 cookie-value: the value goes back out in a header, so nothing else may pass.
_COOKIE_OCTETS = r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]"
COOKIE_VALUE = re.compile(rf'{_COOKIE_OCTETS}+|"{_COOKIE_OCTETS}*"')
MAX_COOKIE = 4096
FAILURE_TTL = 5.0
CACHE_ENTRIES = 10_000
CONNECT_TIMEOUT = 1.0
REQUEST_TIMEOUT = 2.0
BREAKER_FAILURES = 3
BREAKER_SECONDS = 2.0


class _Unavailable(Exception):
    pass


class SessionVerifier:
    """A ``CookieVerifier`` for ``auth.session``."""

    def __init__(self, config: SessionConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.cookie_name = config.cookie
        self.calls = 0  # lookups sent to the auth service (for tests and debugging)
        self._cache: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        self._failures = 0
        self._open_until = 0.0

    def take_over(self, previous: SessionVerifier) -> None:
        """Reload: copy ``previous``'s cached answers and breaker state when its config is the
        same (another verify_url or field mapping could answer differently, so then nothing).
        Lookups still running on ``previous`` finish there."""
        if previous.config != self.config:
            return
        self._cache = OrderedDict(previous._cache)
        self._failures = previous._failures
        self._open_until = previous._open_until

    async def verify(self, cookie_value: str) -> Principal:
        if len(cookie_value) > MAX_COOKIE or not COOKIE_VALUE.fullmatch(cookie_value):
            raise AuthFailure("invalid_session", "Invalid or expired session")
        hit = self._cache.get(cookie_value)
        if hit is not None:
            if hit[0] > time.monotonic():
                self._cache.move_to_end(cookie_value)
                principal = hit[1]
                if principal is None:
                    raise AuthFailure("invalid_session", "Invalid or expired session")
                return principal
            del self._cache[cookie_value]
        future = self._inflight.get(cookie_value)
        if future is None:
            future = asyncio.ensure_future(self._lookup(cookie_value))
            self._inflight[cookie_value] = future
            future.add_done_callback(lambda _: self._inflight.pop(cookie_value, None))
        principal = await asyncio.shield(future)
        if principal is None:
            raise AuthFailure("invalid_session", "Invalid or expired session")
        return principal

    async def _lookup(self, value: str) -> Principal | None:
        if time.monotonic() < self._open_until:
            self._unavailable()
        try:
            principal = await self._ask(value)
        except _Unavailable:
            self._failures += 1
            if self._failures >= BREAKER_FAILURES:
                self._open_until = time.monotonic() + BREAKER_SECONDS
            self._unavailable()
        self._failures = 0
        ttl = self.config.cache_ttl if principal is not None else min(FAILURE_TTL, self.config.cache_ttl)
        if ttl > 0:
            self._cache[value] = (time.monotonic() + ttl, principal)
            if len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return principal

    def _unavailable(self) -> NoReturn:
        self.metrics.auth_failures.labels("session_unavailable").inc()
        raise LocalReply("SERVICE_UNAVAILABLE", "Authentication service unavailable")

    async def _ask(self, value: str) -> Principal | None:
        """The session's principal, None for an invalid session; _Unavailable if no usable answer."""
        self.calls += 1
        headers = {"Cookie": f"{self.cookie_name}={value}"}
        try:
            status, body = await http.get(self.config.verify_url, headers, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
        except http.FetchError:
            raise _Unavailable from None
        if status in (401, 403):
            return None
        if not 200 <= status < 300:
            raise _Unavailable
        if not body.strip():
            return None
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise _Unavailable from None
        if not isinstance(document, dict):
            return None  # null (Better Auth's "no session"), or nothing we can read a user from
        user_id = claim(document, self.config.user_id_field)
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        role = claim(document, self.config.role_field)
        if not isinstance(user_id, str) or not user_id or not isinstance(role, str | None):
            return None
        return Principal(
            user_id=user_id, role=role or "", source="session", token_fingerprint=fingerprint(value)
        )
