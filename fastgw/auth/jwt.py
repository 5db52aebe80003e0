"""JWT bearer tokens (SPEC section 4), verified with PyJWT.

Key selection is where JWT verifiers get broken (RS/HS confusion, CVE-2022-29217 class), so it is
decided here by construction, before PyJWT sees the token:

- the unverified header's ``alg`` must be in the configured list (``none`` never is);
- HS* is verified only with ``secret``; RS*/PS* only with RSA keys and ES* only with EC keys of
  the matching curve, all from the configured JWKS URL. The secret is never offered for an RS
  token and a JWKS key never for an HS one, so no header can make one stand in for the other;
- PyJWT then gets exactly that key and ``algorithms=[alg]``;
- ``kid`` is only a key into an in-memory dict; ``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are
  ignored, and ``crit``/``b64`` (extensions we do not implement) are refused.

PyJWT accepts ``exp`` as a numeric string and does not require it by default, so ``exp`` is
required and the time claims are type-checked here too. Verified tokens are cached briefly
(bounded, never past their ``exp``): a client repeats its token on every request, and the
signature check is the most expensive step of a proxied request. A JWKS-verified verdict is also
bound to the key set that verified it (``jwks.py``): it is dropped when that set is replaced and
never outlives the set's validity, so a withdrawn key stops working within ``jwks_cache_ttl``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from jwt.types import Options

from ..config import ClaimsMap, JWTConfig
from ..metrics import Metrics
from .authenticator import AuthFailure, checked_principal, fingerprint
from .jwks import JwkKey, JwksCache, KeySet, parse_jwks, parse_key_set
from .principal import Principal

log = logging.getLogger("fastgw.auth")

# Short HS secrets are reported once at start-up (JwtVerifier), not by PyJWT on every decode.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)

ASYMMETRIC: frozenset[str] = frozenset(f"{f}{b}" for f in ("RS", "PS", "ES") for b in (256, 384, 512))
MAX_TOKEN_BYTES = 16 * 1024
MAX_KID_LENGTH = 256
_LATEST_TIME = 253402300799  # 9999-12-31T23:59:59Z: anything later is not a real date
CACHE_SECONDS = 30.0
CACHE_ENTRIES = 10_000
FASTGW_ISSUER = "fastgw"  # the issuer of tokens minted by POST /api/v1/auth/login


def _segment_json(segment: str) -> Any:
    """Decode one base64url JSON segment, refusing duplicate member names at any depth."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError("duplicate member")
            result[key] = value
        return result

    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw, object_pairs_hook=unique)


def _check_payload(token: str) -> None:
    """Shape checks PyJWT does not make, before any key is looked up (or fetched) for the token.

    json.loads (inside PyJWT) keeps the last of duplicate names, so ``{"sub":"a","sub":"admin"}``
    would mean whatever the parser picks: refused. PyJWT also coerces ``exp``/``nbf``/``iat``
    with ``int()``, accepting ``"9999999999"`` and ``true``: only JSON numbers in range pass.
    The signature is still checked afterwards; this only rejects tokens earlier.
    """
    try:
        payload = _segment_json(token.split(".")[1])
    except (ValueError, binascii.Error, RecursionError):
        raise AuthFailure("malformed") from None
    if not isinstance(payload, dict):
        raise AuthFailure("malformed")
    for name in ("exp", "nbf", "iat"):
        if name in payload and not _is_time(payload[name]):
            raise AuthFailure("bad_claims")
    if "iss" in payload and not isinstance(payload["iss"], str):
        raise AuthFailure("bad_claims")


def _is_time(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 <= value <= _LATEST_TIME


class JwtDecoder:
    """Signature and registered-claim checks for one token source (platform JWTs, OIDC idTokens)."""

    def __init__(
        self,
        *,
        algorithms: Collection[str],
        secret: str | None,
        jwks: JwksCache | None,
        issuers: tuple[str, ...] | None,
        hs_issuers: tuple[str, ...] | None = None,
        audience: str | None,
        leeway: float,
        require: tuple[str, ...] = ("exp",),
    ) -> None:
        self.algorithms = frozenset(a for a in algorithms if a.lower() != "none")
        self.secret = secret or None
        self.jwks = jwks
        self.issuers = issuers
        self.hs_issuers = hs_issuers if hs_issuers is not None else issuers
        self.audience = audience
        self.leeway = leeway
        required = set(require) | {"exp"}
        if issuers is not None:
            required.add("iss")
        if audience is not None:
            required.add("aud")
        self.options: Options = {
            "require": sorted(required),
            "verify_aud": audience is not None,
            "verify_iss": issuers is not None,
        }

    async def decode(self, token: str) -> dict[str, Any]:
        """The verified claims, or AuthFailure (LocalReply 503 when the keys cannot be fetched)."""
        return (await self.decode_with_key_set(token))[0]

    async def decode_with_key_set(self, token: str) -> tuple[dict[str, Any], KeySet | None]:
        """``decode``, plus the JWKS key set that verified the token (None for HS tokens)."""
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise AuthFailure("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthFailure("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthFailure("bad_algorithm")
        if "crit" in header or "b64" in header:
            raise AuthFailure("malformed")
        _check_payload(token)
        issuers = self.issuers
        keys: list[Any]
        key_set: KeySet | None = None
        if alg.startswith("HS"):
            if self.secret is None:
                raise AuthFailure("bad_algorithm")
            keys = [self.secret]
            issuers = self.hs_issuers
        else:
            kid = header.get("kid")
            if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
                raise AuthFailure("unknown_kid")
            if self.jwks is None:
                raise AuthFailure("bad_algorithm")
            key_set, found = await self.jwks.lookup(kid, alg)
            keys = [k.key for k in found]
        return self._verify(token, alg, keys, issuers), key_set

    def _verify(
        self, token: str, alg: str, keys: list[Any], issuers: tuple[str, ...] | None
    ) -> dict[str, Any]:
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[alg],  # checked against the allow-list above; the key matches its family
                    options=self.options,
                    audience=self.audience,
                    issuer=issuers,
                    leeway=self.leeway,
                )
            except jwt.InvalidSignatureError:
                continue  # another key with the same kid (or no kid) may fit
            except jwt.ExpiredSignatureError:
                raise AuthFailure("expired") from None
            except jwt.ImmatureSignatureError:
                raise AuthFailure("not_yet_valid") from None
            except (
                jwt.MissingRequiredClaimError,
                jwt.InvalidAudienceError,
                jwt.InvalidIssuerError,
                jwt.InvalidIssuedAtError,
                InvalidSubjectError,
                InvalidJTIError,
            ):
                raise AuthFailure("bad_claims") from None
            except jwt.InvalidKeyError:
                raise AuthFailure("bad_signature") from None
            except jwt.DecodeError:
                raise AuthFailure("malformed") from None
            except jwt.PyJWTError:
                raise AuthFailure("invalid_token") from None
        raise AuthFailure("bad_signature")


def claim(claims: dict[str, Any], name: str) -> Any:
    """``claims[name]``, or the dotted path ``a.b.c`` through nested objects when no such key exists.

    The literal key wins so namespaced claims (``https://example.com/role``) still work.
    """
    if name in claims or "." not in name:
        return claims.get(name)
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _text_claim(claims: dict[str, Any], name: str) -> str:
    value = claim(claims, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AuthFailure("bad_claims")
    return value


def scopes_claim(value: Any) -> tuple[str, ...]:
    """A ``scope`` claim as a space-separated string or a list of strings (SPEC section 4)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(s, str) and s and " " not in s for s in value):
        return tuple(value)
    raise AuthFailure("bad_claims")


def principal_from_claims(claims: dict[str, Any], mapping: ClaimsMap, source: str, token: str) -> Principal:
    user_id = claim(claims, mapping.user_id)
    if not isinstance(user_id, str) or not user_id:
        raise AuthFailure("bad_claims")
    return Principal(
        user_id=user_id,
        role=_text_claim(claims, mapping.role),
        app_key=_text_claim(claims, mapping.app_key),
        plan=_text_claim(claims, mapping.plan),
        scopes=scopes_claim(claim(claims, mapping.scopes)),
        source=source,
        token_fingerprint=fingerprint(token),
    )


@dataclass(frozen=True, slots=True, eq=False)
class _Verdict:
    expires: float  # monotonic
    principal: Principal
    key_set: KeySet | None  # the JWKS key set that verified the token; None for HS tokens


class JwtVerifier:
    """``auth.jwt``: platform JWTs, including the ones minted by ``POST /api/v1/auth/login``.

    Verdicts are cached for at most ``CACHE_SECONDS``, never past the token's ``exp`` (plus
    leeway), and for JWKS tokens never past ``JwksCache.valid_until`` of the key set that
    verified them nor once that set has been replaced by a fetch.
    """

    def __init__(self, config: JWTConfig, metrics: Metrics) -> None:
        self.config = config
        self.jwks: JwksCache | None = None
        if config.jwks_url:
            self.jwks = JwksCache(
                config.jwks_url,
                config.jwks_cache_ttl,
                config.jwks_min_refetch,
                metrics,
                max_stale=config.jwks_max_stale,
            )
        issuers = (config.issuer,) if config.issuer else None
        if config.secret and len(config.secret.encode()) < 32:
            log.warning("auth.jwt.secret is shorter than 32 bytes; use a longer random secret")
        self.decoder = JwtDecoder(
            algorithms=config.algorithms,
            secret=config.secret,
            jwks=self.jwks,
            issuers=issuers,
            # Whoever holds the secret can sign any issuer, so accepting our own login tokens'
            # issuer for HS tokens adds no power; it lets minted tokens work with `issuer` set.
            hs_issuers=None if issuers is None else (*issuers, FASTGW_ISSUER),
            audience=config.audience,
            leeway=config.leeway,
        )
        self._cache: OrderedDict[str, _Verdict] = OrderedDict()

    def take_over(self, previous: JwtVerifier) -> None:
        """Reload: keep the JWKS key set when ``jwks_url`` is unchanged, and the verdicts when
        the whole ``auth.jwt`` config is (any other change may change what a token proves)."""
        if self.jwks is not None and previous.jwks is not None:
            self.jwks.take_over(previous.jwks)
        if previous.config == self.config:
            self._cache = OrderedDict(previous._cache)

    def cached(self, token: str) -> Principal | None:
        """The principal of a token verified moments ago (still within its verdict), else None."""
        hit = self._cache.get(token)
        if hit is None:
            return None
        if hit.expires > time.monotonic() and (
            hit.key_set is None or (self.jwks is not None and hit.key_set is self.jwks.key_set)
        ):
            self._cache.move_to_end(token)
            return hit.principal
        del self._cache[token]
        return None

    async def verify(self, token: str) -> Principal:
        """The token's principal, checked (``checked_principal``), or ``AuthFailure``."""
        hit = self.cached(token)
        if hit is not None:
            return hit
        claims, key_set = await self.decoder.decode_with_key_set(token)
        principal = checked_principal(principal_from_claims(claims, self.config.claims, "jwt", token))
        now = time.monotonic()
        expires = now + min(CACHE_SECONDS, float(claims["exp"]) + self.config.leeway - time.time())
        if key_set is not None and self.jwks is not None:
            expires = min(expires, self.jwks.valid_until(key_set))
        if expires > now:
            self._cache[token] = _Verdict(expires, principal, key_set)
            if len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return principal


__all__ = [
    "ASYMMETRIC",
    "FASTGW_ISSUER",
    "JwkKey",
    "JwksCache",
    "JwtDecoder",
    "JwtVerifier",
    "KeySet",
    "claim",
    "parse_jwks",
    "parse_key_set",
    "principal_from_claims",
    "scopes_claim",
]
