"""A deliberately naive Tornado reverse proxy: the baseline fastgw is compared with in bench/run.sh.

It is what one writes in ten minutes with stock Tornado: buffer the whole request, fetch the
upstream with ``AsyncHTTPClient`` (the pure-Python ``simple`` client, ``max_clients=100``), then
write the whole buffered response. No streaming, no header hygiene, no error envelope. It runs on
Tornado's default asyncio loop (no uvloop), one process.

    python bench/naive_proxy.py --listen 127.0.0.1:8080 --upstream http://127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio

import tornado.httpclient
import tornado.web

# Headers that describe one hop or that Tornado computes itself when it writes the response.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class ProxyHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = SUPPORTED_METHODS

    def initialize(self, upstream: str, client: tornado.httpclient.AsyncHTTPClient) -> None:
        self.upstream = upstream
        self.client = client

    async def _proxy(self) -> None:
        request = self.request
        headers = {k: v for k, v in request.headers.get_all() if k.lower() not in HOP_BY_HOP}
        method = request.method or "GET"
        body = request.body if method in ("POST", "PUT", "PATCH") else None
        response = await self.client.fetch(
            self.upstream + request.uri,
            method=method,
            headers=headers,
            body=body,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            decompress_response=False,
            raise_error=False,
        )
        if response.code == 599:  # Tornado's "no HTTP response" code: connect error or timeout.
            self.set_status(502)
            self.finish(b"bad gateway\n")
            return
        self.set_status(response.code, response.reason)
        for name in ("Content-Type", "Server", "Date"):  # Tornado's defaults; the upstream's win
            self.clear_header(name)
        for name, value in response.headers.get_all():
            if name.lower() not in HOP_BY_HOP:
                self.add_header(name, value)
        if response.body and method != "HEAD":
            self.write(response.body)
        self.finish()

    get = head = post = put = patch = delete = options = _proxy


def make_app(upstream: str) -> tornado.web.Application:
    tornado.httpclient.AsyncHTTPClient.configure(
        "tornado.simple_httpclient.SimpleAsyncHTTPClient", max_clients=100
    )
    client = tornado.httpclient.AsyncHTTPClient()
    return tornado.web.Application(
        [(r".*", ProxyHandler, {"upstream": upstream.rstrip("/"), "client": client})]
    )


async def serve(listen: str, upstream: str) -> None:
    host, _, port = listen.rpartition(":")
    app = make_app(upstream)
    app.listen(int(port), address=host or "127.0.0.1", xheaders=False)
    print(f"naive proxy on {listen} -> {upstream}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--upstream", default="http://127.0.0.1:8081")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.listen, args.upstream))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
