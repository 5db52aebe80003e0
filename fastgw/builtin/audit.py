"""``GET /v1/audit-logs``: recent audit entries for admins, and the shared "denied" path.

Every 403 on an administrative endpoint (this one, ``/v1/api-tokens``) is itself audited as
``admin.denied``: probing for admin endpoints is exactly what an audit log is for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, NoReturn

from ..auth.principal import Principal
from ..errors import LocalReply
from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse, ok

if TYPE_CHECKING:
    from ..gateway import Gateway

log = logging.getLogger("fastgw")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
ADMIN_ROLE = "admin"


def deny(request: BuiltinRequest, principal: Principal, reason: str, message: str) -> NoReturn:
    """Answer 403 FORBIDDEN, count it, and audit it as ``admin.denied``."""
    gateway = request.gateway
    gateway.metrics.auth_failures.labels(f"forbidden_{reason}").inc()
    gateway.audit.record(
        principal.user_id,
        "admin.denied",
        "endpoint",
        request.path,
        {
            "method": request.method,
            "reason": reason,
            "source": principal.source,
            "requestId": request.request_id,
        },
    )
    raise LocalReply("FORBIDDEN", message)


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_LIMIT:
        raise LocalReply("VALIDATION_ERROR", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


async def audit_logs(request: BuiltinRequest) -> BuiltinResponse:
    principal = await request.authenticate()
    assert principal is not None
    if principal.role != ADMIN_ROLE:
        deny(request, principal, "role", "Admin role required")
    limit = _limit(request.arg("limit"))
    return ok(await request.gateway.audit.recent(limit))


def register(endpoints: BuiltinEndpoints, gateway: Gateway) -> None:
    endpoints.add("GET", "/v1/audit-logs", audit_logs)
