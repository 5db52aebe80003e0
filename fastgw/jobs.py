"""``async: true`` routes: answer 202 at once, make the upstream call in the background.

The client gets a request id and polls ``/requests/{id}/status`` and ``/result``; the job's
state and the upstream's response live in the store (see ``store/jobs.py``), so any worker
process can answer the polls. Concurrency is bounded per worker: a burst of submissions
queues instead of opening a connection each.

Jobs still running when the process stops are left as they were (``queued``/``running``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .upstream.fetch import FetchFailed, fetch
from .upstream.pool import Target, Upstream

if TYPE_CHECKING:
    from .store.jobs import JobStore

log = logging.getLogger("fastgw")

DEFAULT_CONCURRENCY = 32


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

    async def submit(self, owner: str, route: str, call: PreparedCall) -> str:
        """Record a queued job (durably) and start it; returns its request id."""
        request_id = str(uuid.uuid4())
        await self.jobs.create(request_id, owner, route)
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
