"""``cache:`` routes through a real gateway and a real upstream (SPEC 13.3)."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import GatewayProcess
from tests.upstream_server import UpstreamServer

OPEN = {"upstream": "svc", "auth": "none"}
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789"


@pytest.fixture
def gw(upstream: UpstreamServer, start_gateway: Any) -> GatewayProcess:
    gateway: GatewayProcess = start_gateway(
        {
            "server": {"cache_memory": "400KiB"},
            "auth": {"tokens": [{"token": ALICE, "user_id": "alice"}, {"token": BOB, "user_id": "bob"}]},
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [
                {"path": "/feed/*", **OPEN, "cache": {"ttl": "15m", "vary": ["X-Lang"]}},
                {"path": "/status/*", **OPEN, "cache": {}},
                {"path": "/slow/*", **OPEN, "cache": {}},
                {"path": "/big/*", **OPEN, "cache": {"max_entry": "150KB"}},
                {"path": "/mine/*", "upstream": "svc", "cache": {"ttl": "1m"}},
                {"path": "/ours/*", "upstream": "svc", "cache": {"ttl": "1m", "shared": True}},
            ],
        }
    )
    return gateway


def upstream_hits(upstream: UpstreamServer, prefix: str) -> int:
    return sum(1 for r in upstream.requests if r.target.startswith(prefix))


def test_hits_misses_age_and_keys(gw: GatewayProcess, upstream: UpstreamServer) -> None:
    status, headers, body = gw.request("GET", "/feed/images?page=1")
    assert status == 200 and headers["x-cache"] == "MISS" and "age" not in headers
    time.sleep(1.1)
    status, headers, again = gw.request("GET", "/feed/images?page=1")
    assert status == 200 and headers["x-cache"] == "HIT" and int(headers["age"]) >= 1 and again == body
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] and "traceparent" in headers  # this request's, not the stored ones
    assert upstream_hits(upstream, "/feed/images") == 1
    assert gw.request("HEAD", "/feed/images?page=1")[1]["x-cache"] == "HIT"
    # The query and the vary headers are part of the key.
    assert gw.request("GET", "/feed/images?page=2")[1]["x-cache"] == "MISS"
    assert gw.request("GET", "/feed/images?page=1", headers={"X-Lang": "fr"})[1]["x-cache"] == "MISS"
    assert upstream_hits(upstream, "/feed/images") == 3
    # no-cache from the client bypasses the cache and refreshes it.
    assert (
        gw.request("GET", "/feed/images?page=1", headers={"Cache-Control": "no-cache"})[1]["x-cache"]
        == "MISS"
    )
    assert upstream_hits(upstream, "/feed/images") == 4
    assert int(gw.request("GET", "/feed/images?page=1")[1]["age"]) == 0
    # Only 200s are stored.
    assert gw.request("GET", "/status/404")[0] == 404
    assert gw.request("GET", "/status/404")[1]["x-cache"] == "MISS"
    assert upstream_hits(upstream, "/status/404") == 2
    gw.request("GET", "/status/200")
    assert gw.request("GET", "/status/200")[1]["x-cache"] == "HIT"
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics") as resp:
        metrics = resp.read().decode()
    assert 'fastgw_cache_requests_total{result="hit",route="/feed/*"} 3.0' in metrics
    assert 'fastgw_cache_requests_total{result="bypass",route="/feed/*"} 1.0' in metrics


def test_upstream_cache_control_is_honoured(gw: GatewayProcess, upstream: UpstreamServer) -> None:
    for _ in range(2):
        assert gw.request("GET", "/feed/ns?cc=no-store")[1]["x-cache"] == "MISS"
        assert gw.request("GET", "/feed/pv?cc=private")[1]["x-cache"] == "MISS"  # shared: never stored
    assert upstream_hits(upstream, "/feed/ns") == 2 and upstream_hits(upstream, "/feed/pv") == 2
    gw.request("GET", "/feed/short?cc=max-age%3D1")
    assert gw.request("GET", "/feed/short?cc=max-age%3D1")[1]["x-cache"] == "HIT"
    time.sleep(1.2)  # max-age 1 s beats the route's 15 minutes
    assert gw.request("GET", "/feed/short?cc=max-age%3D1")[1]["x-cache"] == "MISS"
    # A private answer may be kept per user on an authenticated route.
    for _ in range(2):
        gw.request("GET", "/mine/pv?cc=private", headers={"Authorization": f"Bearer {ALICE}"})
    assert upstream_hits(upstream, "/mine/pv") == 1


def test_entries_are_per_user_unless_shared(gw: GatewayProcess, upstream: UpstreamServer) -> None:
    for token in (ALICE, BOB, ALICE, BOB):
        assert gw.request("GET", "/mine/profile", headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert gw.request("GET", "/ours/catalog", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert upstream_hits(upstream, "/mine/profile") == 2  # one per user
    assert upstream_hits(upstream, "/ours/catalog") == 1
    assert gw.request("GET", "/mine/profile")[0] == 401  # a cached answer is still behind auth


def test_concurrent_misses_make_one_upstream_request(gw: GatewayProcess, upstream: UpstreamServer) -> None:
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda _: gw.request("GET", "/slow/400"), range(100)))
    assert [status for status, _, _ in answers] == [200] * 100
    assert upstream_hits(upstream, "/slow/400") == 1
    assert len({body for _, _, body in answers}) == 1


def test_size_limits_and_least_recently_used_eviction(gw: GatewayProcess, upstream: UpstreamServer) -> None:
    gw.request("GET", "/big/200000")
    assert gw.request("GET", "/big/200000")[1]["x-cache"] == "MISS"  # over max_entry: not kept
    for n in range(1, 6):  # 5 x 100 KB into a 400 KiB cache: the first is evicted
        status, _, body = gw.request("GET", f"/big/{100_000 + n}")
        assert status == 200 and len(body) == 100_000 + n
    status, headers, body = gw.request("GET", "/big/100005")
    assert headers["x-cache"] == "HIT" and len(body) == 100_005
    assert gw.request("GET", "/big/100001")[1]["x-cache"] == "MISS"
