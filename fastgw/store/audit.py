"""The audit log: who did what to which object, and when (SPEC section 9).

``AuditLog.record`` never waits: the entry is queued and committed by the store's writer thread
with whatever else arrived in the same ~50 ms, so an audited request costs no disk round trip.
Callers pass details that are safe to show an admin: never a token, secret or cookie.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from ..access_log import utc_timestamp
from .db import Connection
from .threads import Store

log = logging.getLogger("fastgw.store")

_INSERT = (
    "INSERT INTO audit_log (actor_user_id, action, target_type, target_id, details, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def _params(
    actor_user_id: str | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    details: dict[str, Any] | None,
) -> tuple[Any, ...]:
    try:
        encoded = msgspec.json.encode(details or {}).decode()
    except (TypeError, msgspec.EncodeError):
        encoded = "{}"  # an unencodable detail must not lose the entry itself
    return (actor_user_id, action, target_type, target_id, encoded, utc_timestamp())


def insert(
    conn: Connection,
    actor_user_id: str | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Write one entry now (the CLI, which has no writer thread)."""
    conn.execute(_INSERT, _params(actor_user_id, action, target_type, target_id, details))


def recent(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` entries, newest first, in the wire shape of ``GET /v1/audit-logs``."""
    rows = conn.execute(
        "SELECT log_id, actor_user_id, action, target_type, target_id, details, created_at"
        " FROM audit_log ORDER BY created_at DESC, log_id DESC LIMIT ?",
        (limit,),
    )
    entries = []
    for log_id, actor, action, target_type, target_id, details, created_at in rows:
        try:
            decoded = msgspec.json.decode(details) if details else {}
        except msgspec.DecodeError:
            decoded = {}
        entries.append(
            {
                "logId": log_id,
                "actorUserId": actor,
                "action": action,
                "targetType": target_type,
                "targetId": target_id,
                "details": decoded,
                "createdAt": created_at,
            }
        )
    return entries


class AuditLog:
    """Fire-and-forget audit entries for one gateway (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self,
        actor_user_id: str | None,
        action: str,
        target_type: str | None,
        target_id: str | None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Queue one entry; ``createdAt`` is now, not when the batch commits."""
        self.store.enqueue(_INSERT, _params(actor_user_id, action, target_type, target_id, details))

    async def recent(self, limit: int) -> list[dict[str, Any]]:
        return await self.store.read(lambda conn: recent(conn, limit))
