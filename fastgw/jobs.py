"""``async: true`` routes: answer 202 at once, make the upstream call in the background.

The client gets a request id and polls ``/requests/{id}/status`` and ``/result``; the job's
state and the upstream's response live in the store (see ``store/jobs.py``), so any worker
process can answer the polls. Concurrency is bounded per worker: a burst of submissions
queues instead of opening a connection each.

Jobs still running when the process stops are left as they were (``queued``/``running``).

A job's owner is the credential kind plus the user id of its creator (``store.jobs.owner_key``):
a static token for ``alice`` and a JWT whose subject is ``alice`` are different callers. The
kinds are ``static``, ``jwt``, ``session``, ``cert`` and ``token``; an API token is ``token``
whoever minted it, since the token store keeps only its owner's user id, not the kind of
credential that created it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .store.jobs import owner_key
from .upstream.fetch import FetchFailed, fetch
from .upstream.pool import Target, Upstream

if TYPE_CHECKING:
    from .auth.principal import Principal
    from .store.jobs import JobStore

log = logging.getLogger("fastgw")

DEFAULT_CONCURRENCY = 32


# Principal.source -> the kind recorded in a job's owner; other sources are recorded as is.
_OWNER_KINDS = {"api_token": "token"}


def job_owner(principal: Principal | None) -> str:
    """The owner to record for a job created by ``principal``: '' for an anonymous caller,
    else ``owner_key(kind, user_id)`` with the kind of its credential (module docstring)."""
    if principal is None:
        return ""
    return owner_key(_OWNER_KINDS.get(principal.source, principal.source), principal.user_id)


@dataclass(frozen=True, slots=True)
class PreparedCall:
    """Everything needed to make the upstream request later, on another task."""

    upstream: Upstream
    build_head: Callable[[Target], bytes]
    body: bytes
    read_timeout: float


class JobRunner:
    def __init__(self, jobs: JobStore, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.jobs = jobs
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, owner: Principal | str | None, route: str, call: PreparedCall) -> str:
        """Record a queued job (durably) and start it; returns its request id.

        ``owner`` is the creating principal (None: anonymous). A ``str`` is stored as given
        and read as a pre-kind owner (a bare user id matches that user of any credential
        kind): callers pass the principal.
        """
        request_id = str(uuid.uuid4())
        stored = owner if isinstance(owner, str) else job_owner(owner)
        await self.jobs.create(request_id, stored, route)
        task = asyncio.ensure_future(self._run(request_id, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return request_id

    async def _run(self, request_id: str, call: PreparedCall) -> None:
        async with self._slots:
            try:
                await self.jobs.set_running(request_id)
                try:
                    response = await fetch(call.upstream, call.build_head, call.body, call.read_timeout)
                except FetchFailed as failure:
                    await self.jobs.finish(request_id, "failed", None, failure.reason)
                    return
                status = "failed" if response.status >= 500 else "succeeded"
                await self.jobs.finish(
                    request_id, status, (response.status, response.headers, response.body), None
                )
            except Exception:
                log.exception("async job %s could not be completed", request_id)
                try:
                    await self.jobs.finish(request_id, "failed", None, "internal error")
                except Exception:
                    log.exception("async job %s: cannot record the failure", request_id)
