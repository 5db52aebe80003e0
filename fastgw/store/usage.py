"""Usage records: one row per proxied request, and the aggregates behind ``/v1/usage*`` (SPEC 9).

Why the shape:

- ``UsageRecorder.record`` sits on the proxy's hot path, once per request. It only queues an
  INSERT for the store's writer thread, which commits everything that arrived in the same
  ~50 ms in one transaction: the client never waits on the disk, and a burst costs one fsync.
  It never raises either: losing one usage row is better than failing a proxied request.
- A queued write shares its transaction with other features' writes (audit entries, token
  ``last_used_at``), so one row SQLite cannot bind would lose the whole batch. Every field is
  therefore coerced to its column type before it is queued, and a record that cannot be is
  dropped (and logged) on its own.
- Reports are SQL aggregates (``GROUP BY`` over an index range on ``ts``) run on the reader
  thread, never rows loaded into Python: a day of traffic can be millions of rows. The queries
  of one report run in one read transaction, so its totals and breakdowns agree with each other.
- No report looks further back than ``RETENTION_DAYS``, so older rows are deleted, a bounded
  batch at a time (at most ``PRUNE_BATCH`` rows every ``PRUNE_INTERVAL`` seconds per process),
  so the writer thread is never held by one large delete.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from .db import Connection, transaction
from .threads import Store

log = logging.getLogger("fastgw.store")

T = TypeVar("T")

DAY = 86400
MAX_WINDOW_HOURS = 720  # /v1/usage?hours=
MAX_DAILY_DAYS = 90  # /v1/usage/daily?days=
TOP_LIMIT = 10  # topRoutes, topModels
RETENTION_DAYS = MAX_DAILY_DAYS + 1  # the oldest row any report can still read, plus a margin
PRUNE_INTERVAL = 10.0
PRUNE_BATCH = 10_000

# (label, seconds) of /v1/usage/rollups, in the order they are answered.
ROLLUP_WINDOWS: tuple[tuple[str, int], ...] = (
    ("10m", 600),
    ("1h", 3600),
    ("6h", 6 * 3600),
    ("24h", DAY),
    ("7d", 7 * DAY),
)

_INSERT = (
    "INSERT INTO usage (ts, route, upstream, method, status, latency_ms, user_id, model,"
    " input_tokens, output_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Oldest first through the ts index, so each pass deletes a bounded, cheap slice.
_PRUNE = "DELETE FROM usage WHERE rowid IN (SELECT rowid FROM usage WHERE ts < ? ORDER BY ts LIMIT ?)"


class UsageRecord(msgspec.Struct, frozen=True):
    """One proxied request, as the proxy reports it (``ts`` in unix seconds)."""

    ts: float
    route: str  # the route pattern, never the raw path
    upstream: str | None
    method: str
    status: int
    latency_ms: float
    user_id: str | None
    model: str | None
    input_tokens: int
    output_tokens: int


# -- wire shapes (camelCase on the wire, SPEC section 9) --------------------------------------


class Totals(msgspec.Struct, rename="camel"):
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    avg_latency_ms: float


class Window(msgspec.Struct, rename="camel"):
    hours: int
    generated_at: str


class RouteCount(msgspec.Struct):
    route: str
    requests: int


class ModelCount(msgspec.Struct, rename="camel"):
    model: str
    requests: int
    total_tokens: int


class UpstreamCount(msgspec.Struct, rename="camel"):
    upstream: str | None  # None: requests answered before an upstream was chosen
    requests: int
    errors: int
    avg_latency_ms: float


class StatusCount(msgspec.Struct):
    status: int
    requests: int


class Summary(msgspec.Struct, rename="camel"):
    """``data`` of ``GET /v1/usage``."""

    window: Window
    totals: Totals
    top_routes: list[RouteCount]
    top_models: list[ModelCount]
    by_upstream: list[UpstreamCount]
    by_status: list[StatusCount]


class DailyEntry(msgspec.Struct, rename="camel"):
    date: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    total_tokens: int


class Daily(msgspec.Struct):
    """``data`` of ``GET /v1/usage/daily``."""

    days: int
    daily: list[DailyEntry]


class Rollup(msgspec.Struct):
    window: str
    totals: Totals


class Rollups(msgspec.Struct):
    """``data`` of ``GET /v1/usage/rollups``."""

    rollups: list[Rollup]


# -- queries ------------------------------------------------------------------------------------


def iso_utc(ts: float) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``, like every other timestamp the gateway writes."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _avg(value: float | None) -> float:
    return round(value, 2) if value is not None else 0.0


def _totals(row: tuple[Any, ...]) -> Totals:
    """A ``Totals`` from (requests, errors, input, output, avg latency); SUM() of nothing is NULL."""
    requests, errors, input_tokens, output_tokens, avg_latency = row
    input_tokens = input_tokens or 0
    output_tokens = output_tokens or 0
    return Totals(
        requests=requests or 0,
        errors=errors or 0,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        avg_latency_ms=_avg(avg_latency),
    )


def _snapshot(conn: Connection, fn: Callable[[Connection], T]) -> T:
    """Run ``fn``'s queries in one read transaction: one consistent view of the table."""
    return transaction(conn, fn, begin="BEGIN")


# Portable SQL: PostgreSQL cannot SUM a boolean.
_ERRORS = "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END)"


def summary(conn: Connection, hours: int, now: float) -> Summary:
    """The ``GET /v1/usage`` report for the ``hours`` before ``now``."""
    since = now - hours * 3600

    def queries(c: Connection) -> Summary:
        totals = _totals(
            c.execute(
                f"SELECT COUNT(*), {_ERRORS}, SUM(input_tokens), SUM(output_tokens), AVG(latency_ms)"
                " FROM usage WHERE ts >= ?",
                (since,),
            ).fetchone()
        )
        routes = [
            RouteCount(route, requests)
            for route, requests in c.execute(
                "SELECT route, COUNT(*) AS n FROM usage WHERE ts >= ?"
                " GROUP BY route ORDER BY n DESC, route LIMIT ?",
                (since, TOP_LIMIT),
            )
        ]
        models = [
            ModelCount(model, requests, tokens or 0)
            for model, requests, tokens in c.execute(
                "SELECT model, COUNT(*) AS n, SUM(input_tokens + output_tokens) FROM usage"
                " WHERE ts >= ? AND model IS NOT NULL AND model != ''"
                " GROUP BY model ORDER BY n DESC, model LIMIT ?",
                (since, TOP_LIMIT),
            )
        ]
        upstreams = [
            UpstreamCount(upstream, requests, errors or 0, _avg(latency))
            for upstream, requests, errors, latency in c.execute(
                f"SELECT upstream, COUNT(*) AS n, {_ERRORS}, AVG(latency_ms) FROM usage"
                " WHERE ts >= ? GROUP BY upstream ORDER BY n DESC, upstream NULLS FIRST",
                (since,),
            )
        ]
        statuses = [
            StatusCount(status, requests)
            for status, requests in c.execute(
                "SELECT status, COUNT(*) FROM usage WHERE ts >= ? GROUP BY status ORDER BY status",
                (since,),
            )
        ]
        return Summary(Window(hours, iso_utc(now)), totals, routes, models, upstreams, statuses)

    return _snapshot(conn, queries)


def daily(conn: Connection, days: int, now: float) -> Daily:
    """The ``GET /v1/usage/daily`` report: ``days`` UTC dates ending today, oldest first.

    Unix time has no leap seconds, so ``ts // 86400`` is exactly the UTC date's day number.
    """
    today = int(now // DAY)
    first = today - days + 1
    by_day = {
        day: (requests, errors, input_tokens, output_tokens)
        for day, requests, errors, input_tokens, output_tokens in conn.execute(
            f"SELECT CAST(ts / 86400 AS INTEGER) AS day, COUNT(*), {_ERRORS},"
            " SUM(input_tokens), SUM(output_tokens)"
            " FROM usage WHERE ts >= ? AND ts < ? GROUP BY day",
            (first * DAY, (today + 1) * DAY),
        )
    }
    entries = []
    for day in range(first, today + 1):
        requests, errors, input_tokens, output_tokens = by_day.get(day, (0, 0, 0, 0))
        input_tokens = input_tokens or 0
        output_tokens = output_tokens or 0
        entries.append(
            DailyEntry(
                date=datetime.fromtimestamp(day * DAY, UTC).strftime("%Y-%m-%d"),
                requests=requests,
                errors=errors or 0,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
            )
        )
    return Daily(days, entries)


def rollups(conn: Connection, now: float) -> Rollups:
    """The ``GET /v1/usage/rollups`` report: every window in one pass over the widest one."""
    columns = []
    params: list[float] = []
    for _, seconds in ROLLUP_WINDOWS:
        inside = "ts >= ?"
        columns.append(
            f"SUM(CASE WHEN {inside} THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN {inside} AND status >= 400 THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN {inside} THEN input_tokens END), SUM(CASE WHEN {inside} THEN output_tokens END),"
            f" AVG(CASE WHEN {inside} THEN latency_ms END)"
        )
        params.extend([now - seconds] * 5)
    widest = max(seconds for _, seconds in ROLLUP_WINDOWS)
    row = conn.execute(
        f"SELECT {', '.join(columns)} FROM usage WHERE ts >= ?", (*params, now - widest)
    ).fetchone()
    return Rollups(
        [Rollup(label, _totals(row[i * 5 : i * 5 + 5])) for i, (label, _) in enumerate(ROLLUP_WINDOWS)]
    )


# -- the recorder -------------------------------------------------------------------------------


_MAX_INT = 2**53  # beyond any real count; also keeps SQLite's 64-bit integers from overflowing


def _text(value: object) -> str:
    """``value`` as text SQLite can bind: a lone surrogate (from a decoded JSON model name) cannot."""
    text = str(value)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in text:  # PostgreSQL text cannot hold NUL
        text = text.replace("\x00", "\ufffd")
    return text


def _number(value: float) -> float:
    number = float(value)
    if not math.isfinite(number):  # SQLite would bind NaN as NULL
        raise ValueError("not a finite number")
    return number


def _count(value: int | None, high: int = _MAX_INT) -> int:
    number = int(value or 0)
    if not 0 <= number <= high:
        raise ValueError("out of range")
    return number


def _params(rec: UsageRecord) -> tuple[Any, ...]:
    """The INSERT parameters, coerced to the columns' types (TypeError/ValueError if impossible).

    Anything SQLite could refuse at commit time must be refused here, where it costs one record
    and not the batch it would have been committed with.
    """
    return (
        _number(rec.ts),
        _text(rec.route),
        None if rec.upstream is None else _text(rec.upstream),
        _text(rec.method),
        _count(rec.status, 999),
        max(0.0, _number(rec.latency_ms)),
        None if rec.user_id is None else _text(rec.user_id),
        _text(rec.model) if rec.model else None,
        _count(rec.input_tokens),
        _count(rec.output_tokens),
    )


FLUSH_INTERVAL = 0.25  # seconds a record may wait on the event loop before the writer gets it
FLUSH_MAX = 1000


class UsageRecorder:
    """Queues usage rows and answers the usage reports for one gateway (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._next_prune = 0.0
        self._pending: list[tuple[Any, ...]] = []

    def record(self, rec: UsageRecord) -> None:
        """Queue ``rec``; returns at once and never raises (a bad record is logged and dropped).

        Records are gathered on the event loop and handed to the writer thread together, every
        ``FLUSH_INTERVAL`` or ``FLUSH_MAX`` records: one hand-off per request cost about a
        sixth of a worker's proxy throughput.
        """
        try:
            params = _params(rec)
        except Exception as exc:
            log.warning("usage: a record was dropped: %s", type(exc).__name__)
            return
        pending = self._pending
        pending.append(params)
        if len(pending) >= FLUSH_MAX:
            self.flush()
        elif len(pending) == 1:
            try:
                asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)
            except RuntimeError:  # no event loop (tools, tests): write through
                self.flush()

    def flush(self) -> None:
        """Hand the gathered records to the store's writer (also called at shutdown)."""
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            self.store.enqueue_many(_INSERT, rows)
            now = time.time()
            if now >= self._next_prune:
                self.prune(now)
        except Exception:
            log.exception("usage: %d records could not be queued", len(rows))

    def prune(self, now: float | None = None) -> None:
        """Queue the deletion of (a bounded batch of) rows older than ``RETENTION_DAYS``."""
        now = time.time() if now is None else now
        self._next_prune = now + PRUNE_INTERVAL
        self.store.enqueue(_PRUNE, (now - RETENTION_DAYS * DAY, PRUNE_BATCH))

    async def summary(self, hours: int, now: float | None = None) -> Summary:
        at = time.time() if now is None else now
        return await self.store.read(lambda conn: summary(conn, hours, at))

    async def daily(self, days: int, now: float | None = None) -> Daily:
        at = time.time() if now is None else now
        return await self.store.read(lambda conn: daily(conn, days, at))

    async def rollups(self, now: float | None = None) -> Rollups:
        at = time.time() if now is None else now
        return await self.store.read(lambda conn: rollups(conn, at))
