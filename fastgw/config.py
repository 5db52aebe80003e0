"""The YAML config (SPEC section 2) as frozen msgspec Structs.

A gateway config is fixed in one sitting against ``fastgw check`` output, so loading never stops
at the first mistake: every problem is collected with its key path
(``routes[3].upstream: unknown upstream 'bilin'``) and raised together in one ConfigError.

This is the only module that reads the environment. ``${NAME}`` references are resolved here,
inside string values of the parsed YAML tree (not in the raw text), so a value full of YAML
syntax stays one string and an unset variable is reported at the key that uses it.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import math
import os
import re
import types
import urllib.parse
from collections.abc import Callable, Hashable, Iterator, Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import msgspec
import yaml

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
    }
)

JWT_ALGORITHMS: frozenset[str] = frozenset(
    f"{family}{bits}" for family in ("HS", "RS", "ES", "PS") for bits in (256, 384, 512)
)


class ConfigError(Exception):
    """Every problem in a config, one ``"<key path>: <message>"`` line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(format_errors(errors))
        self.errors = list(errors)

    def __str__(self) -> str:
        return format_errors(self.errors)


def format_errors(errors: list[str]) -> str:
    return "\n".join(errors)


# --- scalar parsers -------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)")
_SIZE_UNITS = {"": 1, "b": 1} | {
    prefix + suffix: base**power
    for power, prefix in enumerate("kmgt", start=1)
    for suffix, base in (("b", 1000), ("ib", 1024))
}


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``"30"``, ``"250ms"``, ``"30s"``, ``"5m"``, ``"1h"`` or ``"7d"``.

    Bare numbers (and digit strings) are seconds so that ``timeout: ${T:-30}`` works.
    """
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.fullmatch(value.strip())):
        seconds = float(m[1]) * _DURATION_UNITS[m[2] or "s"]
    if seconds is None:
        raise ValueError(
            f"invalid duration {value!r}: use seconds or a number with ms, s, m, h or d (30s, 5m)"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must be a non-negative number of seconds")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``1024``, ``"512B"``, ``"64KiB"``/``"1MiB"``/``"1GiB"`` or ``"10KB"``/``"MB"``/``"GB"``.

    KiB, MiB... are powers of 1024 and KB, MB... powers of 1000, as on every other tool's units.
    """
    exact: Decimal | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        exact = Decimal(value)
    elif isinstance(value, str) and (m := _SIZE_RE.fullmatch(value.strip())):
        unit = _SIZE_UNITS.get(m[2].lower())
        exact = None if unit is None else Decimal(m[1]) * unit
    if exact is None:
        raise ValueError(f"invalid size {value!r}: use bytes or a number with B, KiB, MiB, GiB, KB, MB or GB")
    if exact < 0 or exact != exact.to_integral_value():
        raise ValueError(f"invalid size {value!r}: must be a whole, non-negative number of bytes")
    return int(exact)


_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_listen(value: str) -> tuple[str, int]:
    """``"0.0.0.0:8080"``, ``"[::1]:8080"`` (host ``"::1"``) or ``":8080"`` (host ``""``) -> (host, port).

    An empty host means every interface; port 0 lets the OS pick one (handy in tests).
    """
    if not isinstance(value, str):
        raise ValueError(f"invalid listen address {value!r}: expected HOST:PORT")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise ValueError(f"invalid listen address {value!r}: expected HOST:PORT with a port from 0 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid listen address {value!r}: bad IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"invalid listen address {value!r}: write IPv6 addresses in brackets, [::1]:8080")
    elif host and not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"invalid listen address {value!r}: bad host")
    return host, int(port)


class Target(NamedTuple):
    scheme: str
    host: str
    port: int
    path_prefix: str  # "" or "/prefix", never with a trailing slash


def parse_target(url: str) -> Target:
    """Split an upstream target URL; the port defaults to the scheme's.

    Credentials, queries and fragments are refused because they would be silently dropped
    (credentials belong in ``headers``); the URL is not echoed in case it carries one.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("invalid target URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("invalid target: expected http://host:port or https://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError("invalid target: credentials in the URL are not supported (use headers)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("invalid target: a query or fragment is not allowed")
    default_port = 443 if parts.scheme == "https" else 80
    return Target(
        parts.scheme, parts.hostname, default_port if port is None else port, parts.path.rstrip("/")
    )


def _sqlite_path(url: str) -> str:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(
            f"unsupported store {url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db"
        )
    return url[len(prefix) :]


# --- field types ----------------------------------------------------------------------------


class _Parsed:
    """Annotated marker: the raw value goes through ``parse`` instead of msgspec.

    ``parse`` returns a plain float/int/str/tuple, so consumers never see a wrapper type and the
    Structs stay encodable; a ValueError becomes an error at the field's key path.
    """

    __slots__ = ("parse",)

    def __init__(self, parse: Callable[[Any], Any]) -> None:
        self.parse = parse


def _kind(value: object) -> str:
    names = {dict: "mapping", list: "list", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected str, got {_kind(value)}")
    return value


def _checked(pattern: str, problem: str, transform: Callable[[str], str] = str) -> Callable[[object], str]:
    regex = re.compile(pattern)

    def parse(value: object) -> str:
        text = transform(_text(value))
        if not regex.fullmatch(text):
            raise ValueError(problem.format(value=text))
        return text

    return parse


def _validated(check: Callable[[str], object]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _text(value)
        check(text)
        return text

    return parse


def _cidr(text: str) -> None:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"invalid IP address or CIDR {text!r}") from None


def _url(schemes: tuple[str, ...]) -> Callable[[str], None]:
    def check(text: str) -> None:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in schemes or not (parts.hostname or parts.scheme == "unix"):
            raise ValueError(f"expected a {' or '.join(s + '://' for s in schemes)} URL")

    return check


def _algorithm(value: object) -> str:
    name = _text(value)
    if name.lower() == "none":
        raise ValueError("'none' is never allowed: it would accept unsigned tokens")
    if name not in JWT_ALGORITHMS:
        raise ValueError(f"unsupported algorithm {name!r} (use one of {', '.join(sorted(JWT_ALGORITHMS))})")
    return name


def _rate_key(value: object) -> str:
    key = _text(value)
    if key in ("ip", "user", "token", "route") or (
        key.startswith("header:") and _HEADER_RE.fullmatch(key[7:])
    ):
        return key
    raise ValueError(f"invalid key {key!r}: expected ip, user, token, route or header:NAME")


def _policy_names(value: object) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(name, str) and name for name in value):
        return tuple(value)
    raise ValueError("expected a policy name or a list of policy names")


def _header_value(value: object) -> str:
    text = _text(value)
    if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in text):
        raise ValueError("header values must not contain control characters")
    return text


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_RE = re.compile(_TOKEN.replace("_", ""))  # clients' headers with '_' are dropped (SPEC 4)

Duration = Annotated[float, _Parsed(parse_duration)]
Size = Annotated[int, _Parsed(parse_size)]
NonEmpty = Annotated[str, _Parsed(_checked(r"(?s).+", "must not be empty"))]
Token = Annotated[str, _Parsed(_checked(_TOKEN, "invalid name {value!r}: expected an HTTP token"))]
HeaderName = Annotated[
    str,
    _Parsed(
        _checked(_HEADER_RE.pattern, "invalid header name {value!r}: expected an HTTP token without '_'")
    ),
]
HeaderValue = Annotated[str, _Parsed(_header_value)]
Method = Annotated[str, _Parsed(_checked(_TOKEN, "invalid HTTP method {value!r}", str.upper))]
# Identity values end up in headers and in the "|"-separated signing context (SPEC 4, 6).
IdentityValue = Annotated[str, _Parsed(_checked(r"[ -{}~]*", "must be printable ASCII without '|'"))]
Scope = Annotated[
    str, _Parsed(_checked(r"[!-{}~]+", "invalid scope {value!r}: printable ASCII, no spaces or '|'"))
]
ListenAddr = Annotated[str, _Parsed(_validated(parse_listen))]
Cidr = Annotated[str, _Parsed(_validated(_cidr))]
HttpUrl = Annotated[str, _Parsed(_validated(_url(("http", "https"))))]
TargetUrl = Annotated[str, _Parsed(_validated(parse_target))]
StoreUrl = Annotated[str, _Parsed(_validated(_sqlite_path))]
RedisUrl = Annotated[str, _Parsed(_validated(_url(("redis", "rediss", "unix"))))]
JwtAlgorithm = Annotated[str, _Parsed(_algorithm)]
RateKey = Annotated[str, _Parsed(_rate_key)]
PolicyNames = Annotated[tuple[str, ...], _Parsed(_policy_names)]
Count = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]


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
    workers: NonNegative = 1  # 0 = one process per core
    metrics_listen: ListenAddr | None = "127.0.0.1:9090"
    body_limit: Size = 1024 * 1024
    max_header_bytes: Size = 64 * 1024
    header_timeout: Duration = 10.0
    idle_timeout: Duration = 75.0
    shutdown_grace: Duration = 30.0
    body_timeout: Duration = 30.0  # longest silence while a request body arrives (408)
    send_timeout: Duration = 60.0  # longest a client may leave a response unread
    backlog: Count = 4096  # listen backlog of each socket
    max_connections: Count = 10000  # client connections beyond it get 503 and are closed
    max_inflight: NonNegative = 0  # requests beyond it get 503 at once (0: unlimited)
    trusted_proxies: list[Cidr] = []
    tls: TLSConfig | None = None
    access_log: bool = True


class IdentityHeaders(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    user_id: HeaderName = "X-User-Id"
    role: HeaderName = "X-User-Role"
    app_key: HeaderName = "X-App-Key"
    plan: HeaderName = "X-User-Plan"
    scopes: HeaderName = "X-User-Scopes"


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


class OIDCLoginConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    jwks_url: HttpUrl
    issuer: NonEmpty
    audience: NonEmpty
    token_ttl: Duration = 3600.0
    rate_limit: str | None = None


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


class UpstreamConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    targets: list[TargetUrl]
    balance: Literal["round_robin", "least_conn"] = "round_robin"
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 60.0
    retries: NonNegative = 1
    max_connections: Count = 512
    circuit: CircuitConfig = msgspec.field(default_factory=CircuitConfig)
    headers: dict[Token, HeaderValue] = {}


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
    add: dict[Token, HeaderValue] = {}
    remove: list[Token] = []


class TransformConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    when_absent: list[str] = []
    rename: dict[str, str] = {}
    add: dict[str, Any] = {}
    remove: list[str] = []
    headers: HeaderTransform = msgspec.field(default_factory=HeaderTransform)


class RouteConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str
    methods: list[Method] | None = None  # upper-cased; None = every method
    upstream: str | None = None
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
    async_: bool = msgspec.field(default=False, name="async")
    llm: Literal["openai"] | None = None
    body_limit: Size | None = None
    read_timeout: Duration | None = None
    sse_keepalive: Duration | None = None
    namespace: NamespaceConfig | None = None
    transform: TransformConfig | None = None


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreUrl = "sqlite:///fastgw.db"
    redis: RedisUrl | None = None
    identity_headers: IdentityHeaders = msgspec.field(default_factory=IdentityHeaders)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    signing: SigningConfig | None = None
    upstreams: dict[str, UpstreamConfig] = {}
    rate_limits: RateLimitsConfig = msgspec.field(default_factory=RateLimitsConfig)
    routes: list[RouteConfig] = []

    def store_path(self) -> str:
        """The SQLite file named by ``store`` (``sqlite:////abs/x.db`` -> ``/abs/x.db``)."""
        return _sqlite_path(self.store)


# --- conversion -----------------------------------------------------------------------------

Issue = tuple[str, str]  # (key path, message)
_INVALID: Any = object()
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _expand(node: Any, env: Mapping[str, str], path: str, issues: list[Issue]) -> Any:
    """Resolve ``${NAME}`` / ``${NAME:-default}`` in every string of the tree (returns a copy).

    As in the shell, ``:-`` also replaces a variable that is set but empty. An unresolved
    reference is left in place and reported, so no later check mistakes it for a blank value.
    """
    if isinstance(node, dict):
        return {key: _expand(value, env, _join(path, key), issues) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand(value, env, f"{path}[{i}]", issues) for i, value in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        issues.append((path, f"environment variable {name} is {'empty' if value == '' else 'not set'}"))
        return match[0]

    if "${" in _ENV_REF.sub("", node):
        issues.append((path, "malformed reference: use ${NAME} or ${NAME:-default}"))
    return _ENV_REF.sub(substitute, node)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
        (inner,) = (arg for arg in get_args(tp) if arg is not type(None))
        return inner, True
    return tp, False


def _parser(tp: Any) -> Callable[[Any], Any] | None:
    if get_origin(tp) is Annotated:
        for extra in tp.__metadata__:
            if isinstance(extra, _Parsed):
                return extra.parse
    return None


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    return {field.encode_name: field for field in msgspec.structs.fields(cls)}


def _convert(data: Any, tp: Any, path: str, issues: list[Issue]) -> Any:
    """Convert ``data`` to ``tp`` one field at a time, so one mistake never hides the next.

    msgspec.convert stops at the first error and cannot name dict keys (``$[...]``), so the
    Structs, lists and dicts are walked here and only leaves go to msgspec (strict=False, so
    ``workers: ${WORKERS:-2}`` becomes an int).
    """
    tp, nullable = _unwrap_optional(tp)
    base = get_args(tp)[0] if get_origin(tp) is Annotated else tp
    if nullable and (data is None or (data == "" and base is str)):
        return None  # an empty optional string (secret: ${X:-}) means "not set"
    if (parse := _parser(tp)) is not None:
        try:
            return parse(data)
        except ValueError as exc:
            issues.append((path, str(exc)))
            return _INVALID
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _convert_struct(data, tp, path, issues)
    origin = get_origin(tp)
    if origin is list and isinstance(data, list):
        items = [_convert(item, get_args(tp)[0], f"{path}[{i}]", issues) for i, item in enumerate(data)]
        return _INVALID if any(item is _INVALID for item in items) else items
    if origin is dict and isinstance(data, dict):
        key_tp, value_tp = get_args(tp)
        pairs = [
            (_convert(k, key_tp, _join(path, k), issues), _convert(v, value_tp, _join(path, k), issues))
            for k, v in data.items()
        ]
        return _INVALID if any(part is _INVALID for pair in pairs for part in pair) else dict(pairs)
    if origin is list or origin is dict:
        issues.append((path, f"expected {'list' if origin is list else 'mapping'}, got {_kind(data)}"))
        return _INVALID
    try:
        return msgspec.convert(data, tp, strict=False)
    except msgspec.ValidationError as exc:
        issues.append((path, _describe(str(exc), tp, data)))
        return _INVALID


def _convert_struct(data: Any, cls: type[msgspec.Struct], path: str, issues: list[Issue]) -> Any:
    if not isinstance(data, dict):
        issues.append((path, f"expected mapping, got {_kind(data)}"))
        return _INVALID
    fields = _fields(cls)
    ok = True
    for key in data:
        if key not in fields:
            issues.append((_join(path, key), "unknown key"))
            ok = False
    values = {}
    for key, field in fields.items():
        # An explicit null for a field that has a default and cannot be null means the default.
        if key not in data or (
            data[key] is None and not field.required and not _unwrap_optional(field.type)[1]
        ):
            if field.required:
                issues.append((_join(path, key), "missing required key"))
                ok = False
            continue
        value = _convert(data[key], field.type, _join(path, key), issues)
        values[field.name] = value
        ok = ok and value is not _INVALID
    return cls(**values) if ok else _INVALID


_MSGSPEC_KINDS = {"array": "list", "object": "mapping"}


def _describe(message: str, tp: Any, data: Any) -> str:
    """msgspec's leaf message (``Expected `int`, got `str```) in this module's words."""
    if get_origin(tp) is Literal:
        got = repr(data) if isinstance(data, str | int | float) else _kind(data)
        return f"expected one of {', '.join(map(str, get_args(tp)))}, got {got}"
    message = message.split(" - at `$", 1)[0]
    message = re.sub(r"`(\w+)`", lambda m: _MSGSPEC_KINDS.get(m[1], m[1]), message)
    return message[:1].lower() + message[1:]


class _Known(NamedTuple):
    """Names the cross-checks compare against, taken from the raw data when a section is broken."""

    upstreams: frozenset[str]
    policies: frozenset[str] | None  # None: unknown (rate_limits did not load), skip name checks
    signing: bool  # False: signing did not load, skip the sign check


def _convert_config(data: dict[Any, Any], issues: list[Issue]) -> tuple[Config, list[int], _Known]:
    """Convert section by section and route by route, keeping whatever is valid.

    The cross-checks then still run on the valid parts of a broken file, so one ``fastgw check``
    reports a typo in one route and an unknown upstream in another together.
    """
    fields = _fields(Config)
    issues.extend((str(key), "unknown key") for key in data if key not in fields)
    sections: dict[str, Any] = {}
    routes: dict[int, Any] = {}
    upstreams: dict[str, Any] = {}
    broken = set()
    for key, field in fields.items():
        raw = data.get(key)
        if raw is None:
            continue
        if key == "routes" and isinstance(raw, list):
            routes = {i: _convert(item, RouteConfig, f"routes[{i}]", issues) for i, item in enumerate(raw)}
        elif key == "upstreams" and isinstance(raw, dict):
            upstreams = {
                str(name): _convert(item, UpstreamConfig, _join(key, name), issues)
                for name, item in raw.items()
            }
        elif (value := _convert(raw, field.type, key, issues)) is _INVALID:
            broken.add(key)
        else:
            sections[key] = value
    routes = {i: route for i, route in routes.items() if route is not _INVALID}
    cfg = Config(
        **sections,
        routes=list(routes.values()),
        upstreams={name: upstream for name, upstream in upstreams.items() if upstream is not _INVALID},
    )
    limits = data.get("rate_limits")
    raw_policies = limits.get("policies") if isinstance(limits, dict) else None
    policies: frozenset[str] | None = None
    if "rate_limits" not in broken:
        policies = frozenset(cfg.rate_limits.policies)
    elif isinstance(raw_policies, dict):
        policies = frozenset(map(str, raw_policies))
    return cfg, list(routes), _Known(frozenset(upstreams), policies, "signing" not in broken)


# --- checks across fields and sections ------------------------------------------------------


def _check(cfg: Config, route_at: list[int], known: _Known) -> Iterator[Issue]:
    tls = cfg.server.tls
    if tls is not None and tls.require_client_cert and not tls.client_ca:
        yield "server.tls.require_client_cert", "needs server.tls.client_ca"
    seen: dict[str, str] = {}
    for name in _fields(IdentityHeaders):
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


def _check_routes(cfg: Config, route_at: list[int], known: _Known) -> Iterator[Issue]:
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


def _route_problems(route: RouteConfig, signing: SigningConfig | None, known: _Known) -> Iterator[Issue]:
    if route.upstream is None:
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


# --- entry points ---------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would resolve silently to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: the config file is not UTF-8 text"]) from None
    return parse_config(text, env, source=path)


def parse_config(text: str, env: Mapping[str, str] | None = None, source: str = "<config>") -> Config:
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{source}: {where}{exc.problem or exc.context or 'invalid YAML'}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None
    return config_from_dict(data, env, source=source)


def config_from_dict(data: Any, env: Mapping[str, str] | None = None, *, source: str = "<config>") -> Config:
    """Build a Config from parsed YAML, or from a dict written in code (the demo config).

    ``env`` stands in for os.environ, so tests and the demo never depend on the real environment.
    """
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping of sections, got {_kind(data)}"])
    env_issues: list[Issue] = []
    data = _expand(data, env, "", env_issues)
    issues: list[Issue] = []
    cfg, route_at, known = _convert_config(data, issues)
    issues.extend(_check(cfg, route_at, known))
    # An unresolved ${NAME} already explains whatever else goes wrong at its key.
    unresolved = {path for path, _ in env_issues}
    issues = env_issues + [issue for issue in issues if issue[0] not in unresolved]
    if issues:
        raise ConfigError([f"{path or source}: {message}" for path, message in issues])
    return cfg
