"""``async: true`` routes: answer 202 at once, make the upstream call in the background.

The client gets a request id and polls ``/requests/{id}/status`` and ``/result``; the job's
state and the upstream's response live in the store (see ``store/jobs.py``), so any worker
process can answer the polls. Concurrency is bounded per worker: a burst of submissions
queues instead of opening a connection each.

Many instances may share the store (SPEC 13.2). Each runner is one instance: it claims the
jobs it runs (``set_running`` succeeds once per job), says every ``HEARTBEAT_INTERVAL`` that it
is alive, and on the same beat fails the unfinished jobs of any instance silent for
``INSTANCE_LEASE`` (a crashed replica, a killed worker, the previous run of this process) and
deletes jobs finished more than ``jobs.retention`` ago. The request body of a job lives only in
the memory of the instance that accepted it, so a lost job is failed, not run again.

A job's owner is the credential kind plus the user id of its creator (``store.jobs.owner_key``):
a static token for ``alice`` and a JWT whose subject is ``alice`` are different callers. The
kinds are ``static``, ``jwt``, ``session``, ``cert`` and ``token``; an API token is ``token``
whoever minted it, since the token store keeps only its owner's user id, not the kind of
credential that created it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import LocalReply, ok_body
from .proxy import UpstreamCall
from .store import StoreError
from .store.jobs import owner_key
from .upstream.fetch import FetchFailed, fetch
from .upstream.pool import Target, Upstream

if TYPE_CHECKING:
    from .auth.principal import Principal
    from .exchange import Exchange
    from .store.jobs import JobStore, Response

log = logging.getLogger("fastgw")

DEFAULT_CONCURRENCY = 16  # jobs.workers
DEFAULT_RETENTION = 7 * 86400.0  # jobs.retention
HEARTBEAT_INTERVAL = 2.0
INSTANCE_LEASE = 10.0  # an instance silent this long is dead; its unfinished jobs fail
FINISH_RETRY_INTERVAL = 1.0  # a job's outcome is retried this often while the store is down
FINISH_PATIENCE = 60.0  # ... for this long


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
    """The jobs of one instance, and its share of the housekeeping (module docstring)."""

    def __init__(
        self, jobs: JobStore, concurrency: int = DEFAULT_CONCURRENCY, retention: float = DEFAULT_RETENTION
    ) -> None:
        self.jobs = jobs
        self.retention = retention
        self.instance = uuid.uuid4().hex
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._housekeeping: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin the heartbeat, recovery and retention (needs a running event loop)."""
        if self._housekeeping is None:
            self._housekeeping = asyncio.ensure_future(self._keep_house())

    def close(self) -> None:
        """Stop the housekeeping; running jobs go on until the process stops."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None

    async def _keep_house(self) -> None:
        failing = False
        while True:
            try:
                now = time.time()
                await self.jobs.heartbeat(self.instance, now)
                lost = await self.jobs.recover(self.instance, now, INSTANCE_LEASE)
                if lost:
                    log.warning("async jobs: %d jobs of a stopped instance marked failed", lost)
                await self.jobs.prune(now - self.retention)
                if failing:
                    log.info("async jobs: the store answers again")
                failing = False
            except StoreError as exc:
                if not failing:
                    log.warning("async jobs: housekeeping paused: %s", exc)
                failing = True
            except Exception:
                log.exception("async jobs: housekeeping failed")
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def submit(self, owner: Principal | str | None, route: str, call: PreparedCall) -> str:
        """Record a queued job (durably) and start it; returns its request id.

        ``owner`` is the creating principal (None: anonymous). A ``str`` is stored as given
        and read as a pre-kind owner (a bare user id matches that user of any credential
        kind): callers pass the principal.
        """
        request_id = str(uuid.uuid4())
        stored = owner if isinstance(owner, str) else job_owner(owner)
        await self.jobs.create(request_id, stored, route, self.instance)
        task = asyncio.ensure_future(self._run(request_id, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return request_id

    async def _run(self, request_id: str, call: PreparedCall) -> None:
        async with self._slots:
            try:
                if not await self.jobs.set_running(request_id, self.instance):
                    return  # failed meanwhile (this instance was thought dead): never run twice
            except StoreError as exc:
                log.error("async job %s could not start: %s", request_id, exc)
                await self._finish(request_id, "failed", None, "store unavailable")
                return
            try:
                response = await fetch(call.upstream, call.build_head, call.body, call.read_timeout)
            except FetchFailed as failure:
                await self._finish(request_id, "failed", None, failure.reason)
                return
            except Exception:
                log.exception("async job %s could not be completed", request_id)
                await self._finish(request_id, "failed", None, "internal error")
                return
            status = "failed" if response.status >= 500 else "succeeded"
            await self._finish(request_id, status, (response.status, response.headers, response.body), None)

    async def _finish(self, request_id: str, status: str, result: Response | None, error: str | None) -> None:
        """Record a job's end. While the store is down this is retried every
        ``FINISH_RETRY_INTERVAL`` for up to ``FINISH_PATIENCE``; then the outcome is logged as
        lost (the job stays ``running`` in the store). Never raises."""
        give_up = time.monotonic() + FINISH_PATIENCE
        warned = False
        while True:
            try:
                await self.jobs.finish(request_id, status, result, error)
                if warned:
                    log.info("async job %s: its outcome is recorded after all", request_id)
                return
            except StoreError as exc:
                if time.monotonic() >= give_up:
                    log.error("async job %s: its outcome (%s) is lost: %s", request_id, status, exc)
                    return
                if not warned:
                    log.warning("async job %s: cannot record its outcome yet, retrying: %s", request_id, exc)
                    warned = True
            except Exception:
                log.exception("async job %s: cannot record its outcome", request_id)
                return
            await asyncio.sleep(FINISH_RETRY_INTERVAL)


async def submit_job(ex: Exchange, body: bytes) -> None:
    """``async: true``: queue the upstream call and answer 202 with where to look for it."""
    upstream, route = ex.upstream, ex.route
    assert upstream is not None and route is not None
    call = UpstreamCall(ex, upstream, route.read_timeout)

    def build_head(target: Target) -> bytes:
        # Built when the job runs, so a signed request carries a fresh timestamp.
        return call.build_head(target, body)

    job = PreparedCall(upstream, build_head, body, route.read_timeout)
    owner = ex.principal
    try:
        job_id = await ex.gw.jobs.submit(owner, route.pattern, job)
    except StoreError as exc:  # the store is down: say so, no stack trace
        log.error("request %s: cannot queue the async job: %s", ex.request_id, exc)
        ex.respond_error(LocalReply("SERVICE_UNAVAILABLE", "Cannot queue the request"))
        return
    except Exception:
        log.exception("request %s: cannot queue the async job", ex.request_id)
        ex.respond_error(LocalReply("SERVICE_UNAVAILABLE", "Cannot queue the request"))
        return
    data = {
        "requestId": job_id,
        "status": "queued",
        "statusUrl": f"/requests/{job_id}/status",
        "resultUrl": f"/requests/{job_id}/result",
    }
    ex.respond(202, ok_body(data), ())
