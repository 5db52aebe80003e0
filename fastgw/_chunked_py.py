"""Chunked transfer coding, pure-Python twin of ``_chunked.pxi`` (compiled into ``fastgw._speedups``)."""

from __future__ import annotations

from ._http_lex_py import _HEX, _LOWER_TCHAR, _OWS, _VALUE, HttpParseError

_MAX_CHUNK_HEX = 15  # sizes below 2**60: far above any body limit, far below overflow

CHUNK_EOL = "Bad line ending in chunked body"
CHUNK_LINE_TOO_LONG = "Chunk line too long"
TRAILERS_TOO_LARGE = "Trailers too large"
BAD_CHUNK_SIZE = "Invalid chunk size"
BAD_CHUNK_EXT = "Invalid chunk extension"
CHUNK_NO_CRLF = "Chunk data not followed by CRLF"
BAD_TRAILER = "Invalid trailer field"

# Chunked decoder states
_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE = range(6)


class ChunkedDecoder:
    """Incremental decoder of a chunked body (RFC 9112 7.1).

    Extensions are accepted and dropped, trailers read and dropped. The result does not depend
    on how the input is split across ``feed`` calls: a line's error is the one at its first bad
    byte (a CR not followed by LF, an LF without CR, or the first byte past the line limit).
    Bytes after the terminating empty line are kept in ``tail`` and never returned as body.
    """

    __slots__ = ("done", "tail", "_state", "_left", "_line", "_cr", "_max_line", "_trailers", "_max_trailers")

    def __init__(self, max_line: int = 4096, max_trailers: int = 65536) -> None:
        self.done = False
        self.tail = b""
        self._state = _SIZE
        self._left = 0
        self._line = b""  # the current line's bytes from earlier feeds (no CR, no LF)
        self._cr = False  # the last feed ended with the current line's CR
        self._max_line = max_line
        self._trailers = 0
        self._max_trailers = max_trailers

    def feed(self, data: bytes) -> list[bytes]:
        """Decode more of the body: the data pieces it completes (non-empty bytes)."""
        out: list[bytes] = []
        if type(data) is not bytes:
            data = bytes(data)
        if self.done:
            if data:
                self.tail += data
            return out
        pos = 0
        size = len(data)
        while pos < size:
            state = self._state
            if state == _DATA:
                left = self._left
                if left < size - pos:
                    out.append(data[pos : pos + left])
                    pos += left
                    self._left = 0
                    if data[pos : pos + 2] == b"\r\n":  # the usual case: skip _DATA_CR, _DATA_LF
                        pos += 2
                        self._state = _SIZE
                    else:
                        self._state = _DATA_CR
                else:
                    out.append(data[pos:] if pos else data)
                    self._left = left - (size - pos)
                    pos = size
                    if not self._left:
                        self._state = _DATA_CR
            elif state == _DATA_CR:
                if data[pos] != 13:
                    raise HttpParseError(400, CHUNK_NO_CRLF)
                pos += 1
                self._state = _DATA_LF
            elif state == _DATA_LF:
                if data[pos] != 10:
                    raise HttpParseError(400, CHUNK_NO_CRLF)
                pos += 1
                self._state = _SIZE
            else:
                line, pos = self._read_line(data, pos, size)
                if line is None:
                    break
                if state == _SIZE:
                    self._size_line(line)
                elif line:
                    self._trailers += len(line) + 2
                    self._trailer_line(line)
                else:
                    self.done = True
                    self._state = _DONE
                    self.tail = data[pos:]
                    break
        return out

    def _read_line(self, data: bytes, pos: int, size: int) -> tuple[bytes | None, int]:
        """The line ending at the next CRLF (without it), and where the rest starts; None if the
        line goes on past ``data`` (kept for the next feed)."""
        acc = self._line
        if self._cr:
            if data[pos] != 10:
                raise HttpParseError(400, CHUNK_EOL)
            self._cr = False
            self._line = b""
            return acc, pos + 1
        if self._state == _SIZE:
            room = self._max_line - len(acc)
            too_long = CHUNK_LINE_TOO_LONG
        else:
            room = max(0, self._max_trailers - self._trailers) - len(acc)
            too_long = TRAILERS_TOO_LARGE
        stop = pos + room + 2
        if stop > size:
            stop = size
        cr = data.find(b"\r", pos, stop)
        lf = data.find(b"\n", pos, stop)
        eol = lf if cr < 0 or 0 <= lf < cr else cr
        if eol < 0:
            if stop - pos > room:
                raise HttpParseError(400, too_long)
            self._line = acc + data[pos:]
            return None, size
        if eol - pos > room:
            raise HttpParseError(400, too_long)
        if eol == lf:
            raise HttpParseError(400, CHUNK_EOL)
        if eol + 1 == size:
            self._line = acc + data[pos:eol]
            self._cr = True
            return None, size
        if data[eol + 1] != 10:
            raise HttpParseError(400, CHUNK_EOL)
        if acc:
            self._line = b""
            return acc + data[pos:eol], eol + 2
        return data[pos:eol], eol + 2

    def _size_line(self, line: bytes) -> None:
        rest = line.lstrip(_HEX)
        digits = len(line) - len(rest)
        if not digits or digits > _MAX_CHUNK_HEX:
            raise HttpParseError(400, BAD_CHUNK_SIZE)
        if rest:
            rest = rest.lstrip(_OWS)  # BWS before ";"
            if rest[:1] != b";":
                raise HttpParseError(400, BAD_CHUNK_SIZE)
            if rest.translate(None, _VALUE):
                raise HttpParseError(400, BAD_CHUNK_EXT)
        self._left = int(line[:digits], 16)
        self._state = _DATA if self._left else _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        colon = line.find(b":")
        if (
            line[0] == 32
            or line[0] == 9
            or colon <= 0
            or b"\x00" in line[:colon].translate(_LOWER_TCHAR)
            or line[colon + 1 :].translate(None, _VALUE)
        ):
            raise HttpParseError(400, BAD_TRAILER)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; empty data encodes to nothing (never a premature end)."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

__all__ = ["LAST_CHUNK", "ChunkedDecoder", "encode_chunk"]
