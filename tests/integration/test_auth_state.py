"""Auth and circuit state that stays true over time and across SIGHUP (SPEC sections 4, 8, 11, 13.8).

A real gateway process, a real JWKS server the tests rotate and break, a real session service
and real upstreams: keys withdrawn by the IdP stop working within ``jwks_cache_ttl``, an outage
is bridged for ``jwks_max_stale`` and then answered 503, and a reload keeps what is still valid.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.auth_servers import JwksServer, SessionServer, claims, public_jwk, rsa_key, sign
from tests.conftest import GatewayProcess, free_port
from tests.upstream_server import UpstreamServer

K1 = rsa_key()
K2 = rsa_key()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer([public_jwk(K1, "k1"), public_jwk(K2, "k2")])
    yield server
    server.stop()


def jwt_config(upstream: UpstreamServer, jwks: JwksServer, **jwt: Any) -> dict[str, Any]:
    return {
        "auth": {"jwt": {"algorithms": ["RS256"], "jwks_url": jwks.url, **jwt}},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/*", "upstream": "svc"}],
    }


def token(key: Any, kid: str) -> str:
    """A new RS256 token each call (a unique jti), so no verdict cache can answer for it."""
    return sign(claims(jti=uuid.uuid4().hex), key, "RS256", kid)


def call(gw: GatewayProcess, bearer: str) -> tuple[int, Any]:
    status, _, body = gw.request("GET", "/api/x", headers={"Authorization": f"Bearer {bearer}"})
    return status, json.loads(body) if body.startswith(b'{"ok"') else None


def status_of(gw: GatewayProcess, bearer: str) -> int:
    return call(gw, bearer)[0]


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def reload(gw: GatewayProcess, config: dict[str, Any] | None = None) -> None:
    """SIGHUP (after rewriting the file when ``config`` is given); returns once it is applied."""
    if config is not None:
        gw.config_path.write_text(yaml.safe_dump(config))
    done = sum("config reloaded" in line for line in gw.stderr)
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while sum("config reloaded" in line for line in gw.stderr) <= done:
        assert time.monotonic() < deadline, "".join(gw.stderr)
        time.sleep(0.02)


def test_withdrawn_key_is_refused_after_the_ttl(
    upstream: UpstreamServer, jwks: JwksServer, start_gateway: Any
) -> None:
    # min_refetch far above the ttl: the ttl alone must bring the refetch, for a known kid too.
    gw = start_gateway(jwt_config(upstream, jwks, jwks_cache_ttl="1s", jwks_min_refetch="30s"))
    seen = token(K1, "k1")
    assert status_of(gw, seen) == 200
    assert status_of(gw, seen) == 200  # now in the verdict cache
    assert status_of(gw, token(K2, "k2")) == 200
    assert jwks.fetches == 1
    jwks.keys = [public_jwk(K2, "k2")]  # the IdP withdraws k1
    time.sleep(1.3)
    assert status_of(gw, seen) == 401, "a cached verdict outlived the withdrawn key"
    assert status_of(gw, token(K1, "k1")) == 401
    assert status_of(gw, token(K2, "k2")) == 200
    # One refetch at the ttl; the unknown kid k1 did not bring another within min_refetch.
    assert jwks.fetches == 2


def test_a_refetch_that_drops_a_key_drops_its_cached_verdicts(
    upstream: UpstreamServer, jwks: JwksServer, start_gateway: Any
) -> None:
    gw = start_gateway(jwt_config(upstream, jwks, jwks_cache_ttl="10m", jwks_min_refetch="200ms"))
    seen = token(K1, "k1")
    assert status_of(gw, seen) == 200
    k3 = rsa_key()
    jwks.keys = [public_jwk(k3, "k3")]  # k1 withdrawn, k3 published
    time.sleep(0.3)
    assert status_of(gw, token(k3, "k3")) == 200  # the unknown kid brought a refetch
    assert jwks.fetches == 2
    assert status_of(gw, seen) == 401, "a verdict outlived the key set that made it"


def test_an_empty_or_unusable_jwks_replaces_the_keys(
    upstream: UpstreamServer, jwks: JwksServer, start_gateway: Any
) -> None:
    gw = start_gateway(jwt_config(upstream, jwks, jwks_cache_ttl="1s", jwks_min_refetch="200ms"))
    seen = token(K1, "k1")
    assert status_of(gw, seen) == 200
    jwks.keys = []
    time.sleep(1.3)
    assert status_of(gw, seen) == 401
    assert status_of(gw, token(K1, "k1")) == 401
    jwks.keys = [public_jwk(K1, "k1")]
    time.sleep(1.3)
    assert status_of(gw, token(K1, "k1")) == 200
    # Only keys we cannot use: a symmetric key and an encryption key under the same kid.
    jwks.keys = [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"}, {**public_jwk(K1, "k1"), "use": "enc"}]
    time.sleep(1.3)
    status, body = call(gw, token(K1, "k1"))
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"


def test_idp_outage_uses_cached_keys_up_to_max_stale_then_503(
    upstream: UpstreamServer, jwks: JwksServer, start_gateway: Any
) -> None:
    gw = start_gateway(
        jwt_config(upstream, jwks, jwks_cache_ttl="1s", jwks_max_stale="2500ms", jwks_min_refetch="200ms")
    )
    seen = token(K1, "k1")
    before = time.monotonic()
    assert status_of(gw, seen) == 200
    fetched = time.monotonic()  # the good fetch started between `before` and here
    # Every kind of failed fetch leaves the keys in use while within max_stale.
    jwks.status = 500
    sleep_until(before + 1.3)
    assert status_of(gw, token(K1, "k1")) == 200
    jwks.status, jwks.body = 200, b'{"keys": [oops'
    time.sleep(0.4)
    assert status_of(gw, token(K1, "k1")) == 200
    assert status_of(gw, seen) == 200
    attempts = jwks.fetches
    assert attempts >= 3, "the outage was never noticed"
    jwks.stop()  # connection refused from now on
    time.sleep(0.4)
    assert status_of(gw, token(K1, "k1")) == 200
    sleep_until(fetched + 1 + 2.5 + 0.3)
    fresh = token(K1, "k1")
    for bearer in (fresh, seen):
        status, body = call(gw, bearer)
        assert status == 503 and body["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert bearer not in json.dumps(body)
    assert status_of(gw, token(K2, "k2")) == 503


def test_reload_keeps_jwks_keys_during_an_idp_outage(
    upstream: UpstreamServer, jwks: JwksServer, start_gateway: Any
) -> None:
    config = jwt_config(upstream, jwks)
    gw = start_gateway(config)
    seen = token(K1, "k1")
    assert status_of(gw, seen) == 200
    jwks.status = 503  # the IdP goes down
    reload(gw)
    assert status_of(gw, token(K1, "k1")) == 200, "the reload dropped the keys"
    assert status_of(gw, seen) == 200
    assert jwks.fetches == 1  # the carried key set is still fresh: nothing refetched
    # Another jwks_url: the old keys are not carried over to it.
    other = JwksServer([public_jwk(K2, "k2")])
    try:
        reload(gw, jwt_config(upstream, other))
        assert status_of(gw, token(K1, "k1")) == 401
        assert status_of(gw, seen) == 401
        assert status_of(gw, token(K2, "k2")) == 200
    finally:
        other.stop()


def test_reload_keeps_an_ejected_target_ejected(upstream: UpstreamServer, start_gateway: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(
        {
            "upstreams": {
                "pair": {
                    "targets": [upstream.url, dead],
                    "retries": 0,  # a request sent to the dead target shows as a 502
                    "connect_timeout": "1s",
                    "circuit": {"failures": 1, "cooldown": "60s"},
                }
            },
            "routes": [{"path": "/*", "upstream": "pair", "auth": "none"}],
        }
    )
    statuses = [gw.request("GET", f"/first/{n}")[0] for n in range(2)]
    assert sorted(statuses) == [200, 502]  # round robin met the dead target once: ejected
    assert [gw.request("GET", f"/before/{n}")[0] for n in range(6)] == [200] * 6
    served = len(upstream.requests)
    reload(gw)
    assert [gw.request("GET", f"/after/{n}")[0] for n in range(6)] == [200] * 6
    assert len(upstream.requests) == served + 6


def test_reload_keeps_session_answers(upstream: UpstreamServer, start_gateway: Any) -> None:
    sessions = SessionServer()
    value = "good.c2lnbmF0dXJl"
    sessions.sessions[value] = {"id": "u-42", "role": "user"}
    cookie = {"Cookie": f"{SessionServer.COOKIE}={value}"}
    config: dict[str, Any] = {
        "auth": {"session": {"verify_url": sessions.url, "cache_ttl": "60s"}},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/*", "upstream": "svc"}],
    }
    try:
        gw = start_gateway(config)
        assert gw.request("GET", "/api/a", headers=cookie)[0] == 200
        assert sessions.calls[value] == 1
        sessions.status = 500  # the auth service fails from now on: only the cache can answer
        reload(gw)
        assert gw.request("GET", "/api/b", headers=cookie)[0] == 200
        assert sessions.calls[value] == 1
        assert upstream.requests[-1].header("X-User-Id") == "u-42"
        # A changed session config starts afresh: the service is asked again.
        sessions.status = 200
        config["auth"]["session"]["cache_ttl"] = "59s"
        reload(gw, config)
        assert gw.request("GET", "/api/c", headers=cookie)[0] == 200
        assert sessions.calls[value] == 2
    finally:
        sessions.stop()
