"""``sse_keepalive``: ``: ping`` comments while an event stream is silent (SPEC 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..pipeline import Filter
from ..sse import SseKeepalive

if TYPE_CHECKING:
    from ..exchange import Exchange


class SseKeepaliveFilter(Filter):
    PRIORITY = 500

    def __init__(self, interval: float) -> None:
        self.interval = interval

    def on_response_head(self, ex: Exchange, status: int, content_type: str) -> None:
        if content_type.startswith("text/event-stream"):
            ex.keepalive = SseKeepalive(ex.write_ping, self.interval)

    def on_response_data(self, ex: Exchange, data: bytes) -> None:
        if ex.keepalive is not None:
            ex.keepalive.saw(data)

    def on_complete(self, ex: Exchange) -> None:
        if ex.keepalive is not None:
            ex.keepalive.stop()
