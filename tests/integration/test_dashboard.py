"""``GET /dashboard`` (SPEC 13.6) in a real headless Chromium against a gateway with recorded traffic.

The page loads with no console error and no external resource, its chart has one bar per day,
and the numbers it shows equal what ``/v1/usage*`` answer.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from fastgw.store import open_store
from fastgw.store.usage import UsageRecord, UsageRecorder
from tests.conftest import GatewayProcess
from tests.upstream_server import UpstreamServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
USAGE_KEY = "dashboard-usage-key-0123456789"
ADMIN = "admin-token-0123456789"
USER = "user-token-0123456789"
DAY = 86400


class Page(HTMLParser):
    """The parts of the rendered DOM the test reads."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[dict[str, str]] = []
        self.token_points: list[str] = []
        self.text_of: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self.tables: dict[str, list[str]] = {}
        self._open: str | None = None
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "rect" and a.get("class") == "bar":
            self.bars.append(a)
        if tag == "polyline" and a.get("class") == "tokens":
            self.token_points = a.get("points", "").split()
        if tag == "body":
            self.body = a
        if tag == "table":
            self._table = a.get("id")
            self.tables[self._table or ""] = []
        self._open = a.get("id") if "id" in a else None

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.text_of[self._open] = self.text_of.get(self._open, "") + data
        if self._table and data.strip():
            self.tables[self._table].append(data.strip())


def config(upstream: UpstreamServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "store": f"sqlite:///{tmp_path / 'gw.db'}",
        "auth": {
            "tokens": [{"token": ADMIN, "user_id": "a", "role": "admin"}, {"token": USER, "user_id": "u"}],
            "usage_key": USAGE_KEY,
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/*", "upstream": "svc"}],
    }


def seed(tmp_path: Path) -> None:
    """Traffic on some of the last 30 days, LLM tokens on some of it, errors on a few."""
    now = time.time()
    records = []
    for days_ago, requests in ((0, 5), (1, 3), (4, 7), (12, 2), (29, 4)):
        for n in range(requests):
            status = 502 if n == 0 and days_ago == 4 else 200
            model = "gpt-4o" if n % 2 else None
            records.append(
                UsageRecord(now - days_ago * DAY - n, "/api/*", "svc", "GET", status, 10.0, "u", model, 10, 5)
            )
    store = open_store(f"sqlite:///{tmp_path / 'gw.db'}")
    recorder = UsageRecorder(store)
    for record in records:
        recorder.record(record)
    asyncio.run(store.write(lambda conn: None))
    store.close()


def chromium(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None, "chromium is not installed (Debian: apt-get install chromium)"
    return subprocess.run(
        [
            CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=15000", *extra, url,
        ],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip


@pytest.fixture
def gw(upstream: UpstreamServer, start_gateway: Any, tmp_path: Path) -> GatewayProcess:
    gateway: GatewayProcess = start_gateway(config(upstream, tmp_path))
    seed(tmp_path)
    return gateway


def test_who_may_open_it(gw: GatewayProcess) -> None:
    assert gw.request("GET", "/dashboard")[0] == 401
    assert gw.request("GET", "/dashboard", headers={"Authorization": f"Bearer {USER}"})[0] == 403
    assert gw.request("GET", "/dashboard?key=wrong")[0] == 401
    status, headers, page = gw.request("GET", "/dashboard", headers={"Authorization": f"Bearer {ADMIN}"})
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["content-security-policy"]
    status, _, same = gw.request("GET", f"/dashboard?key={USAGE_KEY}")
    assert status == 200 and same == page
    # Self-contained: no script, style, image or font from anywhere.
    assert not re.search(rb"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert b"<link" not in page and b"@import" not in page and b"url(" not in page
    time.sleep(0.3)
    assert USAGE_KEY not in "".join(gw.stdout + gw.stderr)  # the key is never logged


def test_the_page_in_a_real_browser_shows_what_the_api_says(gw: GatewayProcess, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{gw.port}/dashboard?key={USAGE_KEY}&days=30"
    shot = tmp_path / "dashboard.png"
    rendered = chromium(url, "--dump-dom", "--window-size=1280,900")
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    console = [line for line in rendered.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    page = Page()
    page.feed(rendered.stdout)
    assert page.body.get("data-loaded") == "true", rendered.stdout[-3000:]
    assert page.text_of.get("error", "").strip() == ""

    key = {"X-Usage-Key": USAGE_KEY}
    daily = gw.json("GET", "/v1/usage/daily?days=30", headers=key)[2]["data"]["daily"]
    assert len(page.bars) == 30 == len(daily)  # one bar per day
    assert [b["data-date"] for b in page.bars] == [d["date"] for d in daily]
    assert [int(b["data-requests"]) for b in page.bars] == [d["requests"] for d in daily]
    assert [int(b["data-tokens"]) for b in page.bars] == [d["totalTokens"] for d in daily]
    assert len(page.token_points) == 30  # tokens per day: one point per day
    assert page.text_of["total-requests"] == f"{sum(d['requests'] for d in daily):,}" == "21"
    assert page.text_of["total-errors"] == "1"
    summary = gw.json("GET", "/v1/usage?days=30", headers=key)[2]["data"]
    assert page.tables["routes"][2:] == ["/api/*", str(summary["topRoutes"][0]["requests"])]
    assert page.tables["models"][3:5] == ["gpt-4o", str(summary["topModels"][0]["requests"])]
    assert page.tables["statuses"][2:] == ["502", "1"]
    rollups = gw.json("GET", "/v1/usage/rollups", headers=key)[2]["data"]["rollups"]
    assert page.tables["rollups"][4:8] == [
        rollups[0]["window"], str(rollups[0]["totals"]["requests"]),
        str(rollups[0]["totals"]["errors"]), str(rollups[0]["totals"]["totalTokens"]),
    ]  # fmt: skip

    shown = chromium(url, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars")
    assert shown.returncode == 0 and shot.stat().st_size > 10_000
