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

The lexical layer (byte classes, refusal messages, ``HttpParseError``, the line scanners and the
value checks) is ``_http_lex_py``; this module runs it in that order and builds the heads.
``HttpParseError`` is re-exported: ``_speedups_py`` imports it from here.
"""

from __future__ import annotations

from ._http_lex_py import (
    _DIGITS,
    _LOWER_TCHAR,
    _OWS,
    _TARGET,
    _TCHAR,
    _VALUE,
    BAD_HOST,
    BAD_METHOD,
    BAD_REQUEST_LINE,
    BAD_STATUS_LINE,
    BAD_TARGET,
    BAD_TE,
    BAD_VALUE,
    BAD_VERSION,
    CL_AND_TE,
    CONFLICTING_CL,
    MISSING_HOST,
    REPEATED_CL,
    REPEATED_HOST,
    REPEATED_TE,
    REQUEST_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    TE_ON_10,
    HttpParseError,
    _content_length,
    _first_line,
    _head_lines,
    _line_error,
    _tokens,
    _valid_host,
)

# Header names the parser acts on, by lower-cased name.
_CONTENT_LENGTH, _TRANSFER_ENCODING, _HOST, _CONNECTION, _UPGRADE = range(1, 6)
_SPECIAL = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"host": _HOST,
    b"connection": _CONNECTION,
    b"upgrade": _UPGRADE,
}


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
