"""Signed forwarding and inbound webhooks, checked at a real upstream."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from typing import Any

from fastgw.signing import verify
from tests.upstream_server import UpstreamServer

SECRET = "gateway-signing-secret-0123456789"
WEBHOOK_SECRET = "whsec_test"
TOKEN = "sign-token-0123456789"


def config(upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "signing": {"secret": SECRET},
        "auth": {
            "tokens": [
                {"token": TOKEN, "user_id": "usr_1", "role": "admin", "app_key": "app_main", "plan": "pro"}
            ]
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/api/service/{serviceId}/invoke", "upstream": "svc", "sign": True},
            {
                "path": "/hooks/*",
                "upstream": "svc",
                "methods": ["POST"],
                "auth": "hmac",
                "hmac": {
                    "secret": WEBHOOK_SECRET,
                    "header": "X-Webhook-Signature",
                    "timestamp_header": "X-Webhook-Timestamp",
                    "tolerance": "300s",
                },
            },
            {"path": "/events", "upstream": "svc", "auth": "none", "sse_keepalive": "200ms"},
        ],
    }


def independent_v2(timestamp: str, method: str, path: str, context: str, body: bytes) -> str:
    message = f"{timestamp}\n{method}\n{path}\n{context}\n".encode() + body
    return "v2=" + hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


def test_upstream_receives_a_verifiable_signature(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    body = json.dumps({"hello": "world", "bytes": "é"}).encode()
    status, _, _ = gw.request(
        "POST",
        "/api/service/svc_1/invoke?mode=fast",
        body=body,
        headers={"Authorization": f"Bearer {TOKEN}", "X-Gateway-Signature": "v2=forged"},
    )
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.body == body
    assert seen.header("X-Gateway-Signing-Version") == "2"
    ts = seen.header("X-Gateway-Timestamp")
    assert ts is not None and abs(int(ts) - time.time()) < 30
    expected = independent_v2(ts, "POST", seen.target, "2|usr_1|admin|app_main|pro", body)
    assert seen.header("X-Gateway-Signature") == expected
    headers = dict(seen.headers)
    assert verify(SECRET, "POST", seen.target, headers, body)
    assert not verify(SECRET, "POST", seen.target, headers, body[:-1] + b"!")
    assert not verify(SECRET, "POST", seen.target + "&x=1", headers, body)
    assert not verify(SECRET, "POST", seen.target, {**headers, "X-Gateway-Timestamp": str(int(ts) + 1)}, body)


def _hook(gw: Any, body: bytes, timestamp: int, secret: str = WEBHOOK_SECRET) -> int:
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    status, _, _ = gw.request(
        "POST",
        "/hooks/paid",
        body=body,
        headers={"X-Webhook-Signature": f"sha256={signature}", "X-Webhook-Timestamp": str(timestamp)},
    )
    return status


def test_webhooks_accept_reject_and_keep_the_body(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    body = b'{"event":"paid",  "amount": 12.50}\n'
    assert _hook(gw, body, int(time.time())) == 200
    assert upstream.requests[-1].body == body
    assert _hook(gw, body, int(time.time()), secret="wrong") == 401
    assert _hook(gw, body, int(time.time()) - 1000) == 401
    assert len(upstream.requests) == 1


def test_sse_keepalive_pings_between_events(upstream: UpstreamServer, start_gateway: Any) -> None:
    cfg = config(upstream)
    cfg["routes"].append({"path": "/sse", "upstream": "svc", "auth": "none", "sse_keepalive": "200ms"})
    gw = start_gateway(cfg)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/sse")
    resp = conn.getresponse()
    assert resp.readline() == b"data: event-0\n"
    assert resp.readline() == b"\n"
    assert resp.readline() == b": ping\n"
    assert resp.readline() == b"\n"
    upstream.release.set()
    rest = resp.read()
    assert b"data: event-1\n\n" in rest and b"data: event-2\n\n" in rest
    conn.close()
