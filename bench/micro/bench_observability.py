"""Per-request observability cost, old vs new: metrics, X-Request-Id, access log (SPEC 9, 4).

"old" is what fastgw did before label children were bound, request ids stopped reading
os.urandom, and access lines were encoded into one buffer; it is reproduced here so that the
comparison survives the change. Every figure is the best of --repeat runs, in ns per call.
Usage: python bench/micro/bench_observability.py [--repeat N] [--number N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import timeit
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram

try:
    from fastgw import access_log, forwarding, metrics
except ImportError:  # run from a checkout that is not installed: use the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from fastgw import access_log, forwarding, metrics

ROUTE, METHOD, STATUS, SECONDS = "/api/service/{serviceId}/invoke", "GET", 200, 0.0042
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LINES_PER_TURN = 32  # access lines per event-loop iteration in the access log runs


# -- the old implementations ------------------------------------------------------------------


class OldRecord(msgspec.Struct):  # as before: tracked by the GC
    ts: str
    requestId: str  # noqa: N815
    method: str
    route: str
    path: str
    status: int
    bytes: int
    durationMs: float  # noqa: N815
    upstream: str | None
    userId: str | None  # noqa: N815


_old_encoder = msgspec.json.Encoder()


def old_utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OldAccessLog:
    def __init__(self, out: BinaryIO) -> None:
        self.enabled = True
        self._out = out
        self._pending: list[bytes] = []

    def write(self, record: Any) -> None:
        if not self.enabled:
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(_old_encoder.encode(record))

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"\n".join(self._pending) + b"\n"
        self._pending.clear()
        try:
            self._out.write(data)
            self._out.flush()
        except (OSError, ValueError):
            pass


def old_request_id_from(value: str | None) -> str:
    if value is not None and forwarding._REQUEST_ID_RE.fullmatch(value):
        return value
    return str(uuid.uuid4())


class OldMetrics:
    """Metrics.observe_request as it was: unbounded per-call caches, two lookups."""

    def __init__(self, total: Counter, duration: Histogram) -> None:
        self.requests_total, self.request_duration = total, duration
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests_total.labels(route, method, str(status))
        counter.inc()
        hist = self._duration_children.get(route)
        if hist is None:
            hist = self._duration_children[route] = self.request_duration.labels(route)
        hist.observe(seconds)


# -- timing -----------------------------------------------------------------------------------


def best_ns(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e9


def row(what: str, old: float, new: float) -> None:
    print(f"  {what:<52} {old:9.0f} {new:9.0f} {old / new:7.1f}x")


def header(title: str) -> None:
    print(f"\n{title}\n  {'':<52} {'old ns':>9} {'new ns':>9} {'speedup':>8}")


def bench_metrics(number: int, repeat: int) -> None:
    header("metrics (one request: requests_total inc + request_duration observe)")
    r = CollectorRegistry()
    plain_total = Counter("old_requests_total", "", ["route", "method", "status"], registry=r)
    plain_duration = Histogram("old_request_duration_seconds", "", ["route"], buckets=BUCKETS, registry=r)
    plain_auth = Counter("old_auth_failures_total", "", ["reason"], registry=r)
    m = metrics.Metrics()
    bound = m.for_route(ROUTE)
    total_child = plain_total.labels(ROUTE, METHOD, str(STATUS))
    duration_child = plain_duration.labels(ROUTE)

    def labels_each_time() -> None:
        plain_total.labels(ROUTE, METHOD, str(STATUS)).inc()
        plain_duration.labels(ROUTE).observe(SECONDS)

    def observe_request() -> None:
        m.observe_request(ROUTE, METHOD, STATUS, SECONDS)

    def route_observe() -> None:
        bound.observe(METHOD, STATUS, SECONDS)

    def children_floor() -> None:  # the two prometheus-client calls alone
        total_child.inc()
        duration_child.observe(SECONDS)

    old_metrics = OldMetrics(plain_total, plain_duration)
    row(
        "observe_request: previous dict caches -> now",
        best_ns(lambda: old_metrics.observe_request(ROUTE, METHOD, STATUS, SECONDS), number, repeat),
        best_ns(observe_request, number, repeat),
    )
    old = best_ns(labels_each_time, number, repeat)
    row("labels() per call -> Metrics.observe_request", old, best_ns(observe_request, number, repeat))
    row("labels() per call -> for_route(...).observe", old, best_ns(route_observe, number, repeat))
    row("labels() per call -> bare bound children (floor)", old, best_ns(children_floor, number, repeat))
    row(
        'auth_failures.labels("missing").inc()',
        best_ns(lambda: plain_auth.labels("missing").inc(), number, repeat),
        best_ns(lambda: m.auth_failures.labels("missing").inc(), number, repeat),
    )


def bench_request_id(number: int, repeat: int) -> None:
    header("X-Request-Id")
    old = best_ns(lambda: str(uuid.uuid4()), number, repeat)
    row("str(uuid.uuid4()) -> new_request_id()", old, best_ns(forwarding.new_request_id, number, repeat))
    row(
        "request_id_from(None)",
        best_ns(lambda: old_request_id_from(None), number, repeat),
        best_ns(lambda: forwarding.request_id_from(None), number, repeat),
    )
    row(
        'request_id_from("abc.DEF-123_x") (client id kept)',
        best_ns(lambda: old_request_id_from("abc.DEF-123_x"), number, repeat),
        best_ns(lambda: forwarding.request_id_from("abc.DEF-123_x"), number, repeat),
    )


def fields(ts: str) -> dict[str, Any]:
    return {
        "ts": ts,
        "requestId": "0f8e3a52-6c1d-4a7b-9e2f-5d4c3b2a1908",
        "method": "GET",
        "route": ROUTE,
        "path": "/api/service/svc_1/invoke?mode=fast",
        "status": 200,
        "bytes": 1234,
        "durationMs": 4.217,
        "upstream": "svc",
        "userId": "usr_abc123",
    }


def per_line_ns(
    make_log: Callable[[BinaryIO], Any], make_line: Callable[[], Any], turns: int, repeat: int
) -> float:
    """ns per line with LINES_PER_TURN lines per loop turn, the batch written to /dev/null.

    The cost of a bare loop turn (``await asyncio.sleep(0)``) is measured and subtracted.
    """

    async def run(lines: int) -> float:
        with open(os.devnull, "wb") as out:
            log = make_log(out)
            best = float("inf")
            for _ in range(repeat):
                start = timeit.default_timer()
                for _ in range(turns):
                    for _ in range(lines):
                        log.write(make_line())
                    await asyncio.sleep(0)
                best = min(best, timeit.default_timer() - start)
            log.flush()
            return best

    with_lines = asyncio.run(run(LINES_PER_TURN))
    bare = asyncio.run(run(0))
    return (with_lines - bare) / (turns * LINES_PER_TURN) * 1e9


def bench_access_log(number: int, repeat: int) -> None:
    header(f"access log ({LINES_PER_TURN} lines per loop iteration, written to /dev/null)")
    row(
        "ts: datetime.isoformat -> utc_timestamp()",
        best_ns(old_utc_timestamp, number, repeat),
        best_ns(access_log.utc_timestamp, number, repeat),
    )
    ts = access_log.utc_timestamp()
    f = fields(ts)
    row(
        "record: AccessRecord(...) (gc=False now)",
        best_ns(lambda: OldRecord(**f), number, repeat),
        best_ns(lambda: access_log.AccessRecord(**f), number, repeat),
    )
    old_record, new_record = OldRecord(**f), access_log.AccessRecord(**f)
    turns = max(1, number // LINES_PER_TURN)
    row(
        "AccessLog.write(record) + its share of flush",
        per_line_ns(OldAccessLog, lambda: old_record, turns, repeat),
        per_line_ns(lambda out: access_log.AccessLog(out=out), lambda: new_record, turns, repeat),
    )
    row(
        "whole line: ts + record + write + flush share",
        per_line_ns(OldAccessLog, lambda: OldRecord(**fields(old_utc_timestamp())), turns, repeat),
        per_line_ns(
            lambda out: access_log.AccessLog(out=out),
            lambda: access_log.AccessRecord(**fields(access_log.utc_timestamp())),
            turns,
            repeat,
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, best of {args.repeat} x {args.number} calls")
    bench_metrics(args.number, args.repeat)
    bench_request_id(args.number, args.repeat)
    bench_access_log(args.number, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
