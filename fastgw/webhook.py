"""Inbound webhook signatures for ``auth: hmac`` routes (SPEC section 6).

The sender puts ``sha256=<lowercase hex>`` of HMAC-SHA256(secret, timestamp + "." + body) in
``hmac.header`` when ``hmac.timestamp_header`` is configured (Stripe-style; the timestamp is
whole unix seconds and must be within ``tolerance`` of now, which bounds replays), else of the
body alone. The signature covers the raw body bytes as received, before any parsing or
decompression, so only a byte-identical body verifies.

Anything but the exact expected string fails: a missing or empty header, uppercase hex, a
missing ``sha256=`` prefix, a truncated value, several values in one header. The comparison is
``hmac.compare_digest``, whose time does not depend on where the strings differ.

Replays (SPEC 13.7): a signature that verified is remembered for its replay window
(``replay_window``) and refused if presented again within it. ``SeenSignatures`` is the
in-process memory of that; with ``redis`` the filter also claims each signature there
(``replay_key``) so every instance refuses what any one accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import weakref
from typing import Protocol

from .config import HmacConfig
from .speedups import webhook_signature

__all__ = [
    "HeaderGetter",
    "SeenSignatures",
    "replay_key",
    "replay_window",
    "seen_signatures_for",
    "verify_webhook",
]

MAX_SEEN = 100_000  # signatures remembered per hmac config; about 20 MB at most


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


def replay_window(cfg: HmacConfig, headers: HeaderGetter, now: float) -> float:
    """Seconds a signature that just verified must be refused for (call after ``verify_webhook``).

    ``tolerance`` (SPEC 13.7), and with ``timestamp_header`` at least until the signed timestamp
    itself leaves the tolerance: a timestamp up to ``tolerance`` ahead of now keeps verifying for
    up to twice that long, and must stay refused all that time.
    """
    window = cfg.tolerance
    if cfg.timestamp_header is not None:
        timestamp = headers.get(cfg.timestamp_header)
        if timestamp is not None and timestamp.isdigit():
            window = max(window, int(timestamp) + cfg.tolerance - now)
    return window


def replay_key(cfg: HmacConfig, signature: str) -> str:
    """The Redis key marking ``signature`` as used: a digest, so separate secrets never meet."""
    digest = hashlib.sha256(cfg.secret.encode("utf-8") + b"\0" + signature.encode("ascii")).hexdigest()
    return f"fastgw:webhook:seen:{digest}"


class SeenSignatures:
    """Signatures accepted within their replay window, in this process; bounded memory.

    ``first_use(signature, until, now)`` is atomic (no await inside): it records the signature
    until monotonic time ``until`` and returns True, or returns False when it is already
    recorded and not yet expired. Entries are kept in insertion order; expired ones are dropped
    from the front as new ones arrive, and beyond ``max_entries`` the oldest is dropped (its
    replay protection then ends early: only senders holding the secret can fill the table).
    """

    def __init__(self, max_entries: int = MAX_SEEN) -> None:
        self.max_entries = max_entries
        self.entries: dict[str, float] = {}

    def first_use(self, signature: str, until: float, now: float) -> bool:
        entries = self.entries
        expires = entries.get(signature)
        if expires is not None and expires > now:
            return False
        if expires is not None:
            del entries[signature]  # re-inserted at the back with its new expiry
        while entries:
            oldest, expires = next(iter(entries.items()))
            if expires > now:
                break
            del entries[oldest]
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[signature] = until
        return True

    def __len__(self) -> int:
        return len(self.entries)


_SEEN: weakref.WeakValueDictionary[HmacConfig, SeenSignatures] = weakref.WeakValueDictionary()


def seen_signatures_for(cfg: HmacConfig) -> SeenSignatures:
    """One table per distinct hmac config, shared by its routes and kept across config reloads
    (as long as a route still uses it), so a SIGHUP does not reopen the replay window."""
    table = _SEEN.get(cfg)
    if table is None:
        table = _SEEN[cfg] = SeenSignatures()
    return table
