"""One client request, from its head to the last byte of its response.

``Exchange`` is the client connection's ``RequestDelegate``. It routes the request, runs the
route's compiled pipeline (``fastgw.pipeline``), answers locally when a filter or the router
says so, and otherwise hands over to the terminal step, ``proxy.UpstreamCall``, which streams
both ways. Built-in endpoints are answered here too.

Contract: every exchange ends exactly once in ``complete`` (the pipeline's ``on_complete``
hooks: metrics, usage, access log), whichever way it ends: a local reply, a relayed response,
an upstream failure, or the client going away. Once a response has started, a failure closes
the client connection: never a second status line.

Per-request state lives in attributes whose defaults are class attributes: a request sets only
what its route uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

from .access_log import utc_timestamp
from .auth.principal import Principal
from .builtin import Endpoint
from .builtin.dispatch import admit_builtin, run_builtin
from .errors import LocalReply, encode, error_body
from .forwarding import client_ip, request_id_from, without_token_param
from .http1.connection import ClientConnection
from .http1.headers import Headers
from .http1.interfaces import ClientContext
from .inflight import InflightCounter
from .jobs import submit_job
from .llm import UsageSniffer
from .pipeline import Pipeline, run_body_hooks, run_request_hooks
from .proxy import UpstreamCall
from .routing import PathError, normalize_path, rewrite_path
from .speedups import RequestHead
from .sse import SseKeepalive
from .static_route import redirect_location, serve_static
from .tracing import gateway_span
from .upstream.pool import Upstream
from .websocket import WebSocketTunnel, handshake_problem, wants_upgrade

if TYPE_CHECKING:
    from .gateway import Gateway, Route

log = logging.getLogger("fastgw")

_JSON = "application/json"
_RETRY_SOON = (("Retry-After", "1"),)
_HEALTH = "/health"


class Exchange:
    """One request on a client connection."""

    # Defaults (class attributes): most requests never set most of these.
    method = "-"
    path = "-"
    query = ""  # as the client sent it (the access log drops its token parameter)
    forward_path = ""
    forward_query = ""
    request_id = ""
    trace_id = ""
    traceparent = ""
    http10 = False
    headers = Headers()
    content_length = -1
    has_body = False
    route: Route | None = None
    route_label = "unmatched"
    upstream: Upstream | None = None
    principal: Principal | None = None
    user_id: str | None = None
    limit_headers: tuple[tuple[str, str], ...] = ()
    buffer: bytearray | None = None
    endpoint: Endpoint | None = None
    endpoint_params: dict[str, str] = {}  # noqa: RUF012 - never mutated
    call: UpstreamCall | None = None
    websocket = False
    tunnel: WebSocketTunnel | None = None
    sniffer: UsageSniffer | None = None
    keepalive: SseKeepalive | None = None
    model: str | None = None
    tail_start = 0  # where the path below a wildcard route's literal prefix starts
    cache_state: Any = None  # filters/cache.py's view of this exchange
    upstream_headers: list[tuple[bytes, bytes]] = []  # the upstream's response head, as it came
    input_tokens = 0
    output_tokens = 0
    pending: tuple[int, bytes, tuple[tuple[str, str], ...], bool] | None = None
    body_received = 0
    request_done = False
    response_started = False
    response_complete = False
    status = 0
    bytes_sent = 0
    done = False
    elapsed = 0.0
    task: asyncio.Task[None] | None = None

    def __init__(
        self, gateway: Gateway, conn: ClientConnection, context: ClientContext, inflight: InflightCounter
    ) -> None:
        self.gw = gateway
        self.conn = conn
        self.context = context
        self.inflight = inflight
        self.client_ip = context.remote_ip
        self.body_limit = gateway.body_limit
        self.pipeline: Pipeline = gateway.local_pipeline
        self.started = time.perf_counter()

    # -- RequestDelegate ------------------------------------------------------------------------

    def headers_received(self, head: RequestHead, headers: Headers) -> Awaitable[None] | None:
        """Route, then run the route's request hooks; the awaitable (if any) precedes the body."""
        self.started = time.perf_counter()
        inflight = self.inflight
        inflight.count += 1
        gw = self.gw
        gw.metrics.inflight.inc()
        self.method = head.method
        self.http10 = head.version == 10
        self.headers = headers
        self.request_id = request_id_from(headers.get("X-Request-Id"))
        self.trace_id, self.traceparent = gateway_span(headers.get("traceparent"))
        self.content_length = head.content_length
        self.has_body = head.chunked or head.content_length > 0
        if gw.trusted_proxies:
            self.client_ip = client_ip(self.client_ip, headers.get("X-Forwarded-For"), gw.trusted_proxies)
        try:
            if inflight.limit and inflight.count > inflight.limit:
                raise LocalReply("SERVICE_UNAVAILABLE", "Too many requests in flight", headers=_RETRY_SOON)
            return self._route(head)
        except LocalReply as reply:
            self.answer_error(reply)
        except Exception:
            log.exception("request %s failed before reaching an upstream", self.request_id)
            self.answer_error(LocalReply("INTERNAL_ERROR", "Internal error", close=True))
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.done or self.pending is not None:
            return None
        self.body_received += len(chunk)
        if self.body_received > self.body_limit:
            self.fail(LocalReply("PAYLOAD_TOO_LARGE", "Request body too large"))
            return None
        if self.buffer is not None:
            self.buffer += chunk
            return None
        call = self.call
        return call.send_body(chunk) if call is not None else None

    def finish(self) -> None:
        self.request_done = True
        if self.done:
            return
        if self.pending is not None:
            self.respond(*self.pending)
        elif self.endpoint is not None:
            self._spawn(run_builtin(self))
        elif self.buffer is not None:
            self._forward_buffered()
        elif self.call is not None:
            self.call.request_ended()

    def on_connection_close(self) -> None:
        self._client_gone()

    def body_timed_out(self) -> None:
        """The client stopped sending its body for ``server.body_timeout`` (SPEC 13.8)."""
        self.fail(LocalReply("REQUEST_TIMEOUT", "Request body timed out", close=True))

    def wants_body(self) -> bool:
        """Whether a ``100 Continue`` makes sense: nothing has refused the request yet."""
        return not self.done and self.pending is None

    # -- routing --------------------------------------------------------------------------------

    def _route(self, head: RequestHead) -> Awaitable[None] | None:
        raw_path, _, self.query = head.target.partition("?")
        self.path = raw_path
        if not raw_path.startswith("/"):
            raise LocalReply("VALIDATION_ERROR", "Request target must be an absolute path", close=True)
        try:
            self.path = path = normalize_path(raw_path)
        except PathError:
            raise LocalReply("VALIDATION_ERROR", "Invalid request path", close=True) from None
        method = self.method
        if path == _HEALTH and method in ("GET", "HEAD"):
            self.route_label = _HEALTH
            self._answer(200, encode({"status": "ok", "timestamp": utc_timestamp()}))
            return None
        gw = self.gw
        endpoint, params, allowed = gw.builtins.match(method, path)
        if endpoint is not None:
            self.route_label = endpoint.pattern
            if self.content_length > gw.body_limit:
                raise LocalReply("PAYLOAD_TOO_LARGE", "Request body too large")
            return admit_builtin(self, endpoint, params)
        if allowed is not None:
            raise LocalReply(
                "METHOD_NOT_ALLOWED", "Method not allowed", headers=(("Allow", ", ".join(allowed)),)
            )
        route_id, _params, tail_start = gw.table.match(method, path)
        if route_id < 0:
            if route_id == -2:
                allow = ", ".join(gw.table.allowed(path))
                raise LocalReply("METHOD_NOT_ALLOWED", "Method not allowed", headers=(("Allow", allow),))
            raise LocalReply("NOT_FOUND", "No route matches this path")
        route = self.route = gw.routes[route_id]
        self.route_label = route.pattern
        self.pipeline = route.pipeline
        rc = route.config
        if rc.llm is not None and method != "POST":
            raise LocalReply("METHOD_NOT_ALLOWED", "Method not allowed", headers=(("Allow", "POST"),))
        self.body_limit = route.body_limit
        if self.content_length > route.body_limit:
            raise LocalReply("PAYLOAD_TOO_LARGE", "Request body too large")
        self.tail_start = tail_start
        if route.upstream is None and route.site is None and rc.redirect is None:
            raise LocalReply("NOT_FOUND", "No route matches this path")
        if rc.websocket and wants_upgrade(self.headers):
            problem = handshake_problem(method, "HTTP/1.0" if self.http10 else "HTTP/1.1", self.headers)
            if problem is not None:
                raise LocalReply("VALIDATION_ERROR", problem, close=True)
            self.websocket = True
        self.upstream = route.upstream
        self.forward_path = (
            rewrite_path(path, tail_start, route.rewrite) if route.rewrite is not None else path
        )
        self.forward_query = without_token_param(self.query) if rc.query_token else self.query
        pending = run_request_hooks(route.pipeline.request, self)
        if pending is not None:
            return self._await_request_hooks(pending)
        return self._after_request_hooks()

    async def _await_request_hooks(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except LocalReply as reply:
            self.answer_error(reply)
            return
        except Exception:
            log.exception("request %s failed while being admitted", self.request_id)
            self.answer_error(LocalReply("INTERNAL_ERROR", "Internal error"))
            return
        work = self._after_request_hooks()
        if work is not None:
            await work

    def _after_request_hooks(self) -> Awaitable[None] | None:
        if self.done or self.pending is not None:  # answered by a filter (a cache hit)
            return None
        route = self.route
        assert route is not None
        if route.site is not None:
            self._spawn(serve_static(self, route.site, self.path[self.tail_start :]))
            return None
        redirect = route.config.redirect
        if redirect is not None:
            location = redirect_location(redirect, self.path[self.tail_start :], self.query)
            self._answer(redirect.status, b"", (("Location", location), ("Content-Length", "0")))
            return None
        if route.buffered:
            # Routes that sign, verify or rewrite the body need all of it: collect it, up to
            # the body limit, and forward in finish().
            self.buffer = bytearray()
            return None
        return self._open(None)

    def set_principal(self, principal: Principal) -> None:
        self.principal = principal
        self.user_id = principal.user_id

    # -- forwarding -----------------------------------------------------------------------------

    def _open(self, body: bytes | None) -> Awaitable[None] | None:
        assert self.upstream is not None and self.route is not None
        call = self.call = UpstreamCall(self, self.upstream, self.route.read_timeout)
        return call.open(body)

    def _forward_buffered(self) -> None:
        """Run the body hooks over the whole body, then forward it (or queue it, ``async``).

        Hooks that answer at once run here, and a pooled connection takes the request here:
        a task is spawned only for what waits (an awaitable hook, a connect, a job queue).
        """
        try:
            body = run_body_hooks(self.pipeline.body, self, bytes(self.buffer or b""))
        except LocalReply as reply:
            self.respond_error(reply)
            return
        if isinstance(body, bytes):
            self._forward_body(body)
        else:
            self._spawn(self._forward_when_ready(body))

    async def _forward_when_ready(self, pending: Awaitable[bytes]) -> None:
        try:
            body = await pending
        except LocalReply as reply:
            self.respond_error(reply)
            return
        if not self.done:  # the client may have gone away while a hook waited
            self._forward_body(body)

    def _forward_body(self, body: bytes) -> None:
        assert self.route is not None
        if self.route.config.async_:
            self._spawn(submit_job(self, body))
            return
        pending = self._open(body)
        if pending is not None:
            self._spawn(_awaited(pending))

    # -- answering ------------------------------------------------------------------------------

    def _answer(
        self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = (), close: bool = False
    ) -> None:
        """Answer before the request body was read.

        With a body still on the wire, answer now and close (we will not read what we refused);
        without one, answer in ``finish``, so the connection stays reusable.
        """
        if close or self.has_body:
            self.respond(status, body, headers, True)
        else:
            self.pending = (status, body, headers, False)

    def answer_cached(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...]) -> None:
        """Answer from the response cache (from a request hook): no upstream is opened."""
        self._answer(status, body, headers)

    def answer_error(self, reply: LocalReply) -> None:
        """``_answer`` with the error envelope of ``reply``."""
        self._answer(
            reply.status, error_body(reply.code, reply.message, self.request_id), reply.headers, reply.close
        )

    def respond_error(self, reply: LocalReply, close: bool = False) -> None:
        self.respond(
            reply.status, error_body(reply.code, reply.message, self.request_id), reply.headers, close
        )

    def respond(
        self, status: int, body: bytes, extra: tuple[tuple[str, str], ...], close: bool = False
    ) -> None:
        """Write a whole answer of the gateway's own, in one send, and complete the exchange."""
        if self.done:
            return
        self.pending = None
        if status == 204:
            headers = [("X-Request-Id", self.request_id)]
        else:
            headers = [
                ("Content-Type", _JSON),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", self.request_id),
            ]
        if self.traceparent:
            headers.append(("traceparent", self.traceparent))
        if self.limit_headers:
            headers.extend(self.limit_headers)
        if extra:
            names = {name.lower() for name, _ in extra}
            headers = [(n, v) for n, v in headers if n.lower() not in names]
            headers.extend(extra)
        self.status = status
        self.response_started = True
        self.response_complete = True
        self.bytes_sent = len(body)
        self.conn.respond(status, headers, body, close)
        self.complete()

    def fail(self, reply: LocalReply) -> None:
        """A local error after the request head was accepted (upstream failure, body limit)."""
        call = self.call
        if call is not None:
            call.drop()
        if self.response_started:
            self.abort_client()
        else:
            self.respond_error(reply, close=not self.request_done)

    def write_ping(self, data: bytes) -> None:
        if not self.done:
            self.conn.write(data)
            self.bytes_sent += len(data)

    def abort_client(self) -> None:
        """Cut the client connection mid-response: an incomplete body, never a new status line."""
        call = self.call
        if call is not None:
            call.drop()
        self.conn.close()
        self.complete()

    def _client_gone(self) -> None:
        if self.done:
            return
        if not self.response_started or self.conn.send_timed_out:
            # Nothing answered, or the client left the answer unread past send_timeout: the
            # response did not reach it (an upstream paused for it is not blamed).
            self.status = 499
        self.abort_client()

    def complete(self) -> None:
        if self.done:
            return
        self.done = True
        self.inflight.count -= 1
        self.gw.metrics.inflight.dec()
        self.elapsed = time.perf_counter() - self.started
        for flt in self.pipeline.complete:
            flt.on_complete(self)
        # The call refers back to this exchange: without this cycle, reference counting frees
        # both at once, and the garbage collector never has to find them.
        self.call = None

    # -- internals ------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # A task spawned from one (``_finish_body_hooks`` then a connect) replaces it here.
        """Run ``work`` as this exchange's task: kept referenced, and never left without an answer."""
        self.task = asyncio.ensure_future(work)
        self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("request %s failed", self.request_id, exc_info=task.exception())
        if not self.done:
            self.fail(LocalReply("INTERNAL_ERROR", "Internal error"))


async def _awaited(pending: Awaitable[None]) -> None:
    await pending
