"""Session cookies verified by a real auth service (SPEC section 4, HARDENING C-22/C-23)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.auth_servers import SessionServer
from tests.upstream_server import UpstreamServer

COOKIE = SessionServer.COOKIE


@pytest.fixture
def sessions() -> Iterator[SessionServer]:
    server = SessionServer()
    server.sessions["good.c2lnbmF0dXJl"] = {"id": "u-42", "role": "user", "email": "a@example.test"}
    server.sessions["admin.c2lnbmF0dXJl"] = {"id": "u-1", "role": "admin"}
    yield server
    server.stop()


def config(upstream: UpstreamServer, sessions: SessionServer) -> dict[str, Any]:
    return {
        "auth": {"session": {"verify_url": sessions.url, "cache_ttl": "30s"}},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/api/*", "upstream": "svc"},
            {"path": "/admin/*", "upstream": "svc", "roles": ["admin"]},
        ],
    }


def cookie(value: str, others: bool = False) -> dict[str, str]:
    header = f"{COOKIE}={value}"
    return {"Cookie": f"theme=dark; {header}; other=1" if others else header}


def test_session_is_verified_once_and_cached(
    upstream: UpstreamServer, sessions: SessionServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream, sessions))
    for i in range(50):
        status, _, _ = gw.request(
            "GET", f"/api/items/{i}", headers=cookie("good.c2lnbmF0dXJl", others=i % 2 == 0)
        )
        assert status == 200
    assert sessions.calls["good.c2lnbmF0dXJl"] == 1
    # Only the session cookie goes to the auth service, never the client's other cookies.
    assert sessions.cookie_headers == [f"{COOKIE}=good.c2lnbmF0dXJl"]
    seen = upstream.requests[-1]
    assert seen.header("X-User-Id") == "u-42" and seen.header("X-User-Role") == "user"
    status, _, body = gw.request("GET", "/api/v1/me", headers=cookie("good.c2lnbmF0dXJl"))
    assert status == 200 and json.loads(body)["data"]["userId"] == "u-42"


def test_invalid_session_is_401_and_role_is_enforced(
    upstream: UpstreamServer, sessions: SessionServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream, sessions))
    for _ in range(5):
        status, _, body = gw.request("GET", "/api/x", headers=cookie("forged.c2lnbmF0dXJl"))
        assert status == 401 and json.loads(body)["error"]["code"] == "UNAUTHORIZED"
    assert sessions.calls["forged.c2lnbmF0dXJl"] == 1  # failures are cached too (briefly)
    # A value that could not be sent back in a Cookie header is refused without asking.
    assert gw.request("GET", "/api/x", headers={"Cookie": f'{COOKIE}="a b"'})[0] == 401
    assert gw.request("GET", "/admin/x", headers=cookie("good.c2lnbmF0dXJl"))[0] == 403
    assert gw.request("GET", "/admin/x", headers=cookie("admin.c2lnbmF0dXJl"))[0] == 200
    # First of two same-name cookies wins, as in the auth service's own parser.
    two = {"Cookie": f"{COOKIE}=admin.c2lnbmF0dXJl; {COOKIE}=good.c2lnbmF0dXJl"}
    assert gw.request("GET", "/admin/x", headers=two)[0] == 200


def test_auth_service_failure_is_503_never_401_or_pass(
    upstream: UpstreamServer, sessions: SessionServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream, sessions))
    assert gw.request("GET", "/api/x", headers=cookie("good.c2lnbmF0dXJl"))[0] == 200
    before = len(upstream.requests)
    sessions.status = 500
    status, _, body = gw.request("GET", "/api/x", headers=cookie("admin.c2lnbmF0dXJl"))
    assert status == 503 and json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"
    sessions.stop()  # unreachable
    status, _, body = gw.request("GET", "/api/x", headers=cookie("other.c2lnbmF0dXJl"))
    assert status == 503 and json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert len(upstream.requests) == before
    # A session verified before the outage stays valid for its cache_ttl.
    assert gw.request("GET", "/api/x", headers=cookie("good.c2lnbmF0dXJl"))[0] == 200
