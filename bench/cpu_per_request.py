"""CPU time fastgw spends per request, for before/after comparisons of a change.

Throughput on a shared machine moves by tens of percent between runs; the CPU time the gateway
process spends per request moves less, and it is what an optimisation changes. This runs one
gateway (from ``--tree``, so two checkouts can be compared) on CPU 0 in front of an NGINX
upstream, loads it with ``wrk -t1 -c64`` from CPU 1, and prints req/s, the gateway's
utime+stime per request (and per thread: the event loop and the store's threads), and p99.
Alternate two trees over several rounds and compare medians::

    python bench/cpu_per_request.py --tree /path/to/before --rounds 4 get1k
    python bench/cpu_per_request.py --tree . --tree /path/to/before --rounds 4 pipeline

Scenarios: ``get1k`` (plain proxy), ``post16k``, ``pipeline`` (the full pipeline of run.sh:
static token or HS256 JWT, two token buckets, v2 signing, access log and metrics on).
Needs nginx, wrk and taskset; uses ports 18080-18082.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt

BENCH = Path(__file__).resolve().parent
LISTEN, UPSTREAM, METRICS = 18080, 18081, 18082
TOKEN = "bench-static-" + os.urandom(8).hex()
JWT_SECRET = "bench-jwt-secret-" + os.urandom(16).hex()

PLAIN = """server: {{listen: 127.0.0.1:{listen}, workers: 1, metrics_listen: null, access_log: false}}
store: sqlite:///{dir}/gw.db
upstreams: {{up: {{targets: ["http://127.0.0.1:{upstream}"]}}}}
routes: [{{path: /*, upstream: up, auth: none}}]
"""
FULL = """server: {{listen: 127.0.0.1:{listen}, workers: 1, metrics_listen: 127.0.0.1:{metrics},
  access_log: true}}
store: sqlite:///{dir}/gw.db
auth:
  tokens: [{{token: "{token}", user_id: bench-static, role: user, scopes: [bench], plan: pro}}]
  jwt: {{algorithms: [HS256], secret: "{jwt_secret}"}}
signing: {{secret: bench-signing-secret-0123456789}}
upstreams: {{up: {{targets: ["http://127.0.0.1:{upstream}"]}}}}
rate_limits:
  policies:
    per_user: {{rate: 1000000000, burst: 1000000000, key: user}}
    per_ip: {{rate: 1000000000, burst: 1000000000, key: ip}}
routes:
  - {{path: /*, upstream: up, auth: required, scopes: [bench], sign: true,
     rate_limit: [per_user, per_ip]}}
"""
NGINX = """worker_processes 1; daemon off; pid {dir}/nginx.pid; error_log {dir}/nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  server {{
    listen 127.0.0.1:{upstream}; root {dir};
    location = /post {{ client_max_body_size 1m; return 200 "ok\\n"; }}
    location / {{ try_files /1k =404; }}
  }}
}}
"""


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            sys.exit(f"cpu_per_request: the process for port {port} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"cpu_per_request: nothing listens on {port}")


def _cpu_by_thread(pid: int) -> dict[str, float]:
    """utime+stime in seconds of each thread of ``pid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        out["loop" if tid == str(pid) else tid] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def measure(tree: Path, scenario: str, seconds: int, twin: bool) -> dict[str, float | str]:
    """One gateway run; CPU figures in µs per request."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "1k").write_bytes(b"a" * 1024)
        values = {"dir": tmp, "listen": LISTEN, "upstream": UPSTREAM, "metrics": METRICS}
        (Path(tmp) / "nginx.conf").write_text(NGINX.format(**values))
        config = FULL if scenario == "pipeline" else PLAIN
        (Path(tmp) / "gw.yaml").write_text(config.format(**values, token=TOKEN, jwt_secret=JWT_SECRET))
        nginx = subprocess.Popen(
            ["taskset", "-c", "1", "nginx", "-p", tmp, "-c", f"{tmp}/nginx.conf"], stderr=subprocess.DEVNULL
        )
        env = {k: v for k, v in os.environ.items() if k != "FASTGW_NO_EXTENSIONS"}
        env["PYTHONPATH"] = str(tree)
        if twin:
            env["FASTGW_NO_EXTENSIONS"] = "1"
        gateway = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-m", "fastgw", "run", "-c", f"{tmp}/gw.yaml"],
            cwd=tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(UPSTREAM, nginx)
            _wait_port(LISTEN, gateway)
            wrk = ["taskset", "-c", "1", "wrk", "-t1", "-c64", "--latency"]
            url = f"http://127.0.0.1:{LISTEN}/"
            wrk_env = dict(os.environ)
            if scenario == "post16k":
                wrk += ["-s", str(BENCH / "post16k.lua")]
                url += "post"
            elif scenario == "pipeline":
                claims = {"sub": "bench-jwt", "scope": "bench", "exp": int(time.time()) + 3600}
                wrk_env["BENCH_STATIC_TOKEN"] = TOKEN
                wrk_env["BENCH_JWT"] = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
                wrk += ["-s", str(BENCH / "pipeline.lua")]
                url += "post"
            subprocess.run([*wrk, "-d2s", url], capture_output=True, env=wrk_env, check=True)  # warm-up
            before, started = _cpu_by_thread(gateway.pid), time.monotonic()
            out = subprocess.run(
                [*wrk, f"-d{seconds}s", url], capture_output=True, text=True, env=wrk_env, check=True
            ).stdout
            after, elapsed = _cpu_by_thread(gateway.pid), time.monotonic() - started
        finally:
            gateway.send_signal(signal.SIGTERM)
            nginx.terminate()
            gateway.wait(10)
            nginx.wait(10)
    found = re.search(r"(\d+) requests in", out)
    if found is None or "Non-2xx" in out:
        sys.exit(f"cpu_per_request: wrk failed or saw errors:\n{out}")
    requests = int(found.group(1))
    p99 = re.search(r"99%\s+(\S+)", out)
    result: dict[str, float | str] = {
        "req/s": requests / elapsed,
        "us/request": sum(after[t] - before.get(t, 0.0) for t in after) / requests * 1e6,
        "p99": p99.group(1) if p99 else "?",
    }
    for thread, total in after.items():
        used = (total - before.get(thread, 0.0)) / requests * 1e6
        if used >= 0.05:
            result[f"{thread} us"] = used
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", choices=("get1k", "post16k", "pipeline"))
    parser.add_argument("--tree", action="append", type=Path, help="checkout to run (repeat to alternate)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--twin", action="store_true", help="FASTGW_NO_EXTENSIONS=1")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [BENCH.parent])]
    costs: dict[Path, list[float]] = {t: [] for t in trees}
    rates: dict[Path, list[float]] = {t: [] for t in trees}
    for round_ in range(args.rounds):
        for tree in trees if round_ % 2 == 0 else trees[::-1]:
            result = measure(tree, args.scenario, args.seconds, args.twin)
            costs[tree].append(float(result["us/request"]))
            rates[tree].append(float(result["req/s"]))
            shown = " ".join(
                f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}"
                for key, value in result.items()
            )
            print(f"round {round_ + 1} {tree}: {shown}", flush=True)
    for tree in trees:
        print(
            f"{args.scenario} {tree}: median {statistics.median(costs[tree]):.1f} us/request,"
            f" {statistics.median(rates[tree]):.0f} req/s over {args.rounds} round(s)"
        )


if __name__ == "__main__":
    main()
