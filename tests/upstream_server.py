"""A real HTTP/1.1 upstream for the tests: raw asyncio, so it records exactly what arrived.

It runs in a background thread with its own event loop and listens on 127.0.0.1. Every
request it parses is recorded (request line, header lines in wire order and casing, body), and
the path picks a behaviour:

- ``/sse``: server-sent events; the second one is sent only after the test sets ``release``.
- ``/slow/<ms>``: waits before answering.
- ``/stall``: accepts and never answers.
- ``/reset``: sends the head and half a body, then resets the connection.
- ``/chunked``: a chunked response in three parts.
- ``/big/<bytes>``: a body of that many bytes, with its Content-Length.
- ``/early``: answers at once, without reading the request body, and closes.
- ``/status/<code>``: answers with that status.
- ``/v1/chat/completions``: an OpenAI-like answer, streamed as SSE when the body asks for it
  (with a final usage event only when ``stream_options.include_usage`` is set).
- anything else: 200 with a JSON echo of the request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote


@dataclass
class Recorded:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}


@dataclass
class UpstreamServer:
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    # Every request head as soon as it arrives, before its body: a forwarded head shows here
    # even when its body never completes (``requests`` keeps only whole requests).
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.release = threading.Event()
        self.sse_sent: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> UpstreamServer:
        self._thread.start()
        self._started.wait(5)
        return self

    def stop(self) -> None:
        if self.loop.is_closed() or not self._thread.is_alive():
            return

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            self.loop.stop()

        self.release.set()
        self.loop.call_soon_threadsafe(shutdown)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
            self._started.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        if self._server is not None:
            self.loop.run_until_complete(self._server.wait_closed())
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                recorded = await _read_request(reader, self.heads)
                if recorded is None:
                    break
                self.requests.append(recorded)
                keep = await self._respond(recorded, writer)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    async def _chat(self, req: Recorded, writer: asyncio.StreamWriter) -> None:
        request = json.loads(req.body or b"{}")
        if request.get("stream"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for event in await _chat_events(request):
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            body = json.dumps(
                {"model": "gpt-json", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
            ).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        await writer.drain()

    async def _respond(self, req: Recorded, writer: asyncio.StreamWriter) -> bool:
        path = req.target.split("?", 1)[0]
        if path == "/stall":
            await asyncio.sleep(3600)
            return False
        if path.startswith("/slow/"):
            await asyncio.sleep(int(path.rsplit("/", 1)[1]) / 1000)
        if path == "/sse" or path.endswith("/sse"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for n in range(3):
                event = f"data: event-{n}\n\n".encode()
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                self.sse_sent.append(asyncio.get_running_loop().time())
                if n == 0:
                    await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 10)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if path == "/reset":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if path == "/dup-length":  # two identical Content-Length lines (RFC 9110 8.6 allows it)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()
            return True
        if path == "/close-reset":  # a close-delimited body cut by a reset (HARDENING E-06)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 500)
            await writer.drain()
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
            for n, part in enumerate((b"one,", b"two,", b"three")):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                if n == 0:  # the rest only once the client has shown it got the first chunk
                    await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 10)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if path == "/early":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly")
            await writer.drain()
            return False
        if path.startswith("/big/"):
            size = int(path.rsplit("/", 1)[1])
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"b" * 65536
            while size > 0:
                writer.write(block[: min(size, len(block))])
                size -= len(block)
                await writer.drain()
            return True
        if path == "/v1/chat/completions":
            await self._chat(req, writer)
            return True
        status = 200
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        body = json.dumps(
            {
                "method": req.method,
                "target": req.target,
                "headers": req.headers,
                "bodyBytes": len(req.body),
            }
        ).encode()
        extra = ""
        if "cc=" in req.target:  # ?cc=<Cache-Control value>, for the response cache tests
            extra = f"Cache-Control: {unquote(req.target.split('cc=', 1)[1].split('&')[0])}\r\n"
        head = (
            f"HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive, X-Upstream-Hop\r\n"
            f"X-Upstream-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Upstream: yes\r\n\r\n"
        ).encode()
        writer.write(head if req.method == "HEAD" else head + body)
        await writer.drain()
        return True


async def _chat_events(request: dict[str, object]) -> list[bytes]:
    events = [
        {"model": "gpt-test", "choices": [{"delta": {"content": word}}], "usage": None}
        for word in ("Hello", " world")
    ]
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        events.append(
            {"model": "gpt-test", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
        )
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


async def _read_request(reader: asyncio.StreamReader, heads: list[bytes]) -> Recorded | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            heads.append(exc.partial)
        return None
    heads.append(head)
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    lower = {k.lower(): v for k, v in headers}
    body = b""
    if target == "/early":
        return Recorded(method, target, headers, body)  # the body is never read
    if lower.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line[:-2], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif "content-length" in lower:
        body = await reader.readexactly(int(lower["content-length"]))
    return Recorded(method, target, headers, body)
