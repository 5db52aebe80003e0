"""SPEC 9 access log: one JSON object per line, batched per event-loop iteration, never lost."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from fastgw import access_log as access_log_module
from fastgw.access_log import AccessLog, AccessRecord, utc_timestamp

FIELDS = {
    "ts", "requestId", "method", "route", "path", "status", "bytes", "durationMs", "upstream", "userId",
    "traceId",
}  # fmt: skip


class CountingOut(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)

    def flush(self) -> None:
        self.flushes += 1

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.getvalue().decode().splitlines()]


def record(n: int = 0, **overrides: object) -> AccessRecord:
    fields: dict[str, object] = {
        "ts": utc_timestamp(),
        "requestId": f"req-{n}",
        "method": "GET",
        "route": "/api/*",
        "path": f"/api/x?n={n}",
        "status": 200,
        "bytes": 12 + n,
        "durationMs": 1.25,
        "upstream": "svc",
        "userId": None,
    }
    fields.update(overrides)
    return AccessRecord(**fields)  # type: ignore[arg-type]


def test_lines_are_json_with_every_field() -> None:
    out = CountingOut()
    log = AccessLog(out=out)
    log.write(record(1))
    log.write(record(2, userId="usr_1", upstream=None, path='/p?q="\\\n'))
    log.flush()
    lines = out.lines()
    assert len(lines) == 2
    for line in lines:
        assert set(line) == FIELDS
    assert lines[0]["requestId"] == "req-1" and lines[0]["bytes"] == 13 and lines[0]["durationMs"] == 1.25
    assert lines[1]["userId"] == "usr_1" and lines[1]["upstream"] is None
    assert lines[1]["path"] == '/p?q="\\\n'
    assert out.getvalue().endswith(b"\n") and out.getvalue().count(b"\n") == 2


def test_flush_writes_everything_pending_in_one_write() -> None:
    out = CountingOut()
    log = AccessLog(out=out)

    async def main() -> None:
        for n in range(100):
            log.write(record(n))
        assert out.writes == 0 and log.pending > 0  # batched, not written per line
        log.flush()  # as the server does at shutdown, before the loop gets to it

    asyncio.run(main())
    assert out.writes == 1 and out.flushes == 1
    assert [line["requestId"] for line in out.lines()] == [f"req-{n}" for n in range(100)]
    assert log.pending == 0
    log.flush()
    assert out.writes == 1  # nothing pending: no empty write


def test_a_loop_iteration_is_written_at_the_next_one() -> None:
    out = CountingOut()
    log = AccessLog(out=out)

    async def main() -> None:
        for n in range(10):
            log.write(record(n))
        await asyncio.sleep(0)  # one turn of the loop
        await asyncio.sleep(0)
        assert out.writes == 1 and len(out.lines()) == 10
        log.write(record(10))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert out.writes == 2 and len(out.lines()) == 11

    asyncio.run(main())


def test_uvloop_flushes_promptly_too() -> None:
    uvloop = pytest.importorskip("uvloop")
    out = CountingOut()
    log = AccessLog(out=out)

    async def main() -> None:
        log.write(record())
        log.write(record())
        for _ in range(3):
            await asyncio.sleep(0)
        assert out.writes == 1 and len(out.lines()) == 2

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def test_without_a_running_loop_a_line_is_written_at_once() -> None:
    out = CountingOut()
    AccessLog(out=out).write(record(7))
    assert [line["requestId"] for line in out.lines()] == ["req-7"]


def test_a_large_batch_is_written_before_the_iteration_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access_log_module, "FLUSH_BYTES", 1000)
    out = CountingOut()
    log = AccessLog(out=out)

    async def main() -> None:
        for n in range(50):
            log.write(record(n))
        assert out.writes > 0 and log.pending < 1000
        log.flush()

    asyncio.run(main())
    assert [line["requestId"] for line in out.lines()] == [f"req-{n}" for n in range(50)]


def test_disabled_writes_nothing() -> None:
    out = CountingOut()
    log = AccessLog(enabled=False, out=out)
    log.write(record())
    log.flush()
    assert out.getvalue() == b""


def test_a_closed_stdout_does_not_raise() -> None:
    out = CountingOut()
    out.close()
    log = AccessLog(out=out)
    log.write(record())
    log.flush()
    assert log.pending == 0  # dropped, not kept growing


def test_utc_timestamp_format_and_value() -> None:
    for _ in range(3):
        before = datetime.now(UTC).replace(microsecond=0)
        ts = utc_timestamp()
        after = datetime.now(UTC)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts), ts
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        assert before <= parsed <= after
        time.sleep(0.37)


def test_utc_timestamp_renders_only_the_milliseconds_within_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    strftime_calls = 0
    real = time.strftime

    def counting(fmt: str, t: time.struct_time) -> str:
        nonlocal strftime_calls
        strftime_calls += 1
        return real(fmt, t)

    now = [1767225600.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    monkeypatch.setattr(time, "strftime", counting)
    stamps = []
    for ms in (0, 5, 250, 999):
        now[0] = 1767225600 + ms / 1000 + 0.0000001
        stamps.append(utc_timestamp())
    assert stamps == [
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.005Z",
        "2026-01-01T00:00:00.250Z",
        "2026-01-01T00:00:00.999Z",
    ]
    assert strftime_calls == 1
    now[0] = 1767225601.5
    assert utc_timestamp() == "2026-01-01T00:00:01.500Z"
    assert strftime_calls == 2
