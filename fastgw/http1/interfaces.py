"""What a client connection and its delegates agree on, and the answers it writes by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from ..errors import error_body
from ..forwarding import request_id_from
from ..speedups import RequestHead
from .headers import Headers

_REASONS: dict[int, bytes] = {}


def reason_phrase(status: int) -> bytes:
    """Our own reason phrase: the upstream's is free text from another party, never relayed."""
    phrase = _REASONS.get(status)
    if phrase is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b"Unknown"
        _REASONS[status] = phrase
    return phrase


class ClientContext:
    """Per-connection facts known before any request is parsed."""

    __slots__ = ("remote_ip", "protocol", "cert_user", "local_port")

    def __init__(
        self, remote_ip: str, protocol: str, cert_user: str | None = None, local_port: int = 0
    ) -> None:
        self.remote_ip = remote_ip
        self.protocol = protocol
        self.cert_user = cert_user  # subject CN of a verified TLS client certificate
        self.local_port = local_port  # the listening port the client connected to (0: unknown)


class RequestDelegate(Protocol):
    def headers_received(self, head: RequestHead, headers: Headers) -> Awaitable[None] | None: ...

    def data_received(self, chunk: bytes) -> Awaitable[None] | None: ...

    def finish(self) -> None: ...

    def on_connection_close(self) -> None: ...

    def body_timed_out(self) -> None: ...

    def wants_body(self) -> bool: ...


class Tunnel(Protocol):
    """What takes over a connection after ``101 Switching Protocols``."""

    def client_data(self, data: bytes) -> asyncio.Future[None] | None: ...

    def client_closed(self) -> None: ...


def closing_error(status: int, code: str, message: str, head_request: bool = False) -> bytes:
    """A complete error answer with ``Connection: close`` (the connection ends after it).

    An answer to HEAD carries the body's length but not the body (RFC 9110 9.3.2).
    """
    request_id = request_id_from(None)
    body = error_body(code, message, request_id)
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"X-Request-Id: %s\r\nConnection: close\r\n\r\n%s"
    ) % (
        status,
        reason_phrase(status),
        len(body),
        request_id.encode(),
        b"" if head_request else body,
    )


def subject_cn(cert: dict[str, Any] | None) -> str | None:
    """The subject commonName of a verified peer certificate, as ssl.getpeercert() gives it."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
