"""Request framing against a real gateway: the http-desync-guardian corpus, and HARDENING §4.A extras.

The corpus (aws/http-desync-guardian ``tests/*.yaml``) describes each request as a method, a URI, a
version and a list of headers, with the tier the library gives it. Each case is turned into raw
bytes and sent on its own connection to a real gateway process (one process per corpus file, all
in front of one recording upstream). What is expected, by tier:

- Severe: 400 (the gateway's JSON envelope or Tornado's bare 400), the connection closed by the
  gateway, and nothing reached the upstream.
- Compliant, Acceptable: served, a 2xx from the upstream, which saw exactly one request.
- Ambiguous: refused like a Severe case (400, nothing forwarded), or forwarded as exactly one
  request whose framing no upstream can read two ways (see ``_framing_problems``).

How a case becomes bytes:

- request line ``METHOD URI VERSION``; an empty version (HTTP/0.9) gives ``METHOD URI``;
- each header as ``name: value``. YAML has already turned escapes into characters: a character
  up to U+00FF is sent as that one byte (``"\\x01"``, ``"\\xa0"``, ``"\\x88"`` are raw bytes, as the
  corpus README's ``"some value\\xff"`` means), anything above as UTF-8 (``ſ``, ``ı``, ``―``). A plain
  (unquoted) YAML scalar keeps its backslashes: ``/foo/bar\\t/baz`` is sent with a backslash and a t;
- two headers of ours: ``X-Case-Id`` (to find the case's request at the upstream; the URI belongs
  to the case) and, when the case has no Host and its version is HTTP/1.1 or a later 1.x (where
  Host is mandatory), ``Host: gw.example``. They go first, except when the case's first header
  starts with SP or HTAB: then they go last, so that this line stays the first header line (the
  smuggling form the case is about) instead of becoming an obs-fold of our Host;
- a body when the case frames one: with ``Transfer-Encoding`` whose last coding is ``chunked``,
  one data chunk and the last chunk (``5\\r\\nhello\\r\\n0\\r\\n\\r\\n``); else with ``Content-Length``
  lines that all carry the same plain decimal, that many bytes; else none.

The corpus lives outside the repository, in ``shared/corpora/`` beside it;
``FASTGW_DESYNC_CORPUS`` points elsewhere. Without it ``test_the_corpus_is_there`` fails: a
missing corpus must never pass as a clean run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import GatewayProcess
from tests.upstream_server import Recorded, UpstreamServer

# shared/ sits beside the repository (in CI too); FASTGW_DESYNC_CORPUS overrides.
CORPUS = Path(
    os.environ.get(
        "FASTGW_DESYNC_CORPUS",
        str(Path(__file__).resolve().parents[3] / "shared" / "corpora" / "http-desync-guardian"),
    )
)
TOKEN = "desync-corpus-token-0123456789"
HOST = b"gw.example"
CHUNKED_BODY = (b"5\r\nhello\r\n0\r\n\r\n", b"hello")
READ_TIMEOUT = 3.0  # for the first response
CLOSE_TIMEOUT = 1.0  # for the gateway to close, or to answer anything else, after it
MAX_BODY = 8 << 20  # the gateway's body_limit


# -- the corpus ------------------------------------------------------------------------------


def wire(text: object) -> bytes:
    """YAML text to bytes: U+0000..U+00FF as that byte, anything above as UTF-8."""
    value = "" if text is None else str(text)
    return b"".join(bytes([ord(ch)]) if ord(ch) < 256 else ch.encode() for ch in value)


@dataclass(frozen=True)
class Case:
    key: str  # the corpus file: each file gets its own gateway process
    name: str
    tier: str
    method: bytes
    uri: bytes
    version: bytes
    headers: tuple[tuple[bytes, bytes], ...]

    @property
    def case_id(self) -> str:
        return "c-" + hashlib.sha1(f"{self.key}|{self.name}".encode()).hexdigest()[:16]


def load_cases() -> list[Any]:
    if not CORPUS.is_dir():
        return []
    params = []
    for path in sorted(CORPUS.glob("*.yaml")):
        seen: dict[str, int] = {}
        for doc in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            name = str(doc["name"])
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:  # acceptable.yaml names a GET and a HEAD case alike
                name = f"{name} ({doc['method']})"
            case = Case(
                key=path.name,
                name=name,
                tier=str(doc["expected"]["tier"]),
                method=wire(doc["method"]),
                uri=wire(doc["uri"]),
                version=wire(doc["version"]),
                headers=tuple((wire(h["name"]), wire(h["value"])) for h in doc.get("headers") or []),
            )
            params.append(pytest.param(case, id=f"{path.name}: {name}"))
    return params


def content_length(headers: tuple[tuple[bytes, bytes], ...]) -> int | None:
    values = [
        part.strip(b" \t")
        for name, value in headers
        if name.lower() == b"content-length"
        for part in value.split(b",")
    ]
    if values and all(v.isdigit() and v == values[0] for v in values):
        return int(values[0])
    return None


def is_chunked(headers: tuple[tuple[bytes, bytes], ...]) -> bool:
    codings = [
        part.split(b";")[0].strip(b" \t").lower()
        for name, value in headers
        if name.lower() == b"transfer-encoding"
        for part in value.split(b",")
    ]
    return bool(codings) and codings[-1] == b"chunked"


def build(case: Case) -> tuple[bytes, bytes]:
    """The bytes to send, and the body a gateway reading the case's framing gets out of them."""
    line = case.method + b" " + case.uri
    if case.version:
        line += b" " + case.version
    ours = [(b"X-Case-Id", case.case_id.encode())]
    needs_host = re.match(rb"HTTP/1\.[1-9]", case.version) is not None
    if needs_host and not any(name.lower() == b"host" for name, _ in case.headers):
        ours.insert(0, (b"Host", HOST))
    headers = list(case.headers)
    if headers and headers[0][0][:1] in (b" ", b"\t"):
        headers = headers + ours
    else:
        headers = ours + headers
    head = line + b"\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    if is_chunked(case.headers):
        return head + CHUNKED_BODY[0], CHUNKED_BODY[1]
    length = content_length(case.headers)
    if length and length <= MAX_BODY:  # above it, the gateway must refuse before any body byte
        body = (b"0123456789" * (length // 10 + 1))[:length]
        return head + body, body
    return head, b""


# -- one exchange on a raw socket ------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def style(self) -> str:
        """Who wrote it: the gateway's JSON envelope, Tornado's bare answer, or the upstream."""
        if self.header("x-upstream") == "yes":
            return "upstream"
        try:
            doc = json.loads(self.body)
            return f"envelope {doc['error']['code']}"
        except (ValueError, KeyError, TypeError):
            return "bare (Tornado)"


@dataclass
class Reply:
    responses: list[Response] = field(default_factory=list)  # final ones, in order
    interim: list[int] = field(default_factory=list)  # 1xx statuses
    closed_by_gateway: bool | None = None  # EOF or reset before we half-closed (None: not watched)
    timed_out: bool = False
    raw: bytes = b""

    def summary(self) -> str:
        if self.timed_out and not self.responses:
            what = "no response within the timeout"
        else:
            what = ", ".join(f"{r.status} [{r.style()}]" for r in self.responses) or "no response"
        if self.interim:
            what += f"; interim {self.interim}"
        if self.closed_by_gateway is not None:
            what += (
                "; connection closed by the gateway" if self.closed_by_gateway else "; connection left open"
            )
        return what


def _parse_response(buf: bytes, head_request: bool, eof: bool) -> tuple[Response, int] | None:
    """One response from the start of ``buf`` and its length, or None if it is not complete yet."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return (Response(0, [], buf), len(buf)) if eof and buf else None
    lines = buf[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[0].startswith("HTTP/") and parts[1].isdigit() else 0
    headers = [(n.strip().lower(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:])]
    known = dict(headers)
    pos = end + 4
    if status < 200 or status in (204, 304) or head_request:
        return Response(status, headers, b""), pos
    if known.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(buf[pos:line_end].split(b";")[0], 16)
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", line_end)
                return (Response(status, headers, body), trailer_end + 4) if trailer_end >= 0 else None
            if len(buf) < line_end + 2 + size + 2:
                return None
            body += buf[line_end + 2 : line_end + 2 + size]
            pos = line_end + 2 + size + 2
    if "content-length" in known:
        size = int(known["content-length"])
        return (
            (Response(status, headers, buf[pos : pos + size]), pos + size) if len(buf) >= pos + size else None
        )
    return (Response(status, headers, buf[pos:]), len(buf)) if eof else None


def exchange(port: int, payload: bytes, head_request: bool = False, wait_close: bool = False) -> Reply:
    """Send ``payload`` on a new connection; read the first final response, then what follows.

    With ``wait_close``, or after an error status, give the gateway a moment to close on its own
    (a refusal must); then half-close and read whatever else it answers (a second response means
    a second request).
    """
    reply = Reply()
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    buf = b""
    eof = False

    def read_until(deadline: float, done: Any) -> None:
        nonlocal buf, eof
        while not eof and not done() and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:  # reset: the gateway closed with our data unread
                data = b""
            if not data:
                eof = True
            buf += data
            reply.raw += data

    def take() -> bool:
        """Move complete responses out of ``buf``; True once there is a final one."""
        nonlocal buf
        while buf:
            parsed = _parse_response(buf, head_request, eof)
            if parsed is None:
                break
            response, used = parsed
            buf = buf[used:]
            if 100 <= response.status < 200:
                reply.interim.append(response.status)
            else:
                reply.responses.append(response)
        return bool(reply.responses)

    try:
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the gateway may close before reading a body it refused: read its answer anyway
        read_until(time.monotonic() + READ_TIMEOUT, take)
        take()
        reply.timed_out = not reply.responses and not eof
        if wait_close or (reply.responses and reply.responses[0].status >= 400):
            read_until(time.monotonic() + CLOSE_TIMEOUT, lambda: False)
            reply.closed_by_gateway = eof
        if not eof:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            read_until(time.monotonic() + CLOSE_TIMEOUT, lambda: False)
        take()
        if buf:
            reply.responses.append(Response(0, [], buf))  # trailing garbage, kept for the report
    finally:
        sock.close()
    return reply


# -- gateways and upstream -------------------------------------------------------------------


def gateway_config(upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "server": {"body_limit": "8MiB", "workers": 1},
        "auth": {"tokens": [{"token": TOKEN, "user_id": "corpus"}]},
        "upstreams": {"svc": {"targets": [upstream.url], "read_timeout": "5s", "connect_timeout": "1s"}},
        "routes": [
            {"path": "/*", "upstream": "svc", "auth": "none"},
            # Large enough for A-35's 1 GB Content-Length: authentication, not the size, refuses it.
            {"path": "/private/*", "upstream": "svc", "auth": "required", "body_limit": "2GiB"},
        ],
    }


class Gateways:
    """One gateway process per key (corpus file), started on first use; one runs at a time."""

    def __init__(self, upstream: UpstreamServer, factory: pytest.TempPathFactory) -> None:
        self.upstream = upstream
        self.factory = factory
        self.key: str | None = None
        self.gw: GatewayProcess | None = None

    def get(self, key: str) -> GatewayProcess:
        if self.gw is not None and self.key == key and self.gw.proc.poll() is None:
            return self.gw
        self.stop()
        tmp = self.factory.mktemp(re.sub(r"[^A-Za-z0-9]+", "-", key))
        self.key, self.gw = key, GatewayProcess(gateway_config(self.upstream), tmp)
        return self.gw

    def stop(self) -> None:
        if self.gw is not None:
            self.gw.stop(signal.SIGKILL)
            self.gw = None


@pytest.fixture(scope="module")
def recording_upstream() -> Iterator[UpstreamServer]:
    server = UpstreamServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateways(
    recording_upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateways]:
    pool = Gateways(recording_upstream, tmp_path_factory)
    yield pool
    pool.stop()


@dataclass
class Outcome:
    reply: Reply
    tagged: list[Recorded]  # upstream requests carrying this case's X-Case-Id
    others: list[Recorded]  # any other request the upstream completed meanwhile (smuggled ones)
    heads: list[bytes]  # heads of this case that reached the upstream, body complete or not
    stderr: str  # what the gateway logged meanwhile


def run(
    gateways: Gateways,
    key: str,
    case_id: str,
    payload: bytes,
    head_request: bool = False,
    wait_close: bool = False,
) -> Outcome:
    gw = gateways.get(key)
    upstream = gateways.upstream
    seen, heads, logged = len(upstream.requests), len(upstream.heads), len(gw.stderr)
    reply = exchange(gw.port, payload, head_request, wait_close)
    new = upstream.requests[seen:]
    tagged = [r for r in new if r.header("X-Case-Id") == case_id]
    others = [r for r in new if r.header("X-Case-Id") != case_id]
    assert gw.proc.poll() is None, f"the gateway exited: {''.join(gw.stderr[-20:])}"
    tag = f"x-case-id: {case_id}\r\n".encode().lower()
    arrived = [h for h in upstream.heads[heads:] if tag in h.lower()]
    return Outcome(reply, tagged, others, arrived, "".join(gw.stderr[logged:]))


# -- expectations ----------------------------------------------------------------------------


def _letters(name: str) -> str:
    return "".join(ch for ch in name.lower() if "a" <= ch <= "z")


def _framing_problems(seen: Recorded, body: bytes) -> list[str]:
    """One upstream request that no upstream can frame two ways, carrying ``body``.

    At most one framing header (exactly one when there is a body), ``Transfer-Encoding`` only as
    ``chunked``, a ``Content-Length`` that matches, and no look-alike of either (``Transfer_Encoding``,
    ``Transfer---Encoding``: some backends map such names onto the real ones).
    """
    problems = []
    framing = [(n, v) for n, v in seen.headers if n.lower() in ("content-length", "transfer-encoding")]
    if len(framing) > 1:
        problems.append(f"upstream got {len(framing)} framing headers: {framing}")
    elif body and not framing:
        problems.append("upstream got a body without Content-Length or Transfer-Encoding")
    for name, value in framing:
        if name.lower() == "transfer-encoding" and value != "chunked":
            problems.append(f"upstream got Transfer-Encoding {value!r}")
        if name.lower() == "content-length" and value != str(len(seen.body)):
            problems.append(f"upstream got Content-Length {value!r} for {len(seen.body)} bytes")
    lookalikes = [
        n
        for n, _ in seen.headers
        if _letters(n) in ("contentlength", "transferencoding")
        and n.lower() not in ("content-length", "transfer-encoding")
    ]
    if lookalikes:
        problems.append(f"upstream got look-alike framing headers {lookalikes}")
    if seen.body != body:
        problems.append(f"upstream body {seen.body[:60]!r} ({len(seen.body)} bytes), sent {body[:60]!r}")
    return problems


def refusal_problems(outcome: Outcome, need_close: bool, head_may_reach: bool = False) -> list[str]:
    """Problems with a refusal: not one 400, the connection left open when it must close, or
    anything of the request at the upstream (its head too, unless ``head_may_reach``: a body
    error found while the request already streams upstream)."""
    reply, problems = outcome.reply, []
    if not reply.responses or reply.responses[0].status != 400:
        problems.append(f"expected 400, got {reply.summary()}")
    elif len(reply.responses) > 1:
        problems.append(f"more than one response: {reply.summary()}")
    elif need_close and not reply.closed_by_gateway:
        problems.append("the gateway left the connection open after refusing")
    if outcome.tagged or outcome.others:
        problems.append(f"the upstream saw {len(outcome.tagged) + len(outcome.others)} request(s)")
    elif outcome.heads and not head_may_reach:
        problems.append(f"the upstream saw {len(outcome.heads)} request head(s): {outcome.heads[:2]!r}")
    return problems


def served_problems(outcome: Outcome, body: bytes) -> list[str]:
    reply, problems = outcome.reply, []
    first = reply.responses[0] if reply.responses else None
    if first is None or not 200 <= first.status < 300 or first.header("x-upstream") != "yes":
        problems.append(f"expected a 2xx from the upstream, got {reply.summary()}")
    if len(reply.responses) > 1:
        problems.append(f"more than one response: {reply.summary()}")
    if len(outcome.tagged) != 1 or outcome.others:
        tagged, others = len(outcome.tagged), len(outcome.others)
        problems.append(f"the upstream saw {tagged} request(s) of this case and {others} other(s)")
    if len(outcome.tagged) == 1:
        problems += _framing_problems(outcome.tagged[0], body)
    return problems


def describe(payload: bytes, outcome: Outcome, problems: list[str]) -> str:
    shown = payload if len(payload) <= 700 else payload[:700] + b"...(%d bytes)" % len(payload)
    lines = [f"request: {shown!r}", f"gateway: {outcome.reply.summary()}"]
    lines += [f"upstream saw: {r.method} {r.target} {r.headers} body={r.body[:40]!r}" for r in outcome.tagged]
    lines += [f"upstream also saw: {r.method} {r.target} {r.headers}" for r in outcome.others]
    return "\n".join(problems + lines)


# -- the corpus, one gateway per file --------------------------------------------------------


_TE_POLICY = "only 'chunked' is supported as a transfer coding (HARDENING A-06/A-07: 400)"
_STRICT = "the gateway's codec is stricter than the corpus here (400, connection closed)"
_PATH = "SPEC section 3: encoded control characters in the path are 400"
_RAW_NON_ASCII = "non-ASCII bytes in the request target must be percent-encoded"
_VERSION = "only HTTP/1.0 and HTTP/1.1 are served (HARDENING A-29: other versions are 400)"

# Compliant or Acceptable cases that the gateway refuses on purpose, and why. A refusal is a
# clean 400 with nothing forwarded, checked like a Severe case (minus the close).
DELIBERATE_REFUSALS: dict[str, str] = {
    "acceptable.yaml: No TE/CL headers, some others are non-compliant": _STRICT,
    "acceptable.yaml: TE and some others are non-compliant": _STRICT,
    "acceptable.yaml: A non-essential header with a non-printable character (x01)": _STRICT,
    "acceptable.yaml: CL and some others are non-compliant": _STRICT,
    "acceptable.yaml: Non-RFC, but OK HTTP/0.9": _STRICT,
    "acceptable.yaml: Unknown but OK HTTP/1.2": _VERSION,
    "acceptable.yaml: Empty version, which means HTTP/0.9": _STRICT,
    "bad-header-characters.yaml: Some-Header\\x01": _STRICT,
    "bad-header-characters.yaml: \\x01Some-Header": _STRICT,
    "bad-header-characters.yaml: Some-Header: \\x01value": _STRICT,
    "bad-header-characters.yaml: Some-Header: value\\x01": _STRICT,
    "more-compliant-tests.yaml: Correct TE OK": _TE_POLICY,
    "more-compliant-tests.yaml: Transfer-Encoding: identity and chunked OK": _TE_POLICY,
    "more-compliant-tests.yaml: Multiple transfer encoding headers in a single request OK": _TE_POLICY,
    "more-compliant-tests.yaml: TE with custom parameters OK": _TE_POLICY,
    "rfc-compliant.yaml: Different Transfer-Encoding headers": _TE_POLICY,
    "rfc-compliant.yaml: Different Transfer-Encoding headers combined": _TE_POLICY,
    "rfc-compliant.yaml: Transfer-Encoding with a param: chunked;custom_param": _TE_POLICY,
    "rfc-compliant.yaml: International in URI": _RAW_NON_ASCII,
    "rfc-compliant.yaml: Empty URI": _STRICT,
    "uri-specific-test-cases.yaml: Extra spaces in version": _STRICT,
    "uri-specific-test-cases.yaml: [space] in URI": _STRICT,
    "uri-specific-test-cases.yaml: %09 in URI is OK": _PATH,
    "uri-specific-test-cases.yaml: %0D in URI is OK": _PATH,
    "uri-specific-test-cases.yaml: %0A in URI is OK": _PATH,
}


def test_the_corpus_is_there() -> None:
    assert CORPUS.is_dir(), f"http-desync-guardian corpus not found at {CORPUS} (FASTGW_DESYNC_CORPUS)"
    assert len(load_cases()) >= 100, f"only {len(load_cases())} cases under {CORPUS}"


@pytest.mark.parametrize("case", load_cases())
def test_corpus_case(case: Case, gateways: Gateways, record_property: Any) -> None:
    payload, body = build(case)
    severe = case.tier == "Severe"
    outcome = run(gateways, case.key, case.case_id, payload, case.method == b"HEAD", wait_close=severe)
    first = outcome.reply.responses[0] if outcome.reply.responses else None
    record_property("gateway_answer", outcome.reply.summary())
    if severe:
        problems = refusal_problems(outcome, need_close=True)
    elif f"{case.key}: {case.name}" in DELIBERATE_REFUSALS:
        problems = refusal_problems(outcome, need_close=False)
    elif case.tier in ("Compliant", "Acceptable"):
        problems = served_problems(outcome, body)
    elif case.tier == "Ambiguous":
        if first is not None and first.status == 400:
            problems = refusal_problems(outcome, need_close=False)
        else:
            problems = served_problems(outcome, body)
            if problems:
                problems.insert(0, "neither refused (400, nothing forwarded) nor forwarded unambiguously")
    else:
        pytest.fail(f"unknown tier {case.tier!r}")
    assert not problems, f"[{case.tier}] " + describe(payload, outcome, problems)


# -- HARDENING §4.A cases the corpus does not have -------------------------------------------


def _chunked_post(case_id: str, chunks: bytes) -> bytes:
    head = (
        b"POST /hardening HTTP/1.1\r\nHost: gw.example\r\nX-Case-Id: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return head % case_id.encode() + chunks


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"0x1\r\nZ\r\n0\r\n\r\n", id="A-17 size 0x1"),
        pytest.param(b"+1\r\nZ\r\n0\r\n\r\n", id="A-17 size +1"),
        pytest.param(b" 1\r\nZ\r\n0\r\n\r\n", id="A-17 size SP 1"),
        pytest.param(b"1\nZ\r\n0\r\n\r\n", id="A-19 bare LF after the size"),
        pytest.param(b"1\rXZ\r\n0\r\n\r\n", id="A-19 CR X after the size"),
        pytest.param(b"1\r\nZXX0\r\n\r\n", id="A-21 no CRLF after the chunk data"),
    ],
)
def test_bad_chunk_framing_is_refused(chunks: bytes, gateways: Gateways, request: Any) -> None:
    case_id = "h-" + re.sub(r"\W+", "-", request.node.callspec.id)
    payload = _chunked_post(case_id, chunks)
    outcome = run(gateways, "hardening", case_id, payload, wait_close=True)
    # The head may reach the upstream before the body is parsed (the proxy streams): what must
    # never happen is a completed request there.
    problems = refusal_problems(outcome, need_close=True, head_may_reach=True)
    if "Traceback" in outcome.stderr or "AssertionError" in outcome.stderr:
        problems.append(f"the gateway logged a traceback: {outcome.stderr[-2000:]}")
    assert not problems, describe(payload, outcome, problems)


def test_a22_trailers_are_refused_or_dropped(gateways: Gateways) -> None:
    case_id = "h-a22-trailers"
    payload = _chunked_post(case_id, b"1\r\nZ\r\n0\r\nX-T: 1\r\n\r\n")
    outcome = run(gateways, "hardening", case_id, payload)
    reply = outcome.reply
    if reply.responses and reply.responses[0].status == 400:
        problems = refusal_problems(outcome, need_close=False)
    else:
        problems = served_problems(outcome, b"Z")
        if outcome.tagged and outcome.tagged[0].header("X-T") is not None:
            problems.append("the trailer field was forwarded as a header")
    assert not problems, describe(payload, outcome, problems)


@pytest.mark.parametrize(
    "middle",
    [
        pytest.param(
            b"GET /hardening/a33/2 HTTP/1.1\r\nHost: gw.example\r\nNo colon here\r\n\r\n", id="no colon"
        ),
        pytest.param(
            b"POST /hardening/a33/2 HTTP/1.1\r\nHost: gw.example\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="CL and TE",
        ),
    ],
)
def test_a33_pipelined_malformed_middle_request(middle: bytes, gateways: Gateways) -> None:
    first = b"GET /hardening/a33/1 HTTP/1.1\r\nHost: gw.example\r\nX-Case-Id: h-a33\r\n\r\n"
    third = b"GET /hardening/a33/3 HTTP/1.1\r\nHost: gw.example\r\nX-Case-Id: h-a33-third\r\n\r\n"
    payload = first + middle + third
    outcome = run(gateways, "hardening", "h-a33", payload, wait_close=True)
    reply, problems = outcome.reply, []
    statuses = [r.status for r in reply.responses]
    if statuses[:1] != [200] or reply.responses[0].header("x-upstream") != "yes":
        problems.append(f"request 1 was not served first: {reply.summary()}")
    if statuses != [200, 400]:
        problems.append(f"expected responses 200 then 400, got {reply.summary()}")
    if not reply.closed_by_gateway:
        problems.append("the gateway left the connection open after the 400")
    if len(outcome.tagged) != 1:
        problems.append(f"the upstream saw request 1 {len(outcome.tagged)} times")
    if outcome.others:
        problems.append(f"the upstream saw other requests: {[r.target for r in outcome.others]}")
    assert not problems, describe(payload, outcome, problems)


def test_a35_expect_continue_without_credentials_gets_401_and_no_100(gateways: Gateways) -> None:
    payload = (
        b"POST /private/upload HTTP/1.1\r\nHost: gw.example\r\nX-Case-Id: h-a35\r\n"
        b"Content-Length: 1073741824\r\nExpect: 100-continue\r\n\r\n"
    )
    outcome = run(gateways, "hardening", "h-a35", payload, wait_close=True)
    reply, problems = outcome.reply, []
    if reply.interim or b"HTTP/1.1 100" in reply.raw:
        problems.append(f"the gateway sent 100 Continue: {reply.summary()}")
    answers = [(r.status, r.style()) for r in reply.responses]
    if answers != [(401, "envelope UNAUTHORIZED")]:
        problems.append(f"expected one 401 UNAUTHORIZED, got {reply.summary()}")
    if not reply.closed_by_gateway:
        problems.append("the gateway left the connection open with 1 GB announced and unread")
    if outcome.tagged or outcome.others:
        problems.append("the upstream saw the request")
    assert not problems, describe(payload, outcome, problems)
