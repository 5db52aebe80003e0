"""``Authorization: Bearer`` from the upstream's OAuth2 client credentials (SPEC 13.5).

Runs after authentication and limits, so a refused request never makes the gateway fetch a
token. With a cached token ``on_request`` answers at once (no coroutine); otherwise it waits
for the one refresh in flight. No token: 502 ``BAD_GATEWAY``. The client's own
``Authorization`` was dropped when the route was compiled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING

from ..errors import LocalReply
from ..pipeline import Filter
from ..upstream.oauth2 import ClientCredentials, NoToken

if TYPE_CHECKING:
    from ..exchange import Exchange


class UpstreamToken(Filter):
    PRIORITY = 680

    def __init__(self, source: ClientCredentials) -> None:
        self.source = source

    def on_request(self, ex: Exchange) -> Awaitable[None] | None:
        if self.source.fresh():
            return None
        return self._wait()

    async def _wait(self) -> None:
        try:
            await self.source.get()
        except NoToken:
            raise LocalReply("BAD_GATEWAY", "Upstream credentials unavailable") from None

    def upstream_headers(self, ex: Exchange, target: str, body: bytes) -> Iterable[tuple[str, str]]:
        token = self.source.token
        return (("Authorization", f"Bearer {token}"),) if token is not None else ()
