"""``static`` and ``redirect`` routes (SPEC 13.3): terminal steps that answer without an upstream.

They run where a proxied route would open its upstream call, after the route's request filters
(auth, limits), so those apply as to any route, and the completion filters log them.

Static files:

- The path below the route's literal prefix names a file under ``root``; it is decoded once,
  and a NUL is 400. The file is resolved with every symlink followed and must still lie inside
  the resolved ``root``: a link out of it, or ``..`` in any spelling, is 404 as if nothing were
  there. Only regular files are served; a directory serves its ``index``; with ``spa`` a path
  that names nothing serves ``root/index``.
- ``ETag`` (size and modification time) and ``Last-Modified``; ``If-None-Match`` (which wins)
  or ``If-Modified-Since`` answer 304. ``Cache-Control: max-age=<max_age>``.
- The body is streamed in ``CHUNK`` reads, waiting whenever the client is slow to read, so a
  large file never sits in memory.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote

from .errors import LocalReply

if TYPE_CHECKING:
    from .config import RedirectConfig, StaticConfig
    from .exchange import Exchange

CHUNK = 64 * 1024
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


@dataclass(frozen=True, slots=True)
class StaticSite:
    """A ``static`` route compiled at load: the resolved root and its settings."""

    root: str
    index: str
    spa: bool
    max_age: int

    @classmethod
    def of(cls, config: StaticConfig) -> StaticSite:
        return cls(os.path.realpath(config.root), config.index, config.spa, int(config.max_age))

    def resolve(self, tail: str) -> tuple[str, os.stat_result] | None:
        """The file a request tail names and its stat, or None (404). ValueError for a NUL."""
        name = unquote(tail, errors="strict")
        if "\x00" in name:
            raise ValueError("NUL in path")
        parts = [p for p in name.split("/") if p]
        if any(p in (".", "..") or "\\" in p for p in parts):
            return None
        found = self._file(os.path.join(self.root, *parts))
        if found is None and self.spa:
            found = self._file(os.path.join(self.root, self.index))
        return found

    def _file(self, candidate: str) -> tuple[str, os.stat_result] | None:
        real = os.path.realpath(candidate)
        if real != self.root and not real.startswith(self.root + os.sep):
            return None  # a symlink out of the root
        try:
            st = os.stat(real)
            if stat.S_ISDIR(st.st_mode):
                return self._file(os.path.join(real, self.index))
            if not stat.S_ISREG(st.st_mode):
                return None
        except (OSError, ValueError):
            return None
        return real, st


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _content_type(path: str) -> str:
    kind, _ = mimetypes.guess_type(path)
    if kind is None:
        return "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith(_TEXT_TYPES) else kind


def _not_modified(ex: Exchange, etag: str, mtime: int) -> bool:
    tags = ex.headers.get("If-None-Match")
    if tags is not None:
        return tags.strip() == "*" or etag in (t.strip().removeprefix("W/") for t in tags.split(","))
    since = ex.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    return mtime <= int(when.timestamp())


async def serve_static(ex: Exchange, site: StaticSite, tail: str) -> None:
    """Answer ``ex`` from ``site``: the file, 304, 404, 400 or 405 (see the module docstring)."""
    try:
        await _serve(ex, site, tail)
    except LocalReply as reply:
        ex.respond_error(reply)


async def _serve(ex: Exchange, site: StaticSite, tail: str) -> None:
    if ex.method not in ("GET", "HEAD"):
        raise LocalReply("METHOD_NOT_ALLOWED", "Method not allowed", headers=(("Allow", "GET, HEAD"),))
    try:
        found = site.resolve(tail)
    except ValueError:
        raise LocalReply("VALIDATION_ERROR", "Invalid file path") from None
    if found is None:
        raise LocalReply("NOT_FOUND", "No such file")
    path, st = found
    etag = _etag(st)
    mtime = int(st.st_mtime)
    headers = [
        ("ETag", etag),
        ("Last-Modified", email.utils.formatdate(mtime, usegmt=True)),
        ("Cache-Control", f"max-age={site.max_age}"),
        ("X-Request-Id", ex.request_id),
    ]
    if _not_modified(ex, etag, mtime):
        await _send_local(ex, 304, headers, None)
        return
    headers[:0] = [("Content-Type", _content_type(path)), ("Content-Length", str(st.st_size))]
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below, after the last chunk
    except OSError:
        raise LocalReply("NOT_FOUND", "No such file") from None
    with file:
        await _send_local(ex, 200, headers, file if ex.method == "GET" else None, CHUNK)


async def _send_local(
    ex: Exchange, status: int, headers: list[tuple[str, str]], body: BinaryIO | None, chunk: int = CHUNK
) -> None:
    """Stream an answer of the gateway's own (a static file): the head, then ``body`` read
    ``chunk`` bytes at a time, each after the client took the one before."""
    if ex.done:
        return
    ex.pending = None
    headers = [*headers, ("traceparent", ex.traceparent), *ex.limit_headers]
    ex.status = status
    ex.response_started = True
    conn = ex.conn
    conn.send_head(status, headers, True)
    while body is not None and (data := body.read(chunk)):
        ex.bytes_sent += len(data)
        drained = conn.write(data)
        if drained is not None:
            await drained
        if ex.done or conn.closed:
            return  # the client went away (on_connection_close completed the exchange)
    ex.response_complete = True
    conn.finish()
    ex.complete()


def redirect_location(config: RedirectConfig, tail: str, query: str) -> str:
    """Where a ``redirect`` route sends a request: ``to``, with the matched tail for a ``*``."""
    to = config.to
    if to.endswith("*"):
        to = to[:-1].rstrip("/") + tail or "/"
    return f"{to}?{query}" if query else to
