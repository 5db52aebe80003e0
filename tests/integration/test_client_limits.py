"""Slow and oversized clients: header deadline, idle keep-alive, 431, body limits."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Any

from tests.conftest import read_until_closed
from tests.upstream_server import UpstreamServer


def config(upstream: UpstreamServer, **server: Any) -> dict[str, Any]:
    return {
        "server": {"header_timeout": "1s", "idle_timeout": "60s", "body_limit": "64KiB", **server},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/api/*", "upstream": "svc", "auth": "none"},
            {"path": "/small/*", "upstream": "svc", "auth": "none", "body_limit": "1KiB"},
        ],
    }


# These tests bound nothing by the clock: each slow client trickles far longer than
# header_timeout, and only a gateway that enforces it cuts them before they finish.


def test_slow_header_client_is_cut_while_others_are_served(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream))
    slow = socket.create_connection(("127.0.0.1", gw.port))
    head = b"GET /api/slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 60 + b"\r\n\r\n"
    sent: list[int] = []
    served_while_trickling: list[bool] = []

    def trickle() -> None:
        try:
            for byte in head:  # about 9 s at this pace: far past the 1 s header deadline
                slow.sendall(bytes([byte]))
                sent.append(byte)
                time.sleep(0.1)
        except OSError:
            pass

    thread = threading.Thread(target=trickle)
    thread.start()
    while len(sent) < 3:
        time.sleep(0.02)
    status, _, _ = gw.request("GET", "/api/normal")
    served_while_trickling.append(thread.is_alive())
    assert status == 200
    assert read_until_closed(slow, timeout=30) == b""  # cut without an answer
    thread.join(30)
    slow.close()
    assert served_while_trickling == [True]
    assert len(sent) < len(head), "the gateway waited for the whole trickled head"
    assert all(r.target != "/api/slow" for r in upstream.requests)


def test_kept_alive_connection_trickling_its_next_head_is_cut(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    """The header deadline also runs from the first byte of a kept-alive connection's next head
    (idle_timeout, 60 s here, would let this one trickle to the end)."""
    gw = start_gateway(config(upstream))
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(b"GET /api/first HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    head = b"GET /api/slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 60 + b"\r\n\r\n"
    sent = 0
    try:
        for byte in head:  # about 9 s at this pace: far past the 1 s header deadline
            sock.sendall(bytes([byte]))
            sent += 1
            time.sleep(0.1)
    except OSError:
        pass
    assert sent < len(head), "the gateway waited for the whole trickled head"
    assert read_until_closed(sock, timeout=10) == b""
    sock.close()
    assert all(r.target != "/api/slow" for r in upstream.requests)


def test_idle_keep_alive_survives_past_header_timeout(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("GET", "/api/1")
    conn.getresponse().read()
    time.sleep(2.5)  # well past header_timeout (1 s), far below idle_timeout (60 s)
    conn.request("GET", "/api/2")
    assert conn.getresponse().status == 200
    conn.close()


def test_silent_connection_is_dropped_at_header_timeout(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        # With only idle_timeout (60 s) in force this read would time out instead.
        assert read_until_closed(sock, timeout=20) == b""


def test_oversized_headers_get_431(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream, max_header_bytes="8KiB"))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 431")
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "HEADERS_TOO_LARGE"
    assert upstream.requests == []
    assert gw.request("GET", "/api/after")[0] == 200


def test_body_over_limit_from_content_length_is_413(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"POST /small/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"PAYLOAD_TOO_LARGE"' in response
    assert upstream.requests == []


def test_chunked_body_over_limit_is_413_and_upstream_aborted(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 16384
        try:
            for _ in range(8):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                time.sleep(0.05)
        except OSError:
            pass
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"PAYLOAD_TOO_LARGE"' in response
    time.sleep(0.2)
    # The upstream never saw a complete request: its chunked read was cut short.
    assert all(r.target != "/api/upload" for r in upstream.requests)
