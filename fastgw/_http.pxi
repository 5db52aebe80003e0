# HTTP/1.1 message heads, included into _speedups.pyx after _http_lex.pxi (the byte classes,
# messages, HttpParseError and line scanners it uses). The reference is fastgw/_http_py.py: the
# same checks in the same order, so both give the same result or the same HttpParseError (status
# and message) for every input and every split of it. See its docstring for the order of the checks.

from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memcmp

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
