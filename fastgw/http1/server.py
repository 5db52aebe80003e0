"""The listening side: asyncio servers on already-bound sockets, and what connections share."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket

    from .connection import ClientConnection
    from .interfaces import RequestDelegate


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The waits and sizes of SPEC sections 2, 13.7 and 13.8 that belong to the socket."""

    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0
    max_connections: int = 10000
    backlog: int = 4096


class ConnectionHub:
    """The set of open client connections, and the one factory that makes their delegates."""

    def __init__(
        self,
        limits: ServerLimits,
        start_request: Callable[[ClientConnection], RequestDelegate],
        ssl_context: ssl.SSLContext | None = None,
        require_client_cert: bool = False,
    ) -> None:
        self.limits = limits
        self.start_request = start_request
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        self.require_client_cert = require_client_cert
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.servers: list[asyncio.AbstractServer] = []

    async def listen(self, sockets: list[socket.socket]) -> None:
        """Start accepting on each bound socket (the loop's own TLS when a context is set)."""
        from .connection import ClientConnection

        loop = asyncio.get_running_loop()
        for sock in sockets:
            name = sock.getsockname()
            port = name[1] if isinstance(name, tuple) else 0
            server = await loop.create_server(
                lambda port=port: ClientConnection(self, port),
                sock=sock,
                backlog=self.limits.backlog,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.limits.header_timeout if self.ssl_context else None,
            )
            self.servers.append(server)

    def stop_accepting(self) -> None:
        for server in self.servers:
            server.close()

    def drain(self) -> None:
        """From now on every response says ``Connection: close``; idle connections close now."""
        self.draining = True
        for conn in list(self.connections):
            conn.going_away()

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()
