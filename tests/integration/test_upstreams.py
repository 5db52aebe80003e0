"""Several targets, dying targets, connection limits: the upstream side under stress."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.upstream_server import UpstreamServer


@pytest.fixture
def second_upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer().start()
    yield server
    server.stop()


def two_target_config(a: UpstreamServer, b: UpstreamServer, **upstream: Any) -> dict[str, Any]:
    return {
        "upstreams": {
            "pair": {
                "targets": [a.url, b.url],
                "retries": 1,
                "connect_timeout": "1s",
                "circuit": {"failures": 2, "cooldown": "30s"},
                **upstream,
            }
        },
        "routes": [{"path": "/*", "upstream": "pair", "auth": "none"}],
    }


@pytest.mark.parametrize("balance", ["round_robin", "least_conn"])
def test_two_targets_share_load(
    upstream: UpstreamServer, second_upstream: UpstreamServer, start_gateway: Any, balance: str
) -> None:
    gw = start_gateway(two_target_config(upstream, second_upstream, balance=balance))
    for n in range(20):
        assert gw.request("GET", f"/r/{n}")[0] == 200
    assert len(upstream.requests) > 0 and len(second_upstream.requests) > 0
    assert len(upstream.requests) + len(second_upstream.requests) == 20


def test_dead_target_loses_no_idempotent_request_and_is_ejected(
    upstream: UpstreamServer, second_upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(two_target_config(upstream, second_upstream))
    for n in range(4):
        assert gw.request("GET", f"/warm/{n}")[0] == 200
    second_upstream.stop()
    statuses = [gw.request("GET", f"/after/{n}")[0] for n in range(30)]
    assert statuses == [200] * 30
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).read().decode()
    errors = [
        line
        for line in metrics.splitlines()
        if line.startswith("fastgw_upstream_errors_total{") and "pair" in line
    ]
    # Ejected after two straight failures: the dead target was not tried for each of the 30.
    total = sum(float(line.rsplit(" ", 1)[1]) for line in errors)
    assert 1 <= total <= 4, errors


def test_all_targets_dead_is_503(
    upstream: UpstreamServer, second_upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(two_target_config(upstream, second_upstream))
    upstream.stop()
    second_upstream.stop()
    statuses = [gw.request("GET", f"/x/{n}") for n in range(6)]
    assert statuses[0][0] == 502
    status, _, body = statuses[-1]
    assert status == 503
    assert json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"


def test_max_connections_bounds_the_wait(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(
        {
            "upstreams": {
                "one": {"targets": [upstream.url], "max_connections": 1, "connect_timeout": "300ms"}
            },
            "routes": [{"path": "/*", "upstream": "one", "auth": "none"}],
        }
    )
    results: list[int] = []
    slow = threading.Thread(target=lambda: results.append(gw.request("GET", "/slow/1500")[0]))
    slow.start()
    while not upstream.requests:
        threading.Event().wait(0.02)
    status, _, body = gw.request("GET", "/fast")
    assert status == 503
    assert json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"
    slow.join(10)
    assert results == [200]
    assert gw.request("GET", "/fast")[0] == 200


def test_upstream_headers_are_injected(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(
        {
            "upstreams": {
                "key": {"targets": [upstream.url], "headers": {"Authorization": "Bearer upstream-key"}}
            },
            "routes": [{"path": "/*", "upstream": "key", "auth": "none"}],
        }
    )
    gw.request("GET", "/x", headers={"Authorization": "Bearer client"})
    values = [v for k, v in upstream.requests[-1].headers if k.lower() == "authorization"]
    assert values == ["Bearer upstream-key"]  # replaces the client's, never a second line


def test_least_conn_avoids_the_busy_target(
    upstream: UpstreamServer, second_upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(two_target_config(upstream, second_upstream, balance="least_conn"))
    slow = threading.Thread(target=gw.request, args=("GET", "/slow/1500"))
    slow.start()
    while not (upstream.requests or second_upstream.requests):
        threading.Event().wait(0.02)
    busy, idle = (upstream, second_upstream) if upstream.requests else (second_upstream, upstream)
    for n in range(6):
        assert gw.request("GET", f"/fast/{n}")[0] == 200
    slow.join(10)
    assert [r.target for r in busy.requests] == ["/slow/1500"]
    assert len(idle.requests) == 6
