"""SQL for the ``api_tokens`` table: plain functions on a connection, run by a store thread or the CLI.

Only the SHA-256 of a token is ever written; nothing here sees the plaintext. Every revocation
bumps one shared counter (``store_meta``), which is how gateway workers learn, with one tiny
read, that their cached lookups may be stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from .db import Connection

REVISION_KEY = "api_tokens.revision"

_COLUMNS = "id, name, user_id, role, plan, app_key, scopes, created_at, last_used_at, revoked_at"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One row of ``api_tokens`` without its hash."""

    id: str
    name: str
    user_id: str
    role: str
    plan: str
    app_key: str
    scopes: tuple[str, ...]
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    def public(self) -> dict[str, Any]:
        """The shape ``GET /v1/api-tokens`` lists (no owner fields: the caller is the owner)."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "createdAt": self.created_at,
            "lastUsedAt": self.last_used_at,
        }

    def admin(self) -> dict[str, Any]:
        """Everything but the hash, for ``fastgw tokens list``."""
        return {
            "id": self.id,
            "name": self.name,
            "userId": self.user_id,
            "role": self.role,
            "plan": self.plan,
            "appKey": self.app_key,
            "scopes": list(self.scopes),
            "createdAt": self.created_at,
            "lastUsedAt": self.last_used_at,
            "revokedAt": self.revoked_at,
        }


def _record(row: tuple[Any, ...]) -> TokenRecord:
    scopes = msgspec.json.decode(row[6], type=list[str]) if row[6] else []
    return TokenRecord(
        id=row[0],
        name=row[1],
        user_id=row[2],
        role=row[3],
        plan=row[4],
        app_key=row[5],
        scopes=tuple(scopes),
        created_at=row[7],
        last_used_at=row[8],
        revoked_at=row[9],
    )


def insert(conn: Connection, record: TokenRecord, token_hash: str) -> None:
    conn.execute(
        "INSERT INTO api_tokens (id, token_hash, name, user_id, role, plan, app_key, scopes, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.id,
            token_hash,
            record.name,
            record.user_id,
            record.role,
            record.plan,
            record.app_key,
            msgspec.json.encode(list(record.scopes)).decode(),
            record.created_at,
        ),
    )


def find_by_hash(conn: Connection, token_hash: str) -> tuple[TokenRecord, str] | None:
    """The token with this hash (revoked ones included) and its stored hash, or None."""
    row = conn.execute(f"SELECT {_COLUMNS}, token_hash FROM api_tokens WHERE token_hash = ?", (token_hash,))
    found = row.fetchone()
    return None if found is None else (_record(found[:10]), found[10])


def list_tokens(conn: Connection, user_id: str | None = None, active_only: bool = True) -> list[TokenRecord]:
    """Tokens newest first: one user's (``user_id``) or everyone's (``None``)."""
    where, params = [], []
    if user_id is not None:
        where.append("user_id = ?")
        params.append(user_id)
    if active_only:
        where.append("revoked_at IS NULL")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM api_tokens{clause} ORDER BY created_at DESC, id", params)
    return [_record(row) for row in rows]


def revoke(conn: Connection, token_id: str, revoked_at: str, user_id: str | None = None) -> str:
    """``"revoked"``, ``"already"`` (was revoked before) or ``"unknown"`` (no such id for this user).

    Run inside a transaction: the revocation and the revision bump commit together, so a worker
    that sees the new revision also sees the revoked row.
    """
    params: tuple[str, ...] = (token_id,) if user_id is None else (token_id, user_id)
    owner = "" if user_id is None else " AND user_id = ?"
    row = conn.execute(f"SELECT revoked_at FROM api_tokens WHERE id = ?{owner}", params).fetchone()
    if row is None:
        return "unknown"
    if row[0] is not None:
        return "already"
    conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", (revoked_at, token_id))
    conn.execute(
        "INSERT INTO store_meta (key, value) VALUES (?, 1)"
        " ON CONFLICT (key) DO UPDATE SET value = store_meta.value + 1",
        (REVISION_KEY,),
    )
    return "revoked"


def revision(conn: Connection) -> int:
    """How many revocations the store has seen; workers poll it to invalidate their caches."""
    row = conn.execute("SELECT value FROM store_meta WHERE key = ?", (REVISION_KEY,)).fetchone()
    return 0 if row is None else int(row[0])


# Queued (batched) by the verifier; the guard keeps a late batch from moving the time backwards.
TOUCH_SQL = (
    "UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)"
)
