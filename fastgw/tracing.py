"""W3C Trace Context (SPEC 13.6): the gateway is one span of the caller's trace.

A valid ``traceparent`` from the client keeps its trace id and flags; the gateway's span gets a
new parent id, which is what the upstream and the client see. A missing or invalid header
starts a new trace (sampled flag set: the trace id is recorded, in the access log).
``tracestate`` passes through untouched.

Valid per the Trace Context spec: ``version-traceid-parentid-flags`` in lower-case hex, ids
not all zeros, version ``ff`` refused, version ``00`` exactly 55 characters; a later version may
carry more fields after a ``-``, which are dropped (we speak version 00).
"""

from __future__ import annotations

import re

from .forwarding import random_bits

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
NEW_TRACE_FLAGS = "01"


def incoming_trace(header: str | None) -> tuple[str, str] | None:
    """(trace id, flags) of a valid ``traceparent`` value, else None."""
    if header is None:
        return None
    match = _TRACEPARENT.fullmatch(header.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, flags


def gateway_span(header: str | None) -> tuple[str, str]:
    """(trace id, the ``traceparent`` of the gateway's span) for a request's header value."""
    found = incoming_trace(header)
    if found is None:
        trace_id, flags = "%032x" % (random_bits(128) or 1), NEW_TRACE_FLAGS
    else:
        trace_id, flags = found
    span_id = "%016x" % (random_bits(64) or 1)
    return trace_id, f"00-{trace_id}-{span_id}-{flags}"
