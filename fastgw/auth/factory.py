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
