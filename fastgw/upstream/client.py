"""A strict HTTP/1.1 client connection to one upstream target, as an asyncio Protocol.

Tornado's simple client caps at ten connections, has no keep-alive, follows redirects and
decompresses; its ``HTTP1Connection`` client mode will not chunk a DELETE body and has no
keep-alive either. A proxy needs none of that and all of this: pooled keep-alive connections,
bytes passed through untouched, backpressure both ways, and a parser that refuses ambiguous
framing instead of guessing (a response we cannot frame exactly is an upstream error and the
connection is never reused).

One ``UpstreamConnection`` carries one exchange at a time. The exchange that owns it supplies a
``ResponseSink``; every started response ends in exactly one of ``on_end`` or ``on_error``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Protocol, cast

_HEADER_END = b"\r\n\r\n"
_STATUS_RE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: ([^\r\n]*))?")
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS_RE = re.compile(rb"[0-9]{1,18}")
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_MAX_HEAD = 64 * 1024
_MAX_CHUNK_LINE = 1024


class UpstreamProtocolError(Exception):
    """The upstream sent something we cannot frame exactly; the connection is discarded."""


class ResponseSink(Protocol):
    """What an exchange implements to receive a response.

    ``on_head`` comes first (1xx interim responses are swallowed), then ``on_data`` zero or more
    times, then exactly one of ``on_end`` or ``on_error``. ``on_error`` may also come before
    ``on_head`` (connection reset, protocol error). ``on_data`` returning False asks the
    connection to stop reading until ``resume_reading`` is called (backpressure).
    """

    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None: ...

    def on_data(self, data: bytes) -> bool: ...

    def on_end(self) -> None: ...

    def on_error(self, reason: str) -> None: ...


# Parser states
_HEAD, _FIXED, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _IDLE, _TUNNEL = range(9)


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a target, reused across exchanges while the upstream allows it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self._sink: ResponseSink | None = None
        self._state = _IDLE
        self._buf = bytearray()
        self._remaining = 0
        self._head_request = False
        self._keep_alive = True
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._sink is None:
            return
        if self._state in (_UNTIL_CLOSE, _TUNNEL):
            self._finish()
        else:
            self._fail("upstream_reset")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def data_received(self, data: bytes) -> None:
        if self._sink is None:
            # Bytes while no exchange is waiting: the upstream broke framing. Never reuse.
            self.abort()
            return
        self._buf += data
        try:
            self._parse()
        except UpstreamProtocolError:
            self._fail("upstream_protocol")

    def eof_received(self) -> bool | None:
        return None

    # -- request side ---------------------------------------------------------------------

    def begin(self, sink: ResponseSink, head: bytes, head_request: bool) -> None:
        """Send a request head and route the coming response to ``sink``."""
        assert self.transport is not None
        self._sink = sink
        self._state = _HEAD
        self._buf.clear()
        self._head_request = head_request
        self._keep_alive = True
        self.reusable = False
        self.transport.write(head)

    def hand_over(self, sink: ResponseSink) -> None:
        """Route the rest of a switched-protocols connection to another sink (the tunnel)."""
        self._sink = sink

    def close_tunnel(self) -> None:
        """End a switched-protocols tunnel from our side (the sink gets ``on_end``)."""
        if self.transport is not None and not self.closed:
            self.transport.close()

    def write(self, data: bytes) -> asyncio.Future[None] | None:
        """Write body bytes; returns a future to await when the socket buffer is full."""
        if self.closed or self.transport is None:
            return None
        self.transport.write(data)
        if self._write_paused:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            return self._drained
        return None

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection at once (no reuse); a pending response gets ``on_error``."""
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def detach(self) -> None:
        """Stop delivering to the current sink (the exchange gave up on it)."""
        self._sink = None
        self.abort()

    # -- response parsing -------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        while self._sink is not None:
            state = self._state
            if state == _HEAD:
                end = buf.find(_HEADER_END)
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise UpstreamProtocolError("response head too large")
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._on_head(head)
            elif state == _FIXED or state == _CHUNK_DATA:
                if not buf:
                    return
                take = min(len(buf), self._remaining)
                chunk = bytes(buf[:take])
                del buf[:take]
                self._remaining -= take
                done = self._remaining == 0
                if done and state == _CHUNK_DATA:
                    self._state = _CHUNK_CRLF
                self._deliver(chunk)
                if done and state == _FIXED:
                    self._finish()
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        raise UpstreamProtocolError("chunk size line too long")
                    return
                line = bytes(buf[:end])
                del buf[: end + 2]
                size = line.split(b";", 1)[0].rstrip(b" \t")
                if not _HEX_RE.fullmatch(size):
                    raise UpstreamProtocolError("bad chunk size")
                self._remaining = int(size, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
            elif state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise UpstreamProtocolError("chunk not terminated by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                # Trailer fields are dropped; only the terminating empty line matters.
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise UpstreamProtocolError("trailers too large")
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish()
            elif state == _UNTIL_CLOSE or state == _TUNNEL:
                if buf:
                    chunk = bytes(buf)
                    buf.clear()
                    self._deliver(chunk)
                return
            else:  # _IDLE with bytes left over: the upstream sent more than it framed.
                if buf:
                    self.abort()
                return

    def _on_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        match = _STATUS_RE.fullmatch(lines[0])
        if match is None:
            raise UpstreamProtocolError("bad status line")
        minor, status = match.group(1), int(match.group(2))
        reason = match.group(3) or b""
        headers: list[tuple[bytes, bytes]] = []
        content_length: bytes | None = None
        transfer_encoding: bytes | None = None
        connection = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN_RE.fullmatch(name):
                raise UpstreamProtocolError("bad header line")
            value = value.strip(b" \t")
            if b"\r" in value or b"\n" in value or b"\0" in value:
                raise UpstreamProtocolError("bad header value")
            lname = name.lower()
            if lname == b"content-length":
                if content_length is not None and content_length != value:
                    raise UpstreamProtocolError("conflicting Content-Length")
                content_length = value
            elif lname == b"transfer-encoding":
                if transfer_encoding is not None:
                    raise UpstreamProtocolError("repeated Transfer-Encoding")
                transfer_encoding = value
            elif lname == b"connection":
                connection = connection + b"," + value.lower() if connection else value.lower()
            headers.append((name, value))
        if 100 <= status < 200 and status != 101:
            return  # interim response: wait for the final one
        if minor == b"0":
            self._keep_alive = b"keep-alive" in connection
        elif b"close" in connection:
            self._keep_alive = False
        sink = self._sink
        assert sink is not None
        if status == 101:
            # Switching protocols: from here on the connection is an opaque byte tunnel that
            # ends (``on_end``) when the upstream closes it. Never pooled again.
            self._state = _TUNNEL
            self._keep_alive = False
            sink.on_head(status, reason, headers)
            return
        if self._head_request or status in (204, 304):
            self._state = _IDLE
            sink.on_head(status, reason, headers)
            self._finish()
            return
        if transfer_encoding is not None:
            if content_length is not None:
                raise UpstreamProtocolError("both Content-Length and Transfer-Encoding")
            if transfer_encoding.lower() != b"chunked":
                raise UpstreamProtocolError("unsupported Transfer-Encoding")
            self._state = _CHUNK_SIZE
        elif content_length is not None:
            value = content_length.split(b",")[0].strip()
            if not _DIGITS_RE.fullmatch(value) or any(
                part.strip() != value for part in content_length.split(b",")
            ):
                raise UpstreamProtocolError("bad Content-Length")
            self._remaining = int(value)
            self._state = _FIXED
        else:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False
        sink.on_head(status, reason, headers)
        if self._state == _FIXED and self._remaining == 0:
            self._finish()

    def _deliver(self, chunk: bytes) -> None:
        sink = self._sink
        if sink is not None and not sink.on_data(chunk):
            self.pause_reading()

    def _finish(self) -> None:
        sink = self._sink
        self._sink = None
        self._state = _IDLE
        self.reusable = self._keep_alive and not self.closed and not self._buf
        if sink is not None:
            sink.on_end()

    def _fail(self, reason: str) -> None:
        sink = self._sink
        self._sink = None
        self.abort()
        if sink is not None:
            sink.on_error(reason)
