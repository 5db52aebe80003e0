"""Prometheus collectors under the exact names of SPEC section 9.

prometheus-client's ``labels()`` converts every value to ``str``, builds a tuple key and takes the
metric's lock on every call, which is measurable at proxy request rates. So label children are
bound once and reused:

- every labelled counter and histogram here is a ``BoundCounter`` / ``BoundHistogram``, whose
  ``labels()`` answers repeated positional calls from a dict of children (callers such as
  ``metrics.auth_failures.labels("missing").inc()`` keep working, just cheaper);
- ``Metrics.observe_request`` keeps a (route, method, status) -> children cache;
- ``Metrics.for_route(label)`` hands a caller that knows its route when the config is compiled a
  ``RouteMetrics`` holding the route's histogram child, whose ``observe`` is one dict lookup.

Every cache is bounded (``CHILD_CACHE_LIMIT``); beyond it calls fall back to plain ``labels()``,
so a flood of unusual label values costs speed, never memory here.

Children are ordinary prometheus-client children, so multiprocess mode (``workers > 1``, with
``PROMETHEUS_MULTIPROC_DIR`` set by the CLI before any metric exists) works unchanged: each child's
value lives in the worker's mmap file, and the parent's ``MultiProcessCollector`` sums them.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Route labels are config patterns, statuses ~60 values, methods a handful: a few thousand
# entries hold every legitimate combination.
CHILD_CACHE_LIMIT = 4096
# Per route: (method, status) pairs.
ROUTE_CACHE_LIMIT = 1024

_C = TypeVar("_C", bound="BoundCounter")
_H = TypeVar("_H", bound="BoundHistogram")


class BoundCounter(Counter):
    """A ``Counter`` whose ``labels(*values)`` is served from a bounded dict of children."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bound: dict[tuple[object, ...], Any] = {}

    def labels(self: _C, *labelvalues: object, **labelkwargs: object) -> _C:
        child: _C | None = _cached(self._bound, labelvalues, labelkwargs)
        if child is None:
            child = super().labels(*labelvalues, **labelkwargs)
            _remember(self._bound, labelvalues, labelkwargs, child)
        return child


class BoundHistogram(Histogram):
    """A ``Histogram`` whose ``labels(*values)`` is served from a bounded dict of children."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bound: dict[tuple[object, ...], Any] = {}

    def labels(self: _H, *labelvalues: object, **labelkwargs: object) -> _H:
        child: _H | None = _cached(self._bound, labelvalues, labelkwargs)
        if child is None:
            child = super().labels(*labelvalues, **labelkwargs)
            _remember(self._bound, labelvalues, labelkwargs, child)
        return child


def _cached(
    cache: dict[tuple[object, ...], Any], values: tuple[object, ...], kwargs: dict[str, object]
) -> Any:
    """The bound child for positional label values, or None (keywords and misses go through)."""
    if kwargs:
        return None
    try:
        return cache.get(values)
    except TypeError:  # an unhashable value: prometheus-client str()s it
        return None


def _remember(
    cache: dict[tuple[object, ...], Any], values: tuple[object, ...], kwargs: dict[str, object], child: object
) -> None:
    # Only exact str values: 1, 1.0 and True are equal dict keys but different label values.
    if not kwargs and len(cache) < CHILD_CACHE_LIMIT and all(type(v) is str for v in values):
        cache[values] = child


class RouteMetrics:
    """``fastgw_requests_total`` and ``fastgw_request_duration_seconds`` for one route label."""

    __slots__ = ("route", "_requests_total", "_duration", "_counters")

    def __init__(self, requests_total: Counter, request_duration: Histogram, route: str) -> None:
        self.route = route
        self._requests_total = requests_total
        self._duration = request_duration.labels(route)
        self._counters: dict[tuple[str, int], Counter] = {}

    def observe(self, method: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, status))
        if counter is None:
            counter = self._bind(method, status)
        counter.inc()
        self._duration.observe(seconds)

    def _bind(self, method: str, status: int) -> Counter:
        counter = self._requests_total.labels(self.route, method, str(status))
        if len(self._counters) < ROUTE_CACHE_LIMIT:
            self._counters[(method, status)] = counter
        return counter


class Metrics:
    """All gateway metrics in one registry (one per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if registry is None and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # One process serves its own /metrics: add prometheus-client's standard process_*,
            # python_info and python_gc_* series, as every Python exporter has them.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.requests_total = BoundCounter(
            "fastgw_requests_total", "Requests answered", ["route", "method", "status"], registry=r
        )
        self.request_duration = BoundHistogram(
            "fastgw_request_duration_seconds",
            "Time from request head to last response byte",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = BoundHistogram(
            "fastgw_upstream_duration_seconds",
            "Time from upstream request start to the end of its response",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = BoundCounter(
            "fastgw_upstream_errors_total", "Upstream failures", ["upstream", "reason"], registry=r
        )
        self.ratelimited = BoundCounter(
            "fastgw_ratelimited_total", "Requests refused by a rate limit", ["policy"], registry=r
        )
        self.ratelimit_backend_errors = Counter(
            "fastgw_ratelimit_backend_errors_total",
            "Failed calls to the shared rate-limit backend (Redis); checks fell back to local buckets",
            registry=r,
        )
        self.auth_failures = BoundCounter(
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
        self.cache_requests = BoundCounter(
            "fastgw_cache_requests_total", "Requests on cache: routes", ["route", "result"], registry=r
        )
        self.store_writes_dropped = Counter(
            "fastgw_store_writes_dropped_total",
            "Queued store writes (usage rows, audit entries) given up: the store was unreachable"
            " for longer than the kept backlog lasts, or refused them",
            registry=r,
        )
        self.llm_tokens = BoundCounter(
            "fastgw_llm_tokens_total", "LLM tokens seen in responses", ["model", "kind"], registry=r
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._routes: dict[str, RouteMetrics] = {}

    def for_route(self, route_label: str) -> RouteMetrics:
        """Pre-bound request metrics for a route known when the config is compiled."""
        route = self._routes.get(route_label)
        if route is None:
            route = RouteMetrics(self.requests_total, self.request_duration, route_label)
            if len(self._routes) < CHILD_CACHE_LIMIT:
                self._routes[route_label] = route
        return route

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._request_children.get((route, method, status))
        if children is None:
            children = self._bind_request(route, method, status)
        children[0].inc()
        children[1].observe(seconds)

    def _bind_request(self, route: str, method: str, status: int) -> tuple[Counter, Histogram]:
        children = (
            self.requests_total.labels(route, method, str(status)),
            self.request_duration.labels(route),
        )
        if len(self._request_children) < CHILD_CACHE_LIMIT:
            self._request_children[(route, method, status)] = children
        return children

    def observe_upstream(self, upstream: str, seconds: float) -> None:
        self.upstream_duration.labels(upstream).observe(seconds)

    def upstream_error(self, upstream: str, reason: str) -> None:
        self.upstream_errors.labels(upstream, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
