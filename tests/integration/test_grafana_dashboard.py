"""deploy/grafana/fastgw.json against the real thing: a real Prometheus scrapes a real gateway
that served real traffic (successes, upstream 5xx, an unreachable upstream, auth refusals,
rate-limit rejections, failing Redis calls, cache hits and misses, LLM tokens), and every panel
query must return data: series, and for a rate() a value above zero (the traffic shows), except
for QUIET counters.

A query with a misspelt metric or label, or invalid PromQL, returns nothing or an error here.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port
from tests.prometheus_server import PROMETHEUS, PrometheusServer
from tests.upstream_server import UpstreamServer

DASHBOARD = REPO / "deploy" / "grafana" / "fastgw.json"
TOKEN = "grafana-test-token-0123456789"
JOB = "fastgw"
# Grafana's built-in interval variables, filled in as for a short time range. The rate window
# outlasts the 30 s wait for data, so the traffic stays in it until then and a failure lists
# only the queries that are really broken.
BUILTINS = {"__rate_interval": "1m", "__interval": "5s", "__range": "1m"}
METRIC = re.compile(r"\bfastgw_[a-z_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# Counters that stay at zero in a healthy test: their panels must return series, not movement.
QUIET = {
    # Moves only when the store refuses writes or stays down past the kept backlog (100,000 rows).
    "fastgw_store_writes_dropped_total",
}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with queries, rows' nested panels included."""
    found = []
    for panel in dashboard["panels"]:
        found.extend(panel.get("panels", []))
        if panel.get("type") != "row":
            found.append(panel)
    return found


def substitute(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with Grafana's ``$name``, ``${name}``, ``${name:fmt}`` and ``[[name]]`` filled in."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in variables:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


def dashboard_variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable set to "All" (its allValue), plus the built-in intervals."""
    variables = dict(BUILTINS)
    for var in dashboard["templating"]["list"]:
        if var["type"] in ("query", "custom", "textbox"):
            variables[var["name"]] = var.get("allValue") or ".*"
    return variables


def label_values_query(var: dict[str, Any]) -> tuple[str, str]:
    """(series selector, label) of a ``label_values(selector, label)`` variable query."""
    query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, f"variable {var['name']}: {query!r} is not label_values(selector, label)"
    return match[1], match[2]


def exported_families(gw: Any) -> dict[str, str]:
    """{metric family: type} from the gateway's /metrics (prometheus-client's *_created aside)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    families = {}
    for line in lines:
        if line.startswith("# TYPE fastgw_"):
            _, _, name, kind = line.split()
            if not name.endswith("_created"):
                families[name] = kind
    return families


def family_of(series: str, families: dict[str, str]) -> str:
    """``fastgw_x_seconds_bucket`` -> ``fastgw_x_seconds`` for a histogram; others unchanged."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and families.get(base) == "histogram":
            return base
    return series


def gateway_config(upstream: UpstreamServer) -> dict[str, Any]:
    dead = free_port()  # nothing listens there: connections are refused
    return {
        "auth": {"tokens": [{"token": TOKEN, "user_id": "u1", "scopes": ["api"]}]},
        # A Redis that refuses connections: every check falls back to local buckets and counts
        # fastgw_ratelimit_backend_errors_total.
        "redis": f"redis://127.0.0.1:{free_port()}/0",
        "upstreams": {
            "app": {"targets": [upstream.url]},
            "down": {"targets": [f"http://127.0.0.1:{dead}"], "retries": 0},
            "llm": {"targets": [upstream.url]},
        },
        "rate_limits": {"policies": {"tight": {"rate": 1, "per": "60s", "burst": 2, "key": "ip"}}},
        "routes": [
            {"path": "/api/*", "upstream": "app", "auth": "none"},
            {"path": "/status/*", "upstream": "app", "auth": "none"},  # the upstream answers that status
            {"path": "/cached/*", "upstream": "app", "auth": "none", "cache": {"ttl": "1m"}},
            {"path": "/private/*", "upstream": "app", "auth": "required"},
            {"path": "/limited", "upstream": "app", "auth": "none", "rate_limit": "tight"},
            {"path": "/down/*", "upstream": "down", "auth": "none"},
            {
                "path": "/v1/chat/completions",
                "methods": ["POST"],
                "upstream": "llm",
                "llm": "openai",
                "auth": "none",
            },
        ],
    }


def drive_traffic(gw: Any) -> None:
    """Something for every panel: 2xx, 4xx, 5xx, upstream errors, refusals, LLM tokens."""
    statuses = []
    for _ in range(5):
        statuses.append(gw.request("GET", "/api/ok")[0])
    statuses.append(gw.request("GET", "/status/503")[0])
    caches = [gw.request("GET", "/cached/page")[1].get("x-cache") for _ in range(2)]
    assert caches[-1] == "HIT", caches
    statuses.append(gw.request("GET", "/private/x")[0])  # no credentials
    statuses.append(gw.request("GET", "/private/x", headers={"Authorization": "Bearer wrong-token-0123"})[0])
    statuses.append(gw.request("GET", "/private/x", headers={"Authorization": f"Bearer {TOKEN}"})[0])
    for _ in range(4):
        statuses.append(gw.request("GET", "/limited")[0])
    statuses.append(gw.request("GET", "/down/x")[0])
    body = json.dumps({"model": "gpt-dash", "messages": []}).encode()
    json_headers = {"Content-Type": "application/json"}
    statuses.append(gw.request("POST", "/v1/chat/completions", body=body, headers=json_headers)[0])
    for code in (200, 503, 401, 429, 502):
        assert code in statuses, f"traffic never produced a {code}: {statuses}"


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Start a Prometheus scraping the given gateways; always stopped at teardown."""
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed: apt-get install prometheus (.ci/run installs it)")
    started: list[PrometheusServer] = []

    def start(*gateways: Any) -> PrometheusServer:
        targets = [f"127.0.0.1:{gw.metrics_port}" for gw in gateways]
        server = PrometheusServer(tmp_path / "prometheus", targets, job=JOB)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def wait_for_scrape_after(prom: PrometheusServer, moment: float, timeout: float = 30) -> None:
    """Until a scrape of the gateway that started after ``moment`` (a time.time()) succeeded.

    Target discovery alone takes Prometheus about 5 s.
    """
    deadline = time.monotonic() + timeout
    while not prom.query(f'timestamp(up{{job="{JOB}"}} == 1) >= {moment}'):
        assert time.monotonic() < deadline, f"prometheus never scraped the gateway: {prom.api('targets')}"
        time.sleep(0.25)


def has_data(expr: str, result: list[dict[str, Any]]) -> bool:
    """Non-empty; a rate() also moved (a finite value above 0 in some series): the traffic shows."""
    if not result:
        return False
    if "rate(" not in expr or set(METRIC.findall(expr)) <= QUIET:
        return True
    return any(0 < float(r["value"][1]) < math.inf for r in result)


def wait_for_panels(prom: PrometheusServer, exprs: list[str], timeout: float = 30) -> dict[str, list[Any]]:
    """Each expr's result once all have data, or what they returned when time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        results = {expr: prom.query(expr) for expr in exprs}
        if all(has_data(e, r) for e, r in results.items()) or time.monotonic() > deadline:
            return results
        time.sleep(0.5)


def test_dashboard_is_a_grafana_model_on_spec_metrics() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    panels = query_panels(dashboard)
    ids = [p["id"] for p in dashboard["panels"]] + [
        p["id"] for r in dashboard["panels"] for p in r.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        assert panel["targets"], f"{panel['title']}: no queries"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert METRIC.search(target["expr"]), f"{panel['title']}: {target['expr']} uses no fastgw metric"


def test_every_panel_query_returns_data(
    upstream: UpstreamServer, start_gateway: Any, prometheus_for: Any
) -> None:
    gw = start_gateway(gateway_config(upstream))
    prom = prometheus_for(gw)
    # Twice, with a scrape in between: the first round creates every labelled series, and
    # Prometheus sees a counter rise (rate() > 0) only from its first scraped value on.
    drive_traffic(gw)
    wait_for_scrape_after(prom, time.time())
    drive_traffic(gw)

    dashboard = load_dashboard()
    variables = dashboard_variables(dashboard)
    targets = [(panel, target) for panel in query_panels(dashboard) for target in panel["targets"]]
    exprs = [substitute(target["expr"], variables) for _, target in targets]
    results = wait_for_panels(prom, exprs)
    empty = [
        f"{panel['title']} [{target['refId']}]: {expr} -> {results[expr]}"
        for (panel, target), expr in zip(targets, exprs, strict=True)
        if not has_data(expr, results[expr])
    ]
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    # ...which a misspelt metric would not have.
    assert prom.query(exprs[0].replace("fastgw_requests_total", "fastgw_request_total")) == []

    # Every {{label}} a legend shows is a label the query's series carry.
    for (panel, target), expr in zip(targets, exprs, strict=True):
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            missing = [r["metric"] for r in results[expr] if label not in r.get("metric", {})]
            assert not missing, f"{panel['title']}: legend {{{{{label}}}}} but series {missing}"

    # The variables' own queries list values.
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            selector, label = label_values_query(var)
            values = prom.api(f"label/{label}/values", **{"match[]": substitute(selector, variables)})
            assert values, f"variable {var['name']}: no values"
            if var["name"] == "route":
                assert {"/api/*", "/limited", "/down/*"} <= set(values)

    # The dashboard uses every metric family the gateway exports, and only those.
    families = exported_families(gw)
    used = {family_of(name, families) for expr in exprs for name in METRIC.findall(expr)}
    assert used <= set(families), f"not exported by the gateway: {used - set(families)}"
    assert set(families) <= used, f"no panel for {set(families) - used}"

    # The traffic really reached every counter and histogram (not just zero-valued series).
    for name, kind in families.items():
        series = {"counter": name, "histogram": f"{name}_count"}.get(kind)
        if series and name not in QUIET:
            assert prom.query(f"sum({series}) > 0"), f"{series} is zero: the traffic missed it"
