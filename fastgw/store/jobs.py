"""Async invoke jobs (``async: true`` routes, SPEC section 8): state and kept upstream response.

Why the shape:

- Every state change is awaited on the writer thread (``Store.write``), unlike usage rows and
  audit entries: the client is handed the request id as soon as ``create`` returns and may poll
  any worker process at once, so the row must already be committed. Later changes are awaited
  too, so a poll never sees an older state than the one the runner just moved past.
- Transitions are conditional updates (``WHERE status IN ('queued', 'running')``): a terminal
  job never changes again, whoever writes (a late progress report from the backend, a second
  ``finish``), and the caller learns from the return value whether anything changed.
- Timestamps are ISO 8601 UTC text, like the rest of the store: they sort as text and read well
  in ``sqlite3``.
- Many instances share the jobs (SPEC 13.2). A job records the instance (process) that runs
  it, every instance records when it was last alive (``heartbeat``), and any instance fails the
  unfinished jobs of one that stopped (``recover``): a job is never left ``running`` forever.
  ``set_running`` is a conditional update, so a job is claimed, and run, once.
- The owner is ``<kind>|<user id>`` (``owner_key``), '' for an anonymous caller. Rows written
  before owners carried their credential kind hold a bare user id; identity values never
  contain ``|`` (SPEC 4), so the two forms cannot be confused and the old rows stay readable,
  by that user id whatever the kind (``JobRecord.owned_by``), without a schema change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..access_log import utc_timestamp
from .db import Connection
from .threads import Store
from .usage import iso_utc

QUEUED = "queued"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TERMINAL = frozenset({SUCCEEDED, FAILED})

Response = tuple[int, list[tuple[str, str]], bytes]

_COLUMNS = (
    "request_id, owner, route, status, progress, response_status, response_headers, response_body,"
    " error, created_at, updated_at"
)
_UNFINISHED = f"status IN ('{QUEUED}', '{RUNNING}')"

OWNER_SEPARATOR = "|"
INSTANCE_LOST = "the gateway instance running this job stopped before it finished"
PRUNE_BATCH = 1000


def owner_key(kind: str, user_id: str) -> str:
    """The stored owner of a job created by ``user_id`` with a credential of ``kind``.

    ValueError when either part is empty or contains ``|``, which the gateway's identities
    never do.
    """
    if not kind or not user_id or OWNER_SEPARATOR in kind or OWNER_SEPARATOR in user_id:
        raise ValueError("an owner is a non-empty kind and user id without '|'")
    return f"{kind}{OWNER_SEPARATOR}{user_id}"


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as stored; ``response_*`` are None until a response was kept."""

    request_id: str
    owner: str  # owner_key(kind, user id) of the creator ('' anonymous; a bare user id if older)
    route: str
    status: str  # queued | running | succeeded | failed
    progress: int | None
    response_status: int | None
    response_headers: list[tuple[str, str]] | None  # in the upstream's order, duplicates kept
    response_body: bytes | None
    error: str | None
    created_at: str
    updated_at: str

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def owned_by(self, owner: str, user_id: str) -> bool:
        """Whether the caller with owner key ``owner`` (``owner_key``) and ``user_id`` made it.

        False for an anonymous job (owner ''), which has no owner to match. A row from before
        owners carried a kind (a bare user id) matches that user id, whatever the kind.
        """
        if OWNER_SEPARATOR in self.owner:
            return self.owner == owner
        return bool(self.owner) and self.owner == user_id


def _headers(raw: str | None) -> list[tuple[str, str]] | None:
    if raw is None:
        return None
    try:
        pairs = msgspec.json.decode(raw, type=list[tuple[str, str]])
    except msgspec.DecodeError:
        return []  # written by something else: keep the job readable
    return pairs


def _record(row: tuple[Any, ...]) -> JobRecord:
    (request_id, owner, route, status, progress, response_status, headers, body, error, created, updated) = (
        row
    )
    return JobRecord(
        request_id=request_id,
        owner=owner,
        route=route,
        status=status,
        progress=progress,
        response_status=response_status,
        response_headers=_headers(headers),
        response_body=None if body is None else bytes(body),
        error=error,
        created_at=created,
        updated_at=updated,
    )


def get(conn: Connection, request_id: str) -> JobRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE request_id = ?", (request_id,)).fetchone()
    return None if row is None else _record(row)


class JobStore:
    """The jobs of every process sharing the store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, request_id: str, owner: str, route: str, instance: str = "") -> None:
        """Record a queued job held by ``instance``; committed when this returns (StoreError for
        a duplicate id)."""
        now = utc_timestamp()

        def insert(conn: Connection) -> None:
            conn.execute(
                f"INSERT INTO jobs ({_COLUMNS}, instance)"
                " VALUES (?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, ?, ?, ?)",
                (request_id, owner, route, QUEUED, now, now, instance),
            )

        await self.store.write(insert)

    async def set_running(self, request_id: str, instance: str = "") -> bool:
        """queued -> running on ``instance``: the claim; False when the job is unknown or not
        queued (someone else claimed it, or it was failed meanwhile)."""
        return await self._update(
            "UPDATE jobs SET status = ?, instance = ?, updated_at = ? WHERE request_id = ? AND status = ?",
            (RUNNING, instance, utc_timestamp(), request_id, QUEUED),
        )

    async def heartbeat(self, instance: str, now: float) -> None:
        """Record that ``instance`` is alive at ``now`` (unix seconds)."""
        await self.store.write(
            lambda conn: conn.execute(
                "INSERT INTO instances (id, seen_at) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                (instance, now),
            )
        )

    async def recover(self, instance: str, now: float, lease: float) -> int:
        """Fail the unfinished jobs of instances not seen for ``lease`` seconds; how many.

        A job is failed only if it has not changed for ``lease`` either, so a job created by an
        instance a moment before its first heartbeat is safe. ``instance`` (the caller) is
        alive by definition. Rows of instances gone for a day are forgotten.
        """
        cutoff = now - lease
        quiet_since = iso_utc(cutoff)

        def fail(conn: Connection) -> int:
            changed = conn.execute(
                f"UPDATE jobs SET status = ?, error = ?, updated_at = ? WHERE {_UNFINISHED}"
                " AND instance != ? AND updated_at < ?"
                " AND instance NOT IN (SELECT id FROM instances WHERE seen_at >= ?)",
                (FAILED, INSTANCE_LOST, utc_timestamp(), instance, quiet_since, cutoff),
            ).rowcount
            conn.execute("DELETE FROM instances WHERE seen_at < ?", (now - 86400,))
            return int(changed)

        return await self.store.write(fail)

    async def prune(self, finished_before: float, batch: int = PRUNE_BATCH) -> int:
        """Delete (at most ``batch``) jobs that finished before ``finished_before``; how many."""
        sql = (
            "DELETE FROM jobs WHERE request_id IN (SELECT request_id FROM jobs"
            f" WHERE status IN ('{SUCCEEDED}', '{FAILED}') AND updated_at < ? LIMIT ?)"
        )
        params = (iso_utc(finished_before), batch)
        return await self.store.write(lambda conn: int(conn.execute(sql, params).rowcount))

    async def set_progress(self, request_id: str, progress: int) -> bool:
        """Record the backend's progress (0-100); False when the job is unknown or terminal."""
        if isinstance(progress, bool) or not isinstance(progress, int) or not 0 <= progress <= 100:
            raise ValueError("progress must be an integer from 0 to 100")
        return await self._update(
            f"UPDATE jobs SET progress = ?, updated_at = ? WHERE request_id = ? AND {_UNFINISHED}",
            (progress, utc_timestamp(), request_id),
        )

    async def finish(
        self, request_id: str, status: str, response: Response | None, error: str | None
    ) -> bool:
        """Move an unfinished job to ``succeeded`` or ``failed``, keeping ``response`` if any.

        A succeeded job's progress becomes 100. False when the job is unknown or already
        terminal (it is then left as it was).
        """
        if status not in TERMINAL:
            raise ValueError(f"a job finishes as {SUCCEEDED!r} or {FAILED!r}, not {status!r}")
        response_status: int | None = None
        headers: str | None = None
        body: bytes | None = None
        if response is not None:
            response_status, header_list, body = response[0], response[1], bytes(response[2])
            headers = msgspec.json.encode([[name, value] for name, value in header_list]).decode()
        progress = "100" if status == SUCCEEDED else "progress"
        return await self._update(
            f"UPDATE jobs SET status = ?, progress = {progress}, response_status = ?,"
            " response_headers = ?, response_body = ?, error = ?, updated_at = ?"
            f" WHERE request_id = ? AND {_UNFINISHED}",
            (status, response_status, headers, body, error, utc_timestamp(), request_id),
        )

    async def get(self, request_id: str) -> JobRecord | None:
        return await self.store.read(lambda conn: get(conn, request_id))

    async def _update(self, sql: str, params: tuple[Any, ...]) -> bool:
        return await self.store.write(lambda conn: conn.execute(sql, params).rowcount == 1)
