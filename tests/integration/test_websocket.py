"""WebSocket proxying through a real gateway to a real WebSocket upstream."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import Server, ServerConnection, serve

TOKEN = "ws-token-0123456789"


class WsUpstream:
    def __init__(self) -> None:
        self.seen_headers: list[dict[str, str]] = []
        self.server: Server = serve(self._handle, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.seen_headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        if ws.request.path.startswith("/ws/close"):
            ws.close(4001, "bye from upstream")
            return
        try:
            for message in ws:
                ws.send(message)
        except ConnectionClosed:
            pass

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def ws_upstream() -> Iterator[WsUpstream]:
    server = WsUpstream()
    yield server
    server.stop()


def config(ws: WsUpstream) -> dict[str, Any]:
    return {
        "auth": {"tokens": [{"token": TOKEN, "user_id": "u1", "role": "user", "scopes": ["rpc"]}]},
        "upstreams": {"rpc": {"targets": [f"http://127.0.0.1:{ws.port}"]}},
        "routes": [
            {"path": "/ws/*", "upstream": "rpc", "websocket": True, "query_token": True},
            {
                "path": "/limited",
                "upstream": "rpc",
                "websocket": True,
                "auth": "none",
                "ws_rate_limit": {"messages": 5, "window": "10s"},
            },
        ],
    }


def test_text_and_binary_echo_with_identity(ws_upstream: WsUpstream, start_gateway: Any) -> None:
    gw = start_gateway(config(ws_upstream))
    url = f"ws://127.0.0.1:{gw.port}/ws/rpc?token={TOKEN}"
    with connect(url, additional_headers={"X-User-Id": "admin"}) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01\xff" * 1000)
        assert ws.recv(timeout=5) == b"\x00\x01\xff" * 1000
        big = "x" * 200_000
        ws.send(big)
        assert ws.recv(timeout=5) == big
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).read().decode()
        )
        assert "fastgw_websocket_connections 1.0" in text
    seen = ws_upstream.seen_headers[-1]
    assert seen["x-user-id"] == "u1"
    assert TOKEN not in "".join(gw.stdout + gw.stderr)


def test_websocket_needs_auth(ws_upstream: WsUpstream, start_gateway: Any) -> None:
    gw = start_gateway(config(ws_upstream))
    with pytest.raises(InvalidStatus) as excinfo:
        connect(f"ws://127.0.0.1:{gw.port}/ws/rpc")
    assert excinfo.value.response.status_code == 401
    assert ws_upstream.seen_headers == []


def test_upstream_close_code_reaches_client(ws_upstream: WsUpstream, start_gateway: Any) -> None:
    gw = start_gateway(config(ws_upstream))
    with connect(f"ws://127.0.0.1:{gw.port}/ws/close?token={TOKEN}") as ws:
        with pytest.raises(ConnectionClosed) as excinfo:
            ws.recv(timeout=5)
    assert excinfo.value.rcvd is not None
    assert excinfo.value.rcvd.code == 4001


def test_flooding_past_ws_rate_limit_closes_1008(ws_upstream: WsUpstream, start_gateway: Any) -> None:
    gw = start_gateway(config(ws_upstream))
    with connect(f"ws://127.0.0.1:{gw.port}/limited") as ws:
        with pytest.raises(ConnectionClosed) as excinfo:
            for n in range(20):
                ws.send(f"m{n}")
            for _ in range(20):
                ws.recv(timeout=5)
    assert excinfo.value.rcvd is not None
    assert excinfo.value.rcvd.code == 1008


def test_bad_handshake_is_400(ws_upstream: WsUpstream, start_gateway: Any) -> None:
    gw = start_gateway(config(ws_upstream))
    status, _, _ = gw.request(
        "GET",
        "/limited",
        headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "short"},
    )
    assert status == 400
