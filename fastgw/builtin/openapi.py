"""``GET /openapi.json`` (SPEC 13.6): an OpenAPI 3.1 document of what this gateway exposes.

Built once per config load from the compiled route table and the built-in endpoints: every
route with its path (``{param}`` kept, a trailing ``/*`` as ``/{path}``), its methods (all of
them when the route names none) and its security (``auth``); every built-in endpoint with the
credential it takes. Admin role only, unless ``server.openapi: public``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import encode
from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse
from .audit import ADMIN_ROLE, deny

if TYPE_CHECKING:
    from ..gateway import Gateway

PATH = "/openapi.json"
ALL_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_PARAM = re.compile(r"\{([^/{}]+)\}")

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A static token, an API token, a JWT, or the session cookie (SPEC 4)",
    },
    "usageKey": {"type": "apiKey", "in": "header", "name": "X-Usage-Key"},
    "webhookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Webhook-Signature",
        "description": "HMAC-SHA256 of the body (auth: hmac routes)",
    },
    "gatewaySignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Gateway-Signature",
        "description": "A signature with signing.secret (progress reports)",
    },
}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
# Built-in endpoints whose credential is not the bearer chain.
_BUILTIN_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "/api/v1/auth/login": [],
    "/v1/usage": [{"usageKey": []}, {"bearer": []}],
    "/v1/usage/daily": [{"usageKey": []}, {"bearer": []}],
    "/v1/usage/rollups": [{"usageKey": []}, {"bearer": []}],
    "/requests/{id}/progress": [{"gatewaySignature": []}],
    PATH: BEARER,
}
_ROUTE_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "required": BEARER,
    "optional": [{"bearer": []}, {}],
    "none": [],
    "hmac": [{"webhookSignature": []}],
}


def openapi_path(pattern: str) -> str:
    """A route pattern as an OpenAPI path: ``/files/*`` -> ``/files/{path}``."""
    if pattern.endswith("/*"):
        return pattern[:-1] + "{path}"
    return pattern


def _operation(method: str, path: str, security: list[dict[str, list[str]]], summary: str) -> dict[str, Any]:
    operation_id = re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_")
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "security": security,
        "responses": {"default": {"description": "The upstream's answer, or the gateway's error envelope"}},
    }
    names = _PARAM.findall(path)
    if names:
        op["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names
        ]
    return op


def build_document(gateway: Gateway, builtins: BuiltinEndpoints, public: bool) -> dict[str, Any]:
    """The document for one config load (see the module docstring)."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in builtins.endpoints:
        security = (
            [] if public and endpoint.pattern == PATH else _BUILTIN_SECURITY.get(endpoint.pattern, BEARER)
        )
        item = paths.setdefault(endpoint.pattern, {})
        method = endpoint.method.lower()
        item[method] = _operation(method, endpoint.pattern, security, "Built-in endpoint")
    health = paths.setdefault("/health", {})
    health["get"] = _operation("get", "/health", [], "Liveness: always 200")
    for route in gateway.routes:
        rc = route.config
        path = openapi_path(rc.path)
        item = paths.setdefault(path, {})
        if rc.static is not None:
            methods: tuple[str, ...] = ("get", "head")
            summary = "Static files"
        elif rc.redirect is not None:
            methods = tuple(m.lower() for m in rc.methods) if rc.methods else ALL_METHODS
            summary = f"Redirect ({rc.redirect.status}) to {rc.redirect.to}"
        else:
            methods = tuple(m.lower() for m in rc.methods) if rc.methods else ALL_METHODS
            summary = f"Proxied to upstream {rc.upstream}" + (" (async: 202 and a job)" if rc.async_ else "")
        security = _ROUTE_SECURITY[rc.auth]
        for method in methods:
            if method in ALL_METHODS:
                item.setdefault(method, _operation(method, path, security, summary))
    return {
        "openapi": "3.1.0",
        "info": {"title": "fastgw", "version": __version__, "description": "What this gateway exposes"},
        "paths": paths,
        "components": {"securitySchemes": SECURITY_SCHEMES},
    }


def register(endpoints: BuiltinEndpoints, gateway: Gateway) -> None:
    public = gateway.config.server.openapi == "public"
    body: list[bytes] = []  # built on first use: the route table is complete by then

    async def openapi(request: BuiltinRequest) -> BuiltinResponse:
        if not public:
            principal = await request.authenticate()
            assert principal is not None
            if principal.role != ADMIN_ROLE:
                deny(request, principal, "role", "Admin role required")
        if not body:
            body.append(encode(build_document(gateway, endpoints, public)))
        return BuiltinResponse(200, body[0])

    endpoints.add("GET", PATH, openapi)
