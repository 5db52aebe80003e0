"""Bounded, reproducible fuzzing of the HTTP/1.1 codec (HARDENING section 3, "Fuzzing").

Heads are built from a pool of the parts smuggling tricks are made of, then mutated; chunked
bodies likewise, then split at random. The properties: nothing but ``HttpParseError`` ever
escapes, the compiled module and the pure-Python twin agree on everything (result, or status and
message), a prefix of a head is incomplete or refused alike, and a chunked body decodes the same
however it is split. ``derandomize=True``: the same examples on every run, so CI is reproducible.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgw._speedups_py

EXAMPLES = 2000
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FRAMING = ("headers", "content_length", "chunked", "keep_alive", "connection", "upgrade")
REQUEST_FIELDS = ("method", "target", "version", *FRAMING, "host")
RESPONSE_FIELDS = ("version", "status", "reason", *FRAMING)


def implementations() -> list[ModuleType]:
    impls: list[ModuleType] = [fastgw._speedups_py]
    if os.environ.get("FASTGW_NO_EXTENSIONS"):
        return impls
    try:
        impls.append(importlib.import_module("fastgw._speedups"))
    except ImportError:
        if os.environ.get("FASTGW_EXTENSION") == "1":
            raise
    return impls


IMPLS = implementations()


def outcome(impl: ModuleType, func: str, buf: bytes | bytearray, max_size: int) -> Any:
    fields = REQUEST_FIELDS if func == "parse_request_head" else RESPONSE_FIELDS
    try:
        parsed = getattr(impl, func)(buf, max_size)
    except impl.HttpParseError as exc:
        assert exc.status in (400, 431) and isinstance(exc.message, str)
        return ("refused", exc.status, exc.message)
    if parsed is None:
        return None
    head, used = parsed
    assert 0 < used <= len(buf)
    return (used, tuple(getattr(head, name) for name in fields))


def agreed(func: str, buf: bytes | bytearray, max_size: int) -> Any:
    results = [outcome(impl, func, buf, max_size) for impl in IMPLS]
    assert all(result == results[0] for result in results), (buf, results)
    return results[0]


# --- building blocks --------------------------------------------------------------------------

TRICKY = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b",", b";", b"\x0b", b"\x7f", b"\x85", b"\xff"]
NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Upgrade",
    b"X-A",
    b"Transfer_Encoding",
    b"content-length",
    b"HOST",
    b"TE",
    b"",
    b" Host",
    b"Host ",
]
VALUES = [
    b"gw.example",
    b"gw.example:8080",
    b"[::1]:443",
    b"a@b",
    b"a,b",
    b"0",
    b"5",
    b"5, 5",
    b"18446744073709551616",
    b"chunked",
    b" CHUNKED\t",
    b"gzip, chunked",
    b"close",
    b"keep-alive, Upgrade",
    b"websocket",
    b"",
    b"caf\xe9",
]
EOLS = [b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n", b"\n\r"]


@st.composite
def mutate(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        pos = draw(st.integers(min_value=0, max_value=len(out)))
        kind = draw(st.integers(min_value=0, max_value=3))
        if kind == 0 and pos < len(out):
            out[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == 1:
            out[pos:pos] = draw(st.sampled_from(TRICKY))
        elif kind == 2:
            del out[pos : pos + draw(st.integers(min_value=1, max_value=4))]
        else:
            out[pos:pos] = draw(st.binary(min_size=1, max_size=3))
    return bytes(out)


@st.composite
def header_block(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        name = draw(st.sampled_from(NAMES))
        value = draw(st.sampled_from(VALUES))
        sep = draw(st.sampled_from([b": ", b":", b":\t", b" : ", b": "]))
        lines.append(name + sep + value + draw(st.sampled_from(EOLS)))
    return b"".join(lines) + draw(st.sampled_from(EOLS))


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"G(T", b""]))
    target = draw(st.sampled_from([b"/", b"/a/b?x=1", b"*", b"http://gw.example/p", b"/\xe9", b""]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b""]))
    lead = draw(st.sampled_from([b"", b"", b"\r\n", b"\r\n\r\n", b"\n"]))
    head = lead + b" ".join(part for part in (method, target, version)) + draw(st.sampled_from(EOLS))
    return draw(mutate(head + draw(header_block()) + draw(st.sampled_from([b"", b"hello", b"0\r\n\r\n"]))))


@st.composite
def response_heads(draw: st.DrawFn) -> bytes:
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2"]))
    status = draw(st.sampled_from([b"200", b"101", b"204", b"404", b"099", b"600", b"20", b"2000"]))
    reason = draw(st.sampled_from([b" OK", b"", b" ", b" Not Found", b" O\x00K", b"  OK"]))
    line = version + b" " + status + reason + draw(st.sampled_from(EOLS))
    return draw(mutate(line + draw(header_block())))


@st.composite
def chunked_bodies(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        data = draw(st.binary(min_size=1, max_size=20))
        size = draw(st.sampled_from(["%x", "%X", "%04x", " %x", "%x "])) % len(data)
        ext = draw(st.sampled_from([b"", b";a=b", b';q="x y"', b" ;a", b";\x00"]))
        parts.append(size.encode() + ext + draw(st.sampled_from(EOLS)) + data + draw(st.sampled_from(EOLS)))
    trailers = b"".join(
        draw(st.sampled_from([b"X-T: 1", b"X : 1", b" X: 1", b"X"])) + draw(st.sampled_from(EOLS))
        for _ in range(draw(st.integers(min_value=0, max_value=2)))
    )
    body = (
        b"".join(parts) + b"0" + draw(st.sampled_from([b"", b";e"])) + b"\r\n" + trailers + b"\r\n" + b"NEXT"
    )
    return draw(mutate(body))


def decode(impl: ModuleType, pieces: list[bytes], max_line: int) -> Any:
    decoder = impl.ChunkedDecoder(max_line=max_line, max_trailers=64)
    out = []
    try:
        for piece in pieces:
            chunks = decoder.feed(piece)
            assert all(type(chunk) is bytes and chunk for chunk in chunks)
            out.extend(chunks)
    except impl.HttpParseError as exc:
        assert exc.status == 400
        return ("refused", exc.message)
    return (b"".join(out), decoder.done, decoder.tail)


# --- properties -------------------------------------------------------------------------------


@FUZZ
@given(raw=request_heads(), max_size=st.sampled_from([65536, 64, 32]), cut=st.integers(min_value=0))
def test_fuzz_request_head(raw: bytes, max_size: int, cut: int) -> None:
    whole = agreed("parse_request_head", raw, max_size)
    part = agreed("parse_request_head", raw[: cut % (len(raw) + 1)], max_size)
    assert part is None or part == whole
    agreed("parse_request_head", bytearray(raw), max_size)


@FUZZ
@given(raw=response_heads(), max_size=st.sampled_from([65536, 48]), cut=st.integers(min_value=0))
def test_fuzz_response_head(raw: bytes, max_size: int, cut: int) -> None:
    whole = agreed("parse_response_head", raw, max_size)
    part = agreed("parse_response_head", raw[: cut % (len(raw) + 1)], max_size)
    assert part is None or part == whole


@FUZZ
@given(
    wire=chunked_bodies(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    max_line=st.sampled_from([4096, 8]),
)
def test_fuzz_chunked(wire: bytes, cuts: list[int], max_line: int) -> None:
    points = sorted({min(c, len(wire)) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    results = [decode(impl, [wire], max_line) for impl in IMPLS]
    results += [decode(impl, pieces, max_line) for impl in IMPLS]
    assert all(result == results[0] for result in results), (wire, pieces, results)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzz_random_bytes(raw: bytes) -> None:
    agreed("parse_request_head", raw, 65536)
    agreed("parse_response_head", raw, 65536)
    results = [decode(impl, [raw], 4096) for impl in IMPLS]
    assert all(result == results[0] for result in results)


def test_both_implementations_fuzzed() -> None:
    if os.environ.get("FASTGW_EXTENSION") == "1":
        assert len(IMPLS) == 2
    elif len(IMPLS) == 1:
        pytest.skip("fastgw._speedups is not built: fuzzed the pure-Python twin only")
