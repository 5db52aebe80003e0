"""The terminal step of every proxied exchange: one upstream request, streamed both ways.

``UpstreamCall`` picks a target, connects (a pooled keep-alive connection when there is one),
sends the request head built from the route's precomputed parts and the pipeline's
``upstream_headers`` hooks, streams the request body (awaiting the upstream socket when it is
full), and, as the upstream connection's ``ResponseSink``, relays the response to the client
chunk by chunk (pausing the upstream socket while the client is slow). Nothing is buffered
whole. A ``101`` turns the exchange into a WebSocket tunnel.

Failures map to SPEC 8: connect failure 502, no first byte within ``read_timeout`` 504, every
target ejected 503, the pool's bounded wait exceeded 503; after the response started, the
client connection is cut instead (never a second status line).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from .errors import LocalReply
from .forwarding import client_response_head, forwarded_element, is_trusted, upstream_request_head
from .speedups import LAST_CHUNK, encode_chunk
from .upstream.client import UpstreamConnection
from .upstream.pool import ConnectFailed, PoolExhausted, Target, Upstream
from .websocket import MessageWindow, WebSocketTunnel, switching_protocols

if TYPE_CHECKING:
    from .exchange import Exchange

log = logging.getLogger("fastgw")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_GATEWAY_PREFIXES = ("x-gateway-", "x-forwarded-")  # x-forwarded-*: only the gateway says
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class UpstreamCall:
    """One exchange's upstream request and response (the connection's ``ResponseSink``)."""

    def __init__(self, ex: Exchange, upstream: Upstream, read_timeout: float) -> None:
        self.ex = ex
        self.upstream = upstream
        self.read_timeout = read_timeout
        self.target: Target | None = None
        self.conn: UpstreamConnection | None = None
        self.connecting: asyncio.Future[tuple[UpstreamConnection, bool]] | None = None
        self.reused = False
        self.chunked = False
        self.sent = False  # the whole request went upstream
        self.head = b""
        self.last_activity = 0.0
        self.started = 0.0

    # -- request side ---------------------------------------------------------------------------

    def open(self, body: bytes | None) -> Awaitable[None] | None:
        """Send the request on a pooled idle connection at once when there is one (no coroutine);
        otherwise return the awaitable that connects first. Never raises."""
        upstream = self.upstream
        target = upstream.pick()
        if target is not None:
            conn = upstream.take_idle(target)
            if conn is not None:
                self.started = time.monotonic()
                self.reused = True
                try:
                    self._send(target, conn, body)
                except Exception:
                    log.exception("request %s failed while opening its upstream", self.ex.request_id)
                    self.ex.fail(LocalReply("INTERNAL_ERROR", "Internal error"))
                return None
        return self._open_connecting(target, body)

    async def _open_connecting(self, target: Target | None, body: bytes | None) -> None:
        try:
            await self._connect_and_send(target, body)
        except Exception:
            log.exception("request %s failed while opening its upstream", self.ex.request_id)
            self.ex.fail(LocalReply("INTERNAL_ERROR", "Internal error"))

    async def _connect_and_send(self, target: Target | None, body: bytes | None) -> None:
        ex, upstream = self.ex, self.upstream
        if target is None:
            ex.fail(LocalReply("SERVICE_UNAVAILABLE", "No healthy upstream target"))
            return
        self.started = time.monotonic()
        # A connect failure sent nothing upstream (the body is not read until we are connected),
        # so idempotent requests may try another target.
        attempts = 1 + (upstream.retries if ex.method in _IDEMPOTENT else 0)
        conn: UpstreamConnection | None = None
        metrics = ex.gw.metrics
        for attempt in range(attempts):
            try:
                # A future of its own, so that a client who hangs up while this waits for a
                # pooled slot leaves the queue (cancelled) and nothing is sent upstream.
                self.connecting = asyncio.ensure_future(upstream.connect(target))
                conn, self.reused = await self.connecting
                break
            except asyncio.CancelledError:
                if ex.done:
                    return
                raise
            except PoolExhausted:
                metrics.upstream_error(upstream.name, "pool_exhausted")
                ex.fail(LocalReply("SERVICE_UNAVAILABLE", "Upstream connection limit reached"))
                return
            except ConnectFailed:
                metrics.upstream_error(upstream.name, "connect")
                if attempt + 1 < attempts:
                    next_target = upstream.pick(exclude=target)
                    if next_target is not None:
                        target = next_target
        self.connecting = None
        if ex.done:
            if conn is not None:
                upstream.release(target, conn, ok=False)
            return
        if conn is None:
            ex.fail(LocalReply("BAD_GATEWAY", "Upstream connection failed"))
            return
        self._send(target, conn, body)

    def _send(self, target: Target, conn: UpstreamConnection, body: bytes | None) -> None:
        ex = self.ex
        self.target = target
        self.conn = conn
        self.head = self.build_head(target, body)
        conn.begin(self, self.head, ex.method == "HEAD", body, more=body is None and ex.has_body)
        if body is not None or not ex.has_body:
            self.sent = True
            self._arm_timer()

    def _framing(self, body: bytes | None) -> str:
        ex = self.ex
        if body is not None:
            return f"Content-Length: {len(body)}\r\n" if body or ex.has_body else ""
        if ex.content_length >= 0 and (ex.content_length or ex.method in _BODY_METHODS):
            return f"Content-Length: {ex.content_length}\r\n"
        if ex.has_body:
            self.chunked = True
            return "Transfer-Encoding: chunked\r\n"
        return ""

    def build_head(self, target: Target, body: bytes | None) -> bytes:
        """The upstream request head: client headers cleaned, then the gateway's own added.

        Built after every change to the target and the body, so the pipeline's
        ``upstream_headers`` hooks (identity, then the signature) see what is sent.
        """
        ex = self.ex
        route = ex.route
        assert route is not None
        query = ex.forward_query
        path = target.base_path + ex.forward_path
        target_path = f"{path}?{query}" if query else path
        headers = ex.headers
        host = headers.get("Host", "")
        context = ex.context
        proto = context.protocol
        peer = context.remote_ip
        forwarded_for = peer
        port = str(context.local_port)
        forwarded = forwarded_element(peer, host, proto)
        if is_trusted(peer, ex.gw.trusted_proxies):
            # Only a proxy we trust may tell us who its client was and how it connected.
            xff = headers.get("X-Forwarded-For")
            if xff:
                forwarded_for = f"{xff}, {peer}"
            earlier = headers.get("Forwarded")
            if earlier:
                forwarded = f"{earlier}, {forwarded}"
            proto = headers.get("X-Forwarded-Proto", proto)
            host = headers.get("X-Forwarded-Host", host)
            port = headers.get("X-Forwarded-Port", port)
        extra = list(self.upstream.extra_headers)
        if ex.websocket:
            extra += (("Upgrade", "websocket"), ("Connection", "Upgrade"))
        signed_body = body or b""
        for flt in ex.pipeline.upstream_headers:
            extra.extend(flt.upstream_headers(ex, target_path, signed_body))
        drop = route.drop
        principal = ex.principal
        if principal is not None and principal.consumed_authorization:
            drop = route.drop_with_authorization
        if route.header_add:
            # Kong's request transformer: `add` only sets a header the client did not send.
            extra.extend((n, v) for n, v in route.header_add if n not in headers)
        return upstream_request_head(
            ex.method,
            target_path,
            headers,
            drop=drop,
            drop_prefixes=_GATEWAY_PREFIXES,
            host=target.host_header,
            forwarded_for=forwarded_for,
            forwarded_proto=proto,
            forwarded_host=host,
            forwarded_port=port,
            forwarded=forwarded,
            request_id=ex.request_id,
            traceparent=ex.traceparent,
            extra=extra,
            framing=self._framing(body),
        )

    def send_body(self, chunk: bytes) -> asyncio.Future[None] | None:
        conn = self.conn
        if conn is None or conn.closed:
            return None
        return conn.write(encode_chunk(chunk) if self.chunked else chunk)

    def request_ended(self) -> None:
        conn = self.conn
        if conn is not None and self.chunked and not conn.closed:
            conn.write(LAST_CHUNK)
        self.sent = True
        self._arm_timer()

    def drop(self) -> None:
        """Abandon the upstream exchange: a queued connect is cancelled, a connection closed."""
        connecting, self.connecting = self.connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
        self._cancel_timer()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.detach()
            if self.target is not None:
                self.upstream.release(self.target, conn, ok=False)

    # -- response side: ResponseSink ------------------------------------------------------------

    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        ex = self.ex
        if ex.done:
            return
        if status == 101:
            self._switch_protocols(headers)
            return
        self.last_activity = time.monotonic()
        block, has_length, content_type = client_response_head(
            headers, ex.request_id, ex.traceparent, ex.limit_headers
        )
        ex.upstream_headers = headers
        ex.status = status
        ex.response_started = True
        ex.conn.send_head_block(status, block, has_length)
        for flt in ex.pipeline.response_head:
            flt.on_response_head(ex, status, content_type)

    def on_data(self, data: bytes) -> bool:
        ex = self.ex
        if ex.done:
            return True
        self.last_activity = time.monotonic()
        for flt in ex.pipeline.response_data:
            flt.on_response_data(ex, data)
        ex.bytes_sent += len(data)
        future = ex.conn.write(data)
        if future is None:
            return True
        future.add_done_callback(self._client_drained)
        return False

    def on_end(self) -> None:
        ex = self.ex
        if ex.done:
            return
        self._cancel_timer()
        conn, self.conn = self.conn, None
        if conn is not None and self.target is not None:
            if not self.sent:
                conn.abort()  # the upstream answered before our request body ended
            self.upstream.release(self.target, conn, ok=True)
            ex.gw.metrics.observe_upstream(self.upstream.name, time.monotonic() - self.started)
        if ex.conn.closed:
            ex.on_connection_close()
            return
        ex.response_complete = True
        ex.conn.finish()
        ex.complete()

    def on_error(self, reason: str) -> None:
        ex = self.ex
        if ex.done:
            return
        self._cancel_timer()
        conn, self.conn = self.conn, None
        upstream, target = self.upstream, self.target
        if conn is not None and target is not None:
            upstream.release(target, conn, ok=False)
            if (
                self.reused
                and reason == "upstream_reset"
                and not ex.response_started
                and not ex.has_body
                and ex.method in _IDEMPOTENT
            ):
                # A pooled connection the upstream closed as we reused it (a keep-alive race,
                # not a sick target): try once more on a fresh connection.
                self.reused = False
                ex.task = asyncio.ensure_future(self._retry_fresh(target))
                return
            upstream.record_failure(target)
            ex.gw.metrics.upstream_error(upstream.name, reason)
        if ex.response_started:
            ex.abort_client()
        elif reason == "timeout":
            ex.fail(LocalReply("UPSTREAM_TIMEOUT", "Upstream did not answer in time"))
        else:
            ex.fail(LocalReply("BAD_GATEWAY", "Upstream connection failed"))

    async def _retry_fresh(self, target: Target) -> None:
        ex = self.ex
        try:
            conn, _ = await self.upstream.connect(target)
        except (ConnectFailed, PoolExhausted):
            ex.fail(LocalReply("BAD_GATEWAY", "Upstream connection failed"))
            return
        if ex.done:
            self.upstream.release(target, conn, ok=False)
            return
        self.conn = conn
        conn.begin(self, self.head, ex.method == "HEAD")
        self._arm_timer()

    def _client_drained(self, _future: asyncio.Future[None]) -> None:
        if self.ex.conn.closed:
            self.ex.on_connection_close()
            return
        conn = self.conn
        if conn is not None:
            conn.resume_reading()

    # -- WebSocket ------------------------------------------------------------------------------

    def _switch_protocols(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The upstream accepted a WebSocket upgrade: check it, then become a tunnel."""
        ex, conn = self.ex, self.conn
        head = None
        if ex.websocket and conn is not None:
            head = switching_protocols(headers, ex.headers.get("Sec-WebSocket-Key", ""), ex.request_id)
        if head is None or conn is None:
            # A 101 we did not ask for, or with the wrong accept: never open a raw tunnel.
            self.on_error("upstream_protocol")
            return
        self._cancel_timer()
        ex.status = 101
        ex.response_started = True
        route = ex.route
        ws_limit = route.config.ws_rate_limit if route is not None else None
        window = MessageWindow(ws_limit.messages, ws_limit.window) if ws_limit is not None else None
        idle_timeout = route.config.ws_idle_timeout if route is not None else None
        tunnel = WebSocketTunnel(ex.conn, conn, window, self._tunnel_closed, idle_timeout)
        conn.hand_over(tunnel)
        ex.inflight.tunnels.add(tunnel)
        ex.tunnel = tunnel
        ex.gw.metrics.websocket_connections.inc()
        tunnel.start(head)

    def _tunnel_closed(self, bytes_to_client: int) -> None:
        ex = self.ex
        ex.gw.metrics.websocket_connections.dec()
        if ex.tunnel is not None:
            ex.inflight.tunnels.discard(ex.tunnel)
        conn, self.conn = self.conn, None
        if conn is not None and self.target is not None:
            self.upstream.release(self.target, conn, ok=True)
        ex.bytes_sent = bytes_to_client
        ex.response_complete = True
        ex.complete()

    # -- read timeout ---------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        """Start the read timeout (on the connection's ``Deadline``: no timer per request)."""
        conn = self.conn
        if conn is not None and not conn.deadline.pending and not self.ex.done:
            self.last_activity = time.monotonic()
            conn.deadline.set(self.read_timeout, self._on_timer)

    def _cancel_timer(self) -> None:
        if self.conn is not None:
            self.conn.deadline.clear()

    def _on_timer(self) -> None:
        conn = self.conn
        if self.ex.done or conn is None:
            return
        idle = time.monotonic() - self.last_activity
        if idle < self.read_timeout or self.ex.conn.write_paused:
            # While the client is the slow side the upstream is paused by us: not its silence
            # (server.send_timeout bounds the client instead).
            wait = self.read_timeout - idle if idle < self.read_timeout else self.read_timeout
            conn.deadline.set(wait, self._on_timer)
            return
        conn.detach()
        self.on_error("timeout")
