"""The authenticated caller, as every later step (authz, limits, identity headers) sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str = ""
    app_key: str = ""
    plan: str = ""
    scopes: tuple[str, ...] = ()
    # static | api_token | jwt | session | cert: decides whether the Authorization header was
    # consumed (and is stripped) and what built-in endpoints accept.
    source: str = "static"
    token_id: str | None = None  # the API token's id when source == "api_token"
    token_fingerprint: str = ""  # stable, non-secret key for `key: token` rate limits

    @property
    def consumed_authorization(self) -> bool:
        return self.source in ("static", "api_token", "jwt")
