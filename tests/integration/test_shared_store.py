"""The store as shared state (SPEC 13.2), through real gateways on SQLite and on PostgreSQL.

- A job left unfinished by an instance that died is failed, saying so, by whichever instance
  is alive (on SQLite: the gateway's next run), never left ``running``.
- Finished jobs are deleted after ``jobs.retention``.
- PostgreSQL down: routes that need no store keep working, cached API-token verdicts keep
  working, other tokens get 503 ``SERVICE_UNAVAILABLE`` at once; usage recorded meanwhile, and
  the outcome of a job that ended meanwhile, are kept and written when the database is back.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from fastgw.store.jobs import INSTANCE_LOST
from tests.conftest import store_of
from tests.postgres_server import PostgresServer
from tests.upstream_server import UpstreamServer

ALICE = "alice-token-0123456789"
OPS = "ops-token-0123456789abcdef"
USAGE_KEY = "usage-key-0123456789"


def config(upstream: UpstreamServer, store: str, **jobs: Any) -> dict[str, Any]:
    return {
        "store": store,
        "jobs": jobs,
        "auth": {
            "tokens": [
                {"token": ALICE, "user_id": "alice"},
                {"token": OPS, "user_id": "ops", "role": "admin"},
            ],
            "usage_key": USAGE_KEY,
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/jobs/*", "upstream": "svc", "async": True, "strip_prefix": True},
            {"path": "/open/*", "upstream": "svc", "strip_prefix": True, "auth": "none"},
            {"path": "/rpc", "upstream": "svc"},
        ],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def job_status(gw: Any, request_id: str) -> tuple[int, dict[str, Any]]:
    status, _, doc = gw.json("GET", f"/requests/{request_id}/status", headers=bearer(ALICE))
    return status, doc.get("data", {})


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.usefixtures("store_url")
def test_jobs_of_a_dead_instance_are_failed_by_the_next_one(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    first = start_gateway(config(upstream, store_of(tmp_path)))
    status, _, doc = first.json("POST", "/jobs/stall", body=b"{}", headers=bearer(ALICE))
    assert status == 202
    request_id = doc["data"]["requestId"]
    wait_for(lambda: job_status(first, request_id)[1].get("status") == "running", 5, "job never ran")
    first.stop(signal.SIGKILL)

    second = start_gateway(config(upstream, store_of(tmp_path)))
    assert job_status(second, request_id)[1]["status"] == "running"  # not before the lease ends
    data = wait_for(
        lambda: (d := job_status(second, request_id)[1])["status"] == "failed" and d, 20, "job left running"
    )
    status, _, result = second.json("GET", f"/requests/{request_id}/result", headers=bearer(ALICE))
    assert status == 200 and result["data"]["error"] == INSTANCE_LOST
    assert data["status"] == "failed"
    # The live instance's own jobs are untouched by its housekeeping.
    _, _, doc = second.json("POST", "/jobs/slow/50", body=b"{}", headers=bearer(ALICE))
    own = doc["data"]["requestId"]
    wait_for(lambda: job_status(second, own)[1].get("status") == "succeeded", 10, "own job not finished")


@pytest.mark.usefixtures("store_url")
def test_finished_jobs_are_deleted_after_retention(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, store_of(tmp_path), retention="1s"))
    _, _, doc = gw.json("POST", "/jobs/x", body=b"{}", headers=bearer(ALICE))
    request_id = doc["data"]["requestId"]
    wait_for(lambda: job_status(gw, request_id)[1].get("status") == "succeeded", 10, "job not finished")
    wait_for(lambda: job_status(gw, request_id)[0] == 404, 10, "finished job kept past retention")


def test_postgres_outage(upstream: UpstreamServer, start_gateway: Any, own_postgres: PostgresServer) -> None:
    gw = start_gateway(config(upstream, own_postgres.new_database()))
    status, _, doc = gw.json("POST", "/v1/api-tokens", body=b'{"name": "ci"}', headers=bearer(OPS))
    assert status == 201, doc
    cached = doc["data"]["token"]
    assert gw.request("GET", "/rpc", headers=bearer(cached))[0] == 200  # now a cached verdict
    _, _, doc = gw.json("POST", "/v1/api-tokens", body=b'{"name": "later"}', headers=bearer(OPS))
    uncached = doc["data"]["token"]
    # A job whose upstream answers while the database is down: its outcome is kept and
    # recorded when the database is back.
    _, _, doc = gw.json("POST", "/jobs/slow/1000", body=b"{}", headers=bearer(ALICE))
    job = doc["data"]["requestId"]
    wait_for(lambda: job_status(gw, job)[1].get("status") == "running", 5, "job never ran")

    own_postgres.stop()
    own_postgres.wait_stopped()
    started = time.monotonic()
    assert gw.request("GET", "/open/x")[0] == 200
    assert gw.request("GET", "/rpc", headers=bearer(ALICE))[0] == 200  # a static token needs no store
    time.sleep(0.3)  # past the revocation check interval: the check runs, and fails
    assert gw.request("GET", "/rpc", headers=bearer(cached))[0] == 200
    status, _, doc = gw.json("GET", "/rpc", headers=bearer(uncached))
    assert status == 503 and doc["error"]["code"] == "SERVICE_UNAVAILABLE", doc
    for method, path, body, headers in [
        ("GET", "/v1/usage?hours=1", None, {"X-Usage-Key": USAGE_KEY}),
        ("GET", "/v1/api-tokens", None, bearer(OPS)),
        ("POST", "/v1/api-tokens", b'{"name": "x"}', bearer(OPS)),
        ("GET", "/v1/audit-logs", None, bearer(OPS)),
        ("POST", "/jobs/x", b"{}", bearer(ALICE)),
        ("GET", f"/requests/{job}/status", None, bearer(ALICE)),
    ]:
        status, _, doc = gw.json(method, path, body=body, headers=headers)
        assert status == 503 and doc["error"]["code"] == "SERVICE_UNAVAILABLE", (path, doc)
    for _ in range(20):
        assert gw.request("GET", "/open/during-outage")[0] == 200
    assert time.monotonic() - started < 10  # nothing waited for the dead database
    time.sleep(1.5)  # the writer has tried, failed and kept the rows

    own_postgres.start()

    def usage_of_outage() -> bool:
        status, _, doc = gw.json("GET", "/v1/usage?hours=1", headers={"X-Usage-Key": USAGE_KEY})
        return status == 200 and doc["data"]["totals"]["requests"] >= 24

    wait_for(usage_of_outage, 15, "usage recorded during the outage was lost")
    assert gw.request("GET", "/rpc", headers=bearer(uncached))[0] == 200
    wait_for(lambda: job_status(gw, job)[1].get("status") == "succeeded", 5, "the job's outcome was lost")
    assert "Traceback" not in "".join(gw.stderr)
    assert "pg-test-password" not in "".join(gw.stdout + gw.stderr)
