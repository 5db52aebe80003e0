"""Compiled vs pure-Python hot path (SPEC section 12): time per call of each twin, and the ratio.

Both modules are imported by name, so the result does not depend on FASTGW_NO_EXTENSIONS.
Usage: python bench/micro/bench_speedups.py [--repeat N]  (after `setup.py build_ext --inplace`
or an editable install).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import timeit
from pathlib import Path
from types import ModuleType

try:
    from fastgw import _speedups_py
except ImportError:  # run from a checkout that is not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from fastgw import _speedups_py

ROUTES = [
    ("/health", frozenset({"GET", "HEAD"})),
    ("/auth/*", None),
    ("/admin/*", None),
    ("/admin/billing/*", frozenset({"GET", "POST"})),
    ("/payment/webhook/*", frozenset({"POST"})),
    ("/api/service/{serviceId}/endpoint/{endpointId}/invoke", None),
    ("/api/service/{serviceId}/endpoint/{endpointId}/invoke/async", None),
    ("/api/users/{id}", frozenset({"GET", "PUT", "DELETE"})),
    ("/api/users/me", frozenset({"GET"})),
    ("/v1/chat/completions", frozenset({"POST"})),
    ("/api/events", None),
    ("/ws", None),
]

SIGN_ARGS = (
    b"test-signing-secret",
    "1767225600",
    "POST",
    "/api/service/svc_1/endpoint/ep_9/invoke?mode=fast",
    "usr_abc123",
    "admin",
    "app_main",
    "pro",
)

# A browser-like request head with 8 headers, an upstream response head, and a chunked body of
# 16 chunks of 1 KiB (one with an extension) with a trailer.
REQUEST_HEAD = (
    b"GET /api/service/svc_1/endpoint/ep_9/invoke?mode=fast HTTP/1.1\r\n"
    b"Host: gw.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: application/json, text/plain, */*\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3JfYWJjMTIzIn0.c2lnbmF0dXJl\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"\r\n"
)
RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: 1234\r\n"
    b"Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"
    b"Server: upstream/1.0\r\n"
    b"Cache-Control: no-store\r\n"
    b"X-Request-Id: 7f9c2ba4e88f827d616045507605853e\r\n"
    b"\r\n"
)
CHUNKED_BODY = (
    b"400;ext=1\r\n"
    + b"x" * 1024
    + b"\r\n"
    + (b"400\r\n" + b"y" * 1024 + b"\r\n") * 15
    + b"0\r\nX-T: 1\r\n\r\n"
)

Case = tuple[str, str, dict[str, object], int]


def cases(impl: ModuleType) -> list[Case]:
    """(name, statement, namespace, calls per statement): statements, not lambdas, so the harness
    adds no Python call of its own to the time of the call being measured."""
    trie = impl.RouteTrie()
    for route_id, (pattern, methods) in enumerate(ROUTES):
        trie.add(pattern, methods, route_id)
    signing = {"sign_v2": impl.sign_v2, "args": SIGN_ARGS, "small": b'{"hello":"world"}', "big": b"x" * 16384}
    hot = impl.BucketTable(1e9, 1.0, 1e9)
    rotating = impl.BucketTable(1000.0, 1.0, 2000.0, max_keys=10_000)
    flood = impl.BucketTable(1000.0, 1.0, 2000.0, max_keys=10_000)
    ips = [f"10.{k // 65536}.{k // 256 % 256}.{k % 256}" for k in range(100_000)]
    rotating_steps = [(ips[k % 5000], k * 1e-6) for k in range(50_000)]
    flood_steps = [(ips[k], k * 1e-6) for k in range(100_000)]
    return [
        (
            "match literal  /v1/chat/completions",
            'match("POST", "/v1/chat/completions")',
            {"match": trie.match},
            1,
        ),
        (
            "match params   /api/service/.../invoke",
            'match("POST", "/api/service/svc_1/endpoint/ep_9/invoke")',
            {"match": trie.match},
            1,
        ),
        (
            "match wildcard /admin/users/42/roles",
            'match("GET", "/admin/users/42/roles")',
            {"match": trie.match},
            1,
        ),
        ("match 404      /nowhere/at/all", 'match("GET", "/nowhere/at/all")', {"match": trie.match}, 1),
        ("sign_v2        17 B body", "sign_v2(*args, small)", signing, 1),
        ("sign_v2        16 KiB body", "sign_v2(*args, big)", signing, 1),
        ("take           one hot key", 'take("10.0.0.1", 1.0)', {"take": hot.take}, 1),
        (
            "take           5000 keys in turn",
            "for key, now in steps: take(key, now)",
            {"take": rotating.take, "steps": rotating_steps},
            len(rotating_steps),
        ),
        (
            "parse_request_head  8 headers",
            "parse(head, 65536)",
            {"parse": impl.parse_request_head, "head": REQUEST_HEAD},
            1,
        ),
        (
            "parse_response_head 6 headers",
            "parse(head, 65536)",
            {"parse": impl.parse_response_head, "head": RESPONSE_HEAD},
            1,
        ),
        (
            "ChunkedDecoder 16 KiB, 16 chunks",
            "Decoder().feed(body)",
            {"Decoder": impl.ChunkedDecoder, "body": CHUNKED_BODY},
            1,
        ),
        (
            "ChunkedDecoder same, 1460 B reads",
            "feed = Decoder().feed\nfor piece in pieces: feed(piece)",
            {
                "Decoder": impl.ChunkedDecoder,
                "pieces": [CHUNKED_BODY[k : k + 1460] for k in range(0, len(CHUNKED_BODY), 1460)],
            },
            1,
        ),
        ("encode_chunk   1 KiB", "encode(data)", {"encode": impl.encode_chunk, "data": b"z" * 1024}, 1),
        (
            "take           key flood (evicting)",
            "for key, now in steps: take(key, now)",
            {"take": flood.take, "steps": flood_steps},
            len(flood_steps),
        ),
    ]


def per_call_ns(stmt: str, namespace: dict[str, object], calls: int, repeat: int) -> float:
    timer = timeit.Timer(stmt, globals=namespace)
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat=repeat, number=number)) / number
    if calls > 1:  # subtract the bare loop, which is the same for both implementations
        loop = timeit.Timer("for key, now in steps: pass", globals=namespace)
        best -= min(loop.repeat(repeat=repeat, number=number)) / number
    return best / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="timing runs per case; the best is kept")
    args = parser.parse_args()
    try:
        c_impl: ModuleType | None = importlib.import_module("fastgw._speedups")
    except ImportError as exc:
        c_impl = None
        print(f"fastgw._speedups not built ({exc}); timing the pure-Python twin only")
    py_cases = cases(_speedups_py)
    c_cases: list[Case | None] = [*cases(c_impl)] if c_impl is not None else [None] * len(py_cases)
    print(f"{'function':<42} {'py ns/call':>11} {'c ns/call':>10} {'py/c':>6}")
    for (name, stmt, py_namespace, calls), c_case in zip(py_cases, c_cases, strict=True):
        py_ns = per_call_ns(stmt, py_namespace, calls, args.repeat)
        if c_case is None:
            print(f"{name:<42} {py_ns:>11.0f} {'-':>10} {'-':>6}")
            continue
        c_ns = per_call_ns(stmt, c_case[2], calls, args.repeat)
        print(f"{name:<42} {py_ns:>11.0f} {c_ns:>10.0f} {py_ns / c_ns:>5.1f}x")


if __name__ == "__main__":
    main()
