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
from ._trie_py import RouteTrie

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
