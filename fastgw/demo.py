"""``fastgw demo``: a working gateway in one command, with nothing to install or configure.

The demo upstream is an echo server in the same process and event loop: it answers every
request with what it received (so a newcomer sees the headers the gateway adds and removes)
and serves a short server-sent event stream to show streaming.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import shutil
import sys
import tempfile

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

from .config import Config, config_from_dict, parse_listen


class EchoHandler(tornado.web.RequestHandler):
    """Answers with the request it received, as JSON."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def _echo(self) -> None:
        request = self.request
        body = request.body
        self.write(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": dict(request.headers.get_all()),
                "body": body.decode("utf-8", "replace"),
                "bodyBytes": len(body),
            }
        )

    get = post = put = patch = delete = options = _echo

    def head(self) -> None:
        self.set_header("Content-Type", "application/json")


class EventsHandler(tornado.web.RequestHandler):
    """Five server-sent events, 300 ms apart, each flushed as it is produced."""

    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        try:
            for n in range(1, 6):
                self.write(f"id: {n}\ndata: {json.dumps({'tick': n})}\n\n")
                await self.flush()
                await asyncio.sleep(0.3)
        except StreamClosedError:
            pass  # the client stopped listening


def echo_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/events", EventsHandler), (r"/.*", EchoHandler)])


DEMO_TOKEN = "demo-token"


def demo_config(listen: str, upstream_port: int, store_dir: str) -> Config:
    return config_from_dict(
        {
            "server": {"listen": listen, "metrics_listen": None, "workers": 1},
            "store": f"sqlite:///{store_dir}/demo.db",
            "auth": {
                "tokens": [
                    {
                        "token": DEMO_TOKEN,
                        "user_id": "demo",
                        "role": "admin",
                        "scopes": ["rpc"],
                        "plan": "pro",
                    }
                ]
            },
            "upstreams": {"echo": {"targets": [f"http://127.0.0.1:{upstream_port}"]}},
            "routes": [
                {"path": "/echo/*", "upstream": "echo", "auth": "none", "strip_prefix": True},
                {"path": "/events", "upstream": "echo", "auth": "none", "methods": ["GET"]},
                {"path": "/api/*", "upstream": "echo"},
            ],
        },
        env={},
    )


def curl_lines(listen: str) -> list[str]:
    host, port = parse_listen(listen)
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    return [
        f"curl -s {base}/health",
        f"curl -s {base}/echo/hello?name=world",
        f"curl -s -X POST -d '{{\"hello\":\"world\"}}' -H 'Content-Type: application/json' {base}/echo/items",
        f"curl -sN {base}/events",
        f"curl -s -H 'Authorization: Bearer {DEMO_TOKEN}' {base}/api/orders/42",
        f"curl -s -i {base}/nowhere",
    ]


def run_demo(listen: str) -> int:
    from .server import run

    upstream_sockets = bind_sockets(0, "127.0.0.1")
    upstream_port = upstream_sockets[0].getsockname()[1]
    # The demo leaves nothing behind: its store lives in a temporary directory.
    store_dir = tempfile.mkdtemp(prefix="fastgw-demo-")
    atexit.register(shutil.rmtree, store_dir, True)
    config = demo_config(listen, upstream_port, store_dir)

    def ready() -> None:
        HTTPServer(echo_app()).add_sockets(upstream_sockets)
        print(f"fastgw demo listening on {listen}; try:\n", flush=True)
        for line in curl_lines(listen):
            print(f"  {line}")
        print("\nCtrl-C to stop.", flush=True)
        sys.stdout.flush()

    return run(config, on_ready=ready)
