"""Inbound webhook signatures (auth: hmac): the spec vector, tolerance, and malformed headers."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from tornado.httputil import HTTPHeaders

from fastgw.config import HmacConfig
from fastgw.webhook import verify_webhook

TS = 1767225600
BODY = b'{"event":"paid"}'
VECTOR = "sha256=9f260bf256a9420fd627777690e631ee16a4420d935b177b2822c097cdddf919"
STAMPED = HmacConfig(
    secret="whsec_test", header="X-Webhook-Signature", timestamp_header="X-Webhook-Timestamp", tolerance=300
)
BODY_ONLY = HmacConfig(secret="whsec_test", header="X-Signature")


def stamped(signature: str | None = VECTOR, timestamp: str | None = str(TS)) -> HTTPHeaders:
    headers = HTTPHeaders()
    if signature is not None:
        headers["X-Webhook-Signature"] = signature
    if timestamp is not None:
        headers["X-Webhook-Timestamp"] = timestamp
    return headers


def test_spec_vector() -> None:
    assert verify_webhook(STAMPED, stamped(), BODY, now=TS)
    # Header names are matched case-insensitively.
    raw = HTTPHeaders({"x-webhook-signature": VECTOR, "X-WEBHOOK-TIMESTAMP": str(TS)})
    assert verify_webhook(STAMPED, raw, BODY, now=TS)


def test_body_only_signature() -> None:
    signature = "sha256=" + hmac.new(b"whsec_test", BODY, hashlib.sha256).hexdigest()
    assert verify_webhook(BODY_ONLY, HTTPHeaders({"X-Signature": signature}), BODY)
    assert not verify_webhook(BODY_ONLY, HTTPHeaders({"X-Signature": VECTOR}), BODY)
    assert not verify_webhook(BODY_ONLY, HTTPHeaders({"X-Signature": signature}), BODY + b"\n")


def test_tolerance_bounds() -> None:
    assert verify_webhook(STAMPED, stamped(), BODY, now=TS + 300)
    assert verify_webhook(STAMPED, stamped(), BODY, now=TS - 300)
    assert not verify_webhook(STAMPED, stamped(), BODY, now=TS + 301)  # 301 s old
    assert not verify_webhook(STAMPED, stamped(), BODY, now=TS - 301)  # 301 s in the future
    assert not verify_webhook(STAMPED, stamped(), BODY)  # against the clock by default


@pytest.mark.parametrize(
    "body",
    [b'{"event": "paid"}', b'{"event":"paid"}\n', b'{"event":"Paid"}', b"", BODY[:-1]],
)
def test_only_the_exact_body_bytes_verify(body: bytes) -> None:
    assert not verify_webhook(STAMPED, stamped(), body, now=TS)


@pytest.mark.parametrize(
    "signature",
    [
        None,  # missing
        "",  # empty
        VECTOR.upper(),
        "sha256=" + VECTOR[7:].upper(),  # uppercase hex
        VECTOR[7:],  # prefix missing
        "SHA256=" + VECTOR[7:],
        VECTOR[:-1],  # truncated
        VECTOR[:20],
        "sha256=",
        VECTOR + "0",
        f"{VECTOR},{VECTOR}",  # several values
        f"{VECTOR} ",
        "v1=" + VECTOR[7:],
        VECTOR[:-1] + "\u00e9",  # non-ASCII
    ],
)
def test_malformed_signatures_fail(signature: str | None) -> None:
    assert not verify_webhook(STAMPED, stamped(signature=signature), BODY, now=TS)


@pytest.mark.parametrize(
    "timestamp", [None, "", "1767225600.0", "+1767225600", " 1767225600x", "\u0661\u0667", "9" * 5000]
)
def test_malformed_timestamps_fail(timestamp: str | None) -> None:
    assert not verify_webhook(STAMPED, stamped(timestamp=timestamp), BODY, now=TS)


def test_timestamp_is_part_of_the_signed_message() -> None:
    other = str(TS + 1)
    assert not verify_webhook(STAMPED, stamped(timestamp=other), BODY, now=TS)


def test_wrong_secret_fails() -> None:
    cfg = HmacConfig(
        secret="whsec_other", header="X-Webhook-Signature", timestamp_header="X-Webhook-Timestamp"
    )
    assert not verify_webhook(cfg, stamped(), BODY, now=TS)


def test_plain_dict_headers_work_with_exact_names() -> None:
    headers = {"X-Webhook-Signature": VECTOR, "X-Webhook-Timestamp": str(TS)}
    assert verify_webhook(STAMPED, headers, BODY, now=TS)
