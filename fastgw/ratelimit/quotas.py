"""Per-plan request quotas per UTC calendar day or month, counted in this process.

Without Redis each worker process counts on its own, so with N workers (or N instances) a
caller can get up to N times the allowance; with ``redis`` set the counters live there and this
class is only the fallback while Redis is unreachable (SPEC 7).

Counters of a period are dropped together when it ends. Only authenticated callers with a
plan are counted, so the number of counters is bounded by the user base; ``max_users`` still
caps it per period (the oldest counter goes first and restarts from zero if its user returns).
"""

from __future__ import annotations

import calendar
import datetime
import math

from ..config import QuotaConfig

_DAY = 86400


def period_bounds(per: str, now: float) -> tuple[int, int]:
    """(start, end) in unix seconds of the UTC day or month containing ``now``."""
    if per == "day":
        start = math.floor(now / _DAY) * _DAY
        return start, start + _DAY
    today = datetime.datetime.fromtimestamp(math.floor(now), datetime.UTC)
    first = datetime.datetime(today.year, today.month, 1, tzinfo=datetime.UTC)
    days = calendar.monthrange(today.year, today.month)[1]
    start = int(first.timestamp())
    return start, start + days * _DAY


class _Period:
    __slots__ = ("start", "end", "counts")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.counts: dict[str, int] = {}


class LocalQuotas:
    def __init__(self, quotas: dict[str, QuotaConfig], max_users: int = 1_000_000) -> None:
        self.quotas = quotas
        self.max_users = max_users
        self._periods: dict[str, _Period] = {}

    def take(self, user_id: str, quota: QuotaConfig, now: float) -> tuple[bool, int, int]:
        """Count one request of ``user_id`` at wall-clock ``now`` unless over its allowance.

        Returns (allowed, requests counted this period, unix time the period ends); a refused
        request is not counted.
        """
        per = quota.per
        period = self._periods.get(per)
        if period is None or not period.start <= now < period.end:
            period = self._periods[per] = _Period(*period_bounds(per, now))
        counts = period.counts
        used = counts.get(user_id, 0)
        if used >= quota.requests:
            return False, used, period.end
        if used == 0 and len(counts) >= self.max_users:
            del counts[next(iter(counts))]
        counts[user_id] = used + 1
        return True, used + 1, period.end
