"""The credential chain and the role/scope check, in SPEC section 4's order."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable
from typing import Protocol

from ..config import Config
from ..errors import LocalReply
from ..forwarding import token_param
from ..http1.headers import Headers
from ..metrics import Metrics
from .principal import Principal

# Printable ASCII without '|': identity values end up in headers and in the signing context.
_IDENTITY_RE = re.compile(r"[ -{}~]*")


class AuthFailure(Exception):
    """A present credential that does not verify; ``reason`` labels the metric."""

    def __init__(self, reason: str, message: str = "Invalid or expired credentials") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TokenVerifier(Protocol):
    """Turns a bearer token into a checked Principal or raises ``AuthFailure``."""

    def cached(self, token: str) -> Principal | None:
        """The principal at once, when a recent verdict still holds; None: call ``verify``."""
        ...

    def verify(self, token: str) -> Awaitable[Principal]: ...


class CookieVerifier(Protocol):
    cookie_name: str

    def verify(self, cookie_value: str) -> Awaitable[Principal]: ...


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a credential (rate-limit keys, never logged raw)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


def checked_principal(principal: Principal) -> Principal:
    """Refuse identities that could inject a header line or forge a signing context."""
    values = (principal.user_id, principal.role, principal.app_key, principal.plan, *principal.scopes)
    if not principal.user_id or not all(_IDENTITY_RE.fullmatch(v) for v in values):
        raise AuthFailure("bad_identity")
    if any(" " in scope or not scope for scope in principal.scopes):
        raise AuthFailure("bad_identity")
    return principal


class Authenticator:
    """Decides who the caller is (401) and whether they may use a route (403).

    ``api_tokens``, ``jwt`` and ``session`` are verifiers plugged in by the gateway when the
    config enables them; static tokens live here because they are just a lookup.
    """

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        api_tokens: TokenVerifier | None = None,
        jwt: TokenVerifier | None = None,
        session: CookieVerifier | None = None,
    ) -> None:
        self.metrics = metrics
        self.static: dict[str, Principal] = {
            t.token: Principal(
                user_id=t.user_id,
                role=t.role,
                app_key=t.app_key,
                plan=t.plan,
                scopes=tuple(t.scopes),
                source="static",
                token_fingerprint=fingerprint(t.token),
            )
            for t in config.auth.tokens
        }
        self.api_token_prefix = config.auth.api_tokens.prefix if config.auth.api_tokens.enabled else None
        self.api_tokens = api_tokens
        self.jwt = jwt
        self.session = session

    def known_principal(self, headers: Headers) -> Principal | None:
        """The principal of a well-formed bearer token known without waiting: a static token,
        or an API token or JWT whose recent verdict still holds.

        None for anything else (no header, another kind of credential, a malformed one, a token
        not seen lately): the caller then runs ``authenticate``, which gives those their answers.
        """
        values = headers.get_list("Authorization")
        if len(values) != 1:
            return None
        try:
            token = _bearer(values[0])
        except AuthFailure:
            return None
        static = self.static.get(token)
        if static is not None:
            return static
        verifier = self._verifier_of(token)
        return verifier.cached(token) if verifier is not None else None

    def _verifier_of(self, token: str) -> TokenVerifier | None:
        """Who judges a non-static bearer token: API tokens by prefix, then JWTs by shape."""
        prefix = self.api_token_prefix
        if prefix is not None and token.startswith(prefix):
            return self.api_tokens
        if self.jwt is not None and token.count(".") == 2:
            return self.jwt
        return None

    async def authenticate(
        self, headers: Headers, query: str, query_token: bool, cert_user: str | None
    ) -> Principal | None:
        """The caller's principal, None when no credential is present, or a 401 LocalReply."""
        try:
            authorization = headers.get_list("Authorization")
            if authorization:
                if len(authorization) > 1:
                    raise AuthFailure("malformed", "Multiple Authorization headers")
                return await self.from_bearer(_bearer(authorization[0]))
            if query_token:
                token = token_param(query)
                if token is not None:
                    return await self.from_bearer(token)
            if self.session is not None:
                cookie = _cookie(headers, self.session.cookie_name)
                if cookie is not None:
                    return checked_principal(await self.session.verify(cookie))
            if cert_user is not None:
                return checked_principal(Principal(user_id=cert_user, source="cert"))
            return None
        except AuthFailure as failure:
            self.metrics.auth_failures.labels(failure.reason).inc()
            raise LocalReply("UNAUTHORIZED", failure.message) from None

    async def from_bearer(self, token: str) -> Principal:
        static = self.static.get(token)
        if static is not None:
            return static
        verifier = self._verifier_of(token)
        if verifier is None:
            raise AuthFailure("invalid_token")
        return await verifier.verify(token)

    def missing(self) -> LocalReply:
        """The 401 for a route that requires a credential when none was presented."""
        self.metrics.auth_failures.labels("missing").inc()
        return LocalReply("UNAUTHORIZED", "Authentication required")

    def authorize(self, roles: list[str], scopes: list[str], principal: Principal) -> None:
        if roles and principal.role not in roles:
            self.metrics.auth_failures.labels("forbidden_role").inc()
            raise LocalReply("FORBIDDEN", "Insufficient role")
        if scopes and not set(scopes).issubset(principal.scopes):
            self.metrics.auth_failures.labels("forbidden_scope").inc()
            raise LocalReply("FORBIDDEN", "Insufficient scope")


def _bearer(value: str) -> str:
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthFailure("malformed", "Malformed Authorization header")
    return token


def _cookie(headers: Headers, name: str) -> str | None:
    """The first ``name=value`` pair across the Cookie headers, value as sent (None if empty).

    First wins, as in the ``cookie`` package that Node auth services (Better Auth) parse with,
    and only this pair is sent to the auth service, so both sides judge the same value.
    ``SimpleCookie`` is not used: it stops at the first cookie it dislikes and unquotes values.
    """
    for header in headers.get_list("Cookie"):
        for pair in header.split(";"):
            key, sep, value = pair.partition("=")
            if sep and key.strip() == name:
                return value.strip() or None
    return None
