"""Real identity services for the auth tests: a JWKS endpoint, a session-verify endpoint and an
OAuth 2.0 token endpoint (client credentials).

Both are threaded ``http.server`` instances on 127.0.0.1 that count what they are asked, so the
tests can check how often the gateway calls them. Keys are generated with ``cryptography``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: PrivateKey, kid: str | None, alg: str | None = None) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk["use"] = "sig"
    return jwk


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(claims: dict[str, Any], key: PrivateKey | str, alg: str, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any] | str, payload: dict[str, Any] | str, secret: bytes | None) -> str:
    """A hand-built token (for what PyJWT refuses to produce): HS256 over ``secret``, or unsigned."""
    head = b64((header if isinstance(header, str) else json.dumps(header)).encode())
    body = b64((payload if isinstance(payload, str) else json.dumps(payload)).encode())
    signing_input = f"{head}.{body}".encode()
    signature = "" if secret is None else b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return f"{head}.{body}.{signature}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "user-1", "iat": now, "exp": now + 300, **extra}


class _Server:
    """A threaded HTTP server answering every GET through ``self.answer(handler)``."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                status, body = owner.answer(self)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815 - http.server naming

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        raise NotImplementedError

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class JwksServer(_Server):
    """Serves ``{"keys": [...]}`` at any path; ``status`` other than 200 simulates an outage.

    ``body`` (when set) is served with status 200 instead of the document (e.g. broken JSON);
    ``delay`` seconds pass before any answer (an IdP that hangs). ``stop()`` may be called
    twice, so a test can take the IdP down for good (connections refused) mid-way.
    """

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys: list[dict[str, Any]] = list(keys or [])
        self.fetches = 0
        self.status = 200
        self.body: bytes | None = None
        self.delay = 0.0
        self.stopped = False
        super().__init__()

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            super().stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        with self.lock:
            self.fetches += 1
            delay, status, body = self.delay, self.status, self.body
        if delay:
            time.sleep(delay)
        if status != 200:
            return status, b'{"error":"down"}'
        if body is not None:
            return 200, body
        with self.lock:
            return 200, json.dumps({"keys": self.keys}).encode()


class SessionServer(_Server):
    """Better Auth's get-session: ``sessions`` maps a cookie value to its user; others get ``null``."""

    COOKIE = "better-auth.session_token"

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.cookie_headers: list[str] = []
        self.status = 200
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/auth/get-session"

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        cookie = handler.headers.get("Cookie", "")
        name, _, value = cookie.partition("=")
        with self.lock:
            self.cookie_headers.append(cookie)
            self.calls[value] += 1
            if self.status != 200:
                return self.status, b'{"error":"internal"}'
        user = self.sessions.get(value) if name == self.COOKIE else None
        if user is None:
            return 200, b"null"
        return 200, json.dumps({"session": {"id": "s1", "userId": user["id"]}, "user": user}).encode()


class TokenServer(_Server):
    """An OAuth 2.0 token endpoint: client credentials with HTTP Basic, one token per request.

    ``delay`` holds each answer (to gather concurrent callers), ``status`` other than 200 fails
    them, ``expires_in`` is what it grants.
    """

    def __init__(self, client_id: str, client_secret: str, expires_in: float = 3600) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        self.delay = 0.0
        self.status = 200
        self.issued: list[str] = []
        self.forms: list[dict[str, list[str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/oauth/token"

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        from urllib.parse import parse_qs

        length = int(handler.headers.get("Content-Length") or 0)
        form = parse_qs(handler.rfile.read(length).decode())
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        time.sleep(self.delay)
        with self.lock:
            self.forms.append(form)
            if handler.command != "POST" or handler.headers.get("Authorization") != expected:
                return 401, b'{"error": "invalid_client"}'
            if form.get("grant_type") != ["client_credentials"]:
                return 400, b'{"error": "unsupported_grant_type"}'
            if self.status != 200:
                return self.status, b'{"error": "temporarily_unavailable"}'
            nonce = hashlib.sha256(str(time.time()).encode()).hexdigest()[:12]
            token = f"upstream-access-{len(self.issued)}-{nonce}"
            self.issued.append(token)
            return 200, json.dumps(
                {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
            ).encode()
