"""W3C Trace Context through a real gateway (SPEC 13.6): one span of the caller's trace."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from fastgw.tracing import incoming_trace
from tests.upstream_server import UpstreamServer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@pytest.fixture
def gw(upstream: UpstreamServer, start_gateway: Any) -> Any:
    return start_gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [{"path": "/api/*", "upstream": "svc", "auth": "none"}],
        }
    )


def access_line(gw: Any, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while True:
        for line in gw.access_lines():
            if line["requestId"] == request_id:
                return dict(line)
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_valid_trace_is_continued_with_the_gateways_span(gw: Any, upstream: UpstreamServer) -> None:
    status, headers, _ = gw.request("GET", "/api/x", headers={"traceparent": VALID, "tracestate": "v=1,w=2"})
    assert status == 200
    seen = upstream.requests[-1]
    forwarded = TRACEPARENT.fullmatch(seen.header("traceparent") or "")
    assert forwarded is not None
    assert forwarded[1] == TRACE and forwarded[2] != PARENT and forwarded[3] == "01"
    assert seen.header("tracestate") == "v=1,w=2"
    assert headers["traceparent"] == seen.header("traceparent")  # the client sees the same span
    assert access_line(gw, headers["x-request-id"])["traceId"] == TRACE


@pytest.mark.parametrize(
    "value",
    [
        None,
        "garbage",
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE}-{PARENT}-01",  # version ff is invalid
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper case
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
    ],
)
def test_a_missing_or_invalid_trace_is_replaced(gw: Any, upstream: UpstreamServer, value: str | None) -> None:
    status, headers, _ = gw.request("GET", "/api/x", headers={"traceparent": value} if value else {})
    assert status == 200
    seen = upstream.requests[-1]
    assert [k.lower() for k, _ in seen.headers].count("traceparent") == 1
    forwarded = TRACEPARENT.fullmatch(seen.header("traceparent") or "")
    assert forwarded is not None and forwarded[1] != TRACE and forwarded[1] != "0" * 32
    assert access_line(gw, headers["x-request-id"])["traceId"] == forwarded[1]


def test_local_answers_carry_traceparent(gw: Any) -> None:
    status, headers, _ = gw.request("GET", "/nowhere", headers={"traceparent": VALID})
    assert status == 404 and TRACEPARENT.fullmatch(headers["traceparent"])
    assert headers["traceparent"].split("-")[1] == TRACE


def test_later_versions_are_read_as_version_00() -> None:
    assert incoming_trace(f"01-{TRACE}-{PARENT}-01-more") == (TRACE, "01")
    assert incoming_trace(f" {VALID} ") == (TRACE, "01")
