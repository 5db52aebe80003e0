"""Two gateway instances, one config, one Redis, one PostgreSQL, NGINX in front: all real.

What a load balancer in front of replicas needs from the shared state (SPEC 13.2):

- a per-user limit of N holds across both (N ± 1 in total),
- an API token created through one instance works on the other; revoked on the other, it is
  refused everywhere within 1 s,
- an async job submitted through one is read, and seen finishing, through the other,
- ``/v1/usage`` on either shows the requests of both,
- killing one instance mid-load loses no idempotent request the balancer can retry, and the
  other keeps serving.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayProcess
from tests.nginx_server import NginxBalancer
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer
from tests.upstream_server import UpstreamServer

ALICE = "alice-token-0123456789"
OPS = "ops-token-0123456789abcdef"
USAGE_KEY = "usage-key-0123456789"
LIMIT = 10


def config(upstream: UpstreamServer, store: str, redis: str) -> dict[str, Any]:
    return {
        "store": store,
        "redis": redis,
        "auth": {
            "tokens": [
                {"token": ALICE, "user_id": "alice"},
                {"token": OPS, "user_id": "ops", "role": "admin"},
            ],
            "usage_key": USAGE_KEY,
        },
        "rate_limits": {"policies": {"per_user": {"rate": LIMIT, "per": "1h", "key": "user"}}},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/limited/*", "upstream": "svc", "rate_limit": "per_user"},
            {"path": "/jobs/*", "upstream": "svc", "async": True, "strip_prefix": True},
            {"path": "/open/*", "upstream": "svc", "auth": "none"},
            {"path": "/rpc", "upstream": "svc"},
        ],
    }


def call(
    port: int, method: str, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if path.startswith("/v1/usage"):
            headers = {"X-Usage-Key": USAGE_KEY}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data
    finally:
        conn.close()


@pytest.fixture
def cluster(
    upstream: UpstreamServer, tmp_path: Path, redis_server: RedisServer, postgres_cluster: PostgresServer
) -> Iterator[tuple[GatewayProcess, GatewayProcess, NginxBalancer]]:
    store = postgres_cluster.new_database()
    instances: list[GatewayProcess] = []
    balancer: NginxBalancer | None = None
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            instances.append(
                GatewayProcess(config(upstream, store, redis_server.url), tmp_path / name, None, None)
            )
        balancer = NginxBalancer([gw.port for gw in instances]).start()
        yield instances[0], instances[1], balancer
    finally:
        if balancer is not None:
            balancer.stop()
        for gw in instances:
            gw.stop(signal.SIGKILL)


def served_by(gw: GatewayProcess, prefix: str) -> int:
    return sum(1 for line in gw.access_lines() if line.get("path", "").startswith(prefix))


def test_two_instances_share_one_state(cluster: tuple[GatewayProcess, GatewayProcess, NginxBalancer]) -> None:
    a, b, lb = cluster

    # One per-user limit across both instances.
    statuses = [call(lb.port, "GET", f"/limited/{n}", ALICE)[0] for n in range(3 * LIMIT)]
    assert set(statuses) <= {200, 429}
    assert LIMIT - 1 <= statuses.count(200) <= LIMIT + 1, statuses
    time.sleep(0.3)  # access log lines are flushed in batches
    assert served_by(a, "/limited/") > 0 and served_by(b, "/limited/") > 0  # both took traffic

    # A token made through one instance works on the other; revoked there, refused everywhere.
    status, doc = call(a.port, "POST", "/v1/api-tokens", OPS, b'{"name": "shared"}')
    assert status == 201, doc
    token, token_id = doc["data"]["token"], doc["data"]["id"]
    assert call(b.port, "GET", "/rpc", token)[0] == 200
    assert call(a.port, "GET", "/rpc", token)[0] == 200  # a now holds a cached verdict
    assert call(b.port, "DELETE", f"/v1/api-tokens/{token_id}", OPS)[0] == 204
    revoked_at = time.monotonic()
    while call(a.port, "GET", "/rpc", token)[0] != 401:
        assert time.monotonic() - revoked_at < 1.5, "revocation not seen by the other instance"
        time.sleep(0.05)
    assert call(b.port, "GET", "/rpc", token)[0] == 401

    # An async job submitted through one is read, and finishes, through the other.
    status, doc = call(a.port, "POST", "/jobs/slow/300", ALICE, b"{}")
    assert status == 202
    request_id = doc["data"]["requestId"]
    deadline = time.monotonic() + 10
    seen: list[str] = []
    while not seen or seen[-1] != "succeeded":
        status, doc = call(b.port, "GET", f"/requests/{request_id}/status", ALICE)
        assert status == 200, doc
        seen.append(doc["data"]["status"])
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)
    status, doc = call(b.port, "GET", f"/requests/{request_id}/result", ALICE)
    assert status == 200 and doc["data"]["response"]["status"] == 200

    # Usage on either instance shows the requests of both.
    for n in range(20):
        assert call(lb.port, "GET", f"/open/usage-{n}")[0] == 200
    time.sleep(0.3)
    assert served_by(a, "/open/usage-") > 0 and served_by(b, "/open/usage-") > 0

    def open_requests(gw: GatewayProcess) -> int:
        _, doc = call(gw.port, "GET", "/v1/usage?hours=1")
        return sum(r["requests"] for r in doc["data"]["topRoutes"] if r["route"] == "/open/*")

    deadline = time.monotonic() + 5
    while (open_requests(a), open_requests(b)) != (20, 20):
        assert time.monotonic() < deadline, (open_requests(a), open_requests(b))
        time.sleep(0.1)


def test_killing_one_instance_loses_no_retryable_request(
    cluster: tuple[GatewayProcess, GatewayProcess, NginxBalancer],
) -> None:
    a, b, lb = cluster
    results: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        n = 0
        while not stop.is_set():
            status = call(lb.port, "GET", f"/open/load-{worker}-{n}")[0]
            with lock:
                results.append(status)
            n += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        while len(results) < 200:
            time.sleep(0.01)
        b.stop(signal.SIGKILL)
        killed_at = len(results)
        while len(results) < killed_at + 300:
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert results.count(200) == len(results), {s: results.count(s) for s in set(results)}
    assert call(a.port, "GET", "/open/after")[0] == 200
