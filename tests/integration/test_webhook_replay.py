"""Webhook replay protection (SPEC 13.7) through real gateway processes, alone and sharing a
real redis-server: a signature already accepted within ``tolerance`` is 401, and never reaches
the upstream a second time."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time
from typing import Any

from fastgw.webhook import SeenSignatures
from tests.redis_server import RedisServer
from tests.upstream_server import UpstreamServer

SECRET = "whsec_replay_0123456789abcdef0123"


def config(upstream: UpstreamServer, redis_url: str | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {
                "path": "/hooks/*",
                "upstream": "svc",
                "methods": ["POST"],
                "auth": "hmac",
                "hmac": {
                    "secret": SECRET,
                    "header": "X-Webhook-Signature",
                    "timestamp_header": "X-Webhook-Timestamp",
                    "tolerance": "300s",
                },
            },
            {
                "path": "/plain/*",
                "upstream": "svc",
                "methods": ["POST"],
                "auth": "hmac",
                "hmac": {"secret": SECRET, "header": "X-Signature", "tolerance": "300s"},
            },
        ],
    }
    if redis_url is not None:
        cfg["redis"] = redis_url
    return cfg


def signed(body: bytes, timestamp: int) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Webhook-Signature": f"sha256={digest}", "X-Webhook-Timestamp": str(timestamp)}


def post(gw: Any, body: bytes, headers: dict[str, str], path: str = "/hooks/paid") -> tuple[int, bytes]:
    status, _, data = gw.request("POST", path, body=body, headers=headers)
    return status, data


def error_code(data: bytes) -> str:
    return str(json.loads(data)["error"]["code"])


def test_a_replayed_signature_is_401_and_not_forwarded(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    body = b'{"event":"paid","amount":1250}'
    now = int(time.time())
    headers = signed(body, now)
    # A forgery carrying the real signature over another body fails and must not burn it.
    status, data = post(gw, b'{"event":"paid","amount":99999}', headers)
    assert status == 401
    assert post(gw, body, headers)[0] == 200
    status, data = post(gw, body, headers)
    assert status == 401
    assert error_code(data) == "UNAUTHORIZED"
    assert [r.body for r in upstream.requests] == [body]
    # The same event signed anew (another timestamp) is a new delivery.
    assert post(gw, body, signed(body, now - 1))[0] == 200
    assert len(upstream.requests) == 2


def test_replay_without_a_timestamp_header_is_401(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    body = b'{"event":"refund"}'
    headers = {"X-Signature": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()}
    assert post(gw, body, headers, "/plain/x")[0] == 200
    status, data = post(gw, body, headers, "/plain/x")
    assert (status, error_code(data)) == (401, "UNAUTHORIZED")
    assert len(upstream.requests) == 1


def test_the_seen_table_is_bounded_and_forgets_expired_entries() -> None:
    seen = SeenSignatures(max_entries=3)
    assert seen.first_use("a", until=10, now=0)
    assert not seen.first_use("a", until=10, now=5)  # a replay within the window
    assert seen.first_use("a", until=30, now=10)  # the window is over: accepted again
    for name in "bcde":
        assert seen.first_use(name, until=100, now=11)
    assert len(seen) == 3  # the oldest went first
    assert not seen.first_use("e", until=100, now=12)


# --- shared through Redis ---------------------------------------------------------------


def test_a_signature_accepted_on_one_instance_is_refused_on_another(
    upstream: UpstreamServer, start_gateway: Any, redis_server: RedisServer
) -> None:
    first = start_gateway(config(upstream, redis_server.url))
    second = start_gateway(config(upstream, redis_server.url))
    body = b'{"event":"shipped"}'
    headers = signed(body, int(time.time()))
    assert post(first, body, headers)[0] == 200
    status, data = post(second, body, headers)
    assert (status, error_code(data)) == (401, "UNAUTHORIZED")
    assert post(first, body, headers)[0] == 401
    assert len(upstream.requests) == 1
    other = signed(b'{"event":"delivered"}', int(time.time()))
    assert post(second, b'{"event":"delivered"}', other)[0] == 200
    assert b"fastgw:webhook:seen:" in redis_server.command("KEYS", "fastgw:webhook:*")


def test_a_hung_redis_neither_blocks_webhooks_nor_lifts_local_replay_protection(
    upstream: UpstreamServer, start_gateway: Any, redis_server: RedisServer
) -> None:
    gw = start_gateway(config(upstream, redis_server.url))
    assert post(gw, b"{}", signed(b"{}", int(time.time())))[0] == 200  # connected and shared
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
    body = b'{"event":"during-outage"}'
    headers = signed(body, int(time.time()))
    started = time.monotonic()
    assert post(gw, body, headers)[0] == 200
    assert time.monotonic() - started < 3  # bounded by the backend's timeouts
    started = time.monotonic()
    assert post(gw, body, headers)[0] == 401  # this instance still remembers it
    assert time.monotonic() - started < 3
    assert len(upstream.requests) == 2
