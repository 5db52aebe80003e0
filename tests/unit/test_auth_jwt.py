"""JWT verification in-process: the exact refusal reason for each attack, key selection, JWKS caching."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fastgw.auth.authenticator import AuthFailure
from fastgw.auth.jwt import JwksCache, JwtDecoder, claim, parse_jwks, principal_from_claims, scopes_claim
from fastgw.config import ClaimsMap
from fastgw.errors import LocalReply
from fastgw.metrics import Metrics
from tests.auth_servers import JwksServer, claims, ec_key, public_jwk, public_pem, raw_token, rsa_key, sign

SECRET = "unit-test-secret-0123456789-abcdefgh"
RSA = rsa_key()
EC = ec_key()
ISS = "https://iss.test"
AUD = "aud-1"


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer(
        [public_jwk(RSA, "r1"), public_jwk(EC, "e1"), {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"}]
    )
    yield server
    server.stop()


def decoder(jwks: JwksServer | None, **overrides: Any) -> JwtDecoder:
    options: dict[str, Any] = {
        "algorithms": ["HS256", "RS256", "ES256"],
        "secret": SECRET,
        "jwks": JwksCache(jwks.url, 600, 5, Metrics()) if jwks else None,
        "issuers": (ISS,),
        "audience": AUD,
        "leeway": 0,
    }
    options.update(overrides)
    return JwtDecoder(**options)


def reason(dec: JwtDecoder, token: str) -> str:
    async def run() -> str:
        try:
            await dec.decode(token)
        except AuthFailure as failure:
            return failure.reason
        return "accepted"

    return asyncio.run(run())


def ok(**extra: Any) -> dict[str, Any]:
    return claims(**{"iss": ISS, "aud": AUD, **extra})


def test_each_attack_is_refused_for_its_own_reason(jwks: JwksServer) -> None:
    dec = decoder(jwks)
    now = int(time.time())
    pem = public_pem(RSA)
    cases = {
        "accepted": [
            sign(ok(), SECRET, "HS256"),
            sign(ok(), RSA, "RS256", "r1"),
            sign(ok(), EC, "ES256", "e1"),
        ],
        "bad_algorithm": [
            raw_token({"alg": "none"}, ok(), None),
            raw_token({"alg": "NONE"}, ok(), None),
            sign(ok(), RSA, "PS256", "r1"),
            sign(ok(), "c2VjcmV0" * 7, "HS384"),
        ],
        # The RSA public key as an HMAC secret, with and without the JWKS kid: the secret is the
        # only HS key, so the signature simply does not match.
        "bad_signature": [
            raw_token({"alg": "HS256", "kid": "r1"}, ok(), pem),
            raw_token({"alg": "HS256", "kid": "h1"}, ok(), b"secret"),
            sign(ok(), rsa_key(), "RS256", "r1"),
        ],
        "unknown_kid": [sign(ok(), EC, "ES256", "r1"), sign(ok(), RSA, "RS256", "x" * 300)],
        "expired": [sign(ok(exp=now - 1), RSA, "RS256", "r1")],
        "not_yet_valid": [
            sign(ok(nbf=now + 60), RSA, "RS256", "r1"),
            sign(ok(iat=now + 60), SECRET, "HS256"),
        ],
        "bad_claims": [
            sign({"sub": "a", "iss": ISS, "aud": AUD}, SECRET, "HS256"),
            sign(ok(exp=str(now + 60)), SECRET, "HS256"),
            sign(ok(exp=True), SECRET, "HS256"),
            sign(ok(iss="https://iss.test.evil"), SECRET, "HS256"),
            sign(ok(aud=["other"]), SECRET, "HS256"),
            sign(claims(iss=ISS), SECRET, "HS256"),
        ],
        "malformed": [
            raw_token({"alg": "HS256", "crit": ["exp"]}, ok(), SECRET.encode()),
            raw_token({"alg": "HS256"}, json.dumps(ok())[:-1] + ',"sub":"admin"}', SECRET.encode()),
            "x.y",
            "a" * 20000,
        ],
    }
    for expected, tokens in cases.items():
        for token in tokens:
            assert reason(dec, token) == expected, (expected, token[:60])


def test_hs_tokens_from_login_pass_an_issuer_check_without_weakening_rs(jwks: JwksServer) -> None:
    dec = decoder(jwks, hs_issuers=(ISS, "fastgw"))
    assert reason(dec, sign(ok(iss="fastgw"), SECRET, "HS256")) == "accepted"
    assert reason(dec, sign(ok(iss="fastgw"), RSA, "RS256", "r1")) == "bad_claims"


def test_no_secret_means_no_hs_and_no_jwks_means_no_rs() -> None:
    assert reason(decoder(None, secret=None), sign(ok(), SECRET, "HS256")) == "bad_algorithm"
    assert reason(decoder(None), sign(ok(), RSA, "RS256", "r1")) == "bad_algorithm"


def test_parse_jwks_keeps_only_public_signing_keys() -> None:
    private_rsa = public_jwk(RSA, "priv")
    keys = parse_jwks(
        json.dumps(
            {
                "keys": [
                    public_jwk(RSA, "r1", alg="RS256"),
                    public_jwk(EC, "e1"),
                    {**private_rsa, "use": "enc"},
                    {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
                    {"kty": "RSA", "kid": "broken", "n": "???", "e": "AQAB"},
                    "junk",
                ]
            }
        ).encode()
    )
    assert [(k.kid, k.kty) for k in keys] == [("r1", "RSA"), ("e1", "EC")]
    rsa_jwk, ec_jwk = keys
    assert rsa_jwk.fits("RS256") and not rsa_jwk.fits("PS256") and not rsa_jwk.fits("ES256")
    assert not rsa_jwk.fits("HS256") and not ec_jwk.fits("HS256")
    assert ec_jwk.fits("ES256") and not ec_jwk.fits("ES384") and not ec_jwk.fits("RS256")
    for garbage in (b"nope", b"[]", b'{"keys": 1}', b'{"keys": [{"kty": "oct", "k": "AA"}]}'):
        with pytest.raises(ValueError):
            parse_jwks(garbage)


def test_jwks_cache_keeps_last_good_keys_and_bounds_refetches() -> None:
    server = JwksServer([public_jwk(RSA, "r1")])

    async def scenario() -> None:
        cache = JwksCache(server.url, ttl=0, min_refetch=0, metrics=Metrics())
        assert [k.kid for k in await cache.candidates("r1", "RS256")] == ["r1"]
        server.status = 500
        assert [k.kid for k in await cache.candidates("r1", "RS256")] == ["r1"]  # stale but kept
        assert server.fetches == 2
        slow = JwksCache(server.url, ttl=600, min_refetch=60, metrics=Metrics())
        with pytest.raises(LocalReply) as never:
            await slow.candidates("r1", "RS256")
        assert never.value.code == "SERVICE_UNAVAILABLE"
        server.status = 200
        with pytest.raises(LocalReply):  # no retry before min_refetch, even after a failure
            await slow.candidates("r1", "RS256")
        assert server.fetches == 3
        storm = JwksCache(server.url, ttl=600, min_refetch=60, metrics=Metrics())
        results = await asyncio.gather(
            *(storm.candidates(f"kid-{i}", "RS256") for i in range(50)), return_exceptions=True
        )
        assert all(isinstance(r, AuthFailure) and r.reason == "unknown_kid" for r in results)
        assert server.fetches == 4  # fifty concurrent misses, one fetch

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_claims_mapping() -> None:
    mapping = ClaimsMap(user_id="sub", role="realm.role", scopes="scp", app_key="app", plan="plan")
    principal = principal_from_claims(
        {"sub": "u1", "realm": {"role": "admin"}, "scp": ["a", "b"], "plan": "pro"}, mapping, "jwt", "t"
    )
    assert (principal.user_id, principal.role, principal.scopes, principal.plan, principal.app_key) == (
        "u1",
        "admin",
        ("a", "b"),
        "pro",
        "",
    )
    assert claim({"a.b": 1, "a": {"b": 2}}, "a.b") == 1
    assert scopes_claim("read  write ") == ("read", "write") and scopes_claim(None) == ()
    for bad in (
        {"sub": 5},
        {"sub": ""},
        {"sub": "u", "realm": {"role": ["admin"]}},
        {"sub": "u", "scp": ["a b"]},
    ):
        with pytest.raises(AuthFailure):
            principal_from_claims(bad, mapping, "jwt", "t")
