"""Filters that read or rewrite the whole request body: webhook signatures, transform, namespace.

They run only on routes that buffer the body (up to its ``body_limit``), in this order: the
webhook signature over the bytes as received, then transform, then namespace; the v2 signature
(``sign.py``) is computed afterwards over the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, NoReturn

from ..body_rewrite import namespace_request, transform_body
from ..config import HmacConfig, NamespaceConfig, TransformConfig
from ..errors import LocalReply
from ..metrics import Metrics
from ..pipeline import Filter
from ..webhook import replay_key, replay_window, seen_signatures_for, verify_webhook

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..ratelimit.redis_backend import RedisBackend


class WebhookVerify(Filter):
    """``auth: hmac``: the body must carry a valid, fresh signature, not one already accepted
    within its replay window (SPEC 13.7); 401 ``UNAUTHORIZED`` otherwise.

    Only a signature that verified is remembered, so an invalid request never blocks a valid
    one. It is claimed in this process first (atomically, without awaiting), then with
    ``redis`` also in Redis (SET NX PX) so a replay on another instance is refused too. A Redis
    failure or an open circuit is treated as for rate limits: the in-process table alone
    decides, and the wait is bounded by the backend's timeouts.
    """

    PRIORITY = 900

    def __init__(self, cfg: HmacConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.failures = metrics.auth_failures.labels("bad_webhook_signature")
        self.replays = metrics.auth_failures.labels("webhook_replay")
        self.seen = seen_signatures_for(cfg)

    def on_body(self, ex: Exchange, body: bytes) -> bytes | Awaitable[bytes]:
        now = time.time()
        if not verify_webhook(self.cfg, ex.headers, body, now):
            self.failures.inc()
            raise LocalReply("UNAUTHORIZED", "Invalid webhook signature")
        window = replay_window(self.cfg, ex.headers, now)
        if window <= 0:
            return body
        signature = ex.headers.get(self.cfg.header) or ""
        clock = time.monotonic()
        if not self.seen.first_use(signature, clock + window, clock):
            self._replay()
        remote = ex.gw.limiter.remote
        if remote is None or not remote.available:
            return body
        return self._claim_shared(remote, signature, window, body)

    async def _claim_shared(self, remote: RedisBackend, signature: str, window: float, body: bytes) -> bytes:
        first = await remote.first_use(replay_key(self.cfg, signature), math.ceil(window * 1000))
        if first is False:  # None: Redis failed, the in-process claim stands
            self._replay()
        return body

    def _replay(self) -> NoReturn:
        self.replays.inc()
        raise LocalReply("UNAUTHORIZED", "Webhook signature already used")


class Transform(Filter):
    """Kong-style request transformer on JSON bodies (its header changes are compiled in the route)."""

    PRIORITY = 652

    def __init__(self, cfg: TransformConfig) -> None:
        self.cfg = cfg

    def on_body(self, ex: Exchange, body: bytes) -> bytes:
        return transform_body(self.cfg, body, ex.headers.get("Content-Type"))


class Namespace(Filter):
    """Per-user isolation of a shared backend: a caller without a user id is refused (401);
    the configured query parameters and path segments get the ``<user><separator>`` prefix.

    A user id that would make prefixed names ambiguous is refused too (401), and so is an
    encoded ``/`` in a path with namespaced segments (400): see ``body_rewrite.namespace_request``.
    """

    PRIORITY = 651

    def __init__(self, cfg: NamespaceConfig) -> None:
        self.cfg = NamespaceConfig(
            separator=cfg.separator,
            query_params=cfg.query_params,
            path_segments_after=cfg.path_segments_after,
        )

    def on_request(self, ex: Exchange) -> None:
        principal = ex.principal
        if principal is None:
            raise LocalReply("UNAUTHORIZED", "Authentication required")
        ex.forward_path, ex.forward_query, _ = namespace_request(
            self.cfg, principal.user_id, ex.forward_path, ex.forward_query, b"", ex.headers
        )


class NamespaceFields(Filter):
    """The body half of ``namespace``: the configured top-level JSON fields get the prefix.

    Every key a lenient decoder would take for a field (compared case-folded) is prefixed; one
    that is present but not a string is a 400. Fails closed: no principal is a 401.
    """

    PRIORITY = 651

    def __init__(self, cfg: NamespaceConfig) -> None:
        self.cfg = NamespaceConfig(separator=cfg.separator, json_fields=cfg.json_fields)

    def on_body(self, ex: Exchange, body: bytes) -> bytes:
        principal = ex.principal
        if principal is None:  # Namespace.on_request refuses first; never forward unprefixed
            raise LocalReply("UNAUTHORIZED", "Authentication required")
        _, _, body = namespace_request(self.cfg, principal.user_id, "", "", body, ex.headers)
        return body
