"""Scalar values of the config (SPEC section 2): durations, sizes, listen addresses, target URLs.

Plain functions from a YAML scalar to a Python value; a ValueError's message becomes an error at
the key path of the field that holds the value.
"""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from decimal import Decimal
from typing import NamedTuple

__all__ = [
    "Target",
    "parse_duration",
    "parse_listen",
    "parse_size",
    "parse_store_url",
    "parse_target",
    "sqlite_path",
]

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


def without_credentials(url: str) -> str:
    """``url`` fit for a message or a log line: any user, password and query are cut out.

    ``postgresql://app:hunter2@db:5432/gw?sslpassword=x`` -> ``postgresql://***@db:5432/gw``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url or "?" in url else url
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{hostport}{slash}{path}"


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` store URL (ValueError for any other store)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(
            f"unsupported store {without_credentials(url)!r}: use sqlite:///relative.db, "
            "sqlite:////absolute/path.db or postgresql://user:password@host:port/dbname"
        )
    return url[len(prefix) :]


def parse_store_url(url: str) -> str:
    """``url`` if it names a store fastgw can open: ``sqlite:///...`` or ``postgresql://...``.

    A PostgreSQL URL is checked for its shape only (``fastgw check`` never connects).
    """
    if url.startswith(("postgresql://", "postgres://")):
        rest = url.partition("://")[2]
        if not rest or rest.startswith("?"):
            raise ValueError(f"store {without_credentials(url)!r}: name the host and the database")
        return url
    sqlite_path(url)
    return url
