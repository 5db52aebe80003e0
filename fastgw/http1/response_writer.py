"""The response side of a client connection: what its delegate calls to answer.

``ClientConnection`` inherits it; it is a module of its own because it is a contract of its
own. The delegate answers with ``send_head`` + ``write``... + ``finish``, or with ``respond`` in
one call, or switches the connection to a byte tunnel (``upgrade``, WebSocket). The writer
chooses the framing the client needs (``Content-Length`` as given, chunked for an HTTP/1.1
client otherwise, close-delimited for HTTP/1.0), says ``Connection: close`` when the connection
will not be kept, and sends the head with the first body bytes (one ``send`` per small
response; deferring the head alone measured +10 %). While the client leaves the response unread
(``pause_writing``), ``write`` returns a future to wait for; after ``send_timeout`` the
connection is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..forwarding import header_lines
from ..speedups import LAST_CHUNK, ChunkedDecoder, RequestHead, encode_chunk
from .interfaces import RequestDelegate, Tunnel, reason_phrase
from .states import BODY, HEAD_PHASE, TUNNEL, WAIT

if TYPE_CHECKING:
    from .server import ConnectionHub

DISCARD_MAX = 1 << 20  # body bytes still read (and dropped) to keep a connection after an early answer


class ResponseWriter:
    """The response half of ``ClientConnection`` (its state lives on the connection)."""

    # Set by ClientConnection.__init__; declared here for the methods below.
    hub: ConnectionHub
    loop: asyncio.AbstractEventLoop
    head: RequestHead | None
    state: int
    closed: bool
    keep_alive: bool
    body_left: int
    decoder: ChunkedDecoder | None
    request_done: bool
    response_done: bool
    response_started: bool
    body_allowed: bool
    chunked_response: bool
    pending_head: bytes | None
    write_paused: bool
    drained: asyncio.Future[None] | None

    buf: bytearray
    delegate: RequestDelegate | None
    delegate_busy: bool
    tunnel: Tunnel | None
    send_timer: asyncio.TimerHandle | None
    send_timed_out: bool

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _cancel_timer(self) -> None:
        raise NotImplementedError

    def _pause_reading(self) -> None:
        raise NotImplementedError

    def _maybe_resume(self, force: bool = False) -> None:
        raise NotImplementedError

    def _linger(self) -> None:
        raise NotImplementedError

    def _next_request(self) -> None:
        raise NotImplementedError

    def send_head(self, status: int, headers: Iterable[tuple[str, str]], has_length: bool) -> None:
        """Start a response; the head goes out with the first body bytes (or within this tick)."""
        self.send_head_block(status, header_lines(headers), has_length)

    def send_head_block(self, status: int, block: bytes, has_length: bool) -> None:
        """``send_head`` with the header lines already encoded (each ending in CRLF): the proxy
        relays the upstream's bytes without decoding them."""
        head = self.head
        self.response_started = True
        body_allowed = self.body_allowed and status not in (204, 304) and status >= 200
        self.body_allowed = body_allowed
        if body_allowed and not has_length:
            if head is not None and head.version == 11:
                self.chunked_response = True
                block += b"Transfer-Encoding: chunked\r\n"
            else:
                self.keep_alive = False  # an unframed body ends with the connection
        if not self.keep_alive or self.hub.draining:
            self.keep_alive = False
            end = b"Connection: close\r\n\r\n"
        elif head is not None and head.version == 10:
            end = b"Connection: keep-alive\r\n\r\n"
        else:
            end = b"\r\n"
        self.pending_head = b"HTTP/1.1 %d %s\r\n%s%s" % (status, reason_phrase(status), block, end)
        self.loop.call_soon(self._flush_head)

    def _flush_head(self) -> None:
        head, self.pending_head = self.pending_head, None
        if head is not None and not self.closed:
            self._write(head)

    def write(self, data: bytes) -> asyncio.Future[None] | None:
        """Body bytes; returns a future to wait for while the client is not reading."""
        if self.closed:
            return None
        if self.body_allowed and data:
            if self.chunked_response:
                data = encode_chunk(data)
            if self.pending_head is not None:
                data = self.pending_head + data
                self.pending_head = None
            self._write(data)
        if self.write_paused:
            if self.drained is None:
                self.drained = self.loop.create_future()
            return self.drained
        return None

    def finish(self) -> None:
        """The response is complete."""
        if self.response_done:
            return
        self.response_done = True
        tail = LAST_CHUNK if self.chunked_response and self.body_allowed else b""
        if self.pending_head is not None:
            tail = self.pending_head + tail
            self.pending_head = None
        if tail and not self.closed:
            self._write(tail)
        if self.closed:
            return
        if not self.request_done:
            if (
                self.keep_alive
                and self.decoder is None
                and self.body_left <= DISCARD_MAX
                and self.state in (HEAD_PHASE, BODY)
            ):
                # Answered before the request ended (an upstream that replies before it has
                # read the body, or a drain still pending): read and discard the rest of a
                # small body, as NGINX does, and keep the connection; _request_end follows.
                return
            # Answered before the request body ended: we will not read the rest; say so by
            # closing, after a moment of draining so the answer survives.
            self.keep_alive = False
            self._linger()
            return
        if self.state == WAIT:
            self._next_request()

    def respond(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes, close: bool = False
    ) -> None:
        """A whole small response in one write (headers must carry its Content-Length)."""
        if close:
            self.keep_alive = False
        self.send_head(status, headers, True)
        if body and self.body_allowed:
            data = (self.pending_head or b"") + body
            self.pending_head = None
            self._write(data)
        self.finish()

    def upgrade(self, tunnel: Tunnel, response_head: bytes) -> None:
        """Switch to a byte tunnel: write the 101 head, then hand every client byte to ``tunnel``."""
        self._cancel_timer()
        self.response_started = True
        self.response_done = True
        self.request_done = True
        self.delegate = None
        self.tunnel = tunnel
        self.state = TUNNEL
        self._write(response_head)
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            self._tunnel_feed(data)
        self._maybe_resume()

    def _tunnel_feed(self, data: bytes) -> None:
        assert self.tunnel is not None
        future = self.tunnel.client_data(data)
        if future is not None and not future.done():
            self.delegate_busy = True
            self._pause_reading()
            future.add_done_callback(self._tunnel_ready)

    def _tunnel_ready(self, _future: asyncio.Future[None]) -> None:
        self.delegate_busy = False
        self._maybe_resume()

    # -- the client reads slowly: backpressure and send_timeout ----------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.send_timer is None:
            self.send_timer = self.loop.call_later(self.hub.limits.send_timeout, self._send_timed_out)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None
        self._wake_writer()

    def _send_timed_out(self) -> None:
        self.send_timer = None
        if self.write_paused and not self.closed:
            self.send_timed_out = True
            self._abort()  # connection_lost follows and tells the delegate

    def _wake_writer(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)
