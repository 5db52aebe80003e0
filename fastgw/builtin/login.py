"""``POST /api/v1/auth/login``: exchange an external OIDC idToken for an internal JWT (SPEC section 5).

The idToken must be signed by a key from ``auth.oidc_login.jwks_url`` (RS/PS/ES only: a shared
secret can never verify it) and carry the configured ``iss`` and ``aud`` and an ``exp``. The
answer is an HS256 JWT signed with ``auth.jwt.secret``, which the normal credential chain then
accepts like any platform JWT.

Login is an unauthenticated endpoint that triggers signature checks and JWKS fetches, so every
attempt, good or bad, takes a token from a per-IP bucket first.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import jwt

from ..auth.authenticator import AuthFailure, checked_principal
from ..auth.jwt import ASYMMETRIC, FASTGW_ISSUER, JwksCache, JwtDecoder, claim, scopes_claim
from ..auth.principal import Principal
from ..config import ClaimsMap, RateLimitPolicy
from ..errors import LocalReply, ok_body
from ..http1.headers import Headers as RequestHeaders
from ..ratelimit.local import Headers, Policy
from ..store.refresh import Session, new_family
from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse
from .refresh import Sessions, register_refresh

if TYPE_CHECKING:
    from ..gateway import Gateway

DEFAULT_RATE = (10.0, 60.0, 10.0)  # rate, per seconds, burst: 10 per minute per IP
MAX_ID_TOKEN = 16 * 1024
LOGIN_PATH = "/api/v1/auth/login"
_NO_HEADERS = RequestHeaders()  # the login policy keys on the client IP alone


class Login:
    """The login endpoint of one config load (its local buckets live as long as the config)."""

    def __init__(self, gateway: Gateway) -> None:
        config = gateway.config
        oidc = config.auth.oidc_login
        assert oidc is not None
        platform = config.auth.jwt
        self.metrics = gateway.metrics
        self.audit = gateway.audit
        self.secret = platform.secret if platform is not None else None
        self.claims = platform.claims if platform is not None else ClaimsMap()
        self.audience = platform.audience if platform is not None else None
        self.token_ttl = max(1, int(oidc.token_ttl))
        cache_ttl = platform.jwks_cache_ttl if platform is not None else 600.0
        min_refetch = platform.jwks_min_refetch if platform is not None else 5.0
        self.decoder = JwtDecoder(
            algorithms=ASYMMETRIC,
            secret=None,
            jwks=JwksCache(oidc.jwks_url, cache_ttl, min_refetch, gateway.metrics),
            issuers=(oidc.issuer,),
            audience=oidc.audience,
            leeway=platform.leeway if platform is not None else 30.0,
            require=("exp", "iss", "aud", "sub"),
        )
        configured = config.rate_limits.policies.get(oidc.rate_limit) if oidc.rate_limit else None
        rate, per, burst = (configured.rate, configured.per, configured.burst) if configured else DEFAULT_RATE
        # Per client IP, through the gateway's limiter: in Redis when `redis` is set, so every
        # instance shares one login allowance per address. Its own buckets, never a route's.
        policy = Policy(
            oidc.rate_limit or "login",
            RateLimitPolicy(rate=rate, per=per, burst_=burst, key="ip"),
            gateway.metrics,
            100_000,
        )
        policy.redis_prefix = "fastgw:rl-login:"
        self.policies = (policy,)
        self.limiter = gateway.limiter
        self.sessions = Sessions(oidc.refresh, gateway.store) if oidc.refresh is not None else None

    async def limit(self, client_ip: str) -> Headers:
        try:
            return await self.limiter.check(LOGIN_PATH, self.policies, None, client_ip, _NO_HEADERS)
        except LocalReply as reply:
            raise LocalReply("RATE_LIMITED", "Too many login attempts", headers=reply.headers) from None

    async def __call__(self, request: BuiltinRequest) -> BuiltinResponse:
        if not self.secret:
            raise LocalReply("SERVICE_UNAVAILABLE", "login not configured")
        limit_headers = await self.limit(request.client_ip)
        body = request.json()
        id_token = body.get("idToken") if isinstance(body, dict) else None
        if not isinstance(id_token, str) or not id_token or len(id_token) > MAX_ID_TOKEN:
            raise LocalReply("VALIDATION_ERROR", "Body must be a JSON object with a string idToken")
        try:
            claims = await self.decoder.decode(id_token)
            principal = self._principal(claims)
        except AuthFailure as failure:
            self.metrics.auth_failures.labels(f"login_{failure.reason}").inc()
            raise LocalReply("UNAUTHORIZED", "Invalid idToken") from None
        email = claims.get("email") if isinstance(claims.get("email"), str) else None
        self.audit.record(
            principal.user_id,
            "login",
            "user",
            principal.user_id,
            {"issuer": claims["iss"], "ip": request.client_ip},
        )
        headers = limit_headers
        if self.sessions is not None:
            scopes = claim(claims, self.claims.scopes)
            session = Session(
                new_family(), principal.user_id, principal.role, principal.plan,
                " ".join(principal.scopes) if scopes is not None else None, email,
            )  # fmt: skip
            refresh = await self.sessions.tokens.issue(session)
            headers = (*headers, ("Set-Cookie", self.sessions.cookie(refresh)))
        return self.answer(principal, claims, email, headers)

    def answer(
        self,
        principal: Principal,
        claims: dict[str, Any],
        email: str | None,
        headers: tuple[tuple[str, str], ...],
    ) -> BuiltinResponse:
        """The login answer (also the refresh answer): a fresh access token for ``principal``."""
        data = {
            "accessToken": self._mint(principal, claims, email),
            "tokenType": "Bearer",
            "expiresInSeconds": self.token_ttl,
            "user": {"userId": principal.user_id, "email": email},
        }
        headers = (("Content-Type", "application/json"), ("Cache-Control", "no-store"), *headers)
        return BuiltinResponse(200, ok_body(data), headers)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        """The identity the minted token will carry, held to the same rules as any credential."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthFailure("bad_claims")
        values = {}
        for field in ("role", "plan"):
            value = claim(claims, getattr(self.claims, field))
            if value is not None and not isinstance(value, str):
                raise AuthFailure("bad_claims")
            values[field] = value or ""
        scopes = scopes_claim(claim(claims, self.claims.scopes))
        return checked_principal(
            Principal(user_id=sub, role=values["role"], plan=values["plan"], scopes=scopes, source="jwt")
        )

    def _mint(self, principal: Principal, claims: dict[str, Any], email: str | None) -> str:
        now = int(time.time())
        minted: dict[str, Any] = {"sub": principal.user_id, "iat": now, "exp": now + self.token_ttl}
        minted["iss"] = FASTGW_ISSUER  # auth.jwt accepts it for HS tokens even when `issuer` is set
        if self.audience is not None:
            minted["aud"] = self.audience  # so the token passes an `auth.jwt.audience` check
        if email is not None:
            minted["email"] = email
        mapping = self.claims
        minted[mapping.user_id] = principal.user_id
        if principal.role:
            minted[mapping.role] = principal.role
        if principal.plan:
            minted[mapping.plan] = principal.plan
        if claim(claims, mapping.scopes) is not None:
            minted[mapping.scopes] = " ".join(principal.scopes)
        assert self.secret is not None
        return jwt.encode(minted, self.secret, algorithm="HS256")


def register(endpoints: BuiltinEndpoints, gateway: Gateway) -> None:
    if gateway.config.auth.oidc_login is None:
        return  # the path is then free for a route to an auth service
    login = Login(gateway)
    endpoints.add("POST", LOGIN_PATH, login)
    if login.sessions is not None:
        register_refresh(endpoints, login)
