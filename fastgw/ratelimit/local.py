"""In-process token buckets: the whole limiter without Redis, and its fallback when Redis is down.

Each policy owns one ``speedups.BucketTable``; a bucket is named by the key's value alone, so
every route that names a policy shares that policy's buckets (SPEC 7). The list of policies a
route is subject to is worked out once per route when the gateway compiles its config, so a
request costs one key string and one ``take`` per policy.

Keys never carry what a client could use to grow memory without bound: the tables evict (least
recently used) above ``max_keys`` per policy, and a key value longer than ``_MAX_KEY`` (a
64 KiB header, say) is replaced by its digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from ..auth.principal import Principal
from ..config import Config, RateLimitPolicy, RouteConfig
from ..errors import LocalReply
from ..metrics import Metrics
from ..speedups import BucketTable

Headers = tuple[tuple[str, str], ...]
# (allowed, whole tokens left, seconds until one token is back, seconds until full): what
# BucketTable.take returns and what the Redis script returns per policy.
Outcome = tuple[bool, int, int, int]

KIND_IP, KIND_USER, KIND_TOKEN, KIND_ROUTE, KIND_HEADER = range(5)
_KINDS = {"ip": KIND_IP, "user": KIND_USER, "token": KIND_TOKEN, "route": KIND_ROUTE}

# Prefix of a key that fell back to the client IP (no principal, no header value). A newline can
# be in none of the primary values (identity values are printable ASCII, header values end at a
# line break), so a user named "10.0.0.1" never shares the bucket of that address.
FALLBACK = "\n"
_MAX_KEY = 256

_INT_STR = tuple(str(i) for i in range(4096))


def format_number(value: float) -> str:
    """``20.0`` -> ``"20"``, ``0.5`` -> ``"0.5"``: header numbers as people write them."""
    return str(int(value)) if value == int(value) else repr(value)


def safe_key(value: str) -> str:
    """``value``, or its digest when it is too long to keep as a key (memory per key stays small)."""
    if len(value) <= _MAX_KEY:
        return value
    return "#" + hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class Policy:
    """One configured policy, compiled: its bucket table and the constant parts of its headers."""

    __slots__ = (
        "name",
        "kind",
        "header",
        "burst",
        "table",
        "limit_pair",
        "policy_pair",
        "per_second",
        "seconds_per_token",
        "redis_prefix",
        "refused",
    )

    def __init__(self, name: str, config: RateLimitPolicy, metrics: Metrics, max_keys: int) -> None:
        self.name = name
        key = config.key
        self.kind = _KINDS.get(key, KIND_HEADER)
        self.header = key[len("header:") :] if self.kind == KIND_HEADER else ""
        self.burst = config.burst
        self.table = BucketTable(config.rate, config.per, config.burst, max_keys)
        burst = format_number(config.burst)
        self.limit_pair = ("RateLimit-Limit", burst)
        self.policy_pair = ("RateLimit-Policy", f"{burst};w={format_number(config.per)}")
        # The same two quotients BucketTable computes, so the Redis script's arithmetic is the
        # table's, float for float.
        self.per_second = float(config.rate) / float(config.per)
        self.seconds_per_token = float(config.per) / float(config.rate)
        self.redis_prefix = f"fastgw:rl:{name}:"
        self.refused = metrics.ratelimited.labels(name)

    def key(
        self, pattern: str, principal: Principal | None, client_ip: str, headers: Mapping[str, str]
    ) -> str:
        """The bucket name for this request: the key's value, or the client IP when it has none."""
        kind = self.kind
        if kind == KIND_IP:
            value = client_ip
        elif kind == KIND_USER:
            value = principal.user_id if principal is not None and principal.user_id else ""
        elif kind == KIND_TOKEN:
            value = principal.token_fingerprint if principal is not None else ""
        elif kind == KIND_ROUTE:
            value = pattern
        else:
            value = headers.get(self.header) or ""
        if not value:
            value = FALLBACK + client_ip
        if len(value) > _MAX_KEY:
            value = safe_key(value)
        return value


def allowed_headers(policy: Policy, remaining: int, reset: int) -> Headers:
    return (
        policy.limit_pair,
        ("RateLimit-Remaining", _INT_STR[remaining] if remaining < 4096 else str(remaining)),
        ("RateLimit-Reset", _INT_STR[reset] if reset < 4096 else str(reset)),
        policy.policy_pair,
    )


def refuse(policy: Policy, remaining: int, retry_after: int, reset: int) -> LocalReply:
    """The 429 for a refusal by ``policy``, counted under its name."""
    policy.refused.inc()
    return LocalReply(
        "RATE_LIMITED",
        "Rate limit exceeded; retry later",
        headers=(*allowed_headers(policy, remaining, reset), ("Retry-After", str(retry_after))),
    )


def conclude(policies: Sequence[Policy], outcomes: Sequence[Outcome]) -> Headers:
    """Headers for the request, or raise its 429, from every applicable policy's outcome.

    Allowed: describe the policy with the fewest whole tokens left (ties: the smaller burst,
    then the first listed). Refused: describe a refusing policy, the one the client has to wait
    longest for, since its Retry-After is when the request could pass.
    """
    best = -1
    refused = -1
    for i in range(len(outcomes)):
        allowed, remaining, retry_after, _ = outcomes[i]
        if not allowed:
            if (
                refused < 0
                or retry_after > outcomes[refused][2]
                or (retry_after == outcomes[refused][2] and policies[i].burst < policies[refused].burst)
            ):
                refused = i
        elif (
            best < 0
            or remaining < outcomes[best][1]
            or (remaining == outcomes[best][1] and policies[i].burst < policies[best].burst)
        ):
            best = i
    if refused >= 0:
        _, remaining, retry_after, reset = outcomes[refused]
        raise refuse(policies[refused], remaining, retry_after, reset)
    _, remaining, _, reset = outcomes[best]
    return allowed_headers(policies[best], remaining, reset)


class LocalLimiter:
    """Every policy of a config as in-process buckets, plus each route's list of policies."""

    def __init__(self, config: Config, metrics: Metrics, max_keys: int = 100_000) -> None:
        limits = config.rate_limits
        self.policies: dict[str, Policy] = {
            name: Policy(name, policy, metrics, max_keys) for name, policy in limits.policies.items()
        }
        self.global_policy = (
            Policy("global", limits.global_, metrics, max_keys) if limits.global_ is not None else None
        )
        self.builtin_policies: tuple[Policy, ...] = (
            (self.global_policy,) if self.global_policy is not None else ()
        )

    def policies_for(self, route: RouteConfig | None) -> tuple[Policy, ...]:
        """``global`` (unless the route says ``none``) then the route's named policies, once each.

        Built-in endpoints pass None and get ``global`` only.
        """
        if route is None:
            return self.builtin_policies
        names = route.rate_limit
        chosen: list[Policy] = []
        if "none" not in names:
            if self.global_policy is not None:
                chosen.append(self.global_policy)
            for name in names:
                policy = self.policies.get(name)  # unknown names are config errors, caught at load
                if policy is not None and policy not in chosen:
                    chosen.append(policy)
        return tuple(chosen)

    def check(
        self,
        policies: tuple[Policy, ...],
        pattern: str,
        principal: Principal | None,
        client_ip: str,
        headers: Mapping[str, str],
        now: float,
    ) -> Headers:
        """Take one token from each policy's bucket at monotonic time ``now``.

        Each table decides alone, so a request refused by one policy has still used a token of
        the others that allowed it (as with separate limiters in series).
        """
        if len(policies) == 1:
            policy = policies[0]
            allowed, remaining, retry_after, reset = policy.table.take(
                policy.key(pattern, principal, client_ip, headers), now
            )
            if allowed:
                return allowed_headers(policy, remaining, reset)
            raise refuse(policy, remaining, retry_after, reset)
        if not policies:
            return ()
        return conclude(
            policies,
            [p.table.take(p.key(pattern, principal, client_ip, headers), now) for p in policies],
        )
