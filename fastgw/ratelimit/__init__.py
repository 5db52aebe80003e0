"""Rate limits and quotas (SPEC section 7).

One ``Limiter`` per gateway (per worker process). Without ``redis`` it limits with in-process
token buckets; with ``redis`` the buckets and quota counters live in Redis and the in-process
ones only take over while Redis is unreachable (see ``redis_backend``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

from ..auth.principal import Principal
from ..config import Config, QuotaConfig, RouteConfig
from ..errors import LocalReply
from ..http1.headers import Headers as RequestHeaders
from ..metrics import Metrics
from .local import Headers, LocalLimiter, Policy, conclude, safe_key
from .quotas import LocalQuotas
from .redis_backend import RedisBackend, bucket_args, parse_reply

__all__ = ["Headers", "Limiter"]


class Limiter:
    """Token-bucket rate limits and per-plan quotas for each request.

    ``check`` returns the ``RateLimit-*`` headers for the response, or raises a
    ``LocalReply("RATE_LIMITED")`` carrying them plus ``Retry-After``; ``check_quota`` raises
    ``LocalReply("QUOTA_EXCEEDED")`` once the caller's plan allowance for the period is used.
    """

    def __init__(self, config: Config, metrics: Metrics, *, max_keys: int = 100_000) -> None:
        self.config = config
        self.metrics = metrics
        self.local = LocalLimiter(config, metrics, max_keys)
        self.quotas = LocalQuotas(config.rate_limits.quotas)
        self.remote = RedisBackend(config.redis, metrics) if config.redis else None
        self._redis_args: dict[tuple[Policy, ...], tuple[bytes, ...]] = {}

    def policies_for(self, route: RouteConfig | None) -> tuple[Policy, ...]:
        """The policies a route is subject to (``None``: a built-in endpoint); call at config load."""
        return self.local.policies_for(route)

    def check_now(
        self,
        pattern: str,
        policies: tuple[Policy, ...],
        principal: Principal | None,
        client_ip: str,
        headers: RequestHeaders,
    ) -> Headers | Awaitable[Headers]:
        """The RateLimit headers at once from local buckets, or an awaitable when Redis decides."""
        remote = self.remote
        if remote is not None and remote.available:
            return self.check(pattern, policies, principal, client_ip, headers)
        return self.local.check(policies, pattern, principal, client_ip, headers, time.monotonic())

    async def check(
        self,
        pattern: str,
        policies: tuple[Policy, ...],
        principal: Principal | None,
        client_ip: str,
        headers: RequestHeaders,
    ) -> Headers:
        if not policies:
            return ()
        remote = self.remote
        if remote is not None and remote.available:
            keys = [p.redis_prefix + p.key(pattern, principal, client_ip, headers) for p in policies]
            reply = await remote.take_buckets(keys, self._args(policies))
            if reply is not None:
                return conclude(policies, parse_reply(reply))
        return self.local.check(policies, pattern, principal, client_ip, headers, time.monotonic())

    def _args(self, policies: tuple[Policy, ...]) -> tuple[bytes, ...]:
        args = self._redis_args.get(policies)
        if args is None:
            args = self._redis_args[policies] = tuple(
                arg for p in policies for arg in bucket_args(p.per_second, p.seconds_per_token, p.burst)
            )
        return args

    async def check_quota(self, route: RouteConfig, principal: Principal | None) -> None:
        pending = self.check_quota_now(route, principal)
        if pending is not None:
            await pending

    def check_quota_now(self, route: RouteConfig, principal: Principal | None) -> Awaitable[None] | None:
        """Count the request against the caller's plan allowance; a refused one is not counted.

        No principal, no user id, no plan, or a plan without a quota: nothing to count. Local
        counters answer at once (``None``, or ``LocalReply`` raised); Redis returns an awaitable.
        """
        if not route.quota or principal is None or not principal.plan or not principal.user_id:
            return None
        quota = self.config.rate_limits.quotas.get(principal.plan)
        if quota is None:
            return None
        user = safe_key(principal.user_id)
        remote = self.remote
        if remote is not None and remote.available:
            return self._remote_quota(user, quota)
        self._take_local_quota(user, quota)
        return None

    async def _remote_quota(self, user: str, quota: QuotaConfig) -> None:
        assert self.remote is not None
        reply = await self.remote.take_quota(f"fastgw:q:{quota.per}:{user}", quota.requests, quota.per)
        if reply is None:
            self._take_local_quota(user, quota)
            return
        allowed, end, now = bool(reply[0]), int(reply[2]), float(reply[3])
        if not allowed:
            raise _quota_exceeded(quota, end, now)

    def _take_local_quota(self, user: str, quota: QuotaConfig) -> None:
        now = time.time()
        allowed, _, end = self.quotas.take(user, quota, now)
        if not allowed:
            raise _quota_exceeded(quota, end, now)

    async def close(self) -> None:
        if self.remote is not None:
            await self.remote.close()


def _quota_exceeded(quota: QuotaConfig, end: float, now: float) -> LocalReply:
    return LocalReply(
        "QUOTA_EXCEEDED",
        f"Quota of {quota.requests} requests per {quota.per} used up",
        headers=(("Retry-After", str(max(1, int(end - now)))),),
    )
