"""Prometheus collectors under the exact names of SPEC section 9.

Label children are cached per label tuple: ``Counter.labels()`` validates and hashes its
arguments on every call, which is measurable at proxy request rates.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """All gateway metrics in one registry (one per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests_total = Counter(
            "fastgw_requests_total", "Requests answered", ["route", "method", "status"], registry=r
        )
        self.request_duration = Histogram(
            "fastgw_request_duration_seconds",
            "Time from request head to last response byte",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "fastgw_upstream_duration_seconds",
            "Time from upstream request start to the end of its response",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "fastgw_upstream_errors_total", "Upstream failures", ["upstream", "reason"], registry=r
        )
        self.ratelimited = Counter(
            "fastgw_ratelimited_total", "Requests refused by a rate limit", ["policy"], registry=r
        )
        self.ratelimit_backend_errors = Counter(
            "fastgw_ratelimit_backend_errors_total",
            "Failed calls to the shared rate-limit backend (Redis); checks fell back to local buckets",
            registry=r,
        )
        self.auth_failures = Counter(
            "fastgw_auth_failures_total", "Refused credentials", ["reason"], registry=r
        )
        self.inflight = Gauge(
            "fastgw_inflight_requests", "Requests being served", registry=r, multiprocess_mode="livesum"
        )
        self.websocket_connections = Gauge(
            "fastgw_websocket_connections",
            "Open proxied WebSocket connections",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.llm_tokens = Counter(
            "fastgw_llm_tokens_total", "LLM tokens seen in responses", ["model", "kind"], registry=r
        )
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}
        self._upstream_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests_total.labels(route, method, str(status))
        counter.inc()
        hist = self._duration_children.get(route)
        if hist is None:
            hist = self._duration_children[route] = self.request_duration.labels(route)
        hist.observe(seconds)

    def observe_upstream(self, upstream: str, seconds: float) -> None:
        hist = self._upstream_children.get(upstream)
        if hist is None:
            hist = self._upstream_children[upstream] = self.upstream_duration.labels(upstream)
        hist.observe(seconds)

    def upstream_error(self, upstream: str, reason: str) -> None:
        self.upstream_errors.labels(upstream, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
