"""HTTPS and mutual TLS with certificates made by the test (cryptography)."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.upstream_server import UpstreamServer


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    _write(tmp_path / "ca", ca)
    _write(tmp_path / "server", _cert("localhost", server_key, "test-ca", ca_key, ca=False), server_key)
    _write(tmp_path / "client", _cert("svc-billing", client_key, "test-ca", ca_key, ca=False), client_key)
    return tmp_path


def tls_config(upstream: UpstreamServer, pki: Path) -> dict[str, Any]:
    return {
        "server": {
            "tls": {
                "cert": str(pki / "server.crt"),
                "key": str(pki / "server.key"),
                "client_ca": str(pki / "ca.crt"),
                "require_client_cert": True,
            }
        },
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/*", "upstream": "svc"}],
    }


def _client_context(pki: Path, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if with_cert:
        context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return context


def _get(port: int, context: ssl.SSLContext, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_mtls_refuses_without_cert_and_proxies_with_one(
    upstream: UpstreamServer, start_gateway: Any, pki: Path
) -> None:
    gw = start_gateway(tls_config(upstream, pki), tls_context=_client_context(pki, True))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _get(gw.port, _client_context(pki, False), "/api/x")
    status, _ = _get(gw.port, _client_context(pki, True), "/api/x")
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.header("X-User-Id") == "svc-billing"
    assert seen.header("X-Forwarded-Proto") == "https"
