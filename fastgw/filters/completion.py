"""What every exchange leaves behind when it ends: metrics, a usage record, an access log line."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..access_log import AccessLog, AccessRecord, utc_timestamp
from ..forwarding import loggable_query
from ..metrics import Metrics
from ..pipeline import Filter
from ..store.usage import UsageRecord, UsageRecorder

if TYPE_CHECKING:
    from ..exchange import Exchange


# Highest, so these come last on the way back (response hooks run in reverse): they record what
# every other filter learnt about the exchange (an llm route's model and tokens, say).
COMPLETION_PRIORITY = 1000


class RequestMetrics(Filter):
    """``fastgw_requests_total`` and ``fastgw_request_duration_seconds`` (SPEC 9)."""

    PRIORITY = COMPLETION_PRIORITY

    def __init__(self, metrics: Metrics, label: str) -> None:
        self.metrics = metrics
        self.route = metrics.for_route(label)  # label children bound once, at config load

    def on_complete(self, ex: Exchange) -> None:
        if ex.route is not None:
            self.route.observe(ex.method, ex.status, ex.elapsed)
        else:  # built-ins and unmatched requests share one pipeline, with their own labels
            self.metrics.observe_request(ex.route_label, ex.method, ex.status, ex.elapsed)


class UsageRecording(Filter):
    """One usage record per proxied request, gathered off the request path (SPEC 9)."""

    PRIORITY = COMPLETION_PRIORITY

    def __init__(self, usage: UsageRecorder) -> None:
        self.usage = usage

    def on_complete(self, ex: Exchange) -> None:
        upstream = ex.upstream
        if upstream is None:
            return
        self.usage.record(
            UsageRecord(
                ts=time.time(),
                route=ex.route_label,
                upstream=upstream.name,
                method=ex.method,
                status=ex.status,
                latency_ms=ex.elapsed * 1000,
                user_id=ex.user_id,
                model=ex.model,
                input_tokens=ex.input_tokens,
                output_tokens=ex.output_tokens,
            )
        )


class AccessLogging(Filter):
    """One JSON line per request; the ``token`` query parameter is never written."""

    PRIORITY = COMPLETION_PRIORITY

    def __init__(self, access_log: AccessLog) -> None:
        self.access_log = access_log

    def on_complete(self, ex: Exchange) -> None:
        if not self.access_log.enabled:
            return
        path = ex.path
        if ex.query:
            query = loggable_query(ex.query)
            if query:
                path = f"{path}?{query}"
        upstream = ex.upstream
        self.access_log.write(
            AccessRecord(
                ts=utc_timestamp(),
                requestId=ex.request_id,
                method=ex.method,
                route=ex.route_label,
                path=path,
                status=ex.status,
                bytes=ex.bytes_sent,
                durationMs=round(ex.elapsed * 1000, 3),
                upstream=upstream.name if upstream is not None else None,
                userId=ex.user_id,
                traceId=ex.trace_id,
            )
        )
