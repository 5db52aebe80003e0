"""WebSocket proxying: checked handshakes on both sides, then a frame-aware byte tunnel.

Frames are relayed as they are (client frames stay masked, the upstream's stay unmasked), so
text, binary, pings and close codes pass through in both directions without being decoded and
re-encoded, and extensions negotiated end to end (permessage-deflate) keep working. The gateway
still reads every client frame header: that is where it enforces masking (RFC 6455 5.1), the
message size limit and ``ws_rate_limit``.

The handshake is validated on both sides (HARDENING A-41/A-42): a malformed client upgrade is
400; an upstream that does not answer 101 with the right ``Sec-WebSocket-Accept`` never gets a
tunnel (a 426 or 403 is relayed like any response; a 101 with a wrong accept is 502).
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


def switching_protocols(
    upstream_headers: list[tuple[bytes, bytes]], key: str, request_id: str
) -> bytes | None:
    """The 101 answer for the client, or None when the upstream's accept does not match."""
    echoed: list[str] = []
    accept_ok = False
    for name, value in upstream_headers:
        text_name = name.decode("latin-1")
        for wanted in _ACCEPT_ECHO:
            if text_name.lower() == wanted.lower():
                text_value = value.decode("latin-1")
                if wanted == "Sec-WebSocket-Accept":
                    accept_ok = text_value == accept_for(key)
                echoed.append(f"{wanted}: {text_value}\r\n")
    if not accept_ok:
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
        if opcode in (0, 1, 2):
            self.message_bytes = length if opcode else self.message_bytes + length
            if self.message_bytes > MAX_MESSAGE_BYTES:
                return CLOSE_TOO_BIG
            if fin and self.window is not None and not self.window.allow(time.monotonic()):
                return CLOSE_POLICY_VIOLATION
        return 0


class WebSocketTunnel:
    """Relays frames between a client connection in tunnel mode and an upstream tunnel.

    Acts as the upstream connection's sink after the 101, and as the client connection's
    ``Tunnel``. ``on_closed(bytes_to_client)`` runs once when both directions are done.
    Backpressure both ways: a full client socket pauses the upstream, a full upstream socket
    pauses the client.
    """

    def __init__(
        self,
        client: ClientConnection,
        upstream: UpstreamConnection,
        window: MessageWindow | None,
        on_closed: Callable[[int], None],
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.frames = ClientFrames(window)
        self.on_closed = on_closed
        self.bytes_to_client = 0
        self.closed = False

    def start(self, response_head: bytes) -> None:
        self.client.upgrade(self, response_head)

    # Upstream -> client (ResponseSink) ------------------------------------------------------

    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        pass

    def on_data(self, data: bytes) -> bool:
        if self.closed:
            return True
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
