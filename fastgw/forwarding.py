"""What crosses the gateway in each direction: header hygiene, X-Forwarded-*, X-Request-Id.

SPEC section 4: hop-by-hop headers and every header the client names in ``Connection`` go
first, so ``Connection: X-User-Id`` cannot delete what the gateway adds afterwards; then
client-sent identity and ``X-Gateway-*`` headers, and any name containing ``_`` (many backends
read ``X_User_Id`` as ``X-User-Id``). Framing headers are never forwarded: the gateway re-frames
every body itself.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import random
import re
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl, unquote_plus

from .http1.headers import Headers

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
    }
)

# Headers a backend may take as the truth about who called and how (client address, scheme,
# port, path prefix, client certificate): a client never sets them. The gateway sends its own
# X-Forwarded-For/-Proto/-Host/-Port and Forwarded; the others reach no upstream at all.
FORWARDING_HEADERS = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-scheme",
        "x-forwarded-ssl",
        "x-original-forwarded-for",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-client-cert",
        "x-forwarded-client-cert",
        "x-ssl-client-cert",
        "ssl-client-cert",
        "front-end-https",
        "x-url-scheme",
    }
)

# Set by the gateway itself, or able to change how a backend routes or authorises a request.
_REPLACED_OR_DANGEROUS = (
    frozenset(
        {
            "host",
            "content-length",
            "expect",
            "x-request-id",
            "traceparent",
            "http2-settings",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-original-url",
            "x-rewrite-url",
        }
    )
    | FORWARDING_HEADERS
)


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _forwarded_value(value: str) -> str:
    """A ``Forwarded`` parameter value: a token as is, anything else quoted (RFC 7239 4)."""
    if _TOKEN_RE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=1024)  # the same few (peer, host, proto) on every request
def forwarded_element(peer_ip: str, host: str, proto: str) -> str:
    """The ``Forwarded`` element describing the hop from ``peer_ip`` to this gateway.

    IPv6 addresses are bracketed and quoted (``for="[2001:db8::1]"``); a host with a port is
    quoted because ':' is not a token character.
    """
    node = f"[{peer_ip}]" if ":" in peer_ip else peer_ip
    parts = [f"for={_forwarded_value(node)}"]
    if host:
        parts.append(f"host={_forwarded_value(host)}")
    parts.append(f"proto={_forwarded_value(proto)}")
    return ";".join(parts)


# Names a lenient backend might fold onto a framing header ("Transfer---Encoding"): never forwarded.
_FRAMING_LOOKALIKES = frozenset({"transferencoding", "contentlength"})

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def request_id_from(value: str | None) -> str:
    """Keep a well-formed client request id, otherwise mint a UUID4."""
    if value is not None and _REQUEST_ID_RE.fullmatch(value):
        return value
    return new_request_id()


# uuid.uuid4() reads os.urandom(16): a syscall per request. Request ids identify a request, they
# authorise nothing (async jobs mint their own uuid4), so one Mersenne Twister per process serves:
# seeded with its whole state from os.urandom at import, and again in every forked child, so
# workers never repeat each other's (or the parent's) sequence.
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)
_getrandbits = random_bits = _rng.getrandbits
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version nibble, variant bits
_UUID4_SET = (0x4 << 76) | (0x2 << 62)  # version 4, variant 10 (RFC 9562)


def new_request_id() -> str:
    """A random UUID4 in its 36-character lower-case form, without a syscall."""
    h = "%032x" % ((_getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def connection_tokens(headers: Headers) -> set[str]:
    """Lowercased header names a message nominates as hop-by-hop in ``Connection``."""
    tokens: set[str] = set()
    for value in headers.get_list("Connection"):
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def is_trusted(ip: str, networks: tuple[Network, ...]) -> bool:
    if not networks:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def client_ip(peer_ip: str, xff: str | None, trusted: tuple[Network, ...]) -> str:
    """The right-most address that is not one of our trusted proxies (the real caller)."""
    if not xff or not is_trusted(peer_ip, trusted):
        return peer_ip
    hops = [h.strip() for h in xff.split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer_ip


def upstream_request_head(
    method: str,
    target: str,
    headers: Headers,
    *,
    drop: frozenset[str],
    drop_prefixes: tuple[str, ...],
    host: str,
    forwarded_for: str,
    forwarded_proto: str,
    forwarded_host: str,
    forwarded_port: str,
    forwarded: str,
    request_id: str,
    traceparent: str,
    extra: Iterable[tuple[str, str]],
    framing: str,
) -> bytes:
    """Serialise the request line and headers sent upstream.

    ``drop`` holds lowercased names removed on top of the fixed rules (identity headers and a
    consumed ``Authorization``); ``framing`` is the gateway's own ``Content-Length: n`` or
    ``Transfer-Encoding: chunked`` line, or empty for a bodiless request.
    """
    nominated = connection_tokens(headers) if "Connection" in headers else ()
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    for name, value in headers.get_all():
        lname = name.lower()
        if (
            lname in HOP_BY_HOP
            or lname in _REPLACED_OR_DANGEROUS
            or lname in drop
            or "_" in lname
            or (nominated and lname in nominated)
            or lname.startswith(drop_prefixes)
            or (lname.endswith(("encoding", "length")) and lname.replace("-", "") in _FRAMING_LOOKALIKES)
        ):
            continue
        lines.append(f"{name}: {value}\r\n")
    lines.append(
        f"X-Forwarded-For: {forwarded_for}\r\nX-Forwarded-Proto: {forwarded_proto}\r\n"
        f"X-Forwarded-Host: {forwarded_host}\r\nX-Forwarded-Port: {forwarded_port}\r\n"
        f"Forwarded: {forwarded}\r\nX-Request-Id: {request_id}\r\ntraceparent: {traceparent}\r\n"
    )
    for name, value in extra:
        lines.append(f"{name}: {value}\r\n")
    if framing:
        lines.append(framing)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP) | {b"x-request-id", b"traceparent"}


def _relayed(upstream_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]:
    """(name, lower-cased name, value) of the upstream's headers the client gets: hop-by-hop
    ones, those its ``Connection`` names, and its ``X-Request-Id`` / ``traceparent`` dropped.
    One pass lower-cases each name once; names nominated by ``Connection`` are dropped after."""
    nominated: set[bytes] | None = None
    kept = []
    for name, value in upstream_headers:
        lname = name.lower()
        if lname in _HOP_BY_HOP_BYTES:
            if lname == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                nominated = tokens if nominated is None else nominated | tokens
            continue
        kept.append((name, lname, value))
    if nominated:
        kept = [entry for entry in kept if entry[1] not in nominated]
    return kept


def client_response_head(
    upstream_headers: list[tuple[bytes, bytes]],
    request_id: str,
    traceparent: str,
    extra: tuple[tuple[str, str], ...] = (),
) -> tuple[bytes, bool, str]:
    """The header lines relayed to the client, encoded (each ending in CRLF; the upstream's bytes
    are never decoded), whether the upstream framed the body by length, and the response's
    Content-Type ("" when absent). ``extra``: the gateway's own headers (rate-limit headers)."""
    lines: list[bytes] = []
    has_length = False
    content_type = ""
    for name, lname, value in _relayed(upstream_headers):
        if lname == b"content-length":
            has_length = True
        elif lname == b"content-type":
            content_type = value.decode("latin-1")
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"X-Request-Id: %s\r\ntraceparent: %s\r\n" % (request_id.encode(), traceparent.encode()))
    if extra:
        lines.append(header_lines(extra))
    return b"".join(lines), has_length, content_type


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """``Name: value`` lines of the gateway's own headers, each ending in CRLF (latin-1)."""
    return b"".join(
        [b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    )


def relayed_headers(upstream_headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The upstream's headers as the client gets them, decoded (for filters that keep them)."""
    kept = _relayed(upstream_headers)
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, _, value in kept]


_SECRET_PARAMS = frozenset({"token", "key"})


def loggable_query(query: str) -> str:
    """The query string fit for the access log: without ``token`` (a credential on query-token
    routes) or ``key`` (the dashboard's usage key, and many APIs' key parameter)."""
    if "token" not in query and "key" not in query:
        return query
    return "&".join(p for p in query.split("&") if unquote_plus(p.partition("=")[0]) not in _SECRET_PARAMS)


def without_token_param(query: str) -> str:
    """The query string minus any ``token`` parameter (never logged, never forwarded)."""
    if "token" not in query:
        return query
    return "&".join(p for p in query.split("&") if unquote_plus(p.partition("=")[0]) != "token")


def token_param(query: str) -> str | None:
    if "token" not in query:
        return None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "token":
            return value
    return None
