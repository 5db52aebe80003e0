"""Headers that say who called and how: only the gateway, or a proxy it trusts, sets them.

A backend reads ``X-Real-IP``, ``Forwarded``, ``X-Forwarded-Client-Cert`` and friends as the
truth about its caller, so a client-sent value must never reach it; and the
``trusted_proxies`` rules decide when a load balancer in front may speak for its client.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.upstream_server import UpstreamServer

# Every name a client might use to pose as someone else, or as having come another way.
SPOOFED = {
    "Forwarded": "for=6.6.6.6;proto=https",
    "X-Real-IP": "6.6.6.6",
    "True-Client-IP": "6.6.6.6",
    "X-Client-IP": "6.6.6.6",
    "X-Cluster-Client-IP": "6.6.6.6",
    "CF-Connecting-IP": "6.6.6.6",
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "X-Forwarded-Server": "evil.example",
    "X-Forwarded-User": "admin",
    "X-Client-Cert": "-----BEGIN CERTIFICATE-----",
    "X-Forwarded-Client-Cert": "By=spiffe://evil;Subject=CN=admin",
    "X-SSL-Client-Cert": "forged",
}

# What the gateway itself says, or may pass on from a trusted proxy.
OWN = {"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"}


def _config(upstream: UpstreamServer, trusted: list[str]) -> dict[str, Any]:
    return {
        "server": {"trusted_proxies": trusted},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "rate_limits": {"policies": {"per_ip": {"rate": 1, "per": "1h", "key": "ip"}}},
        "routes": [
            {"path": "/api/*", "upstream": "svc", "auth": "none"},
            {"path": "/limited", "upstream": "svc", "auth": "none", "rate_limit": ["per_ip"]},
        ],
    }


def test_client_cannot_forge_forwarding_headers(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(_config(upstream, []))
    status, _, _ = gw.request("GET", "/api/x", headers=SPOOFED)
    assert status == 200
    seen = upstream.requests[-1]
    for name in SPOOFED:
        if name.lower() not in OWN:
            assert seen.header(name) is None, name
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == f"127.0.0.1:{gw.port}"
    assert seen.header("X-Forwarded-Port") == str(gw.port)
    assert seen.header("Forwarded") == f'for=127.0.0.1;host="127.0.0.1:{gw.port}";proto=http'
    assert "6.6.6.6" not in repr(seen.headers)


def test_trusted_proxy_speaks_for_its_client(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(_config(upstream, ["127.0.0.0/8"]))
    status, _, _ = gw.request(
        "GET",
        "/api/x",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "api.example.com",
            "X-Forwarded-Port": "443",
            "Forwarded": "for=203.0.113.7;proto=https",
            "X-Real-IP": "203.0.113.7",
        },
    )
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.header("X-Forwarded-For") == "203.0.113.7, 127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "https"
    assert seen.header("X-Forwarded-Host") == "api.example.com"
    assert seen.header("X-Forwarded-Port") == "443"
    assert seen.header("Forwarded") == (
        f'for=203.0.113.7;proto=https, for=127.0.0.1;host="127.0.0.1:{gw.port}";proto=http'
    )
    # Names outside the X-Forwarded-For family are never passed on, trusted or not.
    assert seen.header("X-Real-IP") is None


@pytest.mark.parametrize("trusted", [[], ["127.0.0.0/8"]])
def test_ip_rate_limit_keys_on_the_caller_trusted_proxies_name(
    upstream: UpstreamServer, start_gateway: Any, trusted: list[str]
) -> None:
    """Behind a trusted proxy each client has its own bucket; otherwise the XFF is ignored."""
    gw = start_gateway(_config(upstream, trusted))
    first, _, _ = gw.request("GET", "/limited", headers={"X-Forwarded-For": "198.51.100.1"})
    second, _, _ = gw.request("GET", "/limited", headers={"X-Forwarded-For": "198.51.100.2"})
    assert first == 200
    assert second == (200 if trusted else 429)
    third, _, _ = gw.request("GET", "/limited", headers={"X-Forwarded-For": "198.51.100.2"})
    assert third == 429
