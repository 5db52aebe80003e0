"""Refresh tokens of browser sessions (SPEC 13.4): rotation, reuse detection, families.

- A token is 32 random bytes (url-safe base64), shown once in the cookie and stored only as
  its SHA-256. Every token descends from one login: its *family*.
- ``rotate`` spends a token and issues its successor in one transaction. Spending is a
  conditional update (``rotated_at IS NULL``), so of two concurrent refreshes with one token
  exactly one wins; the other, like any later use of a spent token, is *reuse*: the whole
  family is revoked (RFC 9700 4.14), the thief's and the owner's tokens alike.
- Expired, revoked and unknown tokens are refused the same way.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from ..access_log import utc_timestamp
from .db import Connection
from .threads import Store

_COLUMNS = "family_id, user_id, role, plan, scopes, email, expires_at, rotated_at, revoked_at"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    """Who a refresh token speaks for."""

    family_id: str
    user_id: str
    role: str
    plan: str
    scopes: str | None  # space-separated, None when the login carried no scope claim
    email: str | None


@dataclass(frozen=True, slots=True)
class Rotated:
    """The outcome of presenting a token: ``session`` and ``token`` when it was good."""

    outcome: str  # rotated | reused | invalid
    session: Session | None = None
    token: str | None = None


def _insert(conn: Connection, token: str, session: Session, ttl: float) -> None:
    conn.execute(
        f"INSERT INTO refresh_tokens (token_hash, created_at, {_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        (
            token_hash(token), utc_timestamp(), session.family_id, session.user_id, session.role,
            session.plan, session.scopes, session.email, time.time() + ttl,
        ),
    )  # fmt: skip


class RefreshTokens:
    def __init__(self, store: Store, ttl: float) -> None:
        self.store = store
        self.ttl = ttl

    async def issue(self, session: Session) -> str:
        """The first token of a new family (at login)."""
        token = new_token()
        await self.store.write(lambda conn: _insert(conn, token, session, self.ttl))
        return token

    async def rotate(self, presented: str) -> Rotated:
        """Spend ``presented`` and issue its successor (see the module docstring)."""
        digest = token_hash(presented)

        def spend(conn: Connection) -> Rotated:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM refresh_tokens WHERE token_hash = ?", (digest,)
            ).fetchone()
            if row is None:
                return Rotated("invalid")
            family, user_id, role, plan, scopes, email, expires_at, rotated_at, revoked_at = row
            if revoked_at is not None or expires_at <= time.time():
                return Rotated("invalid")
            session = Session(family, user_id, role, plan, scopes, email)
            spent = conn.execute(
                "UPDATE refresh_tokens SET rotated_at = ? WHERE token_hash = ?"
                " AND rotated_at IS NULL AND revoked_at IS NULL",
                (utc_timestamp(), digest),
            ).rowcount
            if rotated_at is not None or spent != 1:
                _revoke_family(conn, family)
                return Rotated("reused", session)
            successor = new_token()
            _insert(conn, successor, session, self.ttl)
            return Rotated("rotated", session, successor)

        return await self.store.write(spend)

    async def revoke(self, presented: str) -> Session | None:
        """Logout: revoke the family of a valid token; None when the token is not valid."""
        digest = token_hash(presented)

        def revoke(conn: Connection) -> Session | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM refresh_tokens WHERE token_hash = ?", (digest,)
            ).fetchone()
            if row is None:
                return None
            family, user_id, role, plan, scopes, email, expires_at, rotated_at, revoked_at = row
            if revoked_at is not None or expires_at <= time.time():
                return None
            _revoke_family(conn, family)  # a spent token is reuse: the family goes either way
            return None if rotated_at is not None else Session(family, user_id, role, plan, scopes, email)

        return await self.store.write(revoke)


def _revoke_family(conn: Connection, family: str) -> None:
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        (utc_timestamp(), family),
    )


def new_family() -> str:
    return secrets.token_hex(16)


__all__ = ["RefreshTokens", "Rotated", "Session", "new_family"]
