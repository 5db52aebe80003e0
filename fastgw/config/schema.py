"""The config's shape (SPEC section 2): frozen msgspec Structs, with the field types of
``fields.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .fields import (
    Cidr,
    Count,
    Duration,
    HeaderName,
    HeaderValue,
    HttpUrl,
    IdentityValue,
    InjectedHeaderName,
    InjectedToken,
    JwtAlgorithm,
    ListenAddr,
    Method,
    NonEmpty,
    NonNegative,
    PolicyNames,
    PositiveDuration,
    RateKey,
    RedisUrl,
    Scope,
    Size,
    StoreUrl,
    TargetUrl,
    Token,
)
from .scalars import sqlite_path

# --- the config -----------------------------------------------------------------------------


# Every Struct is frozen (loaded once, shared by all requests) and forbids unknown fields (a
# misspelt key must be an error, never a silent default).


class TLSConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cert: NonEmpty
    key: NonEmpty
    client_ca: str | None = None
    require_client_cert: bool = False


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    listen: ListenAddr = "0.0.0.0:8080"
    openapi: Literal["admin", "public"] = "admin"  # who may read /openapi.json (SPEC 13.6)
    production: bool = False  # refuse weak secrets (config/production.py)
    cache_memory: Size = 64 * 1024 * 1024  # all cache: routes together, per process
    workers: NonNegative = 1  # 0 = one process per core
    metrics_listen: ListenAddr | None = "127.0.0.1:9090"
    body_limit: Size = 1024 * 1024
    max_header_bytes: Size = 64 * 1024
    header_timeout: Duration = 10.0
    idle_timeout: Duration = 75.0
    shutdown_grace: Duration = 30.0
    # SPEC 13.7, 13.8: every wait on a client is bounded, and so is the load it may bring.
    body_timeout: PositiveDuration = 30.0  # longest silence while a request body arrives (408)
    send_timeout: PositiveDuration = 60.0  # longest a client may leave a response unread
    backlog: Count = 4096  # listen backlog of each socket
    max_connections: Count = 10000  # client connections beyond it get 503 and are closed
    max_inflight: NonNegative = 0  # requests beyond it get 503 at once (0: unlimited)
    trusted_proxies: list[Cidr] = []
    tls: TLSConfig | None = None
    access_log: bool = True


class IdentityHeaders(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    user_id: InjectedHeaderName = "X-User-Id"
    role: InjectedHeaderName = "X-User-Role"
    app_key: InjectedHeaderName = "X-App-Key"
    plan: InjectedHeaderName = "X-User-Plan"
    scopes: InjectedHeaderName = "X-User-Scopes"


class StaticToken(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    token: NonEmpty
    user_id: IdentityValue
    role: IdentityValue = ""
    scopes: list[Scope] = []
    plan: IdentityValue = ""
    app_key: IdentityValue = ""


class ClaimsMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    user_id: str = "sub"
    role: str = "role"
    scopes: str = "scope"
    app_key: str = "app"
    plan: str = "plan"


class JWTConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    algorithms: list[JwtAlgorithm] = msgspec.field(default_factory=lambda: ["HS256"])
    secret: str | None = None
    jwks_url: HttpUrl | None = None
    jwks_cache_ttl: Duration = 600.0
    jwks_min_refetch: Duration = 5.0
    jwks_max_stale: Duration = 3600.0  # SPEC 13.8: cached keys outlive a JWKS outage this long
    issuer: str | None = None
    audience: str | None = None
    leeway: Duration = 30.0
    claims: ClaimsMap = msgspec.field(default_factory=ClaimsMap)


class ApiTokensConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    prefix: NonEmpty = "fgw_"


class SessionConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cookie: Token = "better-auth.session_token"
    verify_url: HttpUrl
    cache_ttl: Duration = 30.0
    user_id_field: str = "user.id"
    role_field: str = "user.role"


class RefreshConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Browser sessions renewed from an HttpOnly refresh cookie (SPEC 13.4)."""

    ttl: PositiveDuration = 30 * 86400.0
    cookie: Token = "fgw_refresh"
    path: NonEmpty = "/api/v1/auth"
    secure: bool = True


class OIDCLoginConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    jwks_url: HttpUrl
    issuer: NonEmpty
    audience: NonEmpty
    token_ttl: Duration = 3600.0
    rate_limit: str | None = None
    refresh: RefreshConfig | None = None


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    tokens: list[StaticToken] = []
    jwt: JWTConfig | None = None
    api_tokens: ApiTokensConfig = msgspec.field(default_factory=ApiTokensConfig)
    session: SessionConfig | None = None
    oidc_login: OIDCLoginConfig | None = None
    usage_key: str | None = None


class SigningConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    secret: str | None = None
    max_skew: Duration = 300.0


class CircuitConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    failures: Count = 5
    cooldown: Duration = 10.0


class OAuth2Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Client-credentials grant for an upstream's Authorization (SPEC 13.5)."""

    token_url: HttpUrl
    client_id: NonEmpty
    client_secret: NonEmpty
    scope: str | None = None
    audience: str | None = None


class UpstreamConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    targets: list[TargetUrl]
    balance: Literal["round_robin", "least_conn"] = "round_robin"
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 60.0
    retries: NonNegative = 1
    max_connections: Count = 512
    circuit: CircuitConfig = msgspec.field(default_factory=CircuitConfig)
    headers: dict[InjectedToken, HeaderValue] = {}
    oauth2: OAuth2Config | None = None


class RateLimitPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rate: Annotated[float, msgspec.Meta(gt=0)]
    per: Duration = 1.0
    burst_: Annotated[float, msgspec.Meta(gt=0)] | None = msgspec.field(default=None, name="burst")
    key: RateKey = "ip"

    @property
    def burst(self) -> float:
        """Bucket size: ``burst`` when given, else the rate (SPEC 7)."""
        return self.rate if self.burst_ is None else self.burst_


class QuotaConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    requests: Count
    per: Literal["day", "month"]


class RateLimitsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    global_: RateLimitPolicy | None = msgspec.field(default=None, name="global")
    policies: dict[str, RateLimitPolicy] = {}
    quotas: dict[str, QuotaConfig] = {}


class HmacConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    secret: NonEmpty
    header: HeaderName = "X-Webhook-Signature"
    timestamp_header: HeaderName | None = None
    tolerance: Duration = 300.0


class WsRateLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    messages: Count
    window: Duration


class NamespaceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    separator: NonEmpty = "__"
    json_fields: list[str] = []
    query_params: list[str] = []
    path_segments_after: list[str] = []


class HeaderTransform(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    add: dict[InjectedToken, HeaderValue] = {}
    remove: list[Token] = []


class TransformConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    when_absent: list[str] = []
    rename: dict[str, str] = {}
    add: dict[str, Any] = {}
    remove: list[str] = []
    headers: HeaderTransform = msgspec.field(default_factory=HeaderTransform)


class StaticConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A route that serves files under ``root`` itself (SPEC 13.3)."""

    root: NonEmpty
    index: NonEmpty = "index.html"
    spa: bool = False
    max_age: Duration = 0.0


class RedirectConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A route that answers with a redirect; ``to`` may end in ``*`` for the matched tail."""

    to: NonEmpty
    status: Literal[301, 302, 307, 308] = 302


class CacheConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Responses of a route kept in memory (SPEC 13.3)."""

    ttl: PositiveDuration = 900.0
    vary: list[HeaderName] = []
    max_entry: Size = 1024 * 1024
    shared: bool = False


class RouteConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str
    methods: list[Method] | None = None  # upper-cased; None = every method
    upstream: str | None = None
    static: StaticConfig | None = None
    redirect: RedirectConfig | None = None
    cache: CacheConfig | None = None
    auth: Literal["required", "optional", "none", "hmac"] = "required"
    hmac: HmacConfig | None = None
    roles: list[str] = []
    scopes: list[str] = []
    strip_prefix: bool = False
    rewrite: str | None = None
    sign: bool = False
    rate_limit: PolicyNames = ()  # () = only the global policy; ("none",) = exempt from all
    quota: bool = False
    query_token: bool = False
    websocket: bool = False
    ws_rate_limit: WsRateLimit | None = None
    ws_idle_timeout: PositiveDuration = 3600.0  # SPEC 13.8: a silent tunnel is closed with 1001
    async_: bool = msgspec.field(default=False, name="async")
    llm: Literal["openai"] | None = None
    body_limit: Size | None = None
    read_timeout: Duration | None = None
    sse_keepalive: Duration | None = None
    namespace: NamespaceConfig | None = None
    transform: TransformConfig | None = None


class JobsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Async invoke jobs (SPEC 13.8)."""

    retention: PositiveDuration = 7 * 86400.0  # finished jobs are deleted after this
    workers: Count = 16  # jobs run at once per instance


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreUrl = "sqlite:///fastgw.db"
    jobs: JobsConfig = msgspec.field(default_factory=JobsConfig)
    redis: RedisUrl | None = None
    identity_headers: IdentityHeaders = msgspec.field(default_factory=IdentityHeaders)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    signing: SigningConfig | None = None
    upstreams: dict[str, UpstreamConfig] = {}
    rate_limits: RateLimitsConfig = msgspec.field(default_factory=RateLimitsConfig)
    routes: list[RouteConfig] = []

    def store_path(self) -> str:
        """The SQLite file named by ``store`` (``sqlite:////abs/x.db`` -> ``/abs/x.db``)."""
        return sqlite_path(self.store)
