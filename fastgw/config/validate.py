"""Checks across fields and sections, run on whatever parts of a config converted cleanly.

Names are compared against ``Known`` (taken from the raw data when a section is broken), so one
``fastgw check`` reports a typo in one route and an unknown upstream in another together.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterator

from .convert import Known, fields_of
from .issues import Issue
from .production import production_problems
from .schema import AuthConfig, Config, IdentityHeaders, RouteConfig, SigningConfig

__all__ = ["BUILTIN_PATHS", "check_config"]

BUILTIN_PATHS: frozenset[str] = frozenset(
    {
        "/health",
        "/v1/api-tokens",
        "/v1/api-tokens/{id}",
        "/v1/usage",
        "/v1/usage/daily",
        "/v1/usage/rollups",
        "/v1/audit-logs",
        "/api/v1/auth/login",
        "/api/v1/me",
        "/requests/{id}/status",
        "/requests/{id}/result",
        "/requests/{id}/progress",
        "/openapi.json",
        "/dashboard",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
    }
)


def check_config(cfg: Config, route_at: list[int], known: Known) -> Iterator[Issue]:
    yield from production_problems(cfg)
    tls = cfg.server.tls
    if tls is not None and tls.require_client_cert and not tls.client_ca:
        yield "server.tls.require_client_cert", "needs server.tls.client_ca"
    seen: dict[str, str] = {}
    for name in fields_of(IdentityHeaders):
        header = getattr(cfg.identity_headers, name).lower()
        if header in seen:
            yield f"identity_headers.{name}", f"same header as identity_headers.{seen[header]}"
        seen.setdefault(header, name)
    yield from _check_auth(cfg.auth, known.policies)
    for name, upstream in cfg.upstreams.items():
        if not upstream.targets:
            yield f"upstreams.{name}.targets", "at least one target is required"
    limits = cfg.rate_limits
    policies = {"rate_limits.global": limits.global_}
    policies |= {f"rate_limits.policies.{name}": policy for name, policy in limits.policies.items()}
    for path, policy in policies.items():
        if path in ("rate_limits.policies.none", "rate_limits.policies.global"):
            yield path, "reserved name: 'none' and 'global' have a meaning in routes[].rate_limit"
        if policy is not None and policy.per <= 0:
            yield f"{path}.per", "must be greater than 0"
        if policy is not None and policy.burst < 1:
            yield f"{path}.burst", "must be at least 1 (a request takes one token; it defaults to rate)"
    yield from _check_routes(cfg, route_at, known)


def _check_auth(auth: AuthConfig, policies: frozenset[str] | None) -> Iterator[Issue]:
    tokens: dict[str, int] = {}
    for i, static in enumerate(auth.tokens):
        if not static.user_id:
            yield f"auth.tokens[{i}].user_id", "must not be empty"
        if static.token in tokens:
            yield f"auth.tokens[{i}].token", f"same token as auth.tokens[{tokens[static.token]}]"
        tokens.setdefault(static.token, i)
    jwt = auth.jwt
    hs = [alg for alg in jwt.algorithms if alg.startswith("HS")] if jwt else []
    if jwt is not None:
        keyed = [alg for alg in jwt.algorithms if not alg.startswith("HS")]
        if not jwt.algorithms:
            yield "auth.jwt.algorithms", "at least one algorithm is required"
        # No secret with an HS algorithm is allowed (the spec's own example defaults it to
        # empty): HS tokens are then simply refused.
        if keyed and not jwt.jwks_url:
            yield "auth.jwt.jwks_url", f"required by {keyed[0]}"
    oidc = auth.oidc_login
    if oidc is not None:
        if jwt is None or not hs:
            yield "auth.oidc_login", "needs auth.jwt with an HS algorithm (it issues HS256 tokens)"
        if oidc.rate_limit is not None and policies is not None and oidc.rate_limit not in policies:
            yield "auth.oidc_login.rate_limit", f"unknown policy {oidc.rate_limit!r}"


def _pattern_error(pattern: str) -> str | None:
    # Looked up at call time: fastgw.routing imports this module for RouteConfig.
    check: Callable[[str], str | None] = importlib.import_module("fastgw.routing").pattern_error
    return check(pattern)


def _check_routes(cfg: Config, route_at: list[int], known: Known) -> Iterator[Issue]:
    earlier: dict[str, list[tuple[int, RouteConfig]]] = {}
    for i, route in zip(route_at, cfg.routes, strict=True):
        at = f"routes[{i}]"
        if (problem := _pattern_error(route.path)) is not None:
            yield f"{at}.path", problem
        # {id} and {name} match the same paths, so the parameter names do not tell routes apart.
        shape = re.sub(r"\{[^/]*\}", "{}", route.path)
        for j, other in earlier.get(shape, []):
            if route.methods is None or other.methods is None or set(route.methods) & set(other.methods):
                yield f"{at}.path", f"duplicate route {route.path!r} (overlaps routes[{j}])"
                break
        earlier.setdefault(shape, []).append((i, route))
        yield from ((f"{at}.{key}", message) for key, message in _route_problems(route, cfg.signing, known))


_UPSTREAM_ONLY = (
    "websocket", "async_", "llm", "sign", "rewrite", "strip_prefix", "namespace", "transform", "cache"
)  # fmt: skip


def _terminal_problems(route: RouteConfig) -> Iterator[Issue]:
    """A ``static`` or ``redirect`` route answers itself: no upstream, nothing to forward."""
    key = "static" if route.static is not None else "redirect"
    if route.static is not None and route.redirect is not None:
        yield "redirect", "cannot be combined with static"
    if route.upstream is not None:
        yield "upstream", f"cannot be combined with {key}"
    for name in _UPSTREAM_ONLY:
        if getattr(route, name) not in (False, None):
            yield name.rstrip("_"), f"cannot be combined with {key} (nothing is forwarded)"
    if route.static is not None and not os.path.isdir(route.static.root):
        yield "static.root", f"not a directory: {route.static.root!r}"


def _route_problems(route: RouteConfig, signing: SigningConfig | None, known: Known) -> Iterator[Issue]:
    if route.cache is not None:
        for name in ("websocket", "async_", "llm"):
            if getattr(route, name):
                yield "cache", f"cannot be combined with {name.rstrip('_')}"
    if route.static is not None or route.redirect is not None:
        yield from _terminal_problems(route)
    elif route.upstream is None:
        if route.path not in BUILTIN_PATHS:
            yield "upstream", "missing (only built-in endpoints may leave it out)"
    elif route.upstream not in known.upstreams:
        yield "upstream", f"unknown upstream {route.upstream!r}"
    if route.methods == []:
        yield "methods", "must not be empty (leave it out to allow every method)"
    if route.auth == "hmac" and route.hmac is None:
        yield "hmac", "required with auth: hmac"
    if route.auth != "hmac" and route.hmac is not None:
        yield "hmac", "only used with auth: hmac"
    if route.auth in ("none", "hmac"):
        for key in ("roles", "scopes", "namespace"):
            if getattr(route, key):
                yield key, f"needs an authenticated caller, but auth is {route.auth}"
    if route.sign and known.signing and (signing is None or not signing.secret):
        yield "sign", "needs signing.secret"
    for key in ("strip_prefix", "rewrite"):
        if getattr(route, key) not in (False, None) and not route.path.endswith("/*"):
            yield key, "needs a path ending in /*"
    if route.rewrite is not None:
        if route.strip_prefix:
            yield "rewrite", "cannot be combined with strip_prefix"
        if not route.rewrite.startswith("/"):
            yield "rewrite", "must start with /"
    if route.websocket and route.async_:
        yield "async", "cannot be combined with websocket"
    if route.ws_rate_limit is not None:
        if not route.websocket:
            yield "ws_rate_limit", "only applies to websocket routes"
        if route.ws_rate_limit.window <= 0:
            yield "ws_rate_limit.window", "must be greater than 0"
    if "none" in route.rate_limit and len(route.rate_limit) > 1:
        yield "rate_limit", "'none' cannot be combined with other policies"
    for name in route.rate_limit:
        if name not in ("none", "global") and known.policies is not None and name not in known.policies:
            yield "rate_limit", f"unknown policy {name!r}"
