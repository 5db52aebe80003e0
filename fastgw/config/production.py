"""``server.production: true`` (SPEC 13.6): secrets fit for production, or ``check``/``run`` refuse.

Every secret the config holds (signing, JWT, webhook, static tokens, usage key) must be at
least ``MIN_SECRET_BYTES`` long and not a well-known placeholder. ``exp`` is always required of
a JWT; what could still defeat it, a ``leeway`` of more than ``MAX_LEEWAY``, is refused too.
Messages carry the key path, never the secret.
"""

from __future__ import annotations

from collections.abc import Iterator

from .issues import Issue
from .schema import Config

MIN_SECRET_BYTES = 32
MAX_LEEWAY = 300.0
PLACEHOLDERS = frozenset(
    {
        "changeme", "change-me", "change_me", "secret", "password", "passw0rd", "default", "example",
        "test", "testing", "token", "admin", "dev", "development", "dev-secret", "dev-secret-change-me",
        "dev-signing-secret-change-me", "dev-ops-token", "your-secret", "your-secret-here", "mysecret",
        "supersecret", "placeholder", "xxx", "todo",
    }
)  # fmt: skip
_PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "placeholder", "your-secret")


def _secrets(cfg: Config) -> Iterator[tuple[str, str | None]]:
    yield "signing.secret", cfg.signing.secret if cfg.signing else None
    yield "auth.jwt.secret", cfg.auth.jwt.secret if cfg.auth.jwt else None
    yield "auth.usage_key", cfg.auth.usage_key
    for i, token in enumerate(cfg.auth.tokens):
        yield f"auth.tokens[{i}].token", token.token
    for i, route in enumerate(cfg.routes):
        if route.hmac is not None:
            yield f"routes[{i}].hmac.secret", route.hmac.secret


def weak_secret(value: str) -> str | None:
    """Why ``value`` is not a production secret, or None."""
    lowered = value.strip().lower()
    if lowered in PLACEHOLDERS or any(word in lowered for word in _PLACEHOLDER_WORDS):
        return "is a well-known placeholder"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    return None


def production_problems(cfg: Config) -> Iterator[Issue]:
    """What ``server.production: true`` refuses in ``cfg`` (nothing when it is off)."""
    if not cfg.server.production:
        return
    for path, value in _secrets(cfg):
        if value:
            reason = weak_secret(value)
            if reason is not None:
                yield path, f"{reason} (server.production is on)"
    jwt = cfg.auth.jwt
    if jwt is not None and jwt.leeway > MAX_LEEWAY:
        yield (
            "auth.jwt.leeway",
            f"more than {MAX_LEEWAY:g} s defeats exp enforcement (server.production is on)",
        )
