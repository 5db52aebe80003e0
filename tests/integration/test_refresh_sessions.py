"""Refresh sessions (SPEC 13.4) through a real gateway, with a browser-style cookie jar (httpx):
login -> refresh (rotation) -> reuse (the family is revoked) -> logout, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastgw.store import connect_store
from tests.auth_servers import JwksServer, public_jwk
from tests.conftest import GatewayProcess, store_of
from tests.integration.test_auth_login import IDP_KEY, config, deadline_audit, id_token

pytestmark = pytest.mark.usefixtures("store_url")
COOKIE = "fgw_refresh"


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    server = JwksServer([public_jwk(IDP_KEY, "idp-1")])
    yield server
    server.stop()


def refresh_config(upstream: Any, idp: Any, tmp_path: Path, **refresh: Any) -> dict[str, Any]:
    cfg = config(upstream, idp, tmp_path)
    cfg["auth"]["oidc_login"]["refresh"] = {"ttl": "30d", "secure": False, **refresh}
    cfg["rate_limits"]["policies"]["login"]["rate"] = 100
    return cfg


def browser(gw: GatewayProcess) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", timeout=10)


def test_login_refresh_reuse_and_logout(upstream: Any, idp: Any, start_gateway: Any, tmp_path: Path) -> None:
    gw = start_gateway(refresh_config(upstream, idp, tmp_path))
    with browser(gw) as alice:
        login = alice.post("/api/v1/auth/login", json={"idToken": id_token(sub="ada")})
        assert login.status_code == 200, (login.text, gw.stderr)
        set_cookie = login.headers["set-cookie"]
        assert set_cookie.startswith(f"{COOKIE}=")
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/api/v1/auth", f"Max-Age={30 * 86400}"):
            assert attribute in set_cookie
        first = alice.cookies[COOKIE]
        assert (
            alice.get(
                "/api/v1/me", headers={"Authorization": f"Bearer {login.json()['data']['accessToken']}"}
            ).json()["data"]["userId"]
            == "ada"
        )

        # Rotation: a new access token and a new cookie; the old refresh token is spent.
        renewed = alice.post("/api/v1/auth/refresh")
        assert renewed.status_code == 200, renewed.text
        data = renewed.json()["data"]
        assert set(data) == {"accessToken", "tokenType", "expiresInSeconds", "user"}
        assert data["user"] == {"userId": "ada", "email": "ada@example.test"}
        me = alice.get("/api/v1/me", headers={"Authorization": f"Bearer {data['accessToken']}"})
        assert me.json()["data"]["userId"] == "ada"
        second = alice.cookies[COOKIE]
        assert second != first
        assert alice.post("/api/v1/auth/refresh").status_code == 200  # and again
        third = alice.cookies[COOKIE]

        # Reuse: someone presents the spent first token. 401, and the whole family is revoked.
        with browser(gw) as thief:
            thief.cookies.set(COOKIE, first, domain="127.0.0.1", path="/api/v1/auth")
            stolen = thief.post("/api/v1/auth/refresh")
            assert stolen.status_code == 401 and stolen.json()["error"]["code"] == "UNAUTHORIZED"
        alice.cookies.set(COOKIE, third, domain="127.0.0.1", path="/api/v1/auth")
        assert alice.post("/api/v1/auth/refresh").status_code == 401  # the owner's latest is gone too

    # Logout revokes the family of a fresh login and clears the cookie.
    with browser(gw) as bob:
        assert bob.post("/api/v1/auth/login", json={"idToken": id_token(sub="bob")}).status_code == 200
        token = bob.cookies[COOKIE]
        out = bob.post("/api/v1/auth/logout")
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
        assert COOKIE not in bob.cookies
        bob.cookies.set(COOKIE, token, domain="127.0.0.1", path="/api/v1/auth")
        assert bob.post("/api/v1/auth/refresh").status_code == 401
        assert bob.post("/api/v1/auth/logout").status_code == 401
    with browser(gw) as nobody:
        assert nobody.post("/api/v1/auth/refresh").status_code == 401
        nobody.cookies.set(COOKIE, "made-up", domain="127.0.0.1", path="/api/v1/auth")
        assert nobody.post("/api/v1/auth/refresh").status_code == 401

    # Audited, and stored only as hashes.
    _, entries = deadline_audit(gw, lambda e: "logout" in [x["action"] for x in e])
    actions = [e["action"] for e in entries]
    assert {"login", "refresh", "refresh.reuse_detected", "logout"} <= set(actions)
    gw.stop()
    conn = connect_store(store_of(tmp_path))
    rows = conn.execute("SELECT token_hash FROM refresh_tokens").fetchall()
    conn.close()
    assert hashlib.sha256(first.encode()).hexdigest() in {r[0] for r in rows}
    assert all(first not in r[0] and token not in r[0] for r in rows)


def test_expired_refresh_tokens_are_refused_and_secure_is_the_default(
    upstream: Any, idp: Any, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(refresh_config(upstream, idp, tmp_path, ttl="1s", secure=True))
    with browser(gw) as client:
        login = client.post("/api/v1/auth/login", json={"idToken": id_token(sub="ada")})
        assert "; Secure" in login.headers["set-cookie"] and "Max-Age=1;" in login.headers["set-cookie"]
        token = login.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
        time.sleep(1.2)
        answer = client.post("/api/v1/auth/refresh", headers={"Cookie": f"{COOKIE}={token}"})
        assert answer.status_code == 401
