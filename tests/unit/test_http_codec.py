"""The HTTP/1.1 codec twins: SPEC 13.1 and HARDENING 4.A as raw bytes, on both implementations,
plus exact C/py parity on mutated heads and on the http-desync-guardian corpus.

``speedups_impl`` (tests/unit/conftest.py) runs a test on ``fastgw._speedups_py`` and on the
compiled ``fastgw._speedups`` (skipped when it is not built, unless FASTGW_EXTENSION=1).
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.integration.test_desync_corpus import build, load_cases

H = b"Host: gw.example\r\n"
E = b"\r\n"
MAX = 65536
REQUEST_FIELDS = (
    "method",
    "target",
    "version",
    "headers",
    "content_length",
    "chunked",
    "keep_alive",
    "connection",
    "upgrade",
    "host",
)
RESPONSE_FIELDS = (
    "version",
    "status",
    "reason",
    "headers",
    "content_length",
    "chunked",
    "keep_alive",
    "connection",
    "upgrade",
)


def outcome(impl: ModuleType, func: str, buf: bytes | bytearray, max_size: int = MAX) -> Any:
    """What a parser makes of ``buf``, in a form two implementations can be compared by."""
    fields = REQUEST_FIELDS if func == "parse_request_head" else RESPONSE_FIELDS
    try:
        parsed = getattr(impl, func)(buf, max_size)
    except impl.HttpParseError as exc:
        assert exc.status in (400, 431)
        assert str(exc) == exc.message
        return ("refused", exc.status, exc.message)
    if parsed is None:
        return None
    head, used = parsed
    return (used, {name: getattr(head, name) for name in fields})


def request(impl: ModuleType, raw: bytes, max_size: int = MAX) -> Any:
    parsed = impl.parse_request_head(raw, max_size)
    assert parsed is not None, "incomplete"
    return parsed[0]


def refusal(impl: ModuleType, raw: bytes, func: str = "parse_request_head", max_size: int = MAX) -> int:
    with pytest.raises(impl.HttpParseError) as info:
        getattr(impl, func)(raw, max_size)
    return int(info.value.status)


def decode(impl: ModuleType, pieces: list[bytes], **kwargs: int) -> Any:
    """Feed ``pieces`` one by one: (body, done, tail) or ("refused", status, message)."""
    decoder = impl.ChunkedDecoder(**kwargs)
    body = []
    try:
        for piece in pieces:
            out = decoder.feed(piece)
            assert all(type(chunk) is bytes and chunk for chunk in out)
            body.extend(out)
    except impl.HttpParseError as exc:
        return ("refused", exc.status, exc.message)
    return (b"".join(body), decoder.done, decoder.tail)


# --- request heads that are accepted ------------------------------------------------------------


def test_request_head_fields(speedups_impl: ModuleType) -> None:
    raw = (
        b"POST /a/b?x=1 HTTP/1.1\r\nHost: gw.example:8443\r\nX-Mixed-Case: \t Value With  Spaces \t\r\n"
        b"Content-Length: 5\r\nConnection: Keep-Alive, X-Hop\r\nconnection: ,TE,\r\nUpgrade: WebSocket\r\n"
        b"X_Under: kept\r\nX-Obs: caf\xe9\r\n\r\nhello"
    )
    head, used = speedups_impl.parse_request_head(raw, MAX)
    assert used == len(raw) - 5
    assert (head.method, head.target, head.version) == ("POST", "/a/b?x=1", 11)
    assert head.headers == [
        (b"host", b"gw.example:8443"),
        (b"x-mixed-case", b"Value With  Spaces"),
        (b"content-length", b"5"),
        (b"connection", b"Keep-Alive, X-Hop"),
        (b"connection", b",TE,"),
        (b"upgrade", b"WebSocket"),
        (b"x_under", b"kept"),  # kept here, the gateway drops it later
        (b"x-obs", b"caf\xe9"),
    ]
    assert head.content_length == 5 and not head.chunked and head.keep_alive
    assert head.connection == (b"keep-alive", b"x-hop", b"te")
    assert head.upgrade == b"websocket" and head.host == b"gw.example:8443"


def test_request_head_minimal_and_defaults(speedups_impl: ModuleType) -> None:
    head = request(speedups_impl, b"GET / HTTP/1.1\r\n" + H + E)
    assert head.content_length == -1 and not head.chunked and head.keep_alive
    assert head.connection == () and head.upgrade is None and head.host == b"gw.example"
    head = request(speedups_impl, b"GET * HTTP/1.0\r\n\r\n")
    assert head.version == 10 and head.host is None and not head.keep_alive


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", b"", True),
        (b"1.1", b"Connection: close\r\n", False),
        (b"1.1", b"Connection: upgrade, CLOSE\r\n", False),
        (b"1.0", b"", False),
        (b"1.0", b"Connection: keep-alive\r\n", True),
        (b"1.0", b"Connection: keep-alive\r\nConnection: close\r\n", False),
    ],
)
def test_keep_alive(speedups_impl: ModuleType, version: bytes, connection: bytes, keep_alive: bool) -> None:
    head = request(speedups_impl, b"GET / HTTP/" + version + b"\r\n" + H + connection + E)
    assert head.keep_alive is keep_alive


def test_leading_empty_lines_are_consumed(speedups_impl: ModuleType) -> None:
    raw = b"\r\n\r\nGET / HTTP/1.1\r\n" + H + E
    head, used = speedups_impl.parse_request_head(raw + b"GET", MAX)
    assert used == len(raw) and head.target == "/"
    assert speedups_impl.parse_request_head(b"\r\n\r\n", MAX) is None
    assert speedups_impl.parse_request_head(b"\r\n\r", MAX) is None


@pytest.mark.parametrize(
    "value", [b"chunked", b"\tchunked", b"  chunked", b"chunked\t", b"CHUNKED", b"Chunked"]
)
def test_transfer_encoding_chunked_accepted(speedups_impl: ModuleType, value: bytes) -> None:
    """A-13: RFC-valid spellings; the caller re-frames, so only ``chunked`` is reported."""
    head = request(speedups_impl, b"POST /p HTTP/1.1\r\n" + H + b"Transfer-Encoding:" + value + b"\r\n" + E)
    assert head.chunked and head.content_length == -1


def test_method_smuggling_is_framed(speedups_impl: ModuleType) -> None:
    """A-32: TE on GET and CL on HEAD are parsed (the caller re-frames them)."""
    assert request(speedups_impl, b"GET /p HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n" + E).chunked
    assert (
        request(speedups_impl, b"HEAD /p HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n" + E).content_length == 5
    )


@pytest.mark.parametrize(
    "host",
    [
        b"gw.example",
        b"gw.example:1",
        b"gw.example:65535",
        b"127.0.0.1:8080",
        b"[::1]",
        b"[2001:db8::1]:443",
        b"[::ffff:10.0.0.1]",
        b"a%2Fb.example",
        b"sub-delims!$&'()*+;=",
        b"xn--bcher-kva.example",
    ],
)
def test_valid_hosts(speedups_impl: ModuleType, host: bytes) -> None:
    assert request(speedups_impl, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n").host == host


def test_content_length_limits(speedups_impl: ModuleType) -> None:
    big = b"9" * 18
    assert request(
        speedups_impl, b"PUT / HTTP/1.1\r\n" + H + b"Content-Length: " + big + E + E
    ).content_length == int(big)
    assert (
        request(speedups_impl, b"PUT / HTTP/1.1\r\n" + H + b"Content-Length: 007\r\n" + E).content_length == 7
    )


# --- request heads that are refused (HARDENING 4.A) ---------------------------------------------

POST = b"POST /p HTTP/1.1\r\n"
REFUSED = {
    "A-01 CL.TE": POST + H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n" + E + b"0\r\n\r\nX",
    "A-02 TE.CL": POST + H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n" + E,
    "A-03 two CL": POST + H + b"Content-Length: 0\r\nContent-Length: 40\r\n" + E,
    "A-04 equal CL lines": POST + H + b"Content-Length: 1\r\nContent-Length: 1\r\n" + E,
    "A-04 CL list": POST + H + b"Content-Length: 1, 1\r\n" + E,
    **{
        f"A-05 CL {value!r}": POST + H + b"Content-Length: " + value + b"\r\n" + E
        for value in (
            b"+1",
            b"-1",
            b"0x10",
            b"1_0",
            b"1 1",
            b"",
            b"1.0",
            b"99999999999999999999999",
            b"1" * 19,
        )
    },
    **{
        f"A-06 TE {value!r}": POST + H + b"Transfer-Encoding: " + value + b"\r\n" + E
        for value in (
            b"xchunked",
            b"chunk",
            b'"chunked"',
            b"chunked, cow",
            b"cow, chunked",
            b",chunked",
            b"chunked,",
            b"identity",
            b"",
        )
    },
    "A-07 gzip, chunked": POST + H + b"Transfer-Encoding: gzip, chunked\r\n" + E,
    "A-08 two TE lines": POST + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n" + E,
    "A-09 SP before colon": POST + H + b"Transfer-Encoding : chunked\r\n" + E,
    "A-09 HTAB before colon": POST + H + b"Transfer-Encoding\t: chunked\r\n" + E,
    "A-10 indented first header": POST + b" Transfer-Encoding: chunked\r\n" + H + E,
    "A-10 tab-indented first header": POST + b"\tTransfer-Encoding: chunked\r\n" + H + E,
    "A-11 fold TE": POST + H + b"Transfer-Encoding:\r\n chunked\r\n" + E,
    "A-11 fold X": POST + H + b"X: a\r\n chunked\r\n" + E,
    **{
        f"A-12 TE {value!r}": POST + H + b"Transfer-Encoding:" + value + b"\r\n" + E
        for value in (
            b"\x0bchunked",
            b"\x0cchunked",
            b"\x01chunked",
            b"\x1fchunked",
            b"\x7fchunked",
            b"\xa0chunked",
            b"chunked\x85",
            b"chunked\xff",
            b"chunked\x00",
            b"chunked\x0b",
        )
    },
    **{
        f"A-15 name {name!r}": POST + H + name + b": chunked\r\n" + E
        for name in (
            b"\x01Transfer-Encoding",
            "Transfer-Encodıng".encode(),
            b"Transfer- Encoding",
            b"Transf\x82r-Encoding",
            b"Transfer-Encoding\x00",
            b"X(Y)",
        )
    },
    "A-16 TE on HTTP/1.0": b"POST /p HTTP/1.0\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
    + E,
    "A-25 bare LF": b"GET /p HTTP/1.1\nHost: gw\n\n",
    "A-25 bare LF after first line": b"GET /p HTTP/1.1\r\nHost: gw\n\r\n",
    "A-25 bare LF at end": b"GET /p HTTP/1.1\r\nHost: gw\r\n\n",
    "A-26 bare CR in value": b"GET /p HTTP/1.1\r\n" + H + b"X: a\rY: b\r\n" + E,
    "A-26 NUL in value": b"GET /p HTTP/1.1\r\n" + H + b"X: a\x00b\r\n" + E,
    "A-26 CR in name": b"GET /p HTTP/1.1\r\n" + H + b"Transfer\r-Encoding: chunked\r\n" + E,
    "A-26 bare CR in request line": b"GET /p\rHTTP/1.1\r\n" + H + E,
    "A-27 no colon": b"GET /p HTTP/1.1\r\n" + H + b"Foo bar\r\n" + E,
    "A-27 LF in name": b"GET /p HTTP/1.1\r\n" + H + b"Te\nst: x\r\n" + E,
    "A-27 empty name": b"GET /p HTTP/1.1\r\n" + H + b": v\r\n" + E,
    "A-27 whitespace name": b"GET /p HTTP/1.1\r\n" + H + b" : v\r\n" + E,
    "A-28 two Host": b"GET /p HTTP/1.1\r\n" + H + H + E,
    "A-28 missing Host": b"GET /p HTTP/1.1\r\nX: y\r\n\r\n",
    **{
        f"A-28 Host {value!r}": b"GET /p HTTP/1.1\r\nHost: " + value + b"\r\n" + E
        for value in (
            b"",
            b"a,b",
            b"a@evil",
            b"user:pw@gw.example",
            b"a b",
            b"evil\x00.gw",
            b"gw.example:",
            b"gw.example:0",
            b"gw.example:65536",
            b"gw.example:123456",
            b"gw.example:8x",
            b":80",
            b"[::1",
            b"[]",
            b"[gw.example]",
            b"[::1]x",
            b"[::1]:",
            b"a%2",
            b"a%zz",
            b"gw/example",
            b"gw\\example",
            b"gw.example:80:80",
        )
    },
    "A-28 invalid Host on HTTP/1.0": b"GET /p HTTP/1.0\r\nHost: a@b\r\n\r\n",
    "A-29 HTTP/1.32": b"GET /p HTTP/1.32\r\n" + H + E,
    "A-29 HTTP/2.0": b"GET /p HTTP/2.0\r\n" + H + E,
    "A-29 lower-case version": b"GET /p http/1.1\r\n" + H + E,
    "A-29 HTTP/0.9": b"GET /p\r\n\r\n",
    "A-29 LF in request line": b"GET /\nHTTP/1.1\r\n" + H + E,
    "A-29 bad method": b"G(T /p HTTP/1.1\r\n" + H + E,
    "A-29 double space": b"GET  /p HTTP/1.1\r\n" + H + E,
    "A-29 trailing space": b"GET /p HTTP/1.1 \r\n" + H + E,
    "A-29 tab separator": b"GET\t/p HTTP/1.1\r\n" + H + E,
    "A-29 leading space": b" GET /p HTTP/1.1\r\n" + H + E,
    "A-29 empty request line": b"\r\n\r\n\r\n\r\n\n",
    "A-29 target with DEL": b"GET /p\x7f HTTP/1.1\r\n" + H + E,
    "A-29 target with 8-bit": b"GET /caf\xe9 HTTP/1.1\r\n" + H + E,
    "A-29 target with NUL": b"GET /p\x00 HTTP/1.1\r\n" + H + E,
}


@pytest.mark.parametrize("raw", REFUSED.values(), ids=REFUSED.keys())
def test_refused_request_heads(speedups_impl: ModuleType, raw: bytes) -> None:
    assert refusal(speedups_impl, raw) == 400


@pytest.mark.parametrize("raw", REFUSED.values(), ids=REFUSED.keys())
def test_refusal_is_decided_by_every_prefix_alike(speedups_impl: ModuleType, raw: bytes) -> None:
    """A prefix of a head is either incomplete (None) or refused exactly as the whole head."""
    whole = outcome(speedups_impl, "parse_request_head", raw)
    for cut in range(len(raw)):
        part = outcome(speedups_impl, "parse_request_head", raw[:cut])
        assert part is None or part == whole, (cut, part, whole)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /p HTTP/1.1\nHost",  # a bare-LF client never sends CRLFCRLF
        b"GET /p HTTP/1.1\r\nHost: gw\nX",
        b"GET /p HTTP/1.1\r\nHost: gw\rX",
        b"GET /p\r\n",  # HTTP/0.9: answered at once
        b"G(T /p HTTP/1.1\r\n",
        b"GET /p HTTP/1.1\r\nHost: gw\r\n\r",  # a CR, then its LF may still come: not yet
    ],
)
def test_malformed_head_refused_before_it_ends(speedups_impl: ModuleType, raw: bytes) -> None:
    if raw.endswith(b"\r"):
        assert speedups_impl.parse_request_head(raw, MAX) is None
    else:
        assert refusal(speedups_impl, raw) == 400


# --- size limit (A-30, A-31) --------------------------------------------------------------------


def test_head_size_limit(speedups_impl: ModuleType) -> None:
    head = b"GET / HTTP/1.1\r\n" + H + b"X-Pad: " + b"a" * 100 + b"\r\n\r\n"
    assert speedups_impl.parse_request_head(head, len(head)) is not None
    assert refusal(speedups_impl, head, max_size=len(head) - 1) == 431
    # Incomplete and already too large: refused without waiting for the end.
    assert speedups_impl.parse_request_head(head[:-4], len(head) - 4) is None
    assert refusal(speedups_impl, head[:-3], max_size=len(head) - 4) == 431
    assert refusal(speedups_impl, b"GET /" + b"a" * 20000, max_size=16384) == 431
    # Leading empty lines count against the limit.
    assert refusal(speedups_impl, b"\r\n" * 10 + head, max_size=len(head) + 10) == 431


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70 * 1024 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n" * 10_000 + b"\r\n",
    ],
    ids=["70KiB header", "10000 headers"],
)
def test_huge_heads_431(speedups_impl: ModuleType, raw: bytes) -> None:
    assert refusal(speedups_impl, raw, max_size=64 * 1024) == 431
    assert refusal(speedups_impl, raw[: 64 * 1024 + 1], max_size=64 * 1024) == 431


def test_many_headers_below_limit(speedups_impl: ModuleType) -> None:
    raw = b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n" * 5000 + b"\r\n"
    assert len(request(speedups_impl, raw).headers) == 5001


# --- response heads ---------------------------------------------------------------------------


def response(impl: ModuleType, raw: bytes) -> Any:
    parsed = impl.parse_response_head(raw, MAX)
    assert parsed is not None
    return parsed[0]


def test_response_head_fields(speedups_impl: ModuleType) -> None:
    raw = b"HTTP/1.1 200 OK Fine\r\nContent-Type: text/plain\r\nX-Custom: A b \r\nContent-Length: 2\r\n\r\nok"
    head, used = speedups_impl.parse_response_head(raw, MAX)
    assert used == len(raw) - 2
    assert (head.version, head.status, head.reason) == (11, 200, b"OK Fine")
    assert head.headers == [
        (b"Content-Type", b"text/plain"),
        (b"X-Custom", b"A b"),
        (b"Content-Length", b"2"),
    ]
    assert head.content_length == 2 and not head.chunked and head.keep_alive
    assert head.connection == () and head.upgrade is None


@pytest.mark.parametrize(
    "lines",
    [
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5, 5\r\n",
        b"Content-Length: 5 ,5\r\nContent-length: 5\r\n",
        b"Content-Length: 5\r\ncontent-length: 05\r\n",
    ],
)
def test_response_equal_content_lengths_collapse(speedups_impl: ModuleType, lines: bytes) -> None:
    head = response(speedups_impl, b"HTTP/1.1 200 OK\r\nA: 1\r\n" + lines + b"B: 2\r\n\r\n")
    assert head.content_length == 5
    assert head.headers == [(b"A", b"1"), (b"Content-Length", b"5"), (b"B", b"2")]


def test_response_framing(speedups_impl: ModuleType) -> None:
    head = response(speedups_impl, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n")
    assert head.chunked and head.keep_alive and head.headers == [(b"Transfer-Encoding", b"Chunked")]
    head = response(speedups_impl, b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
    assert head.keep_alive and head.connection == (b"keep-alive",)
    head = response(
        speedups_impl, b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert head.chunked and not head.keep_alive  # RFC 9112 6.1: close after it
    head = response(speedups_impl, b"HTTP/1.1 204\r\nConnection: close\r\n\r\n")
    assert (head.status, head.reason, head.keep_alive) == (204, b"", False)
    head = response(
        speedups_impl,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n",
    )
    assert head.upgrade == b"websocket" and head.connection == (b"upgrade",)
    head = response(speedups_impl, b"\r\nHTTP/1.1 200 \r\n\r\n")
    assert head.reason == b"" and head.content_length == -1


RESPONSE_REFUSED = {
    "conflicting CL": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "conflicting CL list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
    "empty CL item": b"HTTP/1.1 200 OK\r\nContent-Length: 5,\r\n\r\n",
    "bad CL": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
    "CL+TE": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "TE gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    "TE identity": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
    "two TE": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "HTTP/2": b"HTTP/2 200 OK\r\n\r\n",
    "HTTP/1.2": b"HTTP/1.2 200 OK\r\n\r\n",
    "no status": b"HTTP/1.1\r\n\r\n",
    "short status": b"HTTP/1.1 20 OK\r\n\r\n",
    "long status": b"HTTP/1.1 2000 OK\r\n\r\n",
    "status 099": b"HTTP/1.1 099 X\r\n\r\n",
    "status 600": b"HTTP/1.1 600 X\r\n\r\n",
    "letters in status": b"HTTP/1.1 2x0 OK\r\n\r\n",
    "two spaces": b"HTTP/1.1  200 OK\r\n\r\n",
    "NUL in reason": b"HTTP/1.1 200 O\x00K\r\n\r\n",
    "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "bare CR": b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
    "fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
    "no colon": b"HTTP/1.1 200 OK\r\nFoo\r\n\r\n",
    "bad value": b"HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n",
}


@pytest.mark.parametrize("raw", RESPONSE_REFUSED.values(), ids=RESPONSE_REFUSED.keys())
def test_refused_response_heads(speedups_impl: ModuleType, raw: bytes) -> None:
    assert refusal(speedups_impl, raw, "parse_response_head") == 400
    whole = outcome(speedups_impl, "parse_response_head", raw)
    for cut in range(len(raw)):
        part = outcome(speedups_impl, "parse_response_head", raw[:cut])
        assert part is None or part == whole, (cut, part, whole)


def test_response_head_size_limit(speedups_impl: ModuleType) -> None:
    raw = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200 + b"\r\n\r\n"
    assert speedups_impl.parse_response_head(raw, len(raw)) is not None
    assert refusal(speedups_impl, raw, "parse_response_head", max_size=len(raw) - 1) == 431


def test_bytearray_and_bytes_alike(speedups_impl: ModuleType) -> None:
    raw = b"GET / HTTP/1.1\r\n" + H + b"X: y\r\n\r\nnext"
    assert outcome(speedups_impl, "parse_request_head", bytearray(raw)) == outcome(
        speedups_impl, "parse_request_head", raw
    )
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    assert outcome(speedups_impl, "parse_response_head", bytearray(resp)) == outcome(
        speedups_impl, "parse_response_head", resp
    )


# --- chunked bodies ---------------------------------------------------------------------------

CHUNKED_OK = {
    "plain": (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    "extension (A-18)": (b"1;a=b\r\nZ\r\n0\r\n\r\n", b"Z"),
    "extensions": (b'5;name=value;q="quoted; \\"x\\""\r\nhello\r\n0;last\r\n\r\n', b"hello"),
    "BWS before extension": (b"5 ;a\r\nhello\r\n0\t;b\r\n\r\n", b"hello"),
    "upper-case hex": (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    "leading zeros": (b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),
    "trailers dropped (A-22)": (b"1\r\nZ\r\n0\r\nX-T: 1\r\nChecksum: abc\r\n\r\n", b"Z"),
    "empty body": (b"0\r\n\r\n", b""),
}


@pytest.mark.parametrize(("wire", "body"), CHUNKED_OK.values(), ids=CHUNKED_OK.keys())
def test_chunked_decodes(speedups_impl: ModuleType, wire: bytes, body: bytes) -> None:
    assert decode(speedups_impl, [wire + b"GET / HTTP/1.1\r\n"]) == (body, True, b"GET / HTTP/1.1\r\n")
    for cut in range(len(wire) + 1):
        assert decode(speedups_impl, [wire[:cut], wire[cut:]]) == (body, True, b"")
    assert decode(speedups_impl, [bytes([b]) for b in wire]) == (body, True, b"")


def test_chunked_tail_and_feeds_after_done(speedups_impl: ModuleType) -> None:
    decoder = speedups_impl.ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n\r\nGE") == [b"abc"]
    assert decoder.done and decoder.tail == b"GE"
    assert decoder.feed(b"T /") == [] and decoder.tail == b"GE" + b"T /"
    assert speedups_impl.ChunkedDecoder().feed(b"") == []


def test_big_chunk_is_streamed(speedups_impl: ModuleType) -> None:
    decoder = speedups_impl.ChunkedDecoder()
    assert decoder.feed(b"fffffffffffffff\r\n") == []  # 2**60 - 1: allowed, streamed
    assert decoder.feed(b"abc") == [b"abc"] and not decoder.done


CHUNKED_REFUSED = {
    **{
        f"A-17 size {size!r}": size + b"\r\nZ\r\n0\r\n\r\n"
        for size in (b"0x1", b"+1", b"-0", b"1_0", b" 1", b"1 ", b"", b"1\t", b"g", b"1;a\x00")
    },
    "A-18 bare CR in extension": b"2\r\r;a\r\nxx\r\n0\r\n\r\n",
    "A-19 size ends in bare LF": b"1\nZ\r\n0\r\n\r\n",
    "A-19 size ends in CR X": b"1\rXZ\r\n0\r\n\r\n",
    "A-20 over 2**64": b"fffffffffffffffff\r\n",
    "A-20 2**60": b"1000000000000000\r\n",
    "A-21 data not followed by CRLF": b"1\r\nZXX0\r\n\r\n",
    "A-21 data followed by LF": b"1\r\nZ\n0\r\n\r\n",
    "A-21 data followed by CR X": b"1\r\nZ\rX0\r\n\r\n",
    "A-23 extra CRLF before the last chunk": b"17\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\n0\r\n\r\n",
    "bare LF in trailer": b"0\r\nX: 1\n\r\n",
    "bad trailer": b"0\r\nX : 1\r\n\r\n",
    "folded trailer": b"0\r\nX: 1\r\n 2\r\n\r\n",
    "trailer without colon": b"0\r\nX\r\n\r\n",
    "NUL in trailer": b"0\r\nX: \x00\r\n\r\n",
}


@pytest.mark.parametrize("wire", CHUNKED_REFUSED.values(), ids=CHUNKED_REFUSED.keys())
def test_chunked_refused_whatever_the_split(speedups_impl: ModuleType, wire: bytes) -> None:
    whole = decode(speedups_impl, [wire])
    assert whole[:2] == ("refused", 400)
    for cut in range(len(wire) + 1):
        assert decode(speedups_impl, [wire[:cut], wire[cut:]]) == whole
    assert decode(speedups_impl, [bytes([b]) for b in wire]) == whole


def test_chunk_line_limits(speedups_impl: ModuleType) -> None:
    line = b"1;" + b"x" * 98  # 100 bytes
    assert decode(speedups_impl, [line + b"\r\nZ\r\n0\r\n\r\n"], max_line=100)[0] == b"Z"
    assert decode(speedups_impl, [line + b"x\r\nZ\r\n0\r\n\r\n"], max_line=100)[:2] == ("refused", 400)
    # An over-long line is refused before its end arrives.
    assert decode(speedups_impl, [b"1;" + b"x" * 5000], max_line=4096)[:2] == ("refused", 400)
    trailers = b"0\r\n" + b"X: " + b"a" * 50 + b"\r\n"
    assert decode(speedups_impl, [trailers + b"\r\n"], max_trailers=55)[1] is True
    assert decode(speedups_impl, [trailers + b"Y: b\r\n\r\n"], max_trailers=55)[:2] == ("refused", 400)
    assert decode(speedups_impl, [b"0\r\n" + b"X: 1\r\n" * 20_000], max_trailers=65536)[:2] == (
        "refused",
        400,
    )


@settings(max_examples=200, deadline=None)
@given(
    case=st.sampled_from(sorted({**CHUNKED_OK, **{k: (v, b"") for k, v in CHUNKED_REFUSED.items()}}.items())),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_chunked_split_anywhere(speedups_impl: ModuleType, case: Any, cuts: list[int]) -> None:
    wire = case[1][0] + b"NEXT"
    points = sorted({min(c, len(wire)) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    assert decode(speedups_impl, pieces) == decode(speedups_impl, [wire])


def test_encode_chunk(speedups_impl: ModuleType) -> None:
    assert speedups_impl.encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert speedups_impl.encode_chunk(b"x" * 300) == b"12c\r\n" + b"x" * 300 + b"\r\n"
    assert speedups_impl.encode_chunk(b"") == b""  # never a premature last chunk
    assert speedups_impl.LAST_CHUNK == b"0\r\n\r\n"
    data = bytes(range(256)) * 40
    wire = (
        speedups_impl.encode_chunk(data[:1000])
        + speedups_impl.encode_chunk(data[1000:])
        + speedups_impl.LAST_CHUNK
    )
    assert decode(speedups_impl, [wire]) == (data, True, b"")


def test_error_type(speedups_impl: ModuleType) -> None:
    exc: Any = speedups_impl.HttpParseError(431, "Request head too large")
    assert issubclass(speedups_impl.HttpParseError, ValueError)
    assert exc.status == 431 and exc.message == str(exc) == "Request head too large"


# --- C/py parity ------------------------------------------------------------------------------

VALID_REQUESTS = [
    b"GET /a/b?x=1 HTTP/1.1\r\nHost: gw.example\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: gw.example:8080\r\nContent-Length: 5\r\nConnection: keep-alive, x\r\n"
    b"\r\nhello",
    b"PUT /p HTTP/1.1\r\nHost: [::1]\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\n"
    b"\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nX_Y: z\r\n\r\n",
    b"\r\nOPTIONS * HTTP/1.1\r\nHost: a\r\nCookie: a=b; c=d\r\n\r\n",
]
VALID_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n",
    b"HTTP/1.0 404 Not Found\r\nContent-Length: 0, 0\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
]
INJECT = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"\r\n", b"\r\n\r\n", b"\x7f", b"\xff", b"a", b"["]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        pos = draw(st.integers(min_value=0, max_value=len(data)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "inject"]))
        if kind == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "insert":
            data[pos:pos] = bytes([draw(st.integers(min_value=0, max_value=255))])
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(min_value=1, max_value=3))]
        else:
            data[pos:pos] = draw(st.sampled_from(INJECT))
    return bytes(data)


def assert_parity(
    c_impl: ModuleType, py_impl: ModuleType, func: str, raw: bytes | bytearray, max_size: int = MAX
) -> Any:
    c_result = outcome(c_impl, func, raw, max_size)
    py_result = outcome(py_impl, func, raw, max_size)
    assert c_result == py_result, raw
    return py_result


@settings(max_examples=400, deadline=None)
@given(raw=mutated(VALID_REQUESTS), max_size=st.sampled_from([MAX, 40, 90]))
def test_request_parity_mutated(
    c_speedups: ModuleType, py_speedups: ModuleType, raw: bytes, max_size: int
) -> None:
    whole = assert_parity(c_speedups, py_speedups, "parse_request_head", raw, max_size)
    cut = len(raw) // 2
    part = assert_parity(c_speedups, py_speedups, "parse_request_head", raw[:cut], max_size)
    assert part is None or part == whole


@settings(max_examples=300, deadline=None)
@given(raw=mutated(VALID_RESPONSES), max_size=st.sampled_from([MAX, 40]))
def test_response_parity_mutated(
    c_speedups: ModuleType, py_speedups: ModuleType, raw: bytes, max_size: int
) -> None:
    assert_parity(c_speedups, py_speedups, "parse_response_head", raw, max_size)
    assert_parity(c_speedups, py_speedups, "parse_response_head", bytearray(raw), max_size)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=120))
def test_parity_random_bytes(c_speedups: ModuleType, py_speedups: ModuleType, raw: bytes) -> None:
    assert_parity(c_speedups, py_speedups, "parse_request_head", raw)
    assert_parity(c_speedups, py_speedups, "parse_response_head", raw)
    assert_parity(c_speedups, py_speedups, "parse_request_head", b"GET / HTTP/1.1\r\n" + raw)
    assert_parity(c_speedups, py_speedups, "parse_response_head", b"HTTP/1.1 200 OK\r\n" + raw)


@pytest.mark.parametrize("func", ["parse_request_head", "parse_response_head"])
def test_parity_on_the_tables(c_speedups: ModuleType, py_speedups: ModuleType, func: str) -> None:
    for raw in [*REFUSED.values(), *RESPONSE_REFUSED.values(), *VALID_REQUESTS, *VALID_RESPONSES]:
        for cut in range(len(raw) + 1):
            assert_parity(c_speedups, py_speedups, func, raw[:cut])
            assert_parity(c_speedups, py_speedups, func, raw[:cut], 30)


CORPUS = load_cases()


@pytest.mark.skipif(not CORPUS, reason="http-desync-guardian corpus not found")
def test_desync_corpus_parity(c_speedups: ModuleType, py_speedups: ModuleType) -> None:
    """Every corpus case, as the integration test sends it, parses alike on both twins."""
    refused = 0
    for param in CORPUS:
        raw = build(param.values[0])[0]
        result = assert_parity(c_speedups, py_speedups, "parse_request_head", raw)
        assert result is not None, param.id  # every case is a complete head
        refused += result[0] == "refused"
        head_end = raw.find(b"\r\n\r\n") + 4 if b"\r\n\r\n" in raw else len(raw)  # not the body
        for cut in range(head_end):
            part = assert_parity(c_speedups, py_speedups, "parse_request_head", raw[:cut])
            assert part is None or part == result or part[0] != "refused", param.id
    assert 0 < refused < len(CORPUS)


# --- the upstream client on the codec ---------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


class Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.events.append(("head", status, reason, headers))

    def on_data(self, data: bytes) -> bool:
        self.events.append(("data", data))
        return True

    def on_end(self) -> None:
        self.events.append(("end",))

    def on_error(self, reason: str) -> None:
        self.events.append(("error", reason))

    def body(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "data")


def exchange(pieces: list[bytes], head_request: bool = False, lost: Exception | None | str = "no") -> Any:
    """Drive an upstream connection by hand (on a running loop, as it always is)."""
    from fastgw.upstream.client import UpstreamConnection

    async def drive() -> Any:
        conn = UpstreamConnection()
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        sink = Sink()
        conn.begin(sink, b"GET / HTTP/1.1\r\nHost: u\r\n\r\n", head_request)
        for piece in pieces:
            conn.data_received(piece)
        if lost != "no":
            conn.connection_lost(lost)  # type: ignore[arg-type]
        return conn, transport, sink

    return asyncio.run(drive())


def test_client_fixed_length_many_small_reads() -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-A: b\r\n\r\n" + b"x" * 1000
    conn, transport, sink = exchange([wire[k : k + 7] for k in range(0, len(wire), 7)])
    assert sink.events[0] == ("head", 200, b"OK", [(b"Content-Length", b"1000"), (b"X-A", b"b")])
    assert sink.body() == b"x" * 1000 and sink.events[-1] == ("end",)
    assert conn.reusable and not transport.aborted


def test_client_identical_content_lengths_collapse() -> None:
    conn, _, sink = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"])
    assert sink.events == [("head", 200, b"OK", [(b"Content-Length", b"2")]), ("data", b"ok"), ("end",)]
    assert conn.reusable
    _, transport, sink = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"])
    assert sink.events == [("error", "upstream_protocol")] and transport.aborted


def test_client_chunked_with_extensions_and_trailers() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"5;a=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n"
    conn, _, sink = exchange([wire[k : k + 3] for k in range(0, len(wire), 3)])
    assert sink.body() == b"hello!" and sink.events[-1] == ("end",) and conn.reusable
    _, transport, sink = exchange([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZXX0\r\n\r\n"])
    assert sink.events[-1] == ("error", "upstream_protocol") and transport.aborted


def test_client_close_delimited_body_reset_is_an_error() -> None:
    """HARDENING E-06: only a clean EOF ends a close-delimited body; a reset cuts it."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial"
    conn, _, sink = exchange([head], lost=ConnectionResetError())
    assert sink.events[-1] == ("error", "upstream_reset") and not conn.reusable
    conn, _, sink = exchange([head], lost=None)
    assert sink.events[-1] == ("end",) and sink.body() == b"partial" and not conn.reusable


def test_client_truncated_and_excess_bodies() -> None:
    _, _, sink = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], lost=None)
    assert sink.events[-1] == ("error", "upstream_reset")
    conn, transport, sink = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"])
    assert sink.body() == b"ok" and sink.events[-1] == ("end",)
    assert not conn.reusable and transport.aborted  # E-07: never reused
    conn, transport, sink = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], head_request=True)
    assert sink.body() == b"" and not conn.reusable and transport.aborted


def test_client_interim_and_bad_heads() -> None:
    conn, _, sink = exchange([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"])
    assert [e[0] for e in sink.events] == ["head", "end"] and sink.events[0][1] == 204 and conn.reusable
    for bad in (
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
    ):
        _, transport, sink = exchange([bad])
        assert sink.events == [("error", "upstream_protocol")] and transport.aborted
