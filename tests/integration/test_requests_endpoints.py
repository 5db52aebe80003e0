"""``/requests/{id}/status``, ``/result`` and ``/progress`` through a real gateway process.

Jobs are written into the gateway's own SQLite file by the test, with the same ``JobStore`` the
async runner uses, so every state (queued, running, finished with text, binary or no response)
can be checked over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fastgw.signing import sign
from fastgw.store import open_store
from fastgw.store.jobs import JobStore
from tests.conftest import GatewayProcess, store_of
from tests.upstream_server import UpstreamServer

T = TypeVar("T")

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789"
SECRET = "backend-signing-secret"
AS_ALICE = {"Authorization": f"Bearer {ALICE}"}
AS_BOB = {"Authorization": f"Bearer {BOB}"}
pytestmark = pytest.mark.usefixtures("store_url")


def config(upstream: UpstreamServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "store": store_of(tmp_path),
        "auth": {
            "tokens": [
                {"token": ALICE, "user_id": "alice", "role": "user"},
                {"token": BOB, "user_id": "bob", "role": "admin"},
            ]
        },
        "signing": {"secret": SECRET},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/*", "upstream": "svc"}],
    }


def jobs_in(tmp_path: Path, fn: Callable[[JobStore], Coroutine[Any, Any, T]]) -> T:
    """Run ``fn`` against the gateway's store file, as another process would."""
    store = open_store(store_of(tmp_path))
    try:
        return asyncio.run(fn(JobStore(store)))
    finally:
        store.close()


def get(gw: GatewayProcess, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, doc = gw.json("GET", path, headers=headers or {})
    return status, doc


def progress(
    gw: GatewayProcess, request_id: str, body: Any, signed: bool = True, **identity: str
) -> tuple[int, Any]:
    path = f"/requests/{request_id}/progress"
    raw = json.dumps(body).encode()
    headers = sign(SECRET, "POST", path, raw, **identity) if signed else {}
    status, _, doc = gw.json("POST", path, body=raw, headers=headers)
    return status, doc


def test_status_and_result_are_the_creators_alone(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))

    async def create(jobs: JobStore) -> None:
        await jobs.create("job-text", "alice", "/api/x/async")
        await jobs.create("job-binary", "alice", "/api/x/async")
        await jobs.create("job-failed", "alice", "/api/x/async")
        await jobs.create("job-anon", "", "/api/x/async")

    jobs_in(tmp_path, create)

    status, doc = get(gw, "/requests/job-text/status", AS_ALICE)
    assert status == 200
    data = doc["data"]
    assert set(data) == {"requestId", "status", "progress", "createdAt", "updatedAt"}
    assert (data["requestId"], data["status"], data["progress"]) == ("job-text", "queued", None)
    assert data["createdAt"].endswith("Z")

    # Anyone but the creator gets the same 404 as for an id that does not exist (even an admin).
    missing = get(gw, "/requests/no-such-job/status", AS_ALICE)
    assert missing[0] == 404 and missing[1]["error"]["code"] == "NOT_FOUND"
    for what in ("status", "result"):
        status, doc = get(gw, f"/requests/job-text/{what}", AS_BOB)
        assert status == 404 and doc["error"]["message"] == missing[1]["error"]["message"]
        # Without any credential: 401, as for an id that does not exist.
        status, doc = get(gw, f"/requests/job-text/{what}")
        assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED"
    assert get(gw, "/requests/job-text/status", {"Authorization": "Bearer wrong"})[0] == 401

    status, doc = get(gw, "/requests/job-text/result", AS_ALICE)
    assert status == 409 and doc["error"]["code"] == "NOT_READY"
    jobs_in(tmp_path, lambda jobs: jobs.set_running("job-text"))
    assert get(gw, "/requests/job-text/status", AS_ALICE)[1]["data"]["status"] == "running"
    assert get(gw, "/requests/job-text/result", AS_ALICE)[0] == 409

    async def finish(jobs: JobStore) -> None:
        headers = [("Content-Type", "application/json"), ("X-Tag", "a"), ("X-Tag", "b")]
        await jobs.finish("job-text", "succeeded", (200, headers, '{"answer":"é"}'.encode()), None)
        await jobs.finish("job-binary", "succeeded", (201, [], b"\x00\x9f\xff"), None)
        await jobs.finish("job-failed", "failed", None, "upstream timed out")

    jobs_in(tmp_path, finish)

    status, doc = get(gw, "/requests/job-text/result", AS_ALICE)
    assert status == 200
    assert doc["data"]["requestId"] == "job-text" and doc["data"]["status"] == "succeeded"
    assert doc["data"]["response"] == {
        "status": 200,
        "headers": {"Content-Type": "application/json", "X-Tag": "a, b"},
        "body": '{"answer":"é"}',
        "bodyBase64": None,
    }
    assert get(gw, "/requests/job-text/status", AS_ALICE)[1]["data"]["progress"] == 100

    response = get(gw, "/requests/job-binary/result", AS_ALICE)[1]["data"]["response"]
    assert response["status"] == 201 and response["body"] is None
    assert base64.b64decode(response["bodyBase64"]) == b"\x00\x9f\xff"

    status, doc = get(gw, "/requests/job-failed/result", AS_ALICE)
    assert status == 200 and doc["data"]["status"] == "failed"
    assert doc["data"]["response"] is None and doc["data"]["error"] == "upstream timed out"
    assert get(gw, "/requests/job-failed/result", AS_BOB)[0] == 404

    # An anonymous caller's job: whoever holds the id.
    for headers in ({}, AS_BOB, AS_ALICE):
        status, doc = get(gw, "/requests/job-anon/status", headers)
        assert status == 200 and doc["data"]["status"] == "queued"


def test_progress_needs_the_backends_signature(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))

    async def create(jobs: JobStore) -> None:
        await jobs.create("job-1", "alice", "/api/x/async")
        await jobs.set_running("job-1")
        await jobs.create("job-done", "alice", "/api/x/async")
        await jobs.finish("job-done", "failed", (500, [], b"boom"), None)

    jobs_in(tmp_path, create)

    status, doc = progress(gw, "job-1", {"progress": 40})
    assert status == 200 and doc["data"] == {"requestId": "job-1", "status": "running", "progress": 40}
    assert get(gw, "/requests/job-1/status", AS_ALICE)[1]["data"]["progress"] == 40

    # Unsigned, signed with an identity (the context must be 2||||), or signed by another secret.
    assert progress(gw, "job-1", {"progress": 50}, signed=False)[0] == 401
    assert progress(gw, "job-1", {"progress": 50}, user_id="alice")[0] == 401
    raw = b'{"progress": 50}'
    forged = sign("another-secret", "POST", "/requests/job-1/progress", raw)
    status, _, doc = gw.json("POST", "/requests/job-1/progress", body=raw, headers=forged)
    assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED"
    # A signature over another job's path or another body does not carry over.
    other = sign(SECRET, "POST", "/requests/job-done/progress", raw)
    assert gw.json("POST", "/requests/job-1/progress", body=raw, headers=other)[0] == 401
    tampered = sign(SECRET, "POST", "/requests/job-1/progress", b'{"progress": 5}')
    assert gw.json("POST", "/requests/job-1/progress", body=raw, headers=tampered)[0] == 401
    # Identity headers sent alongside a valid empty-context signature are not part of it.
    with_identity = {**sign(SECRET, "POST", "/requests/job-1/progress", raw), "X-User-Id": "alice"}
    assert gw.json("POST", "/requests/job-1/progress", body=raw, headers=with_identity)[0] == 200
    assert get(gw, "/requests/job-1/status", AS_ALICE)[1]["data"]["progress"] == 50

    for body in ({"progress": 101}, {"progress": -1}, {"progress": "7"}, {"progress": 1.5}, {}, [3]):
        status, doc = progress(gw, "job-1", body)
        assert status == 400 and doc["error"]["code"] == "VALIDATION_ERROR", body
    assert progress(gw, "job-1", {"progress": True})[0] == 400

    status, doc = progress(gw, "no-such-job", {"progress": 10})
    assert status == 404 and doc["error"]["code"] == "NOT_FOUND"

    # A finished job answers with its state and does not move.
    status, doc = progress(gw, "job-done", {"progress": 90})
    assert status == 200 and doc["data"] == {"requestId": "job-done", "status": "failed", "progress": None}
    status, doc = get(gw, "/requests/job-done/result", AS_ALICE)
    assert doc["data"]["status"] == "failed" and doc["data"]["response"]["status"] == 500
    assert doc["data"]["response"]["body"] == "boom" and doc["data"]["error"] is None
