"""What the SIGTERM drain and ``server.max_inflight`` count: requests and tunnels in flight."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .websocket import WebSocketTunnel


class InflightCounter:
    """Requests between head and completion, and open tunnels, for the drain on SIGTERM.

    ``limit`` is ``server.max_inflight`` (0: unlimited): requests beyond it are shed at once.
    """

    __slots__ = ("count", "tunnels", "limit")

    def __init__(self, limit: int = 0) -> None:
        self.count = 0
        self.limit = limit
        self.tunnels: set[WebSocketTunnel] = set()
