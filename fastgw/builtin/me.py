"""``GET /api/v1/me``: who the gateway thinks the caller is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse, ok

if TYPE_CHECKING:
    from ..gateway import Gateway


async def me(request: BuiltinRequest) -> BuiltinResponse:
    principal = await request.authenticate()
    assert principal is not None
    return ok(
        {
            "userId": principal.user_id,
            "role": principal.role,
            "appKey": principal.app_key,
            "plan": principal.plan,
            "scopes": list(principal.scopes),
        }
    )


def register(endpoints: BuiltinEndpoints, gateway: Gateway) -> None:
    endpoints.add("GET", "/api/v1/me", me)
