"""Locust load test for a running fastgw: the plain proxy route and the built-in health check.

Locust is an optional extra (``pip install '.[bench]'``); bench/run.sh does not need it. Start a
gateway whose ``/*`` route proxies to something that answers ``GET /`` (bench/run.sh's layout,
or any config), then run headless for a bounded time:

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 30s --host http://127.0.0.1:8080

``-u`` users, spawned ``-r`` per second, for ``-t``; add ``--csv out/locust`` to keep the stats.
Each user sends its next request as soon as the previous one is answered (closed loop); set
``FASTGW_BENCH_WAIT`` (seconds) to add think time. ``FASTGW_BENCH_PATH`` changes the proxied
path (default ``/``).

Locust measures from Python with gevent; on the same 2-core machine it saturates long before
the gateway does, so its requests/s are a floor for the whole system, not the gateway's
capacity. Use it for mixed-traffic and error-rate checks; use bench/run.sh (wrk) for throughput.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, constant, task

PROXY_PATH = os.environ.get("FASTGW_BENCH_PATH", "/")
WAIT = float(os.environ.get("FASTGW_BENCH_WAIT", "0"))


class GatewayUser(FastHttpUser):
    """Ten proxied requests for every health check, as a load balancer plus clients would send."""

    wait_time = constant(WAIT)

    @task(10)
    def proxy(self) -> None:
        with self.client.get(PROXY_PATH, name="proxy " + PROXY_PATH, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
            elif not resp.headers.get("X-Request-Id"):
                resp.failure("no X-Request-Id header: did this come through the gateway?")
            else:
                resp.success()

    @task(1)
    def health(self) -> None:
        with self.client.get("/health", name="/health", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            try:
                status = resp.json().get("status")
            except ValueError:
                status = None
            if status == "ok":
                resp.success()
            else:
                resp.failure(f"unexpected body: {resp.text[:200]!r}")
