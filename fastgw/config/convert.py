"""Parsed YAML -> Config, field by field, collecting every problem with its key path.

msgspec.convert stops at the first error and cannot name dict keys (``$[...]``), so the Structs,
lists and dicts are walked here and only leaves go to msgspec or to a field type's parser.
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import msgspec

from .fields import Parsed, kind
from .issues import Issue, join
from .schema import Config, RouteConfig, UpstreamConfig

__all__ = ["Known", "convert_config", "fields_of"]

_INVALID: Any = object()


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
        (inner,) = (arg for arg in get_args(tp) if arg is not type(None))
        return inner, True
    return tp, False


def _parser(tp: Any) -> Callable[[Any], Any] | None:
    if get_origin(tp) is Annotated:
        for extra in tp.__metadata__:
            if isinstance(extra, Parsed):
                return extra.parse
    return None


@functools.cache
def fields_of(cls: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    return {field.encode_name: field for field in msgspec.structs.fields(cls)}


def _convert(data: Any, tp: Any, path: str, issues: list[Issue]) -> Any:
    """Convert ``data`` to ``tp`` one field at a time, so one mistake never hides the next.

    msgspec.convert stops at the first error and cannot name dict keys (``$[...]``), so the
    Structs, lists and dicts are walked here and only leaves go to msgspec (strict=False, so
    ``workers: ${WORKERS:-2}`` becomes an int).
    """
    tp, nullable = _unwrap_optional(tp)
    base = get_args(tp)[0] if get_origin(tp) is Annotated else tp
    if nullable and (data is None or (data == "" and base is str)):
        return None  # an empty optional string (secret: ${X:-}) means "not set"
    if (parse := _parser(tp)) is not None:
        try:
            return parse(data)
        except ValueError as exc:
            issues.append((path, str(exc)))
            return _INVALID
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _convert_struct(data, tp, path, issues)
    origin = get_origin(tp)
    if origin is list and isinstance(data, list):
        items = [_convert(item, get_args(tp)[0], f"{path}[{i}]", issues) for i, item in enumerate(data)]
        return _INVALID if any(item is _INVALID for item in items) else items
    if origin is dict and isinstance(data, dict):
        key_tp, value_tp = get_args(tp)
        pairs = [
            (_convert(k, key_tp, join(path, k), issues), _convert(v, value_tp, join(path, k), issues))
            for k, v in data.items()
        ]
        return _INVALID if any(part is _INVALID for pair in pairs for part in pair) else dict(pairs)
    if origin is list or origin is dict:
        issues.append((path, f"expected {'list' if origin is list else 'mapping'}, got {kind(data)}"))
        return _INVALID
    try:
        return msgspec.convert(data, tp, strict=False)
    except msgspec.ValidationError as exc:
        issues.append((path, _describe(str(exc), tp, data)))
        return _INVALID


def _convert_struct(data: Any, cls: type[msgspec.Struct], path: str, issues: list[Issue]) -> Any:
    if not isinstance(data, dict):
        issues.append((path, f"expected mapping, got {kind(data)}"))
        return _INVALID
    fields = fields_of(cls)
    ok = True
    for key in data:
        if key not in fields:
            issues.append((join(path, key), "unknown key"))
            ok = False
    values = {}
    for key, field in fields.items():
        # An explicit null for a field that has a default and cannot be null means the default.
        if key not in data or (
            data[key] is None and not field.required and not _unwrap_optional(field.type)[1]
        ):
            if field.required:
                issues.append((join(path, key), "missing required key"))
                ok = False
            continue
        value = _convert(data[key], field.type, join(path, key), issues)
        values[field.name] = value
        ok = ok and value is not _INVALID
    return cls(**values) if ok else _INVALID


_MSGSPEC_KINDS = {"array": "list", "object": "mapping"}


def _describe(message: str, tp: Any, data: Any) -> str:
    """msgspec's leaf message (``Expected `int`, got `str```) in this module's words."""
    if get_origin(tp) is Literal:
        got = repr(data) if isinstance(data, str | int | float) else kind(data)
        return f"expected one of {', '.join(map(str, get_args(tp)))}, got {got}"
    message = message.split(" - at `$", 1)[0]
    message = re.sub(r"`(\w+)`", lambda m: _MSGSPEC_KINDS.get(m[1], m[1]), message)
    return message[:1].lower() + message[1:]


class Known(NamedTuple):
    """Names the cross-checks compare against, taken from the raw data when a section is broken."""

    upstreams: frozenset[str]
    policies: frozenset[str] | None  # None: unknown (rate_limits did not load), skip name checks
    signing: bool  # False: signing did not load, skip the sign check


def convert_config(data: dict[Any, Any], issues: list[Issue]) -> tuple[Config, list[int], Known]:
    """Convert section by section and route by route, keeping whatever is valid.

    The cross-checks then still run on the valid parts of a broken file, so one ``fastgw check``
    reports a typo in one route and an unknown upstream in another together.
    """
    fields = fields_of(Config)
    issues.extend((str(key), "unknown key") for key in data if key not in fields)
    sections: dict[str, Any] = {}
    routes: dict[int, Any] = {}
    upstreams: dict[str, Any] = {}
    broken = set()
    for key, field in fields.items():
        raw = data.get(key)
        if raw is None:
            continue
        if key == "routes" and isinstance(raw, list):
            routes = {i: _convert(item, RouteConfig, f"routes[{i}]", issues) for i, item in enumerate(raw)}
        elif key == "upstreams" and isinstance(raw, dict):
            upstreams = {
                str(name): _convert(item, UpstreamConfig, join(key, name), issues)
                for name, item in raw.items()
            }
        elif (value := _convert(raw, field.type, key, issues)) is _INVALID:
            broken.add(key)
        else:
            sections[key] = value
    routes = {i: route for i, route in routes.items() if route is not _INVALID}
    cfg = Config(
        **sections,
        routes=list(routes.values()),
        upstreams={name: upstream for name, upstream in upstreams.items() if upstream is not _INVALID},
    )
    limits = data.get("rate_limits")
    raw_policies = limits.get("policies") if isinstance(limits, dict) else None
    policies: frozenset[str] | None = None
    if "rate_limits" not in broken:
        policies = frozenset(cfg.rate_limits.policies)
    elif isinstance(raw_policies, dict):
        policies = frozenset(map(str, raw_policies))
    return cfg, list(routes), Known(frozenset(upstreams), policies, "signing" not in broken)
