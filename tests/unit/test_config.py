"""fastgw.config: the SPEC example, every kind of error with its key path, and the scalar parsers."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastgw.config import (
    BUILTIN_PATHS,
    Config,
    ConfigError,
    RateLimitPolicy,
    Target,
    config_from_dict,
    format_errors,
    load_config,
    parse_config,
    parse_duration,
    parse_listen,
    parse_size,
    parse_target,
)


def _stand_in_pattern_error(pattern: str) -> str | None:
    if not pattern.startswith("/"):
        return "a pattern must start with /"
    if "*" in pattern.removesuffix("/*"):
        return "'*' is only allowed as the last segment, after a /"
    return None


@pytest.fixture(autouse=True)
def routing_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Until fastgw.routing lands, validate patterns with a stand-in; afterwards use the real one."""
    if importlib.util.find_spec("fastgw.routing") is None:
        stand_in = types.ModuleType("fastgw.routing")
        setattr(stand_in, "pattern_error", _stand_in_pattern_error)  # noqa: B010
        monkeypatch.setitem(sys.modules, "fastgw.routing", stand_in)
    yield


SPEC_EXAMPLE = """\
server:
  listen: 0.0.0.0:8080
  workers: 1                  # processes sharing the port; 0 = one per core
  metrics_listen: 127.0.0.1:9090   # Prometheus /metrics; null disables
  body_limit: 1MiB            # request bodies; 413 above it
  max_header_bytes: 64KiB
  header_timeout: 10s         # a client must send all headers within this
  idle_timeout: 75s           # idle keep-alive connections are closed; keep it above the load balancer's (AWS: 60 s)
  shutdown_grace: 30s         # SIGTERM: stop accepting, drain in-flight, then exit
  trusted_proxies: []         # CIDRs whose X-Forwarded-For is believed
  tls: null                   # {cert, key, client_ca, require_client_cert}
  access_log: true            # one JSON line per request on stdout

store: sqlite:///fastgw.db    # API tokens, usage, audit log, async jobs (sqlite:////abs/path for an absolute path)
redis: null                   # redis://host:port/db: shares rate limits and quotas across instances

identity_headers:             # headers injected upstream for an authenticated caller
  user_id: X-User-Id
  role: X-User-Role
  app_key: X-App-Key
  plan: X-User-Plan
  scopes: X-User-Scopes

auth:
  tokens:                     # static bearer tokens
    - {token: "${OPS_TOKEN}", user_id: ops, role: admin, scopes: [rpc, admin], plan: pro, app_key: ops}
  jwt:                        # platform JWTs (PyJWT)
    algorithms: [HS256]       # never 'none'; HS and RS are never mixed for one key
    secret: ${AUTH_JWT_SECRET:-}
    jwks_url: null            # RS*/ES* keys fetched and cached; unknown kid -> refetch, at most once per jwks_min_refetch
    jwks_cache_ttl: 10m
    jwks_min_refetch: 5s
    issuer: null
    audience: null
    leeway: 30s
    claims: {user_id: sub, role: role, scopes: scope, app_key: app, plan: plan}
  api_tokens: {enabled: true, prefix: fgw_}
  session:                    # session cookie verified by an auth service
    cookie: better-auth.session_token
    verify_url: http://127.0.0.1:9100/api/auth/get-session
    cache_ttl: 30s
    user_id_field: user.id
    role_field: user.role
  oidc_login:                 # exchange an external OIDC idToken for an internal JWT
    jwks_url: https://issuer.example/.well-known/jwks.json
    issuer: https://issuer.example
    audience: my-client-id
    token_ttl: 1h
    rate_limit: null          # a policy name; default 10 per minute per IP
  usage_key: ${USAGE_API_KEY:-}   # if set, /v1/usage* also accepts this key

signing:
  secret: ${SIGNING_SECRET}   # HMAC key for forwarded requests (section 6)
  max_skew: 300s

upstreams:
  auth: {targets: [http://127.0.0.1:9100]}
  admin: {targets: [http://127.0.0.1:9200]}
  services: {targets: [http://127.0.0.1:9300]}
  openai: {targets: [http://127.0.0.1:9400], headers: {Authorization: "Bearer ${OPENAI_API_KEY:-}"}}
  rpc: {targets: [http://127.0.0.1:9500]}
  billing:
    targets: [http://127.0.0.1:9001, http://127.0.0.1:9002]
    balance: round_robin      # or least_conn
    connect_timeout: 2s
    read_timeout: 30s         # to the first byte, and between chunks of a stream
    retries: 1                # idempotent methods, connect failures only
    max_connections: 512      # pooled keep-alive connections
    circuit: {failures: 5, cooldown: 10s}   # eject a target after N straight failures
    headers: {}               # extra headers injected (e.g. an upstream API key)

rate_limits:
  global: {rate: 1000, per: 1s, burst: 2000, key: ip}   # every route but /health and routes with rate_limit: none
  policies:
    per_user: {rate: 10, burst: 20, key: user}   # key: ip | user | token | route | header:NAME
    public_session: {rate: 12, per: 60s, key: ip}
  quotas:                     # per plan, per calendar day or month (UTC)
    free: {requests: 1000, per: day}
    pro: {requests: 100000, per: month}

routes:
  - path: /auth/*
    upstream: auth
    auth: none
  - path: /admin/*
    upstream: admin
    roles: [admin]
  - path: /payment/webhook/*
    methods: [POST]
    upstream: billing
    auth: hmac
    hmac: {secret: "${WEBHOOK_SECRET}", header: X-Webhook-Signature, timestamp_header: X-Webhook-Timestamp, tolerance: 300s}
  - path: /api/service/{serviceId}/endpoint/{endpointId}/invoke
    upstream: services
    sign: true
    quota: true
  - path: /api/service/{serviceId}/endpoint/{endpointId}/invoke/async
    upstream: services
    sign: true
    async: true
  - path: /v1/chat/completions
    methods: [POST]
    upstream: openai
    llm: openai
  - path: /api/events
    upstream: rpc
    scopes: [rpc]
    query_token: true
  - path: /ws
    upstream: rpc
    websocket: true
    query_token: true
    ws_rate_limit: {messages: 100, window: 1s}
"""  # noqa: E501 - verbatim from SPEC section 2

SPEC_ENV = {
    "OPS_TOKEN": "ops-token-1",
    "AUTH_JWT_SECRET": "jwt-secret",
    "SIGNING_SECRET": "signing-secret",
    "WEBHOOK_SECRET": "whsec_test",
    "OPENAI_API_KEY": "sk-test",
}

UPSTREAMS = """\
upstreams:
  billing:
    targets: [http://127.0.0.1:9001]
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env or {})
    return caught.value.errors


def paths_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    return [error.split(": ", 1)[0] for error in errors_of(text, env)]


def routes(*lines: str) -> str:
    """A config with the billing upstream and one route per line (YAML flow mappings)."""
    return UPSTREAMS + "routes:\n" + "".join(f"  - {line}\n" for line in lines)


# --- the SPEC example -----------------------------------------------------------------------


def test_spec_example_parses_with_every_field_in_place() -> None:
    cfg = parse_config(SPEC_EXAMPLE, SPEC_ENV)

    server = cfg.server
    assert (server.listen, server.workers, server.metrics_listen) == ("0.0.0.0:8080", 1, "127.0.0.1:9090")
    assert (server.body_limit, server.max_header_bytes) == (1024 * 1024, 64 * 1024)
    assert (server.header_timeout, server.idle_timeout, server.shutdown_grace) == (10.0, 75.0, 30.0)
    assert server.trusted_proxies == [] and server.tls is None and server.access_log is True
    assert cfg.store == "sqlite:///fastgw.db" and cfg.store_path() == "fastgw.db"
    assert cfg.redis is None
    assert cfg.identity_headers.user_id == "X-User-Id" and cfg.identity_headers.scopes == "X-User-Scopes"

    auth = cfg.auth
    (ops,) = auth.tokens
    assert (ops.token, ops.user_id, ops.role, ops.scopes, ops.plan, ops.app_key) == (
        "ops-token-1",
        "ops",
        "admin",
        ["rpc", "admin"],
        "pro",
        "ops",
    )
    assert auth.jwt is not None
    assert auth.jwt.algorithms == ["HS256"] and auth.jwt.secret == "jwt-secret" and auth.jwt.jwks_url is None
    assert (auth.jwt.jwks_cache_ttl, auth.jwt.jwks_min_refetch, auth.jwt.leeway) == (600.0, 5.0, 30.0)
    assert auth.jwt.claims.user_id == "sub" and auth.jwt.claims.scopes == "scope"
    assert auth.api_tokens.enabled is True and auth.api_tokens.prefix == "fgw_"
    assert auth.session is not None
    assert auth.session.cookie == "better-auth.session_token"
    assert auth.session.verify_url == "http://127.0.0.1:9100/api/auth/get-session"
    assert auth.session.cache_ttl == 30.0 and auth.session.user_id_field == "user.id"
    assert auth.oidc_login is not None
    assert auth.oidc_login.audience == "my-client-id" and auth.oidc_login.token_ttl == 3600.0
    assert auth.oidc_login.rate_limit is None
    assert auth.usage_key is None  # ${USAGE_API_KEY:-} with the variable unset
    assert (
        cfg.signing is not None and cfg.signing.secret == "signing-secret" and cfg.signing.max_skew == 300.0
    )

    assert list(cfg.upstreams) == ["auth", "admin", "services", "openai", "rpc", "billing"]
    assert cfg.upstreams["openai"].headers == {"Authorization": "Bearer sk-test"}
    billing = cfg.upstreams["billing"]
    assert billing.targets == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    assert (billing.balance, billing.connect_timeout, billing.read_timeout) == ("round_robin", 2.0, 30.0)
    assert (billing.retries, billing.max_connections, billing.headers) == (1, 512, {})
    assert (billing.circuit.failures, billing.circuit.cooldown) == (5, 10.0)
    assert cfg.upstreams["auth"].read_timeout == 60.0  # default

    limits = cfg.rate_limits
    assert limits.global_ == RateLimitPolicy(rate=1000, per=1.0, burst_=2000, key="ip")
    assert limits.global_.burst == 2000
    per_user = limits.policies["per_user"]
    assert (per_user.rate, per_user.burst, per_user.per, per_user.key) == (10, 20, 1.0, "user")
    public = limits.policies["public_session"]
    assert (public.rate, public.burst, public.per) == (12, 12, 60.0)  # burst defaults to the rate
    assert (limits.quotas["free"].requests, limits.quotas["free"].per) == (1000, "day")
    assert (limits.quotas["pro"].requests, limits.quotas["pro"].per) == (100000, "month")

    r = cfg.routes
    assert [route.path for route in r] == [
        "/auth/*",
        "/admin/*",
        "/payment/webhook/*",
        "/api/service/{serviceId}/endpoint/{endpointId}/invoke",
        "/api/service/{serviceId}/endpoint/{endpointId}/invoke/async",
        "/v1/chat/completions",
        "/api/events",
        "/ws",
    ]
    assert (r[0].upstream, r[0].auth, r[0].methods) == ("auth", "none", None)
    assert (r[1].auth, r[1].roles) == ("required", ["admin"])
    assert r[2].methods == ["POST"] and r[2].auth == "hmac" and r[2].hmac is not None
    assert (r[2].hmac.secret, r[2].hmac.header, r[2].hmac.timestamp_header, r[2].hmac.tolerance) == (
        "whsec_test",
        "X-Webhook-Signature",
        "X-Webhook-Timestamp",
        300.0,
    )
    assert (r[3].sign, r[3].quota, r[3].async_) == (True, True, False)
    assert (r[4].sign, r[4].async_) == (True, True)
    assert r[5].llm == "openai" and r[6].llm is None
    assert (r[6].scopes, r[6].query_token) == (["rpc"], True)
    assert r[7].websocket and r[7].ws_rate_limit is not None
    assert (r[7].ws_rate_limit.messages, r[7].ws_rate_limit.window) == (100, 1.0)
    assert all(route.rate_limit == () for route in r)


def test_spec_example_without_its_secrets_reports_each_one() -> None:
    assert errors_of(SPEC_EXAMPLE, {}) == [
        "auth.tokens[0].token: environment variable OPS_TOKEN is not set",
        "signing.secret: environment variable SIGNING_SECRET is not set",
        "routes[2].hmac.secret: environment variable WEBHOOK_SECRET is not set",
        # secret: ${AUTH_JWT_SECRET:-} is optional: without it HS tokens are refused at run time.
    ]


def test_empty_file_is_all_defaults() -> None:
    cfg = parse_config("", {})
    assert cfg == Config()
    assert cfg.server.listen == "0.0.0.0:8080" and cfg.server.body_limit == 1024 * 1024
    assert cfg.auth.jwt is None and cfg.signing is None and cfg.routes == [] and cfg.upstreams == {}


def test_null_section_means_its_defaults() -> None:
    cfg = parse_config("server:\nauth:\n  api_tokens: ~\nroutes:\n", {})
    assert cfg == Config()


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "fastgw.yaml"
    path.write_text(SPEC_EXAMPLE, encoding="utf-8")
    assert load_config(str(path), SPEC_ENV) == parse_config(SPEC_EXAMPLE, SPEC_ENV)


def test_config_from_dict_builds_a_config_in_code() -> None:
    cfg = config_from_dict(
        {
            "server": {"listen": "127.0.0.1:0", "metrics_listen": None},
            "auth": {"tokens": [{"token": "${DEMO_TOKEN:-demo}", "user_id": "demo"}]},
            "upstreams": {"echo": {"targets": ["http://127.0.0.1:9999"]}},
            "routes": [{"path": "/echo/*", "upstream": "echo", "strip_prefix": True}],
        },
        env={},
    )
    assert cfg.server.metrics_listen is None and cfg.auth.tokens[0].token == "demo"
    assert cfg.routes[0].strip_prefix is True


@pytest.mark.parametrize(
    ("store", "path"),
    [
        ("sqlite:///fastgw.db", "fastgw.db"),
        ("sqlite:///data/gw.db", "data/gw.db"),
        ("sqlite:////abs/x.db", "/abs/x.db"),
    ],
)
def test_store_path(store: str, path: str) -> None:
    assert parse_config(f"store: {store}", {}).store_path() == path


# --- errors, each with its key path ---------------------------------------------------------


def test_unknown_key() -> None:
    assert errors_of(routes("{path: /x, uptream: billing}")) == ["routes[0].uptream: unknown key"]
    assert errors_of("sever: {}\n") == ["sever: unknown key"]
    assert errors_of("server: {listen: ':1', tls: {cert: a, key: b, ca: c}}") == [
        "server.tls.ca: unknown key"
    ]


def test_wrong_type() -> None:
    assert errors_of("server: {workers: many}") == ["server.workers: expected int, got str"]
    assert errors_of("server: {workers: -1}") == ["server.workers: expected int >= 0"]
    assert errors_of("server: {access_log: [1]}") == ["server.access_log: expected bool, got list"]
    assert errors_of("routes: {path: /x}") == ["routes: expected list, got mapping"]
    assert errors_of("upstreams: {billing: [http://a:1]}") == [
        "upstreams.billing: expected mapping, got list"
    ]
    assert errors_of(routes("{path: /x, upstream: billing, auth: maybe}")) == [
        "routes[0].auth: expected one of required, optional, none, hmac, got 'maybe'"
    ]


def test_missing_required_key() -> None:
    assert errors_of("upstreams: {billing: {balance: least_conn}}") == [
        "upstreams.billing.targets: missing required key"
    ]
    assert errors_of(routes("{upstream: billing}")) == ["routes[0].path: missing required key"]


def test_unknown_upstream() -> None:
    text = routes(
        "{path: /a, upstream: billing}",
        "{path: /b, upstream: billing}",
        "{path: /c, upstream: billing}",
        "{path: /d, upstream: bilin}",
    )
    assert errors_of(text) == ["routes[3].upstream: unknown upstream 'bilin'"]


def test_upstream_may_be_left_out_only_on_builtin_endpoints() -> None:
    assert errors_of(routes("{path: /x}")) == [
        "routes[0].upstream: missing (only built-in endpoints may leave it out)"
    ]
    cfg = parse_config(routes("{path: /v1/usage, rate_limit: none}", "{path: /health, auth: none}"), {})
    assert [route.upstream for route in cfg.routes] == [None, None]
    assert {"/health", "/v1/api-tokens/{id}", "/requests/{id}/progress"} <= BUILTIN_PATHS


def test_duplicate_routes() -> None:
    text = routes(
        "{path: /a, upstream: billing}",
        "{path: /b, upstream: billing}",
        "{path: /x, upstream: billing, methods: [GET]}",
        "{path: /x, upstream: billing, methods: [POST]}",  # disjoint methods: fine
        "{path: '/y/{id}', upstream: billing}",
        "{path: /x, upstream: billing}",  # no methods: overlaps everything
        "{path: '/y/{name}', upstream: billing, methods: [get]}",  # same shape as /y/{id}
    )
    assert errors_of(text) == [
        "routes[5].path: duplicate route '/x' (overlaps routes[2])",
        "routes[6].path: duplicate route '/y/{name}' (overlaps routes[4])",
    ]


def test_missing_environment_variable() -> None:
    text = "signing:\n  secret: ${SIGNING_SECRET}\n"
    assert errors_of(text) == ["signing.secret: environment variable SIGNING_SECRET is not set"]
    assert errors_of(text, {"SIGNING_SECRET": ""}) == [
        "signing.secret: environment variable SIGNING_SECRET is empty"
    ]
    # The unresolved reference is the only complaint at that key, not also "expected int".
    assert errors_of("server: {workers: '${WORKERS}'}") == [
        "server.workers: environment variable WORKERS is not set"
    ]


def test_malformed_environment_reference() -> None:
    assert errors_of("redis: ${REDIS_URL:redis://x}") == [
        "redis: malformed reference: use ${NAME} or ${NAME:-default}"
    ]


def test_bad_duration() -> None:
    assert errors_of(UPSTREAMS + "    read_timeout: 5 minutes\n") == [
        "upstreams.billing.read_timeout: invalid duration '5 minutes': use seconds or a number with "
        "ms, s, m, h or d (30s, 5m)"
    ]
    assert paths_of("server: {idle_timeout: -1}") == ["server.idle_timeout"]


def test_bad_size() -> None:
    assert errors_of("server: {body_limit: 1MiBs}") == [
        "server.body_limit: invalid size '1MiBs': use bytes or a number with B, KiB, MiB, GiB, KB, MB or GB"
    ]
    assert paths_of(routes("{path: /x, upstream: billing, body_limit: 1.5B}")) == ["routes[0].body_limit"]


def test_bad_cidr() -> None:
    assert errors_of("server:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.0/33, '::1']\n") == [
        "server.trusted_proxies[1]: invalid IP address or CIDR '10.0.0.0/33'"
    ]


def test_bad_target_url() -> None:
    text = (
        "upstreams:\n  billing:\n    targets: [http://127.0.0.1:9001, ftp://127.0.0.1:21, 'http://u:p@h:1']\n"
    )
    assert errors_of(text) == [
        "upstreams.billing.targets[1]: invalid target: expected http://host:port or https://host:port",
        "upstreams.billing.targets[2]: invalid target: credentials in the URL are not supported "
        "(use headers)",
    ]
    assert errors_of("upstreams: {billing: {targets: []}}") == [
        "upstreams.billing.targets: at least one target is required"
    ]


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_jwt_alg_none_is_refused(alg: str) -> None:
    assert errors_of(f"auth:\n  jwt: {{algorithms: [{alg}], secret: s}}\n") == [
        "auth.jwt.algorithms[0]: 'none' is never allowed: it would accept unsigned tokens"
    ]


def test_invalid_route_pattern() -> None:
    assert paths_of(routes("{path: /ok, upstream: billing}", "{path: /files/*/meta, upstream: billing}")) == [
        "routes[1].path"
    ]


def test_three_broken_routes_give_three_errors() -> None:
    text = routes(
        "{path: /a, upstream: billing, auth: maybe}",
        "{path: /b, upstream: billing}",
        "{path: /c, upstream: billing, read_timeout: soon}",
        "{path: /d, upstreem: billing}",
    )
    assert paths_of(text) == ["routes[0].auth", "routes[2].read_timeout", "routes[3].upstreem"]


def test_every_error_in_a_file_is_reported() -> None:
    text = """\
server:
  workers: two
  listen: localhost
  trusted_proxies: [bogus]
identity_headers: {user_id: X_User_Id}
auth:
  jwt: {algorithms: [RS256, XX999]}
upstreams:
  billing: {targets: [http://127.0.0.1:9001], retries: -1, circuit: {failures: 0}}
  good: {targets: [https://example.com]}
rate_limits:
  policies:
    per_user: {rate: 0, key: user}
    per_app: {rate: 5, key: 'header:'}
routes:
  - {path: /a, upstream: bilin}
  - {path: /b, upstream: good, rate_limit: [per_user, nope]}
  - {path: /c, upstream: good, sign: true}
  - {path: /d, upstream: billing, hmac: {secret: s}}
"""
    assert errors_of(text) == [
        "server.listen: invalid listen address 'localhost': expected HOST:PORT with a port from 0 to 65535",
        "server.workers: expected int, got str",
        "server.trusted_proxies[0]: invalid IP address or CIDR 'bogus'",
        "identity_headers.user_id: invalid header name 'X_User_Id': expected an HTTP token without '_'",
        "auth.jwt.algorithms[1]: unsupported algorithm 'XX999' (use one of ES256, ES384, ES512, "
        "HS256, HS384, HS512, PS256, PS384, PS512, RS256, RS384, RS512)",
        "upstreams.billing.retries: expected int >= 0",
        "upstreams.billing.circuit.failures: expected int >= 1",
        "rate_limits.policies.per_user.rate: expected float > 0.0",
        "rate_limits.policies.per_app.key: invalid key 'header:': expected ip, user, token, route "
        "or header:NAME",
        "routes[0].upstream: unknown upstream 'bilin'",
        "routes[1].rate_limit: unknown policy 'nope'",
        "routes[2].sign: needs signing.secret",
        "routes[3].hmac: only used with auth: hmac",
    ]


def test_config_error_message_joins_the_errors() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two" == format_errors(error.errors)


# --- route, auth and limit cross-checks -----------------------------------------------------


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("{path: /w/*, auth: hmac}", "routes[0].hmac: required with auth: hmac"),
        ("{path: /s/*, sign: true}", "routes[0].sign: needs signing.secret"),
        ("{path: /s, strip_prefix: true}", "routes[0].strip_prefix: needs a path ending in /*"),
        ("{path: /s, rewrite: /new}", "routes[0].rewrite: needs a path ending in /*"),
        (
            "{path: /s/*, rewrite: /new, strip_prefix: true}",
            "routes[0].rewrite: cannot be combined with strip_prefix",
        ),
        ("{path: /s/*, rewrite: new}", "routes[0].rewrite: must start with /"),
        ("{path: /ws, websocket: true, async: true}", "routes[0].async: cannot be combined with websocket"),
        (
            "{path: /ws, ws_rate_limit: {messages: 5, window: 1s}}",
            "routes[0].ws_rate_limit: only applies to websocket routes",
        ),
        (
            "{path: /x, rate_limit: [none, global]}",
            "routes[0].rate_limit: 'none' cannot be combined with other policies",
        ),
        ("{path: /x, rate_limit: per_ip}", "routes[0].rate_limit: unknown policy 'per_ip'"),
        (
            "{path: /x, methods: []}",
            "routes[0].methods: must not be empty (leave it out to allow every method)",
        ),
        ("{path: /x, methods: [GE T]}", "routes[0].methods[0]: invalid HTTP method 'GE T'"),
        (
            "{path: /x, auth: none, roles: [admin]}",
            "routes[0].roles: needs an authenticated caller, but auth is none",
        ),
        ("{path: /x, llm: anthropic}", "routes[0].llm: expected one of openai, got 'anthropic'"),
    ],
)
def test_route_checks(route: str, expected: str) -> None:
    text = routes(route.replace("{path", "{upstream: billing, path"))
    assert errors_of(text) == [expected]


def test_route_values_are_normalised() -> None:
    text = (
        UPSTREAMS
        + """\
rate_limits:
  policies: {per_user: {rate: 10, key: user}, burst: {rate: 1, per: 1m, burst: 5}}
routes:
  - {path: /a/*, upstream: billing, methods: [get, Post], rate_limit: per_user, strip_prefix: true}
  - {path: /b, upstream: billing, rate_limit: [per_user, burst, global]}
  - {path: /c, upstream: billing, rate_limit: none, quota: true}
  - {path: /d, upstream: billing, rate_limit: null, body_limit: 10KB, read_timeout: 250ms, sse_keepalive: 15s}
"""
    )
    r = parse_config(text, {}).routes
    assert r[0].methods == ["GET", "POST"] and r[0].rate_limit == ("per_user",)
    assert r[1].rate_limit == ("per_user", "burst", "global")
    assert r[2].rate_limit == ("none",) and r[2].quota is True  # no quotas configured: a no-op
    assert r[3].rate_limit == ()
    assert (r[3].body_limit, r[3].read_timeout, r[3].sse_keepalive) == (10_000, 0.25, 15.0)


def test_route_namespace_and_transform() -> None:
    text = routes(
        "{path: /vec/*, upstream: billing,"
        " namespace: {json_fields: [database], path_segments_after: [databases]}}",
        "{path: /ocr, upstream: billing, transform: {when_absent: [document], rename: {url: document.url},"
        " add: {document.type: url, model: '${OCR_MODEL:-mistral-ocr-latest}', n: 2},"
        " headers: {add: {X-Source: gw}, remove: [X-Debug]}}}",
    )
    r = parse_config(text, {}).routes
    assert r[0].namespace is not None and r[0].namespace.separator == "__"
    assert r[0].namespace.json_fields == ["database"] and r[0].namespace.query_params == []
    assert r[1].transform is not None
    assert r[1].transform.add == {"document.type": "url", "model": "mistral-ocr-latest", "n": 2}
    assert r[1].transform.rename == {"url": "document.url"}
    assert r[1].transform.headers.add == {"X-Source": "gw"} and r[1].transform.headers.remove == ["X-Debug"]


def test_jwt_keys_must_match_the_algorithms() -> None:
    assert errors_of("auth:\n  jwt: {algorithms: [HS256, RS256]}\n") == [
        "auth.jwt.jwks_url: required by RS256",
    ]
    assert errors_of("auth:\n  jwt: {algorithms: [ES256], jwks_url: 'ftp://x'}\n") == [
        "auth.jwt.jwks_url: expected a http:// or https:// URL"
    ]
    cfg = parse_config("auth:\n  jwt: {algorithms: [RS256, PS512], jwks_url: 'https://idp/jwks'}\n", {})
    assert cfg.auth.jwt is not None and cfg.auth.jwt.secret is None


def test_oidc_login_needs_an_hs_jwt_secret_and_a_known_policy() -> None:
    oidc = (
        "  oidc_login: {jwks_url: 'https://idp/jwks', issuer: 'https://idp', audience: app, rate_limit: %s}\n"
    )
    assert errors_of("auth:\n" + oidc % "null") == [
        "auth.oidc_login: needs auth.jwt with an HS algorithm (it issues HS256 tokens)"
    ]
    text = "auth:\n  jwt: {secret: s}\n" + oidc % "login" + "rate_limits:\n  policies: {other: {rate: 1}}\n"
    assert errors_of(text) == ["auth.oidc_login.rate_limit: unknown policy 'login'"]
    cfg = parse_config(text.replace("other", "login"), {})
    assert cfg.auth.oidc_login is not None and cfg.auth.oidc_login.rate_limit == "login"


def test_tls_client_certs_need_a_ca() -> None:
    tls = "server:\n  tls: {cert: c.pem, key: k.pem, require_client_cert: true%s}\n"
    assert errors_of(tls % "") == ["server.tls.require_client_cert: needs server.tls.client_ca"]
    assert parse_config(tls % ", client_ca: ca.pem", {}).server.tls is not None


def test_static_tokens() -> None:
    text = (
        "auth:\n  tokens:\n    - {token: a, user_id: u1}\n    - {token: a, user_id: 'u|2', scopes: [a b]}\n"
    )
    assert errors_of(text) == [
        "auth.tokens[1].user_id: must be printable ASCII without '|'",
        "auth.tokens[1].scopes[0]: invalid scope 'a b': printable ASCII, no spaces or '|'",
    ]
    assert errors_of("auth:\n  tokens: [{token: '', user_id: u}]\n") == [
        "auth.tokens[0].token: must not be empty"
    ]
    assert errors_of("auth:\n  tokens: [{token: a, user_id: u}, {token: a, user_id: v}]\n") == [
        "auth.tokens[1].token: same token as auth.tokens[0]"
    ]


def test_rate_limit_policies() -> None:
    cfg = parse_config("rate_limits:\n  global: {rate: 5, per: 1m, key: 'header:X-Api-Key'}\n", {})
    assert cfg.rate_limits.global_ is not None
    assert (cfg.rate_limits.global_.burst, cfg.rate_limits.global_.per) == (5, 60.0)
    assert errors_of("rate_limits:\n  global: {rate: 0.5}\n") == [
        "rate_limits.global.burst: must be at least 1 (a request takes one token; it defaults to rate)"
    ]
    assert paths_of("rate_limits:\n  policies: {none: {rate: 1}}\n") == ["rate_limits.policies.none"]
    assert errors_of("rate_limits:\n  quotas: {free: {requests: 10, per: week}}\n") == [
        "rate_limits.quotas.free.per: expected one of day, month, got 'week'"
    ]


def test_header_names_and_values() -> None:
    text = UPSTREAMS + "    headers: {'Bad Name': x, X-Key: \"a\\r\\nX-Injected: 1\"}\n"
    assert errors_of(text) == [
        "upstreams.billing.headers.Bad Name: invalid name 'Bad Name': expected an HTTP token",
        "upstreams.billing.headers.X-Key: header values must not contain control characters",
    ]
    assert errors_of("identity_headers: {role: X-User-Id}") == [
        "identity_headers.role: same header as identity_headers.user_id"
    ]


# --- bounds on every wait and on the load (SPEC 13.7, 13.8) ---------------------------------


def test_server_bounds_defaults() -> None:
    server = parse_config("", {}).server
    assert (server.backlog, server.max_connections, server.max_inflight) == (4096, 10000, 0)
    assert (server.body_timeout, server.send_timeout) == (30.0, 60.0)


def test_server_bounds_are_read() -> None:
    text = (
        "server: {backlog: 128, max_connections: 2000, max_inflight: 500,"
        " body_timeout: 250ms, send_timeout: '${SEND_TIMEOUT:-2m}'}\n"
    )
    server = parse_config(text, {}).server
    assert (server.backlog, server.max_connections, server.max_inflight) == (128, 2000, 500)
    assert (server.body_timeout, server.send_timeout) == (0.25, 120.0)
    assert parse_config("server: {max_inflight: 0}", {}).server.max_inflight == 0  # 0: unlimited


def test_server_bounds_are_validated() -> None:
    text = "server: {backlog: 0, max_connections: 0, max_inflight: -1, body_timeout: 0, send_timeout: 0ms}\n"
    assert sorted(errors_of(text)) == [
        "server.backlog: expected int >= 1",
        "server.body_timeout: must be greater than 0",
        "server.max_connections: expected int >= 1",
        "server.max_inflight: expected int >= 0",
        "server.send_timeout: must be greater than 0",
    ]
    errors = errors_of("server: {body_timeout: soon, backlog: many}")
    assert errors[0].startswith("server.body_timeout: invalid duration 'soon': use seconds or")
    assert errors[1:] == ["server.backlog: expected int, got str"]


# --- headers the config injects upstream ----------------------------------------------------

GATEWAY_HEADERS = [
    "Content-Length",
    "transfer-encoding",
    "HOST",
    "Connection",
    "Upgrade",
    "TE",
    "Trailer",
    "Keep-Alive",
]


def _cannot_inject(name: str) -> str:
    return f"{name!r} cannot be injected: framing and hop-by-hop headers are set by the gateway"


@pytest.mark.parametrize("name", GATEWAY_HEADERS)
def test_identity_headers_refuse_framing_and_hop_by_hop_names(name: str) -> None:
    assert errors_of(f"identity_headers: {{plan: {name}}}") == [
        f"identity_headers.plan: {_cannot_inject(name)}"
    ]


@pytest.mark.parametrize("name", GATEWAY_HEADERS)
def test_upstream_headers_refuse_framing_and_hop_by_hop_names(name: str) -> None:
    text = UPSTREAMS + f"    headers: {{X-Api-Key: k, {name}: v}}\n"
    assert errors_of(text) == [f"upstreams.billing.headers.{name}: {_cannot_inject(name)}"]


@pytest.mark.parametrize("name", GATEWAY_HEADERS)
def test_transform_header_add_refuses_framing_and_hop_by_hop_names(name: str) -> None:
    text = routes(
        f"{{path: /t, upstream: billing, transform: {{headers: {{add: {{X-Src: gw, {name}: v}}}}}}}}"
    )
    assert errors_of(text) == [f"routes[0].transform.headers.add.{name}: {_cannot_inject(name)}"]


def test_ordinary_injected_headers_are_kept() -> None:
    text = (
        UPSTREAMS
        + "    headers: {X-Api-Key: k, Authorization: Bearer t, X-Connection-Id: c}\n"
        + "identity_headers: {user_id: X-Host-User}\n"
        + "routes:\n  - {path: /t, upstream: billing,"
        " transform: {headers: {add: {X-Te: v}, remove: [Connection]}}}\n"
    )
    cfg = parse_config(text, {})
    assert cfg.upstreams["billing"].headers["X-Connection-Id"] == "c"
    assert cfg.identity_headers.user_id == "X-Host-User"
    transform = cfg.routes[0].transform
    assert transform is not None and transform.headers.add == {"X-Te": "v"}
    assert transform.headers.remove == ["Connection"]


def test_store_and_redis_urls() -> None:
    assert errors_of("store: mysql://db/gw") == [
        "store: unsupported store 'mysql://db/gw': use sqlite:///relative.db,"
        " sqlite:////absolute/path.db or postgresql://user:password@host:port/dbname"
    ]
    assert errors_of("store: postgresql://?sslmode=require") == [
        "store: store 'postgresql://': name the host and the database"
    ]
    url = "postgresql://gw:pw@db:5432/gw?sslmode=require"
    assert parse_config(f"store: '{url}'", {}).store == url
    assert parse_config("store: postgres://db/gw", {}).store == "postgres://db/gw"
    assert errors_of("redis: http://cache:6379") == ["redis: expected a redis:// or rediss:// or unix:// URL"]
    assert parse_config("redis: redis://cache:6379/0", {}).redis == "redis://cache:6379/0"


# --- environment substitution ---------------------------------------------------------------


def test_defaults_and_empty_defaults() -> None:
    text = """\
server:
  workers: ${WORKERS:-2}
  listen: ${LISTEN:-127.0.0.1:8080}
  access_log: ${ACCESS_LOG:-false}
  header_timeout: ${HEADER_TIMEOUT:-5s}
auth:
  usage_key: ${USAGE_API_KEY:-}
  jwt: {secret: "${AUTH_JWT_SECRET:-}", algorithms: [RS256], jwks_url: "${JWKS_URL:-https://idp/jwks}"}
signing:
  secret: ${SIGNING_SECRET:-}
"""
    cfg = parse_config(text, {"LISTEN": ""})  # set but empty: ':-' takes the default, as in the shell
    assert (cfg.server.workers, cfg.server.listen, cfg.server.access_log) == (2, "127.0.0.1:8080", False)
    assert cfg.server.header_timeout == 5.0
    assert cfg.auth.usage_key is None and cfg.signing is not None and cfg.signing.secret is None
    assert (
        cfg.auth.jwt is not None
        and cfg.auth.jwt.secret is None
        and cfg.auth.jwt.jwks_url == "https://idp/jwks"
    )

    env = {"WORKERS": "4", "USAGE_API_KEY": "uk", "SIGNING_SECRET": "s", "ACCESS_LOG": "true"}
    cfg = parse_config(text, env)
    assert (cfg.server.workers, cfg.server.access_log, cfg.auth.usage_key) == (4, True, "uk")
    assert cfg.signing is not None and cfg.signing.secret == "s"


def test_substituted_values_keep_yaml_special_characters() -> None:
    secret = "a: b # not a comment, [x], {y}, 'q', \"d\", ${NOT_EXPANDED}"
    cfg = parse_config("signing:\n  secret: ${SIGNING_SECRET}\n", {"SIGNING_SECRET": secret})
    assert cfg.signing is not None and cfg.signing.secret == secret


def test_substitution_inside_a_longer_string() -> None:
    text = (
        UPSTREAMS + "    headers: {Authorization: 'Bearer ${KEY:-}', X-Env: '${STAGE:-dev}-${REGION:-eu}'}\n"
    )
    cfg = parse_config(text, {"STAGE": "prod"})
    assert cfg.upstreams["billing"].headers == {"Authorization": "Bearer ", "X-Env": "prod-eu"}


def test_wrong_type_after_substitution() -> None:
    assert errors_of("server: {workers: '${WORKERS}'}", {"WORKERS": "lots"}) == [
        "server.workers: expected int, got str"
    ]


# --- YAML and file errors -------------------------------------------------------------------


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  listen: [oops\n", {}, source="gw.yaml")
    (error,) = caught.value.errors
    assert error.startswith("gw.yaml: line 3, column 1: ")
    assert caught.value.__suppress_context__


def test_duplicate_yaml_keys_are_refused() -> None:
    assert errors_of("server: {workers: 1}\nserver: {workers: 2}\n") == [
        "<config>: line 2, column 1: duplicate key 'server'"
    ]
    # Keys merged in with << may be overridden; that is what merging is for.
    merged = "upstreams:\n  a: {<<: {read_timeout: 2s}, read_timeout: 3s, targets: ['http://h:1']}\n"
    assert parse_config(merged, {}).upstreams["a"].read_timeout == 3.0


def test_top_level_must_be_a_mapping() -> None:
    assert errors_of("- a\n- b\n") == ["<config>: expected a mapping of sections, got list"]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(missing, {})
    assert caught.value.errors == [f"{missing}: cannot read the config file: No such file or directory"]


# --- scalar parsers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (2.5, 2.5),
        (0, 0.0),
        ("30", 30.0),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        (" 10 s ", 10.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "s", "5 minutes", "1h30m", "-1s", -1, True, None, [1], "5S", "inf", float("nan")]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1024, 1024),
        ("1024", 1024),
        ("512B", 512),
        ("64KiB", 65536),
        ("1MiB", 1048576),
        ("1GiB", 1073741824),
        ("1.5KiB", 1536),
        ("10KB", 10_000),
        ("10MB", 10_000_000),
        ("2GB", 2_000_000_000),
        ("1 mib", 1048576),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "MiB", "1.5B", "1 megabyte", "1MiBs", -1, 1.5, False, None, "-1KiB"])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:443", ("::", 443)),
        (":8080", ("", 8080)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen(value: str, address: tuple[str, int]) -> None:
    assert parse_listen(value) == address


@pytest.mark.parametrize(
    "value",
    [
        "8080",
        "0.0.0.0",
        "0.0.0.0:",
        "0.0.0.0:65536",
        "::1:8080",
        "[::g]:80",
        "[::1]",
        "a b:80",
        "h:-1",
        "h:８０",
    ],
)
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        parse_listen(value)


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:9001", Target("http", "127.0.0.1", 9001, "")),
        ("https://api.openai.com", Target("https", "api.openai.com", 443, "")),
        ("http://svc/", Target("http", "svc", 80, "")),
        ("http://[::1]:9000/v1/", Target("http", "::1", 9000, "/v1")),
    ],
)
def test_parse_target(url: str, target: Target) -> None:
    assert parse_target(url) == target


@pytest.mark.parametrize(
    "url", ["127.0.0.1:9001", "ftp://h:1", "http://", "http://h:99999", "http://h:1/?a=1", "http://h#x"]
)
def test_parse_target_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="invalid target"):
        parse_target(url)
