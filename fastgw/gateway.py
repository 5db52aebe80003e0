"""The gateway's compiled state: everything a request needs, built once per config load.

A reload builds a new ``Gateway`` and swaps one reference; requests already running keep the
object they started with, so nothing they hold changes under them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .access_log import AccessLog
from .auth.factory import build_authenticator, take_auth_state
from .body_rewrite import transform_headers
from .builtin import BuiltinEndpoints
from .builtin.registry import BUILTIN_MODULES
from .cache import ResponseCache
from .config import Config, RouteConfig
from .filters import local_pipeline, route_pipeline
from .forwarding import Network, parse_networks
from .jobs import JobRunner
from .metrics import Metrics
from .pipeline import Pipeline
from .ratelimit import Limiter
from .ratelimit.local import Policy
from .routing import RouteSpec, RouteTable
from .static_route import StaticSite
from .store import AuditLog, Store, open_store
from .store.jobs import JobStore
from .store.usage import UsageRecorder
from .upstream.oauth2 import ClientCredentials
from .upstream.pool import Upstream


@dataclass(frozen=True, slots=True)
class Route:
    """One configured route with its references resolved."""

    pattern: str
    config: RouteConfig
    upstream: Upstream | None
    rewrite: str | None  # replacement for the literal prefix before "*", "" to strip it
    body_limit: int
    read_timeout: float
    buffered: bool  # the whole body is read before forwarding (sign, hmac, body rewrites, llm)
    header_add: tuple[tuple[str, str], ...]  # transform.headers.add
    # Client headers never forwarded (lowercased): identity headers, transform.headers.remove,
    # and the names the upstream's `headers:` sets (an injected API key replaces the client's).
    drop: frozenset[str]
    drop_with_authorization: frozenset[str]  # ... and Authorization, once the gateway consumed it
    rate_policies: tuple[Policy, ...]  # global and the route's own, resolved at load
    pipeline: Pipeline
    site: StaticSite | None = None  # a static route's files (SPEC 13.3)


class Gateway:
    """Everything compiled from one config load.

    ``previous`` is the gateway this one replaces on a reload: state that outlives a config
    (the open store, rate-limit buckets when the limits did not change, warm upstream
    connections, JWKS key sets and verdict caches whose config is unchanged, the circuit state of
    unchanged upstreams) is carried over instead of being rebuilt empty.
    """

    def __init__(
        self, config: Config, metrics: Metrics, access_log: AccessLog, previous: Gateway | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.access_log = access_log
        server = config.server
        self.body_limit = server.body_limit
        secret = config.signing.secret if config.signing is not None else None
        self.signing_secret = secret.encode() if secret else None
        self.trusted_proxies: tuple[Network, ...] = parse_networks(server.trusted_proxies)
        self.upstreams = {
            name: Upstream(
                name,
                list(u.targets),
                balance=u.balance,
                connect_timeout=u.connect_timeout,
                read_timeout=u.read_timeout,
                retries=u.retries,
                max_connections=u.max_connections,
                circuit_failures=u.circuit.failures,
                circuit_cooldown=u.circuit.cooldown,
                headers=dict(u.headers),
            )
            for name, u in config.upstreams.items()
        }
        capacity = config.server.cache_memory
        self.response_cache: ResponseCache
        if previous is not None and previous.response_cache.capacity == capacity:
            self.response_cache = previous.response_cache  # a reload keeps what is cached
        else:
            self.response_cache = ResponseCache(capacity)
        # OAuth2 client credentials per upstream; a reload keeps a cached token if unchanged.
        before = previous.upstream_tokens if previous is not None else {}
        self.upstream_tokens: dict[str, ClientCredentials] = {}
        for name, u in config.upstreams.items():
            if u.oauth2 is not None:
                kept = before.get(name)
                self.upstream_tokens[name] = (
                    kept
                    if kept is not None and kept.config == u.oauth2
                    else ClientCredentials(name, u.oauth2)
                )
        ids = config.identity_headers
        self.identity_header_pairs = (ids.user_id, ids.role, ids.app_key, ids.plan, ids.scopes)
        self.identity_header_names = frozenset(h.lower() for h in self.identity_header_pairs)
        self.store: Store
        self.limiter: Limiter
        if previous is not None and previous.config.store == config.store:
            self.store = previous.store
        else:
            self.store = open_store(config)
            self.store.on_dropped = metrics.store_writes_dropped.inc
        self.auth = build_authenticator(config, metrics, self.store)
        self.audit = AuditLog(self.store)
        self.usage = UsageRecorder(self.store)
        self.jobs_store = JobStore(self.store)
        self.jobs: JobRunner
        if previous is not None and previous.store is self.store:
            self.jobs = previous.jobs  # jobs already running keep their slots
            self.jobs.retention = config.jobs.retention
        else:
            self.jobs = JobRunner(self.jobs_store, config.jobs.workers, config.jobs.retention)
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # built outside a server (tools, tests): no housekeeping
                pass
            else:
                self.jobs.start()
        if previous is not None and (previous.config.rate_limits, previous.config.redis) == (
            config.rate_limits,
            config.redis,
        ):
            self.limiter = previous.limiter
        else:
            self.limiter = Limiter(config, metrics)
        self.builtin_rate_policies = self.limiter.policies_for(None)
        self.builtins = BuiltinEndpoints()
        for register in BUILTIN_MODULES:
            register(self.builtins, self)
        self.local_pipeline = local_pipeline(self, "unmatched")
        self.routes = tuple(self._compile_route(r) for r in config.routes)
        self.table = RouteTable(
            [
                RouteSpec(r.path, frozenset(m.upper() for m in r.methods) if r.methods else None)
                for r in config.routes
            ]
        )
        if previous is not None:
            self._take_connections_from(previous)
            self._take_circuits_from(previous)
            take_auth_state(self.auth, previous.auth)

    def _compile_route(self, rc: RouteConfig) -> Route:
        upstream = self.upstreams.get(rc.upstream) if rc.upstream else None
        rewrite: str | None = None
        if rc.rewrite is not None:
            rewrite = rc.rewrite
        elif rc.strip_prefix:
            rewrite = ""
        read_timeout = rc.read_timeout
        if read_timeout is None:
            read_timeout = upstream.read_timeout if upstream else 60.0
        body_limit = rc.body_limit if rc.body_limit is not None else self.body_limit
        transform = rc.transform
        policies = self.limiter.policies_for(rc)
        pipeline = route_pipeline(self, rc, policies, upstream is not None)
        buffered = pipeline.needs_body or rc.async_
        header_drop, header_add = transform_headers(transform) if transform else (frozenset(), ())
        injected = frozenset(name.lower() for name, _ in upstream.extra_headers) if upstream else frozenset()
        if rc.upstream in self.upstream_tokens:
            injected |= {"authorization"}  # replaced by the upstream's own token
        drop = self.identity_header_names | header_drop | injected
        return Route(
            rc.path,
            rc,
            upstream,
            rewrite,
            body_limit,
            read_timeout,
            buffered,
            header_add,
            drop,
            drop | {"authorization"},
            policies,
            pipeline,
            StaticSite.of(rc.static) if rc.static is not None else None,
        )

    def _take_connections_from(self, old: Gateway) -> None:
        """Reload: each old upstream pool is retired in favour of the new one of its name. Its
        warm connections, and those its running requests release later, move here when the
        same target address is configured (and has room), else they are closed."""
        for name, upstream in old.upstreams.items():
            upstream.retire(self.upstreams.get(name))

    def _take_circuits_from(self, old: Gateway) -> None:
        """Reload: an upstream whose config is unchanged keeps each target's passive health, so
        an ejected target stays ejected until its cooldown ends (a reload must not send traffic
        back to a dead target). A changed upstream starts with every target healthy."""
        for name, upstream in self.upstreams.items():
            before = old.upstreams.get(name)
            if before is None or old.config.upstreams.get(name) != self.config.upstreams[name]:
                continue
            for target, previous in zip(upstream.targets, before.targets, strict=True):
                target.failures = previous.failures
                target.ejected_until = previous.ejected_until

    def close(self, successor: Gateway | None = None) -> None:
        """Release what this gateway owns and its successor did not take over."""
        for upstream in self.upstreams.values():
            upstream.close()
        self.usage.flush()
        if successor is None or successor.jobs is not self.jobs:
            self.jobs.close()
        if successor is None or successor.store is not self.store:
            self.store.close()
