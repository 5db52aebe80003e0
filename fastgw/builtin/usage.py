"""``GET /v1/usage``, ``/v1/usage/daily``, ``/v1/usage/rollups``: traffic reports (SPEC 5, 9).

Who may read them: first the ``auth.usage_key`` of the config, as ``Authorization: Bearer`` or
``X-Usage-Key`` (a dashboard or billing job that should not hold an admin credential); any other
credential goes through the normal chain and needs the admin role. An ``X-Usage-Key`` that does
not match is 401 like any other present but invalid credential, never a fall-through: a typo in
a dashboard's key should fail loudly. An ``Authorization`` header that is not the usage key is
simply the next credential in line (it may be an admin token). An empty ``usage_key``
(``${USAGE_API_KEY:-}`` unset) accepts nothing.

The window is checked after the caller, so an anonymous probe learns nothing from a 400.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from ..errors import LocalReply
from ..store.usage import MAX_DAILY_DAYS, MAX_WINDOW_HOURS
from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse, ok
from .audit import ADMIN_ROLE, deny

if TYPE_CHECKING:
    from ..gateway import Gateway

DEFAULT_HOURS = 24
DEFAULT_DAYS = 7
USAGE_KEY_HEADER = "X-Usage-Key"


def _matches(candidate: str, key: str) -> bool:
    """Constant-time compare of a header value (Tornado decodes header bytes as Latin-1) with the key."""
    return hmac.compare_digest(candidate.encode("latin-1", "replace"), key.encode("utf-8"))


def key_matches(gateway: Gateway, candidate: str) -> bool:
    """Whether ``candidate`` (a query value, already decoded) is the configured usage key; an
    empty ``usage_key`` matches nothing."""
    key = gateway.config.auth.usage_key or ""
    return bool(key) and hmac.compare_digest(candidate.encode("utf-8", "replace"), key.encode("utf-8"))


def _bearer(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def authorize(request: BuiltinRequest) -> None:
    """Admit the usage key or an admin (see the module docstring); raises 401/403 otherwise."""
    key = request.gateway.config.auth.usage_key or ""
    headers = request.headers
    if key:
        authorization = headers.get_list("Authorization")
        if len(authorization) == 1:
            token = _bearer(authorization[0])
            if token and _matches(token, key):
                return
        presented = headers.get_list(USAGE_KEY_HEADER)
        if len(presented) == 1 and _matches(presented[0].strip(), key):
            return
    if USAGE_KEY_HEADER in headers:
        request.gateway.metrics.auth_failures.labels("invalid_usage_key").inc()
        raise LocalReply("UNAUTHORIZED", "Invalid usage key")
    principal = await request.authenticate()
    assert principal is not None
    if principal.role != ADMIN_ROLE:
        deny(request, principal, "role", "Admin role required")


def _whole(request: BuiltinRequest, name: str, low: int, high: int) -> int | None:
    """The query parameter ``name`` as an integer in [low, high], None when absent, else 400."""
    raw = request.arg(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not low <= int(raw) <= high:
        raise LocalReply("VALIDATION_ERROR", f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def window_hours(request: BuiltinRequest) -> int:
    """``hours=H`` (1-720) or ``days=D`` (D*24 within 720); 24 when neither, 400 when both."""
    hours = _whole(request, "hours", 1, MAX_WINDOW_HOURS)
    days = _whole(request, "days", 1, MAX_WINDOW_HOURS // 24)
    if hours is not None and days is not None:
        raise LocalReply("VALIDATION_ERROR", "Give hours or days, not both")
    if days is not None:
        return days * 24
    return DEFAULT_HOURS if hours is None else hours


async def usage(request: BuiltinRequest) -> BuiltinResponse:
    await authorize(request)
    hours = window_hours(request)
    report = await request.gateway.usage.summary(hours)
    return ok(report)


async def usage_daily(request: BuiltinRequest) -> BuiltinResponse:
    await authorize(request)
    days = _whole(request, "days", 1, MAX_DAILY_DAYS) or DEFAULT_DAYS
    report = await request.gateway.usage.daily(days)
    return ok(report)


async def usage_rollups(request: BuiltinRequest) -> BuiltinResponse:
    await authorize(request)
    report = await request.gateway.usage.rollups()
    return ok(report)


def register(endpoints: BuiltinEndpoints, gateway: Gateway) -> None:
    endpoints.add("GET", "/v1/usage", usage)
    endpoints.add("GET", "/v1/usage/daily", usage_daily)
    endpoints.add("GET", "/v1/usage/rollups", usage_rollups)
