"""The in-process limiter: buckets, keys, policy selection, headers and quotas, at explicit times."""

from __future__ import annotations

import asyncio
import calendar
import datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tornado.httputil import HTTPHeaders

from fastgw.auth.principal import Principal
from fastgw.config import Config, QuotaConfig, RouteConfig, config_from_dict
from fastgw.errors import LocalReply
from fastgw.metrics import Metrics
from fastgw.ratelimit import Limiter
from fastgw.ratelimit.local import LocalLimiter, Policy, conclude, format_number
from fastgw.ratelimit.quotas import LocalQuotas, period_bounds

ALICE = Principal("alice", plan="free", token_fingerprint="fp-alice")
BOB = Principal("bob", plan="free", token_fingerprint="fp-bob")


def make_config(rate_limits: dict[str, Any], routes: list[dict[str, Any]] | None = None) -> Config:
    routes = routes if routes is not None else [{"path": "/a/*"}]
    return config_from_dict(
        {
            "upstreams": {"svc": {"targets": ["http://127.0.0.1:1"]}},
            "rate_limits": rate_limits,
            "routes": [{"upstream": "svc", **route} for route in routes],
        },
        env={},
    )


class Harness:
    """A LocalLimiter plus the metrics it counts into; ``take`` returns headers or the 429."""

    def __init__(self, config: Config, max_keys: int = 100_000) -> None:
        self.config = config
        self.metrics = Metrics(CollectorRegistry())
        self.limiter = LocalLimiter(config, self.metrics, max_keys)

    def route(self, path: str) -> RouteConfig:
        return next(r for r in self.config.routes if r.path == path)

    def take(
        self,
        path: str | None = "/a/*",
        now: float = 0.0,
        *,
        principal: Principal | None = None,
        ip: str = "10.0.0.1",
        headers: dict[str, str] | None = None,
    ) -> dict[str, str] | LocalReply:
        route = self.route(path) if path is not None else None
        policies = self.limiter.policies_for(route)
        try:
            out = self.limiter.check(
                policies, path or "/api/v1/me", principal, ip, HTTPHeaders(headers or {}), now
            )
        except LocalReply as reply:
            return reply
        return dict(out)

    def allowed(self, *args: Any, **kwargs: Any) -> dict[str, str]:
        out = self.take(*args, **kwargs)
        assert isinstance(out, dict), f"refused: {out}"
        return out

    def refused(self, *args: Any, **kwargs: Any) -> LocalReply:
        out = self.take(*args, **kwargs)
        assert isinstance(out, LocalReply), f"allowed: {out}"
        return out

    def ratelimited(self, policy: str) -> float:
        value = self.metrics.registry.get_sample_value("fastgw_ratelimited_total", {"policy": policy})
        return value or 0.0


def test_burst_then_refusal_then_refill() -> None:
    h = Harness(make_config({"global": {"rate": 10, "burst": 20}}))
    for left in range(19, -1, -1):
        out = h.allowed(now=0.0)
        assert out["RateLimit-Remaining"] == str(left)
        assert out["RateLimit-Limit"] == "20"
        assert out["RateLimit-Policy"] == "20;w=1"
    reply = h.refused(now=0.0)
    assert reply.code == "RATE_LIMITED" and reply.status == 429
    headers = dict(reply.headers)
    assert headers["Retry-After"] == "1"  # 0.1 s to the next token, rounded up
    assert headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Reset"] == "2"  # 20 tokens at 10/s
    assert h.ratelimited("global") == 1
    assert h.allowed(now=0.1)["RateLimit-Remaining"] == "0"
    h.refused(now=0.1)
    assert h.allowed(now=10.0)["RateLimit-Remaining"] == "19"


def test_retry_after_and_reset_count_whole_seconds_up() -> None:
    h = Harness(make_config({"global": {"rate": 12, "per": "60s", "key": "ip"}}))
    first = h.allowed(now=0.0)
    assert first["RateLimit-Policy"] == "12;w=60"
    assert first["RateLimit-Reset"] == "5"  # one token of 5 s used
    for _ in range(11):
        h.allowed(now=0.0)
    assert dict(h.refused(now=0.0).headers)["Retry-After"] == "5"
    assert dict(h.refused(now=2.0).headers)["Retry-After"] == "3"
    headers = dict(h.refused(now=4.5).headers)
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit-Reset"] == "56"  # 60 s to full, 4.5 s already refilled
    assert h.allowed(now=5.0)["RateLimit-Remaining"] == "0"


@pytest.mark.parametrize(
    ("value", "text"), [(20.0, "20"), (1.0, "1"), (0.5, "0.5"), (2.5, "2.5"), (3600.0, "3600")]
)
def test_numbers_are_integers_when_whole(value: float, text: str) -> None:
    assert format_number(value) == text


def test_fractional_policy_header() -> None:
    h = Harness(make_config({"global": {"rate": 1, "per": "500ms", "burst": 2.5}}))
    out = h.allowed()
    assert out["RateLimit-Policy"] == "2.5;w=0.5" and out["RateLimit-Limit"] == "2.5"


def test_ip_key() -> None:
    h = Harness(make_config({"global": {"rate": 1, "per": "1h", "burst": 1, "key": "ip"}}))
    h.allowed(ip="10.0.0.1")
    h.refused(ip="10.0.0.1")
    h.allowed(ip="10.0.0.2")


def test_user_key_falls_back_to_ip() -> None:
    h = Harness(make_config({"global": {"rate": 1, "per": "1h", "burst": 1, "key": "user"}}))
    h.allowed(principal=ALICE, ip="10.0.0.1")
    h.refused(principal=ALICE, ip="10.0.0.2")  # the user, wherever they come from
    h.allowed(principal=BOB, ip="10.0.0.1")
    h.allowed(principal=None, ip="10.0.0.1")  # anonymous: keyed by address
    h.refused(principal=None, ip="10.0.0.1")
    # A user whose id looks like an address never shares that address's bucket.
    h.allowed(principal=Principal("10.0.0.3"), ip="10.0.0.9")
    h.allowed(principal=None, ip="10.0.0.3")


def test_token_key_falls_back_to_ip() -> None:
    h = Harness(make_config({"global": {"rate": 1, "per": "1h", "burst": 1, "key": "token"}}))
    h.allowed(principal=ALICE)
    h.refused(principal=Principal("alice", token_fingerprint="fp-alice"), ip="10.9.9.9")
    h.allowed(principal=Principal("alice", token_fingerprint="fp-other"))
    h.allowed(principal=Principal("jwt-user"), ip="10.0.0.7")  # no token fingerprint: the address
    h.refused(principal=None, ip="10.0.0.7")


def test_header_key_falls_back_to_ip() -> None:
    h = Harness(make_config({"global": {"rate": 1, "per": "1h", "burst": 1, "key": "header:X-Api-Key"}}))
    h.allowed(headers={"X-Api-Key": "k1"}, ip="10.0.0.1")
    h.refused(headers={"x-api-key": "k1"}, ip="10.0.0.2")  # header names are case-insensitive
    h.allowed(headers={"X-Api-Key": "k2"}, ip="10.0.0.1")
    h.allowed(headers={}, ip="10.0.0.1")
    h.refused(headers={"X-Api-Key": ""}, ip="10.0.0.1")  # empty counts as absent


def test_long_key_values_are_digested() -> None:
    h = Harness(make_config({"global": {"rate": 1, "per": "1h", "burst": 1, "key": "header:X-K"}}))
    policy = h.limiter.global_policy
    assert policy is not None
    long_a, long_b = "a" * 10_000, "a" * 9_999 + "b"
    key_a = policy.key("/a/*", None, "10.0.0.1", HTTPHeaders({"X-K": long_a}))
    assert len(key_a) < 64
    assert key_a != policy.key("/a/*", None, "10.0.0.1", HTTPHeaders({"X-K": long_b}))
    h.allowed(headers={"X-K": long_a})
    h.refused(headers={"X-K": long_a})
    h.allowed(headers={"X-K": long_b})


def test_routes_naming_a_policy_share_its_buckets() -> None:
    h = Harness(
        make_config(
            {"policies": {"shared": {"rate": 1, "per": "1h", "burst": 2}}},
            [{"path": "/a/*", "rate_limit": "shared"}, {"path": "/b/*", "rate_limit": ["shared"]}],
        )
    )
    assert h.allowed("/a/*")["RateLimit-Remaining"] == "1"
    assert h.allowed("/b/*")["RateLimit-Remaining"] == "0"
    h.refused("/a/*")


def test_route_key_keeps_one_bucket_per_route() -> None:
    h = Harness(
        make_config(
            {"policies": {"per_route": {"rate": 1, "per": "1h", "burst": 1, "key": "route"}}},
            [{"path": "/a/*", "rate_limit": "per_route"}, {"path": "/b/*", "rate_limit": "per_route"}],
        )
    )
    h.allowed("/a/*", ip="10.0.0.1")
    h.refused("/a/*", ip="10.0.0.2")  # every caller of the route shares it
    h.allowed("/b/*", ip="10.0.0.1")


def test_which_policies_apply() -> None:
    h = Harness(
        make_config(
            {
                "global": {"rate": 100},
                "policies": {"p1": {"rate": 5}, "p2": {"rate": 7}},
            },
            [
                {"path": "/a/*"},
                {"path": "/none/*", "rate_limit": "none"},
                {"path": "/named/*", "rate_limit": ["p1", "p2"]},
                {"path": "/explicit/*", "rate_limit": ["global", "p1", "p1"]},
            ],
        )
    )
    names = {path: [p.name for p in h.limiter.policies_for(h.route(path))] for path in ("/a/*", "/none/*")}
    assert names == {"/a/*": ["global"], "/none/*": []}
    assert [p.name for p in h.limiter.policies_for(h.route("/named/*"))] == ["global", "p1", "p2"]
    assert [p.name for p in h.limiter.policies_for(h.route("/explicit/*"))] == ["global", "p1"]
    assert [p.name for p in h.limiter.policies_for(None)] == ["global"]  # built-in endpoints
    assert h.take("/none/*") == {}


def test_no_global_policy() -> None:
    h = Harness(
        make_config(
            {"policies": {"p1": {"rate": 5}}}, [{"path": "/a/*"}, {"path": "/b/*", "rate_limit": "p1"}]
        )
    )
    assert h.take("/a/*") == {}
    assert h.take(None) == {}
    assert h.allowed("/b/*")["RateLimit-Limit"] == "5"


def test_headers_describe_the_policy_with_fewest_tokens_left() -> None:
    h = Harness(
        make_config(
            {
                "global": {"rate": 100, "burst": 100},
                "policies": {"small": {"rate": 1, "per": "1m", "burst": 3, "key": "user"}},
            },
            [{"path": "/a/*", "rate_limit": "small"}],
        )
    )
    out = h.allowed(principal=ALICE)
    assert out["RateLimit-Limit"] == "3" and out["RateLimit-Remaining"] == "2"
    assert out["RateLimit-Policy"] == "3;w=60"
    h.allowed(principal=ALICE)
    h.allowed(principal=ALICE)
    reply = h.refused(principal=ALICE)
    headers = dict(reply.headers)
    assert headers["RateLimit-Limit"] == "3" and headers["Retry-After"] == "60"
    assert h.ratelimited("small") == 1 and h.ratelimited("global") == 0


def test_ties_go_to_the_smaller_burst() -> None:
    policies = [_policy("big", 10), _policy("small", 4), _policy("also_small", 4)]
    out = dict(conclude(policies, [(True, 2, 0, 1), (True, 2, 0, 1), (True, 2, 0, 1)]))
    assert out["RateLimit-Limit"] == "4" and out["RateLimit-Policy"] == "4;w=1"
    out = dict(conclude(policies, [(True, 1, 0, 9), (True, 2, 0, 1), (True, 3, 0, 1)]))
    assert out["RateLimit-Limit"] == "10" and out["RateLimit-Reset"] == "9"


def test_refusal_describes_the_refusing_policy_with_the_longest_wait() -> None:
    policies = [_policy("a", 10), _policy("b", 5), _policy("c", 8)]
    with pytest.raises(LocalReply) as info:
        conclude(policies, [(True, 0, 0, 3), (False, 0, 2, 4), (False, 0, 7, 8)])
    headers = dict(info.value.headers)
    assert headers["Retry-After"] == "7" and headers["RateLimit-Limit"] == "8"
    assert headers["RateLimit-Reset"] == "8" and headers["RateLimit-Remaining"] == "0"


def _policy(name: str, burst: float) -> Policy:
    from fastgw.config import RateLimitPolicy

    return Policy(name, RateLimitPolicy(rate=1, burst_=burst), Metrics(CollectorRegistry()), 10)


def test_memory_is_bounded_under_a_key_flood() -> None:
    h = Harness(make_config({"global": {"rate": 1, "per": "1h", "burst": 5}}), max_keys=1000)
    for i in range(20_000):
        h.allowed(ip=f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now=i * 1e-3)
    policy = h.limiter.global_policy
    assert policy is not None and len(policy.table) <= 1000


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_limiter_without_redis_uses_local_buckets() -> None:
    config = make_config({"global": {"rate": 1, "per": "1h", "burst": 2}}, [{"path": "/a/*"}])
    limiter = Limiter(config, Metrics(CollectorRegistry()))

    async def scenario() -> list[Any]:
        results: list[Any] = []
        for _ in range(3):
            try:
                results.append(
                    dict(
                        await limiter.check(
                            "/a/*", limiter.policies_for(config.routes[0]), None, "1.2.3.4", HTTPHeaders()
                        )
                    )
                )
            except LocalReply as reply:
                results.append(reply.code)
        await limiter.close()
        return results

    first, second, third = run(scenario())
    assert first["RateLimit-Remaining"] == "1" and second["RateLimit-Remaining"] == "0"
    assert third == "RATE_LIMITED"


def quota_config(**route: Any) -> Config:
    return make_config(
        {"quotas": {"free": {"requests": 5, "per": "day"}, "pro": {"requests": 100, "per": "month"}}},
        [{"path": "/q/*", "quota": True, **route}, {"path": "/free/*"}],
    )


def test_quota_refuses_the_request_after_the_allowance() -> None:
    config = quota_config()
    limiter = Limiter(config, Metrics(CollectorRegistry()))
    route = config.routes[0]

    async def scenario() -> list[str]:
        codes = []
        for principal in [ALICE] * 7 + [BOB]:
            try:
                await limiter.check_quota(route, principal)
                codes.append("ok")
            except LocalReply as reply:
                assert reply.status == 429
                retry_after = int(dict(reply.headers)["Retry-After"])
                assert 1 <= retry_after <= 86400
                codes.append(reply.code)
        return codes

    assert run(scenario()) == ["ok"] * 5 + ["QUOTA_EXCEEDED"] * 2 + ["ok"]


def test_no_quota_without_principal_plan_or_quota_route() -> None:
    config = quota_config()
    limiter = Limiter(config, Metrics(CollectorRegistry()))
    route, plain = config.routes

    async def scenario() -> None:
        for _ in range(10):
            await limiter.check_quota(route, None)
            await limiter.check_quota(route, Principal("noplan"))
            await limiter.check_quota(route, Principal("enterprise", plan="enterprise"))
            await limiter.check_quota(plain, ALICE)

    run(scenario())
    assert limiter.quotas.take("alice", QuotaConfig(requests=5, per="day"), 0.0)[1] == 1


def test_refused_quota_requests_are_not_counted_and_periods_roll_over() -> None:
    quotas = LocalQuotas({})
    daily = QuotaConfig(requests=2, per="day")
    day = 86400 * 20_000
    assert quotas.take("u", daily, day + 10) == (True, 1, day + 86400)
    assert quotas.take("u", daily, day + 20) == (True, 2, day + 86400)
    assert quotas.take("u", daily, day + 30) == (False, 2, day + 86400)
    assert quotas.take("u", daily, day + 40) == (False, 2, day + 86400)
    assert quotas.take("u", daily, day + 86400) == (True, 1, day + 2 * 86400)


def test_quota_users_are_capped() -> None:
    quotas = LocalQuotas({}, max_users=3)
    daily = QuotaConfig(requests=1, per="day")
    for user in "abcdef":
        assert quotas.take(user, daily, 0.0)[0]
    assert not quotas.take("f", daily, 0.0)[0]
    assert quotas.take("a", daily, 0.0)[0]  # evicted: starts again


@pytest.mark.parametrize(
    ("when", "start", "end"),
    [
        ("2026-01-01T00:00:00", "2026-01-01", "2026-02-01"),
        ("2024-02-29T23:59:59", "2024-02-01", "2024-03-01"),
        ("2023-02-10T12:00:00", "2023-02-01", "2023-03-01"),
        ("2025-12-31T23:59:59", "2025-12-01", "2026-01-01"),
        ("2100-02-28T00:00:00", "2100-02-01", "2100-03-01"),
    ],
)
def test_month_bounds_are_utc_calendar_months(when: str, start: str, end: str) -> None:
    def ts(text: str) -> int:
        return calendar.timegm(datetime.datetime.fromisoformat(text).timetuple())

    assert period_bounds("month", ts(when) + 0.5) == (ts(start + "T00:00:00"), ts(end + "T00:00:00"))
    day = ts(when[:10] + "T00:00:00")
    assert period_bounds("day", ts(when) + 0.5) == (day, day + 86400)


def test_a_limiter_kept_across_reloads_follows_the_new_routes() -> None:
    rate_limits = {"global": {"rate": 100}, "policies": {"p1": {"rate": 5}}}
    h = Harness(make_config(rate_limits, [{"path": "/a/*"}]))
    for generation in range(50):
        # Same limits, new route objects (and a route's policy list may change).
        reloaded = make_config(
            rate_limits, [{"path": "/a/*", "rate_limit": "p1" if generation % 2 else "none"}]
        )
        names = [p.name for p in h.limiter.policies_for(reloaded.routes[0])]
        assert names == (["global", "p1"] if generation % 2 else [])
