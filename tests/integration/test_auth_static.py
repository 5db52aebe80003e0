"""Static bearer tokens through a real gateway: 401/403, identity injection, no spoofing."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from tests.upstream_server import UpstreamServer

OPS = "ops-token-0123456789"
READER = "reader-token-0123456789"


def config(upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "auth": {
            "tokens": [
                {"token": OPS, "user_id": "ops", "role": "admin", "scopes": ["rpc", "admin"], "plan": "pro"},
                {"token": READER, "user_id": "reader", "role": "user", "scopes": ["read"], "app_key": "app1"},
            ]
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/api/*", "upstream": "svc"},
            {"path": "/admin/*", "upstream": "svc", "roles": ["admin"]},
            {"path": "/rpc", "upstream": "svc", "scopes": ["rpc"], "query_token": True},
            {"path": "/open/*", "upstream": "svc", "auth": "optional"},
            {"path": "/public/*", "upstream": "svc", "auth": "none"},
        ],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_missing_and_invalid_credentials_are_401(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    for headers in ({}, bearer("nope"), {"Authorization": "Basic b3BzOng="}, bearer("fgw_" + "x" * 40)):
        status, _, body = gw.request("GET", "/api/x", headers=headers)
        assert status == 401, headers
        assert json.loads(body)["error"]["code"] == "UNAUTHORIZED"
    assert upstream.requests == []


def test_static_token_identity_is_injected(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    status, _, _ = gw.request("GET", "/api/x", headers=bearer(READER))
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.header("X-User-Id") == "reader"
    assert seen.header("X-User-Role") == "user"
    assert seen.header("X-App-Key") == "app1"
    assert seen.header("X-User-Plan") == ""
    assert seen.header("X-User-Scopes") == "read"
    assert seen.header("Authorization") is None


def test_client_identity_headers_never_reach_upstream(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    raw = (
        f"GET /api/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {READER}\r\n"
        "X-User-Id: admin\r\nX-User-Role: admin\r\nX_User_Id: admin\r\nConnection: X-User-Id, close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(raw)
        sock.settimeout(5)
        while sock.recv(65536):
            pass
    seen = upstream.requests[-1]
    assert [v for k, v in seen.headers if k.lower() == "x-user-id"] == ["reader"]
    assert [v for k, v in seen.headers if k.lower() == "x-user-role"] == ["user"]
    # Unauthenticated routes strip them too.
    gw.request("GET", "/public/x", headers={"X-User-Id": "admin", "X-Gateway-Signature": "v2=00"})
    names = upstream.requests[-1].header_names()
    assert "x-user-id" not in names and "x-gateway-signature" not in names


def test_roles_and_scopes_are_403(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    status, _, body = gw.request("GET", "/admin/x", headers=bearer(READER))
    assert status == 403 and json.loads(body)["error"]["code"] == "FORBIDDEN"
    deadline = time.monotonic() + 5
    while True:  # the denial is audited (written in the background)
        _, _, doc = gw.json("GET", "/v1/audit-logs", headers=bearer(OPS))
        denied = [e for e in doc["data"] if e["action"] == "admin.denied"]
        if denied or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert denied[0]["actorUserId"] == "reader" and denied[0]["targetId"] == "/admin/*"
    assert gw.request("GET", "/admin/x", headers=bearer(OPS))[0] == 200
    assert gw.request("GET", "/rpc", headers=bearer(READER))[0] == 403
    assert gw.request("GET", "/rpc", headers=bearer(OPS))[0] == 200


def test_query_token_only_on_query_token_routes(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    assert gw.request("GET", f"/rpc?token={OPS}&a=1")[0] == 200
    assert upstream.requests[-1].target == "/rpc?a=1"
    assert gw.request("GET", f"/api/x?token={OPS}")[0] == 401
    assert gw.request("GET", f"/rpc?token={READER}")[0] == 403
    assert gw.request("GET", "/rpc?token=wrong")[0] == 401
    assert OPS not in "".join(gw.stdout + gw.stderr)


def test_optional_auth(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    assert gw.request("GET", "/open/x")[0] == 200
    assert upstream.requests[-1].header("X-User-Id") is None
    assert gw.request("GET", "/open/x", headers=bearer(OPS))[0] == 200
    assert upstream.requests[-1].header("X-User-Id") == "ops"
    assert gw.request("GET", "/open/x", headers=bearer("bad"))[0] == 401


def test_me_endpoint(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    status, _, body = gw.request("GET", "/api/v1/me", headers=bearer(OPS))
    assert status == 200
    doc = json.loads(body)
    assert doc["ok"] is True
    assert doc["data"]["userId"] == "ops" and doc["data"]["role"] == "admin"
    status, _, body = gw.request("GET", "/api/v1/me")
    assert status == 401 and json.loads(body)["error"]["code"] == "UNAUTHORIZED"
    status, headers, _ = gw.request("POST", "/api/v1/me", headers=bearer(OPS))
    assert status == 405 and headers["allow"] == "GET"


def test_store_failure_on_a_builtin_endpoint_is_503(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Any
) -> None:
    cfg = config(upstream)
    cfg["store"] = f"sqlite:///{tmp_path}/no-such-directory/gw.db"
    gw = start_gateway(cfg)
    status, _, body = gw.request("GET", "/v1/audit-logs", headers=bearer(OPS))
    assert status == 503 and json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert gw.request("GET", "/api/x", headers=bearer(OPS))[0] == 200  # proxying is unaffected
