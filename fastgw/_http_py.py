"""HTTP/1.1 message heads, pure-Python twin of ``_http.pxi`` (compiled into ``fastgw._speedups``).

One pass over a message head yields the request line or status line, the header list as
``(name, value)`` bytes, and the framing facts (content length, chunked, keep-alive, upgrade,
host), so nothing re-scans headers later. The request side enforces SPEC 13.1 and the framing
cases of HARDENING A-01...A-34. Both implementations give the same result, or the same refusal
(``HttpParseError`` with the same status and message), for every input and every split of it.

Errors are decided in a fixed order that only ever looks at bytes already received, so a prefix
of a head either gives None or the error the whole head gives: (1) the first line, as soon as
its CRLF is in (a bare CR or LF ending it, then its syntax); (2) a bare CR or LF anywhere in the
head, or in the first ``max_size`` bytes while the head is incomplete; (3) the size (431);
(4) each header line in order (fold, colon, name, value, then its meaning); (5) what needs the
whole head (Transfer-Encoding, Host).
"""

from __future__ import annotations

_CRLF = b"\r\n"
_HEAD_END = b"\r\n\r\n"
_OWS = b" \t"
_MAX_CL_DIGITS = 18

_DIGITS = b"0123456789"
_HEX = b"0123456789abcdefABCDEF"
_ALPHA = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TCHAR = b"!#$%&'*+-.^_`|~" + _DIGITS + _ALPHA
# Field values: VCHAR, obs-text, SP and HTAB (RFC 9110 5.5); no other control byte.
_VALUE = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t"
_TARGET = bytes(range(0x21, 0x7F))  # visible ASCII
# reg-name of RFC 3986 (unreserved, pct-encoded, sub-delims) without the comma.
_REGNAME = _DIGITS + _ALPHA + b"-._~%!$&'()*+;="
_IPV6 = _HEX + b":."
# Lower-cases a token and maps every non-tchar to NUL: one translate validates and folds a name.
_LOWER_TCHAR = bytes((b | 0x20 if 0x41 <= b <= 0x5A else b) if b in _TCHAR else 0 for b in range(256))
_VALUE_CRLF = _VALUE + _CRLF

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

# Header names the parser acts on, by lower-cased name.
_CONTENT_LENGTH, _TRANSFER_ENCODING, _HOST, _CONNECTION, _UPGRADE = range(1, 6)
_SPECIAL = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"host": _HOST,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
}


class HttpParseError(ValueError):
    """A head or chunk the gateway refuses; ``status`` is the answer (400 or 431).

    ``message`` is short fixed text that never echoes input bytes.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestHead:
    """One parsed request head. Header names are lower-cased; values have OWS stripped."""

    __slots__ = (
        "method",
        "target",
        "version",
        "headers",
        "content_length",
        "chunked",
        "keep_alive",
        "connection",
        "upgrade",
        "host",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: int,
        headers: list[tuple[bytes, bytes]],
        content_length: int,
        chunked: bool,
        keep_alive: bool,
        connection: tuple[bytes, ...],
        upgrade: bytes | None,
        host: bytes | None,
    ) -> None:
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

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target} version={self.version}>"


class ResponseHead:
    """One parsed response head. Header names keep their case (they are relayed)."""

    __slots__ = (
        "version",
        "status",
        "reason",
        "headers",
        "content_length",
        "chunked",
        "keep_alive",
        "connection",
        "upgrade",
    )

    def __init__(
        self,
        version: int,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int,
        chunked: bool,
        keep_alive: bool,
        connection: tuple[bytes, ...],
        upgrade: bytes | None,
    ) -> None:
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.connection = connection
        self.upgrade = upgrade

    def __repr__(self) -> str:
        return f"<ResponseHead {self.status} version={self.version}>"


def _skip_empty_lines(buf: bytes | bytearray, limit: int) -> int:
    """Length of the run of CRLF pairs at the start of ``buf[:limit]`` (RFC 9112 2.2)."""
    window = buf[:limit]
    run = window[: len(window) - len(window.lstrip(b"\r\n"))]
    # The run alternates CR, LF until a doubled byte; only whole CRLF pairs before it count.
    stop = len(run)
    for doubled in (run.find(b"\r\r"), run.find(b"\n\n")):
        if 0 <= doubled < stop:
            stop = doubled + 1
    return stop - stop % 2


def _first_line(buf: bytes | bytearray, max_size: int, too_large: str) -> tuple[int, int] | None:
    """(start, end) of the first line (``end`` indexes its CR), or None while it is incomplete."""
    size = len(buf)
    limit = size if size < max_size else max_size
    start = _skip_empty_lines(buf, limit) if buf[:2] == _CRLF else 0
    cr = buf.find(b"\r", start, limit)
    lf = buf.find(b"\n", start, limit)
    if lf >= 0 and (cr < 0 or lf < cr):
        raise HttpParseError(400, BARE_EOL)
    if cr < 0:
        if size > max_size:
            raise HttpParseError(431, too_large)
        return None
    if cr + 1 == size:
        return None
    if buf[cr + 1] != 10:
        raise HttpParseError(400, BARE_EOL)
    return start, cr


def _head_lines(
    buf: bytes | bytearray, line_end: int, max_size: int, too_large: str
) -> tuple[int, list[bytes], bool] | None:
    """The end of a complete head (index of its CRLFCRLF), its header lines, and whether they
    hold no byte a field value may not (then the per-line value checks can be skipped); None
    while the head is incomplete. Refuses a bare CR or LF."""
    size = len(buf)
    limit = size if size < max_size else max_size
    end = buf.find(_HEAD_END, line_end, limit)
    if end < 0:
        pairs = buf.count(_CRLF, line_end, limit)
        # A CR ending the window is fine while its LF may still come (or just came).
        edge = 1 if buf[limit - 1] == 13 and (limit == size or buf[limit] == 10) else 0
        if buf.count(b"\n", line_end, limit) != pairs or buf.count(b"\r", line_end, limit) != pairs + edge:
            raise HttpParseError(400, BARE_EOL)
        if size > max_size:
            raise HttpParseError(431, too_large)
        return None
    if end == line_end:
        return end, [], True
    block = bytes(buf[line_end + 2 : end])
    lines = block.split(_CRLF)
    pairs = len(lines) - 1
    if block.count(b"\r") != pairs or block.count(b"\n") != pairs:
        raise HttpParseError(400, BARE_EOL)
    return end, lines, not block.translate(None, _VALUE_CRLF)


def _line_error(line: bytes) -> str:
    """Why a header line with a bad name or no colon is refused (a fold is checked first)."""
    if line[0] == 32 or line[0] == 9:
        return FOLDED
    colon = line.find(b":")
    return BAD_LINE if colon <= 0 else BAD_NAME


def _content_length(value: bytes) -> int:
    if not value or len(value) > _MAX_CL_DIGITS or value.translate(None, _DIGITS):
        raise HttpParseError(400, BAD_CL)
    return int(value)


def _tokens(value: bytes, into: list[bytes]) -> None:
    for part in value.split(b","):
        token = part.strip(_OWS).lower()
        if token:
            into.append(token)


def _valid_port(port: bytes) -> bool:
    return 0 < len(port) <= 5 and not port.translate(None, _DIGITS) and 1 <= int(port) <= 65535


def _valid_host(value: bytes) -> bool:
    """An authority ``host[:port]``: reg-name, IPv4 or [IPv6]; no userinfo, spaces or commas."""
    if not value:
        return False
    if value[0] == 0x5B:  # "["
        close = value.find(b"]")
        inner = value[1:close]
        if close < 0 or b":" not in inner or inner.translate(None, _IPV6):
            return False
        if close + 1 == len(value):
            return True
        return value[close + 1] == 0x3A and _valid_port(value[close + 2 :])
    colon = value.find(b":")
    host = value if colon < 0 else value[:colon]
    if not host or host.translate(None, _REGNAME):
        return False
    pct = host.find(b"%")
    while pct >= 0:
        digits = host[pct + 1 : pct + 3]
        if len(digits) != 2 or digits.translate(None, _HEX):
            return False
        pct = host.find(b"%", pct + 3)
    return colon < 0 or _valid_port(value[colon + 1 :])


def parse_request_head(buf: bytes | bytearray, max_size: int) -> tuple[RequestHead, int] | None:
    """Parse one request head at the start of ``buf``: (head, bytes consumed) or None if partial.

    ``consumed`` includes the empty lines before the request line and the final CRLFCRLF.
    """
    if max_size < 1:
        raise ValueError("max_size must be positive")
    first = _first_line(buf, max_size, REQUEST_TOO_LARGE)
    if first is None:
        return None
    start, line_end = first
    parts = bytes(buf[start:line_end]).split(b" ")
    if len(parts) != 3:
        raise HttpParseError(400, BAD_REQUEST_LINE)
    method, target, version_bytes = parts
    if not method or method.translate(None, _TCHAR):
        raise HttpParseError(400, BAD_METHOD)
    if not target or target.translate(None, _TARGET):
        raise HttpParseError(400, BAD_TARGET)
    if version_bytes == b"HTTP/1.1":
        version = 11
    elif version_bytes == b"HTTP/1.0":
        version = 10
    else:
        raise HttpParseError(400, BAD_VERSION)
    found = _head_lines(buf, line_end, max_size, REQUEST_TOO_LARGE)
    if found is None:
        return None
    end, lines, clean = found
    headers: list[tuple[bytes, bytes]] = []
    content_length = -1
    te: bytes | None = None
    host: bytes | None = None
    hosts = 0
    connection: list[bytes] = []
    upgrade: bytes | None = None
    for line in lines:
        raw_name, colon, value = line.partition(b":")
        name = raw_name.translate(_LOWER_TCHAR)
        if not colon or not name or b"\x00" in name:
            raise HttpParseError(400, _line_error(line))
        value = value.strip(_OWS)
        if not clean and value.translate(None, _VALUE):
            raise HttpParseError(400, BAD_VALUE)
        kind = _SPECIAL.get(name)
        if kind is not None:
            if kind == _CONTENT_LENGTH:
                if content_length >= 0:
                    raise HttpParseError(400, REPEATED_CL)
                content_length = _content_length(value)
            elif kind == _TRANSFER_ENCODING:
                if te is not None:
                    raise HttpParseError(400, REPEATED_TE)
                te = value
            elif kind == _HOST:
                hosts += 1
                host = value
            elif kind == _CONNECTION:
                _tokens(value, connection)
            else:
                upgrade = value.lower() if upgrade is None else upgrade + b", " + value.lower()
        headers.append((name, value))
    chunked = False
    if te is not None:
        if version == 10:
            raise HttpParseError(400, TE_ON_10)
        if te.lower() != b"chunked":
            raise HttpParseError(400, BAD_TE)
        if content_length >= 0:
            raise HttpParseError(400, CL_AND_TE)
        chunked = True
    if hosts > 1:
        raise HttpParseError(400, REPEATED_HOST)
    if host is None:
        if version == 11:
            raise HttpParseError(400, MISSING_HOST)
    elif not _valid_host(host):
        raise HttpParseError(400, BAD_HOST)
    if version == 11:
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection and b"close" not in connection
    head = RequestHead(
        method.decode("latin-1"),
        target.decode("latin-1"),
        version,
        headers,
        content_length,
        chunked,
        keep_alive,
        tuple(connection),
        upgrade,
        host,
    )
    return head, end + 4


def parse_response_head(buf: bytes | bytearray, max_size: int) -> tuple[ResponseHead, int] | None:
    """Parse one response head: (head, bytes consumed) or None if partial.

    Refuses what cannot be framed exactly: a bad status line or header line, conflicting
    Content-Length values, Content-Length with Transfer-Encoding, a coding other than chunked.
    Identical Content-Length values (repeated, or ``5, 5``) collapse to one header.
    """
    if max_size < 1:
        raise ValueError("max_size must be positive")
    first = _first_line(buf, max_size, RESPONSE_TOO_LARGE)
    if first is None:
        return None
    start, line_end = first
    line = bytes(buf[start:line_end])
    if line.startswith(b"HTTP/1.1 "):
        version = 11
    elif line.startswith(b"HTTP/1.0 "):
        version = 10
    else:
        raise HttpParseError(400, BAD_STATUS_LINE)
    code = line[9:12]
    reason = line[13:]
    if (
        len(code) != 3
        or code.translate(None, _DIGITS)
        or not 100 <= int(code) <= 599
        or (len(line) > 12 and line[12] != 32)
        or reason.translate(None, _VALUE)
    ):
        raise HttpParseError(400, BAD_STATUS_LINE)
    found = _head_lines(buf, line_end, max_size, RESPONSE_TOO_LARGE)
    if found is None:
        return None
    end, lines, clean = found
    headers: list[tuple[bytes, bytes]] = []
    content_length = -1
    te: bytes | None = None
    connection: list[bytes] = []
    upgrade: bytes | None = None
    for line in lines:
        name, colon, value = line.partition(b":")
        lname = name.translate(_LOWER_TCHAR)
        if not colon or not name or b"\x00" in lname:
            raise HttpParseError(400, _line_error(line))
        value = value.strip(_OWS)
        if not clean and value.translate(None, _VALUE):
            raise HttpParseError(400, BAD_VALUE)
        kind = _SPECIAL.get(lname)
        if kind is not None:
            if kind == _CONTENT_LENGTH:
                length = -1
                for part in value.split(b","):
                    number = _content_length(part.strip(_OWS))
                    if length >= 0 and number != length:
                        raise HttpParseError(400, CONFLICTING_CL)
                    length = number
                if content_length >= 0:
                    if length != content_length:
                        raise HttpParseError(400, CONFLICTING_CL)
                    continue
                content_length = length
                value = b"%d" % length
            elif kind == _TRANSFER_ENCODING:
                if te is not None:
                    raise HttpParseError(400, REPEATED_TE)
                te = value
            elif kind == _CONNECTION:
                _tokens(value, connection)
            elif kind == _UPGRADE:
                upgrade = value.lower() if upgrade is None else upgrade + b", " + value.lower()
        headers.append((name, value))
    chunked = False
    if te is not None:
        if te.lower() != b"chunked":
            raise HttpParseError(400, BAD_TE)
        if content_length >= 0:
            raise HttpParseError(400, CL_AND_TE)
        chunked = True
    if version == 11:
        keep_alive = b"close" not in connection
    else:  # an HTTP/1.0 response with Transfer-Encoding has faulty framing: close after it
        keep_alive = b"keep-alive" in connection and b"close" not in connection and not chunked
    head = ResponseHead(
        version,
        int(code),
        reason,
        headers,
        content_length,
        chunked,
        keep_alive,
        tuple(connection),
        upgrade,
    )
    return head, end + 4


__all__ = ["HttpParseError", "RequestHead", "ResponseHead", "parse_request_head", "parse_response_head"]
