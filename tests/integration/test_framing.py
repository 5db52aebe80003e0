"""SPEC 13.1 on a real socket: the framing rules the gateway enforces, and what the upstream sees.

Every refusal must be a 400 envelope with ``Connection: close``; nothing sent after it on the
connection is read as a request, and the recording upstream must never see a refused request.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from tests.conftest import read_until_closed
from tests.upstream_server import UpstreamServer


@pytest.fixture
def gw(upstream: UpstreamServer, start_gateway: Any) -> Any:
    return start_gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [{"path": "/*", "upstream": "svc", "auth": "none"}],
        }
    )


def exchange(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        return read_until_closed(sock)


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split what arrived into (status, headers, body) triples (bodies framed by length)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        out.append((status, headers, data[:length]))
        data = data[length:]
    return out


def assert_refused(data: bytes) -> None:
    answers = responses(data)
    assert len(answers) == 1, data
    status, headers, body = answers[0]
    assert status == 400
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "VALIDATION_ERROR"


BAD_HEADS = {
    "two Host headers": b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "Host with a space": b"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n",
    "Host with userinfo": b"GET /a HTTP/1.1\r\nHost: a@evil.example\r\n\r\n",
    "Host with a comma": b"GET /a HTTP/1.1\r\nHost: a,b\r\n\r\n",
    "Host port out of range": b"GET /a HTTP/1.1\r\nHost: a:70000\r\n\r\n",
    "empty Host": b"GET /a HTTP/1.1\r\nHost:\r\n\r\n",
    "missing Host on 1.1": b"GET /a HTTP/1.1\r\nX-A: 1\r\n\r\n",
    "bare LF": b"GET /a HTTP/1.1\nHost: a\n\n",
    "bare CR in a value": b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
    "obs-fold": b"GET /a HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "space before colon": b"GET /a HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
    "name not a token": b"GET /a HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n",
    "CL and TE": (
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two CL": b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    "TE not chunked": (b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("raw", BAD_HEADS.values(), ids=BAD_HEADS.keys())
def test_malformed_head_is_400_and_close_and_never_forwarded(
    gw: Any, upstream: UpstreamServer, raw: bytes
) -> None:
    follow_up = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    assert_refused(exchange(gw.port, raw + follow_up))
    assert gw.request("GET", "/after")[0] == 200  # the gateway serves everyone else
    assert [r.target for r in upstream.requests] == ["/after"]


def test_http10_may_omit_host(gw: Any, upstream: UpstreamServer) -> None:
    ((status, _, _),) = responses(exchange(gw.port, b"GET /old HTTP/1.0\r\n\r\n"))
    assert status == 200
    assert upstream.requests[-1].target == "/old"


def test_transfer_encoding_on_http10_closes_before_the_next_request(
    gw: Any, upstream: UpstreamServer
) -> None:
    raw = (
        b"POST /a HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    assert_refused(exchange(gw.port, raw))
    assert upstream.requests == []


def test_chunk_extensions_are_dropped_and_the_body_reframed(gw: Any, upstream: UpstreamServer) -> None:
    raw = (
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b'5;ext=1\r\nhello\r\n6;name="q v"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    ((status, _, _),) = responses(exchange(gw.port, raw))
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.body == b"hello world"
    assert "x-trailer" not in seen.header_names()


def test_pipelined_requests_answer_in_order_and_stop_at_the_first_400(
    gw: Any, upstream: UpstreamServer
) -> None:
    raw = (
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
        b"GET /three HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    answers = responses(exchange(gw.port, raw))
    assert [status for status, _, _ in answers] == [200, 400]
    assert json.loads(answers[0][2])["target"] == "/one"
    assert [r.target for r in upstream.requests] == ["/one"]


def test_pipelined_keep_alive_requests_are_all_answered_in_order(gw: Any) -> None:
    raw = b"".join(b"GET /n%d HTTP/1.1\r\nHost: a\r\n\r\n" % n for n in range(5))
    raw += b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    answers = responses(exchange(gw.port, raw))
    assert [json.loads(body)["target"] for _, _, body in answers] == [f"/n{n}" for n in range(5)] + ["/last"]


@pytest.mark.parametrize("chunked", [False, True])
def test_expect_100_continue_is_answered_and_not_forwarded(
    upstream: UpstreamServer, start_gateway: Any, chunked: bool
) -> None:
    """A client that waits for ``100 Continue`` gets it once the request is accepted, then its
    body goes upstream; ``Expect`` itself is hop-level and never forwarded."""
    gw = start_gateway(_continue_config(upstream))
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 5"
    body = b"5\r\nhello\r\n0\r\n\r\n" if chunked else b"hello"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        head = b"POST /api/upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n" + framing
        sock.sendall(head + b"\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            data = sock.recv(4096)
            assert data, f"closed before 100 Continue: {interim!r}"
            interim += data
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body + b"GET /api/next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        rest = read_until_closed(sock)
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.count(b"HTTP/1.1 200 ") == 2
    upload, after = upstream.requests
    assert upload.body == b"hello" and upload.header("Expect") is None
    assert after.target == "/api/next"


def _continue_config(upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/*", "upstream": "svc", "auth": "none"}],
    }
