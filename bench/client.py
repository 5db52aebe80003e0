"""Small HTTP/1.1 client for bench/run.sh: sanity checks and the idle keep-alive memory test.

    python bench/client.py check URL [--method POST --body-size 16384] [--status 200 --size 1024]
                                     [--body-match REGEX] [--header 'Name: value']... [--repeat 3]
        Sends --repeat requests one after the other on ONE keep-alive connection and checks
        each answer's status and body size. Because the requests share a connection, a server
        that did not read a request body fully (or closed the connection) fails the check.
        Exit 0 if every answer matched, 1 otherwise (the reason on stderr).

    python bench/client.py idle URL --pid PID [--connections 2000] [--timeout 60]
        Reads the resident memory of PID and its child processes, opens --connections
        keep-alive connections that each make one GET of URL and then stay open, waits a
        moment, reads the memory again, closes everything. Prints one line:
        ``rss_idle_kb rss_loaded_kb opened failed``. Bounded by --timeout seconds.

Only 127.0.0.1 / localhost URLs are accepted: this is a benchmark helper, not a load tool.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import sys
import time
from urllib.parse import urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class HttpError(Exception):
    pass


def split_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOCAL_HOSTS:
        raise SystemExit(f"client.py: only http://127.0.0.1 URLs, not {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


def build_request(method: str, host: str, port: int, path: str, headers: list[str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
        if not any(h.lower().startswith("content-type:") for h in headers):
            lines.append("Content-Type: application/octet-stream")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: (status, lower-cased headers, body). Content-Length or chunked bodies."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        what = "truncated response head" if exc.partial else "the connection closed before a response"
        raise HttpError(what) from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await _skip_trailers(reader)
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        raise HttpError("response without Content-Length or chunked encoding (cannot keep alive)")
    return int(parts[1]), headers, body


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    while (await reader.readuntil(b"\r\n")) != b"\r\n":
        pass


async def check(args: argparse.Namespace) -> int:
    host, port, path = split_url(args.url)
    body = b"x" * args.body_size
    request = build_request(args.method, host, port, path, args.header, body)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for i in range(1, args.repeat + 1):
            writer.write(request)
            await writer.drain()
            status, headers, got = await read_response(reader)
            problems = []
            if status != args.status:
                problems.append(f"status {status} (want {args.status})")
            if args.size is not None and len(got) != args.size:
                problems.append(f"{len(got)} body bytes (want {args.size})")
            if args.body_match and not re.search(args.body_match, got.decode("latin-1"), re.MULTILINE):
                problems.append(f"body does not match {args.body_match!r}")
            if headers.get("connection", "").lower() == "close":
                problems.append("Connection: close")
            if problems:
                print(
                    f"client.py: {args.method} {args.url} request {i}/{args.repeat}: " + ", ".join(problems),
                    f"body starts {got[:200]!r}",
                    file=sys.stderr,
                )
                return 1
    finally:
        writer.close()
    return 0


def tree_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` plus every descendant, in KiB (0 if ``pid`` is gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, ()))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


async def idle(args: argparse.Namespace) -> int:
    host, port, path = split_url(args.url)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    request = build_request("GET", host, port, path, [], b"")
    deadline = time.monotonic() + args.timeout
    rss_idle = tree_rss_kb(args.pid)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failed = 0
    gate = asyncio.Semaphore(64)  # connects in flight at once: don't overflow the listen backlog

    async def one() -> None:
        nonlocal failed
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                failed += 1
                return
            try:
                writer.write(request)
                await writer.drain()
                status, _, _ = await read_response(reader)
            except (OSError, HttpError, asyncio.IncompleteReadError, ValueError):
                status = 0
            if status == 200:
                conns.append((reader, writer))
            else:
                failed += 1
                writer.close()

    try:
        await asyncio.wait_for(
            asyncio.gather(*(one() for _ in range(args.connections))), max(1.0, deadline - time.monotonic())
        )
        await asyncio.sleep(args.settle)
        alive = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
        rss_loaded = tree_rss_kb(args.pid)
    except TimeoutError:
        print(f"client.py: idle test did not finish within {args.timeout}s", file=sys.stderr)
        return 1
    finally:
        for _, w in conns:
            w.close()
    closed_early = len(conns) - alive  # connections the server closed although they were idle
    print(rss_idle, rss_loaded, alive, failed + closed_early)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check")
    c.add_argument("url")
    c.add_argument("--method", default="GET")
    c.add_argument("--body-size", type=int, default=0)
    c.add_argument("--status", type=int, default=200)
    c.add_argument("--size", type=int, default=None)
    c.add_argument("--body-match", default=None, help="a regular expression the body must contain")
    c.add_argument("--header", action="append", default=[])
    c.add_argument("--repeat", type=int, default=3)
    i = sub.add_parser("idle")
    i.add_argument("url")
    i.add_argument("--pid", type=int, required=True)
    i.add_argument("--connections", type=int, default=2000)
    i.add_argument("--timeout", type=float, default=60.0)
    i.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading RSS")
    args = parser.parse_args()
    run = check if args.command == "check" else idle
    try:
        code = asyncio.run(asyncio.wait_for(run(args), args.timeout + 10 if args.command == "idle" else 30.0))
    except (OSError, HttpError, asyncio.IncompleteReadError, TimeoutError) as exc:
        print(f"client.py: {args.command} {args.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
