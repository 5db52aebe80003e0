# HTTP/1.1 message heads, included into _speedups.pyx. The reference is fastgw/_http_py.py: the same
# checks in the same order, so both give the same result or the same HttpParseError (status and
# message) for every input and every split of it. See its docstring for the order of the checks.

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_Check, PyBytes_CheckExact
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memchr, memcmp

cdef enum:
    _MAX_CL_DIGITS = 18

BARE_EOL = "Bare CR or LF in message head"
REQUEST_TOO_LARGE = "Request head too large"
RESPONSE_TOO_LARGE = "Response head too large"
BAD_REQUEST_LINE = "Malformed request line"
BAD_METHOD = "Invalid method"
BAD_TARGET = "Invalid request target"
BAD_VERSION = "Unsupported HTTP version"
BAD_STATUS_LINE = "Malformed status line"
FOLDED = "Folded or indented header line"
BAD_LINE = "Malformed header line"
BAD_NAME = "Invalid header name"
BAD_VALUE = "Invalid header value"
BAD_CL = "Invalid Content-Length"
REPEATED_CL = "Repeated Content-Length"
CONFLICTING_CL = "Conflicting Content-Length"
REPEATED_TE = "Repeated Transfer-Encoding"
TE_ON_10 = "Transfer-Encoding on HTTP/1.0"
BAD_TE = "Unsupported Transfer-Encoding"
CL_AND_TE = "Both Content-Length and Transfer-Encoding"
REPEATED_HOST = "Repeated Host"
MISSING_HOST = "Missing Host"
BAD_HOST = "Invalid Host"


class HttpParseError(ValueError):
    """A head or chunk the gateway refuses; ``status`` is the answer (400 or 431).

    ``message`` is short fixed text that never echoes input bytes.
    """

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


# Byte classes, one bit each.
cdef enum:
    _C_TCHAR = 1
    _C_VALUE = 2  # field-value bytes: VCHAR, obs-text, SP, HTAB
    _C_TARGET = 4  # visible ASCII
    _C_DIGIT = 8
    _C_HEX = 16
    _C_REGNAME = 32  # RFC 3986 reg-name without the comma
    _C_IPV6 = 64

cdef unsigned char _CLS[256]


cdef void _init_classes():
    cdef int c
    cdef bytes alpha = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    cdef bytes digits = b"0123456789"
    for c in range(256):
        _CLS[c] = 0
    for c in b"!#$%&'*+-.^_`|~" + digits + alpha:
        _CLS[c] |= _C_TCHAR
    for c in range(0x20, 0x7F):
        _CLS[c] |= _C_VALUE
    for c in range(0x80, 0x100):
        _CLS[c] |= _C_VALUE
    _CLS[9] |= _C_VALUE
    for c in range(0x21, 0x7F):
        _CLS[c] |= _C_TARGET
    for c in digits:
        _CLS[c] |= _C_DIGIT
    for c in b"0123456789abcdefABCDEF":
        _CLS[c] |= _C_HEX
    for c in digits + alpha + b"-._~%!$&'()*+;=":
        _CLS[c] |= _C_REGNAME
    for c in b"0123456789abcdefABCDEF:.":
        _CLS[c] |= _C_IPV6


_init_classes()


cdef inline bint _is(unsigned char c, unsigned char cls) noexcept nogil:
    return (_CLS[c] & cls) != 0


cdef inline bint _ows(unsigned char c) noexcept nogil:
    return c == 32 or c == 9


cdef inline unsigned char _lower(unsigned char c) noexcept nogil:
    return c | 0x20 if 65 <= c <= 90 else c


cdef bint _lower_is(const unsigned char* s, Py_ssize_t n, const char* lit, Py_ssize_t lit_n) noexcept nogil:
    """``s[:n].lower() == lit`` (``lit`` lower-case)."""
    cdef Py_ssize_t k
    if n != lit_n:
        return False
    for k in range(n):
        if _lower(s[k]) != <unsigned char>lit[k]:
            return False
    return True


cdef bytes _lowered(const unsigned char* s, Py_ssize_t n):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* q = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t k
    for k in range(n):
        q[k] = _lower(s[k])
    return out


cdef inline bytes _slice(const unsigned char* s, Py_ssize_t n):
    return PyBytes_FromStringAndSize(<const char*>s, n)


cdef const unsigned char* _buffer(object buf, Py_ssize_t* size) except NULL:
    if PyBytes_Check(buf):
        size[0] = PyBytes_GET_SIZE(buf)
        return <const unsigned char*>PyBytes_AS_STRING(buf)
    if PyByteArray_Check(buf):
        size[0] = PyByteArray_GET_SIZE(buf)
        return <const unsigned char*>PyByteArray_AS_STRING(buf)
    raise TypeError("expected bytes or bytearray")


cdef Py_ssize_t _first_line(
    const unsigned char* p, Py_ssize_t size, Py_ssize_t max_size, str too_large, Py_ssize_t* start_out
) except -2:
    """Index of the CR ending the first line (its start in ``start_out``), -1 while incomplete."""
    cdef Py_ssize_t limit = size if size < max_size else max_size
    cdef Py_ssize_t start = 0
    cdef Py_ssize_t i
    while start + 1 < limit and p[start] == 13 and p[start + 1] == 10:
        start += 2
    i = start
    while i < limit and p[i] != 13 and p[i] != 10:
        i += 1
    if i == limit:
        if size > max_size:
            raise HttpParseError(431, too_large)
        return -1
    if p[i] == 10:
        raise HttpParseError(400, BARE_EOL)
    if i + 1 == size:
        return -1
    if p[i + 1] != 10:
        raise HttpParseError(400, BARE_EOL)
    start_out[0] = start
    return i


cdef Py_ssize_t _head_end(
    const unsigned char* p, Py_ssize_t size, Py_ssize_t line_end, Py_ssize_t max_size, str too_large
) except -2:
    """Index of the CRLFCRLF ending the head, -1 while incomplete; refuses a bare CR or LF."""
    cdef Py_ssize_t limit = size if size < max_size else max_size
    cdef Py_ssize_t i = line_end
    cdef unsigned char c
    while i < limit:
        c = p[i]
        if c == 13:
            if i + 1 == size:
                break  # its LF may still come
            if p[i + 1] != 10:
                raise HttpParseError(400, BARE_EOL)
            if i + 3 < limit and p[i + 2] == 13 and p[i + 3] == 10:
                return i
            i += 2
            continue
        if c == 10:
            raise HttpParseError(400, BARE_EOL)
        i += 1
    if size > max_size:
        raise HttpParseError(431, too_large)
    return -1


cdef Py_ssize_t _header_line(
    const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t* colon_out, Py_ssize_t* vs_out,
    Py_ssize_t* ve_out
) except -1:
    """Check the header line at ``pos``: fold, colon, name, value. Returns the line's end."""
    cdef const unsigned char* cr = <const unsigned char*>memchr(p + pos, 13, end - pos)
    cdef Py_ssize_t le = end if cr == NULL else cr - p
    cdef const unsigned char* found
    cdef Py_ssize_t colon, k, vs, ve
    if p[pos] == 32 or p[pos] == 9:
        raise HttpParseError(400, FOLDED)
    found = <const unsigned char*>memchr(p + pos, 58, le - pos)
    if found == NULL or found == p + pos:
        raise HttpParseError(400, BAD_LINE)
    colon = found - p
    for k in range(pos, colon):
        if not _is(p[k], _C_TCHAR):
            raise HttpParseError(400, BAD_NAME)
    vs = colon + 1
    ve = le
    while vs < ve and _ows(p[vs]):
        vs += 1
    while ve > vs and _ows(p[ve - 1]):
        ve -= 1
    for k in range(vs, ve):
        if not _is(p[k], _C_VALUE):
            raise HttpParseError(400, BAD_VALUE)
    colon_out[0] = colon
    vs_out[0] = vs
    ve_out[0] = ve
    return le


cdef long long _content_length(const unsigned char* s, Py_ssize_t n) except -1:
    cdef long long value = 0
    cdef Py_ssize_t k
    if n == 0 or n > _MAX_CL_DIGITS:
        raise HttpParseError(400, BAD_CL)
    for k in range(n):
        if not _is(s[k], _C_DIGIT):
            raise HttpParseError(400, BAD_CL)
        value = value * 10 + (s[k] - 48)
    return value


cdef int _tokens(const unsigned char* s, Py_ssize_t n, list into) except -1:
    """Append the lower-cased comma-separated tokens; bit 1: "close" seen, bit 2: "keep-alive"."""
    cdef Py_ssize_t a = 0
    cdef Py_ssize_t b, x, y
    cdef int seen = 0
    while a <= n:
        b = a
        while b < n and s[b] != 44:
            b += 1
        x = a
        y = b
        while x < y and _ows(s[x]):
            x += 1
        while y > x and _ows(s[y - 1]):
            y -= 1
        if y > x:
            into.append(_lowered(s + x, y - x))
            if _lower_is(s + x, y - x, b"close", 5):
                seen |= 1
            elif _lower_is(s + x, y - x, b"keep-alive", 10):
                seen |= 2
        a = b + 1
    return seen


cdef bint _valid_port(const unsigned char* s, Py_ssize_t n) noexcept:
    cdef long value = 0
    cdef Py_ssize_t k
    if n == 0 or n > 5:
        return False
    for k in range(n):
        if not _is(s[k], _C_DIGIT):
            return False
        value = value * 10 + (s[k] - 48)
    return 1 <= value <= 65535


cdef bint _valid_host(const unsigned char* s, Py_ssize_t n) noexcept:
    """An authority ``host[:port]``: reg-name, IPv4 or [IPv6]; no userinfo, spaces or commas."""
    cdef Py_ssize_t close, colon, k
    cdef bint has_colon = False
    if n == 0:
        return False
    if s[0] == 91:  # "["
        close = 1
        while close < n and s[close] != 93:
            close += 1
        if close == n:
            return False
        for k in range(1, close):
            if not _is(s[k], _C_IPV6):
                return False
            if s[k] == 58:
                has_colon = True
        if not has_colon:
            return False
        if close + 1 == n:
            return True
        return s[close + 1] == 58 and _valid_port(s + close + 2, n - close - 2)
    colon = 0
    while colon < n and s[colon] != 58:
        colon += 1
    if colon == 0:
        return False
    k = 0
    while k < colon:
        if not _is(s[k], _C_REGNAME):
            return False
        k += 1
    k = 0
    while k < colon:
        if s[k] == 37:  # "%" HEXDIG HEXDIG
            if k + 2 >= colon or not _is(s[k + 1], _C_HEX) or not _is(s[k + 2], _C_HEX):
                return False
            k += 3
        else:
            k += 1
    return colon == n or _valid_port(s + colon + 1, n - colon - 1)


cdef class RequestHead:
    """One parsed request head. Header names are lower-cased; values have OWS stripped."""

    cdef readonly str method
    cdef readonly str target
    cdef readonly int version
    cdef readonly list headers
    cdef readonly long long content_length
    cdef readonly bint chunked
    cdef readonly bint keep_alive
    cdef readonly tuple connection
    cdef readonly object upgrade
    cdef readonly object host

    def __init__(
        self, str method, str target, int version, list headers, long long content_length, bint chunked,
        bint keep_alive, tuple connection, upgrade, host
    ):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.connection = connection
        self.upgrade = upgrade
        self.host = host

    def __repr__(self):
        return f"<RequestHead {self.method} {self.target} version={self.version}>"


cdef class ResponseHead:
    """One parsed response head. Header names keep their case (they are relayed)."""

    cdef readonly int version
    cdef readonly int status
    cdef readonly bytes reason
    cdef readonly list headers
    cdef readonly long long content_length
    cdef readonly bint chunked
    cdef readonly bint keep_alive
    cdef readonly tuple connection
    cdef readonly object upgrade

    def __init__(
        self, int version, int status, bytes reason, list headers, long long content_length, bint chunked,
        bint keep_alive, tuple connection, upgrade
    ):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.connection = connection
        self.upgrade = upgrade

    def __repr__(self):
        return f"<ResponseHead {self.status} version={self.version}>"


cdef inline bytes _join_upgrade(object upgrade, const unsigned char* s, Py_ssize_t n):
    cdef bytes value = _lowered(s, n)
    return value if upgrade is None else upgrade + b", " + value


def parse_request_head(buf, Py_ssize_t max_size):
    """Parse one request head at the start of ``buf``: (head, bytes consumed) or None if partial.

    ``consumed`` includes the empty lines before the request line and the final CRLFCRLF.
    """
    cdef Py_ssize_t size, start, line_end, end, sp1, sp2, k, pos, colon, vs, ve, n
    cdef const unsigned char* p = _buffer(buf, &size)
    cdef const unsigned char* name
    cdef int version, seen = 0
    cdef long long content_length = -1
    cdef Py_ssize_t hosts = 0
    cdef Py_ssize_t te_start = -1, te_end = -1
    cdef bint chunked = False
    cdef bint keep_alive
    cdef list headers = []
    cdef list connection = []
    cdef bytes lname, value
    cdef object host = None, upgrade = None
    cdef RequestHead head
    if max_size < 1:
        raise ValueError("max_size must be positive")
    line_end = _first_line(p, size, max_size, REQUEST_TOO_LARGE, &start)
    if line_end < 0:
        return None
    sp1 = start
    while sp1 < line_end and p[sp1] != 32:
        sp1 += 1
    sp2 = sp1 + 1
    while sp2 < line_end and p[sp2] != 32:
        sp2 += 1
    if sp2 >= line_end:
        raise HttpParseError(400, BAD_REQUEST_LINE)
    for k in range(sp2 + 1, line_end):
        if p[k] == 32:
            raise HttpParseError(400, BAD_REQUEST_LINE)
    if sp1 == start:
        raise HttpParseError(400, BAD_METHOD)
    for k in range(start, sp1):
        if not _is(p[k], _C_TCHAR):
            raise HttpParseError(400, BAD_METHOD)
    if sp2 == sp1 + 1:
        raise HttpParseError(400, BAD_TARGET)
    for k in range(sp1 + 1, sp2):
        if not _is(p[k], _C_TARGET):
            raise HttpParseError(400, BAD_TARGET)
    if line_end - sp2 - 1 != 8 or memcmp(p + sp2 + 1, b"HTTP/1.", 7) != 0:
        raise HttpParseError(400, BAD_VERSION)
    if p[line_end - 1] == 49:
        version = 11
    elif p[line_end - 1] == 48:
        version = 10
    else:
        raise HttpParseError(400, BAD_VERSION)
    end = _head_end(p, size, line_end, max_size, REQUEST_TOO_LARGE)
    if end < 0:
        return None
    pos = line_end + 2
    while pos < end:
        k = _header_line(p, pos, end, &colon, &vs, &ve)
        name = p + pos
        n = colon - pos
        lname = _lowered(name, n)
        value = _slice(p + vs, ve - vs)
        if n == 14 and _lower_is(name, n, b"content-length", 14):
            if content_length >= 0:
                raise HttpParseError(400, REPEATED_CL)
            content_length = _content_length(p + vs, ve - vs)
        elif n == 17 and _lower_is(name, n, b"transfer-encoding", 17):
            if te_start >= 0:
                raise HttpParseError(400, REPEATED_TE)
            te_start = vs
            te_end = ve
        elif n == 4 and _lower_is(name, n, b"host", 4):
            hosts += 1
            host = value
        elif n == 10 and _lower_is(name, n, b"connection", 10):
            seen |= _tokens(p + vs, ve - vs, connection)
        elif n == 7 and _lower_is(name, n, b"upgrade", 7):
            upgrade = _join_upgrade(upgrade, p + vs, ve - vs)
        headers.append((lname, value))
        pos = k + 2
    if te_start >= 0:
        if version == 10:
            raise HttpParseError(400, TE_ON_10)
        if not _lower_is(p + te_start, te_end - te_start, b"chunked", 7):
            raise HttpParseError(400, BAD_TE)
        if content_length >= 0:
            raise HttpParseError(400, CL_AND_TE)
        chunked = True
    if hosts > 1:
        raise HttpParseError(400, REPEATED_HOST)
    if host is None:
        if version == 11:
            raise HttpParseError(400, MISSING_HOST)
    elif not _valid_host(<const unsigned char*>PyBytes_AS_STRING(host), PyBytes_GET_SIZE(host)):
        raise HttpParseError(400, BAD_HOST)
    if version == 11:
        keep_alive = not (seen & 1)
    else:
        keep_alive = (seen & 2) and not (seen & 1)
    head = RequestHead.__new__(RequestHead)
    head.method = PyUnicode_DecodeLatin1(<const char*>p + start, sp1 - start, NULL)
    head.target = PyUnicode_DecodeLatin1(<const char*>p + sp1 + 1, sp2 - sp1 - 1, NULL)
    head.version = version
    head.headers = headers
    head.content_length = content_length
    head.chunked = chunked
    head.keep_alive = keep_alive
    head.connection = tuple(connection)
    head.upgrade = upgrade
    head.host = host
    return head, end + 4


cdef long long _response_length(const unsigned char* s, Py_ssize_t n) except -1:
    """One Content-Length value: a decimal, or a list of equal decimals (``5, 5``)."""
    cdef long long length = -1
    cdef long long number
    cdef Py_ssize_t a = 0
    cdef Py_ssize_t b, x, y
    while a <= n:
        b = a
        while b < n and s[b] != 44:
            b += 1
        x = a
        y = b
        while x < y and _ows(s[x]):
            x += 1
        while y > x and _ows(s[y - 1]):
            y -= 1
        number = _content_length(s + x, y - x)
        if length >= 0 and number != length:
            raise HttpParseError(400, CONFLICTING_CL)
        length = number
        a = b + 1
    return length


def parse_response_head(buf, Py_ssize_t max_size):
    """Parse one response head: (head, bytes consumed) or None if partial.

    Refuses what cannot be framed exactly: a bad status line or header line, conflicting
    Content-Length values, Content-Length with Transfer-Encoding, a coding other than chunked.
    Identical Content-Length values (repeated, or ``5, 5``) collapse to one header.
    """
    cdef Py_ssize_t size, start, line_end, end, k, pos, colon, vs, ve, n
    cdef const unsigned char* p = _buffer(buf, &size)
    cdef const unsigned char* s
    cdef const unsigned char* name
    cdef int version, status, seen = 0
    cdef long long content_length = -1
    cdef long long length
    cdef Py_ssize_t te_start = -1, te_end = -1
    cdef bint chunked = False
    cdef bint keep_alive
    cdef list headers = []
    cdef list connection = []
    cdef object value
    cdef object upgrade = None
    cdef bytes reason
    cdef ResponseHead head
    if max_size < 1:
        raise ValueError("max_size must be positive")
    line_end = _first_line(p, size, max_size, RESPONSE_TOO_LARGE, &start)
    if line_end < 0:
        return None
    s = p + start
    n = line_end - start
    if n < 9 or memcmp(s, b"HTTP/1.", 7) != 0 or (s[7] != 49 and s[7] != 48) or s[8] != 32:
        raise HttpParseError(400, BAD_STATUS_LINE)
    version = 11 if s[7] == 49 else 10
    if n < 12 or not _is(s[9], _C_DIGIT) or not _is(s[10], _C_DIGIT) or not _is(s[11], _C_DIGIT):
        raise HttpParseError(400, BAD_STATUS_LINE)
    status = (s[9] - 48) * 100 + (s[10] - 48) * 10 + (s[11] - 48)
    if status < 100 or status > 599 or (n > 12 and s[12] != 32):
        raise HttpParseError(400, BAD_STATUS_LINE)
    for k in range(13, n):
        if not _is(s[k], _C_VALUE):
            raise HttpParseError(400, BAD_STATUS_LINE)
    reason = _slice(s + 13, n - 13) if n > 13 else b""
    end = _head_end(p, size, line_end, max_size, RESPONSE_TOO_LARGE)
    if end < 0:
        return None
    pos = line_end + 2
    while pos < end:
        k = _header_line(p, pos, end, &colon, &vs, &ve)
        name = p + pos
        n = colon - pos
        value = None
        if n == 14 and _lower_is(name, n, b"content-length", 14):
            length = _response_length(p + vs, ve - vs)
            if content_length >= 0:
                if length != content_length:
                    raise HttpParseError(400, CONFLICTING_CL)
                pos = k + 2
                continue
            content_length = length
            value = b"%d" % length
        elif n == 17 and _lower_is(name, n, b"transfer-encoding", 17):
            if te_start >= 0:
                raise HttpParseError(400, REPEATED_TE)
            te_start = vs
            te_end = ve
        elif n == 10 and _lower_is(name, n, b"connection", 10):
            seen |= _tokens(p + vs, ve - vs, connection)
        elif n == 7 and _lower_is(name, n, b"upgrade", 7):
            upgrade = _join_upgrade(upgrade, p + vs, ve - vs)
        if value is None:
            value = _slice(p + vs, ve - vs)
        headers.append((_slice(name, n), value))
        pos = k + 2
    if te_start >= 0:
        if not _lower_is(p + te_start, te_end - te_start, b"chunked", 7):
            raise HttpParseError(400, BAD_TE)
        if content_length >= 0:
            raise HttpParseError(400, CL_AND_TE)
        chunked = True
    if version == 11:
        keep_alive = not (seen & 1)
    else:  # an HTTP/1.0 response with Transfer-Encoding has faulty framing: close after it
        keep_alive = (seen & 2) and not (seen & 1) and not chunked
    head = ResponseHead.__new__(ResponseHead)
    head.version = version
    head.status = status
    head.reason = reason
    head.headers = headers
    head.content_length = content_length
    head.chunked = chunked
    head.keep_alive = keep_alive
    head.connection = tuple(connection)
    head.upgrade = upgrade
    return head, end + 4
