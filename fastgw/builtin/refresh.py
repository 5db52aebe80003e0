"""``POST /api/v1/auth/refresh`` and ``/logout``: sessions renewed from a refresh cookie (SPEC 13.4).

A login with ``auth.oidc_login.refresh`` set also sets an HttpOnly, ``SameSite=Strict`` cookie
holding a refresh token (``store/refresh.py``). ``refresh`` spends it for a new access token and
a new cookie; presenting a token already spent is reuse and revokes every token of its login.
``logout`` revokes the family and clears the cookie. Both take the login rate limit. Every
outcome is audited; unknown, expired, revoked or reused tokens are 401 ``UNAUTHORIZED``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..auth.principal import Principal
from ..config import RefreshConfig
from ..errors import LocalReply
from ..store.refresh import RefreshTokens, Session
from ..store.threads import Store
from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse, no_content

if TYPE_CHECKING:
    from .login import Login

REFRESH_PATH = "/api/v1/auth/refresh"
LOGOUT_PATH = "/api/v1/auth/logout"


class Sessions:
    """The refresh cookie and the store behind it."""

    def __init__(self, config: RefreshConfig, store: Store) -> None:
        self.config = config
        self.tokens = RefreshTokens(store, config.ttl)
        self._attributes = f"Path={config.path}; HttpOnly; SameSite=Strict" + (
            "; Secure" if config.secure else ""
        )

    def cookie(self, token: str) -> str:
        return f"{self.config.cookie}={token}; Max-Age={int(self.config.ttl)}; {self._attributes}"

    def cleared(self) -> str:
        return f"{self.config.cookie}=; Max-Age=0; {self._attributes}"

    def presented(self, request: BuiltinRequest) -> str | None:
        """The refresh token in the request's cookies, or None."""
        for header in request.headers.get_list("Cookie"):
            for pair in header.split(";"):
                name, _, value = pair.strip().partition("=")
                if name == self.config.cookie and value:
                    return value.strip('"')
        return None


def _refused(sessions: Sessions) -> LocalReply:
    return LocalReply("UNAUTHORIZED", "Invalid refresh token", headers=(("Set-Cookie", sessions.cleared()),))


def register_refresh(endpoints: BuiltinEndpoints, login: Login) -> None:
    sessions = login.sessions
    assert sessions is not None

    async def refresh(request: BuiltinRequest) -> BuiltinResponse:
        limit_headers = await login.limit(request.client_ip)
        token = sessions.presented(request)
        if token is None:
            raise _refused(sessions)
        result = await sessions.tokens.rotate(token)
        session = result.session
        if result.outcome == "reused" and session is not None:
            login.audit.record(
                session.user_id,
                "refresh.reuse_detected",
                "session",
                session.family_id,
                {"ip": request.client_ip},
            )
        if result.outcome != "rotated" or session is None or result.token is None:
            login.metrics.auth_failures.labels(f"refresh_{result.outcome}").inc()
            raise _refused(sessions)
        login.audit.record(
            session.user_id, "refresh", "session", session.family_id, {"ip": request.client_ip}
        )
        principal = _principal(session)
        claims = {} if session.scopes is None else {login.claims.scopes: session.scopes}
        headers = (*limit_headers, ("Set-Cookie", sessions.cookie(result.token)))
        return login.answer(principal, claims, session.email, headers)

    async def logout(request: BuiltinRequest) -> BuiltinResponse:
        await login.limit(request.client_ip)
        token = sessions.presented(request)
        session = await sessions.tokens.revoke(token) if token is not None else None
        if session is None:
            raise _refused(sessions)
        login.audit.record(session.user_id, "logout", "session", session.family_id, {"ip": request.client_ip})
        answer = no_content()
        return BuiltinResponse(answer.status, answer.body, (("Set-Cookie", sessions.cleared()),))

    endpoints.add("POST", REFRESH_PATH, refresh)
    endpoints.add("POST", LOGOUT_PATH, logout)


def _principal(session: Session) -> Principal:
    return Principal(
        user_id=session.user_id,
        role=session.role,
        plan=session.plan,
        scopes=tuple(session.scopes.split()) if session.scopes else (),
        source="jwt",
    )
