"""Filters that read or rewrite the whole request body: webhook signatures, transform, namespace.

They run only on routes that buffer the body (up to its ``body_limit``), in this order: the
webhook signature over the bytes as received, then transform, then namespace; the v2 signature
(``sign.py``) is computed afterwards over the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..body_rewrite import namespace_request, transform_body
from ..config import HmacConfig, NamespaceConfig, TransformConfig
from ..errors import LocalReply
from ..metrics import Metrics
from ..pipeline import Filter
from ..webhook import verify_webhook

if TYPE_CHECKING:
    from ..exchange import Exchange


class WebhookVerify(Filter):
    """``auth: hmac``: the body must carry a valid, fresh signature (401 otherwise)."""

    PRIORITY = 900

    def __init__(self, cfg: HmacConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.failures = metrics.auth_failures.labels("bad_webhook_signature")

    def on_body(self, ex: Exchange, body: bytes) -> bytes:
        if not verify_webhook(self.cfg, ex.headers, body):
            self.failures.inc()
            raise LocalReply("UNAUTHORIZED", "Invalid webhook signature")
        return body


class Transform(Filter):
    """Kong-style request transformer on JSON bodies (its header changes are compiled in the route)."""

    PRIORITY = 652

    def __init__(self, cfg: TransformConfig) -> None:
        self.cfg = cfg

    def on_body(self, ex: Exchange, body: bytes) -> bytes:
        return transform_body(self.cfg, body, ex.headers.get("Content-Type"))


class Namespace(Filter):
    """Per-user isolation of a shared backend: a caller without a user id is refused (401);
    the configured query parameters and path segments get the ``<user><separator>`` prefix."""

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
    """The body half of ``namespace``: the configured top-level JSON fields get the prefix."""

    PRIORITY = 651

    def __init__(self, cfg: NamespaceConfig) -> None:
        self.cfg = NamespaceConfig(separator=cfg.separator, json_fields=cfg.json_fields)

    def on_body(self, ex: Exchange, body: bytes) -> bytes:
        principal = ex.principal
        if principal is None:
            return body
        _, _, body = namespace_request(self.cfg, principal.user_id, "", "", body, ex.headers)
        return body
