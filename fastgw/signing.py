"""Signed requests from the gateway to its upstreams (SPEC section 6, version 2).

A backend behind fastgw calls ``verify`` to know that a request really passed the gateway and
that the identity headers on it are the gateway's::

    context = "2|" + user_id + "|" + role + "|" + app_key + "|" + plan
    message = timestamp "\\n" METHOD "\\n" path_and_query "\\n" context "\\n"  (UTF-8) + body
    X-Gateway-Signature: "v2=" + lowercase hex HMAC-SHA256(secret, message)

``sign`` produces the same headers (the gateway itself, tests, other clients of a backend).
The HMAC is ``fastgw.speedups.sign_v2``: compiled when the extension is built, keyed once per
secret either way.

Progress reports (``POST /requests/<id>/progress``, SPEC section 8) go the other way, from a
backend to the gateway. ``sign_progress`` signs them with a context of their own,
``progress|<id>``, which no proxied request can have (those contexts start with ``2|``), so a
signature the gateway puts on a forwarded request is never a valid progress report.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any, cast

from .speedups import sign_v2

__all__ = [
    "SIGNATURE",
    "SIGNING_VERSION",
    "TIMESTAMP",
    "Signer",
    "progress_context",
    "sign",
    "sign_progress",
    "verify",
    "verify_progress",
]

TIMESTAMP = "X-Gateway-Timestamp"
SIGNING_VERSION = "X-Gateway-Signing-Version"
SIGNATURE = "X-Gateway-Signature"

DEFAULT_IDENTITY_HEADERS: Mapping[str, str] = {
    "user_id": "X-User-Id",
    "role": "X-User-Role",
    "app_key": "X-App-Key",
    "plan": "X-User-Plan",
}

Secret = str | bytes
Body = bytes | bytearray | memoryview


def _body(body: Body) -> bytes:
    # Both sign_v2 implementations pass the body straight to hmac's update(), which takes any
    # buffer (tests hold them to it), so a bytearray or memoryview is hashed without a copy.
    return cast(bytes, body)


def _secret_bytes(secret: Secret) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


class Signer:
    """``sign`` with the secret converted once: what the proxy keeps per config.

    ``headers`` returns the three ``X-Gateway-*`` pairs ready to append to an upstream request,
    so signing a request costs one HMAC and a few small tuples.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret: Secret) -> None:
        self._secret = _secret_bytes(secret)

    def headers(
        self,
        method: str,
        path_and_query: str,
        body: Body = b"",
        user_id: str = "",
        role: str = "",
        app_key: str = "",
        plan: str = "",
        timestamp: int | None = None,
    ) -> tuple[tuple[str, str], tuple[str, str], tuple[str, str]]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = sign_v2(
            self._secret, ts, method, path_and_query, user_id, role, app_key, plan, _body(body)
        )
        return ((TIMESTAMP, ts), (SIGNING_VERSION, "2"), (SIGNATURE, signature))


def sign(
    secret: Secret,
    method: str,
    path_and_query: str,
    body: Body = b"",
    *,
    timestamp: int | str | None = None,
    user_id: str = "",
    role: str = "",
    app_key: str = "",
    plan: str = "",
) -> dict[str, str]:
    """The ``X-Gateway-Timestamp``, ``-Signing-Version`` and ``-Signature`` headers of a request.

    ``timestamp`` defaults to now in whole seconds. ``method`` is signed as given (HTTP methods
    are case-sensitive; the gateway signs the one it forwards). Send the identity headers
    (X-User-Id, ...) with the same values.
    """
    ts = str(int(time.time())) if timestamp is None else str(timestamp)
    if not (ts.isascii() and ts.isdigit()):
        raise ValueError("timestamp must be unix seconds")
    signature = sign_v2(
        _secret_bytes(secret), ts, method, path_and_query, user_id, role, app_key, plan, _body(body)
    )
    return {TIMESTAMP: ts, SIGNING_VERSION: "2", SIGNATURE: signature}


def _header(headers: Mapping[Any, Any], name: str, lowered: list[dict[str, Any]]) -> str | None:
    """Case-insensitive lookup in any mapping.

    Direct first (case-insensitive mappings, or the exact case), then in a lower-cased copy
    made at most once per verify.
    """
    value = headers.get(name)
    if value is None:
        if not lowered:
            lowered.append(
                {
                    (k.decode("latin-1") if isinstance(k, bytes) else str(k)).lower(): v
                    for k, v in headers.items()
                }
            )
        value = lowered[0].get(name.lower())
    if isinstance(value, bytes):  # some frameworks hand out raw header bytes
        value = value.decode("latin-1")
    return value if isinstance(value, str) else None


def _presented(
    headers: Mapping[Any, Any], lowered: list[dict[str, Any]], max_skew: float, now: float | None
) -> tuple[str, str] | None:
    """(timestamp, signature) of a well-formed, fresh version-2 header set; None otherwise."""
    version = _header(headers, SIGNING_VERSION, lowered)
    timestamp = _header(headers, TIMESTAMP, lowered)
    signature = _header(headers, SIGNATURE, lowered)
    if version != "2" or not timestamp or not signature:
        return None
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 15):
        return None
    if abs((time.time() if now is None else now) - int(timestamp)) > max_skew:
        return None
    if not signature.isascii():
        return None
    return timestamp, signature


def verify(
    secret: Secret,
    method: str,
    path_and_query: str,
    headers: Mapping[Any, Any],
    body: Body,
    max_skew: float = 300,
    *,
    identity_headers: Mapping[str, str] | None = None,
    now: float | None = None,
) -> bool:
    """True when ``headers`` carry a valid version-2 gateway signature of this request.

    ``method`` and ``path_and_query`` are the request's as received (path plus ``?query``, not
    decoded), ``body`` the raw body bytes. False for a missing header, a version other than 2, a
    timestamp that is not whole unix seconds or is more than ``max_skew`` seconds from ``now``
    (default: the clock), or a signature that differs (compared in constant time).
    ``identity_headers`` renames the identity headers, e.g. ``{"user_id": "X-Uid"}``, when the
    gateway's ``identity_headers`` config does.
    """
    lowered: list[dict[str, Any]] = []
    presented = _presented(headers, lowered, max_skew, now)
    if presented is None:
        return False
    timestamp, signature = presented
    names = DEFAULT_IDENTITY_HEADERS
    if identity_headers is not None:
        names = {**names, **identity_headers}
    user_id, role, app_key, plan = (
        _header(headers, names[field], lowered) or "" for field in ("user_id", "role", "app_key", "plan")
    )
    expected = sign_v2(
        _secret_bytes(secret),
        timestamp,
        method,
        path_and_query,
        user_id,
        role,
        app_key,
        plan,
        _body(body),
    )
    return hmac.compare_digest(expected, signature)


# A request id as it can appear in one path segment: what the gateway issues is a UUID.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%-]{1,128}")


def progress_context(request_id: str) -> str:
    """The signing context of a progress report: ``"progress|" + request_id``."""
    return "progress|" + request_id


def _progress_signature(secret: Secret, timestamp: str, request_id: str, body: Body) -> str:
    head = f"{timestamp}\nPOST\n/requests/{request_id}/progress\n{progress_context(request_id)}\n"
    mac = hmac.new(_secret_bytes(secret), head.encode("utf-8"), hashlib.sha256)
    mac.update(_body(body))
    return "v2=" + mac.hexdigest()


def sign_progress(
    secret: Secret, request_id: str, body: Body, timestamp: int | str | None = None
) -> dict[str, str]:
    """The ``X-Gateway-*`` headers of a progress report for async job ``request_id``.

    The signature is version 2 (SPEC section 6) over ``POST /requests/<id>/progress`` with the
    context ``progress|<id>`` instead of an identity context::

        message = timestamp "\n" "POST" "\n" "/requests/<id>/progress" "\n" "progress|<id>" "\n"
                  (UTF-8) followed by the body bytes
        X-Gateway-Signature: "v2=" + lowercase hex HMAC-SHA256(signing.secret, message)

    Send the body exactly as signed, to that path, with no query string. ``timestamp``
    defaults to now in whole seconds. ValueError for a request id that is not one path
    segment (the gateway's ids are UUIDs) or a timestamp that is not unix seconds.
    """
    ts = str(int(time.time())) if timestamp is None else str(timestamp)
    if not (ts.isascii() and ts.isdigit()):
        raise ValueError("timestamp must be unix seconds")
    if not _REQUEST_ID_RE.fullmatch(request_id):
        raise ValueError("request_id must be one URL path segment")
    return {TIMESTAMP: ts, SIGNING_VERSION: "2", SIGNATURE: _progress_signature(secret, ts, request_id, body)}


def verify_progress(
    secret: Secret,
    request_id: str,
    headers: Mapping[Any, Any],
    body: Body,
    max_skew: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when ``headers`` carry a valid ``sign_progress`` signature for ``request_id``.

    The message is the one ``sign_progress`` documents (context ``progress|<id>``); ``body`` is
    the raw body. False, as ``verify``, for a missing header, a version other than 2, a stale
    timestamp or a different signature (compared in constant time), and for a request id that
    is not one path segment. A signature with the SPEC's empty context ``2||||`` is checked
    with ``verify``, not here.
    """
    if not _REQUEST_ID_RE.fullmatch(request_id):
        return False
    presented = _presented(headers, [], max_skew, now)
    if presented is None:
        return False
    timestamp, signature = presented
    return hmac.compare_digest(_progress_signature(secret, timestamp, request_id, body), signature)
