"""Credentials (SPEC 4) and the roles and scopes a route asks for."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ..auth.authenticator import Authenticator
from ..errors import LocalReply
from ..pipeline import Filter

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..gateway import Gateway


class Authenticate(Filter):
    """Find the caller's principal; a present but invalid credential is 401, never a fall-through.

    A static token, and an API token or JWT verified moments ago, are answered without waiting;
    otherwise API tokens, JWTs and sessions may need the store, the JWKS or the session
    service, so those return an awaitable.
    """

    PRIORITY = 900

    def __init__(self, auth: Authenticator, *, required: bool, query_token: bool) -> None:
        self.auth = auth
        self.required = required
        self.query_token = query_token

    def on_request(self, ex: Exchange) -> Awaitable[None] | None:
        known = self.auth.known_principal(ex.headers)
        if known is not None:
            ex.set_principal(known)
            return None
        return self._verify(ex)

    async def _verify(self, ex: Exchange) -> None:
        principal = await self.auth.authenticate(ex.headers, ex.query, self.query_token, ex.context.cert_user)
        if principal is not None:
            ex.set_principal(principal)
        elif self.required:
            raise self.auth.missing()


class Authorize(Filter):
    """All listed roles-or-scopes rules must hold for an authenticated caller (else 403)."""

    PRIORITY = 890

    def __init__(self, gw: Gateway, pattern: str, roles: tuple[str, ...], scopes: tuple[str, ...]) -> None:
        self.auth = gw.auth
        self.audit = gw.audit
        self.pattern = pattern
        self.roles = list(roles)
        self.scopes = list(scopes)
        self.admin_only = "admin" in roles

    def on_request(self, ex: Exchange) -> None:
        principal = ex.principal
        if principal is None:
            return  # auth: optional without a credential; `required` already refused
        try:
            self.auth.authorize(self.roles, self.scopes, principal)
        except LocalReply:
            if self.admin_only:
                self.audit.record(principal.user_id, "admin.denied", "route", self.pattern, {})
            raise
