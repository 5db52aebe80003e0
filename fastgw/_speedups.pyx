# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: extra_compile_args = -ffp-contract=off
"""Compiled hot path: route trie, HMAC-v2 message signing, token buckets, HTTP/1.1 codec.

``fastgw._speedups_py`` is the reference; this module must return exactly what it returns, so
the two are kept line-for-line comparable. ``-ffp-contract=off`` stops the C compiler fusing
``a + b * c`` into one FMA (the default on arm64, and on x86-64 with ``-march`` >= haswell): a
fused result can differ in the last bit from Python's two roundings, and the bucket results must
be bit-identical to the twin's.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.long cimport PyLong_FromDouble
from cpython.object cimport PyObject
from cpython.unicode cimport Py_UCS1, PyUnicode_1BYTE_DATA, PyUnicode_AsUTF8AndSize, PyUnicode_New
from libc.math cimport ceil, floor, isfinite
from libc.string cimport memcpy

import hmac as _hmac

try:
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # CPython built without OpenSSL
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


cdef str _prefixed_hex(const char* prefix, Py_ssize_t prefix_len, bytes digest):
    """``prefix + digest.hex()`` written straight into one new str (no hex temporary)."""
    cdef const char* hexdigits = b"0123456789abcdef"
    cdef Py_ssize_t n = PyBytes_GET_SIZE(digest)
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(digest)
    cdef str out = PyUnicode_New(prefix_len + 2 * n, 127)
    cdef Py_UCS1* dst = PyUnicode_1BYTE_DATA(out)
    cdef Py_ssize_t k
    cdef unsigned char byte
    memcpy(dst, prefix, prefix_len)
    dst += prefix_len
    for k in range(n):
        byte = src[k]
        dst[0] = hexdigits[byte >> 4]
        dst[1] = hexdigits[byte & 15]
        dst += 2
    return out


cdef object _new_mac(bytes secret):
    if _hmac_new is not None:
        return _hmac_new(secret, digestmod="sha256")
    return _hmac.new(secret, digestmod="sha256")


# See _speedups_py._keyed_mac: key once per secret, copy the keyed state per message.
cdef Py_ssize_t _KEYED_MAX = 64
cdef dict _keyed = {}


cdef object _keyed_mac(object secret):
    if type(secret) is not bytes:
        secret = bytes(memoryview(secret))
    cdef PyObject* found = PyDict_GetItem(_keyed, secret)
    if found != NULL:
        return (<object>found).copy()
    if len(_keyed) >= _KEYED_MAX:
        _keyed.clear()
    mac = _new_mac(secret)
    _keyed[secret] = mac
    return mac.copy()


def sign_v2(secret, timestamp, method, path_and_query, user_id, role, app_key, plan, body):
    # The head is written once into a single bytes object from the UTF-8 views of the fields
    # (borrowed, free for ASCII str) instead of join + join + encode. The fields are untyped so
    # str subclasses pass as in the twin; anything else is a TypeError from
    # PyUnicode_AsUTF8AndSize.
    cdef const char* parts[7]
    cdef Py_ssize_t sizes[7]
    parts[0] = PyUnicode_AsUTF8AndSize(timestamp, &sizes[0])
    parts[1] = PyUnicode_AsUTF8AndSize(method, &sizes[1])
    parts[2] = PyUnicode_AsUTF8AndSize(path_and_query, &sizes[2])
    parts[3] = PyUnicode_AsUTF8AndSize(user_id, &sizes[3])
    parts[4] = PyUnicode_AsUTF8AndSize(role, &sizes[4])
    parts[5] = PyUnicode_AsUTF8AndSize(app_key, &sizes[5])
    parts[6] = PyUnicode_AsUTF8AndSize(plan, &sizes[6])
    # separators: "\n" "\n" "\n2|" "|" "|" "|" "\n" = 9 bytes
    cdef Py_ssize_t total = 9
    cdef Py_ssize_t k
    for k in range(7):
        total += sizes[k]
    cdef bytes head = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(head)
    memcpy(p, parts[0], sizes[0]); p += sizes[0]
    p[0] = b"\n"; p += 1
    memcpy(p, parts[1], sizes[1]); p += sizes[1]
    p[0] = b"\n"; p += 1
    memcpy(p, parts[2], sizes[2]); p += sizes[2]
    p[0] = b"\n"; p[1] = b"2"; p[2] = b"|"; p += 3
    memcpy(p, parts[3], sizes[3]); p += sizes[3]
    p[0] = b"|"; p += 1
    memcpy(p, parts[4], sizes[4]); p += sizes[4]
    p[0] = b"|"; p += 1
    memcpy(p, parts[5], sizes[5]); p += sizes[5]
    p[0] = b"|"; p += 1
    memcpy(p, parts[6], sizes[6]); p += sizes[6]
    p[0] = b"\n"
    mac = _keyed_mac(secret)
    mac.update(head)
    mac.update(body)  # fed separately: a large body is never copied into one message buffer
    return _prefixed_hex(b"v2=", 3, mac.digest())


def webhook_signature(secret, timestamp, body):
    mac = _keyed_mac(secret)
    if timestamp is not None:
        mac.update((timestamp + ".").encode("utf-8"))
    mac.update(body)
    return _prefixed_hex(b"sha256=", 7, mac.digest())


# ---------------------------------------------------------------------------------------------
# Token buckets
# ---------------------------------------------------------------------------------------------

# See _speedups_py._EPS.
cdef double _EPS = 1e-6


cdef class _Bucket:
    """One key's bucket, also a link in the table's LRU ring (most recent just before the head)."""

    cdef object key
    cdef double tokens
    cdef double last
    cdef _Bucket prev
    cdef _Bucket next


cdef _Bucket _new_bucket(object key, double tokens, double last):
    # __new__ skips the Python-level argument parsing of a constructor call.
    cdef _Bucket bucket = _Bucket.__new__(_Bucket)
    bucket.key = key
    bucket.tokens = tokens
    bucket.last = last
    bucket.prev = bucket
    bucket.next = bucket
    return bucket


cdef class BucketTable:
    """Token buckets of one policy, keyed by caller; memory bounded by ``max_keys``.

    See ``_speedups_py.BucketTable`` for the eviction rules; the LRU order is an intrusive ring
    through the buckets, so a take allocates nothing but its result tuple.
    """

    cdef readonly double rate
    cdef readonly double per
    cdef readonly double burst
    cdef readonly Py_ssize_t max_keys
    cdef double _per_second
    cdef double _seconds_per_token
    cdef dict _buckets
    cdef _Bucket _ring
    cdef Py_ssize_t _sweep_every
    cdef Py_ssize_t _since_sweep

    def __init__(self, double rate, double per, double burst, Py_ssize_t max_keys=100_000):
        if not (rate > 0.0 and isfinite(rate)):
            raise ValueError("rate must be a positive number")
        if not (per > 0.0 and isfinite(per)):
            raise ValueError("per must be a positive number")
        if not (burst >= 1.0 and isfinite(burst)):
            raise ValueError("burst must be at least 1")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.per = per
        self.burst = burst
        self.max_keys = max_keys
        self._per_second = rate / per
        self._seconds_per_token = per / rate
        self._buckets = {}
        self._ring = _new_bucket("", 0.0, 0.0)
        self._sweep_every = max(1, self.max_keys // 8)
        self._since_sweep = 0

    def __len__(self):
        return len(self._buckets)

    def _peek(self, key):
        """(tokens, last) of a key, for tests that hold the two implementations to the same bits."""
        cdef _Bucket bucket = self._buckets.get(key)
        if bucket is None:
            return None
        return (bucket.tokens, bucket.last)

    def take(self, key, double now):
        cdef _Bucket ring = self._ring
        cdef _Bucket bucket
        cdef _Bucket tail
        cdef double elapsed
        cdef double tokens
        cdef double retry_after
        cdef double reset
        cdef double remaining
        cdef bint allowed
        cdef bint relink
        cdef PyObject* found = PyDict_GetItem(self._buckets, key)
        if found == NULL:
            bucket = _new_bucket(key, self.burst, now)
            self._buckets[key] = bucket
            self._since_sweep += 1
            relink = True
        else:
            bucket = <_Bucket>found
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
            retry_after = 0.0
        else:
            allowed = False
            retry_after = ceil((1.0 - tokens) * self._seconds_per_token - _EPS)
            if retry_after < 1.0:
                retry_after = 1.0
        remaining = floor(tokens + _EPS)
        reset = ceil((self.burst - tokens) * self._seconds_per_token - _EPS)
        if reset < 0.0:
            reset = 0.0
        # After the take, so the caller's own (just drained) bucket is never swept as full.
        if len(self._buckets) > self.max_keys:
            self._shrink(now)
        return (
            allowed,
            PyLong_FromDouble(remaining),
            PyLong_FromDouble(retry_after),
            PyLong_FromDouble(reset),
        )

    cdef void _shrink(self, double now) except *:
        cdef _Bucket ring = self._ring
        cdef dict buckets = self._buckets
        cdef _Bucket bucket
        cdef _Bucket nxt
        if self._since_sweep >= self._sweep_every:
            self._since_sweep = 0
            bucket = ring.next
            while bucket is not ring:
                nxt = bucket.next
                # Exactly full (no epsilon), as in the twin.
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


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 codec
# ---------------------------------------------------------------------------------------------

include "_trie.pxi"
include "_http_lex.pxi"
include "_http.pxi"
include "_chunked.pxi"
