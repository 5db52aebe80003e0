"""API tokens (``fgw_...``): minted by the gateway, stored only as SHA-256, acting as their owner.

Lookup is by the hash of the presented token, so the secret itself is never compared byte by
byte (a timing difference could only reveal a prefix of a hash) and unknown and revoked tokens
take the same path.

Revocation must reach every worker process within 1 s (SPEC section 5) while a hot token costs
no SQLite round trip per request. Each revocation bumps a counter in the store
(``store_meta``, same transaction as the revoked row). A worker re-reads that counter at most
every ``CHECK_INTERVAL`` seconds, on the request path and shared by concurrent requests (no
background task, so an idle worker cannot be stale either); when it changed, the whole lookup
cache is dropped. A request is therefore served from a stale cache only within
``CHECK_INTERVAL`` of a revocation.

A reload on the same store and prefix keeps the cache together with the revocation counter it
was checked against and the time of that check (``take_over``), so the rule above still holds
across it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..access_log import utc_timestamp
from ..errors import LocalReply
from ..metrics import Metrics
from ..store import Connection, IntegrityError, Store, StoreError
from ..store import tokens as token_rows
from ..store.tokens import TokenRecord
from .authenticator import AuthFailure, checked_principal
from .principal import Principal

TOKEN_BODY = re.compile(r"[A-Za-z0-9_-]{32,128}")
TOKEN_ID = re.compile(r"tok_[0-9a-f]{12}")
_SCOPE = re.compile(r"[!-{}~]{1,128}")  # printable ASCII without space or '|' (SPEC section 4)
_IDENTITY = re.compile(r"[ -{}~]{0,256}")
MAX_NAME = 100
MAX_SCOPES = 64

CHECK_INTERVAL = 0.25  # seconds between revocation-counter reads, per worker
POSITIVE_TTL = 300.0
NEGATIVE_TTL = 5.0
CACHE_ENTRIES = 10_000
LAST_USED_EVERY = 10.0  # seconds: last_used_at is written at most this often per token and worker


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    """``prefix`` + 43 url-safe characters (256 random bits)."""
    return prefix + secrets.token_urlsafe(32)


def check_name(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("name must be a string")
    if len(value) > MAX_NAME or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"name must be at most {MAX_NAME} printable characters")
    return value


def check_scopes(values: object) -> tuple[str, ...]:
    if not isinstance(values, list) or len(values) > MAX_SCOPES:
        raise ValueError(f"scopes must be a list of at most {MAX_SCOPES} strings")
    for value in values:
        if not isinstance(value, str) or not _SCOPE.fullmatch(value):
            raise ValueError("each scope must be printable ASCII without spaces or '|'")
    return tuple(dict.fromkeys(values))


def check_identity(value: str, what: str) -> str:
    if not _IDENTITY.fullmatch(value):
        raise ValueError(f"{what} must be printable ASCII without '|'")
    return value


@dataclass(frozen=True, slots=True)
class IssuedToken:
    record: TokenRecord
    token: str  # the plaintext: returned to its creator once, never stored or logged

    def shown_once(self) -> dict[str, Any]:
        """``{"id","token","name","scopes","createdAt"}`` (SPEC sections 1 and 5)."""
        record = self.record
        return {
            "id": record.id,
            "token": self.token,
            "name": record.name,
            "scopes": list(record.scopes),
            "createdAt": record.created_at,
        }


def issue(
    conn: Connection,
    prefix: str,
    *,
    name: str,
    user_id: str,
    role: str,
    plan: str,
    app_key: str,
    scopes: Iterable[str],
) -> IssuedToken:
    """Create a token for this owner (run in a transaction)."""
    for _ in range(3):  # an id collision (48 random bits) is retried, not reported
        token = new_token(prefix)
        record = TokenRecord(
            id=f"tok_{secrets.token_hex(6)}",
            name=name,
            user_id=user_id,
            role=role,
            plan=plan,
            app_key=app_key,
            scopes=tuple(scopes),
            created_at=utc_timestamp(),
            last_used_at=None,
            revoked_at=None,
        )
        try:
            token_rows.insert(conn, record, hash_token(token))
        except (sqlite3.IntegrityError, IntegrityError):
            continue
        return IssuedToken(record, token)
    raise StoreError("could not allocate a unique token id")


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    principal: Principal | None
    reason: str  # why a negative entry refuses: invalid_token | revoked


class ApiTokenVerifier:
    """A ``TokenVerifier`` for ``fgw_`` tokens (see the module docstring for caching)."""

    def __init__(self, store: Store, prefix: str, metrics: Metrics) -> None:
        self.store = store
        self.prefix = prefix
        self.metrics = metrics
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self._revision: int | None = None
        self._checked_at = -1e9
        self._check: asyncio.Future[None] | None = None
        self._generation = 0  # bumped whenever the cache is dropped
        self._touched: dict[str, float] = {}

    def take_over(self, previous: ApiTokenVerifier) -> None:
        """Reload: copy ``previous``'s lookups when it reads the same store with the same prefix.

        The copy carries the revision it was validated against and when, so the next revocation
        check comes when it would have anyway; lookups still running on ``previous`` fill only
        its own cache (never this one, whose drops they could not see).
        """
        if previous.store is not self.store or previous.prefix != self.prefix:
            return
        self._cache = OrderedDict(previous._cache)
        self._revision = previous._revision
        self._checked_at = previous._checked_at
        self._touched = dict(previous._touched)

    def cached(self, token: str) -> Principal | None:
        """The principal of a token found moments ago, when no revocation check is due; else
        None (``verify`` then gives the answer, waiting for the store if it must)."""
        if time.monotonic() - self._checked_at >= CHECK_INTERVAL:
            return None
        digest = hash_token(token)
        entry = self._cache.get(digest)
        if entry is None or entry.principal is None or entry.expires <= time.monotonic():
            return None
        self._cache.move_to_end(digest)
        self._touch(entry.principal)
        return entry.principal

    async def verify(self, token: str) -> Principal:
        """The token's principal, checked (``checked_principal``), or ``AuthFailure``."""
        if not TOKEN_BODY.fullmatch(token[len(self.prefix) :]):
            raise AuthFailure("invalid_token")
        try:
            await self._fresh()
        except StoreError:
            # The revocation counter cannot be read: the store is down. Verdicts cached within
            # their lifetime still hold (nobody can revoke through a store that is down); any
            # other token gets 503 below.
            pass
        try:
            digest = hash_token(token)
            entry = self._cache.get(digest)
            if entry is not None and entry.expires > time.monotonic():
                self._cache.move_to_end(digest)
            else:
                entry = await self._lookup(digest)
        except StoreError:
            self.metrics.auth_failures.labels("store_unavailable").inc()
            raise LocalReply("SERVICE_UNAVAILABLE", "Token store unavailable") from None
        principal = entry.principal
        if principal is None:
            raise AuthFailure(entry.reason)
        self._touch(principal)
        return principal

    def recheck(self) -> None:
        """Read the revocation counter before serving the next token (after a local revocation)."""
        self._checked_at = -1e9

    async def _fresh(self) -> None:
        """Drop the cache if any token was revoked since the last check (read at most every 0.25 s)."""
        if time.monotonic() - self._checked_at < CHECK_INTERVAL:
            return
        if self._check is None:
            self._check = asyncio.ensure_future(self._read_revision(time.monotonic()))
        await asyncio.shield(self._check)

    async def _read_revision(self, started: float) -> None:
        try:
            try:
                revision = await self.store.read(token_rows.revision)
            except StoreError:
                self._checked_at = started  # a store that is down is asked again in a moment
                raise
            if revision != self._revision:
                self._cache.clear()
                self._generation += 1
                self._revision = revision
            # The start time, not now: a revocation committed while the read ran may be missed.
            self._checked_at = started
        finally:
            self._check = None

    async def _lookup(self, digest: str) -> _Entry:
        future = self._inflight.get(digest)
        if future is None:
            future = asyncio.ensure_future(self._load(digest))
            self._inflight[digest] = future
            future.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return await asyncio.shield(future)

    async def _load(self, digest: str) -> _Entry:
        generation = self._generation
        found = await self.store.read(lambda conn: token_rows.find_by_hash(conn, digest))
        now = time.monotonic()
        if found is None or not hmac.compare_digest(found[1], digest):
            entry = _Entry(now + NEGATIVE_TTL, None, "invalid_token")
        elif found[0].revoked_at is not None:
            entry = _Entry(now + POSITIVE_TTL, None, "revoked")
        else:
            record = found[0]
            principal = Principal(
                user_id=record.user_id,
                role=record.role,
                app_key=record.app_key,
                plan=record.plan,
                scopes=record.scopes,
                source="api_token",
                token_id=record.id,
                token_fingerprint=digest[:32],  # = fingerprint(token)
            )
            try:
                entry = _Entry(now + POSITIVE_TTL, checked_principal(principal), "")
            except AuthFailure as failure:
                entry = _Entry(now + NEGATIVE_TTL, None, failure.reason)
        # A revocation seen while this read ran has already dropped the cache: do not refill it
        # with what may be the row from before.
        if generation == self._generation:
            self._cache[digest] = entry
            if len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return entry

    def _touch(self, principal: Principal) -> None:
        """Queue a ``last_used_at`` update, at most once per ``LAST_USED_EVERY`` per token."""
        token_id = principal.token_id
        assert token_id is not None
        now = time.monotonic()
        if now - self._touched.get(token_id, -1e9) < LAST_USED_EVERY:
            return
        if len(self._touched) > CACHE_ENTRIES:
            self._touched.clear()
        self._touched[token_id] = now
        used_at = utc_timestamp()
        self.store.enqueue(token_rows.TOUCH_SQL, (used_at, token_id, used_at))


__all__ = ["ApiTokenVerifier", "IssuedToken", "hash_token", "issue", "new_token"]
