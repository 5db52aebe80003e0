"""WebSocket bounds through a real gateway: control frames under ``ws_rate_limit``, the idle
timeout (``ws_idle_timeout``, SPEC 13.8) and the upstream's 101 checked before any tunnel."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import Server, ServerConnection, serve

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsUpstream:
    """Echoes messages; ``/tick`` first sends eight messages 200 ms apart, then echoes.

    ``ended`` is set when a handler returns, i.e. when the gateway closed the upstream side.
    """

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.server: Server = serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        try:
            if ws.request.path.startswith("/tick"):
                for n in range(8):
                    ws.send(f"tick{n}")
                    time.sleep(0.2)
            for message in ws:
                ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.ended.set()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def ws_upstream() -> Iterator[WsUpstream]:
    server = WsUpstream()
    yield server
    server.stop()


def config(port: int, **route: Any) -> dict[str, Any]:
    return {
        "upstreams": {"rpc": {"targets": [f"http://127.0.0.1:{port}"]}},
        "routes": [{"path": "/*", "upstream": "rpc", "websocket": True, "auth": "none", **route}],
    }


def test_ping_flood_past_ws_rate_limit_closes_1008(ws_upstream: WsUpstream, start_gateway: Any) -> None:
    gw = start_gateway(config(ws_upstream.port, ws_rate_limit={"messages": 5, "window": "10s"}))
    with connect(f"ws://127.0.0.1:{gw.port}/echo", ping_interval=None) as ws:
        assert ws.ping(b"first").wait(5)  # under the limit, pings pass and are answered
        with pytest.raises(ConnectionClosed) as excinfo:
            for n in range(2000):
                ws.ping(str(n).encode())
            ws.recv(timeout=5)
    assert excinfo.value.rcvd is not None
    assert excinfo.value.rcvd.code == 1008
    assert ws_upstream.ended.wait(5)


def _closed_after_silence(ws: Any) -> float:
    """Seconds from now until the gateway closes ``ws``, which must be with 1001."""
    silent_since = time.monotonic()
    with pytest.raises(ConnectionClosed) as excinfo:
        ws.recv(timeout=10)
    assert excinfo.value.rcvd is not None
    assert excinfo.value.rcvd.code == 1001
    return time.monotonic() - silent_since


def test_idle_tunnel_is_closed_1001(ws_upstream: WsUpstream, start_gateway: Any) -> None:
    gw = start_gateway(config(ws_upstream.port, ws_idle_timeout="1s"))
    with connect(f"ws://127.0.0.1:{gw.port}/echo", ping_interval=None) as ws:
        # Client traffic keeps it open past the timeout...
        for n in range(6):
            time.sleep(0.3)
            ws.send(f"m{n}")
            assert ws.recv(timeout=5) == f"m{n}"
        # ...silence does not.
        assert 0.9 <= _closed_after_silence(ws) < 4
    assert ws_upstream.ended.wait(5)  # the upstream side is closed too


def test_upstream_frames_alone_keep_the_tunnel_open(ws_upstream: WsUpstream, start_gateway: Any) -> None:
    gw = start_gateway(config(ws_upstream.port, ws_idle_timeout="1s"))
    with connect(f"ws://127.0.0.1:{gw.port}/tick", ping_interval=None) as ws:
        received = [ws.recv(timeout=5) for _ in range(8)]  # about 1.6 s, the client silent
        assert received == [f"tick{n}" for n in range(8)]
        assert 0.9 <= _closed_after_silence(ws) < 4


class FakeUpstream:
    """Answers every upgrade with a 101 carrying the right accept and ``extra`` header lines."""

    def __init__(self, extra: str) -> None:
        self.extra = extra
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(sock)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                head += chunk
            key = ""
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            answer = f"HTTP/1.1 101 Switching Protocols\r\n{self.extra}Sec-WebSocket-Accept: {accept}\r\n\r\n"
            sock.sendall(answer.encode("latin-1"))

    def stop(self) -> None:
        self.listener.close()
        for sock in self.connections:
            sock.close()


BAD_101 = [
    "",
    "Connection: Upgrade\r\n",
    "Upgrade: websocket\r\n",
    "Upgrade: h2c\r\nConnection: Upgrade\r\n",
    "Upgrade: websocket\r\nConnection: keep-alive\r\n",
    "Upgrade: websocket, h2c\r\nConnection: Upgrade\r\n",
]
GOOD_101 = [
    "Upgrade: websocket\r\nConnection: Upgrade\r\n",
    "Upgrade: WebSocket\r\nConnection: keep-alive, UPGRADE\r\n",
    "Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: upgrade\r\n",
]


def test_upstream_101_must_upgrade_to_websocket(start_gateway: Any) -> None:
    fake = FakeUpstream("")
    try:
        cfg = config(fake.port)
        cfg["upstreams"]["rpc"]["circuit"] = {"failures": 100}  # each bad 101 counts as a failure
        gw = start_gateway(cfg)
        for extra in BAD_101:
            fake.extra = extra
            with pytest.raises(InvalidStatus) as excinfo:
                connect(f"ws://127.0.0.1:{gw.port}/x", open_timeout=5)
            response = excinfo.value.response
            assert response.status_code == 502, extra
            assert json.loads(response.body or b"{}")["error"]["code"] == "BAD_GATEWAY"
        for extra in GOOD_101:  # token match, any case, Connection possibly a list
            fake.extra = extra
            url = f"ws://127.0.0.1:{gw.port}/x"
            with connect(url, open_timeout=5, close_timeout=0.5, ping_interval=None) as ws:
                assert ws.response is not None and ws.response.status_code == 101, extra
    finally:
        fake.stop()
