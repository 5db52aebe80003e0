"""Lexical layer of the HTTP/1.1 head parser ``_http_py``; its compiled twin is ``_http_lex.pxi``.

It knows bytes, not message semantics: the byte classes (tchar, field value, request target,
reg-name, ...), the fixed refusal messages, ``HttpParseError``, the scanners that find the first
line and the header lines of a head, and the checks of single values (Content-Length, token
lists, Host). ``_http_py`` builds the heads from these and ``_chunked_py`` reuses the byte classes.

The scanners take their part in the check order that ``_http_py``'s docstring sets out (the line
endings and the size, steps 1 to 3) and, like the rest of it, only ever look at bytes already
received, so a prefix of a head either gives None or the error the whole head gives.
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


class HttpParseError(ValueError):
    """A head or chunk the gateway refuses; ``status`` is the answer (400 or 431).

    ``message`` is short fixed text that never echoes input bytes.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
