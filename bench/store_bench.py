"""Store benchmark: usage-writer throughput, report query times and token lookups, per store.

    .venv/bin/python bench/store_bench.py [ROWS]        # default 1,000,000 rows

Runs against a SQLite file and a PostgreSQL cluster it starts itself (``initdb`` + ``pg_ctl``
in a temporary directory, as in the tests), through the gateway's own code paths:
``UsageRecorder.record`` (batched hand-off, the writer thread's transactions), the
``/v1/usage*`` report functions, and ``find_by_hash`` through ``Store.read``. Rows are spread
over the 90 days the reports can see. Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastgw.auth.api_tokens import hash_token, issue  # noqa: E402
from fastgw.store import Store, open_store  # noqa: E402
from fastgw.store import tokens as token_rows  # noqa: E402
from fastgw.store.usage import FLUSH_MAX, UsageRecord, UsageRecorder  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402

DAY = 86400.0
ROUTES = [f"/api/v{n}/*" for n in range(12)]
MODELS = [None, None, "gpt-4o", "mini", "llama"]


def records(rows: int, now: float) -> list[UsageRecord]:
    """``rows`` records over the last 90 days, oldest first, as traffic writes them."""
    rng = random.Random(7)
    stamps = sorted(now - rng.random() * 90 * DAY for _ in range(rows))
    return [
        UsageRecord(
            ts=ts,
            route=rng.choice(ROUTES),
            upstream=f"svc{rng.randrange(4)}",
            method="GET",
            status=rng.choice((200, 200, 200, 201, 404, 429, 502)),
            latency_ms=rng.random() * 50,
            user_id=f"user{rng.randrange(1000)}",
            model=rng.choice(MODELS),
            input_tokens=rng.randrange(500),
            output_tokens=rng.randrange(500),
        )
        for ts in stamps
    ]


def write_usage(store: Store, batch: list[UsageRecord]) -> float:
    """Rows per second from the first ``record`` to the last commit, on an event loop as in the
    gateway (records are handed to the writer FLUSH_MAX at a time)."""

    async def run() -> float:
        recorder = UsageRecorder(store)
        started = time.perf_counter()
        for n, rec in enumerate(batch, 1):
            recorder.record(rec)
            if n % (FLUSH_MAX * 50) == 0:  # keep the writer's queue bounded
                await store.write(lambda conn: None)
        recorder.flush()
        await store.write(lambda conn: None)  # a call waits for every write queued before it
        return len(batch) / (time.perf_counter() - started)

    return asyncio.run(run())


def timed(fn: Callable[[], Any], runs: int = 5) -> float:
    """Median milliseconds of ``runs`` calls."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def measure(name: str, url: str, rows: list[UsageRecord], now: float) -> dict[str, float]:
    store = open_store(url)
    try:
        rate = write_usage(store, rows)
        if url.startswith("postgresql"):  # what autovacuum does after a bulk load
            asyncio.run(store.write(lambda conn: conn.execute("ANALYZE usage")))
        recorder = UsageRecorder(store)
        result = {
            "write": rate,
            "summary 24h": timed(lambda: asyncio.run(recorder.summary(24, now=now))),
            "summary 720h": timed(lambda: asyncio.run(recorder.summary(720, now=now))),
            "daily 90": timed(lambda: asyncio.run(recorder.daily(90, now=now))),
            "rollups": timed(lambda: asyncio.run(recorder.rollups(now=now))),
        }
        issued = asyncio.run(
            store.write(
                lambda c: issue(c, "fgw_", name="b", user_id="u", role="", plan="", app_key="", scopes=())
            )
        )
        digest = hash_token(issued.token)

        async def lookups() -> float:
            started = time.perf_counter()
            for _ in range(2000):
                await store.read(lambda c: token_rows.find_by_hash(c, digest))
            return (time.perf_counter() - started) / 2000 * 1e6

        result["token lookup us"] = asyncio.run(lookups())
        print(f"{name}: {result}", file=sys.stderr)
        return result
    finally:
        store.close()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    now = time.time()
    rows = records(count, now)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = measure("SQLite", f"sqlite:///{tmp}/bench.db", rows, now)
    server = PostgresServer().init()
    try:
        results["PostgreSQL"] = measure("PostgreSQL", server.new_database(), rows, now)
    finally:
        server.remove()
    print(
        f"| store ({count:,} usage rows) | usage writer rows/s | /v1/usage 24h ms | /v1/usage 720h ms |"
        " /v1/usage/daily 90 ms | /v1/usage/rollups ms | token lookup µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['write']:,.0f} | {r['summary 24h']:.1f} | {r['summary 720h']:.1f} |"
            f" {r['daily 90']:.1f} | {r['rollups']:.1f} | {r['token lookup us']:.0f} |"
        )


if __name__ == "__main__":
    main()
