"""async: true routes end to end, and usage recorded from proxied traffic."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, store_of
from tests.upstream_server import UpstreamServer

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789"
USAGE_KEY = "usage-key-0123456789"
pytestmark = pytest.mark.usefixtures("store_url")


def config(upstream: UpstreamServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "store": store_of(tmp_path),
        "signing": {"secret": "async-signing-secret-0123456789"},
        "auth": {
            "tokens": [
                {"token": ALICE, "user_id": "alice", "role": "admin"},
                {"token": BOB, "user_id": "bob"},
            ],
            "usage_key": USAGE_KEY,
        },
        "upstreams": {
            "svc": {"targets": [upstream.url]},
            "dead": {"targets": [f"http://127.0.0.1:{free_port()}"], "retries": 0},
        },
        "routes": [
            {"path": "/jobs/*", "upstream": "svc", "async": True, "sign": True, "strip_prefix": True},
            {"path": "/deadjobs/*", "upstream": "dead", "async": True},
            {"path": "/api/*", "upstream": "svc"},
            {"path": "/status/*", "upstream": "svc"},
        ],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_terminal(gw: Any, request_id: str, token: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        status, _, doc = gw.json("GET", f"/requests/{request_id}/status", headers=bearer(token))
        assert status == 200, doc
        if doc["data"]["status"] in ("succeeded", "failed"):
            return dict(doc["data"])
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_async_request_runs_in_the_background(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    status, _, doc = gw.json("POST", "/jobs/work?x=1", body=b'{"n":1}', headers=bearer(ALICE))
    assert status == 202
    data = doc["data"]
    assert data["status"] == "queued"
    request_id = data["requestId"]
    assert data["statusUrl"] == f"/requests/{request_id}/status"
    assert data["resultUrl"] == f"/requests/{request_id}/result"
    assert wait_terminal(gw, request_id, ALICE)["status"] == "succeeded"
    seen = upstream.requests[-1]
    assert seen.target == "/work?x=1" and seen.body == b'{"n":1}'
    assert (
        seen.header(
            "X-Gateway-Signature",
        )
        is not None
    )
    assert seen.header("X-User-Id") == "alice"
    status, _, doc = gw.json("GET", f"/requests/{request_id}/result", headers=bearer(ALICE))
    assert status == 200
    response = doc["data"]["response"]
    assert response["status"] == 200
    assert json.loads(response["body"])["target"] == "/work?x=1"
    assert response["bodyBase64"] is None
    # Somebody else cannot see it.
    assert gw.request("GET", f"/requests/{request_id}/status", headers=bearer(BOB))[0] == 404
    assert gw.request("GET", f"/requests/{request_id}/result", headers=bearer(BOB))[0] == 404


def test_async_failures_are_recorded(upstream: UpstreamServer, start_gateway: Any, tmp_path: Path) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    _, _, doc = gw.json("POST", "/jobs/status/503", body=b"{}", headers=bearer(ALICE))
    data = wait_terminal(gw, doc["data"]["requestId"], ALICE)
    assert data["status"] == "failed"
    _, _, result = gw.json("GET", f"/requests/{doc['data']['requestId']}/result", headers=bearer(ALICE))
    assert result["data"]["response"]["status"] == 503
    _, _, doc = gw.json("POST", "/deadjobs/x", body=b"{}", headers=bearer(ALICE))
    request_id = doc["data"]["requestId"]
    assert wait_terminal(gw, request_id, ALICE)["status"] == "failed"
    _, _, result = gw.json("GET", f"/requests/{request_id}/result", headers=bearer(ALICE))
    assert result["data"]["response"] is None
    assert result["data"]["error"]


def test_proxied_requests_show_up_in_usage(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    for _ in range(3):
        assert gw.request("GET", "/api/x", headers=bearer(BOB))[0] == 200
    gw.request("GET", "/status/500", headers=bearer(BOB))
    deadline = time.monotonic() + 5
    while True:
        status, _, doc = gw.json("GET", "/v1/usage?hours=1", headers={"X-Usage-Key": USAGE_KEY})
        assert status == 200
        totals = doc["data"]["totals"]
        if totals["requests"] >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert totals["requests"] == 4 and totals["errors"] == 1
    assert {"route": "/api/*", "requests": 3} in doc["data"]["topRoutes"]
    assert gw.request("GET", "/v1/usage", headers=bearer(BOB))[0] == 403
