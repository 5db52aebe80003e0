"""The entry points: a config file, YAML text or a dict in code -> a validated Config.

The steps, each in its own module: YAML with duplicate keys refused (here), ``${NAME}``
references resolved (``environment``), the tree converted field by field (``convert``), then the
checks across fields and sections (``validate``); every problem of every step is raised together
in one ConfigError (``issues``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import yaml

from .convert import convert_config
from .environment import expand_environment
from .fields import kind
from .issues import ConfigError, Issue
from .schema import Config
from .validate import check_config

__all__ = ["config_from_dict", "load_config", "parse_config"]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would resolve silently to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: the config file is not UTF-8 text"]) from None
    return parse_config(text, env, source=path)


def parse_config(text: str, env: Mapping[str, str] | None = None, source: str = "<config>") -> Config:
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{source}: {where}{exc.problem or exc.context or 'invalid YAML'}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from None
    return config_from_dict(data, env, source=source)


def config_from_dict(data: Any, env: Mapping[str, str] | None = None, *, source: str = "<config>") -> Config:
    """Build a Config from parsed YAML, or from a dict written in code (the demo config).

    ``env`` stands in for os.environ, so tests and the demo never depend on the real environment.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping of sections, got {kind(data)}"])
    env_issues: list[Issue] = []
    data = expand_environment(data, env, env_issues)
    issues: list[Issue] = []
    cfg, route_at, known = convert_config(data, issues)
    issues.extend(check_config(cfg, route_at, known))
    # An unresolved ${NAME} already explains whatever else goes wrong at its key.
    unresolved = {path for path, _ in env_issues}
    issues = env_issues + [issue for issue in issues if issue[0] not in unresolved]
    if issues:
        raise ConfigError([f"{path or source}: {message}" for path, message in issues])
    return cfg
