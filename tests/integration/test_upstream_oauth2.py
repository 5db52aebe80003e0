"""Upstream OAuth2 client credentials through a real gateway and a real token endpoint (SPEC 13.5)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.auth_servers import TokenServer
from tests.integration.test_websocket import WsUpstream
from tests.upstream_server import UpstreamServer

CLIENT_ID = "svc-voice"
CLIENT_SECRET = "client-secret-0123456789-abcdef"
CALLER = "caller-token-0123456789"


@pytest.fixture
def idp() -> Iterator[TokenServer]:
    server = TokenServer(CLIENT_ID, CLIENT_SECRET)
    yield server
    server.stop()


def start(
    start_gateway: Any, upstream: UpstreamServer, idp: TokenServer, token_url: str | None = None
) -> Any:
    return start_gateway(
        {
            "auth": {"tokens": [{"token": CALLER, "user_id": "u"}]},
            "upstreams": {
                "voice": {
                    "targets": [upstream.url],
                    "oauth2": {
                        "token_url": token_url or idp.url,
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                        "scope": "voice.write",
                        "audience": "https://voice.example",
                    },
                },
                "plain": {"targets": [upstream.url]},
            },
            "routes": [
                {"path": "/voice/*", "upstream": "voice"},
                {"path": "/plain/*", "upstream": "plain"},
            ],
        }
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_upstream_gets_a_cached_token_instead_of_the_callers(
    start_gateway: Any, upstream: UpstreamServer, idp: TokenServer
) -> None:
    idp.delay = 0.3  # every caller below waits for the same refresh
    gw = start(start_gateway, upstream, idp)
    with ThreadPoolExecutor(50) as pool:
        statuses = list(
            pool.map(lambda n: gw.request("GET", f"/voice/{n}", headers=bearer(CALLER))[0], range(100))
        )
    assert statuses == [200] * 100
    assert len(idp.issued) == 1  # one token request for a hundred callers
    form = idp.forms[0]
    assert form["scope"] == ["voice.write"] and form["audience"] == ["https://voice.example"]
    seen = {r.header("Authorization") for r in upstream.requests if r.target.startswith("/voice/")}
    assert seen == {f"Bearer {idp.issued[0]}"}
    assert gw.request("GET", "/plain/x", headers=bearer(CALLER))[0] == 200
    assert upstream.requests[-1].header("Authorization") is None  # other upstreams get no token
    logs = "".join(gw.stdout + gw.stderr)
    assert idp.issued[0] not in logs and CLIENT_SECRET not in logs


def test_tokens_are_refreshed_30_seconds_before_they_expire(
    start_gateway: Any, upstream: UpstreamServer, idp: TokenServer
) -> None:
    idp.expires_in = 31  # usable for one second
    gw = start(start_gateway, upstream, idp)
    assert gw.request("GET", "/voice/a", headers=bearer(CALLER))[0] == 200
    assert gw.request("GET", "/voice/b", headers=bearer(CALLER))[0] == 200
    assert len(idp.issued) == 1
    time.sleep(1.2)
    assert gw.request("GET", "/voice/c", headers=bearer(CALLER))[0] == 200
    assert len(idp.issued) == 2
    assert upstream.requests[-1].header("Authorization") == f"Bearer {idp.issued[1]}"


def test_no_token_is_502_and_says_nothing_secret(
    start_gateway: Any, upstream: UpstreamServer, idp: TokenServer
) -> None:
    idp.status = 503
    gw = start(start_gateway, upstream, idp)
    status, _, body = gw.request("GET", "/voice/x", headers=bearer(CALLER))
    assert status == 502 and json.loads(body)["error"]["code"] == "BAD_GATEWAY"
    assert not any(r.target.startswith("/voice/") for r in upstream.requests)  # nothing forwarded
    idp.status = 200
    assert gw.request("GET", "/voice/y", headers=bearer(CALLER))[0] == 200  # recovers at once
    dead = start(start_gateway, upstream, idp, token_url="http://127.0.0.1:1/token")
    status, _, body = dead.request("GET", "/voice/z", headers=bearer(CALLER))
    assert status == 502 and CLIENT_SECRET not in body.decode()
    assert CLIENT_SECRET not in "".join(gw.stdout + gw.stderr + dead.stdout + dead.stderr)
    assert "Traceback" not in "".join(gw.stderr + dead.stderr)


def test_websocket_upgrades_carry_the_token(start_gateway: Any, idp: TokenServer) -> None:
    ws = WsUpstream()
    try:
        gw = start_gateway(
            {
                "auth": {"tokens": [{"token": CALLER, "user_id": "u"}]},
                "upstreams": {
                    "voice": {
                        "targets": [f"http://127.0.0.1:{ws.port}"],
                        "oauth2": {
                            "token_url": idp.url,
                            "client_id": CLIENT_ID,
                            "client_secret": CLIENT_SECRET,
                        },
                    }
                },
                "routes": [{"path": "/voice", "upstream": "voice", "websocket": True, "query_token": True}],
            }
        )
        with connect(f"ws://127.0.0.1:{gw.port}/voice?token={CALLER}") as client:
            client.send("hello")
            assert client.recv(timeout=5) == "hello"
        assert ws.seen_headers[-1]["authorization"] == f"Bearer {idp.issued[0]}"
    finally:
        ws.stop()
