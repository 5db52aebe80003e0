"""Rate limits and per-plan quotas (SPEC 7): 429 with the RateLimit headers."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..pipeline import Filter
from ..ratelimit import Limiter
from ..ratelimit.local import Policy

if TYPE_CHECKING:
    from ..config import RouteConfig
    from ..exchange import Exchange
    from ..ratelimit.local import Headers as LimitHeaders


class RateLimit(Filter):
    """Take one token from each of the route's buckets; local buckets answer without waiting."""

    PRIORITY = 800

    def __init__(self, limiter: Limiter, pattern: str, policies: tuple[Policy, ...]) -> None:
        self.limiter = limiter
        self.pattern = pattern
        self.policies = policies

    def on_request(self, ex: Exchange) -> Awaitable[None] | None:
        result = self.limiter.check_now(self.pattern, self.policies, ex.principal, ex.client_ip, ex.headers)
        if isinstance(result, tuple):
            ex.limit_headers = result
            return None
        return self._wait(ex, result)

    async def _wait(self, ex: Exchange, pending: Awaitable[LimitHeaders]) -> None:
        ex.limit_headers = await pending


class Quota(Filter):
    """Count the request against the caller's plan allowance (429 QUOTA_EXCEEDED over it)."""

    PRIORITY = 790

    def __init__(self, limiter: Limiter, route: RouteConfig) -> None:
        self.limiter = limiter
        self.route = route

    def on_request(self, ex: Exchange) -> Awaitable[None] | None:
        return self.limiter.check_quota_now(self.route, ex.principal)
