"""Bounds on every wait and load shedding (SPEC 13.7, 13.8), on real sockets.

No test here asserts a duration: each slow client stays slow far longer than the bound under
test, and only a gateway that enforces the bound answers or cuts it.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time
from typing import Any

from tests.conftest import read_until_closed
from tests.upstream_server import UpstreamServer


def config(upstream: UpstreamServer, server: dict[str, Any] | None = None, **svc: Any) -> dict[str, Any]:
    return {
        "server": {"access_log": True, **(server or {})},
        "upstreams": {"svc": {"targets": [upstream.url], **svc}},
        "routes": [{"path": "/*", "upstream": "svc", "auth": "none"}],
    }


def status_line(sock: socket.socket) -> bytes:
    sock.settimeout(20)
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


def test_a_stalled_request_body_gets_408_and_frees_its_slot(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream, {"body_timeout": "1s", "max_connections": 2}))
    stalled = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        stalled.append(sock)
    for sock in stalled:
        answer = read_until_closed(sock, timeout=20)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "REQUEST_TIMEOUT"
        sock.close()
    assert gw.request("GET", "/after")[0] == 200  # both connection slots came back
    assert all(r.target != "/upload" for r in upstream.requests)


def test_connections_beyond_max_connections_get_503(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream, {"max_connections": 2}))
    held = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(2)]
    time.sleep(0.3)  # let the gateway accept both
    with socket.create_connection(("127.0.0.1", gw.port)) as extra:
        answer = read_until_closed(extra)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "SERVICE_UNAVAILABLE"
    for sock in held:
        sock.close()


def test_requests_beyond_max_inflight_get_503_with_retry_after(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream, {"max_inflight": 1}))
    slow = threading.Thread(target=gw.request, args=("GET", "/slow/1500"))
    slow.start()
    while not any(r.target == "/slow/1500" for r in upstream.requests):
        time.sleep(0.02)
    status, headers, body = gw.request("GET", "/shed")
    slow.join()
    assert status == 503
    assert headers["retry-after"] == "1"
    assert json.loads(body)["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert gw.request("GET", "/later")[0] == 200


def test_a_client_that_does_not_read_is_cut_and_the_upstream_is_not_blamed(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(
        config(
            upstream,
            {"send_timeout": "1s"},
            read_timeout="1s",
            circuit={"failures": 1, "cooldown": "60s"},
        )
    )
    readers = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big/67108864 HTTP/1.1\r\nHost: a\r\n\r\n")
        readers.append(sock)
    time.sleep(4)  # far past send_timeout and read_timeout, without reading a byte
    for sock in readers:
        sock.settimeout(10)
        received = 0
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        assert received < 64 << 20  # cut, not served to the end
        sock.close()
    # A target blamed for the slow clients would be ejected (failures: 1) and answer 503.
    assert gw.request("GET", "/healthy")[0] == 200
    big = [line for line in gw.access_lines() if line["path"] == "/big/67108864"]
    assert [line["status"] for line in big] == [499, 499, 499]


def test_a_client_that_hangs_up_in_the_upstream_queue_is_never_forwarded(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream, max_connections=1, connect_timeout="5s"))
    holder = threading.Thread(target=gw.request, args=("GET", "/slow/2500"))
    holder.start()
    while not any(r.target == "/slow/2500" for r in upstream.requests):
        time.sleep(0.02)
    with socket.create_connection(("127.0.0.1", gw.port)) as quitter:
        quitter.sendall(b"GET /queued HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.3)
    holder.join()
    assert gw.request("GET", "/next")[0] == 200
    assert all(r.target != "/queued" for r in upstream.requests)
    queued = [line for line in gw.access_lines() if line["path"] == "/queued"]
    assert [line["status"] for line in queued] == [499]


def test_listen_backlog_is_configurable(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream, {"backlog": 1000}))
    out = subprocess.run(["ss", "-ltnH", f"sport = :{gw.port}"], capture_output=True, text=True, check=True)
    # For a listening socket ss prints the backlog in the Send-Q column.
    assert out.stdout.split()[2] == "1000", out.stdout


def test_sigterm_drain_says_close_and_closes_idle_keep_alive_connections(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream, {"shutdown_grace": "10s"}))
    idle = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    idle.request("GET", "/first")
    idle.getresponse().read()
    busy = socket.create_connection(("127.0.0.1", gw.port))
    busy.sendall(b"GET /slow/1500 HTTP/1.1\r\nHost: a\r\n\r\n")
    while not any(r.target == "/slow/1500" for r in upstream.requests):
        time.sleep(0.02)
    gw.proc.send_signal(signal.SIGTERM)
    answer = read_until_closed(busy, timeout=20)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in answer.partition(b"\r\n\r\n")[0] + b"\r\n"
    assert idle.sock is not None
    assert read_until_closed(idle.sock, timeout=20) == b""  # closed between requests, not under one
    busy.close()
    idle.close()
    assert gw.proc.wait(20) == 0


def test_an_answer_before_the_body_ends_keeps_the_client_connection(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    gw = start_gateway(config(upstream))
    body = b"x" * (256 * 1024)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body)
        first = status_line(sock)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert b"Connection: close" not in first.partition(b"\r\n\r\n")[0]
        sock.sendall(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
        second = first.partition(b"\r\n\r\n")[2]
        while b"/second" not in second:
            more = sock.recv(65536)
            assert more, "the gateway closed the connection after the early answer"
            second += more
    assert [r.target for r in upstream.requests] == ["/early", "/second"]
