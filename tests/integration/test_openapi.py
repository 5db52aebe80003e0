"""``GET /openapi.json`` through a real gateway (SPEC 13.6), validated as OpenAPI 3.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from tests.upstream_server import UpstreamServer

ADMIN = "admin-token-0123456789"
USER = "user-token-0123456789"


def config(upstream: UpstreamServer, tmp_path: Path, **server: Any) -> dict[str, Any]:
    return {
        "server": server,
        "store": f"sqlite:///{tmp_path / 'gw.db'}",
        "auth": {
            "tokens": [{"token": ADMIN, "user_id": "a", "role": "admin"}, {"token": USER, "user_id": "u"}],
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/users/{id}", "upstream": "svc", "methods": ["GET", "DELETE"]},
            {"path": "/files/*", "upstream": "svc", "auth": "none"},
            {"path": "/maybe", "upstream": "svc", "auth": "optional", "methods": ["POST"]},
            {"path": "/jobs/*", "upstream": "svc", "async": True},
            {"path": "/app/*", "static": {"root": str(tmp_path)}, "auth": "none"},
            {"path": "/old/*", "redirect": {"to": "/new/*"}, "auth": "none"},
        ],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_document_describes_routes_and_built_ins(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    assert gw.request("GET", "/openapi.json")[0] == 401
    assert gw.request("GET", "/openapi.json", headers=bearer(USER))[0] == 403
    status, headers, doc = gw.json("GET", "/openapi.json", headers=bearer(ADMIN))
    assert status == 200 and headers["content-type"] == "application/json"
    validate(doc)  # raises on anything OpenAPI 3.1 does not allow
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    assert set(paths["/users/{id}"]) == {"get", "delete"}
    assert paths["/users/{id}"]["get"]["parameters"][0]["name"] == "id"
    assert paths["/users/{id}"]["get"]["security"] == [{"bearer": []}]
    assert paths["/files/{path}"]["get"]["security"] == []
    assert set(paths["/files/{path}"]) >= {"get", "post", "put", "patch", "delete"}
    assert paths["/maybe"]["post"]["security"] == [{"bearer": []}, {}]
    assert set(paths["/app/{path}"]) == {"get", "head"}
    assert "async" in paths["/jobs/{path}"]["post"]["summary"]
    for builtin in ("/health", "/v1/api-tokens", "/v1/usage", "/requests/{id}/status", "/openapi.json"):
        assert builtin in paths, builtin
    assert {"usageKey": []} in paths["/v1/usage"]["get"]["security"]


def test_public_document(upstream: UpstreamServer, start_gateway: Any, tmp_path: Path) -> None:
    gw = start_gateway(config(upstream, tmp_path, openapi="public"))
    status, _, doc = gw.json("GET", "/openapi.json")
    assert status == 200 and doc["paths"]["/openapi.json"]["get"]["security"] == []
    validate(doc)
