"""API-token verifier caching and revocation, session cookie parsing and caching, in-process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt as pyjwt
import pytest
from tornado.httputil import HTTPHeaders

from fastgw.auth import api_tokens
from fastgw.auth.api_tokens import ApiTokenVerifier, issue
from fastgw.auth.authenticator import Authenticator, AuthFailure, _cookie
from fastgw.auth.jwt import JwtVerifier
from fastgw.auth.session import COOKIE_VALUE, SessionVerifier
from fastgw.config import SessionConfig, parse_config
from fastgw.errors import LocalReply
from fastgw.http1.headers import Headers
from fastgw.metrics import Metrics
from fastgw.store import connect, open_store
from fastgw.store import tokens as token_rows
from fastgw.store.db import transaction
from tests.auth_servers import SessionServer


def test_cookie_is_the_first_pair_as_sent() -> None:
    headers = HTTPHeaders()
    headers.add("Cookie", 'theme=dark; sid="quoted"; sid=second')
    headers.add("Cookie", "sid=third")
    assert _cookie(headers, "sid") == '"quoted"'
    assert _cookie(headers, "theme") == "dark"
    assert _cookie(headers, "other") is None
    assert _cookie(HTTPHeaders({"Cookie": "sid=; a=b"}), "sid") is None
    assert _cookie(HTTPHeaders({"Cookie": "bad cookie without equals; sid=v"}), "sid") == "v"
    for good in ("abc.DEF-_%2B~", '"quoted"'):
        assert COOKIE_VALUE.fullmatch(good)
    for bad in ("a b", "a;b", 'a"b', "a,b", "a\\b", "é"):
        assert not COOKIE_VALUE.fullmatch(bad)


def test_api_token_cache_and_revocation_from_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "s.db")
    other = connect(path)  # stands in for another worker or the CLI
    issued = transaction(
        other,
        lambda c: issue(c, "fgw_", name="n", user_id="u1", role="admin", plan="p", app_key="a", scopes=["x"]),
    )
    store = open_store(path)
    verifier = ApiTokenVerifier(store, "fgw_", Metrics())

    async def scenario() -> None:
        principal = await verifier.verify(issued.token)
        assert (principal.user_id, principal.role, principal.scopes, principal.source) == (
            "u1",
            "admin",
            ("x",),
            "api_token",
        )
        assert principal.token_id == issued.record.id and issued.token not in principal.token_fingerprint
        transaction(other, lambda c: token_rows.revoke(c, issued.record.id, "2026-01-01T00:00:00.000Z"))
        # Within CHECK_INTERVAL the cached lookup may still answer; after it, never.
        monkeypatch.setattr(api_tokens, "CHECK_INTERVAL", 0.0)
        with pytest.raises(AuthFailure) as refused:
            await verifier.verify(issued.token)
        assert refused.value.reason == "revoked"
        with pytest.raises(AuthFailure) as unknown:
            await verifier.verify("fgw_" + "A" * 43)
        assert unknown.value.reason == "invalid_token"
        with pytest.raises(AuthFailure):
            await verifier.verify("fgw_short")

    try:
        asyncio.run(scenario())
    finally:
        store.close()
        other.close()


def test_api_token_store_failure_is_503(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "no-such-dir" / "s.db"))
    verifier = ApiTokenVerifier(store, "fgw_", Metrics())

    async def scenario() -> None:
        with pytest.raises(LocalReply) as reply:
            await verifier.verify("fgw_" + "A" * 43)
        assert reply.value.code == "SERVICE_UNAVAILABLE"

    try:
        asyncio.run(scenario())
    finally:
        store.close()


def test_session_lookups_are_shared_and_cached() -> None:
    server = SessionServer()
    server.sessions["c1"] = {"id": "u-1", "role": "admin"}
    server.sessions["c2"] = {"id": 7}
    verifier = SessionVerifier(SessionConfig(verify_url=server.url, cache_ttl=30), Metrics())

    async def scenario() -> None:
        results = await asyncio.gather(*(verifier.verify("c1") for _ in range(20)))
        assert {(p.user_id, p.role, p.source) for p in results} == {("u-1", "admin", "session")}
        assert (await verifier.verify("c2")).user_id == "7"
        for _ in range(3):
            with pytest.raises(AuthFailure):
                await verifier.verify("nobody")
        assert server.calls == {"c1": 1, "c2": 1, "nobody": 1}
        server.status = 502
        for _ in range(5):
            with pytest.raises(LocalReply):
                await verifier.verify("c3")
        assert server.calls["c3"] == 3  # then the breaker stops asking for a while
        assert (await verifier.verify("c1")).user_id == "u-1"  # still cached

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_recent_verdicts_are_known_without_waiting(tmp_path: Path) -> None:
    """A JWT or API token verified moments ago is answered by ``known_principal`` at once (no
    coroutine on the request path); an unseen, malformed or due-for-recheck one is not."""
    secret = "known-principal-secret-0123456789abcdef"
    config = parse_config(
        f"auth:\n  jwt: {{algorithms: [HS256], secret: {secret}}}\n"
        "  tokens: [{token: static-token-0123456789, user_id: s}]\n",
        {},
    )
    store = open_store(str(tmp_path / "s.db"))
    metrics = Metrics()
    api = ApiTokenVerifier(store, "fgw_", metrics)
    jwt_verifier = JwtVerifier(config.auth.jwt, metrics)
    auth = Authenticator(config, metrics, api_tokens=api, jwt=jwt_verifier)
    issued = transaction(
        connect(str(tmp_path / "s.db")),
        lambda c: issue(c, "fgw_", name="n", user_id="u1", role="user", plan="p", app_key="a", scopes=[]),
    )
    token = pyjwt.encode({"sub": "j1", "exp": int(time.time()) + 600}, secret, algorithm="HS256")

    def bearer(value: str) -> Headers:
        return Headers({"Authorization": f"Bearer {value}"})

    async def scenario() -> None:
        assert auth.known_principal(bearer("static-token-0123456789")).user_id == "s"  # type: ignore[union-attr]
        assert auth.known_principal(bearer(token)) is None  # not verified yet
        assert auth.known_principal(bearer(issued.token)) is None
        assert (await auth.from_bearer(token)).user_id == "j1"
        assert (await auth.from_bearer(issued.token)).user_id == "u1"
        assert auth.known_principal(bearer(token)).user_id == "j1"  # type: ignore[union-attr]
        assert auth.known_principal(bearer(issued.token)).user_id == "u1"  # type: ignore[union-attr]
        for bad in (Headers(), Headers({"Authorization": f"Basic {token}"}), bearer(token + "x")):
            assert auth.known_principal(bad) is None
        both = Headers([("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")])
        assert auth.known_principal(both) is None  # two headers: authenticate refuses them
        api.recheck()  # a revocation check is due: the store must be asked first
        assert auth.known_principal(bearer(issued.token)) is None

    try:
        asyncio.run(scenario())
    finally:
        store.close()
