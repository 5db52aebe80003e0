"""The one JSON shape for everything the gateway answers itself (SPEC section 10)."""

from __future__ import annotations

from typing import Any

import msgspec

STATUS_OF_CODE: dict[str, int] = {
    "VALIDATION_ERROR": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "NOT_READY": 409,
    "REQUEST_TIMEOUT": 408,
    "PAYLOAD_TOO_LARGE": 413,
    "HEADERS_TOO_LARGE": 431,
    "RATE_LIMITED": 429,
    "QUOTA_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "BAD_GATEWAY": 502,
    "SERVICE_UNAVAILABLE": 503,
    "UPSTREAM_TIMEOUT": 504,
}


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    requestId: str  # noqa: N815 - wire name


class ErrorEnvelope(msgspec.Struct, kw_only=True):
    ok: bool = False
    error: ErrorDetail


class OkEnvelope(msgspec.Struct, kw_only=True):
    ok: bool = True
    data: Any


_encoder = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def error_body(code: str, message: str, request_id: str) -> bytes:
    return _encoder.encode(ErrorEnvelope(error=ErrorDetail(code, message, request_id)))


def ok_body(data: Any) -> bytes:
    return _encoder.encode(OkEnvelope(data=data))


class LocalReply(Exception):
    """Raised (or returned) anywhere on the request path to answer with the error envelope."""

    def __init__(
        self, code: str, message: str, headers: tuple[tuple[str, str], ...] = (), close: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = STATUS_OF_CODE[code]
        self.message = message
        self.headers = headers
        self.close = close
