"""The config's field types: what a YAML value must be, beyond msgspec's type check.

A field type is ``Annotated[T, Parsed(parse)]`` when its value needs more than a type check
(``Duration``, ``Size``, header names, URLs...): ``fastgw.config.convert`` hands the raw value to
``parse`` and reports its ValueError at the field's key path. The Structs that use them are in
``schema.py``.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

from .scalars import parse_duration, parse_listen, parse_size, parse_store_url, parse_target

JWT_ALGORITHMS: frozenset[str] = frozenset(
    f"{family}{bits}" for family in ("HS", "RS", "ES", "PS") for bits in (256, 384, 512)
)

# Headers that frame a message or belong to one hop: the gateway sets them on each side itself,
# and one injected from config would desynchronise how the upstream reads the request.
GATEWAY_OWNED_HEADERS: frozenset[str] = frozenset(
    {"content-length", "transfer-encoding", "host", "connection", "upgrade", "te", "trailer", "keep-alive"}
)


# --- field types ----------------------------------------------------------------------------


class Parsed:
    """Annotated marker: the raw value goes through ``parse`` instead of msgspec.

    ``parse`` returns a plain float/int/str/tuple, so consumers never see a wrapper type and the
    Structs stay encodable; a ValueError becomes an error at the field's key path.
    """

    __slots__ = ("parse",)

    def __init__(self, parse: Callable[[Any], Any]) -> None:
        self.parse = parse


def kind(value: object) -> str:
    names = {dict: "mapping", list: "list", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected str, got {kind(value)}")
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


def _positive_duration(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


def _injectable(parse: Callable[[object], str]) -> Callable[[object], str]:
    """A header name the gateway may add to a request it forwards: not a framing/hop-by-hop one."""

    def check(value: object) -> str:
        name = parse(value)
        if name.lower() in GATEWAY_OWNED_HEADERS:
            raise ValueError(
                f"{name!r} cannot be injected: framing and hop-by-hop headers are set by the gateway"
            )
        return name

    return check


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_RE = re.compile(_TOKEN.replace("_", ""))  # clients' headers with '_' are dropped (SPEC 4)

Duration = Annotated[float, Parsed(parse_duration)]
PositiveDuration = Annotated[float, Parsed(_positive_duration)]
Size = Annotated[int, Parsed(parse_size)]
NonEmpty = Annotated[str, Parsed(_checked(r"(?s).+", "must not be empty"))]
_token = _checked(_TOKEN, "invalid name {value!r}: expected an HTTP token")
_header_name = _checked(
    _HEADER_RE.pattern, "invalid header name {value!r}: expected an HTTP token without '_'"
)
Token = Annotated[str, Parsed(_token)]
HeaderName = Annotated[str, Parsed(_header_name)]
# Names of headers the gateway adds upstream (identity headers, upstream and transform headers).
InjectedToken = Annotated[str, Parsed(_injectable(_token))]
InjectedHeaderName = Annotated[str, Parsed(_injectable(_header_name))]
HeaderValue = Annotated[str, Parsed(_header_value)]
Method = Annotated[str, Parsed(_checked(_TOKEN, "invalid HTTP method {value!r}", str.upper))]
# Identity values end up in headers and in the "|"-separated signing context (SPEC 4, 6).
IdentityValue = Annotated[str, Parsed(_checked(r"[ -{}~]*", "must be printable ASCII without '|'"))]
Scope = Annotated[
    str, Parsed(_checked(r"[!-{}~]+", "invalid scope {value!r}: printable ASCII, no spaces or '|'"))
]
ListenAddr = Annotated[str, Parsed(_validated(parse_listen))]
Cidr = Annotated[str, Parsed(_validated(_cidr))]
HttpUrl = Annotated[str, Parsed(_validated(_url(("http", "https"))))]
TargetUrl = Annotated[str, Parsed(_validated(parse_target))]
StoreUrl = Annotated[str, Parsed(_validated(parse_store_url))]
RedisUrl = Annotated[str, Parsed(_validated(_url(("redis", "rediss", "unix"))))]
JwtAlgorithm = Annotated[str, Parsed(_algorithm)]
RateKey = Annotated[str, Parsed(_rate_key)]
PolicyNames = Annotated[tuple[str, ...], Parsed(_policy_names)]
Count = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
