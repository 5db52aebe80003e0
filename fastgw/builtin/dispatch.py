"""Running a built-in endpoint for an exchange: its rate limit, its call, its answer.

``admit_builtin`` runs when the route matched a built-in endpoint (before the body is read);
``run_builtin`` when the whole (small) body is in. A ``LocalReply`` becomes its envelope, a
``StoreError`` 503 ``SERVICE_UNAVAILABLE`` (the message names no data values), anything else 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..errors import LocalReply
from ..store import StoreError
from . import BuiltinRequest, Endpoint

if TYPE_CHECKING:
    from ..exchange import Exchange

log = logging.getLogger("fastgw")


def admit_builtin(ex: Exchange, endpoint: Endpoint, params: dict[str, str]) -> Awaitable[None] | None:
    """Rate-limit a built-in endpoint, then collect its (small) body for ``finish``."""
    ex.endpoint = endpoint
    ex.endpoint_params = params
    ex.buffer = bytearray()
    if not endpoint.rate_limited:
        return None
    gw = ex.gw
    result = gw.limiter.check_now(endpoint.pattern, gw.builtin_rate_policies, None, ex.client_ip, ex.headers)
    if isinstance(result, tuple):
        ex.limit_headers = result
        return None
    return _await_limit(ex, result)


async def _await_limit(ex: Exchange, pending: Awaitable[tuple[tuple[str, str], ...]]) -> None:
    try:
        ex.limit_headers = await pending
    except LocalReply as reply:
        ex.answer_error(reply)


async def run_builtin(ex: Exchange) -> None:
    """Call the endpoint with the collected body and answer with what it returns (never raises)."""
    endpoint = ex.endpoint
    assert endpoint is not None
    request = BuiltinRequest(
        method=ex.method,
        path=ex.path,
        query=ex.query,
        params=ex.endpoint_params,
        headers=ex.headers,
        body=bytes(ex.buffer or b""),
        client_ip=ex.client_ip,
        request_id=ex.request_id,
        cert_user=ex.context.cert_user,
        gateway=ex.gw,
    )
    try:
        response = await endpoint.handler(request)
    except LocalReply as reply:
        ex.user_id = request.principal.user_id if request.principal else None
        ex.respond_error(reply)
        return
    except StoreError as exc:  # the message names no data values
        log.error("built-in endpoint %s: store unavailable: %s", endpoint.pattern, exc)
        ex.respond_error(LocalReply("SERVICE_UNAVAILABLE", "Store unavailable"))
        return
    except Exception:
        log.exception("built-in endpoint %s failed (request %s)", endpoint.pattern, ex.request_id)
        ex.respond_error(LocalReply("INTERNAL_ERROR", "Internal error"))
        return
    ex.user_id = request.principal.user_id if request.principal else None
    ex.respond(response.status, response.body, response.headers)
