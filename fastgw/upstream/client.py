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
from typing import Protocol, cast

from ..speedups import ChunkedDecoder, HttpParseError, ResponseHead, parse_response_head
from ..timers import Deadline

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
_HEAD, _FIXED, _CHUNKED, _UNTIL_CLOSE, _IDLE, _TUNNEL = range(6)


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a target, reused across exchanges while the upstream allows it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self._sink: ResponseSink | None = None
        self._state = _IDLE
        self._buf = bytearray()  # an incomplete response head
        self._remaining = 0
        self._decoder: ChunkedDecoder | None = None
        self._head_request = False
        self._keep_alive = True
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._pending_head: bytes | None = None
        # Created by loop.create_connection, so on the running loop.
        self.loop = asyncio.get_running_loop()
        self.deadline = Deadline(self.loop)  # the current exchange's read timeout

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self.deadline.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._sink is None:
            return
        # A close-delimited body ends at a clean EOF only; a reset cuts it (HARDENING E-06).
        if self._state == _TUNNEL or (self._state == _UNTIL_CLOSE and exc is None):
            self._finish(True)
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
        try:
            self._receive(data)
        except UpstreamProtocolError:
            self._fail("upstream_protocol")

    def eof_received(self) -> bool | None:
        return None

    # -- request side ---------------------------------------------------------------------

    def begin(
        self,
        sink: ResponseSink,
        head: bytes,
        head_request: bool,
        body: bytes | None = None,
        more: bool = False,
    ) -> None:
        """Send a request head (with ``body`` when it is known whole) and route the coming
        response to ``sink``.

        ``more``: body bytes are about to follow through ``write``; the head waits for the first
        of them (or the end of this loop iteration), so a small request is one send.
        """
        assert self.transport is not None
        self._sink = sink
        self._state = _HEAD
        self._buf.clear()
        self._decoder = None
        self._head_request = head_request
        self._keep_alive = True
        self.reusable = False
        if body:
            self.transport.writelines((head, body))
        elif more:
            self._pending_head = head
            self.loop.call_soon(self._flush_head)
        else:
            self.transport.write(head)

    def _flush_head(self) -> None:
        head, self._pending_head = self._pending_head, None
        if head is not None and self.transport is not None and not self.closed:
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
        head = self._pending_head
        if head is not None:
            self._pending_head = None
            self.transport.writelines((head, data))
        else:
            self.transport.write(data)
        if self._write_paused:
            if self._drained is None:
                self._drained = self.loop.create_future()
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

    def _receive(self, data: bytes) -> None:
        """Route ``data`` by state. Body bytes go straight to the sink: only an incomplete head
        is buffered, so a long body costs no copy per read."""
        while data and self._sink is not None:
            state = self._state
            if state == _HEAD:
                buf = self._buf
                if buf:
                    buf += data
                try:
                    parsed = parse_response_head(buf or data, _MAX_HEAD)
                except HttpParseError as exc:
                    raise UpstreamProtocolError(exc.message) from None
                if parsed is None:
                    if not buf:
                        buf += data
                    return
                head, used = parsed
                data = bytes(buf[used:]) if buf else data[used:]
                buf.clear()
                self._on_head(head, not data)
            elif state == _FIXED:
                if len(data) <= self._remaining:
                    chunk, data = data, b""
                else:
                    chunk, data = data[: self._remaining], data[self._remaining :]
                self._remaining -= len(chunk)
                self._deliver(chunk)
                if self._remaining == 0 and self._sink is not None:
                    self._finish(not data)
            elif state == _CHUNKED:
                decoder = self._decoder
                assert decoder is not None
                try:
                    pieces = decoder.feed(data)
                except HttpParseError as exc:
                    raise UpstreamProtocolError(exc.message) from None
                data = b""
                for piece in pieces:
                    self._deliver(piece)
                if decoder.done and self._sink is not None:
                    data = decoder.tail
                    self._finish(not data)
            else:  # _UNTIL_CLOSE, _TUNNEL
                self._deliver(data)
                return
        if data and self._state == _IDLE:
            # The upstream sent more than it framed: never reuse the connection.
            self.abort()

    def _on_head(self, head: ResponseHead, nothing_after: bool) -> None:
        status = head.status
        if 100 <= status < 200 and status != 101:
            return  # interim response: wait for the final one
        self._keep_alive = head.keep_alive
        sink = self._sink
        assert sink is not None
        if status == 101:
            # Switching protocols: from here on the connection is an opaque byte tunnel that
            # ends (``on_end``) when the upstream closes it. Never pooled again.
            self._state = _TUNNEL
            self._keep_alive = False
            sink.on_head(status, head.reason, head.headers)
            return
        if self._head_request or status in (204, 304):
            self._state = _IDLE
            sink.on_head(status, head.reason, head.headers)
            self._finish(nothing_after)
            return
        if head.chunked:
            self._decoder = ChunkedDecoder(_MAX_CHUNK_LINE, _MAX_HEAD)
            self._state = _CHUNKED
        elif head.content_length >= 0:
            self._remaining = head.content_length
            self._state = _FIXED
        else:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False
        sink.on_head(status, head.reason, head.headers)
        if self._state == _FIXED and self._remaining == 0 and self._sink is not None:
            self._finish(nothing_after)

    def _deliver(self, chunk: bytes) -> None:
        sink = self._sink
        if sink is not None and not sink.on_data(chunk):
            self.pause_reading()

    def _finish(self, clean: bool) -> None:
        """End the response; ``clean``: no byte beyond its framing has arrived."""
        sink = self._sink
        self._sink = None
        self._state = _IDLE
        self._decoder = None
        self.reusable = self._keep_alive and clean and not self.closed
        if sink is not None:
            sink.on_end()

    def _fail(self, reason: str) -> None:
        sink = self._sink
        self._sink = None
        self.abort()
        if sink is not None:
            sink.on_error(reason)
