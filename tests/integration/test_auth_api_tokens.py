"""API tokens end to end: HTTP endpoints, CLI, storage, and revocation across worker processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fastgw.store import connect_store
from tests.auth_servers import claims, sign
from tests.conftest import REPO, GatewayProcess, store_of
from tests.upstream_server import UpstreamServer

OPS = "ops-token-0123456789"  # static, admin, scopes rpc + read
READER = "reader-token-0123456789"  # static, no scopes
SECRET = "platform-jwt-secret-0123456789-abcdef"
TOKEN_RE = re.compile(r"fgw_[A-Za-z0-9_-]{43}")
pytestmark = pytest.mark.usefixtures("store_url")


def config(upstream: UpstreamServer, tmp_path: Path, workers: int = 1) -> dict[str, Any]:
    return {
        "server": {"workers": workers, "metrics_listen": None},
        "store": store_of(tmp_path),
        "auth": {
            "tokens": [
                {"token": OPS, "user_id": "ops", "role": "admin", "scopes": ["rpc", "read"], "plan": "pro"},
                {"token": READER, "user_id": "reader", "role": "user"},
            ],
            "jwt": {"algorithms": ["HS256"], "secret": SECRET},
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/api/*", "upstream": "svc"},
            {"path": "/rpc", "upstream": "svc", "scopes": ["rpc"]},
        ],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create(gw: GatewayProcess, credential: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, _, doc = gw.json(
        "POST", "/v1/api-tokens", body=json.dumps(body).encode(), headers=bearer(credential)
    )
    return status, doc


def test_create_use_list_and_revoke(upstream: UpstreamServer, start_gateway: Any, tmp_path: Path) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    status, doc = create(gw, OPS, {"name": "ci", "scopes": ["rpc"]})
    assert status == 201 and doc["ok"] is True
    data = doc["data"]
    assert set(data) == {"id", "token", "name", "scopes", "createdAt"}
    token = data["token"]
    assert TOKEN_RE.fullmatch(token) and re.fullmatch(r"tok_[0-9a-f]{12}", data["id"])
    assert data["name"] == "ci" and data["scopes"] == ["rpc"] and data["createdAt"].endswith("Z")

    # It works at once and acts as its owner, with its own scopes.
    assert gw.request("GET", "/rpc", headers=bearer(token))[0] == 200
    seen = upstream.requests[-1]
    assert (seen.header("X-User-Id"), seen.header("X-User-Role"), seen.header("X-User-Plan")) == (
        "ops",
        "admin",
        "pro",
    )
    assert seen.header("X-User-Scopes") == "rpc" and seen.header("Authorization") is None

    # Default scopes are the creator's; a token without rpc is refused on rpc routes.
    status, doc = create(gw, OPS, {})
    assert status == 201 and doc["data"]["scopes"] == ["rpc", "read"] and doc["data"]["name"] == ""
    status, doc = create(gw, OPS, {"name": "reader", "scopes": ["read"]})
    read_only = doc["data"]["token"]
    assert gw.request("GET", "/rpc", headers=bearer(read_only))[0] == 403

    # Scopes beyond the creator's are 403; a creator without scopes may set any.
    status, doc = create(gw, OPS, {"scopes": ["rpc", "admin"]})
    assert status == 403 and doc["error"]["code"] == "FORBIDDEN"
    assert create(gw, READER, {"scopes": ["anything"]})[0] == 201
    for bad in ({"scopes": "rpc"}, {"scopes": ["a b"]}, {"name": 5}, [1]):
        assert create(gw, OPS, bad)[0] == 400, bad  # type: ignore[arg-type]

    # Listing: the caller's tokens only, never a secret.
    status, _, body = gw.request("GET", "/v1/api-tokens", headers=bearer(OPS))
    listed = json.loads(body)["data"]
    assert status == 200 and len(listed) == 3
    assert all(set(item) == {"id", "name", "scopes", "createdAt", "lastUsedAt"} for item in listed)
    assert token not in body.decode() and "fgw_" not in body.decode()
    reader_ids = [item["id"] for item in gw.json("GET", "/v1/api-tokens", headers=bearer(READER))[2]["data"]]
    assert len(reader_ids) == 1

    # Someone else's id, or an unknown one, is 404.
    assert gw.request("DELETE", f"/v1/api-tokens/{reader_ids[0]}", headers=bearer(OPS))[0] == 404
    assert gw.request("DELETE", "/v1/api-tokens/tok_000000000000", headers=bearer(OPS))[0] == 404
    assert gw.request("DELETE", "/v1/api-tokens/nonsense", headers=bearer(OPS))[0] == 404

    status, headers, body = gw.request("DELETE", f"/v1/api-tokens/{data['id']}", headers=bearer(OPS))
    assert status == 204 and body == b""
    status, _, body = gw.request("GET", "/rpc", headers=bearer(token))
    assert status == 401 and json.loads(body)["error"]["code"] == "UNAUTHORIZED"
    assert gw.request("DELETE", f"/v1/api-tokens/{data['id']}", headers=bearer(OPS))[0] == 404
    assert data["id"] not in gw.request("GET", "/v1/api-tokens", headers=bearer(OPS))[2].decode()

    # The plaintext exists nowhere but in the one response that returned it.
    gw.stop()
    conn = connect_store(store_of(tmp_path))
    for table in ("api_tokens", "audit_log", "store_meta", "usage", "jobs"):
        for row in conn.execute(f"SELECT * FROM {table}"):  # noqa: S608 - our own table names
            assert not any(isinstance(v, str) and token in v for v in row), table
    assert conn.execute("SELECT count(*) FROM api_tokens WHERE last_used_at IS NOT NULL").fetchone()[0] >= 1
    conn.close()
    for path in tmp_path.glob("gw.db*"):  # the SQLite files, journal included
        assert token.encode() not in path.read_bytes()
    assert token not in "".join(gw.stdout + gw.stderr)


def test_api_tokens_cannot_manage_api_tokens(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    status, doc = create(gw, sign(claims(sub="jwt-user", scope="read write"), SECRET, "HS256"), {"name": "j"})
    assert status == 201 and doc["data"]["scopes"] == ["read", "write"]
    api_token = doc["data"]["token"]
    assert gw.request("GET", "/api/x", headers=bearer(api_token))[0] == 200
    assert upstream.requests[-1].header("X-User-Id") == "jwt-user"
    for method, path in (
        ("GET", "/v1/api-tokens"),
        ("POST", "/v1/api-tokens"),
        ("DELETE", f"/v1/api-tokens/{doc['data']['id']}"),
    ):
        status, _, body = gw.request(
            method, path, body=b"{}" if method == "POST" else None, headers=bearer(api_token)
        )
        assert status == 403 and json.loads(body)["error"]["code"] == "FORBIDDEN", (method, path)
        status, _, body = gw.request(method, path)
        assert status == 401 and json.loads(body)["error"]["code"] == "UNAUTHORIZED"
    # The token survived the attempts to revoke it with itself.
    assert gw.request("GET", "/api/x", headers=bearer(api_token))[0] == 200


def test_revocation_reaches_every_worker_within_one_second(
    upstream: UpstreamServer, start_gateway: Any, tmp_path: Path
) -> None:
    gw = start_gateway(config(upstream, tmp_path, workers=2))
    try:
        owner = sign(claims(sub="owner", scope="rpc"), SECRET, "HS256")
        status, doc = create(gw, owner, {"name": "short-lived"})
        assert status == 201
        token, token_id = doc["data"]["token"], doc["data"]["id"]
        for _ in range(20):  # new connections: both workers see (and cache) the token
            assert gw.request("GET", "/api/x", headers=bearer(token))[0] == 200
        assert gw.request("DELETE", f"/v1/api-tokens/{token_id}", headers=bearer(owner))[0] == 204
        revoked_at = time.monotonic()
        last_accepted = None
        while (started := time.monotonic()) < revoked_at + 1.5:
            if gw.request("GET", "/api/x", headers=bearer(token))[0] == 200:
                last_accepted = started - revoked_at
        assert last_accepted is None or last_accepted < 1.0, last_accepted
        assert all(gw.request("GET", "/api/x", headers=bearer(token))[0] == 401 for _ in range(10))
    finally:
        # SIGTERM reaches the workers through the master; the fixture's SIGKILL would orphan them.
        gw.stop()


def fastgw_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "fastgw", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=30
    )


def test_cli_create_list_revoke(upstream: UpstreamServer, start_gateway: Any, tmp_path: Path) -> None:
    gw = start_gateway(config(upstream, tmp_path))
    cfg = str(gw.config_path)
    owner = ("--user", "svc-deploy", "--role", "service", "--plan", "pro")
    done = fastgw_cli(
        "tokens", "create", "-c", cfg, "--name", "deploy", "--scope", "rpc", *owner, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert set(created) == {"id", "token", "name", "scopes", "createdAt"}
    token = created["token"]
    assert TOKEN_RE.fullmatch(token) and created["scopes"] == ["rpc"]

    # The running gateway accepts it at once.
    assert gw.request("GET", "/rpc", headers=bearer(token))[0] == 200
    seen = upstream.requests[-1]
    assert (seen.header("X-User-Id"), seen.header("X-User-Role"), seen.header("X-User-Plan")) == (
        "svc-deploy",
        "service",
        "pro",
    )

    listed = fastgw_cli("tokens", "list", "-c", cfg, cwd=tmp_path)
    assert listed.returncode == 0
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [line["id"] for line in lines] == [created["id"]]
    assert token not in listed.stdout and "token" not in lines[0]

    revoked = fastgw_cli("tokens", "revoke", "-c", cfg, created["id"], cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 1.0
    while gw.request("GET", "/rpc", headers=bearer(token))[0] == 200:
        assert time.monotonic() < deadline, "CLI revocation not seen within 1 s"
    assert gw.request("GET", "/rpc", headers=bearer(token))[0] == 401

    assert fastgw_cli("tokens", "revoke", "-c", cfg, "tok_ffffffffffff", cwd=tmp_path).returncode == 1
    assert fastgw_cli("tokens", "create", "-c", cfg, cwd=tmp_path).returncode == 2  # --name missing
    assert (
        fastgw_cli("tokens", "create", "-c", cfg, "--name", "x", "--scope", "a|b", cwd=tmp_path).returncode
        == 1
    )
    assert fastgw_cli("tokens", "list", "-c", str(tmp_path / "missing.yaml"), cwd=tmp_path).returncode == 1
    assert token not in "".join(gw.stdout + gw.stderr)
