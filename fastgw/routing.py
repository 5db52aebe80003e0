"""Path normalisation (SPEC section 3) and the route table.

The gateway authorises, rate-limits, routes and forwards one and the same string: the output of
:func:`normalize_path`. Any difference between what is matched and what the upstream sees is a
route-level auth bypass (CVE-2019-9901 and friends), so the upstream gets exactly this path, or
the request is refused with :class:`PathError` (400).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .speedups import RouteTrie

__all__ = [
    "PathError",
    "RouteSpec",
    "RouteTable",
    "Trie",
    "normalize_path",
    "pattern_error",
    "rewrite_path",
    "spec_errors",
]


class PathError(ValueError):
    """The request path cannot be normalised safely; the caller answers 400 VALIDATION_ERROR."""


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

# A path that matches this, has no '//' and no segment starting with '.' (a superset of the '.'
# and '..' segments, fine for a precheck) is already normal: a leading '/', then only printable
# ASCII other than '#', '%' and '\'. One C-level scan plus two substring searches.
_CLEAN = re.compile(r"/[\x21\x22\x24\x26-\x5b\x5d-\x7e]*")

# Raw characters that may not appear at all: controls, space, DEL, non-ASCII (must arrive
# percent-encoded), '\' (a separator for some upstreams) and '#' (no fragment in a request-target).
_RAW_FORBIDDEN = re.compile(r"[^\x21\x22\x24-\x5b\x5d-\x7e]")

_SLASHES = re.compile(r"//+")


def _escape_table() -> tuple[dict[str, str], frozenset[str]]:
    """Map every two-hex-digit escape (any case) to its normal form, once, at import.

    Unreserved characters decode to themselves; every other byte stays encoded with uppercase hex
    (RFC 3986 6.2.2.1-2). Controls, DEL and backslash are refused even when encoded: decoded
    later by an upstream they are the same attacks as their raw forms.
    """
    table: dict[str, str] = {}
    forbidden: set[str] = set()
    for byte in range(256):
        char = chr(byte)
        hex_ = f"{byte:02x}"
        spellings = {h + lo for h in {hex_[0], hex_[0].upper()} for lo in {hex_[1], hex_[1].upper()}}
        if byte < 0x20 or byte == 0x7F or char == "\\":
            forbidden.update(spellings)
        elif char in _UNRESERVED:
            table.update(dict.fromkeys(spellings, char))
        else:
            table.update(dict.fromkeys(spellings, f"%{byte:02X}"))
    return table, frozenset(forbidden)


_ESCAPES, _FORBIDDEN_ESCAPES = _escape_table()


def normalize_path(raw: str) -> str:
    """Return the one form of ``raw`` that is matched, authorised and forwarded.

    ``raw`` is the path part of the request-target (no query), as the server decoded it from
    latin-1. Raises :class:`PathError` for anything that has no safe normal form.
    """
    if _CLEAN.fullmatch(raw) is not None and "//" not in raw and "/." not in raw:
        return raw
    if raw[:1] != "/":
        raise PathError("path must start with '/'")
    bad = _RAW_FORBIDDEN.search(raw)
    if bad is not None:
        raise PathError(f"character {bad.group()!r} is not allowed in a path")
    path = raw
    if "%" in path:
        # Decode exactly once: a decoded byte is never re-examined, so %252e stays %252e.
        parts = path.split("%")
        out = [parts[0]]
        for part in parts[1:]:
            pair = part[:2]
            normal = _ESCAPES.get(pair)
            if normal is None:
                if pair in _FORBIDDEN_ESCAPES:
                    raise PathError(f"encoded control character or backslash %{pair} in path")
                raise PathError(f"invalid percent-escape %{pair}")
            out.append(normal)
            out.append(part[2:])
        path = "".join(out)
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path:
        path = _remove_dot_segments(path)
    return path


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on a path that starts with '/' and has no empty segment but the last.

    Unlike the RFC, climbing above the root is an error rather than being clamped: a client that
    sends ``/../admin`` is probing, and no honest client needs it.
    """
    segs = path.split("/")
    out: list[str] = []
    last = len(segs) - 1
    for k in range(1, len(segs)):
        seg = segs[k]
        if seg == ".":
            if k == last:
                out.append("")
        elif seg == "..":
            if not out:
                raise PathError("path climbs above the root")
            out.pop()
            if k == last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


# ---------------------------------------------------------------------------------------------
# Patterns and the route table
# ---------------------------------------------------------------------------------------------

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PATTERN_FORBIDDEN = re.compile(r"[^\x21\x22\x24-\x3e\x40-\x5b\x5d-\x7e]")


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """What the table needs of a route; its index in the list is the route id."""

    pattern: str
    methods: frozenset[str] | None


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid route path, or None.

    Literal segments must already be in normal form: requests are matched after normalisation,
    so a pattern such as ``/%7euser`` or ``/a/../b`` could never match anything.
    """
    if not pattern.startswith("/"):
        return "must start with '/'"
    bad = _PATTERN_FORBIDDEN.search(pattern)
    if bad is not None:
        return f"character {bad.group()!r} is not allowed"
    segs = pattern[1:].split("/")
    last = len(segs) - 1
    names: set[str] = set()
    for k, seg in enumerate(segs):
        if seg == "":
            if k != last:
                return "empty segment ('//')"
        elif seg == "*" or "*" in seg:
            if k != last or seg != "*":
                return "'*' is only allowed as the whole last segment"
        elif seg in (".", ".."):
            return "'.' and '..' segments are not allowed"
        elif "{" in seg or "}" in seg:
            param = _PARAM.fullmatch(seg)
            if param is None:
                return (
                    f"segment {seg!r}: a parameter is a whole segment {{name}}, name [A-Za-z_][A-Za-z0-9_]*"
                )
            name = param.group(1)
            if name in names:
                return f"duplicate parameter {{{name}}}"
            names.add(name)
        else:
            try:
                normal = normalize_path("/" + seg)
            except PathError as exc:
                return f"segment {seg!r}: {exc}"
            if normal != "/" + seg:
                return f"segment {seg!r} is not in normal form (requests are matched as {normal[1:]!r})"
    return None


def _shape(pattern: str) -> str:
    return _PARAM.sub("{}", pattern)


def spec_errors(specs: Sequence[RouteSpec]) -> list[str]:
    """Every problem with ``specs`` as a whole: invalid patterns, and two routes that one request
    could select equally (same pattern up to param names, overlapping methods; None is all)."""
    errors: list[str] = []
    seen: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        problem = pattern_error(spec.pattern)
        if problem is not None:
            errors.append(f"route {index} {spec.pattern!r}: {problem}")
            continue
        shape = _shape(spec.pattern)
        for other in seen.get(shape, ()):
            theirs = specs[other].methods
            if spec.methods is None or theirs is None or spec.methods & theirs:
                errors.append(
                    f"route {index} {spec.pattern!r} overlaps route {other} {specs[other].pattern!r}: "
                    "same pattern and overlapping methods"
                )
                break
        seen.setdefault(shape, []).append(index)
    return errors


class Trie(Protocol):
    """What RouteTable needs; both ``_speedups.RouteTrie`` and ``_speedups_py.RouteTrie`` fit."""

    def add(self, pattern: str, methods: frozenset[str] | None, route_id: int) -> None: ...

    def match(self, method: str, path: str) -> tuple[int, dict[str, str] | None, int]: ...

    def allowed_methods(self, path: str) -> list[str]: ...


class RouteTable:
    """Routes compiled once into a trie; swapping configs swaps the whole table.

    ``match`` returns ``(route_id, params, tail_start)``: ``route_id`` indexes ``specs``, -1 means
    404 and -2 means 405 (then ``allowed(path)`` is the Allow header). ``tail_start`` feeds
    :func:`rewrite_path`.
    """

    __slots__ = ("specs", "_trie")

    def __init__(self, specs: Sequence[RouteSpec], trie_factory: Callable[[], Trie] | None = None) -> None:
        """Raise ValueError if the routes are invalid (config validation should have said so)."""
        errors = spec_errors(specs)
        if errors:
            raise ValueError("; ".join(errors))
        self.specs = tuple(specs)
        trie = RouteTrie() if trie_factory is None else trie_factory()
        for route_id, spec in enumerate(self.specs):
            trie.add(spec.pattern, spec.methods, route_id)
        self._trie: Trie = trie

    def match(self, method: str, path: str) -> tuple[int, dict[str, str] | None, int]:
        return self._trie.match(method, path)

    def allowed(self, path: str) -> list[str]:
        return self._trie.allowed_methods(path)


def rewrite_path(path: str, tail_start: int, replacement: str) -> str:
    """The upstream path of a ``strip_prefix`` (replacement "") or ``rewrite`` route.

    The literal prefix before ``*`` is swapped for ``replacement``; the tail, which starts with
    '/' or is empty, is kept byte for byte, so normalisation is never undone.
    """
    return replacement.rstrip("/") + path[tail_start:] or "/"
