"""v2 request signing (SPEC 6), over the request exactly as the upstream receives it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..pipeline import Filter
from ..signing import sign

if TYPE_CHECKING:
    from ..exchange import Exchange


class Sign(Filter):
    """Adds the ``X-Gateway-*`` signature headers.

    Lowest priority of the request side: the upstream head is built after every filter that
    changes the target or the body, so what is signed is what is sent.
    """

    PRIORITY = 600
    NEEDS_BODY = True

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def upstream_headers(self, ex: Exchange, target: str, body: bytes) -> Iterable[tuple[str, str]]:
        p = ex.principal
        if p is None:
            return sign(self.secret, ex.method, target, body).items()
        return sign(
            self.secret,
            ex.method,
            target,
            body,
            user_id=p.user_id,
            role=p.role,
            app_key=p.app_key,
            plan=p.plan,
        ).items()
