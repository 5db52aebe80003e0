"""The per-route filter pipeline: small filter objects, arranged once when the config is compiled.

Modelled on Envoy's filter chain and Kong's plugin phases. A filter implements only the hooks it
needs; ``Pipeline.compile`` puts each filter into the tuples of the hooks it overrides, so a
route that does not use a feature never calls it, and a route whose filters all answer at once
creates no coroutine. Request-side hooks run in ``PRIORITY`` order (higher first), response-side
hooks in reverse (Envoy's encoder rule).

Hook contracts (``ex`` is the request's ``Exchange``):

- ``on_request(ex)``: after routing, before the body is read. Raise ``LocalReply`` to answer
  instead of forwarding (later filters do not run; ``on_complete`` still does). Return ``None``
  to continue at once, or an awaitable that the exchange waits for before the next filter.
- ``on_body(ex, body) -> body``: only on routes that buffer the body; the whole request body,
  returning what is forwarded, or an awaitable of it that the exchange waits for before the
  next filter. Raise ``LocalReply`` (or let the awaitable raise it) to refuse it.
- ``upstream_headers(ex, target, body)``: headers to add to the upstream request, called when
  its head is built, which is after every change to the target or the body: signing is last.
- ``on_response_head(ex, status, content_type)`` / ``on_response_data(ex, data)``: the
  upstream's response as it is relayed; observers only, the bytes are never altered here.
- ``on_complete(ex)``: exactly once per exchange, however it ended (answered, relayed, failed,
  or the client went away).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .exchange import Exchange


class Filter:
    """Base class: every hook is a no-op that ``Pipeline.compile`` leaves out."""

    PRIORITY: ClassVar[int] = 0
    NEEDS_BODY: ClassVar[bool] = False  # the filter must see the whole body before forwarding

    def on_request(self, ex: Exchange) -> Awaitable[None] | None:
        return None

    def on_body(self, ex: Exchange, body: bytes) -> bytes | Awaitable[bytes]:
        return body

    def upstream_headers(self, ex: Exchange, target: str, body: bytes) -> Iterable[tuple[str, str]]:
        return ()

    def on_response_head(self, ex: Exchange, status: int, content_type: str) -> None:
        return None

    def on_response_data(self, ex: Exchange, data: bytes) -> None:
        return None

    def on_complete(self, ex: Exchange) -> None:
        return None


def _overrides(flt: Filter, hook: str) -> bool:
    return getattr(type(flt), hook) is not getattr(Filter, hook)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One route's filters, per hook, in the order they run."""

    request: tuple[Filter, ...] = ()
    body: tuple[Filter, ...] = ()
    upstream_headers: tuple[Filter, ...] = ()
    response_head: tuple[Filter, ...] = ()
    response_data: tuple[Filter, ...] = ()
    complete: tuple[Filter, ...] = ()
    needs_body: bool = False

    @classmethod
    def compile(cls, filters: Iterable[Filter]) -> Pipeline:
        ordered = sorted(filters, key=lambda f: -f.PRIORITY)

        def using(hook: str) -> tuple[Filter, ...]:
            return tuple(f for f in ordered if _overrides(f, hook))

        body = using("on_body")
        return cls(
            request=using("on_request"),
            body=body,
            upstream_headers=using("upstream_headers"),
            response_head=tuple(reversed(using("on_response_head"))),
            response_data=tuple(reversed(using("on_response_data"))),
            complete=tuple(reversed(using("on_complete"))),
            needs_body=bool(body) or any(f.NEEDS_BODY for f in ordered),
        )

    def names(self) -> list[str]:
        """Filter class names in request order (for logs and tests)."""
        seen: dict[int, str] = {}
        for group in (self.request, self.body, self.upstream_headers, self.response_head, self.complete):
            for flt in group:
                seen.setdefault(id(flt), type(flt).__name__)
        return list(seen.values())


def run_request_hooks(hooks: tuple[Filter, ...], ex: Exchange) -> Awaitable[None] | None:
    """Run ``on_request`` hooks in order; synchronous until the first one that must wait."""
    for index, flt in enumerate(hooks):
        pending = flt.on_request(ex)
        if pending is not None:
            return _resume(hooks, index + 1, ex, pending)
    return None


async def _resume(hooks: tuple[Filter, ...], start: int, ex: Exchange, pending: Awaitable[None]) -> None:
    await pending
    for flt in hooks[start:]:
        more = flt.on_request(ex)
        if more is not None:
            await more


def run_body_hooks(hooks: tuple[Filter, ...], ex: Exchange, body: bytes) -> bytes | Awaitable[bytes]:
    """Run ``on_body`` hooks in order, each on what the one before returned; synchronous until
    the first one that must wait (then an awaitable of the final body). ``LocalReply`` from a
    hook propagates (raised here, or by the awaitable)."""
    for index, flt in enumerate(hooks):
        result = flt.on_body(ex, body)
        if not isinstance(result, bytes):
            return _resume_body(hooks, index + 1, ex, result)
        body = result
    return body


async def _resume_body(
    hooks: tuple[Filter, ...], start: int, ex: Exchange, pending: Awaitable[bytes]
) -> bytes:
    body = await pending
    for flt in hooks[start:]:
        result = flt.on_body(ex, body)
        body = result if isinstance(result, bytes) else await result
    return body
