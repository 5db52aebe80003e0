"""``/v1/usage*`` through a real gateway process: who may read them, and the reports' shapes.

Usage rows are written into the gateway's own SQLite file by the test (through the same
``UsageRecorder`` the proxy uses), so the reports are checked against known traffic.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from fastgw.store import open_store
from fastgw.store.usage import UsageRecord, UsageRecorder
from tests.conftest import GatewayProcess, store_of
from tests.upstream_server import UpstreamServer

ADMIN = "admin-token-0123456789"
USER = "user-token-0123456789"
USAGE_KEY = "usage-key-0123456789abcdef"
ENDPOINTS = ("/v1/usage", "/v1/usage/daily", "/v1/usage/rollups")
pytestmark = pytest.mark.usefixtures("store_url")


def config(upstream: UpstreamServer, tmp_path: Path, usage_key: str = USAGE_KEY) -> dict[str, Any]:
    return {
        "store": store_of(tmp_path),
        "auth": {
            "tokens": [
                {"token": ADMIN, "user_id": "root", "role": "admin"},
                {"token": USER, "user_id": "someone", "role": "user"},
            ],
            "usage_key": usage_key,
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/*", "upstream": "svc"}],
    }


def seed(tmp_path: Path, records: list[UsageRecord]) -> None:
    """Write rows into the gateway's store file and wait until they are committed."""
    store = open_store(store_of(tmp_path))
    recorder = UsageRecorder(store)
    for record in records:
        recorder.record(record)
    asyncio.run(store.write(lambda conn: None))
    store.close()


def row(ago: float, route: str, status: int, model: str | None = None, tokens: int = 0) -> UsageRecord:
    return UsageRecord(time.time() - ago, route, "svc", "POST", status, 12.5, "someone", model, tokens, 1)


def get(gw: GatewayProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, doc = gw.json("GET", path, headers=headers or {})
    return status, doc


def test_who_may_read_usage(upstream: UpstreamServer, start_gateway: Any, tmp_path: Path) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    allowed = (
        {"Authorization": f"Bearer {USAGE_KEY}"},
        {"X-Usage-Key": USAGE_KEY},
        {"Authorization": f"Bearer {ADMIN}"},
        {"Authorization": f"Bearer {ADMIN}", "X-Usage-Key": USAGE_KEY},
    )
    for path in ENDPOINTS:
        for headers in allowed:
            status, doc = get(gw, path, headers)
            assert status == 200 and doc["ok"] is True, (path, headers, doc)
        status, doc = get(gw, path, {"Authorization": f"Bearer {USER}"})
        assert status == 403 and doc["error"]["code"] == "FORBIDDEN", path
        for headers in (
            {},
            {"Authorization": "Bearer not-the-key"},
            {"X-Usage-Key": "not-the-key"},
            {"X-Usage-Key": "not-the-key", "Authorization": f"Bearer {ADMIN}"},  # present and wrong
        ):
            status, doc = get(gw, path, headers)
            assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED", (path, headers)
    # The window is checked after the caller: an anonymous probe gets 401, not 400.
    assert get(gw, "/v1/usage?hours=0")[0] == 401
    for path in ("/v1/usage?hours=0", "/v1/usage?hours=721", "/v1/usage?days=31", "/v1/usage?hours=x"):
        status, doc = get(gw, path, {"X-Usage-Key": USAGE_KEY})
        assert status == 400 and doc["error"]["code"] == "VALIDATION_ERROR", path
    for path in ("/v1/usage/daily?days=0", "/v1/usage/daily?days=91", "/v1/usage/daily?days=1.5"):
        status, doc = get(gw, path, {"X-Usage-Key": USAGE_KEY})
        assert status == 400 and doc["error"]["code"] == "VALIDATION_ERROR", path
    assert USAGE_KEY not in "".join(gw.stdout + gw.stderr)


def test_an_empty_usage_key_accepts_nothing(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path, usage_key=""))
    assert get(gw, "/v1/usage", {"X-Usage-Key": ""})[0] == 401
    assert get(gw, "/v1/usage", {"Authorization": "Bearer "})[0] == 401
    assert get(gw, "/v1/usage", {"Authorization": f"Bearer {ADMIN}"})[0] == 200


def test_reports(upstream: UpstreamServer, start_gateway: Any, tmp_path: Path) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    seed(
        tmp_path,
        [
            row(60, "/v1/chat/completions", 200, model="gpt-4o", tokens=10),
            row(120, "/v1/chat/completions", 502, model="gpt-4o", tokens=0),
            row(2 * 3600, "/api/*", 404),
            row(30 * 3600, "/api/*", 200),  # outside the default 24 h
            row(3 * 86400, "/api/*", 200),  # outside 48 h, inside a week
        ],
    )
    key = {"X-Usage-Key": USAGE_KEY}
    status, doc = get(gw, "/v1/usage", key)
    assert status == 200
    data = doc["data"]
    assert data["window"]["hours"] == 24 and data["window"]["generatedAt"].endswith("Z")
    assert data["totals"] == {
        "requests": 3,
        "errors": 2,
        "inputTokens": 10,
        "outputTokens": 3,
        "totalTokens": 13,
        "avgLatencyMs": 12.5,
    }
    assert data["topRoutes"] == [
        {"route": "/v1/chat/completions", "requests": 2},
        {"route": "/api/*", "requests": 1},
    ]
    assert data["topModels"] == [{"model": "gpt-4o", "requests": 2, "totalTokens": 12}]
    assert data["byUpstream"] == [{"upstream": "svc", "requests": 3, "errors": 2, "avgLatencyMs": 12.5}]
    assert data["byStatus"] == [
        {"status": 200, "requests": 1},
        {"status": 404, "requests": 1},
        {"status": 502, "requests": 1},
    ]
    assert get(gw, "/v1/usage?days=2", key)[1]["data"]["totals"]["requests"] == 4
    wide = get(gw, "/v1/usage?hours=720", key)[1]["data"]
    assert wide["window"]["hours"] == 720 and wide["totals"]["requests"] == 5

    status, doc = get(gw, "/v1/usage/daily", key)
    assert status == 200 and doc["data"]["days"] == 7
    daily = doc["data"]["daily"]
    assert len(daily) == 7 and [d["date"] for d in daily] == sorted(d["date"] for d in daily)
    assert daily[-1]["date"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert sum(d["requests"] for d in daily) == 5 and sum(d["errors"] for d in daily) == 2
    assert set(daily[0]) == {"date", "requests", "errors", "inputTokens", "outputTokens", "totalTokens"}
    assert len(get(gw, "/v1/usage/daily?days=90", key)[1]["data"]["daily"]) == 90

    status, doc = get(gw, "/v1/usage/rollups", key)
    rollups = doc["data"]["rollups"]
    assert status == 200 and [r["window"] for r in rollups] == ["10m", "1h", "6h", "24h", "7d"]
    assert [r["totals"]["requests"] for r in rollups] == [2, 2, 3, 3, 5]
    assert rollups[3]["totals"] == data["totals"]
