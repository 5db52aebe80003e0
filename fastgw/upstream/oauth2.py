"""Upstream credentials from the OAuth 2.0 client-credentials grant (SPEC 13.5, RFC 6749 4.4).

One ``ClientCredentials`` per upstream with ``oauth2:``. The token is fetched with a form POST
to ``token_url`` (client authentication with HTTP Basic, RFC 6749 2.3.1), kept until 30 s
before its ``expires_in``, and refreshed by one request however many callers are waiting for
it. A token endpoint that fails, times out or answers without ``access_token`` gives no token
(the request is 502); nothing here ever logs the token or the secret.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from urllib.parse import quote, urlencode

import msgspec

from ..auth.http import FetchError, fetch
from ..config import OAuth2Config

log = logging.getLogger("fastgw")

EARLY_REFRESH = 30.0  # seconds before expiry a token is no longer used
DEFAULT_LIFETIME = 3600.0  # when the token endpoint gives no expires_in
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0


class NoToken(Exception):
    """No token could be had; the message says why, without any credential."""


class _TokenAnswer(msgspec.Struct):
    access_token: str
    expires_in: float | None = None


class ClientCredentials:
    def __init__(self, upstream: str, config: OAuth2Config) -> None:
        self.upstream = upstream
        self.config = config
        self.token: str | None = None
        self._good_until = 0.0
        self._refresh: asyncio.Future[str] | None = None
        client = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
        self._basic = "Basic " + base64.b64encode(client.encode()).decode()
        form = {"grant_type": "client_credentials"}
        if config.scope:
            form["scope"] = config.scope
        if config.audience:
            form["audience"] = config.audience
        self._form = urlencode(form).encode()

    def fresh(self) -> bool:
        """Whether the cached token may be used now."""
        return self.token is not None and time.monotonic() < self._good_until

    async def get(self) -> str:
        """The current token, fetching one first if needed (NoToken if it cannot be had)."""
        if self.token is not None and time.monotonic() < self._good_until:
            return self.token
        refresh = self._refresh
        if refresh is None:
            refresh = self._refresh = asyncio.ensure_future(self._fetch())
            refresh.add_done_callback(self._refreshed)
        return await asyncio.shield(refresh)

    def _refreshed(self, future: asyncio.Future[str]) -> None:
        self._refresh = None
        if not future.cancelled():
            future.exception()  # retrieved: a failure is reported to each waiter, not the loop

    async def _fetch(self) -> str:
        headers = {"Authorization": self._basic, "Content-Type": "application/x-www-form-urlencoded"}
        try:
            status, body = await fetch(
                "POST", self.config.token_url, headers, self._form, CONNECT_TIMEOUT, REQUEST_TIMEOUT
            )
        except FetchError as exc:
            raise self._failed(f"token endpoint unreachable ({exc})") from None
        if status != 200:
            raise self._failed(f"token endpoint answered {status}")
        try:
            answer = msgspec.json.decode(body, type=_TokenAnswer)
        except msgspec.DecodeError:
            raise self._failed("token endpoint answered without a usable access_token") from None
        if not answer.access_token:
            raise self._failed("token endpoint answered an empty access_token")
        lifetime = DEFAULT_LIFETIME if answer.expires_in is None else answer.expires_in
        self.token = answer.access_token
        self._good_until = time.monotonic() + lifetime - EARLY_REFRESH
        return answer.access_token

    def _failed(self, reason: str) -> NoToken:
        log.warning("upstream %s: no OAuth2 token: %s", self.upstream, reason)
        return NoToken(reason)
