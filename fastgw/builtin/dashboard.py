"""``GET /dashboard`` (SPEC 13.6): one self-contained HTML page charting the usage reports.

The page (``dashboard.html``: inline CSS, inline script, inline SVG; nothing loaded from
anywhere else) calls ``/v1/usage/daily``, ``/v1/usage/rollups`` and ``/v1/usage`` from the
browser and refreshes itself every 30 s. Who may open it: the admin role, or whoever holds the
``usage_key`` and passes it as ``?key=`` (the page then sends it as ``X-Usage-Key``). The key
never reaches a log line: the access log drops ``key`` from every logged query.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from ..errors import LocalReply
from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse
from .audit import ADMIN_ROLE, deny
from .usage import key_matches

if TYPE_CHECKING:
    from ..gateway import Gateway

PATH = "/dashboard"
PAGE = resources.files(__package__).joinpath("dashboard.html").read_bytes()
HEADERS = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self';"
        " img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
)


async def dashboard(request: BuiltinRequest) -> BuiltinResponse:
    key = request.arg("key")
    if key is not None:
        if not key_matches(request.gateway, key):
            request.gateway.metrics.auth_failures.labels("invalid_usage_key").inc()
            raise LocalReply("UNAUTHORIZED", "Invalid usage key")
    else:
        principal = await request.authenticate()
        assert principal is not None
        if principal.role != ADMIN_ROLE:
            deny(request, principal, "role", "Admin role required")
    return BuiltinResponse(200, PAGE, HEADERS)


def register(endpoints: BuiltinEndpoints, gateway: Gateway) -> None:
    endpoints.add("GET", PATH, dashboard)
