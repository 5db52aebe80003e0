"""v2 request signing (SPEC 6), over the request exactly as the upstream receives it.

One request the gateway refuses to sign: an unauthenticated one (empty context ``2||||``) whose
forwarded path has the shape ``/requests/<anything>/progress``. The gateway accepts ``2||||``
signatures on its own ``POST /requests/<id>/progress`` endpoint (SPEC 8, a backend's progress
report), so minting one would let anyone whose request reaches an upstream that echoes
request headers forge a progress report. The progress endpoint verifies the *normalised*
path it matched (and the raw query), so the only paths it can accept are exactly
``/requests/<segment>/progress``; the check below is wider on purpose: it looks at the raw and
the percent-decoded path, with repeated slashes merged, any case, any depth of ``<anything>``
and a trailing slash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote

from ..auth.principal import Principal
from ..errors import LocalReply
from ..pipeline import Filter
from ..signing import sign

if TYPE_CHECKING:
    from ..exchange import Exchange

_PROGRESS_SHAPE = re.compile(r"/requests/.+/progress/?", re.IGNORECASE | re.DOTALL)
_SLASHES = re.compile(r"/{2,}")


def progress_shaped(target: str) -> bool:
    """Whether the path of ``target`` (query ignored) looks like ``/requests/<id>/progress``,
    as sent or once percent-decoded."""
    path = target.split("?", 1)[0]
    return any(_PROGRESS_SHAPE.fullmatch(_SLASHES.sub("/", form)) for form in (path, unquote(path)))


def _empty_context(p: Principal | None) -> bool:
    """The signing context would be ``2||||``."""
    return p is None or not (p.user_id or p.role or p.app_key or p.plan)


class Sign(Filter):
    """Adds the ``X-Gateway-*`` signature headers.

    Lowest priority of the request side: the upstream head is built after every filter that
    changes the target or the body, so what is signed is what is sent. ``on_body`` runs after
    every other body filter, when the forwarded path is final, and refuses (403, nothing
    forwarded or queued) a request the gateway must not sign (see the module docstring).
    """

    PRIORITY = 600
    NEEDS_BODY = True

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def on_body(self, ex: Exchange, body: bytes) -> bytes:
        upstream = ex.upstream
        if upstream is not None and _empty_context(ex.principal):
            if any(progress_shaped(t.base_path + ex.forward_path) for t in upstream.targets):
                raise LocalReply("FORBIDDEN", "The gateway does not sign this request without credentials")
        return body

    def upstream_headers(self, ex: Exchange, target: str, body: bytes) -> Iterable[tuple[str, str]]:
        p = ex.principal
        if p is None or _empty_context(p):
            if progress_shaped(target):
                return ()  # on_body refused it already; never mint such a signature regardless
            return sign(self.secret, ex.method, target, body).items()
        return sign(
            self.secret,
            ex.method,
            target,
            body,
            user_id=p.user_id,
            role=p.role,
            app_key=p.app_key,
            plan=p.plan,
        ).items()
