"""Inbound webhook signatures for ``auth: hmac`` routes (SPEC section 6).

The sender puts ``sha256=<lowercase hex>`` of HMAC-SHA256(secret, timestamp + "." + body) in
``hmac.header`` when ``hmac.timestamp_header`` is configured (Stripe-style; the timestamp is
whole unix seconds and must be within ``tolerance`` of now, which bounds replays), else of the
body alone. The signature covers the raw body bytes as received, before any parsing or
decompression, so only a byte-identical body verifies.

Anything but the exact expected string fails: a missing or empty header, uppercase hex, a
missing ``sha256=`` prefix, a truncated value, several values in one header. The comparison is
``hmac.compare_digest``, whose time does not depend on where the strings differ.
"""

from __future__ import annotations

import hmac
import time
from typing import Protocol

from .config import HmacConfig
from .speedups import webhook_signature

__all__ = ["HeaderGetter", "verify_webhook"]


class HeaderGetter(Protocol):
    """Tornado's HTTPHeaders, or any mapping whose ``get`` ignores the case of the name."""

    def get(self, name: str, /) -> str | None: ...


def verify_webhook(cfg: HmacConfig, headers: HeaderGetter, body: bytes, now: float | None = None) -> bool:
    """True when the request carries a valid signature of ``body`` (and a fresh timestamp)."""
    signature = headers.get(cfg.header)
    if not signature or not signature.isascii():
        return False
    timestamp: str | None = None
    if cfg.timestamp_header is not None:
        timestamp = headers.get(cfg.timestamp_header)
        # isascii first: str.isdigit() also accepts digits of other scripts that int() reads.
        if not timestamp or not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 15:
            return False
        if abs((time.time() if now is None else now) - int(timestamp)) > cfg.tolerance:
            return False
    expected = webhook_signature(cfg.secret.encode("utf-8"), timestamp, body)
    return hmac.compare_digest(expected, signature)
