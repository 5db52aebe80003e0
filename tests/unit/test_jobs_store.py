"""Async job rows: lifecycle, terminal states that never move, and the ``result`` view of a response."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from fastgw.builtin.requests import response_headers, response_view
from fastgw.store import Store, StoreError, connect_store, open_store
from fastgw.store.jobs import JobRecord, JobStore


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The same tests on a SQLite file and on a PostgreSQL database."""
    s = open_store(store_url)
    yield s
    s.close()


def test_lifecycle_to_success(store: Store, store_url: str) -> None:
    jobs = JobStore(store)

    async def scenario() -> tuple[JobRecord | None, ...]:
        await jobs.create("job-1", "alice", "/api/x/invoke/async")
        # Durable when create returns: another connection (another worker) sees it at once.
        conn = connect_store(store_url)
        assert conn.execute("SELECT status FROM jobs WHERE request_id = 'job-1'").fetchone() == ("queued",)
        conn.close()
        queued = await jobs.get("job-1")
        assert await jobs.set_progress("job-1", 5)
        assert await jobs.set_running("job-1")
        assert not await jobs.set_running("job-1")  # only from queued
        assert await jobs.set_progress("job-1", 40)
        running = await jobs.get("job-1")
        headers = [("Content-Type", "application/octet-stream"), ("X-A", "1"), ("x-a", "2")]
        assert await jobs.finish("job-1", "succeeded", (200, headers, b"\x00\xff"), None)
        # Terminal: nothing moves it any more.
        assert not await jobs.set_progress("job-1", 60)
        assert not await jobs.finish("job-1", "failed", None, "late")
        assert not await jobs.set_running("job-1")
        return queued, running, await jobs.get("job-1")

    queued, running, done = asyncio.run(scenario())
    assert queued is not None and running is not None and done is not None
    assert (queued.owner, queued.route, queued.status, queued.progress) == (
        "alice",
        "/api/x/invoke/async",
        "queued",
        None,
    )
    assert queued.response_status is None and queued.response_headers is None and queued.error is None
    assert queued.created_at == queued.updated_at and queued.created_at.endswith("Z")
    assert (running.status, running.progress) == ("running", 40)
    assert done.status == "succeeded" and done.terminal and done.progress == 100
    assert done.response_status == 200 and done.response_body == b"\x00\xff"
    assert done.response_headers == [
        ("Content-Type", "application/octet-stream"),
        ("X-A", "1"),
        ("x-a", "2"),
    ]
    assert done.created_at == queued.created_at and done.updated_at >= running.updated_at


def test_failures_keep_progress_and_say_why(store: Store) -> None:
    jobs = JobStore(store)

    async def scenario() -> tuple[JobRecord | None, JobRecord | None]:
        await jobs.create("unreachable", "", "/r")
        await jobs.set_running("unreachable")
        await jobs.set_progress("unreachable", 10)
        await jobs.finish("unreachable", "failed", None, "upstream unreachable")
        await jobs.create("five-hundred", "bob", "/r")
        await jobs.finish("five-hundred", "failed", (503, [], b"down"), None)
        return await jobs.get("unreachable"), await jobs.get("five-hundred")

    unreachable, five_hundred = asyncio.run(scenario())
    assert unreachable is not None and five_hundred is not None
    assert (unreachable.status, unreachable.progress, unreachable.error) == (
        "failed",
        10,
        "upstream unreachable",
    )
    assert unreachable.owner == "" and unreachable.response_status is None
    assert (five_hundred.status, five_hundred.response_status, five_hundred.response_body) == (
        "failed",
        503,
        b"down",
    )
    assert five_hundred.response_headers == []


def test_unknown_ids_bad_values_and_duplicates(store: Store) -> None:
    jobs = JobStore(store)

    async def scenario() -> None:
        assert await jobs.get("nope") is None
        assert not await jobs.set_progress("nope", 1)
        assert not await jobs.set_running("nope")
        assert not await jobs.finish("nope", "succeeded", None, None)
        await jobs.create("dup", "u", "/r")
        with pytest.raises(StoreError):
            await jobs.create("dup", "someone-else", "/r")
        for bad in (-1, 101, True):
            with pytest.raises(ValueError):
                await jobs.set_progress("dup", bad)
        with pytest.raises(ValueError):
            await jobs.finish("dup", "running", None, None)
        job = await jobs.get("dup")
        assert job is not None and job.owner == "u" and job.status == "queued" and job.progress is None

    asyncio.run(scenario())


def job(body: bytes | None, headers: list[tuple[str, str]] | None, status: int | None = 200) -> JobRecord:
    return JobRecord("id", "", "/r", "succeeded", 100, status, headers, body, None, "t", "t")


def test_result_view_of_text_binary_and_missing_responses() -> None:
    text = response_view(job("héllo".encode(), [("Content-Type", "text/plain")]))
    assert text == {
        "status": 200,
        "headers": {"Content-Type": "text/plain"},
        "body": "héllo",
        "bodyBase64": None,
    }
    binary = response_view(job(b"\x89PNG\xff", []))
    assert (
        binary is not None and binary["body"] is None and binary["bodyBase64"] == "iVBOR/8="
    )  # standard alphabet, padded
    empty = response_view(job(b"", []))
    assert empty is not None and empty["body"] == "" and empty["bodyBase64"] is None
    assert response_view(job(None, None, status=None)) is None


def test_result_headers_join_duplicates_and_drop_hop_by_hop() -> None:
    assert response_headers(
        [
            ("Set-Cookie", "a=1"),
            ("Connection", "keep-alive, X-Hop"),
            ("Transfer-Encoding", "chunked"),
            ("X-Hop", "gone"),
            ("set-cookie", "b=2"),
            ("Vary", "Accept"),
            ("Set-Cookie", "c=3"),
        ]
    ) == {"Set-Cookie": "a=1, b=2, c=3", "Vary": "Accept"}
