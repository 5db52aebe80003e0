"""Wiring: the verifiers a config enables, plugged into one ``Authenticator``."""

from __future__ import annotations

from ..config import Config
from ..metrics import Metrics
from ..store import Store
from .api_tokens import ApiTokenVerifier
from .authenticator import Authenticator
from .jwt import JwtVerifier
from .session import SessionVerifier


def build_authenticator(config: Config, metrics: Metrics, store: Store) -> Authenticator:
    auth = config.auth
    return Authenticator(
        config,
        metrics,
        api_tokens=ApiTokenVerifier(store, auth.api_tokens.prefix, metrics)
        if auth.api_tokens.enabled
        else None,
        jwt=JwtVerifier(auth.jwt, metrics) if auth.jwt is not None else None,
        session=SessionVerifier(auth.session, metrics) if auth.session is not None else None,
    )


def take_auth_state(new: Authenticator, old: Authenticator) -> None:
    """Reload: ``new`` keeps what ``old`` learned that its config still makes true.

    JWKS key sets (same ``jwks_url``), JWT verdicts (same ``auth.jwt``), session answers (same
    ``auth.session``) and API-token lookups (same store and prefix); each verifier's
    ``take_over`` decides what is compatible. Nothing is shared: ``old`` keeps serving the
    requests it already has with its own state.
    """
    if isinstance(new.jwt, JwtVerifier) and isinstance(old.jwt, JwtVerifier):
        new.jwt.take_over(old.jwt)
    if isinstance(new.session, SessionVerifier) and isinstance(old.session, SessionVerifier):
        new.session.take_over(old.session)
    if isinstance(new.api_tokens, ApiTokenVerifier) and isinstance(old.api_tokens, ApiTokenVerifier):
        new.api_tokens.take_over(old.api_tokens)
