# Chunked transfer coding, included into _speedups.pyx after _http.pxi. The reference is
# fastgw/_chunked_py.py: the same checks in the same order, so both give the same result or the
# same HttpParseError for every input and every split of it across feed() calls.

cdef enum:
    _MAX_CHUNK_HEX = 15  # sizes below 2**60: far above any body limit, far below overflow

CHUNK_EOL = "Bad line ending in chunked body"
CHUNK_LINE_TOO_LONG = "Chunk line too long"
TRAILERS_TOO_LARGE = "Trailers too large"
BAD_CHUNK_SIZE = "Invalid chunk size"
BAD_CHUNK_EXT = "Invalid chunk extension"
CHUNK_NO_CRLF = "Chunk data not followed by CRLF"
BAD_TRAILER = "Invalid trailer field"
LAST_CHUNK = b"0\r\n\r\n"


# Chunked decoder states
cdef enum:
    _SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE


cdef class ChunkedDecoder:
    """Incremental decoder of a chunked body (RFC 9112 7.1).

    Extensions are accepted and dropped, trailers read and dropped. The result does not depend
    on how the input is split across ``feed`` calls: a line's error is the one at its first bad
    byte (a CR not followed by LF, an LF without CR, or the first byte past the line limit).
    Bytes after the terminating empty line are kept in ``tail`` and never returned as body.
    """

    cdef readonly bint done
    cdef readonly bytes tail
    cdef int _state
    cdef long long _left
    cdef bytes _line  # the current line's bytes from earlier feeds (no CR, no LF)
    cdef bytes _joined  # keeps a line that spanned feeds alive while it is checked
    cdef bint _cr  # the last feed ended with the current line's CR
    cdef Py_ssize_t _max_line
    cdef Py_ssize_t _trailers
    cdef Py_ssize_t _max_trailers

    def __init__(self, Py_ssize_t max_line=4096, Py_ssize_t max_trailers=65536):
        self.done = False
        self.tail = b""
        self._state = _SIZE
        self._left = 0
        self._line = b""
        self._joined = b""
        self._cr = False
        self._max_line = max_line
        self._trailers = 0
        self._max_trailers = max_trailers

    def feed(self, data):
        """Decode more of the body: the data pieces it completes (non-empty bytes)."""
        cdef list out = []
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t size, take, line_n
        cdef const unsigned char* p
        cdef const unsigned char* line_p
        cdef int state
        if not PyBytes_CheckExact(data):
            data = bytes(data)
        if self.done:
            if PyBytes_GET_SIZE(data):
                self.tail += data
            return out
        p = <const unsigned char*>PyBytes_AS_STRING(data)
        size = PyBytes_GET_SIZE(data)
        while pos < size:
            state = self._state
            if state == _DATA:
                if self._left < size - pos:
                    take = <Py_ssize_t>self._left
                    out.append(_slice(p + pos, take))
                    pos += take
                    self._left = 0
                    if pos + 1 < size and p[pos] == 13 and p[pos + 1] == 10:  # skip _DATA_CR, _DATA_LF
                        pos += 2
                        self._state = _SIZE
                    else:
                        self._state = _DATA_CR
                else:
                    out.append(data if pos == 0 else _slice(p + pos, size - pos))
                    self._left -= size - pos
                    pos = size
                    if not self._left:
                        self._state = _DATA_CR
            elif state == _DATA_CR:
                if p[pos] != 13:
                    raise HttpParseError(400, CHUNK_NO_CRLF)
                pos += 1
                self._state = _DATA_LF
            elif state == _DATA_LF:
                if p[pos] != 10:
                    raise HttpParseError(400, CHUNK_NO_CRLF)
                pos += 1
                self._state = _SIZE
            else:
                pos = self._read_line(p, pos, size, &line_p, &line_n)
                if pos < 0:
                    break
                if state == _SIZE:
                    self._size_line(line_p, line_n)
                elif line_n:
                    self._trailers += line_n + 2
                    _trailer_line(line_p, line_n)
                else:
                    self.done = True
                    self._state = _DONE
                    self.tail = _slice(p + pos, size - pos)
                    break
                self._joined = b""
        return out

    cdef Py_ssize_t _read_line(
        self, const unsigned char* p, Py_ssize_t pos, Py_ssize_t size, const unsigned char** line_p,
        Py_ssize_t* line_n
    ) except -2:
        """Where the rest starts after the line ending at the next CRLF (the line, without it, in
        ``line_p``/``line_n``); -1 if the line goes on past ``p`` (kept for the next feed)."""
        cdef Py_ssize_t acc = PyBytes_GET_SIZE(self._line)
        cdef Py_ssize_t room, stop, eol
        cdef str too_long
        if self._cr:
            if p[pos] != 10:
                raise HttpParseError(400, CHUNK_EOL)
            self._cr = False
            self._joined = self._line
            self._line = b""
            line_p[0] = <const unsigned char*>PyBytes_AS_STRING(self._joined)
            line_n[0] = acc
            return pos + 1
        if self._state == _SIZE:
            room = self._max_line - acc
            too_long = CHUNK_LINE_TOO_LONG
        else:
            room = (self._max_trailers - self._trailers if self._max_trailers > self._trailers else 0) - acc
            too_long = TRAILERS_TOO_LARGE
        stop = pos + room + 2
        if stop > size:
            stop = size
        eol = pos
        while eol < stop and p[eol] != 13 and p[eol] != 10:
            eol += 1
        if eol == stop:
            if stop - pos > room:
                raise HttpParseError(400, too_long)
            self._line = self._line + _slice(p + pos, size - pos)
            return -1
        if eol - pos > room:
            raise HttpParseError(400, too_long)
        if p[eol] == 10:
            raise HttpParseError(400, CHUNK_EOL)
        if eol + 1 == size:
            self._line = self._line + _slice(p + pos, eol - pos)
            self._cr = True
            return -1
        if p[eol + 1] != 10:
            raise HttpParseError(400, CHUNK_EOL)
        if acc:
            self._joined = self._line + _slice(p + pos, eol - pos)
            self._line = b""
            line_p[0] = <const unsigned char*>PyBytes_AS_STRING(self._joined)
            line_n[0] = PyBytes_GET_SIZE(self._joined)
        else:
            line_p[0] = p + pos
            line_n[0] = eol - pos
        return eol + 2

    cdef int _size_line(self, const unsigned char* s, Py_ssize_t n) except -1:
        cdef Py_ssize_t digits = 0
        cdef Py_ssize_t k
        cdef long long left = 0
        cdef unsigned char c
        while digits < n and _is(s[digits], _C_HEX):
            digits += 1
        if not digits or digits > _MAX_CHUNK_HEX:
            raise HttpParseError(400, BAD_CHUNK_SIZE)
        if digits < n:
            k = digits
            while k < n and _ows(s[k]):  # BWS before ";"
                k += 1
            if k == n or s[k] != 59:
                raise HttpParseError(400, BAD_CHUNK_SIZE)
            while k < n:
                if not _is(s[k], _C_VALUE):
                    raise HttpParseError(400, BAD_CHUNK_EXT)
                k += 1
        for k in range(digits):
            c = s[k]
            left = left * 16 + (c - 48 if c <= 57 else (c | 0x20) - 87)
        self._left = left
        self._state = _DATA if left else _TRAILER
        return 0


cdef int _trailer_line(const unsigned char* s, Py_ssize_t n) except -1:
    cdef const unsigned char* found
    cdef Py_ssize_t colon, k
    if s[0] == 32 or s[0] == 9:
        raise HttpParseError(400, BAD_TRAILER)
    found = <const unsigned char*>memchr(s, 58, n)
    if found == NULL or found == s:
        raise HttpParseError(400, BAD_TRAILER)
    colon = found - s
    for k in range(colon):
        if not _is(s[k], _C_TCHAR):
            raise HttpParseError(400, BAD_TRAILER)
    for k in range(colon + 1, n):
        if not _is(s[k], _C_VALUE):
            raise HttpParseError(400, BAD_TRAILER)
    return 0


def encode_chunk(data):
    """One chunk of a chunked body; empty data encodes to nothing (never a premature end)."""
    cdef Py_ssize_t n, digits, k, v
    cdef bytes out
    cdef char* q
    cdef const char* hexdigits = b"0123456789abcdef"
    if not PyBytes_CheckExact(data):
        data = bytes(data)
    n = PyBytes_GET_SIZE(data)
    if n == 0:
        return b""
    digits = 0
    v = n
    while v:
        digits += 1
        v >>= 4
    out = PyBytes_FromStringAndSize(NULL, digits + 4 + n)
    q = PyBytes_AS_STRING(out)
    v = n
    for k in range(digits - 1, -1, -1):
        q[k] = hexdigits[v & 15]
        v >>= 4
    q[digits] = 13
    q[digits + 1] = 10
    memcpy(q + digits + 2, PyBytes_AS_STRING(data), n)
    q[digits + 2 + n] = 13
    q[digits + 3 + n] = 10
    return out
