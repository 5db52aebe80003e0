"""``/requests/{id}/*`` through a real gateway: who owns a job, and who may report its progress.

- A job belongs to the credential kind and the user id that created it: a static token for
  ``alice`` and a JWT whose subject is ``alice`` are two different callers.
- Without any credential, an owned job's status and result are 401 (a wrong owner stays 404).
- A progress report is signed with its own context, ``progress|<id>``; the SPEC's empty context
  ``2||||`` is still accepted, but the gateway never mints it for a progress-shaped path, so an
  upstream that echoes request headers cannot be used to forge a report.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest

from fastgw.signing import sign, sign_progress, verify_progress
from fastgw.store.jobs import JobStore
from tests.conftest import GatewayProcess, store_of
from tests.integration.test_requests_endpoints import jobs_in
from tests.upstream_server import UpstreamServer

T = TypeVar("T")

STATIC_ALICE = "static-alice-token-0123456789"
STATIC_BOB = "static-bob-token-0123456789"
JWT_SECRET = "requests-jwt-secret-0123456789-abcdef"
SECRET = "requests-signing-secret-0123456789"
pytestmark = pytest.mark.usefixtures("store_url")


def jwt_for(subject: str) -> str:
    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + 300}, JWT_SECRET, algorithm="HS256")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def config(upstream: UpstreamServer, tmp_path: Path) -> dict[str, Any]:
    return {
        "store": store_of(tmp_path),
        "signing": {"secret": SECRET},
        "auth": {
            "tokens": [
                {"token": STATIC_ALICE, "user_id": "alice"},
                {"token": STATIC_BOB, "user_id": "bob"},
            ],
            "jwt": {"algorithms": ["HS256"], "secret": JWT_SECRET},
        },
        "upstreams": {
            "svc": {"targets": [upstream.url]},
            "based": {"targets": [upstream.url + "/requests"]},
            "encoded": {"targets": [upstream.url + "/%72equests"]},
        },
        "routes": [
            {"path": "/jobs/*", "upstream": "svc", "async": True, "strip_prefix": True},
            {"path": "/openjobs/*", "upstream": "svc", "async": True, "auth": "none", "strip_prefix": True},
            # Signed routes whose forwarded path can be /requests/<id>/progress.
            {"path": "/relay/*", "upstream": "svc", "auth": "none", "sign": True, "rewrite": "/requests"},
            {"path": "/based/*", "upstream": "based", "auth": "none", "sign": True, "strip_prefix": True},
            {"path": "/encoded/*", "upstream": "encoded", "auth": "none", "sign": True, "strip_prefix": True},
            {"path": "/mine/*", "upstream": "svc", "sign": True, "rewrite": "/requests"},
        ],
    }


def running_job(tmp_path: Path, owner: str = "alice") -> str:
    request_id = str(uuid.uuid4())

    async def create(jobs: JobStore) -> None:
        await jobs.create(request_id, owner, "/jobs/*")
        await jobs.set_running(request_id)

    jobs_in(tmp_path, create)
    return request_id


def submit(gw: GatewayProcess, headers: dict[str, str], path: str = "/jobs/work") -> str:
    status, _, doc = gw.json("POST", path, body=b"{}", headers=headers)
    assert status == 202, doc
    return str(doc["data"]["requestId"])


def status_of(gw: GatewayProcess, request_id: str, headers: dict[str, str], what: str = "status") -> int:
    return gw.request("GET", f"/requests/{request_id}/{what}", headers=headers)[0]


def test_a_job_belongs_to_the_credential_kind_and_the_user_id(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    as_static, as_jwt = bearer(STATIC_ALICE), bearer(jwt_for("alice"))
    status, _, doc = gw.json("POST", "/v1/api-tokens", body=b"{}", headers=as_static)
    assert status == 201, doc
    as_api_token = bearer(doc["data"]["token"])

    by_jwt, by_static, by_api_token = submit(gw, as_jwt), submit(gw, as_static), submit(gw, as_api_token)
    for job, owner in ((by_jwt, as_jwt), (by_static, as_static), (by_api_token, as_api_token)):
        for what in ("status", "result"):
            assert status_of(gw, job, owner, "status") == 200
            for other in (as_jwt, as_static, as_api_token, bearer(STATIC_BOB), bearer(jwt_for("bob"))):
                if other is not owner:
                    assert status_of(gw, job, other, what) == 404, (job, other, what)
    # Another JWT for the same subject is the same caller.
    assert status_of(gw, by_jwt, bearer(jwt_for("alice"))) == 200

    # A row written before owners carried their kind (a bare user id) stays readable by that user.
    legacy = running_job(tmp_path, owner="alice")
    assert status_of(gw, legacy, as_static) == 200 and status_of(gw, legacy, as_jwt) == 200
    assert status_of(gw, legacy, bearer(STATIC_BOB)) == 404


def test_status_and_result_without_credentials_are_401(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    owned = submit(gw, bearer(STATIC_ALICE))
    for job in (owned, str(uuid.uuid4())):  # an owned job and an id that never existed alike
        for what in ("status", "result"):
            status, _, doc = gw.json("GET", f"/requests/{job}/{what}")
            assert status == 401 and doc["error"]["code"] == "UNAUTHORIZED", (job, what)
    assert status_of(gw, owned, bearer(STATIC_BOB)) == 404
    assert status_of(gw, owned, bearer(STATIC_BOB), "result") == 404
    assert status_of(gw, owned, bearer(STATIC_ALICE)) == 200
    # A job made without credentials (an auth: none route) is still read with its id alone.
    anonymous = submit(gw, {}, "/openjobs/work")
    assert status_of(gw, anonymous, {}) == 200


def echoed_signature(reply: bytes) -> dict[str, str]:
    """The X-Gateway-* headers the echo upstream saw, as the attacker reads them."""
    headers = json.loads(reply)["headers"]
    return {k: v for k, v in headers if k.lower().startswith("x-gateway-")}


def test_an_echoing_upstream_cannot_mint_a_progress_signature(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    job = running_job(tmp_path)
    body = b'{"progress": 99}'
    outcomes = []
    for path in (
        f"/relay/{job}/progress",  # rewrite
        f"/based/{job}/progress",  # the upstream target's base path
        f"/relay/{job}/%70rogress",  # percent-encoded, normalised to the same path
        f"/relay/{job}/progress?x=1",  # the query is not part of the shape
        f"/relay/{job}%2Fx/progress",
        f"/encoded/{job}/progress",  # only the decoded form has the shape
    ):
        status, _, reply = gw.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        forged = echoed_signature(reply) if status == 200 else {}
        target = "/requests/" + path.split("/", 2)[2]
        replayed = gw.request("POST", target, body=body, headers=forged)[0] if forged else None
        outcomes.append((path, status, replayed))
    assert outcomes == [(path, 403, None) for path, _, _ in outcomes]
    assert upstream.requests == []
    error = json.loads(gw.request("POST", f"/relay/{job}/progress", body=body)[2])["error"]
    assert error["code"] == "FORBIDDEN"
    status, _, doc = gw.json("GET", f"/requests/{job}/status", headers=bearer(STATIC_ALICE))
    assert status == 200 and doc["data"]["progress"] is None

    # Other unauthenticated signed paths, and signed requests that carry an identity, still go.
    status, _, reply = gw.request("POST", f"/relay/{job}/other", body=body)
    assert status == 200 and echoed_signature(reply)
    status, _, reply = gw.request("POST", f"/mine/{job}/progress", body=body, headers=bearer(STATIC_ALICE))
    assert status == 200
    replay = gw.request("POST", f"/requests/{job}/progress", body=body, headers=echoed_signature(reply))
    assert replay[0] == 401


def independent_progress_signature(secret: str, timestamp: str, request_id: str, body: bytes) -> str:
    message = f"{timestamp}\nPOST\n/requests/{request_id}/progress\nprogress|{request_id}\n".encode() + body
    return "v2=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_progress_signed_with_its_own_context_is_accepted(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    job, other = running_job(tmp_path), running_job(tmp_path)
    body = b'{"progress": 42}'
    headers = sign_progress(SECRET, job, body)
    ts = headers["X-Gateway-Timestamp"]
    assert headers["X-Gateway-Signing-Version"] == "2"
    assert headers["X-Gateway-Signature"] == independent_progress_signature(SECRET, ts, job, body)
    assert verify_progress(SECRET, job, headers, body)
    assert not verify_progress(SECRET, other, headers, body)
    assert not verify_progress(SECRET, job, headers, body + b" ")

    status, _, doc = gw.json("POST", f"/requests/{job}/progress", body=body, headers=headers)
    assert status == 200 and doc["data"]["progress"] == 42
    # Bound to its job and its body, and to the gateway's key.
    assert gw.request("POST", f"/requests/{other}/progress", body=body, headers=headers)[0] == 401
    altered = b'{"progress": 43}'
    assert gw.request("POST", f"/requests/{job}/progress", body=altered, headers=headers)[0] == 401
    foreign = sign_progress("another-secret-0123456789", job, body)
    assert gw.request("POST", f"/requests/{job}/progress", body=body, headers=foreign)[0] == 401


def test_progress_with_the_spec_empty_context_is_still_accepted(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    """SPEC 8: a backend holding the key signs ``2||||`` over the progress request."""
    gw = start_gateway(config(upstream, tmp_path))
    job = running_job(tmp_path)
    body = b'{"progress": 7}'
    headers = sign(SECRET, "POST", f"/requests/{job}/progress", body)
    status, _, doc = gw.json("POST", f"/requests/{job}/progress", body=body, headers=headers)
    assert status == 200 and doc["data"]["progress"] == 7
