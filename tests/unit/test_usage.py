"""Usage rows and their SQL aggregates, on a real SQLite file through the store's writer batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from tornado.httputil import HTTPHeaders

from fastgw.builtin import BuiltinRequest
from fastgw.builtin.usage import window_hours
from fastgw.errors import LocalReply
from fastgw.store import Store, open_store
from fastgw.store.usage import RETENTION_DAYS, UsageRecord, UsageRecorder

HOUR = 3600.0
DAY = 86400.0
# Noon (UTC) of the current day: reports take "now" as a parameter so windows and dates are exact,
# and it stays close to the clock, which decides what the recorder prunes.
MIDNIGHT = time.time() // DAY * DAY
NOW = MIDNIGHT + 12 * HOUR


def date(days_ago: int) -> str:
    return datetime.fromtimestamp(MIDNIGHT - days_ago * DAY, UTC).strftime("%Y-%m-%d")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The same tests on a SQLite file and on a PostgreSQL database."""
    s = open_store(store_url)
    yield s
    s.close()


def rec(
    ago: float,
    route: str = "/api/*",
    upstream: str | None = "svc",
    status: int = 200,
    latency: float = 10.0,
    model: str | None = None,
    tokens: tuple[int, int] = (0, 0),
    user: str | None = "u1",
) -> UsageRecord:
    return UsageRecord(
        ts=NOW - ago,
        route=route,
        upstream=upstream,
        method="GET",
        status=status,
        latency_ms=latency,
        user_id=user,
        model=model,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
    )


def record_all(store: Store, records: list[UsageRecord]) -> UsageRecorder:
    """Queue ``records`` the way the proxy does, then wait until the writer committed them."""
    recorder = UsageRecorder(store)
    for r in records:
        recorder.record(r)
    asyncio.run(store.write(lambda conn: None))  # a call waits for the writes queued before it
    return recorder


def plain(obj: Any) -> Any:
    """A report as the client receives it (camelCase JSON)."""
    return msgspec.json.decode(msgspec.json.encode(obj))


def count_rows(store: Store) -> int:
    return int(asyncio.run(store.read(lambda conn: conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0])))


def test_summary_counts_only_the_window(store: Store) -> None:
    recorder = record_all(
        store,
        [
            rec(0.5 * HOUR, status=200, latency=10.0, model="gpt-4o", tokens=(100, 20)),
            rec(2 * HOUR, route="/v1/chat", upstream="openai", status=502, latency=20.0, model="gpt-4o"),
            rec(3 * HOUR, route="/v1/chat", upstream="openai", status=404, latency=1.333, model="mini"),
            rec(23.9 * HOUR, route="/v1/chat", upstream=None, status=401, latency=0.0),
            rec(30 * HOUR, status=500, tokens=(7, 7)),  # outside 24 h, inside 48 h
            rec(721 * HOUR),  # outside every window
        ],
    )
    report = plain(asyncio.run(recorder.summary(24, now=NOW)))
    assert report["window"] == {"hours": 24, "generatedAt": f"{date(0)}T12:00:00.000Z"}
    assert report["totals"] == {
        "requests": 4,
        "errors": 3,
        "inputTokens": 100,
        "outputTokens": 20,
        "totalTokens": 120,
        "avgLatencyMs": round((10 + 20 + 1.333 + 0) / 4, 2),
    }
    assert report["topRoutes"] == [{"route": "/v1/chat", "requests": 3}, {"route": "/api/*", "requests": 1}]
    assert report["topModels"] == [
        {"model": "gpt-4o", "requests": 2, "totalTokens": 120},
        {"model": "mini", "requests": 1, "totalTokens": 0},
    ]
    assert report["byUpstream"] == [
        {"upstream": "openai", "requests": 2, "errors": 2, "avgLatencyMs": 10.67},
        {"upstream": None, "requests": 1, "errors": 1, "avgLatencyMs": 0.0},
        {"upstream": "svc", "requests": 1, "errors": 0, "avgLatencyMs": 10.0},
    ]
    assert report["byStatus"] == [
        {"status": 200, "requests": 1},
        {"status": 401, "requests": 1},
        {"status": 404, "requests": 1},
        {"status": 502, "requests": 1},
    ]

    wider = asyncio.run(recorder.summary(48, now=NOW))
    assert wider.totals.requests == 5 and wider.totals.errors == 4 and wider.totals.total_tokens == 134
    assert asyncio.run(recorder.summary(720, now=NOW)).totals.requests == 5
    assert asyncio.run(recorder.summary(1, now=NOW)).totals.requests == 1


def test_tops_are_limited_to_ten_and_sorted_by_requests(store: Store) -> None:
    records = [rec(60, route=f"/r{i:02d}", model=f"m{i:02d}") for i in range(12) for _ in range(i + 1)]
    recorder = record_all(store, records)
    report = asyncio.run(recorder.summary(24, now=NOW))
    assert [r.route for r in report.top_routes] == [f"/r{i:02d}" for i in range(11, 1, -1)]
    assert [r.requests for r in report.top_routes] == list(range(12, 2, -1))
    assert [m.model for m in report.top_models] == [f"m{i:02d}" for i in range(11, 1, -1)]
    assert report.totals.requests == sum(range(1, 13))


def test_empty_store_reports_zeros(store: Store) -> None:
    recorder = UsageRecorder(store)
    report = plain(asyncio.run(recorder.summary(24, now=NOW)))
    assert report["totals"] == {
        "requests": 0,
        "errors": 0,
        "inputTokens": 0,
        "outputTokens": 0,
        "totalTokens": 0,
        "avgLatencyMs": 0,
    }
    assert report["topRoutes"] == report["topModels"] == report["byUpstream"] == report["byStatus"] == []
    rollups = plain(asyncio.run(recorder.rollups(now=NOW)))["rollups"]
    assert [r["window"] for r in rollups] == ["10m", "1h", "6h", "24h", "7d"]
    assert all(r["totals"] == report["totals"] for r in rollups)


def test_daily_is_zero_filled_oldest_first_with_today(store: Store) -> None:
    recorder = record_all(
        store,
        [
            rec(0, status=500, tokens=(3, 4)),  # today, 12:00
            rec(NOW - MIDNIGHT),  # today, exactly 00:00
            rec(NOW - MIDNIGHT + 1, tokens=(1, 0)),  # yesterday, 23:59:59
            rec(NOW - MIDNIGHT + 2 * DAY + 1),  # three days ago: outside a 3-day report
        ],
    )
    report = plain(asyncio.run(recorder.daily(3, now=NOW)))
    assert report == {
        "days": 3,
        "daily": [
            {
                "date": date(2),
                "requests": 0,
                "errors": 0,
                "inputTokens": 0,
                "outputTokens": 0,
                "totalTokens": 0,
            },
            {
                "date": date(1),
                "requests": 1,
                "errors": 0,
                "inputTokens": 1,
                "outputTokens": 0,
                "totalTokens": 1,
            },
            {
                "date": date(0),
                "requests": 2,
                "errors": 1,
                "inputTokens": 3,
                "outputTokens": 4,
                "totalTokens": 7,
            },
        ],
    }
    week = asyncio.run(recorder.daily(90, now=NOW)).daily
    assert len(week) == 90 and week[-1].date == date(0) and week[0].date == date(89)
    assert sum(d.requests for d in week) == 4


def test_rollups_nest_their_windows(store: Store) -> None:
    recorder = record_all(
        store,
        [
            rec(60, status=500, latency=4.0, tokens=(1, 1)),  # in all five
            rec(30 * 60, latency=8.0),  # 1h and up
            rec(5 * HOUR, tokens=(10, 0)),  # 6h and up
            rec(20 * HOUR, status=429),  # 24h and up
            rec(6 * 86400),  # 7d only
            rec(8 * 86400),  # none
        ],
    )
    rollups = plain(asyncio.run(recorder.rollups(now=NOW)))["rollups"]
    assert [(r["window"], r["totals"]["requests"], r["totals"]["errors"]) for r in rollups] == [
        ("10m", 1, 1),
        ("1h", 2, 1),
        ("6h", 3, 1),
        ("24h", 4, 2),
        ("7d", 5, 2),
    ]
    assert rollups[0]["totals"] == {
        "requests": 1,
        "errors": 1,
        "inputTokens": 1,
        "outputTokens": 1,
        "totalTokens": 2,
        "avgLatencyMs": 4.0,
    }
    assert rollups[1]["totals"]["avgLatencyMs"] == 6.0 and rollups[2]["totals"]["inputTokens"] == 11


def test_bad_records_are_dropped_alone_and_record_never_raises(store: Store) -> None:
    bad: list[Any] = [
        UsageRecord(NOW, "/x", None, "GET", 200, float("inf"), None, None, 0, 0),
        UsageRecord(NOW, "/x", None, "GET", 200, 1.0, None, None, 2**64, 0),  # overflows SQLite
        UsageRecord(NOW, "/x", None, "GET", "oops", 1.0, None, None, 0, 0),  # type: ignore[arg-type]
        UsageRecord(float("nan"), "/x", None, "GET", 200, 1.0, None, None, 0, 0),
        None,  # not even a record
    ]
    good = rec(0, model="m\udc80x")  # a lone surrogate from a decoded JSON body: stored, replaced
    recorder = UsageRecorder(store)
    for r in [rec(0), *bad, good]:
        recorder.record(r)
    asyncio.run(store.write(lambda conn: None))
    report = asyncio.run(recorder.summary(1, now=NOW + 1))
    assert report.totals.requests == 2
    assert [m.model for m in report.top_models] == ["m?x"]

    store.close()
    recorder.record(rec(0))  # after close: dropped, not raised


def test_rows_past_retention_are_pruned(store: Store) -> None:
    recorder = record_all(store, [rec(0), rec((RETENTION_DAYS + 1) * 86400, route="/old")])
    assert count_rows(store) == 2
    recorder.prune(now=NOW)
    asyncio.run(store.write(lambda conn: None))
    assert count_rows(store) == 1
    report = asyncio.run(recorder.summary(720, now=NOW))
    assert [r.route for r in report.top_routes] == ["/api/*"]


def request(query: str) -> BuiltinRequest:
    return BuiltinRequest(
        method="GET",
        path="/v1/usage",
        query=query,
        params={},
        headers=HTTPHeaders(),
        body=b"",
        client_ip="127.0.0.1",
        request_id="r",
        cert_user=None,
        gateway=None,  # type: ignore[arg-type]
    )


def test_window_parameters() -> None:
    assert window_hours(request("")) == 24
    assert window_hours(request("hours=1")) == 1
    assert window_hours(request("hours=720")) == 720
    assert window_hours(request("days=30")) == 720
    assert window_hours(request("days=2")) == 48
    for query in (
        "hours=0",
        "hours=721",
        "hours=-1",
        "hours=1.5",
        "hours=abc",
        "hours=",
        "hours=%2B5",
        "days=0",
        "days=31",
        "days=1&hours=2",
        "hours=99999999999999999999",
    ):
        with pytest.raises(LocalReply) as info:
            window_hours(request(query))
        assert info.value.status == 400 and info.value.code == "VALIDATION_ERROR", query
