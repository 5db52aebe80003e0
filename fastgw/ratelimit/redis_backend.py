"""Buckets, quota counters and seen-markers in Redis, so every gateway process shares one state.

Each check is one EVALSHA of a Lua script (loaded once; loaded again and retried once on
NOSCRIPT, after a Redis restart or SCRIPT FLUSH), which Redis runs atomically: no other
client's check interleaves, so N processes allow exactly what one would. The scripts read the
clock with Redis ``TIME``, never the caller's, so instances with skewed clocks still agree,
and every key carries a TTL so idle buckets and past quota periods vanish on their own.

Failure policy (SPEC 7, HARDENING E-14/E-15): every call is bounded by socket timeouts and no
retries. A failed call (refused, timed out, ``OOM``, ``READONLY``, ...) counts
``fastgw_ratelimit_backend_errors_total`` and opens a circuit: until a background probe
reaches Redis again, checks go straight to the in-process buckets (fail open to local) without
touching the network, and the outage is logged once when it starts, at most once per
``log_every`` while it lasts, and once when it ends.

The client is created on first use, inside the running event loop of the worker process that
uses it: a connection must never be shared across a fork.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import urllib.parse
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ..metrics import Metrics

log = logging.getLogger("fastgw.ratelimit")

# Mirrors BucketTable.take (fastgw/_speedups_py.py) step for step, with the same epsilon, for
# several buckets at once. All or nothing: the request takes a token from every bucket only
# when each has one, so a refused request costs nothing anywhere.
#
# KEYS: one hash per bucket {t = tokens, l = last refill time}.
# ARGV: per bucket, tokens per second, seconds per token, burst (as repr() floats).
# Returns {allowed, then per bucket: allowed, remaining, retry_after, reset} as integers.
BUCKETS_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local EPS = 1e-6
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local tokens, last = {}, {}
local ok = true
for i = 1, n do
  local a = (i - 1) * 3
  local per_second, burst = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3])
  local s = redis.call('HMGET', KEYS[i], 't', 'l')
  local tk, lt = burst, now
  if s[1] and s[2] then
    tk, lt = tonumber(s[1]), tonumber(s[2])
    local elapsed = now - lt
    if elapsed > 0 then
      tk = tk + elapsed * per_second
      if tk > burst then tk = burst end
      lt = now
    end
  end
  tokens[i], last[i] = tk, lt
  if tk < 1 - EPS then ok = false end
end
local out = {ok and 1 or 0}
for i = 1, n do
  local a = (i - 1) * 3
  local spt, burst = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local tk = tokens[i]
  local allowed, retry = 0, 0
  if tk >= 1 - EPS then
    allowed = 1
    if ok then
      tk = tk - 1
      if tk < 0 then tk = 0 end
    end
  else
    retry = math.ceil((1 - tk) * spt - EPS)
    if retry < 1 then retry = 1 end
  end
  local reset = math.ceil((burst - tk) * spt - EPS)
  if reset < 0 then reset = 0 end
  if ok then
    redis.call('HSET', KEYS[i], 't', string.format('%.17g', tk), 'l', string.format('%.17g', last[i]))
    -- Once full again the bucket equals a missing one: let it go then.
    redis.call('EXPIRE', KEYS[i], math.ceil((burst - tk) * spt) + 1)
  end
  out[#out + 1] = allowed
  out[#out + 1] = math.floor(tk + EPS)
  out[#out + 1] = retry
  out[#out + 1] = reset
end
return out
"""

# Days since 1970-01-01 <-> proleptic Gregorian date (H. Hinnant's civil_from_days and
# days_from_civil); Redis' Lua has no os.date.
CALENDAR_LUA = """
local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function period_end(per, now)
  local day = math.floor(now / 86400)
  if per == 'day' then return (day + 1) * 86400 end
  local y, m = civil_from_days(day)
  m = m + 1
  if m > 12 then m, y = 1, y + 1 end
  return days_from_civil(y, m, 1) * 86400
end
"""

# KEYS[1]: the caller's counter for the current period kind. ARGV: allowance, 'day' | 'month'.
# The counter expires exactly when the UTC period ends (EXPIREAT, checked by Redis on every
# access), so a new period starts from zero with no reset job. A refused request is not counted.
# Returns {allowed, count, period end (unix seconds), now (unix seconds)}.
QUOTA_LUA = (
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    + CALENDAR_LUA
    + """
local now = tonumber(redis.call('TIME')[1])
local reset_at = period_end(ARGV[2], now)
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then return {0, used, reset_at, now} end
used = redis.call('INCR', KEYS[1])
redis.call('EXPIREAT', KEYS[1], reset_at)
return {1, used, reset_at, now}
"""
)

# KEYS[1]: a marker, ARGV[1]: its lifetime in ms. SET NX PX: {1} if it was not set (first use,
# now set), {0} if it was. Used for webhook replay protection (SPEC 13.7).
SEEN_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return {1} end
return {0}
"""

_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def describe_url(url: str) -> str:
    """``redis://host:port/db`` for logs: never the password a URL may carry."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


_BUCKETS, _QUOTA, _SEEN = 0, 1, 2
_SCRIPTS = (BUCKETS_LUA, QUOTA_LUA, SEEN_LUA)
_SHAS = tuple(hashlib.sha1(script.encode()).hexdigest() for script in _SCRIPTS)

# (script, keys, args)
_Call = tuple[int, list[str], tuple[Any, ...]]


class RedisBackend:
    """One worker's Redis client for the limiter, behind a circuit breaker.

    Checks that arrive while a round trip is under way are queued and sent together as one
    pipeline of EVALSHAs (each still its own atomic script): under load a worker makes one
    round trip per batch instead of one per request, and needs a single connection, so a burst
    of requests never queues for pooled connections or opens hundreds of them at once.

    ``timeout`` bounds connecting, each read and waiting for a pooled connection; checks in
    flight when Redis disappears wait at most about that long before falling back.
    """

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        timeout: float = 0.25,
        max_batch: int = 256,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
        log_every: float = 60.0,
    ) -> None:
        self.url = url
        self.where = describe_url(url)
        self.timeout = timeout
        self.max_batch = max_batch
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.log_every = log_every
        self._errors = metrics.ratelimit_backend_errors
        self._redis: Redis | None = None
        self._queue: list[tuple[_Call, asyncio.Future[list[int] | None]]] = []
        self._busy = False  # a round trip is under way: new calls queue
        self._sender: asyncio.Task[None] | None = None
        self._open = False  # circuit open: Redis is skipped until the probe succeeds
        self._probe: asyncio.Task[None] | None = None
        self._last_log = 0.0
        self._closed = False

    @property
    def available(self) -> bool:
        """False while the circuit is open (or after close): use the local buckets."""
        return not self._open

    def _client(self) -> Redis:
        client = self._redis
        if client is None:
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=4,  # the sender, the probe, and spares while one reconnects
                timeout=self.timeout,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                # redis-py retries (with backoff) by default: a limiter must answer now or fall back.
                retry=Retry(NoBackoff(), 0),
            )
            client = self._redis = Redis(connection_pool=pool)
        return client

    async def take_buckets(self, keys: list[str], args: tuple[bytes, ...]) -> list[int] | None:
        """The bucket script's reply, or None when Redis failed (the caller decides locally)."""
        return await self._call((_BUCKETS, keys, args))

    async def take_quota(self, key: str, requests: int, per: str) -> list[int] | None:
        """The quota script's reply [allowed, count, period end, now], or None on failure."""
        return await self._call((_QUOTA, [key], (requests, per)))

    async def first_use(self, key: str, ttl_ms: int) -> bool | None:
        """Mark ``key`` used for ``ttl_ms`` (>= 1): True if it was not marked yet, False if it
        was, None when Redis failed or the circuit is open (the caller decides locally)."""
        if self._open:
            return None
        reply = await self._call((_SEEN, [key], (max(1, ttl_ms),)))
        return None if reply is None else bool(reply[0])

    async def _call(self, call: _Call) -> list[int] | None:
        """Send ``call`` now if the connection is idle, else queue it for the next batch.

        The first caller makes its own round trip (no task, no hop through the loop); calls
        arriving meanwhile queue up, and a sender task then drains them in pipelines.
        """
        if self._busy:
            future: asyncio.Future[list[int] | None] = asyncio.get_running_loop().create_future()
            self._queue.append((call, future))
            return await future
        self._busy = True
        try:
            (reply,) = await self._round_trip([call])
        finally:
            self._after_round_trip()
        return reply

    def _after_round_trip(self) -> None:
        if self._queue and not self._open:
            self._sender = asyncio.get_running_loop().create_task(self._drain())
            return
        self._busy = False
        self._answer_queue()

    async def _drain(self) -> None:
        try:
            while self._queue and not self._open:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    replies = await self._round_trip([call for call, _ in batch])
                except BaseException:
                    self._queue[:0] = batch  # answered below
                    raise
                for (_, future), reply in zip(batch, replies, strict=True):
                    if not future.done():
                        future.set_result(reply)
        finally:
            self._sender = None
            self._busy = False
            self._answer_queue()

    def _answer_queue(self) -> None:
        """Whatever is still queued (the circuit opened, or closing) is decided locally."""
        queue, self._queue = self._queue, []
        for _, future in queue:
            if not future.done():
                future.set_result(None)

    async def _round_trip(self, calls: list[_Call]) -> list[list[int] | None]:
        """Replies to ``calls`` in one round trip; None for each call that failed."""
        client = self._client()
        try:
            replies = await self._pipeline(client, calls)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                # Redis restarted or SCRIPT FLUSH: load the scripts and run those calls once more.
                for script in _SCRIPTS:
                    await client.script_load(script)
                again = await self._pipeline(client, [calls[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except Exception as exc:  # whatever breaks (a timeout, a reset, a bug), fall back to local
            self._failed(exc)
            return [None] * len(calls)
        failure: BaseException | None = None
        for i, reply in enumerate(replies):
            if isinstance(reply, BaseException):  # OOM, READONLY, a script error: this call only
                failure, replies[i] = reply, None
        if failure is not None:
            self._failed(failure)
        return replies

    @staticmethod
    async def _pipeline(client: Redis, calls: list[_Call]) -> list[Any]:
        """One round trip for all ``calls``; a failed call's reply is its ResponseError."""
        if len(calls) == 1:  # a plain command costs redis-py about half of a pipeline of one
            script, keys, args = calls[0]
            command = ("EVALSHA", _SHAS[script], len(keys), *keys, *args)
            try:
                return [await client.execute_command(*command)]  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                return [exc]
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.execute_command("EVALSHA", _SHAS[script], len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    def _failed(self, exc: BaseException) -> None:
        self._errors.inc()
        if self._open or self._closed:
            return
        self._open = True
        self._last_log = time.monotonic()
        log.warning(
            "rate limits: redis at %s failed (%s); limiting in this process until it is back",
            self.where,
            _reason(exc),
        )
        self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Probe Redis in the background, backing off, and close the circuit once it answers.

        The probe loads both scripts: it proves Redis accepts scripts (a replica that lost its
        master still answers PING) and saves the first batch the NOSCRIPT round trip.
        """
        client = self._client()
        delay = self.backoff
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                for script in _SCRIPTS:
                    await client.script_load(script)
            except _ERRORS as exc:
                self._errors.inc()
                delay = min(delay * 2, self.max_backoff)
                now = time.monotonic()
                if now - self._last_log >= self.log_every:
                    self._last_log = now
                    log.warning("rate limits: redis at %s still failing (%s)", self.where, _reason(exc))
                continue
            self._open = False
            log.warning("rate limits: redis at %s is back; limits are shared again", self.where)
            return

    async def close(self) -> None:
        self._closed = True
        self._open = True
        for task in (self._probe, self._sender):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._probe = self._sender = None
        self._answer_queue()
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()
            await client.connection_pool.disconnect()


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


def bucket_args(per_second: float, seconds_per_token: float, burst: float) -> tuple[bytes, bytes, bytes]:
    """One policy's ARGV triple; repr() so Lua parses back the exact doubles."""
    return (repr(per_second).encode(), repr(seconds_per_token).encode(), repr(float(burst)).encode())


def parse_reply(reply: list[Any]) -> list[tuple[bool, int, int, int]]:
    """Per-bucket (allowed, remaining, retry_after, reset) from the bucket script's flat reply."""
    return [
        (bool(reply[i]), int(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3]))
        for i in range(1, len(reply), 4)
    ]
