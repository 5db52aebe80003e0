"""Client connection streams with the two limits Tornado lacks: a header deadline and a 431.

Tornado uses one timer for both the keep-alive idle wait and the reading of a request head, and
closes the socket without a word when a head is too large. A gateway behind a load balancer
needs the idle wait longer than the balancer's (AWS: 60 s) but must still cut a client that
trickles its headers (slowloris), and should answer an oversized head with 431.

``HTTP1Connection`` reads every request head with ``read_until_regex``; these stream classes
override exactly that call:

- waiting for the first byte of a request is bounded by ``idle_timeout`` on a kept-alive
  connection and by ``header_timeout`` on a fresh one (a connection that never sends anything is
  a slowloris too);
- from the first byte, the whole head must arrive within ``header_timeout``;
- a head over ``max_bytes`` gets a 431 envelope before the connection closes.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import uuid
from collections.abc import Awaitable
from typing import Any

from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from .errors import error_body


def _closing_error(status_line: bytes, code: str, message: str) -> bytes:
    request_id = str(uuid.uuid4())
    body = error_body(code, message, request_id)
    return (
        b"%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Request-Id: %s\r\n"
        b"Connection: close\r\n\r\n%s" % (status_line, len(body), request_id.encode(), body)
    )


def _header_too_large_response() -> bytes:
    return _closing_error(
        b"HTTP/1.1 431 Request Header Fields Too Large", "HEADERS_TOO_LARGE", "Request headers too large"
    )


# What Tornado writes, bare, for a request it cannot parse (bad header line, bad chunk size...).
_TORNADO_BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"


class _HeadLimits:
    """Mixed into Tornado's stream classes; configured by ``configure`` right after accept."""

    idle_timeout: float = 75.0
    header_timeout: float = 10.0
    heads_read: int = 0
    last_was_head: bool = False
    head_limit_hit: bool = False

    def configure(self, idle_timeout: float, header_timeout: float) -> None:
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        super().set_nodelay(True)  # type: ignore[misc]

    def set_nodelay(self, value: bool) -> None:
        """Keep Nagle off for good.

        Tornado turns TCP_NODELAY on at the end of each response and off again after it: two
        system calls per request that a proxy, which always wants small writes sent at once,
        does not need.
        """

    def write(self, data: bytes | memoryview, *args: Any, **kwargs: Any) -> Any:
        # Tornado answers a malformed request with a bare status line; every answer of ours
        # carries the JSON envelope (SPEC 10), so swap it (Tornado closes the connection next).
        if len(data) == len(_TORNADO_BARE_400) and data == _TORNADO_BARE_400 and not self.last_was_head:
            data = _closing_error(b"HTTP/1.1 400 Bad Request", "VALIDATION_ERROR", "Malformed request")
        return super().write(data, *args, **kwargs)  # type: ignore[misc]

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Awaitable[bytes]:
        return self._read_head(regex, max_bytes)

    async def _read_head(self, regex: bytes, max_bytes: int | None) -> bytes:
        # Timers that close the stream (the pending read then fails with StreamClosedError,
        # which Tornado treats as the client going away) cost less than a wait_for per request.
        stream: Any = self
        loop = asyncio.get_running_loop()
        first = b""
        if not stream._read_buffer_size:
            wait = self.idle_timeout if self.heads_read else self.header_timeout
            timer = loop.call_later(wait, stream.close)
            try:
                first = bytes(await stream.read_bytes(1, partial=True))
            finally:
                timer.cancel()
        self.heads_read += 1
        timer = loop.call_later(self.header_timeout, stream.close)
        try:
            limit = max_bytes - len(first) if max_bytes is not None else None
            rest = await super().read_until_regex(regex, limit)  # type: ignore[misc]
        finally:
            timer.cancel()
        head = first + bytes(rest) if first else bytes(rest)
        self.last_was_head = head.lstrip(b"\r\n").startswith(b"HEAD ")  # no body in answers to HEAD
        return head

    def _check_max_bytes(self, delimiter: bytes | re.Pattern[bytes], size: int) -> None:
        stream: Any = self
        if stream._read_max_bytes is not None and size > stream._read_max_bytes and not self.head_limit_hit:
            self.head_limit_hit = True
            self._answer_431()
        super()._check_max_bytes(delimiter, size)  # type: ignore[misc]

    def _answer_431(self) -> None:
        """Best effort: the stream is about to be closed by Tornado, so write straight to the socket."""
        sock: socket.socket | None = getattr(self, "socket", None)
        if sock is None or isinstance(self, SSLIOStream):
            return  # on TLS the record layer is Tornado's; it will just close
        try:
            sock.send(_header_too_large_response())
            sock.shutdown(socket.SHUT_WR)
            # Drain what the client already sent so closing does not reset the connection
            # (a reset can destroy our 431 before the client reads it).
            for _ in range(64):
                if not sock.recv(65536):
                    break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNRESET, errno.EPIPE):
                return


class GatewayStream(_HeadLimits, IOStream):
    pass


class GatewaySSLStream(_HeadLimits, SSLIOStream):
    pass


def adopt(stream: IOStream, idle_timeout: float, header_timeout: float) -> None:
    """Give a freshly accepted Tornado stream the gateway's head-reading rules."""
    stream.__class__ = GatewaySSLStream if isinstance(stream, SSLIOStream) else GatewayStream
    stream.configure(idle_timeout, header_timeout)  # type: ignore[attr-defined]


async def linger_close(stream: IOStream, data: bytes, seconds: float = 2.0, max_bytes: int = 8 << 20) -> None:
    """Write a final answer, stop sending, and drain what the client still sends before closing.

    This is NGINX's lingering close: a close with unread data makes the kernel send a reset,
    which can discard the answer we just wrote from the client's receive buffer.
    """
    loop = asyncio.get_running_loop()
    timer = loop.call_later(seconds, stream.close)
    try:
        await stream.write(data)
        if not isinstance(stream, SSLIOStream):
            stream.socket.shutdown(socket.SHUT_WR)
            drained = 0
            while drained < max_bytes:
                drained += len(await stream.read_bytes(65536, partial=True))
    except (StreamClosedError, OSError):
        pass
    finally:
        timer.cancel()
        stream.close()
