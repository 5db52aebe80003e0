"""The identity headers injected upstream for an authenticated caller (SPEC 4)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..pipeline import Filter

if TYPE_CHECKING:
    from ..exchange import Exchange


class IdentityHeaders(Filter):
    """``X-User-Id`` and friends, from the principal; client-sent ones were dropped already."""

    PRIORITY = 700

    def __init__(self, names: tuple[str, str, str, str, str]) -> None:
        self.names = names

    def upstream_headers(self, ex: Exchange, target: str, body: bytes) -> Iterable[tuple[str, str]]:
        p = ex.principal
        if p is None:
            return ()
        user_id, role, app_key, plan, scopes = self.names
        return (
            (user_id, p.user_id),
            (role, p.role),
            (app_key, p.app_key),
            (plan, p.plan),
            (scopes, " ".join(p.scopes)),
        )
