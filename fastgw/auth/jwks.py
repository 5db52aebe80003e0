"""JWKS documents and the cache of one JWKS URL's key set (SPEC sections 2, 4 and 13.8).

The key set is what the IdP published at the last successful fetch, nothing more and nothing
less: a fetch that succeeds (status 200, a JSON object with a ``keys`` list) replaces it, even
when the new set is empty or holds only keys we cannot use, so a key the IdP withdrew stops
verifying. A fetch that fails (refused, timed out, non-200, not a JWKS document) changes nothing.

Time rules, with ``F`` the start of the last successful fetch:

- before ``F + ttl`` the set is fresh and used as is (an unknown ``kid`` still refetches, at most
  once per ``min_refetch``);
- from ``F + ttl`` every lookup first refetches, whatever the ``kid``; only after a *failed*
  attempt are retries spaced by ``min_refetch`` (a dead IdP is not asked on every request);
- while the IdP keeps failing, the stale set is used until ``F + ttl + max_stale``; after that
  lookups are 503 ``SERVICE_UNAVAILABLE`` (the fault is not the caller's) until a fetch succeeds.

Every fetch is bounded by ``timeout`` seconds and concurrent callers share one fetch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from ..errors import LocalReply
from ..metrics import Metrics
from . import http
from .authenticator import AuthFailure

log = logging.getLogger("fastgw.auth")

_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
MAX_JWKS_KEYS = 100
JWKS_CONNECT_TIMEOUT = 2.0
JWKS_REQUEST_TIMEOUT = 4.0  # the whole fetch, connect included
DEFAULT_MAX_STALE = 3600.0  # auth.jwt.jwks_max_stale's default


@dataclass(frozen=True, slots=True)
class JwkKey:
    """One usable public key from a JWKS document."""

    kid: str | None
    alg: str | None  # the JWK's own "alg", when it names one
    kty: str  # "RSA" or "EC"
    curve: str | None
    key: RSAPublicKey | EllipticCurvePublicKey

    def fits(self, alg: str) -> bool:
        """Whether this key may verify an ``alg`` token: the key type follows the algorithm family."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg.startswith(("RS", "PS")):
            return self.kty == "RSA"
        return alg.startswith("ES") and self.kty == "EC" and self.curve == _CURVES.get(alg)


def parse_key_set(body: bytes) -> list[JwkKey]:
    """The RSA and EC signing keys of a JWKS document, possibly none.

    ValueError only when ``body`` is not a JWKS document at all (not JSON, no ``keys`` list):
    that is a failed fetch. A document whose keys are all unusable is a valid, empty key set.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("no 'keys' list")
    keys: list[JwkKey] = []
    for entry in entries[:MAX_JWKS_KEYS]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid, alg, kty = entry.get("kid"), entry.get("alg"), entry.get("kty")
        if (kid is not None and not isinstance(kid, str)) or (alg is not None and not isinstance(alg, str)):
            continue
        try:
            if kty == "RSA":
                rsa_key = RSAAlgorithm.from_jwk(entry)
                if isinstance(rsa_key, RSAPrivateKey):
                    rsa_key = rsa_key.public_key()  # a JWKS should hold public keys; use only that half
                keys.append(JwkKey(kid, alg, "RSA", None, rsa_key))
            elif kty == "EC":
                ec_key = ECAlgorithm.from_jwk(entry)
                if isinstance(ec_key, EllipticCurvePrivateKey):
                    ec_key = ec_key.public_key()
                keys.append(JwkKey(kid, alg, "EC", ec_key.curve.name, ec_key))
            # "oct" (symmetric) keys are ignored: HS tokens are only ever checked with `secret`.
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
    return keys


def parse_jwks(body: bytes) -> list[JwkKey]:
    """Like ``parse_key_set``, but ValueError also when the document holds no usable key."""
    keys = parse_key_set(body)
    if not keys:
        raise ValueError("no usable RSA or EC signing key")
    return keys


@dataclass(frozen=True, slots=True, eq=False)
class KeySet:
    """The keys of one successful fetch. Identity matters: each fetch makes a new one."""

    keys: tuple[JwkKey, ...]
    fetched_at: float  # monotonic time the fetch started (so "fresh" never overstates)


class JwksCache:
    """The key set of one JWKS URL, under the time rules of the module docstring."""

    def __init__(
        self,
        url: str,
        ttl: float,
        min_refetch: float,
        metrics: Metrics,
        *,
        max_stale: float = DEFAULT_MAX_STALE,
        timeout: float = JWKS_REQUEST_TIMEOUT,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.min_refetch = min_refetch
        self.max_stale = max_stale
        self.timeout = timeout
        self.metrics = metrics
        self.key_set: KeySet | None = None  # the last successful fetch's keys
        self.attempted_at = -math.inf  # monotonic start of the last fetch attempt
        self.failing = False  # the last attempt failed
        self.fetches = 0
        self._inflight: asyncio.Future[None] | None = None

    @property
    def keys(self) -> tuple[JwkKey, ...]:
        """The current keys (empty before the first successful fetch)."""
        return self.key_set.keys if self.key_set is not None else ()

    def take_over(self, previous: JwksCache) -> None:
        """Reload: keep ``previous``'s key set and fetch history when it serves the same URL.

        The set keeps its fetch time, so it ages under this cache's ttl and max_stale as if no
        reload had happened; an IdP that is down at the reload does not cost the keys.
        """
        if previous.url != self.url:
            return
        self.key_set = previous.key_set
        self.attempted_at = previous.attempted_at
        self.failing = previous.failing
        self.fetches = previous.fetches

    async def candidates(self, kid: str | None, alg: str) -> list[JwkKey]:
        """Keys that may verify a token with this ``kid`` and ``alg`` (AuthFailure if none)."""
        return (await self.lookup(kid, alg))[1]

    async def lookup(self, kid: str | None, alg: str) -> tuple[KeySet, list[JwkKey]]:
        """The key set in use and its keys fitting ``kid``/``alg``.

        AuthFailure("unknown_kid") when none fits; LocalReply 503 when no key set was ever
        fetched or the IdP has failed for longer than ``max_stale`` past the ttl.
        """
        if self._fetch_due():
            await self._refresh()
        key_set = self._usable()
        found = _match(key_set, kid, alg)
        if not found and kid is not None and (self._inflight is not None or self._refetch_allowed()):
            await self._refresh()
            key_set = self._usable()
            found = _match(key_set, kid, alg)
        if not found:
            raise AuthFailure("unknown_kid")
        return key_set, found

    def valid_until(self, key_set: KeySet) -> float:
        """Until when (monotonic) a verdict reached with ``key_set`` stays what a lookup would say.

        Fresh: the end of the ttl. Stale during an outage: the next fetch attempt allowed, but
        never past max_stale. ``-inf`` when ``key_set`` has been replaced.
        """
        if key_set is not self.key_set:
            return -math.inf
        fresh_until = key_set.fetched_at + self.ttl
        if time.monotonic() < fresh_until or not self.failing:
            return fresh_until
        return min(self.attempted_at + self.min_refetch, fresh_until + self.max_stale)

    def _fetch_due(self) -> bool:
        key_set = self.key_set
        if key_set is not None and time.monotonic() - key_set.fetched_at < self.ttl:
            return False
        return self._inflight is not None or not self.failing or self._refetch_allowed()

    def _refetch_allowed(self) -> bool:
        return time.monotonic() - self.attempted_at >= self.min_refetch

    def _usable(self) -> KeySet:
        key_set = self.key_set
        if key_set is None or time.monotonic() - key_set.fetched_at >= self.ttl + self.max_stale:
            self.metrics.auth_failures.labels("jwks_unavailable").inc()
            raise LocalReply("SERVICE_UNAVAILABLE", "Token verification keys are unavailable")
        return key_set

    async def _refresh(self) -> None:
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
        await asyncio.shield(self._inflight)

    async def _fetch(self) -> None:
        started = self.attempted_at = time.monotonic()
        self.fetches += 1
        try:
            status, body = await asyncio.wait_for(
                http.get(self.url, {}, min(JWKS_CONNECT_TIMEOUT, self.timeout), self.timeout),
                self.timeout,
            )
            if status != 200:
                raise ValueError(f"status {status}")
            keys = parse_key_set(body)
        except (http.FetchError, ValueError, TimeoutError) as exc:
            self.failing = True
            log.warning(
                "JWKS fetch from %s failed (%s); %d cached keys remain usable for at most %ss past their ttl",
                self.url,
                str(exc) or type(exc).__name__,
                len(self.keys),
                self.max_stale,
            )
        else:
            self.key_set = KeySet(tuple(keys), started)
            self.failing = False
            if not keys:
                log.warning(
                    "JWKS at %s holds no usable signing key; JWKS-signed tokens are refused", self.url
                )
        finally:
            self._inflight = None


def _match(key_set: KeySet, kid: str | None, alg: str) -> list[JwkKey]:
    return [k for k in key_set.keys if (kid is None or k.kid == kid) and k.fits(alg)]
