"""One client connection as an ``asyncio.Protocol``, driven by the HTTP/1.1 codec in speedups.

The connection reads request heads with ``parse_request_head``, hands each request to a fresh
delegate (the proxy's exchange) through four calls in Tornado's ``HTTPMessageDelegate`` shape,
and writes the delegate's response with the framing the client needs. It owns everything that
is about the socket rather than the request:

- keep-alive and pipelining: one request at a time, answered in order; bytes that arrive early
  wait in a read-ahead buffer of bounded size (reading pauses beyond it);
- the waits: ``header_timeout`` from a fresh connection's accept and from the first byte of
  every head, ``idle_timeout`` between requests, ``body_timeout`` for silences while a body
  arrives (408 before a response started), ``send_timeout`` while the client leaves a response
  unread (then the connection is dropped);
- refusals that need no route: malformed heads (400), oversized heads (431), all with the JSON
  envelope, ``Connection: close`` and a lingering close so the answer is not lost to a reset;
- backpressure both ways: a delegate that returns a pending future from ``data_received``
  pauses reading; ``write`` returns a future while the socket is full (``pause_writing``);
- switching to a tunnel (WebSocket) that takes the socket's bytes as they come.

Delegate contract: ``headers_received`` is called once; the body follows through
``data_received`` (only after the awaitable ``headers_received`` returned is done) and
``finish`` when it ended; ``on_connection_close`` is called instead if the client goes away
before the response finished; ``body_timed_out`` if the body stalls. The delegate answers
through the response side, ``response_writer.ResponseWriter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from typing import TYPE_CHECKING, Any, cast

from ..speedups import (
    ChunkedDecoder,
    HttpParseError,
    RequestHead,
    parse_request_head,
)
from ..timers import Deadline
from .headers import Headers
from .interfaces import ClientContext, RequestDelegate, Tunnel, closing_error, subject_cn
from .response_writer import ResponseWriter
from .states import BODY, CLOSED, HEAD, HEAD_PHASE, LINGER, TUNNEL, WAIT

if TYPE_CHECKING:
    from .server import ConnectionHub

log = logging.getLogger("fastgw")

READ_AHEAD = 256 * 1024  # unprocessed bytes buffered before reading pauses
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 8 << 20
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LINGER_RESET = struct.pack("ii", 1, 0)


class ClientConnection(ResponseWriter, asyncio.Protocol):
    """A client connection; also (``ResponseWriter``) the writer its current delegate answers with."""

    def __init__(self, hub: ConnectionHub, local_port: int = 0) -> None:
        self.hub = hub
        self.local_port = local_port
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.context = ClientContext("-", hub.scheme)
        self.buf = bytearray()
        self.state = HEAD
        self.closed = False
        self.delegate: RequestDelegate | None = None
        self.head: RequestHead | None = None
        self.keep_alive = True
        self.body_left = 0
        self.decoder: ChunkedDecoder | None = None
        self.request_done = True
        self.response_done = True
        self.response_started = False
        self.body_allowed = True
        self.chunked_response = False
        self.pending_head: bytes | None = None
        self.read_paused = False
        self.delegate_busy = False  # a delegate future is pending: deliver nothing meanwhile
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.tunnel: Tunnel | None = None
        self.deadline = Deadline(self.loop)  # header, body, idle or linger: one at a time
        self.send_timer: asyncio.TimerHandle | None = None
        self.last_read = 0.0
        self.lingered = 0
        self.send_timed_out = False
        self.timer_kind_idle = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        hub = self.hub
        peer = transport.get_extra_info("peername")
        remote_ip = peer[0] if isinstance(peer, tuple) else "unix"
        cert_user = None
        if hub.require_client_cert:
            sslobj: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
            cert_user = subject_cn(sslobj.getpeercert() if sslobj is not None else None)
        self.context = ClientContext(remote_ip, hub.scheme, cert_user, self.local_port)
        if len(hub.connections) >= hub.limits.max_connections or hub.draining:
            self.state = CLOSED
            self.transport.write(closing_error(503, "SERVICE_UNAVAILABLE", "Too many connections"))
            self.transport.close()
            return
        hub.connections.add(self)
        self._arm(hub.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state = CLOSED
        self.hub.connections.discard(self)
        self._cancel_timers()
        self._wake_writer()
        if self.tunnel is not None:
            self.tunnel.client_closed()
            return
        delegate = self.delegate
        if delegate is not None and not self.response_done:
            self.delegate = None
            delegate.on_connection_close()

    def eof_received(self) -> bool | None:
        # A client that stops sending before its answer has gone away, as NGINX judges it
        # (logged 499): closing here tells the exchange, which drops a queued upstream request.
        return None

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == TUNNEL:
            assert self.tunnel is not None
            self._tunnel_feed(data)
            return
        if state == LINGER or state == CLOSED:
            self.lingered += len(data)
            if self.lingered > LINGER_MAX_BYTES:
                self._abort()
            return
        self.last_read = self.loop.time()
        if state == BODY and not self.buf and self.decoder is None and not self.delegate_busy:
            # The common streaming case: body bytes go to the delegate without being copied.
            take = len(data) if len(data) <= self.body_left else self.body_left
            self.body_left -= take
            if take < len(data):
                self.buf += data[take:]
            self._deliver(data if take == len(data) else data[:take])
            if self.body_left == 0 and self.state == BODY and not self.delegate_busy:
                self._request_end()
            if self.buf and self.state == BODY:
                self._process()
            return
        first_bytes = state == HEAD and not self.buf and self.timer_kind_idle
        self.buf += data
        self._process()
        if first_bytes and self.state == HEAD and self.buf and not self.closed:
            # The first bytes of a kept-alive connection's next head, but not all of it: the
            # header deadline runs from now (a head that came whole never needs one).
            self.timer_kind_idle = False
            self._arm(self.hub.limits.header_timeout, self._head_timed_out)

    # -- the request side ---------------------------------------------------------------------

    def _process(self) -> None:
        """Make as much progress on the buffered bytes as the current state allows."""
        buf = self.buf
        while not self.closed:
            state = self.state
            if state == HEAD:
                if not buf:
                    return
                try:
                    parsed = parse_request_head(buf, self.hub.limits.max_header_bytes)
                except HttpParseError as exc:
                    self._refuse(exc.status, exc.message)
                    return
                if parsed is None:
                    return
                head, used = parsed
                del buf[:used]
                self._start_request(head)
            elif state == BODY:
                if self.delegate_busy or not buf:
                    return
                if self.decoder is None:
                    take = min(len(buf), self.body_left)
                    chunk = bytes(buf[:take])
                    del buf[:take]
                    self.body_left -= take
                    self._deliver(chunk)
                    if self.body_left == 0 and self.state == BODY and not self.delegate_busy:
                        self._request_end()
                else:
                    decoder = self.decoder
                    data = bytes(buf)
                    buf.clear()
                    try:
                        pieces = decoder.feed(data)
                    except HttpParseError as exc:
                        self._refuse(exc.status, exc.message)
                        return
                    for piece in pieces:
                        self._deliver(piece)
                    if decoder.done:
                        buf[:0] = decoder.tail
                        if self.state == BODY:
                            if self.delegate_busy:
                                self.decoder = None
                                self.body_left = 0
                                return
                            self._request_end()
            else:
                # Head phase or waiting for the response: bytes of the next request wait.
                if len(buf) > READ_AHEAD:
                    self._pause_reading()
                return

    def _start_request(self, head: RequestHead) -> None:
        self._cancel_timer()
        self.head = head
        self.keep_alive = head.keep_alive and not self.hub.draining
        self.request_done = False
        self.response_done = False
        self.response_started = False
        self.chunked_response = False
        self.pending_head = None
        self.body_allowed = head.method != "HEAD"
        self.decoder = ChunkedDecoder() if head.chunked else None
        self.body_left = head.content_length if head.content_length > 0 else 0
        delegate = self.delegate = self.hub.start_request(self)
        self.state = HEAD_PHASE
        work = delegate.headers_received(head, Headers.from_raw(head.headers))
        if work is None:
            self._head_phase_done(None)
        else:
            task = asyncio.ensure_future(work)
            task.add_done_callback(self._head_phase_done)

    def _head_phase_done(self, task: asyncio.Future[None] | None) -> None:
        if task is not None:
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                log.error("request failed before its body was read", exc_info=exc)
        if self.closed or self.state != HEAD_PHASE:
            return
        if self.decoder is None and self.body_left == 0:
            self._request_end()
            return
        head = self.head
        delegate = self.delegate
        if head is not None and delegate is not None and not self.response_started and delegate.wants_body():
            for name, value in head.headers:
                if name == b"expect" and value.lower() == b"100-continue":
                    self._write(_CONTINUE)
        self.state = BODY
        self.last_read = self.loop.time()
        self._process()
        if self.state == BODY and not self.closed:
            # More of the body is to come (one that came whole never needs the deadline).
            self._arm(self.hub.limits.body_timeout, self._body_check)
        self._maybe_resume()

    def _deliver(self, chunk: bytes) -> None:
        delegate = self.delegate
        if delegate is None or not chunk:
            return
        work = delegate.data_received(chunk)
        if work is not None:
            future = asyncio.ensure_future(work)
            if not future.done():
                self.delegate_busy = True
                self._pause_reading()
                future.add_done_callback(self._delegate_ready)

    def _delegate_ready(self, future: asyncio.Future[None]) -> None:
        self.delegate_busy = False
        if self.closed or self.state != BODY:
            return
        if self.decoder is None and self.body_left == 0:
            self._request_end()
        else:
            self._process()
        self._maybe_resume()

    def _request_end(self) -> None:
        self.state = WAIT
        self.request_done = True
        self.decoder = None
        self._cancel_timer()
        delegate = self.delegate
        if delegate is not None:
            delegate.finish()
        if self.response_done and not self.closed and self.state == WAIT:
            self._next_request()

    def _next_request(self) -> None:
        """The exchange is over on both sides: keep the connection for the next one, or close."""
        self.delegate = None
        self.head = None
        if not self.keep_alive or self.hub.draining:
            self.close()
            return
        self.state = HEAD
        if self.buf:
            self.timer_kind_idle = False
            self._arm(self.hub.limits.header_timeout, self._head_timed_out)
            self.loop.call_soon(self._process)  # pipelined: no recursion through the delegate
        else:
            self.timer_kind_idle = True
            self._arm(self.hub.limits.idle_timeout, self._idle_timed_out)
        self._maybe_resume()

    def close(self) -> None:
        """Close after what was written is sent (a cut response stays cut: no new status line)."""
        if self.closed:
            return
        self.closed = True
        self.state = CLOSED
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()

    def close_soon(self, delay: float) -> None:
        self.loop.call_later(delay, self.close)

    # -- internals ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def _refuse(self, status: int, message: str) -> None:
        code = "HEADERS_TOO_LARGE" if status == 431 else "VALIDATION_ERROR"
        if self.response_started and not self.response_done:
            self.close()  # a response is under way: never a second status line
            return
        # The head could not be parsed, but an answer to HEAD must still carry no body.
        head_request = self.buf.startswith(b"HEAD ") or (self.head is not None and not self.body_allowed)
        self._write(closing_error(status, code, message, head_request))
        self.keep_alive = False
        delegate, self.delegate = self.delegate, None
        self.response_done = True
        if delegate is not None:
            delegate.on_connection_close()
        self._linger()

    def _linger(self) -> None:
        """NGINX's lingering close: stop sending, drain what the client still sends, then close.

        Closing with unread input makes the kernel send a reset, which can destroy the answer we
        just wrote before the client reads it.
        """
        if self.closed or self.transport is None:
            return
        self.state = LINGER
        self.buf.clear()
        self._cancel_timer()
        self.delegate = None
        self._maybe_resume(force=True)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.deadline.set(LINGER_SECONDS, self.close)

    def _abort(self) -> None:
        """Reset the connection: what the kernel still holds for the client is discarded too
        (a client that reads nothing must not keep megabytes of ours buffered)."""
        transport = self.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()
        self.closed = True

    def _arm(self, seconds: float, callback: Any) -> None:
        self.deadline.set(seconds, callback)

    def _cancel_timer(self) -> None:
        self.deadline.clear()
        self.timer_kind_idle = False

    def _cancel_timers(self) -> None:
        self.deadline.cancel()
        self.timer_kind_idle = False
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    def _head_timed_out(self) -> None:
        if self.state == HEAD:
            self.close()

    def _idle_timed_out(self) -> None:
        if self.state == HEAD and not self.buf:
            self.close()

    def _body_check(self) -> None:
        if self.state != BODY:
            return
        limit = self.hub.limits.body_timeout
        silent = self.loop.time() - self.last_read
        if silent < limit or self.delegate_busy:
            # Still arriving (or we are the slow side, waiting for the upstream to take it).
            self.deadline.set(max(limit - silent, 0.05), self._body_check)
            return
        delegate = self.delegate
        if delegate is not None:
            delegate.body_timed_out()
        if not self.closed and self.state == BODY:
            self.close()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume(self, force: bool = False) -> None:
        if not self.read_paused or self.closed or self.transport is None:
            return
        if force or (not self.delegate_busy and len(self.buf) <= READ_AHEAD):
            self.read_paused = False
            self.transport.resume_reading()

    # -- drain ---------------------------------------------------------------------------------

    def going_away(self) -> None:
        """SIGTERM: close now if between requests, else after the response in progress."""
        self.keep_alive = False
        if self.idle:
            self.close()

    @property
    def idle(self) -> bool:
        """Between requests: nothing read of the next one, no exchange in progress."""
        return self.state == HEAD and not self.buf and self.delegate is None
