"""``/requests/{id}/status``, ``/result`` and ``/progress``: async invoke jobs (SPEC 5, 8).

Who may see a job: the caller who created it, i.e. a principal with the job's owner, which is
the credential kind plus the user id (``jobs.job_owner``: a static token for ``alice`` is not
the JWT subject ``alice``); a job created anonymously (owner '') by whoever holds its id, which
is a random UUID. A request without any credential is 401 for every other id, whether it
exists or not. A caller with credentials gets, for someone else's job, the same 404 as for an
id that never existed, never a 403: answering differently would tell a prober which ids are
real.

Progress reports come from the backend doing the work, not from a user. They carry a
version-2 signature (SPEC 6) over ``POST /requests/<id>/progress`` with either the context of
their own, ``progress|<id>`` (``signing.sign_progress``), or the SPEC's empty context ``2||||``.
The gateway never mints the latter for such a path (``filters.sign``), so a signature it put on
a forwarded request cannot be replayed here. Only the three ``X-Gateway-*`` headers are taken
from the request for the check, so identity headers a caller adds cannot change the context
being verified. The ``2||||`` check covers the normalised path the endpoint matched (always
exactly ``/requests/<segment>/progress``) plus the raw query; ``progress|<id>`` is checked over
that path alone.

A progress report for a job that already finished is answered 200 with the job's current state
and changes nothing: the backend's report raced with its own response, which is not the
backend's error, and the finished state must not move.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from ..errors import LocalReply
from ..forwarding import HOP_BY_HOP
from ..jobs import job_owner
from ..signing import SIGNATURE, SIGNING_VERSION, TIMESTAMP, verify, verify_progress
from ..store.jobs import JobRecord
from . import BuiltinEndpoints, BuiltinRequest, BuiltinResponse, ok

if TYPE_CHECKING:
    from ..gateway import Gateway

MAX_ID_LENGTH = 128  # request ids are UUIDs; anything longer cannot exist


def _not_found() -> LocalReply:
    return LocalReply("NOT_FOUND", "No such request")


async def _load(request: BuiltinRequest, request_id: str) -> JobRecord | None:
    if len(request_id) > MAX_ID_LENGTH:
        return None
    return await request.gateway.jobs_store.get(request_id)


async def _callers_job(request: BuiltinRequest) -> JobRecord:
    """The job named in the path if the caller may see it (see the module docstring).

    Anonymous jobs for anyone; otherwise 401 without a credential, 404 for another owner.
    """
    principal = await request.authenticate(required=False)
    job = await _load(request, request.params["id"])
    if job is not None and not job.owner:
        return job
    if principal is None:
        request.gateway.metrics.auth_failures.labels("missing").inc()
        raise LocalReply("UNAUTHORIZED", "Authentication required")
    if job is None or not job.owned_by(job_owner(principal), principal.user_id):
        raise _not_found()
    return job


def response_headers(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Upstream headers as one object: hop-by-hop ones dropped, repeated names joined with ", ".

    The first spelling of a name is kept; names compare case-insensitively, as in HTTP.
    """
    nominated = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }
    spelled: dict[str, str] = {}
    out: dict[str, str] = {}
    for name, value in pairs:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in nominated:
            continue
        first = spelled.setdefault(lname, name)
        out[first] = f"{out[first]}, {value}" if first in out else value
    return out


def response_view(job: JobRecord) -> dict[str, Any] | None:
    """The kept upstream response in the wire shape of ``result``; None when there is none."""
    if job.response_status is None:
        return None
    raw = job.response_body or b""
    text: str | None
    encoded: str | None = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
        encoded = base64.b64encode(raw).decode("ascii")
    return {
        "status": job.response_status,
        "headers": response_headers(job.response_headers or []),
        "body": text,
        "bodyBase64": encoded,
    }


async def job_status(request: BuiltinRequest) -> BuiltinResponse:
    job = await _callers_job(request)
    return ok(
        {
            "requestId": job.request_id,
            "status": job.status,
            "progress": job.progress,
            "createdAt": job.created_at,
            "updatedAt": job.updated_at,
        }
    )


async def job_result(request: BuiltinRequest) -> BuiltinResponse:
    job = await _callers_job(request)
    if not job.terminal:
        raise LocalReply("NOT_READY", f"The request is {job.status}")
    return ok(
        {
            "requestId": job.request_id,
            "status": job.status,
            "response": response_view(job),
            "error": job.error,
        }
    )


def _signed(request: BuiltinRequest) -> bool:
    """A valid backend signature: context ``progress|<id>``, or the SPEC's ``2||||``."""
    signing = request.gateway.config.signing
    if signing is None or not signing.secret:
        return False
    headers = {
        name: value
        for name in (TIMESTAMP, SIGNING_VERSION, SIGNATURE)
        if (value := request.headers.get(name))
    }
    skew = signing.max_skew
    if verify_progress(signing.secret, request.params["id"], headers, request.body, max_skew=skew):
        return True
    path_and_query = f"{request.path}?{request.query}" if request.query else request.path
    return verify(signing.secret, "POST", path_and_query, headers, request.body, max_skew=skew)


def _progress_value(request: BuiltinRequest) -> int:
    body = request.json()
    value = body.get("progress") if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise LocalReply("VALIDATION_ERROR", "progress must be an integer from 0 to 100")
    return value


async def job_progress(request: BuiltinRequest) -> BuiltinResponse:
    if not _signed(request):
        request.gateway.metrics.auth_failures.labels("bad_signature").inc()
        raise LocalReply("UNAUTHORIZED", "Invalid or missing signature")
    progress = _progress_value(request)
    request_id = request.params["id"]
    jobs = request.gateway.jobs_store
    if len(request_id) > MAX_ID_LENGTH:
        raise _not_found()
    await jobs.set_progress(request_id, progress)  # False for a finished job: it stays as is
    job = await jobs.get(request_id)
    if job is None:
        raise _not_found()
    return ok({"requestId": job.request_id, "status": job.status, "progress": job.progress})


def register(endpoints: BuiltinEndpoints, gateway: Gateway) -> None:
    endpoints.add("GET", "/requests/{id}/status", job_status)
    endpoints.add("GET", "/requests/{id}/result", job_result)
    endpoints.add("POST", "/requests/{id}/progress", job_progress)
