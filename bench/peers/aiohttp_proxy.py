"""The best Python peer: an aiohttp server + ``ClientSession`` reverse proxy on uvloop (bench/run.sh).

What a competent Python developer would write for a streaming reverse proxy with aiohttp:

- one ``ClientSession`` for the process, with a keep-alive connection pool to the upstream (no
  per-request connection, no DNS: the upstream is an IP address), cookies and automatic
  decompression off, and no total timeout (streams may be long);
- request and response bodies are streamed, never buffered whole: the request body is handed
  to the client as the server's ``StreamReader``, the response is relayed chunk by chunk as it
  arrives with ``iter_any``; a ``Content-Length`` is kept on both sides, so small bodies are not
  turned into chunked ones;
- hop-by-hop headers (RFC 9110 7.6.1, and those named in ``Connection``) are dropped both ways;
- access logging off, one process, uvloop.

It does none of what a gateway does (auth, limits, signing, metrics). Its throughput is what
Python's most common async HTTP stack gives for pure proxying.

    python bench/peers/aiohttp_proxy.py --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def forwardable(headers: CIMultiDictProxy[str], drop_host: bool) -> CIMultiDict[str]:
    """The end-to-end headers of ``headers``: hop-by-hop ones and those named in Connection removed."""
    named = {
        token.strip().lower() for value in headers.getall("Connection", ()) for token in value.split(",")
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in named or (drop_host and lower == "host"):
            continue
        out.add(name, value)
    return out


async def proxy(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    headers = forwardable(request.headers, drop_host=False)
    body = request.content if request.body_exists else None
    response: web.StreamResponse | None = None
    try:
        async with session.request(
            request.method,
            request.app[UPSTREAM] + request.raw_path,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(forwardable(upstream.headers, drop_host=True))
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except (TimeoutError, aiohttp.ClientError, ConnectionError):
        if response is None or not response.prepared:
            return web.Response(status=502, text="bad gateway\n")
        # The client or the upstream went away mid-response: never finish a truncated body as
        # if it were complete, close the client connection instead.
        if request.transport is not None:
            request.transport.close()
        return response


async def make_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    connector = aiohttp.TCPConnector(
        limit=0,  # no cap on pooled connections: the client's concurrency decides
        keepalive_timeout=75,
        use_dns_cache=True,
        enable_cleanup_closed=False,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60),
    )
    app[SESSION] = session
    app[UPSTREAM] = upstream.rstrip("/")

    async def close_session(_app: web.Application) -> None:
        await session.close()

    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


async def serve(listen: str, upstream: str) -> None:
    host, _, port = listen.rpartition(":")
    app = await make_app(upstream)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, int(port), backlog=4096)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"aiohttp {aiohttp.__version__} proxy on {listen} -> {upstream}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--upstream", default="http://127.0.0.1:8081")
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
