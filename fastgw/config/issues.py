"""How config problems are reported: one ``"<key path>: <message>"`` line each, all together.

A gateway config is fixed in one sitting against ``fastgw check`` output, so loading never stops
at the first mistake: every problem is collected with its key path
(``routes[3].upstream: unknown upstream 'bilin'``) and raised together in one ConfigError.
"""

from __future__ import annotations

__all__ = ["ConfigError", "Issue", "format_errors", "join"]

Issue = tuple[str, str]  # (key path, message)


class ConfigError(Exception):
    """Every problem in a config, one ``"<key path>: <message>"`` line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(format_errors(errors))
        self.errors = list(errors)

    def __str__(self) -> str:
        return format_errors(self.errors)


def format_errors(errors: list[str]) -> str:
    return "\n".join(errors)


def join(path: str, key: object) -> str:
    """The key path of ``key`` inside ``path`` (``upstreams`` + ``billing`` -> ``upstreams.billing``)."""
    return f"{path}.{key}" if path else str(key)
