"""The Redis backend against a real redis-server: atomicity, TTLs, NOSCRIPT, the calendar, failure."""

from __future__ import annotations

import asyncio
import calendar
import datetime
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from tornado.httputil import HTTPHeaders

from fastgw.auth.principal import Principal
from fastgw.config import Config, config_from_dict
from fastgw.errors import LocalReply
from fastgw.metrics import Metrics
from fastgw.ratelimit import Limiter
from fastgw.ratelimit.quotas import period_bounds
from fastgw.ratelimit.redis_backend import CALENDAR_LUA, describe_url
from fastgw.speedups import BucketTable
from tests.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


@pytest.fixture
def db(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=server.port)
    client.flushall()
    yield client
    client.close()


def make_config(url: str, rate_limits: dict[str, Any], routes: list[dict[str, Any]] | None = None) -> Config:
    routes = routes if routes is not None else [{"path": "/a/*"}]
    return config_from_dict(
        {
            "redis": url,
            "upstreams": {"svc": {"targets": ["http://127.0.0.1:1"]}},
            "rate_limits": rate_limits,
            "routes": [{"upstream": "svc", **route} for route in routes],
        },
        env={},
    )


async def check(limiter: Limiter, path: str = "/a/*", **kwargs: Any) -> dict[str, str] | LocalReply:
    route = next(r for r in limiter.config.routes if r.path == path)
    try:
        out = await limiter.check(
            path,
            limiter.policies_for(route),
            kwargs.get("principal"),
            kwargs.get("ip", "10.0.0.1"),
            HTTPHeaders(kwargs.get("headers", {})),
        )
    except LocalReply as reply:
        return reply
    return dict(out)


def errors(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("fastgw_ratelimit_backend_errors_total") or 0.0


def test_buckets_in_redis_match_the_local_table(server: RedisServer, db: redis.Redis) -> None:
    # A slow refill, so the microseconds between calls change no whole number.
    config = make_config(server.url, {"global": {"rate": 12, "per": "1h", "burst": 4}})
    table = BucketTable(12, 3600, 4)

    async def scenario() -> list[Any]:
        limiter = Limiter(config, Metrics(CollectorRegistry()))
        out = [await check(limiter) for _ in range(6)]
        await limiter.close()
        return out

    for got in asyncio.run(scenario()):
        allowed, remaining, retry_after, reset = table.take("k", 0.0)
        headers = dict(got.headers) if isinstance(got, LocalReply) else got
        assert isinstance(got, dict) == allowed
        assert headers["RateLimit-Remaining"] == str(remaining)
        assert headers["RateLimit-Reset"] == str(reset)
        assert headers["RateLimit-Policy"] == "4;w=3600"
        if not allowed:
            assert headers["Retry-After"] == str(retry_after)
    (key,) = db.keys("fastgw:rl:*")
    assert key == b"fastgw:rl:global:10.0.0.1"
    # Full again in 4 tokens x 300 s: the bucket disappears then, not before.
    assert 1190 <= db.ttl(key) <= 1201


def test_processes_sharing_redis_allow_the_burst_exactly_once(server: RedisServer, db: redis.Redis) -> None:
    config = make_config(server.url, {"global": {"rate": 1, "per": "1h", "burst": 50}})

    async def scenario() -> list[Any]:
        limiters = [Limiter(config, Metrics(CollectorRegistry())) for _ in range(4)]
        results = await asyncio.gather(*(check(limiters[i % 4]) for i in range(400)))
        for limiter in limiters:
            await limiter.close()
        return results

    results = asyncio.run(scenario())
    assert sum(isinstance(r, dict) for r in results) == 50
    assert sum(isinstance(r, LocalReply) and r.code == "RATE_LIMITED" for r in results) == 350


def test_a_refused_request_takes_no_token_from_other_policies(server: RedisServer, db: redis.Redis) -> None:
    config = make_config(
        server.url,
        {
            "global": {"rate": 1, "per": "1h", "burst": 3},
            "policies": {"one": {"rate": 1, "per": "1h", "burst": 1}},
        },
        [{"path": "/a/*", "rate_limit": "one"}, {"path": "/b/*"}],
    )

    async def scenario() -> list[Any]:
        limiter = Limiter(config, Metrics(CollectorRegistry()))
        out = [await check(limiter, "/a/*"), await check(limiter, "/a/*"), await check(limiter, "/b/*")]
        await limiter.close()
        return out

    first, second, third = asyncio.run(scenario())
    assert isinstance(first, dict) and first["RateLimit-Limit"] == "1"
    assert isinstance(second, LocalReply) and dict(second.headers)["RateLimit-Limit"] == "1"
    assert isinstance(third, dict) and third["RateLimit-Remaining"] == "1"  # 3 - first - third


def test_script_flushed_from_redis_is_loaded_again(server: RedisServer, db: redis.Redis) -> None:
    config = make_config(server.url, {"global": {"rate": 1, "per": "1h", "burst": 30}})
    metrics = Metrics(CollectorRegistry())

    async def scenario() -> list[Any]:
        limiter = Limiter(config, metrics)
        out = [await check(limiter)]
        db.script_flush()
        out.append(await check(limiter))  # alone
        db.script_flush()
        out += await asyncio.gather(*(check(limiter) for _ in range(40)))  # in pipelined batches
        db.script_flush()
        # A batch that meets NOSCRIPT: loaded once, the batch's calls run again.
        assert limiter.remote is not None
        args = (b"1.0", b"1.0", b"5.0")
        replies = await limiter.remote._round_trip([(0, ["k1"], args), (0, ["k2"], args), (0, ["k1"], args)])
        assert [reply[2] if reply else None for reply in replies] == [4, 4, 3]
        await limiter.close()
        return out

    results = asyncio.run(scenario())
    assert [r["RateLimit-Remaining"] for r in results[:2] if isinstance(r, dict)] == ["29", "28"]
    # Every call went to the one bucket in Redis: exactly the burst was allowed.
    assert sum(isinstance(r, dict) for r in results) == 30
    assert errors(metrics) == 0


def test_quota_counts_in_redis_until_the_utc_period_ends(server: RedisServer, db: redis.Redis) -> None:
    config = config_from_dict(
        {
            "redis": server.url,
            "upstreams": {"svc": {"targets": ["http://127.0.0.1:1"]}},
            "rate_limits": {
                "quotas": {"free": {"requests": 3, "per": "day"}, "pro": {"requests": 9, "per": "month"}}
            },
            "routes": [{"path": "/q", "upstream": "svc", "quota": True}],
        },
        env={},
    )
    free, pro = Principal("alice", plan="free"), Principal("carol", plan="pro")

    async def scenario() -> list[str]:
        limiters = [Limiter(config, Metrics(CollectorRegistry())) for _ in range(2)]
        codes = []
        for i in range(5):
            try:
                await limiters[i % 2].check_quota(config.routes[0], free)
                codes.append("ok")
            except LocalReply as reply:
                codes.append(reply.code)
        await limiters[0].check_quota(config.routes[0], pro)
        for limiter in limiters:
            await limiter.close()
        return codes

    assert asyncio.run(scenario()) == ["ok", "ok", "ok", "QUOTA_EXCEEDED", "QUOTA_EXCEEDED"]
    assert db.get("fastgw:q:day:alice") == b"3"  # the refused ones were not counted
    now = db.time()[0]
    assert db.expiretime("fastgw:q:day:alice") == period_bounds("day", now)[1]
    assert db.expiretime("fastgw:q:month:carol") == period_bounds("month", now)[1]


def test_lua_calendar_agrees_with_python(db: redis.Redis) -> None:
    harness = db.register_script(
        CALENDAR_LUA + "local out = {} for i, t in ipairs(ARGV) do "
        "out[#out + 1] = period_end('month', tonumber(t)) end return out"
    )
    stamps = [
        calendar.timegm(datetime.datetime(year, month, day, hour).timetuple())
        for year in (1970, 1999, 2000, 2024, 2025, 2100, 2400)
        for month in range(1, 13)
        for day, hour in ((1, 0), (15, 12), (28, 23))
    ]
    stamps += [calendar.timegm((2024, 2, 29, 23, 59, 59)), calendar.timegm((2025, 12, 31, 23, 59, 59))]
    assert harness(args=stamps) == [period_bounds("month", t)[1] for t in stamps]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_redis_falls_back_to_local_buckets_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    config = make_config(f"redis://127.0.0.1:{port}/0", {"global": {"rate": 1, "per": "1h", "burst": 2}})
    metrics = Metrics(CollectorRegistry())
    late = RedisServer(tmp_path / "late", port=port)

    async def scenario() -> list[Any]:
        limiter = Limiter(config, metrics)
        assert limiter.remote is not None
        limiter.remote.backoff = 0.05
        out = [await check(limiter) for _ in range(3)]
        assert not limiter.remote.available
        assert errors(metrics) == 1  # the open circuit keeps later checks off the network
        await asyncio.to_thread(late.start)
        for _ in range(200):
            if limiter.remote.available:
                break
            await asyncio.sleep(0.02)
        assert limiter.remote.available
        out.append(await check(limiter, ip="10.0.0.2"))
        await limiter.close()
        return out

    with caplog.at_level(logging.WARNING, logger="fastgw.ratelimit"):
        try:
            first, second, third, after = asyncio.run(scenario())
            keys = redis.Redis(port=port).keys("fastgw:rl:*")
        finally:
            late.stop()
    assert isinstance(first, dict) and first["RateLimit-Remaining"] == "1"
    assert isinstance(second, dict) and isinstance(third, LocalReply)  # limited locally meanwhile
    assert isinstance(after, dict) and keys == [b"fastgw:rl:global:10.0.0.2"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed" in m for m in messages) == 1 and sum("shared again" in m for m in messages) == 1
    assert all(str(port) in m for m in messages)


def test_a_stalled_redis_times_out_to_local(server: RedisServer, db: redis.Redis) -> None:
    config = make_config(server.url, {"global": {"rate": 1, "per": "1h", "burst": 2}})
    metrics = Metrics(CollectorRegistry())

    async def scenario() -> list[Any]:
        limiter = Limiter(config, metrics)
        out = [await check(limiter)]  # Redis: 1 left
        db.client_pause(1000, all=True)
        try:
            out.append(await check(limiter))
        finally:
            db.client_unpause()
        await limiter.close()
        return out

    first, second = asyncio.run(scenario())
    assert isinstance(first, dict) and first["RateLimit-Remaining"] == "1"
    # A full local bucket answered: Redis would have said 0.
    assert isinstance(second, dict) and second["RateLimit-Remaining"] == "1"
    assert errors(metrics) == 1


def test_log_lines_never_show_a_password() -> None:
    assert describe_url("redis://:s3cret@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert describe_url("rediss://user:pw@host/0") == "rediss://host/0"
    assert describe_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
