"""Endpoints the gateway serves itself (SPEC section 5), matched before user routes.

A built-in endpoint is an async function from a ``BuiltinRequest`` (body already read, at most
the route's body limit) to a ``BuiltinResponse``; it raises ``LocalReply`` for errors, which the
exchange turns into the envelope (a ``StoreError`` becomes 503 ``SERVICE_UNAVAILABLE`` there).
Each feature module registers its endpoints with a ``register(endpoints, gateway)`` function,
called once per config load.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..auth.principal import Principal
from ..errors import LocalReply, encode, ok_body
from ..http1.headers import Headers
from ..routing import RouteSpec, RouteTable

if TYPE_CHECKING:
    from ..gateway import Gateway

_JSON_HEADERS = (("Content-Type", "application/json"),)


@dataclass(slots=True)
class BuiltinRequest:
    method: str
    path: str
    query: str
    params: dict[str, str]
    headers: Headers
    body: bytes
    client_ip: str
    request_id: str
    cert_user: str | None
    gateway: Gateway
    principal: Principal | None = None

    def arg(self, name: str) -> str | None:
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[-1] if values else None

    async def authenticate(self, required: bool = True) -> Principal | None:
        """The caller per the credential chain (401 when required and absent)."""
        principal = await self.gateway.auth.authenticate(self.headers, self.query, False, self.cert_user)
        if principal is None and required:
            self.gateway.metrics.auth_failures.labels("missing").inc()
            raise LocalReply("UNAUTHORIZED", "Authentication required")
        self.principal = principal
        return principal

    def json(self) -> Any:
        import msgspec

        try:
            return msgspec.json.decode(self.body) if self.body else {}
        except msgspec.DecodeError:
            raise LocalReply("VALIDATION_ERROR", "Body must be JSON") from None


@dataclass(frozen=True, slots=True)
class BuiltinResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = _JSON_HEADERS


def ok(data: Any, status: int = 200) -> BuiltinResponse:
    """The success envelope ``{"ok": true, "data": ...}``."""
    return BuiltinResponse(status, ok_body(data))


def raw_json(data: Any, status: int = 200) -> BuiltinResponse:
    return BuiltinResponse(status, encode(data))


def no_content() -> BuiltinResponse:
    return BuiltinResponse(204, b"", ())


Handler = Callable[[BuiltinRequest], Awaitable[BuiltinResponse]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    pattern: str
    method: str
    handler: Handler
    rate_limited: bool = True


class BuiltinEndpoints:
    """The built-in endpoints of one config load, matched with the same trie as user routes."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []
        self._table: RouteTable | None = None

    def add(self, method: str, pattern: str, handler: Handler, rate_limited: bool = True) -> None:
        self.endpoints.append(Endpoint(pattern, method, handler, rate_limited))
        self._table = None

    def match(self, method: str, path: str) -> tuple[Endpoint | None, dict[str, str], list[str] | None]:
        """(endpoint, params, None) on a match; (None, {}, allowed) for 405; (None, {}, None) else."""
        if not self.endpoints:
            return None, {}, None
        table = self._table
        if table is None:
            table = self._table = RouteTable(
                [RouteSpec(e.pattern, frozenset({e.method})) for e in self.endpoints]
            )
        route_id, params, _ = table.match(method, path)
        if route_id >= 0:
            return self.endpoints[route_id], params or {}, None
        if route_id == -2:
            return None, {}, table.allowed(path)
        return None, {}, None
