# Lexical layer of the HTTP/1.1 head parser, included into _speedups.pyx before _http.pxi and
# _chunked.pxi, which use it. The reference is fastgw/_http_lex_py.py: the byte classes, refusal
# messages, HttpParseError, line scanners and value checks. The scanners are shaped for C
# (_head_end and _header_line go byte by byte where _head_lines splits and translates), but
# refuse in the order fastgw/_http_py.py's docstring sets out, so both give the same result or
# the same HttpParseError (status and message) for every input and every split of it.

# _chunked.pxi, included later, uses these cimports too (PyBytes_CheckExact only it).
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_Check, PyBytes_CheckExact
from libc.string cimport memchr

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
