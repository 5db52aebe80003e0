"""One client request, from its head to the last byte of its response.

``Exchange`` is Tornado's ``HTTPMessageDelegate`` for the client side and the upstream
connection's ``ResponseSink`` for the other. Bodies stream both ways: request chunks are written
upstream as Tornado hands them over (awaiting the upstream socket when it is full), response
chunks are written to the client as they arrive (pausing the upstream socket while the client
is slow). Nothing is buffered whole.

Contract: every exchange ends exactly once in ``_complete`` (access log, metrics), whichever way
it ends: a local reply, a relayed response, an upstream failure, or the client going away.
Once a response has started, a failure closes the client connection: never a second status line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from .access_log import AccessRecord, utc_timestamp
from .auth.principal import Principal
from .body_rewrite import namespace_request, transform_body
from .builtin import BuiltinRequest, Endpoint
from .connection import linger_close
from .errors import LocalReply, encode, error_body, ok_body
from .forwarding import (
    client_ip,
    client_response_headers,
    connection_tokens,
    is_trusted,
    request_id_from,
    upstream_request_head,
    without_token_param,
)
from .jobs import PreparedCall
from .llm import UsageSniffer, prepare_openai_body
from .routing import PathError, normalize_path, rewrite_path
from .signing import sign
from .sse import SseKeepalive
from .store import StoreError
from .store.usage import UsageRecord
from .upstream.client import UpstreamConnection
from .upstream.pool import ConnectFailed, PoolExhausted, Target, Upstream
from .webhook import verify_webhook
from .websocket import (
    MessageWindow,
    WebSocketTunnel,
    handshake_problem,
    switching_protocols,
    wants_upgrade,
)

if TYPE_CHECKING:
    from .gateway import Gateway, Route

log = logging.getLogger("fastgw")

_JSON = "application/json"
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_GATEWAY_PREFIXES = ("x-gateway-",)


class ClientContext:
    """Per-connection facts the server knows before any request is parsed."""

    __slots__ = ("remote_ip", "protocol", "cert_user")

    def __init__(self, remote_ip: str, protocol: str, cert_user: str | None = None) -> None:
        self.remote_ip = remote_ip
        self.protocol = protocol
        self.cert_user = cert_user  # subject CN of a verified TLS client certificate

    def __str__(self) -> str:  # Tornado logs the context when a client sends garbage
        return self.remote_ip


def _ignore_result(future: asyncio.Future[None]) -> None:
    future.exception()  # a closed client is noticed by the exchange itself


def _reason(status: int) -> str:
    # Never relay the upstream's reason phrase: it is free text from another party.
    return _REASONS.get(status, "Unknown")


class InflightCounter:
    """Requests between head and completion, and open tunnels, for the drain on SIGTERM."""

    __slots__ = ("count", "tunnels")

    def __init__(self) -> None:
        self.count = 0
        self.tunnels: set[WebSocketTunnel] = set()


class Exchange(httputil.HTTPMessageDelegate):
    """One request on a client connection.

    Tornado creates the delegate before the request head arrives (an idle keep-alive connection
    has one waiting), so an exchange only counts as in flight from ``headers_received`` on.
    """

    def __init__(
        self, gateway: Gateway, conn: HTTP1Connection, context: ClientContext, inflight: InflightCounter
    ) -> None:
        self.gw = gateway
        self.inflight = inflight
        self.conn = conn
        self.context = context
        self.started = time.perf_counter()
        self.method = "-"
        self.path = "-"
        self.query = ""
        self.request_id = ""
        self.http10 = False
        self.route: Route | None = None
        self.route_label = "unmatched"
        self.upstream: Upstream | None = None
        self.target: Target | None = None
        self.upstream_conn: UpstreamConnection | None = None
        self.upstream_started = 0.0
        self.user_id: str | None = None
        self.principal: Principal | None = None
        self.client_ip = context.remote_ip
        self.limit_headers: tuple[tuple[str, str], ...] = ()
        self.buffer: bytearray | None = None
        self.deferred: tuple[str, str] | None = None
        self.keepalive: SseKeepalive | None = None
        self.sniffer: UsageSniffer | None = None
        self.model: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.head_phase = False
        self.websocket = False
        self.tunnel: WebSocketTunnel | None = None
        self.endpoint: Endpoint | None = None
        self.endpoint_params: dict[str, str] = {}
        self.has_body = False
        self.content_length: int | None = None
        self.reused = False
        self.task: asyncio.Task[None] | None = None
        self.chunked_upstream = False
        self.body_received = 0
        self.body_limit = gateway.body_limit
        self.request_done = False
        self.response_started = False
        self.status = 0
        self.bytes_sent = 0
        self.done = False
        self.pending: tuple[int, bytes, tuple[tuple[str, str], ...], bool] | None = None
        self.head: bytes = b""
        self.timer: asyncio.TimerHandle | None = None
        self.read_timeout = 60.0
        self.last_activity = 0.0

    # -- client side: HTTPMessageDelegate ----------------------------------------------------

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        # While the head phase lasts Tornado has not started on the body, so a refusal may take
        # the stream over for a lingering close (see _respond).
        self.head_phase = True
        work = self._receive_head(start_line, headers)
        if work is None:
            self.head_phase = False
            return None
        return self._end_head_phase(work)

    async def _end_head_phase(self, work: Awaitable[None]) -> None:
        try:
            await work
        finally:
            self.head_phase = False

    def _receive_head(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.started = time.perf_counter()
        self.inflight.count += 1
        self.gw.metrics.inflight.inc()
        self.method = start_line.method
        self.http10 = start_line.version == "HTTP/1.0"
        self.request_id = request_id_from(headers.get("X-Request-Id"))
        self.headers = headers
        if self.gw.trusted_proxies:
            self.client_ip = client_ip(
                self.client_ip, headers.get("X-Forwarded-For"), self.gw.trusted_proxies
            )
        if "Connection" in headers and "close" in connection_tokens(headers):
            # Tornado only honours a Connection header that is exactly "close".
            self.conn._disconnect_on_finish = True
        try:
            self._check_framing(headers)
            raw_path, _, self.query = start_line.path.partition("?")
            self.path = raw_path
            if not raw_path.startswith("/"):
                raise LocalReply("VALIDATION_ERROR", "Request target must be an absolute path", close=True)
            try:
                self.path = path = normalize_path(raw_path)
            except PathError:
                raise LocalReply("VALIDATION_ERROR", "Invalid request path", close=True) from None
            if path == "/health" and self.method in ("GET", "HEAD"):
                self.route_label = "/health"
                self._answer(200, encode({"status": "ok", "timestamp": utc_timestamp()}))
                return None
            gw = self.gw
            endpoint, params, allowed = gw.builtins.match(self.method, path)
            if endpoint is not None:
                self.route_label = endpoint.pattern
                if self.content_length is not None and self.content_length > gw.body_limit:
                    raise LocalReply("PAYLOAD_TOO_LARGE", "Request body too large")
                return self._admit_builtin(endpoint, params)
            if allowed is not None:
                raise LocalReply(
                    "METHOD_NOT_ALLOWED", "Method not allowed", headers=(("Allow", ", ".join(allowed)),)
                )
            route_id, _params, tail_start = gw.table.match(self.method, path)
            if route_id < 0:
                if route_id == -2:
                    allow = ", ".join(gw.table.allowed(path))
                    raise LocalReply("METHOD_NOT_ALLOWED", "Method not allowed", headers=(("Allow", allow),))
                raise LocalReply("NOT_FOUND", "No route matches this path")
            route = self.route = gw.routes[route_id]
            self.route_label = route.pattern
            if route.config.llm is not None and self.method != "POST":
                raise LocalReply("METHOD_NOT_ALLOWED", "Method not allowed", headers=(("Allow", "POST"),))
            self.body_limit = route.body_limit
            if self.content_length is not None and self.content_length > route.body_limit:
                raise LocalReply("PAYLOAD_TOO_LARGE", "Request body too large")
            upstream = route.upstream
            if upstream is None:
                raise LocalReply("NOT_FOUND", "No route matches this path")
            if route.config.websocket and wants_upgrade(headers):
                problem = handshake_problem(self.method, start_line.version, headers)
                if problem is not None:
                    raise LocalReply("VALIDATION_ERROR", problem, close=True)
                self.websocket = True
            self.upstream = upstream
            self.read_timeout = route.read_timeout
            forward_path = path
            if route.rewrite is not None:
                forward_path = rewrite_path(path, tail_start, route.rewrite)
            query = self.query
            if route.config.query_token:
                query = without_token_param(query)
            return self._admit(route, forward_path, query)
        except LocalReply as reply:
            self._answer_error(reply)
            return None
        except Exception:
            log.exception("request %s failed before reaching an upstream", self.request_id)
            self._answer_error(LocalReply("INTERNAL_ERROR", "Internal error", close=True))
            return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.done or self.pending is not None:
            return None
        self.body_received += len(chunk)
        if self.body_received > self.body_limit:
            self._fail_request(LocalReply("PAYLOAD_TOO_LARGE", "Request body too large"))
            return None
        if self.buffer is not None:
            self.buffer += chunk
            return None
        conn = self.upstream_conn
        if conn is None or conn.closed:
            return None
        if self.chunked_upstream:
            conn.write(b"%x\r\n" % len(chunk))
            conn.write(chunk)
            return conn.write(b"\r\n")
        return conn.write(chunk)

    def finish(self) -> None:
        self.request_done = True
        if self.done:
            return
        if self.pending is not None:
            self._respond(*self.pending)
            return
        if self.endpoint is not None:
            self._spawn(self._run_builtin())
            return
        if self.deferred is not None:
            self._spawn(self._forward_buffered())
            return
        conn = self.upstream_conn
        if conn is not None and self.chunked_upstream and not conn.closed:
            conn.write(b"0\r\n\r\n")
        self._arm_timer()

    def on_connection_close(self) -> None:
        # The client went away while we were still reading its request.
        self._client_gone()

    # -- upstream side: ResponseSink -------------------------------------------------------

    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        if self.done:
            return
        if status == 101:
            self._switch_protocols(headers)
            return
        self.last_activity = time.monotonic()
        out, has_length = client_response_headers(headers, self.request_id)
        for name, value in self.limit_headers:
            out[name] = value
        if self.http10 and not has_length:
            # A 1.0 client can only find the end of an unframed body by the connection closing.
            self.conn._disconnect_on_finish = True
        self.status = status
        self.response_started = True
        try:
            self.conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", status, _reason(status)), out)
        except (StreamClosedError, ValueError):
            self._client_gone()
            return
        if self.route is not None and self.route.config.llm is not None and 200 <= status < 300:
            self.sniffer = UsageSniffer(out.get("Content-Type", "").startswith("text/event-stream"))
        keepalive = self.route.config.sse_keepalive if self.route is not None else None
        if keepalive and out.get("Content-Type", "").startswith("text/event-stream"):
            self.keepalive = SseKeepalive(self._write_ping, keepalive)

    def _switch_protocols(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The upstream accepted a WebSocket upgrade: check it, then become a tunnel."""
        conn = self.upstream_conn
        head = None
        if self.websocket and conn is not None:
            head = switching_protocols(headers, self.headers.get("Sec-WebSocket-Key", ""), self.request_id)
        if head is None or conn is None:
            # A 101 we did not ask for, or with the wrong accept: never open a raw tunnel.
            self.on_error("upstream_protocol")
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.status = 101
        self.response_started = True
        ws_limit = self.route.config.ws_rate_limit if self.route is not None else None
        window = MessageWindow(ws_limit.messages, ws_limit.window) if ws_limit is not None else None
        tunnel = WebSocketTunnel(self.conn.detach(), conn, window, self._tunnel_closed)
        conn.hand_over(tunnel)
        self.inflight.tunnels.add(tunnel)
        self.tunnel = tunnel
        self.gw.metrics.websocket_connections.inc()
        tunnel.start(head)

    def _tunnel_closed(self, bytes_to_client: int) -> None:
        self.gw.metrics.websocket_connections.dec()
        if self.tunnel is not None:
            self.inflight.tunnels.discard(self.tunnel)
        conn, self.upstream_conn = self.upstream_conn, None
        if conn is not None and self.upstream is not None and self.target is not None:
            self.upstream.release(self.target, conn, ok=True)
        self.bytes_sent = bytes_to_client
        self._complete()

    def _write_ping(self, data: bytes) -> None:
        if not self.done:
            self.conn.write(data).add_done_callback(_ignore_result)
            self.bytes_sent += len(data)

    def on_data(self, data: bytes) -> bool:
        if self.done:
            return True
        self.last_activity = time.monotonic()
        if self.keepalive is not None:
            self.keepalive.saw(data)
        if self.sniffer is not None:
            self.sniffer.feed(data)
        self.bytes_sent += len(data)
        try:
            future = self.conn.write(data)
        except httputil.HTTPOutputError:
            self._abort_client("upstream_protocol")
            return True
        if future.done():
            if future.exception() is not None:
                self._client_gone()
            return True
        future.add_done_callback(self._client_drained)
        return False

    def on_end(self) -> None:
        if self.done:
            return
        if self.sniffer is not None:
            self._count_llm_usage(self.sniffer)
        conn, self.upstream_conn = self.upstream_conn, None
        if conn is not None and self.upstream is not None and self.target is not None:
            if not self.request_done:
                conn.abort()  # the upstream answered before our request body ended
            self.upstream.release(self.target, conn, ok=True)
            self.gw.metrics.observe_upstream(self.upstream.name, time.monotonic() - self.upstream_started)
        try:
            self.conn.finish()
        except (StreamClosedError, httputil.HTTPOutputError):
            self._abort_client("client_closed")
            return
        self._complete()

    def _count_llm_usage(self, sniffer: UsageSniffer) -> None:
        sniffer.finish()
        model = sniffer.model or "unknown"
        self.model = model
        self.input_tokens, self.output_tokens = sniffer.input_tokens, sniffer.output_tokens
        tokens = self.gw.metrics.llm_tokens
        if sniffer.input_tokens:
            tokens.labels(model, "input").inc(sniffer.input_tokens)
        if sniffer.output_tokens:
            tokens.labels(model, "output").inc(sniffer.output_tokens)

    def on_error(self, reason: str) -> None:
        if self.done:
            return
        conn, self.upstream_conn = self.upstream_conn, None
        upstream, target = self.upstream, self.target
        if conn is not None and upstream is not None and target is not None:
            upstream.release(target, conn, ok=False)
            if (
                self.reused
                and reason == "upstream_reset"
                and not self.response_started
                and not self.has_body
                and self.method in _IDEMPOTENT
            ):
                # A pooled connection the upstream closed as we reused it (a keep-alive race,
                # not a sick target): try once more on a fresh connection.
                self.reused = False
                self._spawn(self._retry_fresh(upstream, target))
                return
            upstream.record_failure(target)
            self.gw.metrics.upstream_error(upstream.name, reason)
        if self.response_started:
            self._abort_client(reason)
        elif reason == "timeout":
            self._fail_request(LocalReply("UPSTREAM_TIMEOUT", "Upstream did not answer in time"))
        else:
            self._fail_request(LocalReply("BAD_GATEWAY", "Upstream connection failed"))

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as this exchange's task: kept referenced, and never left without an answer."""
        self.task = asyncio.ensure_future(work)
        self.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("request %s failed", self.request_id, exc_info=task.exception())
        if not self.done:
            self._fail_request(LocalReply("INTERNAL_ERROR", "Internal error"))

    def _check_framing(self, headers: httputil.HTTPHeaders) -> None:
        """Refuse every ambiguous body framing before Tornado starts reading a body."""
        te = headers.get("Transfer-Encoding")
        cl = headers.get("Content-Length")
        if te is not None:
            if self.http10 or cl is not None or te.strip(" \t").lower() != "chunked":
                raise LocalReply("VALIDATION_ERROR", "Invalid Transfer-Encoding", close=True)
            self.has_body = True
        elif cl is not None:
            # One plain decimal only: duplicates, even equal ones ("5, 5" or two header lines,
            # which Tornado joins with a comma), are refused rather than collapsed, as
            # http-desync-guardian ranks them (Severe).
            value = cl.strip(" \t")
            if not value.isdigit() or not value.isascii() or len(value) > 18:
                raise LocalReply("VALIDATION_ERROR", "Invalid Content-Length", close=True)
            self.content_length = int(value)
            self.has_body = self.content_length > 0

    async def _admit(self, route: Route, forward_path: str, query: str) -> None:
        """Authenticate, authorise and rate-limit, in SPEC section 4's order, then forward."""
        gw = self.gw
        rc = route.config
        try:
            if rc.auth in ("required", "optional"):
                principal = await gw.auth.authenticate(
                    self.headers, self.query, rc.query_token, self.context.cert_user
                )
                if principal is not None:
                    self.principal = principal
                    self.user_id = principal.user_id
                    gw.auth.authorize(rc.roles, rc.scopes, principal)
                elif rc.auth == "required":
                    raise gw.auth.missing()
            self.limit_headers = await gw.limiter.check(
                route.pattern, route.rate_policies, self.principal, self.client_ip, self.headers
            )
            if rc.quota:
                await gw.limiter.check_quota(rc, self.principal)
        except LocalReply as reply:
            if reply.code == "FORBIDDEN" and "admin" in rc.roles and self.principal is not None:
                gw.audit.record(self.principal.user_id, "admin.denied", "route", route.pattern, {})
            self._answer_error(reply)
            return
        except Exception:
            log.exception("request %s failed while being admitted", self.request_id)
            self._answer_error(LocalReply("INTERNAL_ERROR", "Internal error"))
            return
        if rc.namespace is not None and self.principal is None:
            # Per-user isolation without a user would share everyone's data: refuse.
            self._answer_error(LocalReply("UNAUTHORIZED", "Authentication required"))
            return
        if route.buffered:
            # Routes that sign, verify or rewrite the body need all of it: collect it, up to
            # the body limit, and forward in finish().
            self.buffer = bytearray()
            self.deferred = (forward_path, query)
            return
        if rc.namespace is not None and self.principal is not None:
            forward_path, query, _ = namespace_request(
                rc.namespace, self.principal.user_id, forward_path, query, b"", self.headers
            )
        await self._open_upstream(forward_path, query)

    async def _forward_buffered(self) -> None:
        """Check and rewrite the whole body as the route asks, then forward it.

        Order: webhook signature (over the bytes as received), transform, namespace, LLM
        options; the v2 signature is computed last, over what the upstream receives.
        """
        assert self.deferred is not None and self.route is not None
        forward_path, query = self.deferred
        body = bytes(self.buffer or b"")
        rc = self.route.config
        try:
            if rc.auth == "hmac" and rc.hmac is not None and not verify_webhook(rc.hmac, self.headers, body):
                self.gw.metrics.auth_failures.labels("bad_webhook_signature").inc()
                raise LocalReply("UNAUTHORIZED", "Invalid webhook signature")
            content_type = self.headers.get("Content-Type")
            if rc.transform is not None:
                body = transform_body(rc.transform, body, content_type)
            if rc.namespace is not None and self.principal is not None:
                forward_path, query, body = namespace_request(
                    rc.namespace, self.principal.user_id, forward_path, query, body, self.headers
                )
            if rc.llm == "openai":
                body = prepare_openai_body(body)
        except LocalReply as reply:
            self._write_local(reply)
            return
        if rc.async_:
            await self._submit_job(forward_path, query, body)
            return
        await self._open_upstream(forward_path, query, body)

    async def _submit_job(self, forward_path: str, query: str, body: bytes) -> None:
        """``async: true``: queue the upstream call and answer 202 with where to look for it."""
        upstream = self.upstream
        assert upstream is not None and self.route is not None
        framing = f"Content-Length: {len(body)}\r\n" if body or self.has_body else ""

        def build_head(target: Target) -> bytes:
            # Built when the job runs, so a signed request carries a fresh timestamp.
            return self._build_head(target, forward_path, query, body, framing)

        call = PreparedCall(upstream, build_head, body, self.route.read_timeout)
        owner = self.principal.user_id if self.principal is not None else ""
        try:
            job_id = await self.gw.jobs.submit(owner, self.route.pattern, call)
        except Exception:
            log.exception("request %s: cannot queue the async job", self.request_id)
            self._write_local(LocalReply("SERVICE_UNAVAILABLE", "Cannot queue the request"))
            return
        data = {
            "requestId": job_id,
            "status": "queued",
            "statusUrl": f"/requests/{job_id}/status",
            "resultUrl": f"/requests/{job_id}/result",
        }
        self._respond(202, ok_body(data), ())

    async def _admit_builtin(self, endpoint: Endpoint, params: dict[str, str]) -> None:
        """Rate-limit a built-in endpoint, then collect its (small) body for ``finish``."""
        if endpoint.rate_limited:
            try:
                self.limit_headers = await self.gw.limiter.check(
                    endpoint.pattern, self.gw.builtin_rate_policies, None, self.client_ip, self.headers
                )
            except LocalReply as reply:
                self._answer_error(reply)
                return
        self.endpoint = endpoint
        self.endpoint_params = params
        self.buffer = bytearray()

    async def _run_builtin(self) -> None:
        endpoint = self.endpoint
        assert endpoint is not None
        request = BuiltinRequest(
            method=self.method,
            path=self.path,
            query=self.query,
            params=self.endpoint_params,
            headers=self.headers,
            body=bytes(self.buffer or b""),
            client_ip=self.client_ip,
            request_id=self.request_id,
            cert_user=self.context.cert_user,
            gateway=self.gw,
        )
        try:
            response = await endpoint.handler(request)
        except LocalReply as reply:
            self.user_id = request.principal.user_id if request.principal else None
            self._write_local(reply)
            return
        except StoreError as exc:  # the message names no data values
            log.error("built-in endpoint %s: store unavailable: %s", endpoint.pattern, exc)
            self._write_local(LocalReply("SERVICE_UNAVAILABLE", "Store unavailable"))
            return
        except Exception:
            log.exception("built-in endpoint %s failed (request %s)", endpoint.pattern, self.request_id)
            self._write_local(LocalReply("INTERNAL_ERROR", "Internal error"))
            return
        self.user_id = request.principal.user_id if request.principal else None
        self._respond(response.status, response.body, response.headers)

    async def _open_upstream(self, forward_path: str, query: str, body: bytes | None = None) -> None:
        try:
            await self._connect_and_send(forward_path, query, body)
        except Exception:
            log.exception("request %s failed while opening its upstream", self.request_id)
            self._fail_request(LocalReply("INTERNAL_ERROR", "Internal error"))

    async def _connect_and_send(self, forward_path: str, query: str, body: bytes | None) -> None:
        """Pick a target, connect, and send the head (and ``body``, when it was buffered)."""
        upstream = self.upstream
        assert upstream is not None
        target = upstream.pick()
        if target is None:
            self._fail_request(LocalReply("SERVICE_UNAVAILABLE", "No healthy upstream target"))
            return
        self.upstream_started = time.monotonic()
        # A connect failure sent nothing upstream (the body is not read until we are connected),
        # so idempotent requests may try another target.
        attempts = 1 + (upstream.retries if self.method in _IDEMPOTENT else 0)
        conn: UpstreamConnection | None = None
        for attempt in range(attempts):
            try:
                conn, self.reused = await upstream.connect(target)
                break
            except PoolExhausted:
                self.gw.metrics.upstream_error(upstream.name, "pool_exhausted")
                self._fail_request(LocalReply("SERVICE_UNAVAILABLE", "Upstream connection limit reached"))
                return
            except ConnectFailed:
                self.gw.metrics.upstream_error(upstream.name, "connect")
                if attempt + 1 < attempts:
                    next_target = upstream.pick(exclude=target)
                    if next_target is not None:
                        target = next_target
        if self.done:
            if conn is not None:
                upstream.release(target, conn, ok=False)
            return
        if conn is None:
            self._fail_request(LocalReply("BAD_GATEWAY", "Upstream connection failed"))
            return
        self.target = target
        self.upstream_conn = conn
        if body is not None:
            framing = f"Content-Length: {len(body)}\r\n" if body or self.has_body else ""
        elif self.content_length is not None and (
            self.content_length or self.method in ("POST", "PUT", "PATCH")
        ):
            framing = f"Content-Length: {self.content_length}\r\n"
        elif self.has_body:
            framing = "Transfer-Encoding: chunked\r\n"
            self.chunked_upstream = True
        else:
            framing = ""
        self.head = self._build_head(target, forward_path, query, body, framing)
        conn.begin(self, self.head, self.method == "HEAD")
        if body:
            conn.write(body)
        if body is not None or not self.has_body:
            self.request_done = True
            self._arm_timer()

    def _build_head(
        self, target: Target, forward_path: str, query: str, body: bytes | None, framing: str
    ) -> bytes:
        """The upstream request head: client headers cleaned, then the gateway's own added."""
        upstream = self.upstream
        assert upstream is not None
        path = target.base_path + forward_path
        headers = self.headers
        host = headers.get("Host", "")
        remote_ip = self.context.remote_ip
        proto = self.context.protocol
        forwarded_for = remote_ip
        if is_trusted(remote_ip, self.gw.trusted_proxies):
            # Only a proxy we trust may tell us who its client was and how it connected.
            xff = headers.get("X-Forwarded-For")
            if xff:
                forwarded_for = f"{xff}, {remote_ip}"
            proto = headers.get("X-Forwarded-Proto", proto)
            host = headers.get("X-Forwarded-Host", host)
        principal = self.principal
        gw = self.gw
        extra = upstream.extra_headers
        if self.websocket:
            extra = (*extra, ("Upgrade", "websocket"), ("Connection", "Upgrade"))
        target_path = f"{path}?{query}" if query else path
        if self.route is not None and self.route.config.sign and gw.signing_secret is not None:
            extra = (*extra, *self._signature_headers(gw.signing_secret, target_path, body or b""))
        route = self.route
        assert route is not None
        drop = route.drop
        if principal is not None:
            extra = (*extra, *gw.identity_headers(principal))
            if principal.consumed_authorization:
                drop = route.drop_with_authorization
        if route.header_add:
            # Kong's request transformer: `add` only sets a header the client did not send.
            extra = (*extra, *((n, v) for n, v in route.header_add if n not in headers))
        return upstream_request_head(
            self.method,
            target_path,
            headers,
            drop=drop,
            drop_prefixes=_GATEWAY_PREFIXES,
            host=target.host_header,
            forwarded_for=forwarded_for,
            forwarded_proto=proto,
            forwarded_host=host,
            request_id=self.request_id,
            extra=extra,
            framing=framing,
        )

    def _signature_headers(
        self, secret: bytes, path_and_query: str, body: bytes
    ) -> tuple[tuple[str, str], ...]:
        """X-Gateway-* headers of SPEC section 6 for the request exactly as forwarded."""
        p = self.principal
        if p is None:
            headers = sign(secret, self.method, path_and_query, body)
        else:
            headers = sign(
                secret,
                self.method,
                path_and_query,
                body,
                user_id=p.user_id,
                role=p.role,
                app_key=p.app_key,
                plan=p.plan,
            )
        return tuple(headers.items())

    async def _retry_fresh(self, upstream: Upstream, target: Target) -> None:
        try:
            conn, _ = await upstream.connect(target)
        except (ConnectFailed, PoolExhausted):
            self._fail_request(LocalReply("BAD_GATEWAY", "Upstream connection failed"))
            return
        if self.done:
            upstream.release(target, conn, ok=False)
            return
        self.upstream_conn = conn
        conn.begin(self, self.head, self.method == "HEAD")
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self.timer is None and not self.done:
            self.last_activity = time.monotonic()
            self.timer = asyncio.get_running_loop().call_later(self.read_timeout, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.done or self.upstream_conn is None:
            return
        idle = time.monotonic() - self.last_activity
        if idle < self.read_timeout:
            self.timer = asyncio.get_running_loop().call_later(self.read_timeout - idle, self._on_timer)
            return
        self.upstream_conn.detach()
        self.on_error("timeout")

    def _client_drained(self, future: asyncio.Future[None]) -> None:
        if future.exception() is not None:
            self._client_gone()
            return
        conn = self.upstream_conn
        if conn is not None:
            conn.resume_reading()

    def _answer(
        self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = (), close: bool = False
    ) -> None:
        """Answer from the gateway before the request body was read.

        With a body still on the wire, answer now and close (we will not read what we refused);
        without one, answer in ``finish``: finishing a response before Tornado has seen the end
        of the request makes it close a keep-alive connection that could have been reused.
        """
        if close or self.has_body:
            self._respond(status, body, headers, True)
        else:
            self.pending = (status, body, headers, False)

    def _answer_error(self, reply: LocalReply) -> None:
        self._answer(
            reply.status, error_body(reply.code, reply.message, self.request_id), reply.headers, reply.close
        )

    def _drop_upstream(self) -> None:
        """Abandon the upstream exchange in progress: the connection is closed, never reused."""
        conn, self.upstream_conn = self.upstream_conn, None
        if conn is not None:
            conn.detach()
            if self.upstream is not None and self.target is not None:
                self.upstream.release(self.target, conn, ok=False)

    def _fail_request(self, reply: LocalReply) -> None:
        """A local error after the request head was accepted (upstream failure, body limit)."""
        self._drop_upstream()
        if self.response_started:
            self._abort_client(reply.code)
        elif self.request_done:
            self._write_local(reply)
        else:
            self._write_local(reply, close=True)

    def _write_local(self, reply: LocalReply, close: bool = False) -> None:
        body = error_body(reply.code, reply.message, self.request_id)
        self._respond(reply.status, body, reply.headers, close)

    def _respond(
        self, status: int, body: bytes, extra: tuple[tuple[str, str], ...], close: bool = False
    ) -> None:
        if self.done:
            return
        self.pending = None
        if status == 204:
            headers = httputil.HTTPHeaders({"X-Request-Id": self.request_id})
        else:
            headers = httputil.HTTPHeaders(
                {"Content-Type": _JSON, "Content-Length": str(len(body)), "X-Request-Id": self.request_id}
            )
        for name, value in self.limit_headers:
            headers[name] = value
        for name, value in extra:
            headers[name] = value
        if close:
            headers["Connection"] = "close"
            self.conn._disconnect_on_finish = True
        self.status = status
        self.response_started = True
        self.bytes_sent = len(body)
        if close and self.head_phase and self.has_body:
            # Refusing a body the client is still sending: closing at once would reset the
            # connection and could destroy our answer before the client reads it (a proxy in
            # front then reports 502). Answer, then keep reading and discarding for a moment.
            head = "".join(f"{name}: {value}\r\n" for name, value in headers.get_all())
            data = f"HTTP/1.1 {status} {_reason(status)}\r\n{head}\r\n".encode("latin-1") + body
            self.task = asyncio.ensure_future(linger_close(self.conn.detach(), data))
            self._complete()
            return
        try:
            self.conn.write_headers(
                httputil.ResponseStartLine("HTTP/1.1", status, _reason(status)),
                headers,
                body if self.method != "HEAD" else None,
            )
            self.conn.finish()
        except (StreamClosedError, httputil.HTTPOutputError):
            self.conn.close()
        self._complete()

    def _abort_client(self, reason: str) -> None:
        """Cut the client connection mid-response: an incomplete body, never a new status line."""
        self._drop_upstream()
        self.conn.close()
        self._complete()

    def _client_gone(self) -> None:
        if self.done:
            return
        if not self.response_started:
            self.status = 499
        self._abort_client("client_closed")

    def _complete(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.keepalive is not None:
            self.keepalive.stop()
        gw = self.gw
        gw.metrics.inflight.dec()
        self.inflight.count -= 1
        elapsed = time.perf_counter() - self.started
        gw.metrics.observe_request(self.route_label, self.method, self.status, elapsed)
        if self.upstream is not None:
            gw.usage.record(
                UsageRecord(
                    ts=time.time(),
                    route=self.route_label,
                    upstream=self.upstream.name,
                    method=self.method,
                    status=self.status,
                    latency_ms=elapsed * 1000,
                    user_id=self.user_id,
                    model=self.model,
                    input_tokens=self.input_tokens,
                    output_tokens=self.output_tokens,
                )
            )
        if gw.access_log.enabled:
            path = self.path
            if self.query:
                query = without_token_param(self.query)
                if query:
                    path = f"{path}?{query}"
            gw.access_log.write(
                AccessRecord(
                    ts=utc_timestamp(),
                    requestId=self.request_id,
                    method=self.method,
                    route=self.route_label,
                    path=path,
                    status=self.status,
                    bytes=self.bytes_sent,
                    durationMs=round(elapsed * 1000, 3),
                    upstream=self.upstream.name if self.upstream else None,
                    userId=self.user_id,
                )
            )
