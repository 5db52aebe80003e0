"""One module per filter of the per-route pipeline (see ``fastgw.pipeline``), and the assembly.

``route_filters`` decides, once per route when the config is compiled, which filters the route
needs; a feature the route does not use has no filter in its pipeline and costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..pipeline import Filter, Pipeline
from .auth import Authenticate, Authorize
from .body import Namespace, NamespaceFields, Transform, WebhookVerify
from .cache import ResponseCaching
from .completion import AccessLogging, RequestMetrics, UsageRecording
from .identity import IdentityHeaders
from .limits import Quota, RateLimit
from .llm import OpenAIUsage
from .sign import Sign
from .sse import SseKeepaliveFilter
from .upstream_token import UpstreamToken

if TYPE_CHECKING:
    from ..config import RouteConfig
    from ..gateway import Gateway
    from ..ratelimit.local import Policy


def route_pipeline(
    gw: Gateway, rc: RouteConfig, policies: tuple[Policy, ...], has_upstream: bool
) -> Pipeline:
    """The pipeline of one configured route."""
    filters: list[Filter] = []
    if rc.auth in ("required", "optional"):
        filters.append(Authenticate(gw.auth, required=rc.auth == "required", query_token=rc.query_token))
        if rc.roles or rc.scopes:
            filters.append(Authorize(gw, rc.path, tuple(rc.roles), tuple(rc.scopes)))
    if policies:
        filters.append(RateLimit(gw.limiter, rc.path, policies))
    if rc.quota:
        filters.append(Quota(gw.limiter, rc))
    if rc.auth == "hmac" and rc.hmac is not None:
        filters.append(WebhookVerify(rc.hmac, gw.metrics))
    if rc.transform is not None and (rc.transform.remove or rc.transform.rename or rc.transform.add):
        filters.append(Transform(rc.transform))
    if rc.namespace is not None:
        filters.append(Namespace(rc.namespace))
        if rc.namespace.json_fields:
            filters.append(NamespaceFields(rc.namespace))
    if rc.llm == "openai":
        filters.append(OpenAIUsage(gw.metrics))
    if rc.sse_keepalive:
        filters.append(SseKeepaliveFilter(rc.sse_keepalive))
    if rc.auth in ("required", "optional"):
        filters.append(IdentityHeaders(gw.identity_header_pairs))
    if rc.cache is not None and has_upstream:
        per_user = rc.auth in ("required", "optional") and not rc.cache.shared
        wait = rc.read_timeout or 60.0
        filters.append(ResponseCaching(gw.response_cache, rc.cache, per_user, rc.path, gw.metrics, wait))
    token_source = gw.upstream_tokens.get(rc.upstream or "")
    if token_source is not None:
        filters.append(UpstreamToken(token_source))
    if rc.sign and gw.signing_secret is not None:
        filters.append(Sign(gw.signing_secret))
    filters.extend(completion_filters(gw, rc.path, has_upstream))
    return Pipeline.compile(filters)


def completion_filters(gw: Gateway, label: str, records_usage: bool) -> list[Filter]:
    """Metrics and the access log for every request; usage records for proxied ones."""
    filters: list[Filter] = [RequestMetrics(gw.metrics, label), AccessLogging(gw.access_log)]
    if records_usage:
        filters.append(UsageRecording(gw.usage))
    return filters


def local_pipeline(gw: Gateway, label: str) -> Pipeline:
    """What a request answered by the gateway itself (built-ins, 404s) goes through."""
    return Pipeline.compile(completion_filters(gw, label, False))
