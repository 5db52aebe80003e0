"""SPEC 9 metrics: bound label children give the same exposition as ``labels()``, cheaper."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from fastgw import metrics as metrics_module
from fastgw.metrics import BoundCounter, Metrics, RouteMetrics


def sample(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return m.registry.get_sample_value(name, labels or {})


def test_route_metrics_appear_with_their_labels_and_counts() -> None:
    m = Metrics()
    api = m.for_route("/api/*")
    assert isinstance(api, RouteMetrics)
    for _ in range(3):
        api.observe("GET", 200, 0.004)
    api.observe("POST", 201, 0.2)
    api.observe("GET", 503, 2.0)
    text = m.exposition().decode()
    assert 'fastgw_requests_total{method="GET",route="/api/*",status="200"} 3.0' in text
    assert 'fastgw_requests_total{method="POST",route="/api/*",status="201"} 1.0' in text
    assert 'fastgw_requests_total{method="GET",route="/api/*",status="503"} 1.0' in text
    assert 'fastgw_request_duration_seconds_count{route="/api/*"} 5.0' in text
    assert 'fastgw_request_duration_seconds_bucket{le="0.005",route="/api/*"} 3.0' in text
    assert 'fastgw_request_duration_seconds_bucket{le="0.25",route="/api/*"} 4.0' in text
    assert 'fastgw_request_duration_seconds_bucket{le="+Inf",route="/api/*"} 5.0' in text
    assert sample(m, "fastgw_request_duration_seconds_sum", {"route": "/api/*"}) == pytest.approx(2.212)


def test_for_route_and_observe_request_share_one_series() -> None:
    m = Metrics()
    assert m.for_route("/a") is m.for_route("/a")
    m.for_route("/a").observe("GET", 200, 0.01)
    m.observe_request("/a", "GET", 200, 0.01)
    m.observe_request("/a", "GET", 200, 0.01)
    labels = {"route": "/a", "method": "GET", "status": "200"}
    assert sample(m, "fastgw_requests_total", labels) == 3
    assert sample(m, "fastgw_request_duration_seconds_count", {"route": "/a"}) == 3


def test_children_are_bound_once() -> None:
    """The hot paths reuse children: prometheus-client's labels() runs once per label set."""
    m = Metrics()
    calls: list[tuple[object, ...]] = []
    real = Counter.labels

    def counting(self: Counter, *values: object, **kw: object) -> Counter:
        calls.append(values)
        return real(self, *values, **kw)

    route = m.for_route("/r")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Counter, "labels", counting)
        for _ in range(50):
            route.observe("GET", 200, 0.001)
            m.observe_request("/q", "GET", 404, 0.001)
            m.upstream_error("svc", "connect")
            m.auth_failures.labels("missing").inc()
            m.llm_tokens.labels("gpt", "input").inc(3)
    assert sorted(calls, key=str) == sorted(
        [("/r", "GET", "200"), ("/q", "GET", "404"), ("svc", "connect"), ("missing",), ("gpt", "input")],
        key=str,
    )
    assert sample(m, "fastgw_auth_failures_total", {"reason": "missing"}) == 50
    assert sample(m, "fastgw_llm_tokens_total", {"model": "gpt", "kind": "input"}) == 150
    assert sample(m, "fastgw_upstream_errors_total", {"upstream": "svc", "reason": "connect"}) == 50
    assert sample(m, "fastgw_requests_total", {"route": "/q", "method": "GET", "status": "404"}) == 50


def test_labels_keeps_prometheus_semantics() -> None:
    m = Metrics()
    m.auth_failures.labels(reason="kw").inc()
    m.ratelimited.labels(7).inc()  # non-str values are str()ed, as by prometheus-client
    m.ratelimited.labels("7").inc()
    m.ratelimited.labels(True).inc()
    assert sample(m, "fastgw_auth_failures_total", {"reason": "kw"}) == 1
    assert sample(m, "fastgw_ratelimited_total", {"policy": "7"}) == 2
    assert sample(m, "fastgw_ratelimited_total", {"policy": "True"}) == 1
    with pytest.raises(ValueError):
        m.auth_failures.labels("a", "b")
    with pytest.raises(ValueError):
        m.auth_failures.labels("a").labels("b")


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "CHILD_CACHE_LIMIT", 5)
    monkeypatch.setattr(metrics_module, "ROUTE_CACHE_LIMIT", 3)
    m = Metrics()
    route = m.for_route("/r")
    for status in range(200, 220):
        m.observe_request("/a", "GET", status, 0.001)
        m.auth_failures.labels(f"reason{status}").inc()
        route.observe("GET", status, 0.001)
        m.for_route(f"/route{status}")
    for status in range(200, 220):  # past the cap, still counted
        m.observe_request("/a", "GET", status, 0.001)
        route.observe("GET", status, 0.001)
        labels = {"route": "/a", "method": "GET", "status": str(status)}
        assert sample(m, "fastgw_requests_total", labels) == 2
        labels = {"route": "/r", "method": "GET", "status": str(status)}
        assert sample(m, "fastgw_requests_total", labels) == 2
    assert len(m._request_children) == 5
    assert len(m._routes) == 5
    assert len(route._counters) == 3
    assert isinstance(m.auth_failures, BoundCounter)
    assert len(m.auth_failures._bound) == 5


def test_upstream_metrics() -> None:
    m = Metrics()
    m.observe_upstream("svc", 0.02)
    m.observe_upstream("svc", 0.03)
    m.upstream_error("dead", "connect")
    text = m.exposition().decode()
    assert 'fastgw_upstream_duration_seconds_count{upstream="svc"} 2.0' in text
    assert 'fastgw_upstream_errors_total{reason="connect",upstream="dead"} 1.0' in text


def test_separate_registries_do_not_share_children() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.for_route("/x").observe("GET", 200, 0.1)
    a.auth_failures.labels("missing").inc()
    assert sample(b, "fastgw_requests_total", {"route": "/x", "method": "GET", "status": "200"}) is None
    assert sample(b, "fastgw_auth_failures_total", {"reason": "missing"}) is None


_MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    from fastgw.metrics import Metrics

    workers = []
    for n in range(2):
        pid = os.fork()
        if pid == 0:
            m = Metrics()  # as each worker does (server.serve_forever)
            route = m.for_route("/api/*")
            for _ in range(3 + n):
                route.observe("GET", 200, 0.01)
            m.observe_request("/api/*", "GET", 200, 0.01)
            m.auth_failures.labels("missing").inc()
            m.inflight.inc()
            os._exit(0)
        workers.append(pid)
    for pid in workers:
        os.waitpid(pid, 0)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    sys.stdout.write(generate_latest(registry).decode())
    """
)


def test_bound_children_aggregate_across_worker_processes(tmp_path: Path) -> None:
    """workers > 1: each forked worker's bound children land in PROMETHEUS_MULTIPROC_DIR."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _MULTIPROCESS_SCRIPT],
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert 'fastgw_requests_total{method="GET",route="/api/*",status="200"} 9.0' in text
    assert 'fastgw_request_duration_seconds_count{route="/api/*"} 9.0' in text
    assert 'fastgw_auth_failures_total{reason="missing"} 2.0' in text
