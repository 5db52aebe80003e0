"""Signals and processes: graceful drain, live reload, several workers."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import threading
import time
import urllib.request
from typing import Any

import yaml

from tests.upstream_server import UpstreamServer


def config(upstream: UpstreamServer, **extra: Any) -> dict[str, Any]:
    return {
        "server": {"shutdown_grace": "10s"},
        "upstreams": {"svc": {"targets": [upstream.url], "read_timeout": "10s"}},
        "routes": [
            {"path": "/slow/*", "upstream": "svc", "auth": "none"},
            {"path": "/sse", "upstream": "svc", "auth": "none"},
            {"path": "/api/*", "upstream": "svc", "auth": "none"},
        ],
        **extra,
    }


def test_sigterm_lets_an_in_flight_response_finish(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    result: list[tuple[int, bytes]] = []

    def call() -> None:
        status, _, body = gw.request("GET", "/slow/2000")
        result.append((status, body))

    thread = threading.Thread(target=call)
    thread.start()
    while not upstream.requests:
        time.sleep(0.02)
    gw.proc.send_signal(signal.SIGTERM)
    thread.join(10)
    assert result and result[0][0] == 200
    assert b'"/slow/2000"' in result[0][1]
    assert gw.proc.wait(10) == 0


def test_sighup_adds_a_route_without_cutting_a_stream(upstream: UpstreamServer, start_gateway: Any) -> None:
    cfg = config(upstream)
    gw = start_gateway(cfg)
    assert gw.request("GET", "/new/x")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", "/sse")
    resp = conn.getresponse()
    assert b"event-0" in resp.readline()
    cfg["routes"].append({"path": "/new/*", "upstream": "svc", "auth": "none"})
    gw.config_path.write_text(yaml.safe_dump(cfg))
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while gw.request("GET", "/new/x")[0] != 200:
        assert time.monotonic() < deadline, "".join(gw.stderr)
        time.sleep(0.05)
    upstream.release.set()
    rest = resp.read()
    assert b"event-2" in rest
    conn.close()
    assert any("config reloaded" in line for line in gw.stderr)


def test_sighup_with_a_broken_file_keeps_the_old_config(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    gw.config_path.write_text("routes: [{path: /x, upstream: nowhere}]\nbogus: 1\n")
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while not any("reload refused" in line for line in gw.stderr):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "routes[0].upstream: unknown upstream 'nowhere'" in "".join(gw.stderr)
    assert gw.request("GET", "/api/still")[0] == 200
    assert gw.proc.poll() is None


def test_workers_share_the_port_and_metrics(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream, server={"workers": 2, "shutdown_grace": "5s"}))
    threads = [threading.Thread(target=gw.request, args=("GET", f"/slow/200?n={n}")) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    deadline = time.monotonic() + 5
    while True:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).read().decode()
        )
        total = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("fastgw_requests_total{") and 'route="/slow/*"' in line
        )
        if total == 20 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert total == 20
    # Both workers served: each keeps its own pooled connections to the upstream.
    assert len(set(_connection_owners(upstream.port))) == 2
    assert gw.stop() == 0


def test_reloads_under_load_leave_no_idle_upstream_sockets_behind(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    """Connections released by requests of a replaced config go to the new pool or are closed:
    after 20 reloads under 16 busy clients the gateway holds about one connection per client."""
    clients = 16
    gw = start_gateway(config(upstream))
    stop = threading.Event()
    failures: list[int] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        while not stop.is_set():
            conn.request("GET", "/slow/5")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(resp.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for n in range(20):
        gw.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while sum("config reloaded" in line for line in gw.stderr) <= n:
            assert time.monotonic() < deadline, "reload not logged"
            time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert failures == []
    # Idle pooled connections of the gateway to the upstream (each side of a socket is listed
    # once per owner; only the gateway's process owns its end).
    held = [pid for pid in _connection_owners(upstream.port) if pid == gw.proc.pid]
    assert len(held) <= 2 * clients, f"{len(held)} upstream sockets held after the reloads"


def _connection_owners(port: int) -> list[int]:
    """Owner pid of every established TCP connection to 127.0.0.1:``port`` (via ``ss -p``)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(pid) for pid in re.findall(r"pid=(\d+)", out)]
