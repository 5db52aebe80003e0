"""End to end: a real gateway process in front of a real upstream on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from typing import Any

import pytest

from tests.conftest import free_port, read_until_closed
from tests.upstream_server import UpstreamServer


def base_config(upstream: UpstreamServer, **route_extra: Any) -> dict[str, Any]:
    return {
        "server": {"body_limit": "8MiB"},
        "upstreams": {
            "svc": {"targets": [upstream.url], "read_timeout": "1s", "connect_timeout": "1s"},
            "dead": {"targets": [f"http://127.0.0.1:{free_port()}"], "retries": 0},
        },
        "routes": [
            {"path": "/api/*", "upstream": "svc", "auth": "none", **route_extra},
            {"path": "/only-post", "upstream": "svc", "auth": "none", "methods": ["POST", "PUT"]},
            {"path": "/old/*", "upstream": "svc", "auth": "none", "rewrite": "/new"},
            {"path": "/strip/*", "upstream": "svc", "auth": "none", "strip_prefix": True},
            {"path": "/sse", "upstream": "svc", "auth": "none"},
            {"path": "/stall", "upstream": "svc", "auth": "none"},
            {"path": "/reset", "upstream": "svc", "auth": "none"},
            {"path": "/chunked", "upstream": "svc", "auth": "none"},
            {"path": "/dead/*", "upstream": "dead", "auth": "none"},
        ],
    }


def assert_envelope(body: bytes, code: str) -> dict[str, Any]:
    doc = json.loads(body)
    assert doc["ok"] is False
    assert doc["error"]["code"] == code
    assert doc["error"]["requestId"]
    assert isinstance(doc["error"]["message"], str)
    return doc


def test_request_arrives_intact(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    body = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MiB, every byte value
    status, headers, _ = gw.request(
        "PUT",
        "/api/items/7?b=2&a=%20x&a=1",
        body=body,
        headers={"X-Custom": "kept", "Content-Type": "application/octet-stream"},
    )
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.method == "PUT"
    assert seen.target == "/api/items/7?b=2&a=%20x&a=1"
    assert seen.body == body
    assert seen.header("X-Custom") == "kept"
    assert seen.header("Content-Type") == "application/octet-stream"
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == f"127.0.0.1:{gw.port}"
    assert seen.header("X-Request-Id") == headers["x-request-id"]


def test_chunked_request_body_is_reframed(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))

    def parts() -> Any:
        yield b"hello "
        yield b"chunked "
        yield b"world"

    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("POST", "/api/upload", body=parts(), encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    seen = upstream.requests[-1]
    assert seen.body == b"hello chunked world"
    assert seen.header("Transfer-Encoding") == "chunked"
    assert seen.header("Content-Length") is None


def test_hop_by_hop_and_spoofed_headers_are_removed(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(
            b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n"
            b"Connection: X-Secret-Hop, X-User-Id\r\n"
            b"X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nProxy-Authorization: Basic Zm9v\r\n"
            b"Proxy-Connection: keep-alive\r\nX_User_Id: admin\r\nX-User-Id: admin\r\n"
            b"X-Gateway-Signature: v2=forged\r\nX-HTTP-Method-Override: DELETE\r\n"
            b"X-Kept: yes\r\nConnection: close\r\n\r\n"
        )
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 200")
    seen = upstream.requests[-1]
    names = seen.header_names()
    for gone in (
        "connection",
        "x-secret-hop",
        "keep-alive",
        "te",
        "upgrade",
        "http2-settings",
        "proxy-authorization",
        "proxy-connection",
        "x_user_id",
        "x-user-id",
        "x-gateway-signature",
        "x-http-method-override",
    ):
        assert gone not in names, gone
    assert seen.header("X-Kept") == "yes"
    # The upstream's own hop-by-hop headers do not reach the client either.
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    assert b"x-upstream-hop" not in head
    assert b"keep-alive: timeout" not in head
    assert b"x-upstream: yes" in head


def test_request_id_kept_or_generated(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    _, headers, _ = gw.request("GET", "/api/a", headers={"X-Request-Id": "abc.DEF-123_x"})
    assert headers["x-request-id"] == "abc.DEF-123_x"
    assert upstream.requests[-1].header("X-Request-Id") == "abc.DEF-123_x"
    _, headers, _ = gw.request("GET", "/api/a", headers={"X-Request-Id": "bad id!"})
    assert headers["x-request-id"] != "bad id!"
    assert len(headers["x-request-id"]) == 36
    assert upstream.requests[-1].header("X-Request-Id") == headers["x-request-id"]


def test_rewrite_and_strip_prefix(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    gw.request("GET", "/old/a/b?q=1")
    assert upstream.requests[-1].target == "/new/a/b?q=1"
    gw.request("GET", "/strip/users")
    assert upstream.requests[-1].target == "/users"
    gw.request("GET", "/strip")
    assert upstream.requests[-1].target == "/"


def test_normalised_path_is_forwarded(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    status, _, _ = gw.request("GET", "/public//../api/%61b/./c%2Fd")
    assert status == 200
    assert upstream.requests[-1].target == "/api/ab/c%2Fd"
    status, _, body = gw.request("GET", "/api/../../etc")
    assert status == 400
    assert_envelope(body, "VALIDATION_ERROR")
    status, _, body = gw.request("GET", "/api/a%00b")
    assert status == 400


def test_sse_first_event_arrives_before_last_is_sent(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/sse")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    first = resp.readline() + resp.readline()
    # The upstream notes an event just after writing it: give that note a moment to appear.
    deadline = time.monotonic() + 5
    while not upstream.sse_sent and time.monotonic() < deadline:
        time.sleep(0.01)
    # The upstream holds its second event until we release it: the first one got through alone.
    assert len(upstream.sse_sent) == 1
    assert b"event-0" in first
    upstream.release.set()
    rest = resp.read()
    assert b"event-1" in rest and b"event-2" in rest
    conn.close()


def test_chunked_response_streams_through(upstream: UpstreamServer, start_gateway: Any) -> None:
    """The first chunk reaches the client while the upstream still holds back the rest.

    The upstream sends ``one,`` and then waits for ``release``, which is set only once the
    client has read that chunk: a gateway that buffered the response would never deliver it.
    """
    gw = start_gateway(base_config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        received = b""
        while b"one," not in received:
            data = sock.recv(65536)
            assert data, f"closed before the first chunk: {received!r}"
            received += data
        assert b"two," not in received
        upstream.release.set()
        received += read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.startswith(b"4\r\none,\r\n") and body.endswith(b"\r\n0\r\n\r\n")
    assert _dechunk(body) == b"one,two,three"


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, body = out + body[:size], body[size + 2 :]


def test_errors_use_the_envelope(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    status, headers, body = gw.request("GET", "/nowhere")
    assert status == 404
    doc = assert_envelope(body, "NOT_FOUND")
    assert doc["error"]["requestId"] == headers["x-request-id"]
    assert headers["content-type"] == "application/json"

    status, headers, body = gw.request("GET", "/only-post")
    assert status == 405
    assert_envelope(body, "METHOD_NOT_ALLOWED")
    assert headers["allow"] == "POST, PUT"

    status, _, body = gw.request("GET", "/dead/x")
    assert status == 502
    assert_envelope(body, "BAD_GATEWAY")

    status, _, body = gw.request("GET", "/stall")  # the upstream never answers
    assert status == 504
    assert_envelope(body, "UPSTREAM_TIMEOUT")


def test_reset_mid_body_closes_client_without_second_status(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(base_config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 200")
    assert response.count(b"HTTP/1.1") == 1
    head, body = response.split(b"\r\n\r\n", 1)
    assert b"content-length: 1000" in head.lower()
    assert len(body) < 1000


def test_health_and_metrics(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    status, headers, body = gw.request("GET", "/health")
    assert status == 200
    doc = json.loads(body)
    assert doc["status"] == "ok"
    assert doc["timestamp"].endswith("Z") or doc["timestamp"].endswith("+00:00")
    gw.request("GET", "/api/counted")
    gw.request("GET", "/dead/x")
    text = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).read().decode()
    assert 'fastgw_requests_total{method="GET",route="/api/*",status="200"} 1.0' in text
    assert "fastgw_request_duration_seconds_bucket" in text
    assert 'fastgw_upstream_duration_seconds_count{upstream="svc"}' in text
    assert 'fastgw_upstream_errors_total{reason="connect",upstream="dead"}' in text
    assert "fastgw_inflight_requests 0.0" in text


def test_access_log_lines(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream, query_token=True))
    gw.request("GET", "/api/logged?token=sekrit-value&x=1")
    assert upstream.requests[-1].target == "/api/logged?x=1"
    deadline = time.monotonic() + 5

    def api_lines() -> list[dict[str, Any]]:
        return [line for line in gw.access_lines() if line["route"] == "/api/*"]

    while time.monotonic() < deadline and not api_lines():
        time.sleep(0.05)
    line = api_lines()[-1]
    assert line["method"] == "GET"
    assert line["route"] == "/api/*"
    assert line["path"] == "/api/logged?x=1"
    assert line["status"] == 200
    assert line["upstream"] == "svc"
    assert line["bytes"] > 0
    for key in ("ts", "requestId", "durationMs", "userId"):
        assert key in line
    assert "sekrit-value" not in "".join(gw.stdout + gw.stderr)


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nZ",
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nZZ",
        b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /api/x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET http://evil.example/api/x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/x#frag HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    ],
)
def test_ambiguous_framing_is_refused(upstream: UpstreamServer, start_gateway: Any, raw: bytes) -> None:
    gw = start_gateway(base_config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(raw)
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 400")
    assert response.count(b"HTTP/1.1 ") == 1
    assert b'{"ok":false,"error":{"code":"VALIDATION_ERROR"' in response
    # Not a byte reached the upstream: not even a head whose body never completed.
    assert upstream.heads == [] and upstream.requests == [] and upstream.connections == 0


def test_bad_chunk_in_a_streamed_body_never_completes_upstream(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    """A framing error inside the body is found while the request streams: the client gets
    400, the upstream connection is cut, and the upstream never sees a complete request."""
    gw = start_gateway(base_config(upstream))
    raw = b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZXX0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(raw)
        response = read_until_closed(sock)
    assert response.startswith(b"HTTP/1.1 400")
    assert response.count(b"HTTP/1.1 ") == 1
    status, _, _ = gw.request("GET", "/api/after")  # the gateway goes on serving
    assert status == 200
    assert [r.target for r in upstream.requests] == ["/api/after"]


def test_keep_alive_client_and_pooled_upstream(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(base_config(upstream))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    for n in range(20):
        conn.request("GET", f"/api/{n}")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.request("GET", "/nowhere")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404
    conn.request("GET", "/api/after-404")
    assert conn.getresponse().status == 200
    conn.close()
    assert upstream.connections == 1


def test_identical_upstream_content_lengths_collapse(upstream: UpstreamServer, start_gateway: Any) -> None:
    """Two identical ``Content-Length`` lines from the upstream are one length (RFC 9110 8.6)."""
    gw = start_gateway(base_config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /strip/dup-length HTTP/1.1\r\nHost: t\r\n\r\n")
        received = b""
        while not received.endswith(b"hello"):
            data = sock.recv(65536)
            assert data, f"closed early: {received!r}"
            received += data
    head = received.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200 ")
    assert head.count(b"content-length: 5") == 1


def test_a_reset_close_delimited_body_is_an_upstream_error(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    """HARDENING E-06: a reset is not the end of a close-delimited body. The client's response
    stays unterminated (no last chunk) and the upstream is charged with an error."""
    gw = start_gateway(base_config(upstream))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(b"GET /strip/close-reset HTTP/1.1\r\nHost: t\r\n\r\n")
        received = read_until_closed(sock)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"x" * 100 in body
    assert not body.endswith(b"0\r\n\r\n")
    text = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).read().decode()
    assert 'fastgw_upstream_errors_total{reason="upstream_reset",upstream="svc"} 1.0' in text


def _gc_collected(gw: Any) -> float:
    """``python_gc_objects_collected_total`` summed over generations, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = [line for line in text.splitlines() if line.startswith("python_gc_objects_collected_total{")]
    assert len(samples) == 3, "the standard python_gc_* series are exported"
    return sum(float(line.rsplit(" ", 1)[1]) for line in samples)


def test_proxied_requests_leave_no_reference_cycles(upstream: UpstreamServer, start_gateway: Any) -> None:
    """Every request's objects are freed by reference counting, none by the cycle collector:
    a cycle per request (the exchange and its upstream call referring to each other) made the
    collector free about 15 objects per request and cost ~15 % of a plain proxy's CPU."""
    token = "cycle-test-token-0123456789"
    config = base_config(upstream)
    config["auth"] = {"tokens": [{"token": token, "user_id": "cycler", "scopes": ["s"]}]}
    config["signing"] = {"secret": "cycle-test-signing-secret-0123456789"}
    config["rate_limits"] = {"policies": {"per_user": {"rate": 100000, "burst": 100000, "key": "user"}}}
    config["routes"].insert(
        0,
        {"path": "/full/*", "upstream": "svc", "sign": True, "scopes": ["s"], "rate_limit": ["per_user"]},
    )
    gw = start_gateway(config)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("GET", "/api/warm-up")
    conn.getresponse().read()
    before = _gc_collected(gw)
    for n in range(300):
        conn.request("GET", f"/api/{n}")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        conn.request("POST", f"/full/{n}", body=b"x" * 100, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    conn.close()
    assert _gc_collected(gw) - before < 300  # 600 requests: far below one object each
