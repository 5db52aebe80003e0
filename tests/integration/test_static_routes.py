"""``static`` and ``redirect`` routes through a real gateway (SPEC 13.3), hostile paths included."""

from __future__ import annotations

import http.client
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from fastgw.config import ConfigError, parse_config
from tests.conftest import GatewayProcess, read_until_closed

SECRET = b"outside-the-root-secret"
TOKEN = "static-token-0123456789"
INDEX = b"<!doctype html><title>app</title>"
BIG = 5 * 1024 * 1024 + 123
OPEN = {"auth": "none"}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "assets" / "app.js").write_bytes(b"console.log('app')")
    (root / "assets" / "big.bin").write_bytes(os.urandom(1024) * (BIG // 1024) + b"x" * (BIG % 1024))
    (tmp_path / "secret.txt").write_bytes(SECRET)
    (root / "link-out").symlink_to(tmp_path / "secret.txt")
    (root / "dir-out").symlink_to(tmp_path)
    (root / "assets" / "inside-link.js").symlink_to(root / "assets" / "app.js")
    return root


@pytest.fixture
def gw(site: Path, start_gateway: Any) -> GatewayProcess:
    gateway: GatewayProcess = start_gateway(
        {
            "auth": {"tokens": [{"token": TOKEN, "user_id": "u"}]},
            "routes": [
                {"path": "/", "redirect": {"to": "/app/"}, "auth": "none"},
                {
                    "path": "/app/*",
                    "static": {"root": str(site), "spa": True, "max_age": "60s"},
                    "auth": "none",
                },
                {"path": "/files/*", "static": {"root": str(site)}, "auth": "none"},
                {"path": "/private/*", "static": {"root": str(site)}},
                {"path": "/docs/*", "redirect": {"to": "/manual/*", "status": 301}, "auth": "none"},
                {
                    "path": "/away/*",
                    "redirect": {"to": "https://docs.example/*", "status": 308},
                    "auth": "none",
                },
            ],
        }
    )
    return gateway


def raw_get(gw: GatewayProcess, target: str) -> bytes:
    """The whole answer to a request sent byte for byte (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
        return read_until_closed(sock)


def test_files_index_spa_and_headers(gw: GatewayProcess) -> None:
    status, headers, body = gw.request("GET", "/app/")
    assert (status, body) == (200, INDEX)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "max-age=60"
    assert headers["etag"].startswith('"') and headers["last-modified"].endswith("GMT")
    status, headers, body = gw.request("GET", "/app/assets/app.js")
    assert status == 200 and body == b"console.log('app')"
    assert headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert gw.request("GET", "/app/assets/inside-link.js")[2] == b"console.log('app')"  # a link inside
    # A client-side route of the single-page app serves the index; without spa it is 404.
    assert gw.request("GET", "/app/settings/profile")[:3:2] == (200, INDEX)
    status, _, body = gw.request("GET", "/files/settings/profile")
    assert status == 404 and json.loads(body)["error"]["code"] == "NOT_FOUND"
    assert gw.request("GET", "/files/")[2] == INDEX  # a directory serves its index
    assert gw.request("GET", "/files/assets/app.js")[1]["cache-control"] == "max-age=0"


def test_conditional_requests_head_and_methods(gw: GatewayProcess) -> None:
    _, headers, _ = gw.request("GET", "/files/assets/app.js")
    status, _, body = gw.request("GET", "/files/assets/app.js", headers={"If-None-Match": headers["etag"]})
    assert (status, body) == (304, b"")
    since = {"If-Modified-Since": headers["last-modified"]}
    assert gw.request("GET", "/files/assets/app.js", headers=since)[0] == 304
    old = {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    assert gw.request("GET", "/files/assets/app.js", headers=old)[0] == 200
    other = {"If-None-Match": '"nope"', "If-Modified-Since": headers["last-modified"]}
    assert gw.request("GET", "/files/assets/app.js", headers=other)[0] == 200  # If-None-Match wins
    status, head_headers, body = gw.request("HEAD", "/files/assets/app.js")
    assert (status, body) == (200, b"") and head_headers["content-length"] == "18"
    status, headers, body = gw.request("POST", "/files/assets/app.js", body=b"x")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert gw.request("GET", "/private/index.html")[0] == 401  # auth applies as to any route
    assert gw.request("GET", "/private/index.html", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_large_files_stream(gw: GatewayProcess, site: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/files/assets/big.bin")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == str(BIG)
    assert resp.read() == (site / "assets" / "big.bin").read_bytes()
    conn.request("GET", "/files/assets/app.js")  # the connection stays usable
    assert conn.getresponse().read() == b"console.log('app')"
    conn.close()


@pytest.mark.parametrize(
    "target",
    [
        "/files/link-out",
        "/files/dir-out/secret.txt",
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/%2E%2E%2Fsecret.txt",
        "/files/..%2fsecret.txt",
        "/files/assets/..%2f..%2fsecret.txt",
        "/files/%252e%252e/secret.txt",
        "/files/..%5csecret.txt",
        "/files/assets%00.js",
        "/files/%00",
        "/files//etc/passwd",
        "/files/%2fetc%2fpasswd",
        "/app/link-out",
        "/app/%2e%2e/secret.txt",
    ],
)
def test_nothing_outside_the_root_is_served(gw: GatewayProcess, target: str) -> None:
    answer = raw_get(gw, target)
    status = int(answer.split(b" ", 2)[1])
    assert SECRET not in answer and b"root:" not in answer
    assert status in (400, 404) or (target.startswith("/app/") and answer.endswith(INDEX)), answer[:200]


def test_redirects_keep_the_tail_and_the_query(gw: GatewayProcess) -> None:
    status, headers, _ = gw.request("GET", "/docs/guide/start?lang=en")
    assert status == 301 and headers["location"] == "/manual/guide/start?lang=en"
    status, headers, _ = gw.request("GET", "/")
    assert status == 302 and headers["location"] == "/app/"
    status, headers, _ = gw.request("POST", "/away/x", body=b"{}")
    assert status == 308 and headers["location"] == "https://docs.example/x"


def test_config_errors_name_their_key(tmp_path: Path) -> None:
    def errors(route: str) -> list[str]:
        text = f"upstreams: {{svc: {{targets: ['http://127.0.0.1:1']}}}}\nroutes:\n  - {route}\n"
        with pytest.raises(ConfigError) as caught:
            parse_config(text, {})
        return caught.value.errors

    assert errors(f"{{path: /s/*, static: {{root: {tmp_path}/missing}}}}") == [
        f"routes[0].static.root: not a directory: '{tmp_path}/missing'"
    ]
    assert errors(f"{{path: /s/*, upstream: svc, static: {{root: {tmp_path}}}}}") == [
        "routes[0].upstream: cannot be combined with static"
    ]
    assert errors("{path: /r, redirect: {to: /x, status: 303}}")[0].startswith("routes[0].redirect.status")
    assert errors("{path: /r/*, redirect: {to: /x}, websocket: true}") == [
        "routes[0].websocket: cannot be combined with redirect (nothing is forwarded)"
    ]
