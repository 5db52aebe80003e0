"""Outgoing HTTP for authentication (JWKS documents, session checks, upstream OAuth2 tokens),
never blocking the loop.

PyJWT's own JWKS client fetches with ``urllib`` on the calling thread; on an event loop that
would stall every request for up to its timeout. This uses Tornado's asynchronous client with
redirects off (a redirect could carry the session cookie to another host), short timeouts and a
bounded body size.
"""

from __future__ import annotations

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.ioloop import IOLoop

MAX_BODY = 1024 * 1024

_client: tuple[IOLoop, AsyncHTTPClient] | None = None


def _client_for_loop() -> AsyncHTTPClient:
    global _client
    loop = IOLoop.current()
    if _client is None or _client[0] is not loop:
        client = AsyncHTTPClient(force_instance=True, max_clients=64, max_body_size=MAX_BODY)
        _client = (loop, client)
    return _client[1]


class FetchError(Exception):
    """The other service could not be reached or did not answer in time."""


async def get(
    url: str, headers: dict[str, str], connect_timeout: float, request_timeout: float
) -> tuple[int, bytes]:
    """``GET url`` -> (status, body). Non-2xx statuses are returned; transport failures raise."""
    return await fetch("GET", url, headers, None, connect_timeout, request_timeout)


async def fetch(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    connect_timeout: float,
    request_timeout: float,
) -> tuple[int, bytes]:
    """``method url`` -> (status, body), as ``get``."""
    request = HTTPRequest(
        url,
        method=method,
        body=body,
        headers={"Accept": "application/json", **headers},
        follow_redirects=False,
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        decompress_response=True,
    )
    try:
        response = await _client_for_loop().fetch(request, raise_error=False)
    except Exception as exc:  # connection refused, timeout, TLS, body too large...
        raise FetchError(type(exc).__name__) from None
    if response.code == 599:
        raise FetchError("no response")
    return response.code, response.body or b""
