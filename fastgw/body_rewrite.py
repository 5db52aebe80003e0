"""Request rewrites that need the whole body: ``transform`` and ``namespace`` (SPEC section 2).

Both run on buffered routes, after authentication and before signing, so a signature always
covers the request exactly as the upstream receives it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, unquote_plus

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


def namespace_prefix(user_id: str, separator: str) -> str:
    """``<user_id><separator>``, or a 401 ``LocalReply`` when that prefix could be read two ways.

    Names upstream are ``prefix + name``. They stay unambiguous (the user is everything before
    the first separator) only if the first separator in ``user_id + separator`` is the one just
    appended: a user id containing the separator (``a__b``) or ending in a proper prefix of it
    that the separator repeats (``a_`` with ``__``: ``a_`` + ``x`` = ``a`` + ``_x``) is refused.
    """
    prefix = user_id + separator
    if prefix.find(separator) != len(user_id):
        raise LocalReply("UNAUTHORIZED", "This user id cannot be used on a namespaced route")
    return prefix


def _folded(names: list[str]) -> frozenset[str]:
    return frozenset(name.casefold() for name in names)


def _namespace_segments(path: str, names: frozenset[str], prefix: str) -> str:
    """Prefix the segment after each segment named in ``names``.

    Segments compare percent-decoded and case-folded (some upstreams route case-insensitively);
    the prefix is percent-encoded, so the upstream decodes the segment to prefix + name.
    """
    if "%2f" in path.lower():
        # An upstream that decodes %2F would see segment boundaries the gateway did not.
        raise LocalReply("VALIDATION_ERROR", "Encoded '/' is not allowed in a namespaced path")
    segments = path.split("/")
    for i in range(len(segments) - 1):
        if segments[i + 1] and unquote(segments[i]).casefold() in names:
            segments[i + 1] = quote(prefix, safe="") + segments[i + 1]
    return "/".join(segments)


def _namespace_query(query: str, names: frozenset[str], prefix: str) -> str:
    """Prefix the value of every parameter whose key is one of ``names``.

    Keys compare form-urlencoded decoded (``%64atabase``), case-folded and without a ``[...]``
    suffix, as the lenient parsers of PHP, Rails or ASP.NET read them. A key without ``=`` is
    read as an empty value, so it is forwarded as ``key=<prefix>``.
    """
    encoded = quote(prefix, safe="")
    parts = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote_plus(key).split("[", 1)[0].casefold() in names:
            part = f"{key}={encoded}{value}"
        parts.append(part)
    return "&".join(parts)


def _namespace_fields(doc: dict[str, Any], fields: list[str], prefix: str) -> bool:
    """Prefix every top-level field whose key case-folds to one of ``fields``; True if any.

    Decoders such as Go's ``encoding/json`` match keys case-insensitively (last one wins), so
    every such spelling is namespaced. A present value that is not a string (list, number,
    object, null) is a 400 naming the configured field, never echoing the value.
    """
    configured = {name.casefold(): name for name in fields}
    changed = False
    for key, value in doc.items():
        field = configured.get(key.casefold())
        if field is None:
            continue
        if not isinstance(value, str):
            raise LocalReply("VALIDATION_ERROR", f"Field {field!r} must be a string")
        doc[key] = prefix + value
        changed = True
    return changed


def namespace_request(
    cfg: NamespaceConfig,
    user_id: str,
    path: str,
    query: str,
    body: bytes,
    headers: Headers,
) -> tuple[str, str, bytes]:
    """Prefix ``<user_id><separator>`` to the configured body fields, query params and segments.

    Returns the new (path, query, body). Raises ``LocalReply``: 401 for a user id that would
    make names ambiguous (``namespace_prefix``); 400 for an encoded ``/`` in the path when
    segments are namespaced, a namespaced JSON field that is present but not a string, or a
    body that is not a JSON object while fields are namespaced.
    """
    prefix = namespace_prefix(user_id, cfg.separator)
    if cfg.path_segments_after:
        path = _namespace_segments(path, _folded(cfg.path_segments_after), prefix)
    if cfg.query_params and query:
        query = _namespace_query(query, _folded(cfg.query_params), prefix)
    if cfg.json_fields and body:
        doc = _parse_object(body, headers.get("Content-Type"))
        if _namespace_fields(doc, cfg.json_fields, prefix):
            body = _encoder.encode(doc)
    return path, query, body
