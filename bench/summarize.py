"""Turn the raw per-round results of bench/run.sh into the tables (Markdown, on stdout).

    python bench/summarize.py bench/out/latest

Reads ``rounds.tsv``, ``rss.tsv``, ``meta.tsv`` and ``logs/*.impl`` from the directory that
run.sh wrote. Every figure is the median over the rounds that succeeded; a peer with no
successful round in a scenario is shown as "failed".
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

PEER_ORDER = ["nginx", "aiohttp", "floor", "fastgw", "fastgw-py"]
PEER_LABEL = {
    "nginx": "NGINX proxy_pass",
    "aiohttp": "aiohttp proxy",
    "floor": "uvloop forwarder (floor)",
    "fastgw": "fastgw",
    "fastgw-py": "fastgw-py",
}
SCENARIO_ORDER = ["get1k", "post16k", "get64k", "pipeline"]
SCENARIO_LABEL = {
    "get1k": "GET 1 KiB",
    "post16k": "POST 16 KiB",
    "get64k": "GET 64 KiB",
    "pipeline": "full pipeline",
}
REFERENCES = ["nginx", "aiohttp", "floor"]


def read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "failed"
    return f"{value:,.{digits}f}".replace(",", " ")


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


class Cell:
    """One (scenario, peer): the per-round rows and their medians."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows = rows
        good = [r for r in rows if r["status"] in ("ok", "errors")]
        self.rps = median([float(r["req_s"]) for r in good])
        self.p50 = median([float(r["p50_ms"]) for r in good])
        self.p99 = median([float(r["p99_ms"]) for r in good])
        self.srv = median([float(r["srv_pct"]) for r in good])
        self.failed = len(rows) - len(good)
        self.with_errors = [r for r in good if r["status"] == "errors"]

    def per_round(self) -> str:
        return ", ".join("failed" if r["status"] == "failed" else num(float(r["req_s"])) for r in self.rows)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/latest")
    meta = {r["key"]: r["value"] for r in read_tsv(out / "meta.tsv")}
    rows = read_tsv(out / "rounds.tsv")
    rss_rows = read_tsv(out / "rss.tsv")
    peers = [p for p in meta.get("peers", " ".join(PEER_ORDER)).split() if p in PEER_LABEL]
    impl = {}
    for peer in ("fastgw", "fastgw-py"):
        f = out / "logs" / f"{peer}.impl"
        if f.exists() and f.read_text().strip():
            impl[peer] = f.read_text().strip()

    def label(peer: str) -> str:
        return PEER_LABEL[peer] + (f" (speedups: {impl[peer]})" if peer in impl else "")

    cells: dict[tuple[str, str], Cell] = {}
    for scenario in SCENARIO_ORDER:
        for peer in peers:
            mine = [r for r in rows if r["scenario"] == scenario and r["peer"] == peer]
            if mine:
                cells[scenario, peer] = Cell(mine)
    scenarios = [s for s in SCENARIO_ORDER if any((s, p) in cells for p in peers)]

    def rps(scenario: str, peer: str) -> float | None:
        cell = cells.get((scenario, peer))
        return cell.rps if cell else None

    def p99(scenario: str, peer: str) -> float | None:
        cell = cells.get((scenario, peer))
        return cell.p99 if cell else None

    p = print
    p(f"## Results of `bench/run.sh` ({meta.get('stamp', out.name)})")
    p()
    p(
        f"Median of {meta.get('rounds', '?')} alternating round(s), {meta.get('duration', '?')} s per run"
        f" after a {meta.get('warmup', '?')} s warm-up, `wrk -t1 -c{meta.get('connections', '?')}`,"
        f" peer on CPU {meta.get('server_cpu', '0')}, wrk and the upstream NGINX on CPU"
        f" {meta.get('client_cpu', '1')}."
    )
    for key in ("machine", "versions", "tree", "load_before", "load_after"):
        if key in meta:
            p(f"{key.replace('_', ' ')}: {meta[key]}  ")
    p()

    p("### Throughput and latency")
    p()
    p("`srv%`: CPU time of the peer's own processes during the run, in % of one core.")
    p()
    p("| scenario | peer | req/s | p50 ms | p99 ms | srv% | req/s per round |")
    p("|---|---|---:|---:|---:|---:|---|")
    for scenario in scenarios:
        for peer in peers:
            cell = cells.get((scenario, peer))
            if cell is None:
                continue
            flag = " (errors)" if cell.with_errors else ""
            p(
                f"| {SCENARIO_LABEL[scenario]} | {label(peer)} | {num(cell.rps)}{flag} | {num(cell.p50, 2)}"
                f" | {num(cell.p99, 2)} | {num(cell.srv)} | {cell.per_round()} |"
            )
    p()

    twins = [t for t in ("fastgw", "fastgw-py") if t in peers]
    refs = [r for r in REFERENCES if r in peers]
    plain = [s for s in scenarios if s != "pipeline"]
    if twins and refs and plain:
        cols = [(t, r) for t in twins for r in refs]
        if len(twins) == 2:
            cols.append(("fastgw", "fastgw-py"))
        p("### Ratios of req/s (above 1: the first is faster)")
        p()
        p("| scenario | " + " | ".join(f"{a}/{b}" for a, b in cols) + " |")
        p("|---|" + "---:|" * len(cols))
        for scenario in plain:
            p(
                f"| {SCENARIO_LABEL[scenario]} | "
                + " | ".join(ratio(rps(scenario, a), rps(scenario, b)) for a, b in cols)
                + " |"
            )
        p()
        p("### Ratios of p99 latency (below 1: the first has the shorter tail)")
        p()
        p("| scenario | " + " | ".join(f"{a}/{b}" for a, b in cols) + " |")
        p("|---|" + "---:|" * len(cols))
        for scenario in plain:
            p(
                f"| {SCENARIO_LABEL[scenario]} | "
                + " | ".join(ratio(p99(scenario, a), p99(scenario, b)) for a, b in cols)
                + " |"
            )
        p()

    if "pipeline" in scenarios:
        p("### Full pipeline (fastgw only), against its own plain GET 1 KiB")
        p()
        p(
            "POST /post with a 1 KiB body; static token and HS256 JWT alternating; two token buckets;"
            " v2 signing; identity headers; access log and metrics on."
        )
        p()
        p("| peer | req/s | p50 ms | p99 ms | plain GET 1 KiB req/s | pipeline / plain GET |")
        p("|---|---:|---:|---:|---:|---:|")
        for peer in twins:
            cell = cells.get(("pipeline", peer))
            if cell is None:
                continue
            p(
                f"| {label(peer)} | {num(cell.rps)} | {num(cell.p50, 2)} | {num(cell.p99, 2)}"
                f" | {num(rps('get1k', peer))} | {ratio(cell.rps, rps('get1k', peer))} |"
            )
        if len(twins) == 2:
            p()
            twin_ratio = ratio(rps("pipeline", "fastgw"), rps("pipeline", "fastgw-py"))
            p(f"fastgw/fastgw-py on the full pipeline: {twin_ratio}")
        p()

    if rss_rows:
        n = meta.get("idle_connections", "2000")
        p(f"### Memory: {n} idle keep-alive connections")
        p()
        p(
            f"RSS of the peer's processes (NGINX: master + worker) once started and after one request,"
            f" then with {n} connections open that have each made one GET 1 KiB. Median of the rounds."
        )
        p()
        p(f"| peer | idle MB | with {n} connections MB | per connection KiB | connections held |")
        p("|---|---:|---:|---:|---:|")
        for peer in peers:
            mine = [r for r in rss_rows if r["peer"] == peer and r["status"] == "ok"]
            if not [r for r in rss_rows if r["peer"] == peer]:
                continue
            if not mine:
                p(f"| {label(peer)} | failed | failed | – | – |")
                continue
            idle = median([float(r["idle_kb"]) for r in mine])
            loaded = median([float(r["loaded_kb"]) for r in mine])
            held = median([float(r["connections_held"]) for r in mine])
            assert idle is not None and loaded is not None and held is not None
            per_conn = (loaded - idle) / held if held else None
            p(
                f"| {label(peer)} | {idle / 1024:.1f} | {loaded / 1024:.1f} | {num(per_conn, 1)}"
                f" | {held:.0f} |"
            )
        p()

    problems = []
    for (scenario, peer), cell in cells.items():
        if cell.failed:
            problems.append(f"{peer} {scenario}: {cell.failed} of {len(cell.rows)} round(s) failed")
        for r in cell.with_errors:
            problems.append(
                f"{peer} {scenario} round {r['round']}: {r['errors']} socket errors, {r['non2xx']} non-2xx"
            )
    for r in rss_rows:
        if r["status"] != "ok":
            problems.append(f"{r['peer']} idle round {r['round']}: failed")
        elif r["connections_failed"] not in ("", "0"):
            lost = r["connections_failed"]
            problems.append(f"{r['peer']} idle round {r['round']}: {lost} connections failed or were closed")
    for peer in ("fastgw", "fastgw-py"):
        want = {"fastgw": "c", "fastgw-py": "py"}[peer]
        if peer in impl and impl[peer] != want:
            problems.append(f"{peer} ran with speedups: {impl[peer]} (expected {want})")
    if problems:
        p("### Problems")
        p()
        for line in problems:
            p(f"- {line}")
        p()
    return 0


if __name__ == "__main__":
    sys.exit(main())
