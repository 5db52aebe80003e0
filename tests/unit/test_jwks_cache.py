"""The JWKS key-set cache against a real JWKS server (fastgw/auth/jwks.py's time rules)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from fastgw.auth.authenticator import AuthFailure
from fastgw.auth.jwks import JwksCache, parse_key_set
from fastgw.errors import LocalReply
from fastgw.metrics import Metrics
from tests.auth_servers import JwksServer, public_jwk, rsa_key

RSA = rsa_key()
OTHER = rsa_key()


@pytest.fixture
def server() -> Iterator[JwksServer]:
    jwks = JwksServer([public_jwk(RSA, "r1")])
    yield jwks
    jwks.stop()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def kids(cache: JwksCache, kid: str | None = "r1") -> list[str | None]:
    return [k.kid for k in await cache.candidates(kid, "RS256")]


def test_parse_key_set_tells_an_empty_set_from_a_broken_document() -> None:
    assert parse_key_set(b'{"keys": []}') == []
    assert parse_key_set(b'{"keys": [{"kty": "oct", "k": "AA"}]}') == []
    for broken in (b"nope", b"[]", b'{"keys": 1}', b"{}"):
        with pytest.raises(ValueError):
            parse_key_set(broken)


def test_a_successful_fetch_replaces_the_keys_even_with_none(server: JwksServer) -> None:
    async def scenario() -> None:
        cache = JwksCache(server.url, ttl=0, min_refetch=0, metrics=Metrics())
        assert await kids(cache) == ["r1"]
        server.keys = [public_jwk(OTHER, "r2")]
        with pytest.raises(AuthFailure) as gone:
            await kids(cache)
        assert gone.value.reason == "unknown_kid"
        assert await kids(cache, "r2") == ["r2"]
        server.keys = [{"kty": "oct", "k": "c2VjcmV0", "kid": "r2"}]
        with pytest.raises(AuthFailure):
            await kids(cache, "r2")
        assert cache.keys == ()

    run(scenario)


def test_the_ttl_refetches_known_kids_and_failures_back_off(server: JwksServer) -> None:
    async def scenario() -> None:
        cache = JwksCache(server.url, ttl=0.2, min_refetch=60, metrics=Metrics())
        assert await kids(cache) == ["r1"] and server.fetches == 1
        assert await kids(cache) == ["r1"] and server.fetches == 1  # fresh: no fetch
        await asyncio.sleep(0.25)
        assert await kids(cache) == ["r1"] and server.fetches == 2  # ttl passed: refetched
        with pytest.raises(AuthFailure):  # unknown kid: no refetch before min_refetch
            await kids(cache, "nope")
        assert server.fetches == 2
        server.status = 500
        await asyncio.sleep(0.25)
        assert await kids(cache) == ["r1"] and server.fetches == 3  # failed: stale keys kept
        await asyncio.sleep(0.25)
        assert await kids(cache) == ["r1"] and server.fetches == 3  # retry waits min_refetch

    run(scenario)


def test_stale_keys_end_at_max_stale_then_503_until_the_idp_is_back(server: JwksServer) -> None:
    async def scenario() -> None:
        cache = JwksCache(server.url, ttl=0.1, min_refetch=0, metrics=Metrics(), max_stale=0.3)
        assert await kids(cache) == ["r1"]
        server.body = b"{not json"
        await asyncio.sleep(0.15)
        assert await kids(cache) == ["r1"]
        await asyncio.sleep(0.35)
        with pytest.raises(LocalReply) as stale:
            await kids(cache)
        assert stale.value.code == "SERVICE_UNAVAILABLE"
        server.body = None
        assert await kids(cache) == ["r1"]

    run(scenario)


def test_a_hanging_idp_costs_at_most_the_timeout(server: JwksServer) -> None:
    async def scenario() -> None:
        cache = JwksCache(server.url, ttl=0.1, min_refetch=0, metrics=Metrics(), timeout=0.3)
        assert await kids(cache) == ["r1"]
        server.delay = 3
        await asyncio.sleep(0.15)
        started = time.monotonic()
        assert await kids(cache) == ["r1"]  # stale keys after the timed-out fetch
        assert time.monotonic() - started < 1.5
        assert cache.failing

    run(scenario)


def test_valid_until_follows_the_key_set(server: JwksServer) -> None:
    async def scenario() -> None:
        cache = JwksCache(server.url, ttl=10, min_refetch=2, metrics=Metrics(), max_stale=30)
        first, _ = await cache.lookup("r1", "RS256")
        assert cache.valid_until(first) == first.fetched_at + 10
        cache.ttl = 0
        second, _ = await cache.lookup("r1", "RS256")  # refetched: a new set
        assert second is not first and cache.valid_until(first) == -math.inf
        server.status = 503
        cache.min_refetch = 0
        third, _ = await cache.lookup("r1", "RS256")  # failed: the same, stale set
        assert third is second and cache.failing
        cache.min_refetch, cache.max_stale = 2, 30
        assert cache.valid_until(second) == min(cache.attempted_at + 2, second.fetched_at + 30)

    run(scenario)


def test_take_over_keeps_the_key_set_only_for_the_same_url(server: JwksServer) -> None:
    async def scenario() -> None:
        old = JwksCache(server.url, ttl=600, min_refetch=5, metrics=Metrics())
        assert await kids(old) == ["r1"]
        server.status = 503
        same = JwksCache(server.url, ttl=600, min_refetch=5, metrics=Metrics())
        same.take_over(old)
        assert same.key_set is old.key_set and await kids(same) == ["r1"]
        elsewhere = JwksCache(server.url + "?other", ttl=600, min_refetch=5, metrics=Metrics())
        elsewhere.take_over(old)
        with pytest.raises(LocalReply):
            await kids(elsewhere)
        assert server.fetches == 2  # only `elsewhere` fetched

    run(scenario)
