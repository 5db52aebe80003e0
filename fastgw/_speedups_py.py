"""Pure-Python twin of ``fastgw._speedups``.

It is the reference: the extension must return exactly what this module returns, for every
input, so the two are kept line-for-line comparable (same algorithms, same float operations in
the same order). It runs wherever the extension is not built (PyPy, no compiler,
``FASTGW_NO_EXTENSIONS=1``).
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable
from typing import Protocol

from ._chunked_py import LAST_CHUNK, ChunkedDecoder, encode_chunk
from ._http_py import HttpParseError, RequestHead, ResponseHead, parse_request_head, parse_response_head

_hmac_new: Callable[..., _Mac] | None
try:
    # The C HMAC object; hmac.new would wrap it in a Python class whose copy/update/digest cost
    # a Python call each.
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # no OpenSSL, or not CPython
    _hmac_new = None

__all__ = [
    "LAST_CHUNK",
    "BucketTable",
    "ChunkedDecoder",
    "HttpParseError",
    "RequestHead",
    "ResponseHead",
    "RouteTrie",
    "encode_chunk",
    "parse_request_head",
    "parse_response_head",
    "sign_v2",
    "webhook_signature",
]


# ---------------------------------------------------------------------------------------------
# Route trie
# ---------------------------------------------------------------------------------------------


class _Route:
    """One route as stored in the trie.

    Param names live here, not on the trie node, because routes sharing a node may name the same
    segment differently (``/a/{id}`` GET and ``/a/{name}`` POST). ``indexes`` are positions in
    ``path.split("/")``, so extracting params needs no bookkeeping during the search.
    """

    __slots__ = ("route_id", "names", "indexes")

    def __init__(self, route_id: int, names: tuple[str, ...], indexes: tuple[int, ...]) -> None:
        self.route_id = route_id
        self.names = names
        self.indexes = indexes


class _Endpoint:
    """The routes that end at one trie position (exactly there, or as its ``*`` tail)."""

    __slots__ = ("by_method", "any_route")

    def __init__(self) -> None:
        self.by_method: dict[str, _Route] = {}
        self.any_route: _Route | None = None

    def add(self, methods: frozenset[str] | None, route: _Route) -> None:
        # First added wins on overlap: overlapping routes are a config error caught earlier, and
        # this keeps the choice deterministic if one slips through.
        if methods is None:
            if self.any_route is None:
                self.any_route = route
            return
        for method in sorted(methods):
            if method not in self.by_method:
                self.by_method[method] = route

    def pick(self, method: str) -> _Route | None:
        route = self.by_method.get(method)
        if route is None:
            return self.any_route
        return route


class _Node:
    __slots__ = ("literals", "param", "exact", "wild")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.exact: _Endpoint | None = None
        self.wild: _Endpoint | None = None


def _search(node: _Node, segs: list[str], i: int, pos: int, method: str, found: list[int]) -> _Route | None:
    """Depth-first, most specific branch first; backtracks when a branch has no route for method.

    ``pos`` is the index in the path where the unconsumed part starts (the ``/`` before
    ``segs[i]``), which is the wildcard tail start. ``found[0]`` becomes the tail start of the
    result; ``found[1]`` is set to 1 when some pattern matched the path but not the method.
    """
    if i == len(segs):
        if node.exact is not None:
            route = node.exact.pick(method)
            if route is not None:
                found[0] = pos
                return route
            found[1] = 1
    else:
        seg = segs[i]
        if node.literals:
            child = node.literals.get(seg)
            if child is not None:
                route = _search(child, segs, i + 1, pos + 1 + len(seg), method, found)
                if route is not None:
                    return route
        if node.param is not None and len(seg) > 0:
            route = _search(node.param, segs, i + 1, pos + 1 + len(seg), method, found)
            if route is not None:
                return route
    if node.wild is not None:
        route = node.wild.pick(method)
        if route is not None:
            found[0] = pos
            return route
        found[1] = 1
    return None


def _collect(node: _Node, segs: list[str], i: int, out: set[str]) -> None:
    """Visit every matching branch (no short-cut): the Allow header names all of them."""
    if i == len(segs):
        if node.exact is not None:
            out.update(node.exact.by_method)
    else:
        seg = segs[i]
        if node.literals:
            child = node.literals.get(seg)
            if child is not None:
                _collect(child, segs, i + 1, out)
        if node.param is not None and len(seg) > 0:
            _collect(node.param, segs, i + 1, out)
    if node.wild is not None:
        out.update(node.wild.by_method)


class RouteTrie:
    """Segment trie: literal children in a dict, one ``{param}`` child, one ``*`` endpoint."""

    __slots__ = ("_root",)

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, pattern: str, methods: frozenset[str] | None, route_id: int) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        parts = pattern.split("/")
        node = self._root
        names: list[str] = []
        indexes: list[int] = []
        last = len(parts) - 1
        for k in range(1, len(parts)):
            part = parts[k]
            if part == "*":
                if k != last:
                    raise ValueError(f"'*' must be the last segment: {pattern!r}")
                break
            if len(part) > 2 and part[0] == "{" and part[-1] == "}":
                names.append(part[1:-1])
                indexes.append(k)
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                child = node.literals.get(part)
                if child is None:
                    child = _Node()
                    node.literals[part] = child
                node = child
        route = _Route(route_id, tuple(names), tuple(indexes))
        if parts[last] == "*":
            if node.wild is None:
                node.wild = _Endpoint()
            node.wild.add(methods, route)
        else:
            if node.exact is None:
                node.exact = _Endpoint()
            node.exact.add(methods, route)

    def match(self, method: str, path: str) -> tuple[int, dict[str, str] | None, int]:
        segs = path.split("/")
        found = [0, 0]
        route = _search(self._root, segs, 1, 0, method, found)
        if route is None:
            if found[1]:
                return (-2, None, 0)
            return (-1, None, 0)
        if not route.names:
            return (route.route_id, None, found[0])
        params = {}
        for k in range(len(route.names)):
            params[route.names[k]] = segs[route.indexes[k]]
        return (route.route_id, params, found[0])

    def allowed_methods(self, path: str) -> list[str]:
        out: set[str] = set()
        _collect(self._root, path.split("/"), 1, out)
        return sorted(out)


# ---------------------------------------------------------------------------------------------
# Signing
# ---------------------------------------------------------------------------------------------


class _Mac(Protocol):
    def copy(self) -> _Mac: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


def _new_mac(secret: bytes) -> _Mac:
    if _hmac_new is not None:
        return _hmac_new(secret, digestmod="sha256")
    return hmac.new(secret, digestmod="sha256")


# Keying an HMAC costs about as much as hashing a short message (OpenSSL context setup plus the
# two padded-key blocks), and a gateway signs with a handful of secrets: key once per secret,
# copy the keyed state per message. Bounded, in case a caller cycles through many secrets.
_KEYED_MAX = 64
_keyed: dict[bytes, _Mac] = {}


def _keyed_mac(secret: bytes) -> _Mac:
    if type(secret) is not bytes:
        secret = bytes(memoryview(secret))
    mac = _keyed.get(secret)
    if mac is None:
        if len(_keyed) >= _KEYED_MAX:
            _keyed.clear()
        mac = _new_mac(secret)
        _keyed[secret] = mac
    return mac.copy()


def sign_v2(
    secret: bytes,
    timestamp: str,
    method: str,
    path_and_query: str,
    user_id: str,
    role: str,
    app_key: str,
    plan: str,
    body: bytes,
) -> str:
    # join (not an f-string) so a non-str field is a TypeError, as in the extension, instead of
    # being formatted into the signed message.
    context = "|".join(("2", user_id, role, app_key, plan))
    head = "\n".join((timestamp, method, path_and_query, context, ""))
    mac = _keyed_mac(secret)
    mac.update(head.encode("utf-8"))
    mac.update(body)  # fed separately: a large body is never copied into one message buffer
    return "v2=" + mac.digest().hex()


def webhook_signature(secret: bytes, timestamp: str | None, body: bytes) -> str:
    mac = _keyed_mac(secret)
    if timestamp is not None:
        mac.update((timestamp + ".").encode("utf-8"))
    mac.update(body)
    return "sha256=" + mac.digest().hex()


# ---------------------------------------------------------------------------------------------
# Token buckets
# ---------------------------------------------------------------------------------------------

# Tokens (and seconds) closer than this to a boundary count as on it: refill arithmetic such as
# 0.3 - 0.2 = 0.09999999999999998 must not refuse a request that arrives exactly on time.
_EPS = 1e-6


class _Bucket:
    """One key's bucket, also a link in the table's LRU ring (most recent just before the head)."""

    __slots__ = ("key", "tokens", "last", "prev", "next")

    def __init__(self, key: str, tokens: float, last: float) -> None:
        self.key = key
        self.tokens = tokens
        self.last = last
        self.prev: _Bucket = self
        self.next: _Bucket = self


class BucketTable:
    """Token buckets of one policy, keyed by caller; memory bounded by ``max_keys``.

    A bucket that has refilled completely is indistinguishable from a missing one, so it can be
    dropped; that is what keeps the table small under normal load. Only when more than
    ``max_keys`` keys are all still draining does the least recently used one go (it then starts
    full again: the bound on memory wins over exactness for the idlest caller).
    """

    __slots__ = (
        "rate",
        "per",
        "burst",
        "max_keys",
        "_per_second",
        "_seconds_per_token",
        "_buckets",
        "_ring",
        "_sweep_every",
        "_since_sweep",
    )

    def __init__(self, rate: float, per: float, burst: float, max_keys: int = 100_000) -> None:
        rate = float(rate)
        per = float(per)
        burst = float(burst)
        if not (rate > 0.0 and math.isfinite(rate)):
            raise ValueError("rate must be a positive number")
        if not (per > 0.0 and math.isfinite(per)):
            raise ValueError("per must be a positive number")
        if not (burst >= 1.0 and math.isfinite(burst)):
            raise ValueError("burst must be at least 1")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.per = per
        self.burst = burst
        self.max_keys = int(max_keys)
        self._per_second = rate / per
        self._seconds_per_token = per / rate
        self._buckets: dict[str, _Bucket] = {}
        self._ring = _Bucket("", 0.0, 0.0)
        # A full sweep costs O(len); running it at most once per max_keys/8 new keys keeps the
        # cost per take O(1) amortised even when every key is still draining (a key flood).
        self._sweep_every = max(1, self.max_keys // 8)
        self._since_sweep = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _peek(self, key: str) -> tuple[float, float] | None:
        """(tokens, last) of a key, for tests that hold the two implementations to the same bits."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return None
        return (bucket.tokens, bucket.last)

    def take(self, key: str, now: float) -> tuple[bool, int, int, int]:
        ring = self._ring
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(key, self.burst, now)
            self._buckets[key] = bucket
            self._since_sweep += 1
            relink = True
        else:
            elapsed = now - bucket.last
            if elapsed > 0.0:
                tokens = bucket.tokens + elapsed * self._per_second
                if tokens > self.burst:
                    tokens = self.burst
                bucket.tokens = tokens
                bucket.last = now
            # The hot case is one key hammering: it is already the most recent, skip the relink.
            relink = bucket.next is not ring
            if relink:
                bucket.prev.next = bucket.next
                bucket.next.prev = bucket.prev
        if relink:
            tail = ring.prev
            bucket.prev = tail
            bucket.next = ring
            tail.next = bucket
            ring.prev = bucket
        tokens = bucket.tokens
        if tokens >= 1.0 - _EPS:
            tokens = tokens - 1.0
            if tokens < 0.0:
                tokens = 0.0
            bucket.tokens = tokens
            allowed = True
            retry_after = 0
        else:
            allowed = False
            retry_after = math.ceil((1.0 - tokens) * self._seconds_per_token - _EPS)
            if retry_after < 1:
                retry_after = 1
        remaining = math.floor(tokens + _EPS)
        reset = math.ceil((self.burst - tokens) * self._seconds_per_token - _EPS)
        if reset < 0:
            reset = 0
        # After the take, so the caller's own (just drained) bucket is never swept as full.
        if len(self._buckets) > self.max_keys:
            self._shrink(now)
        return (allowed, remaining, retry_after, reset)

    def _shrink(self, now: float) -> None:
        ring = self._ring
        buckets = self._buckets
        if self._since_sweep >= self._sweep_every:
            self._since_sweep = 0
            bucket = ring.next
            while bucket is not ring:
                nxt = bucket.next
                # Exactly full (no epsilon): a bucket dropped here must be identical to the fresh
                # one that replaces it if the key comes back.
                if bucket.tokens + (now - bucket.last) * self._per_second >= self.burst:
                    bucket.prev.next = nxt
                    nxt.prev = bucket.prev
                    del buckets[bucket.key]
                bucket = nxt
        while len(buckets) > self.max_keys:
            bucket = ring.next
            ring.next = bucket.next
            bucket.next.prev = ring
            del buckets[bucket.key]
