"""OIDC login (idToken -> internal JWT) and the audit log, through a real gateway and a real IdP JWKS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.auth_servers import JwksServer, claims, public_jwk, rsa_key, sign
from tests.conftest import GatewayProcess, store_of
from tests.upstream_server import UpstreamServer

SECRET = "platform-jwt-secret-0123456789-abcdef"
IDP = "https://idp.test"
CLIENT = "fastgw-client"
IDP_KEY = rsa_key()
ADMIN = "admin-token-0123456789"
USER = "user-token-0123456789"
pytestmark = pytest.mark.usefixtures("store_url")


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    server = JwksServer([public_jwk(IDP_KEY, "idp-1")])
    yield server
    server.stop()


def config(upstream: UpstreamServer, idp: JwksServer, tmp_path: Path, secret: str = SECRET) -> dict[str, Any]:
    return {
        "store": store_of(tmp_path),
        "auth": {
            "tokens": [
                {"token": ADMIN, "user_id": "root", "role": "admin"},
                {"token": USER, "user_id": "someone", "role": "user"},
            ],
            "jwt": {"algorithms": ["HS256"], "secret": secret},
            "oidc_login": {
                "jwks_url": idp.url,
                "issuer": IDP,
                "audience": CLIENT,
                "token_ttl": "15m",
                "rate_limit": "login",
            },
        },
        "rate_limits": {"policies": {"login": {"rate": 4, "per": "60s", "key": "ip"}}},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/*", "upstream": "svc"}],
    }


def id_token(**extra: Any) -> str:
    body = claims(**{"sub": "oidc|abc", "iss": IDP, "aud": CLIENT, "email": "ada@example.test", **extra})
    return sign(body, IDP_KEY, "RS256", "idp-1")


def login(gw: GatewayProcess, token: Any) -> tuple[int, dict[str, str], Any]:
    return gw.json("POST", "/api/v1/auth/login", body=json.dumps({"idToken": token}).encode())


def audit(gw: GatewayProcess, query: str = "", token: str = ADMIN) -> tuple[int, Any]:
    status, _, doc = gw.json("GET", f"/v1/audit-logs{query}", headers={"Authorization": f"Bearer {token}"})
    return status, doc


def test_login_issues_a_jwt_that_authenticates(
    upstream: UpstreamServer, idp: JwksServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, idp, tmp_path))
    good = id_token(sub="ada", role="editor", plan="pro", scope="read write")
    status, headers, doc = login(gw, good)
    assert status == 200, doc
    data = doc["data"]
    assert data["tokenType"] == "Bearer" and data["expiresInSeconds"] == 900
    assert data["user"] == {"userId": "ada", "email": "ada@example.test"}
    assert headers["ratelimit-limit"] == "4" and headers["ratelimit-policy"] == "4;w=60"
    minted = jwt.decode(data["accessToken"], SECRET, algorithms=["HS256"])
    assert minted["iss"] == "fastgw" and minted["sub"] == "ada" and minted["exp"] - minted["iat"] == 900

    auth = {"Authorization": f"Bearer {data['accessToken']}"}
    status, _, me = gw.json("GET", "/api/v1/me", headers=auth)
    assert status == 200 and me["data"]["userId"] == "ada" and me["data"]["role"] == "editor"
    assert gw.request("GET", "/api/x", headers=auth)[0] == 200
    seen = upstream.requests[-1]
    assert (seen.header("X-User-Id"), seen.header("X-User-Plan"), seen.header("X-User-Scopes")) == (
        "ada",
        "pro",
        "read write",
    )

    # Refused idTokens: wrong audience, wrong issuer, an HS token signed with our own secret, expired.
    for bad in (
        id_token(aud="another-client"),
        id_token(iss="https://idp.test.evil"),
        sign(claims(sub="x", iss=IDP, aud=CLIENT), SECRET, "HS256"),
    ):
        status, _, doc = login(gw, bad)
        assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED"
    # The policy allows 4 per minute per IP: the fifth attempt is refused.
    status, headers, doc = login(gw, id_token(exp=int(time.time()) - 600))
    assert status == 429 and doc["error"]["code"] == "RATE_LIMITED"
    assert int(headers["retry-after"]) >= 1

    status, logs = deadline_audit(gw, lambda entries: any(e["action"] == "login" for e in entries))
    entry = next(e for e in logs if e["action"] == "login")
    assert entry["actorUserId"] == "ada" and entry["targetId"] == "ada" and entry["details"]["issuer"] == IDP
    assert data["accessToken"] not in "".join(gw.stdout + gw.stderr)
    assert gw.request("POST", "/api/v1/auth/login", body=b"not json")[0] == 429


def deadline_audit(gw: GatewayProcess, ready: Any) -> tuple[int, list[dict[str, Any]]]:
    """Audit entries are written off the request path (batched): poll briefly for them."""
    deadline = time.monotonic() + 3
    while True:
        status, doc = audit(gw)
        entries = doc["data"]
        if ready(entries) or time.monotonic() > deadline:
            return status, entries
        time.sleep(0.05)


def test_login_without_a_secret_is_503(
    upstream: UpstreamServer, idp: JwksServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, idp, tmp_path, secret=""))
    status, _, doc = login(gw, id_token())
    assert status == 503 and doc["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert doc["error"]["message"] == "login not configured"


def test_login_validates_its_body(
    upstream: UpstreamServer, idp: JwksServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, idp, tmp_path))
    for body in (b"{}", b'{"idToken": 5}', b"[1]", b"nope"):
        status, _, raw = gw.request("POST", "/api/v1/auth/login", body=body)
        assert status == 400 and json.loads(raw)["error"]["code"] == "VALIDATION_ERROR", body


def test_audit_log_endpoint(
    upstream: UpstreamServer, idp: JwksServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, idp, tmp_path))
    created = gw.json(
        "POST", "/v1/api-tokens", body=b'{"name":"a"}', headers={"Authorization": f"Bearer {USER}"}
    )
    token_id = created[2]["data"]["id"]
    assert (
        gw.request("DELETE", f"/v1/api-tokens/{token_id}", headers={"Authorization": f"Bearer {USER}"})[0]
        == 204
    )
    assert audit(gw, token=USER)[0] == 403  # not an admin: refused, and audited
    status, _, doc = gw.json("GET", "/v1/audit-logs")
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED"
    for query in ("?limit=0", "?limit=501", "?limit=abc", "?limit=-1"):
        status, doc = audit(gw, query)
        assert status == 400 and doc["error"]["code"] == "VALIDATION_ERROR", query

    status, entries = deadline_audit(gw, lambda e: len(e) >= 3)
    assert status == 200
    assert [e["action"] for e in entries] == ["admin.denied", "api_token.revoked", "api_token.created"]
    for entry in entries:
        assert set(entry) == {
            "logId",
            "actorUserId",
            "action",
            "targetType",
            "targetId",
            "details",
            "createdAt",
        }
        assert entry["actorUserId"] == "someone" and entry["createdAt"].endswith("Z")
    assert entries[1]["targetType"] == "api_token" and entries[1]["targetId"] == token_id
    assert entries[0]["details"]["reason"] == "role"
    status, doc = audit(gw, "?limit=1")
    assert status == 200 and len(doc["data"]) == 1


def test_login_limit_is_shared_through_redis(
    upstream: UpstreamServer, idp: JwksServer, start_gateway: Any, tmp_path: Path, redis_server: Any
) -> None:
    """With `redis` set, one address has one login allowance across every instance."""
    first = start_gateway({**config(upstream, idp, tmp_path), "redis": redis_server.url})
    second = start_gateway({**config(upstream, idp, tmp_path / "b"), "redis": redis_server.url})
    statuses = [login(gw, id_token(sub="ada"))[0] for gw in (first, second, first, second, first, second)]
    assert statuses == [200, 200, 200, 200, 429, 429]
