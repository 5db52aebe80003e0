"""WebSocket proxying: checked handshakes on both sides, then a frame-aware byte tunnel.

Frames are relayed as they are (client frames stay masked, the upstream's stay unmasked), so
text, binary, pings and close codes pass through in both directions without being decoded and
re-encoded, and extensions negotiated end to end (permessage-deflate) keep working. The gateway
still reads every client frame header: that is where it enforces masking (RFC 6455 5.1), the
message size limit and ``ws_rate_limit``. Control frames count toward ``ws_rate_limit`` like
data messages (a ping flood is a flood), must be final and at most 125 bytes (RFC 6455 5.5), and
nothing may follow the client's close frame; reserved opcodes are a protocol error (1002).

A tunnel with no bytes in either direction for ``ws_idle_timeout`` (SPEC 13.8) is closed with
1001 on both sides. The timer is one ``call_later`` per tunnel that wakes at the earliest
moment the tunnel could be idle, checks a last-activity timestamp and re-arms itself: relaying a
frame costs a clock read, never a timer reset.

The handshake is validated on both sides (HARDENING A-41/A-42): a malformed client upgrade is
400; an upstream that does not answer 101 with the right ``Sec-WebSocket-Accept`` never gets a
tunnel (a 426 or 403 is relayed like any response; a 101 with a wrong accept, or without
``Upgrade: websocket`` and a ``Connection`` header listing ``upgrade``, is 502).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .http1.headers import Headers
from .upstream.client import UpstreamConnection

if TYPE_CHECKING:
    from .http1.connection import ClientConnection

log = logging.getLogger("fastgw")

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_GOING_AWAY = 1001

DEFAULT_IDLE_TIMEOUT = 3600.0  # routes[].ws_idle_timeout (SPEC 13.8)
_IDLE_SLACK = 0.005  # the loop may wake a timer this much early: count that as due
_OP_CLOSE = 0x8
_MAX_CONTROL_PAYLOAD = 125

# Forwarded to the upstream so the handshake is end to end.
HANDSHAKE_HEADERS = (
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
)
_ACCEPT_ECHO = ("Sec-WebSocket-Accept", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions")


def wants_upgrade(headers: Headers) -> bool:
    return "Upgrade" in headers and headers.get("Upgrade", "").strip().lower() == "websocket"


def handshake_problem(method: str, version: str, headers: Headers) -> str | None:
    """Why a client upgrade request is not a valid RFC 6455 opening handshake, or None."""
    if method != "GET" or version != "HTTP/1.1":
        return "WebSocket upgrade must be GET over HTTP/1.1"
    tokens = {t.strip().lower() for t in ",".join(headers.get_list("Connection")).split(",")}
    if "upgrade" not in tokens:
        return "Connection header must contain 'upgrade'"
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return "Invalid Sec-WebSocket-Key"
    except (binascii.Error, ValueError):
        return "Invalid Sec-WebSocket-Key"
    if headers.get("Sec-WebSocket-Version") != "13":
        return "Unsupported Sec-WebSocket-Version"
    return None


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",")}


def switching_protocols(
    upstream_headers: list[tuple[bytes, bytes]], key: str, request_id: str
) -> bytes | None:
    """The 101 answer for the client, or None when the upstream's 101 is not a WebSocket one.

    The upstream must answer ``Upgrade: websocket`` (exactly that protocol, any case),
    ``Connection`` listing the ``upgrade`` token (any case, possibly among others and across
    several header lines) and the ``Sec-WebSocket-Accept`` computed from ``key`` (RFC 6455 4.1).
    """
    echoed: list[str] = []
    accept_ok = False
    upgrade: list[bytes] = []
    connection: set[bytes] = set()
    for name, value in upstream_headers:
        lower = name.lower()
        if lower == b"upgrade":
            upgrade.append(value.strip().lower())
        elif lower == b"connection":
            connection |= _tokens(value)
        text_name = name.decode("latin-1")
        for wanted in _ACCEPT_ECHO:
            if text_name.lower() == wanted.lower():
                text_value = value.decode("latin-1")
                if wanted == "Sec-WebSocket-Accept":
                    accept_ok = text_value == accept_for(key)
                echoed.append(f"{wanted}: {text_value}\r\n")
    if not accept_ok or upgrade != [b"websocket"] or b"upgrade" not in connection:
        return None
    head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    return (head + "".join(echoed) + f"X-Request-Id: {request_id}\r\n\r\n").encode("latin-1")


def close_frame(code: int, masked: bool) -> bytes:
    payload = struct.pack("!H", code)
    if not masked:
        return b"\x88" + bytes([len(payload)]) + payload
    mask = os.urandom(4)
    return (
        b"\x88" + bytes([0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


class MessageWindow:
    """At most ``messages`` client messages in any ``window`` seconds (a sliding log)."""

    def __init__(self, messages: int, window: float) -> None:
        self.messages = messages
        self.window = window
        self.times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        times = self.times
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.messages:
            return False
        times.append(now)
        return True


class ClientFrames:
    """Reads client frame headers as bytes stream past; never buffers payloads."""

    def __init__(self, window: MessageWindow | None) -> None:
        self.window = window
        self.header = bytearray()
        self.need = 2
        self.remaining = 0
        self.message_bytes = 0
        self.closing = False  # the client sent its close frame: nothing may follow it

    def feed(self, data: bytes) -> tuple[int, int]:
        """(close code or 0, offset of the offending frame's first byte) for this chunk."""
        i = 0
        end = len(data)
        while i < end:
            if self.remaining:
                take = min(self.remaining, end - i)
                self.remaining -= take
                i += take
                continue
            frame_start = i - len(self.header)
            need = self.need - len(self.header)
            self.header += data[i : i + need]
            i += min(need, end - i)
            if len(self.header) < self.need:
                return 0, 0
            if self.need == 2:
                if not self.header[1] & 0x80:
                    return CLOSE_PROTOCOL_ERROR, max(frame_start, 0)
                short = self.header[1] & 0x7F
                self.need = 2 + (2 if short == 126 else 8 if short == 127 else 0) + 4
                if len(self.header) < self.need:
                    continue
            code = self._frame_complete()
            if code:
                return code, max(frame_start, 0)
        return 0, 0

    def _frame_complete(self) -> int:
        header = self.header
        short = header[1] & 0x7F
        if short == 126:
            length = struct.unpack_from("!H", header, 2)[0]
        elif short == 127:
            length = struct.unpack_from("!Q", header, 2)[0]
        else:
            length = short
        opcode = header[0] & 0x0F
        fin = header[0] & 0x80
        self.header = bytearray()
        self.need = 2
        self.remaining = length
        if self.closing:
            return CLOSE_PROTOCOL_ERROR  # RFC 6455 5.5.1: the close frame is the last one
        if opcode in (0, 1, 2):
            self.message_bytes = length if opcode else self.message_bytes + length
            if self.message_bytes > MAX_MESSAGE_BYTES:
                return CLOSE_TOO_BIG
            if fin and self.window is not None and not self.window.allow(time.monotonic()):
                return CLOSE_POLICY_VIOLATION
            return 0
        if opcode < _OP_CLOSE or opcode > 0xA or not fin or length > _MAX_CONTROL_PAYLOAD:
            return CLOSE_PROTOCOL_ERROR  # a reserved opcode, or a fragmented or long control frame
        window = self.window
        if opcode == _OP_CLOSE:
            # Counted, never refused: the client's own close code is relayed (SPEC 11), and as
            # nothing may follow it, close frames cannot be used to flood past the limit.
            self.closing = True
            if window is not None:
                window.allow(time.monotonic())
        elif window is not None and not window.allow(time.monotonic()):
            return CLOSE_POLICY_VIOLATION  # ping and pong count like messages
        return 0


class WebSocketTunnel:
    """Relays frames between a client connection in tunnel mode and an upstream tunnel.

    Acts as the upstream connection's sink after the 101, and as the client connection's
    ``Tunnel``. ``on_closed(bytes_to_client)`` runs once when both directions are done.
    Backpressure both ways: a full client socket pauses the upstream, a full upstream socket
    pauses the client. No byte either way for ``idle_timeout`` seconds (None: the 1 h default)
    closes both sides with 1001. Create it inside the running event loop.
    """

    def __init__(
        self,
        client: ClientConnection,
        upstream: UpstreamConnection,
        window: MessageWindow | None,
        on_closed: Callable[[int], None],
        idle_timeout: float | None = None,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.frames = ClientFrames(window)
        self.on_closed = on_closed
        self.bytes_to_client = 0
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.idle_timeout = DEFAULT_IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        self.last_activity = self.loop.time()
        self.idle_timer: asyncio.TimerHandle | None = None

    def start(self, response_head: bytes) -> None:
        self.last_activity = self.loop.time()
        self.idle_timer = self.loop.call_later(self.idle_timeout, self._idle_check)
        self.client.upgrade(self, response_head)

    def _idle_check(self) -> None:
        """Close a tunnel silent for ``idle_timeout``; else sleep until it next could be."""
        self.idle_timer = None
        if self.closed:
            return
        due = self.last_activity + self.idle_timeout
        if self.loop.time() >= due - _IDLE_SLACK:
            self.close(CLOSE_GOING_AWAY)
            return
        self.idle_timer = self.loop.call_at(due, self._idle_check)

    # Upstream -> client (ResponseSink) ------------------------------------------------------

    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        pass

    def on_data(self, data: bytes) -> bool:
        if self.closed:
            return True
        self.last_activity = self.loop.time()
        self.bytes_to_client += len(data)
        future = self.client.write(data)
        if future is None:
            return True
        future.add_done_callback(self._client_drained)
        return False

    def on_end(self) -> None:
        self.close()

    def on_error(self, reason: str) -> None:
        self.close()

    def _client_drained(self, _future: asyncio.Future[None]) -> None:
        if self.client.closed:
            self.close()
        else:
            self.upstream.resume_reading()

    # Client -> upstream (Tunnel) --------------------------------------------------------------

    def client_data(self, data: bytes) -> asyncio.Future[None] | None:
        if self.closed:
            return None
        self.last_activity = self.loop.time()
        try:
            code, offset = self.frames.feed(data)
        except Exception:
            log.exception("websocket relay failed")
            self.close(CLOSE_PROTOCOL_ERROR)
            return None
        if code:
            if offset:
                self.upstream.write(data[:offset])
            self.close(code)
            return None
        return self.upstream.write(data)

    def client_closed(self) -> None:
        self.close()

    def close(self, code: int = 0) -> None:
        """Tear down both sides; with a code, tell each side why in a close frame first."""
        if self.closed:
            return
        self.closed = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        client = self.client
        if code:
            if not client.closed:
                client.write(close_frame(code, masked=False))
            self.upstream.write(close_frame(code, masked=True))
        self.upstream.close_tunnel()
        if not client.closed:
            if code:
                client.close_soon(0.1)  # let the close frame reach the client first
            else:
                client.close()
        self.on_closed(self.bytes_to_client)

    def going_away(self) -> None:
        """Shutdown deadline reached: close politely with 1001."""
        self.close(CLOSE_GOING_AWAY)
