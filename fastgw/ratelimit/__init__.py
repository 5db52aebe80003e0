"""Rate limits and quotas (SPEC section 7)."""

from __future__ import annotations

from tornado.httputil import HTTPHeaders

from ..auth.principal import Principal
from ..config import Config, RouteConfig
from ..metrics import Metrics

Headers = tuple[tuple[str, str], ...]


class Limiter:
    """Token-bucket rate limits and per-plan quotas for each request.

    ``check`` returns the ``RateLimit-*`` headers for the response, or raises a
    ``LocalReply("RATE_LIMITED")`` carrying them plus ``Retry-After``.
    """

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics

    async def check(
        self,
        pattern: str,
        route: RouteConfig | None,
        principal: Principal | None,
        client_ip: str,
        headers: HTTPHeaders,
    ) -> Headers:
        return ()

    async def check_quota(self, route: RouteConfig, principal: Principal | None) -> None:
        return None

    async def close(self) -> None:
        return None
