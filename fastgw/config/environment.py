"""``${NAME}`` and ``${NAME:-default}`` in config values (SPEC section 2).

This is the only module of the config that reads the environment. References are resolved
inside string values of the parsed YAML tree (not in the raw text), so a value full of YAML
syntax stays one string and an unset variable is reported at the key that uses it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .issues import Issue, join

__all__ = ["expand_environment"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_environment(data: Any, env: Mapping[str, str] | None, issues: list[Issue]) -> Any:
    """A copy of ``data`` with every reference resolved from ``env`` (default: ``os.environ``).

    ``env`` stands in for os.environ, so tests and the demo never depend on the real environment.
    """
    return _expand(data, os.environ if env is None else env, "", issues)


def _expand(node: Any, env: Mapping[str, str], path: str, issues: list[Issue]) -> Any:
    """Resolve ``${NAME}`` / ``${NAME:-default}`` in every string of the tree (returns a copy).

    As in the shell, ``:-`` also replaces a variable that is set but empty. An unresolved
    reference is left in place and reported, so no later check mistakes it for a blank value.
    """
    if isinstance(node, dict):
        return {key: _expand(value, env, join(path, key), issues) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand(value, env, f"{path}[{i}]", issues) for i, value in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        issues.append((path, f"environment variable {name} is {'empty' if value == '' else 'not set'}"))
        return match[0]

    if "${" in _ENV_REF.sub("", node):
        issues.append((path, "malformed reference: use ${NAME} or ${NAME:-default}"))
    return _ENV_REF.sub(substitute, node)
