"""Request rewrites that need the whole body: ``transform`` and ``namespace`` (SPEC section 2).

Both run on buffered routes, after authentication and before signing, so a signature always
covers the request exactly as the upstream receives it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from .config import NamespaceConfig, TransformConfig
from .errors import LocalReply
from .http1.headers import Headers

_MISSING = object()
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _parse_object(body: bytes, content_type: str | None) -> dict[str, Any]:
    if not is_json(content_type):
        raise LocalReply("VALIDATION_ERROR", "Expected a JSON body (Content-Type application/json)")
    try:
        doc = _decoder.decode(body)
    except msgspec.DecodeError:
        raise LocalReply("VALIDATION_ERROR", "Body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise LocalReply("VALIDATION_ERROR", "Expected a JSON object")
    return doc


def _get(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _set_if_missing(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            if child is not None:
                return  # a scalar is in the way: leave the caller's value alone
            child = node[part] = {}
        node = child
    node.setdefault(leaf, value)


def _pop(doc: dict[str, Any], path: str) -> Any:
    *parents, leaf = path.split(".")
    node: Any = doc
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        return node.pop(leaf, _MISSING)
    return _MISSING


def transform_body(cfg: TransformConfig, body: bytes, content_type: str | None) -> bytes:
    """Kong-style request transformer: remove, rename, then add (only what is missing).

    Skipped entirely when any ``when_absent`` field is present. An empty body is left alone.
    """
    if not body or not (cfg.remove or cfg.rename or cfg.add):
        return body
    doc = _parse_object(body, content_type)
    if any(_get(doc, path) is not _MISSING for path in cfg.when_absent):
        return body
    for path in cfg.remove:
        _pop(doc, path)
    for source, destination in cfg.rename.items():
        value = _pop(doc, source)
        if value is not _MISSING:
            _set_if_missing(doc, destination, value)
    for path, value in cfg.add.items():
        _set_if_missing(doc, path, value)
    return _encoder.encode(doc)


def transform_headers(cfg: TransformConfig) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    """(lowercased names to remove, headers to add) — header changes always apply."""
    return frozenset(n.lower() for n in cfg.headers.remove), tuple(cfg.headers.add.items())


def namespace_request(
    cfg: NamespaceConfig,
    user_id: str,
    path: str,
    query: str,
    body: bytes,
    headers: Headers,
) -> tuple[str, str, bytes]:
    """Prefix ``<user_id><separator>`` to the configured body fields, query params and segments."""
    prefix = user_id + cfg.separator
    if cfg.path_segments_after:
        segments = path.split("/")
        for i in range(len(segments) - 1):
            if segments[i] in cfg.path_segments_after and segments[i + 1]:
                segments[i + 1] = quote(prefix, safe="") + segments[i + 1]
        path = "/".join(segments)
    if cfg.query_params and query:
        names = set(cfg.query_params)
        parts = []
        for part in query.split("&"):
            key, sep, value = part.partition("=")
            if sep and key in names:
                part = f"{key}={quote(prefix, safe='')}{value}"
            parts.append(part)
        query = "&".join(parts)
    if cfg.json_fields and body:
        doc = _parse_object(body, headers.get("Content-Type"))
        changed = False
        for field in cfg.json_fields:
            current = doc.get(field)
            if isinstance(current, str):
                doc[field] = prefix + current
                changed = True
        if changed:
            body = _encoder.encode(doc)
    return path, query, body
