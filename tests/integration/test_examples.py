"""Every config in ``examples/`` passes ``fastgw check`` and works against real local services."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.auth_servers import JwksServer, SessionServer, public_jwk
from tests.conftest import REPO, GatewayProcess
from tests.integration.test_auth_login import CLIENT, IDP, IDP_KEY, id_token
from tests.integration.test_cli import fastgw
from tests.upstream_server import UpstreamServer

EXAMPLES = REPO / "examples"
OPS = "ops-token-0123456789abcdef0123456789"
SECRETS = {
    "OPS_TOKEN": OPS,
    "WEBHOOK_SECRET": "webhook-secret-0123456789abcdef0123",
    "SIGNING_SECRET": "signing-secret-0123456789abcdef0123",
    "FREE_TOKEN": "free-token-0123456789abcdef0123456",
    "PRO_TOKEN": "pro-token-0123456789abcdef01234567",
    "OPENAI_API_KEY": "sk-test-0123456789",
    "AUTH_JWT_SECRET": "app-jwt-secret-0123456789abcdef0123",
    "VOICE_CLIENT_SECRET": "voice-client-secret-0123456789abcdef",
    "USAGE_API_KEY": "usage-key-0123456789abcdef0123456",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_passes_check(name: str, tmp_path: Path) -> None:
    result = fastgw(
        "check",
        "-c",
        str(EXAMPLES / name),
        cwd=tmp_path,
        env={"APP_DIR": str(EXAMPLES / "agent-app"), **SECRETS},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_is_one_example_per_kind_of_gateway() -> None:
    names = {p.stem for p in EXAMPLES.glob("*.yaml")}
    assert names == {"auth-worker", "agent-gateway", "marketplace", "llm-edge", "app-gateway"}


@pytest.fixture
def run_example(tmp_path: Path) -> Iterator[Any]:
    started: list[GatewayProcess] = []

    def run(name: str, **env: str) -> GatewayProcess:
        config = yaml.safe_load((EXAMPLES / name).read_text())
        config["server"].pop("listen")  # the test's free ports instead
        config["server"].pop("metrics_listen")
        gw = GatewayProcess(config, tmp_path, {**SECRETS, **env}, None)
        started.append(gw)
        return gw

    yield run
    for gw in started:
        gw.stop()


def test_auth_worker(run_example: Any, upstream: UpstreamServer) -> None:
    sessions = SessionServer()
    try:
        sessions.sessions = {
            "s-ada": {"id": "ada", "role": "user"},
            "s-root": {"id": "root", "role": "admin"},
        }
        gw = run_example(
            "auth-worker.yaml", AUTH_URL=f"http://127.0.0.1:{sessions.port}", APP_URL=upstream.url
        )
        ada = {"Cookie": f"{SessionServer.COOKIE}=s-ada"}
        root = {"Cookie": f"{SessionServer.COOKIE}=s-root"}
        assert gw.request("GET", "/api/orders", headers=ada)[0] == 200
        assert upstream.requests[-1].header("X-User-Id") == "ada"
        assert gw.request("GET", "/admin/users", headers=ada)[0] == 403
        assert gw.request("GET", "/admin/users", headers=root)[0] == 200
        assert gw.request("GET", "/api/orders")[0] == 401
        assert gw.request("GET", "/api/auth/get-session", headers=ada)[0] == 200  # the auth service itself
    finally:
        sessions.stop()


def test_agent_gateway(run_example: Any, upstream: UpstreamServer) -> None:
    gw = run_example("agent-gateway.yaml", AGENTS_URL=upstream.url, APP_DIR=str(EXAMPLES / "agent-app"))
    status, headers, _ = gw.request("GET", "/")
    assert status == 302 and headers["location"] == "/app/"
    assert b"agent dashboard" in gw.request("GET", "/app/runs/42")[2]  # the SPA's client-side route
    _, _, doc = gw.json("POST", "/v1/api-tokens", body=b'{"name": "agent"}', headers=bearer(OPS))
    token = doc["data"]["token"]
    upstream.release.set()  # the test upstream streams all its events at once
    status, headers, body = gw.request("GET", "/v1/runs/sse", headers=bearer(token))
    assert status == 200 and headers["content-type"] == "text/event-stream" and b"event-0" in body
    payload = b'{"action": "opened"}'
    signature = "sha256=" + hmac.new(SECRETS["WEBHOOK_SECRET"].encode(), payload, hashlib.sha256).hexdigest()
    assert (
        gw.request("POST", "/hooks/github", body=payload, headers={"X-Hub-Signature-256": signature})[0]
        == 200
    )
    assert (
        gw.request("POST", "/hooks/github", body=payload, headers={"X-Hub-Signature-256": "sha256=00"})[0]
        == 401
    )


def test_marketplace(run_example: Any, upstream: UpstreamServer) -> None:
    gw = run_example("marketplace.yaml", SERVICES_URL=upstream.url)
    status, headers, _ = gw.request("GET", "/services/translate?q=hi", headers=bearer(SECRETS["FREE_TOKEN"]))
    assert status == 200 and headers["ratelimit-limit"]
    seen = upstream.requests[-1]
    assert (
        seen.target == "/translate?q=hi"
        and seen.header("X-Gateway-Signature")
        and seen.header("X-User-Plan") == "free"
    )
    status, _, doc = gw.json("POST", "/invoke/render", body=b"{}", headers=bearer(SECRETS["PRO_TOKEN"]))
    assert status == 202
    request_id = doc["data"]["requestId"]
    deadline = time.monotonic() + 10
    while (
        gw.json("GET", f"/requests/{request_id}/status", headers=bearer(SECRETS["PRO_TOKEN"]))[2]["data"][
            "status"
        ]
        != "succeeded"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert gw.request("GET", "/services/x")[0] == 401


def test_llm_edge(run_example: Any, upstream: UpstreamServer) -> None:
    gw = run_example("llm-edge.yaml", OPENAI_URL=upstream.url, OCR_URL=upstream.url, VECTORS_URL=upstream.url)
    chat = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {**bearer(OPS), "Content-Type": "application/json"}
    assert gw.request("POST", "/v1/chat/completions", body=chat, headers=headers)[0] == 200
    assert upstream.requests[-1].header("Authorization") == f"Bearer {SECRETS['OPENAI_API_KEY']}"
    ocr = json.dumps({"url": "https://docs.example/a.pdf"}).encode()
    assert gw.request("POST", "/ocr/v1/ocr", body=ocr, headers=headers)[0] == 200
    sent = json.loads(upstream.requests[-1].body)
    assert sent["document"] == {"url": "https://docs.example/a.pdf", "type": "url"} and sent["model"]
    vec = json.dumps({"database": "notes"}).encode()
    assert gw.request("POST", "/vectors/query", body=vec, headers=headers)[0] == 200
    assert json.loads(upstream.requests[-1].body)["database"] == "ops__notes"
    deadline = time.monotonic() + 5
    while True:
        doc = gw.json("GET", "/v1/usage?hours=1", headers={"X-Usage-Key": SECRETS["USAGE_API_KEY"]})[2]
        if doc["data"]["topModels"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert doc["data"]["topModels"][0]["model"] == "gpt-json"  # the model the upstream answered with


def test_app_gateway(run_example: Any, upstream: UpstreamServer) -> None:
    idp = JwksServer([public_jwk(IDP_KEY, "idp-1")])
    try:
        gw = run_example(
            "app-gateway.yaml",
            IDP_JWKS_URL=idp.url, IDP_ISSUER=IDP, IDP_AUDIENCE=CLIENT, REFRESH_SECURE="false",
            API_URL=upstream.url, FEED_URL=upstream.url, VOICE_URL=upstream.url,
        )  # fmt: skip
        status, headers, doc = gw.json(
            "POST", "/api/v1/auth/login", body=json.dumps({"idToken": id_token(sub="ada")}).encode()
        )
        assert status == 200 and headers["set-cookie"].startswith("fgw_refresh=")
        access = doc["data"]["accessToken"]
        assert gw.request("GET", "/api/profile", headers=bearer(access))[0] == 200
        refresh = headers["set-cookie"].split(";", 1)[0]
        status, headers, _ = gw.request("POST", "/api/v1/auth/refresh", headers={"Cookie": refresh})
        assert status == 200 and headers["set-cookie"] != refresh
        assert gw.request("GET", "/feed/images/1")[1]["x-cache"] == "MISS"
        assert gw.request("GET", "/feed/images/1")[1]["x-cache"] == "HIT"
    finally:
        idp.stop()
