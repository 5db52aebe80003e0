"""Rate limits and quotas through real gateway processes, alone and sharing a real redis-server."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from tests.redis_server import RedisServer
from tests.upstream_server import UpstreamServer

FREE = "free-plan-token-0123456789"
PRO = "pro-plan-token-0123456789"
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy")


def client(name: str) -> dict[str, str]:
    return {"X-Client": name}


def metric(gw: Any, name: str, labels: str = "") -> float:
    """A sample from the gateway's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def local_config(upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "auth": {
            "tokens": [
                {"token": FREE, "user_id": "freeloader", "plan": "free"},
                {"token": PRO, "user_id": "payer", "plan": "pro"},
            ]
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "rate_limits": {
            # Keyed by a header, so each part of a test has its own buckets.
            "global": {"rate": 1, "per": "1h", "burst": 5, "key": "header:X-Client"},
            "policies": {"tight": {"rate": 1, "per": "60s", "burst": 3, "key": "ip"}},
            "quotas": {"free": {"requests": 5, "per": "day"}},
        },
        "routes": [
            {"path": "/api/*", "upstream": "svc", "auth": "none", "rate_limit": "tight"},
            {"path": "/plain/*", "upstream": "svc", "auth": "none"},
            {"path": "/open/*", "upstream": "svc", "auth": "none", "rate_limit": "none"},
            {"path": "/q/*", "upstream": "svc", "quota": True, "rate_limit": "none"},
        ],
    }


def test_burst_then_429_with_headers(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(local_config(upstream))
    for left in (2, 1, 0):
        status, headers, _ = gw.request("GET", "/api/x", headers=client("a"))
        assert status == 200
        # global (5 per client) and tight (3 per IP) apply; tight has fewer tokens left.
        assert headers["ratelimit-limit"] == "3" and headers["ratelimit-remaining"] == str(left)
        assert headers["ratelimit-policy"] == "3;w=60"
        assert 0 < int(headers["ratelimit-reset"]) <= 180
    status, headers, body = gw.request("GET", "/api/x", headers=client("a"))
    assert status == 429 and json.loads(body)["error"]["code"] == "RATE_LIMITED"
    assert 55 <= int(headers["retry-after"]) <= 60  # one token per minute
    assert headers["ratelimit-remaining"] == "0" and headers["ratelimit-limit"] == "3"
    assert 170 <= int(headers["ratelimit-reset"]) <= 180
    assert headers["ratelimit-policy"] == "3;w=60"
    assert len(upstream.requests) == 3

    # Global only: its own burst, then 429 with a Retry-After of about an hour.
    for left in range(4, -1, -1):
        status, headers, _ = gw.request("GET", "/plain/x", headers=client("d"))
        assert status == 200 and headers["ratelimit-remaining"] == str(left)
        assert headers["ratelimit-policy"] == "5;w=3600"
    status, headers, _ = gw.request("GET", "/plain/x", headers=client("d"))
    assert status == 429 and 3500 <= int(headers["retry-after"]) <= 3600
    assert metric(gw, "fastgw_ratelimited_total", '{policy="tight"}') == 1
    assert metric(gw, "fastgw_ratelimited_total", '{policy="global"}') == 1


def test_health_and_exempt_routes_are_never_limited(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(local_config(upstream))
    for _ in range(12):
        status, headers, _ = gw.request("GET", "/health", headers=client("b"))
        assert status == 200 and not set(RATE_HEADERS) & set(headers)
        status, headers, _ = gw.request("GET", "/open/x", headers=client("b"))
        assert status == 200 and not set(RATE_HEADERS) & set(headers)
    # Neither used a token of the global bucket they would have shared.
    status, headers, _ = gw.request("GET", "/plain/x", headers=client("b"))
    assert status == 200 and headers["ratelimit-remaining"] == "4"


def test_quota_refuses_the_request_after_the_plan_allowance(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(local_config(upstream))
    free = {"Authorization": f"Bearer {FREE}"}
    for _ in range(5):
        assert gw.request("GET", "/q/x", headers=free)[0] == 200
    status, headers, body = gw.request("GET", "/q/x", headers=free)
    assert status == 429 and json.loads(body)["error"]["code"] == "QUOTA_EXCEEDED"
    assert 1 <= int(headers["retry-after"]) <= 86400
    assert gw.request("GET", "/q/x", headers=free)[0] == 429
    assert len(upstream.requests) == 5
    # A plan without a quota, and routes without quota: true, are not counted.
    for _ in range(7):
        assert gw.request("GET", "/q/x", headers={"Authorization": f"Bearer {PRO}"})[0] == 200
    assert gw.request("GET", "/open/x", headers=free)[0] == 200


# --- shared through Redis ---------------------------------------------------------------


def shared_config(upstream: UpstreamServer, redis_url: str) -> dict[str, Any]:
    return {
        "redis": redis_url,
        "auth": {"tokens": [{"token": FREE, "user_id": "freeloader", "plan": "free"}]},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "rate_limits": {
            "policies": {"shared": {"rate": 1, "per": "1h", "burst": 6, "key": "header:X-Client"}},
            "quotas": {"free": {"requests": 5, "per": "day"}},
        },
        "routes": [
            {"path": "/api/*", "upstream": "svc", "auth": "none", "rate_limit": "shared"},
            {"path": "/q/*", "upstream": "svc", "quota": True},
        ],
    }


def statuses(gateways: list[Any], path: str, headers: dict[str, str], count: int) -> list[int]:
    """``count`` requests spread over the gateways in turn."""
    return [gateways[i % len(gateways)].request("GET", path, headers=headers)[0] for i in range(count)]


def test_gateways_sharing_redis_enforce_one_limit_and_survive_its_outage(
    upstream: UpstreamServer, start_gateway: Any, redis_server: RedisServer
) -> None:
    config = shared_config(upstream, redis_server.url)
    one = start_gateway(json.loads(json.dumps(config)))
    two = start_gateway(json.loads(json.dumps(config)))
    gateways = [one, two]

    # One bucket for both processes: the burst once, not twice.
    results = statuses(gateways, "/api/x", client("g"), 14)
    assert abs(results.count(200) - 6) <= 1 and results.count(429) == 14 - results.count(200)
    remaining = [
        int(gw.request("GET", "/api/x", headers=client("g2"))[1]["ratelimit-remaining"]) for gw in gateways
    ]
    assert remaining == [5, 4]
    # The quota is shared too.
    free = {"Authorization": f"Bearer {FREE}"}
    assert statuses(gateways, "/q/x", free, 8) == [200] * 5 + [429] * 3

    # Redis dies: both keep serving, each limiting with its own buckets.
    redis_server.kill()
    results = statuses([one], "/api/x", client("h"), 8)
    assert results == [200] * 6 + [429] * 2
    assert statuses([two], "/api/x", client("h"), 1) == [200]  # not shared meanwhile
    assert metric(one, "fastgw_ratelimit_backend_errors_total") >= 1
    assert not any("Traceback" in line for line in one.stderr + two.stderr)

    # Redis is back (empty): once both have reconnected, a burst used on one is seen by the other.
    redis_server.start()
    deadline = time.monotonic() + 20
    shared = False
    attempt = 0
    while not shared and time.monotonic() < deadline:
        attempt += 1
        key = client(f"r{attempt}")
        if statuses([one], "/api/x", key, 6) == [200] * 6:
            shared = two.request("GET", "/api/x", headers=key)[0] == 429
        if not shared:
            time.sleep(0.2)
    assert shared, "limits were not shared again after Redis came back"
    logs = "".join(one.stderr)
    assert logs.count("limiting in this process") == 1 and "shared again" in logs
