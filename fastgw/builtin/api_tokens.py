"""``/v1/api-tokens``: create, list and revoke the caller's API tokens (SPEC section 5).

Only a JWT or a static token may manage API tokens. An API token may not mint more of itself
(a leaked token could otherwise outlive its own revocation through children), and a session
cookie is refused too, since these calls are meant for programmatic clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..access_log import utc_timestamp
from ..auth.api_tokens import TOKEN_ID, ApiTokenVerifier, check_name, check_scopes, issue
from ..auth.principal import Principal
from ..errors import LocalReply, ok_body
from ..store import tokens as token_rows
from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse, no_content, ok
from .audit import deny

if TYPE_CHECKING:
    from ..gateway import Gateway

OWNER_SOURCES = frozenset({"jwt", "static"})
_CREATED_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"))


async def _owner(request: BuiltinRequest) -> Principal:
    principal = await request.authenticate()
    assert principal is not None
    if principal.source not in OWNER_SOURCES:
        deny(request, principal, "credential", "API tokens are managed with a JWT or a static token")
    return principal


async def create_token(request: BuiltinRequest) -> BuiltinResponse:
    principal = await _owner(request)
    body = request.json()
    if not isinstance(body, dict):
        raise LocalReply("VALIDATION_ERROR", "Body must be a JSON object")
    try:
        name = check_name(body.get("name"))
        requested = body.get("scopes")
        scopes = principal.scopes if requested is None else check_scopes(requested)
    except ValueError as exc:
        raise LocalReply("VALIDATION_ERROR", str(exc)) from None
    if principal.scopes and not set(scopes) <= set(principal.scopes):
        deny(request, principal, "scope", "A token's scopes must be a subset of your own")
    gateway = request.gateway
    prefix = gateway.config.auth.api_tokens.prefix
    issued = await gateway.store.write(
        lambda conn: issue(
            conn,
            prefix,
            name=name,
            user_id=principal.user_id,
            role=principal.role,
            plan=principal.plan,
            app_key=principal.app_key,
            scopes=scopes,
        )
    )
    gateway.audit.record(
        principal.user_id,
        "api_token.created",
        "api_token",
        issued.record.id,
        {"name": name, "scopes": list(scopes), "via": principal.source},
    )
    return BuiltinResponse(201, ok_body(issued.shown_once()), _CREATED_HEADERS)


async def list_tokens(request: BuiltinRequest) -> BuiltinResponse:
    principal = await _owner(request)
    records = await request.gateway.store.read(lambda conn: token_rows.list_tokens(conn, principal.user_id))
    return ok([record.public() for record in records])


async def revoke_token(request: BuiltinRequest) -> BuiltinResponse:
    principal = await _owner(request)
    token_id = request.params.get("id", "")
    if not TOKEN_ID.fullmatch(token_id):
        raise LocalReply("NOT_FOUND", "No such API token")
    gateway = request.gateway
    result = await gateway.store.write(
        lambda conn: token_rows.revoke(conn, token_id, utc_timestamp(), principal.user_id)
    )
    if result != "revoked":  # someone else's, unknown, or already revoked: all look the same
        raise LocalReply("NOT_FOUND", "No such API token")
    verifier = gateway.auth.api_tokens
    if isinstance(verifier, ApiTokenVerifier):
        verifier.recheck()  # this worker need not wait for its next periodic check
    gateway.audit.record(
        principal.user_id, "api_token.revoked", "api_token", token_id, {"via": principal.source}
    )
    return no_content()


def register(endpoints: BuiltinEndpoints, gateway: Gateway) -> None:
    if not gateway.config.auth.api_tokens.enabled:
        return
    endpoints.add("POST", "/v1/api-tokens", create_token)
    endpoints.add("GET", "/v1/api-tokens", list_tokens)
    endpoints.add("DELETE", "/v1/api-tokens/{id}", revoke_token)
