#!/usr/bin/env bash
# fastgw next to NGINX, aiohttp and a bare uvloop forwarder: one invocation, every peer, every
# scenario, alternating rounds, one table of medians. See bench/README.md.
#
#   bash bench/run.sh                          # or: make bench   (about 6-7 minutes)
#   ROUNDS=1 DURATION=2 bash bench/run.sh      # a quick check of the harness (about 75 s)
#   PEERS="fastgw fastgw-py" SCENARIOS="get1k pipeline" bash bench/run.sh
#
# Layout (2 cores): the peer under test on CPU 0 (taskset -c 0); wrk, the upstream NGINX and the
# idle-connection client on CPU 1. Every peer listens on 127.0.0.1:$LISTEN_PORT in turn, the
# upstream on 127.0.0.1:$UPSTREAM_PORT. Nothing leaves 127.0.0.1.
#
# Environment:
#   ROUNDS        rounds of "every peer, every scenario" (3); tables report the median
#   DURATION      seconds per measured wrk run (5)
#   WARMUP        seconds of an unmeasured wrk run before each measured one (1)
#   CONNECTIONS   wrk connections (64); wrk always runs one thread
#   PEERS         which peers, in round order (default "nginx aiohttp floor fastgw fastgw-py")
#   SCENARIOS     which scenarios (default "get1k post16k get64k pipeline idle")
#   IDLE_CONNECTIONS  keep-alive connections of the idle scenario (2000)
#   PYTHON        interpreter for the Python peers (.venv/bin/python if it exists, else python3)
#   LISTEN_PORT, UPSTREAM_PORT, METRICS_PORT   (8080, 8081, 8082)
#   SERVER_CPU, CLIENT_CPU, UPSTREAM_CPU       CPU pinning (0, 1, 1)
#   OUT           where raw results go (bench/out/<UTC time>; bench/out/latest points to it)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONNECTIONS=${CONNECTIONS:-64}
PEERS=${PEERS:-nginx aiohttp floor fastgw fastgw-py}
SCENARIOS=${SCENARIOS:-get1k post16k get64k pipeline idle}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-2000}
LISTEN_PORT=${LISTEN_PORT:-8080}
UPSTREAM_PORT=${UPSTREAM_PORT:-8081}
METRICS_PORT=${METRICS_PORT:-8082}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
UPSTREAM_CPU=${UPSTREAM_CPU:-1}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# Measure the checked-out fastgw, whatever else the interpreter has installed.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

die() {
    echo "run.sh: $*" >&2
    exit 1
}

for tool in nginx wrk taskset timeout; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON not found"
for v in ROUNDS DURATION CONNECTIONS IDLE_CONNECTIONS LISTEN_PORT UPSTREAM_PORT METRICS_PORT; do
    [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || die "$v must be a positive integer"
done
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be an integer"
for p in $PEERS; do
    case "$p" in nginx | aiohttp | floor | fastgw | fastgw-py) ;; *) die "unknown peer '$p' in PEERS" ;; esac
done
for s in $SCENARIOS; do
    case "$s" in get1k | post16k | get64k | pipeline | idle) ;; *) die "unknown scenario '$s' in SCENARIOS" ;; esac
done
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# Enough file descriptors for 2,000 client connections plus their upstream connections.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) > 2 * IDLE_CONNECTIONS + 200)) ||
    die "ulimit -n is $(ulimit -n): too low for IDLE_CONNECTIONS=$IDLE_CONNECTIONS"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$BENCH/out/$STAMP}
mkdir -p "$OUT/wrk" "$OUT/logs" "$OUT/conf"
ln -sfn "$OUT" "$BENCH/out/latest" 2>/dev/null || true
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fastgw-bench.XXXXXX")
UPSTREAM_PID=""
PEER_PID=""

stop_pid() { # stop_pid PID: SIGTERM, wait up to 5 s, then SIGKILL
    local pid=$1 i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_pid "$PEER_PID"
    stop_pid "$UPSTREAM_PID"
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "run.sh: unexpected failure at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # wait_port PORT PID: 0 once PORT accepts; 1 if PID died or 15 s passed
    local port=$1 pid=$2 i
    for ((i = 0; i < 150; i++)); do
        port_open "$port" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

for port in $LISTEN_PORT $UPSTREAM_PORT $METRICS_PORT; do
    if port_open "$port"; then die "127.0.0.1:$port is already in use; stop whatever listens there (or set *_PORT)"; fi
done

# --- configs -----------------------------------------------------------------------------------

# NGINX as the current user: when that is root, keep the workers root too (default: nobody).
NGINX_USER=""
if [[ $EUID -eq 0 ]]; then NGINX_USER="user $(id -un) $(id -gn);"; fi

nginx_common() { # nginx_common DIR: the parts both NGINX configs share; temp files under DIR
    local dir=$1
    mkdir -p "$dir"
    cat <<EOF
$NGINX_USER
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_buffer_size 32k;
EOF
}

# The upstream: static 1 KiB and 64 KiB files, and /post, which reads and discards the request
# body (NGINX's static module refuses POST) and answers "ok\n". /echo-headers shows what a
# gateway added, for the pipeline's sanity check.
mkdir -p "$TMP/www"
head -c 1024 /dev/zero | tr '\0' 'a' >"$TMP/www/1k"
head -c 65536 /dev/zero | tr '\0' 'b' >"$TMP/www/64k"
{
    nginx_common "$TMP/upstream"
    cat <<EOF
    sendfile on;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT reuseport backlog=4096;
        root $TMP/www;
        index 1k;
        location = /post {
            client_max_body_size 1m;
            return 200 "ok\n";
        }
        location = /echo-headers {
            return 200 "sig=\$http_x_gateway_signature user=\$http_x_user_id";
        }
    }
}
EOF
} >"$OUT/conf/upstream.conf"

# Peer: NGINX proxy_pass with keep-alive upstream connections, buffers big enough for 64 KiB.
{
    nginx_common "$TMP/nginx"
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$LISTEN_PORT backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
        }
    }
}
EOF
} >"$OUT/conf/nginx.conf"

# Peer: fastgw as a plain proxy: one worker, no access log, no metrics, one open route.
cat >"$OUT/conf/fastgw.yaml" <<EOF
server:
  listen: 127.0.0.1:$LISTEN_PORT
  workers: 1
  metrics_listen: null
  access_log: false
  shutdown_grace: 1s
store: sqlite:///$TMP/fastgw.db
upstreams:
  up: {targets: ["http://127.0.0.1:$UPSTREAM_PORT"]}
routes:
  - {path: /*, upstream: up, auth: none}
EOF

# Peer: fastgw with the whole pipeline: static token or HS256 JWT, two token buckets (limits
# far above anything wrk can send), v2 signing, identity headers, access log (stdout, sent to
# /dev/null) and the metrics listener.
STATIC_TOKEN="bench-static-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
JWT_SECRET="bench-jwt-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$OUT/conf/fastgw-full.yaml" <<EOF
server:
  listen: 127.0.0.1:$LISTEN_PORT
  workers: 1
  metrics_listen: 127.0.0.1:$METRICS_PORT
  access_log: true
  shutdown_grace: 1s
store: sqlite:///$TMP/fastgw-full.db
auth:
  tokens:
    - {token: "$STATIC_TOKEN", user_id: bench-static, role: user, scopes: [bench], plan: pro, app_key: bench}
  jwt: {algorithms: [HS256], secret: "$JWT_SECRET"}
signing: {secret: bench-signing-secret}
upstreams:
  up: {targets: ["http://127.0.0.1:$UPSTREAM_PORT"]}
rate_limits:
  policies:
    per_user: {rate: 1000000000, burst: 1000000000, key: user}
    per_ip: {rate: 1000000000, burst: 1000000000, key: ip}
routes:
  - {path: /*, upstream: up, auth: required, scopes: [bench], sign: true, rate_limit: [per_user, per_ip]}
EOF

# --- peers -------------------------------------------------------------------------------------

start_peer() { # start_peer NAME [full]: start on CPU $SERVER_CPU, set PEER_PID; 1 if it does not listen
    local name=$1 mode=${2:-plain} log="$OUT/logs/$1${2:+-$2}-r$round.log" conf="$OUT/conf/fastgw.yaml"
    if [[ "$mode" == full ]]; then conf="$OUT/conf/fastgw-full.yaml"; fi
    PEER_LOG=$log
    case "$name" in
        nginx)
            taskset -c "$SERVER_CPU" nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" \
                -c "$OUT/conf/nginx.conf" >"$log" 2>&1 &
            ;;
        aiohttp)
            taskset -c "$SERVER_CPU" "$PYTHON" "$BENCH/peers/aiohttp_proxy.py" \
                --listen "127.0.0.1:$LISTEN_PORT" --upstream "http://127.0.0.1:$UPSTREAM_PORT" >"$log" 2>&1 &
            ;;
        floor)
            taskset -c "$SERVER_CPU" "$PYTHON" "$BENCH/peers/uvloop_forwarder.py" \
                --listen "127.0.0.1:$LISTEN_PORT" --upstream "127.0.0.1:$UPSTREAM_PORT" >"$log" 2>&1 &
            ;;
        fastgw | fastgw-py)
            local -a env_args=(env -u FASTGW_NO_EXTENSIONS)
            if [[ "$name" == fastgw-py ]]; then env_args=(env FASTGW_NO_EXTENSIONS=1); fi
            if [[ "$mode" == full ]]; then # the access log is stdout: throw it away
                taskset -c "$SERVER_CPU" "${env_args[@]}" "$PYTHON" -m fastgw run -c "$conf" >/dev/null 2>"$log" &
            else
                taskset -c "$SERVER_CPU" "${env_args[@]}" "$PYTHON" -m fastgw run -c "$conf" >"$log" 2>&1 &
            fi
            ;;
    esac
    PEER_PID=$!
    if ! wait_port "$LISTEN_PORT" "$PEER_PID"; then
        echo "run.sh: $name ($mode) did not start listening on $LISTEN_PORT, round $round; log: $log" >&2
        tail -n 20 "$log" >&2 || true
        stop_peer
        return 1
    fi
    if [[ "$name" == fastgw* ]]; then # the startup line says which hot path is loaded
        local i
        for ((i = 0; i < 20; i++)); do
            grep -q 'speedups: ' "$log" && break
            sleep 0.1
        done
        grep -o 'speedups: [a-z]*' "$log" | head -1 | awk '{ print $2 }' >"$OUT/logs/$name.impl" || true
    fi
}

stop_peer() {
    stop_pid "$PEER_PID"
    PEER_PID=""
    local i
    for ((i = 0; i < 50; i++)); do
        port_open "$LISTEN_PORT" || return 0
        sleep 0.1
    done
    echo "run.sh: something still listens on $LISTEN_PORT after stopping the peer" >&2
}

check() { # check ARGS...: bench/client.py check, its complaint to stderr and to the peer's log
    if ! taskset -c "$CLIENT_CPU" "$PYTHON" "$BENCH/client.py" check "$@" 2>>"$PEER_LOG"; then
        echo "run.sh: check failed: client.py check $* (see $PEER_LOG)" >&2
        tail -n 3 "$PEER_LOG" >&2
        return 1
    fi
}

URL="http://127.0.0.1:$LISTEN_PORT"
scenario_check() { # scenario_check SCENARIO: one keep-alive connection, 3 requests, right answers
    case "$1" in
        get1k) check "$URL/1k" --size 1024 ;;
        get64k) check "$URL/64k" --size 65536 ;;
        post16k) check "$URL/post" --method POST --body-size 16384 --size 3 ;;
        pipeline)
            check "$URL/post" --method POST --body-size 1024 --size 3 --header "Authorization: Bearer $STATIC_TOKEN" &&
                check "$URL/post" --method POST --body-size 1024 --size 3 --header "Authorization: Bearer $BENCH_JWT" &&
                check "$URL/echo-headers" --header "Authorization: Bearer $BENCH_JWT" \
                    --body-match '^sig=v2=[0-9a-f]{64} user=bench-jwt$' &&
                check "$URL/1k" --status 401 --repeat 1 &&
                check "http://127.0.0.1:$METRICS_PORT/metrics" --repeat 1 --body-match 'fastgw_requests_total'
            ;;
    esac
}

# --- measuring ---------------------------------------------------------------------------------

cpu_ticks() { # cpu_ticks N: "busy total" jiffies of CPU N from /proc/stat
    awk -v cpu="cpu$1" '$1 == cpu { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat
}

proc_ticks() { # proc_ticks PID: user+system jiffies of PID and its children (nginx's worker)
    local pid total=0 t
    for pid in "$1" $(pgrep -P "$1" || true); do
        t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

pct() { if [[ $2 -gt 0 ]]; then echo $(($1 * 100 / $2)); else echo 0; fi; }

wrk_args() { # wrk_args SCENARIO: the script and URL of a scenario
    case "$1" in
        get1k) echo "$URL/1k" ;;
        get64k) echo "$URL/64k" ;;
        post16k) echo "-s $BENCH/post16k.lua $URL/post" ;;
        pipeline) echo "-s $BENCH/pipeline.lua $URL/post" ;;
    esac
}

run_wrk() { # run_wrk SECONDS OUTFILE SCENARIO
    # shellcheck disable=SC2046  # wrk_args is split on purpose
    timeout $(($1 + 30)) taskset -c "$CLIENT_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"$1s" --timeout 10s --latency $(wrk_args "$3") >"$2" 2>&1
}

to_ms() { # wrk latency ("812.00us", "1.23ms", "1.01s", "2.00m") to milliseconds
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}

parse_wrk() { # parse_wrk FILE: "rps p50_ms p99_ms errors non2xx"
    local f=$1 rps p50 p99 errors non2xx
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
    p50=$(awk '$1 == "50%" { print $2 }' "$f")
    p99=$(awk '$1 == "99%" { print $2 }' "$f")
    errors=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$f")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
    [[ -n "$rps" && -n "$p50" && -n "$p99" ]] || return 1
    echo "$rps $(to_ms "$p50") $(to_ms "$p99") ${errors:-0} ${non2xx:-0}"
}

ROUNDS_TSV="$OUT/rounds.tsv"
RSS_TSV="$OUT/rss.tsv"
printf 'round\tscenario\tpeer\tstatus\treq_s\tp50_ms\tp99_ms\terrors\tnon2xx\tsrv_pct\tcpu%s_pct\tcpu%s_pct\n' \
    "$SERVER_CPU" "$CLIENT_CPU" >"$ROUNDS_TSV"
printf 'round\tpeer\tstatus\tidle_kb\tloaded_kb\tconnections_held\tconnections_failed\n' >"$RSS_TSV"

record_failed() { # record_failed SCENARIO PEER
    printf '%s\t%s\t%s\tfailed\t\t\t\t\t\t\t\t\n' "$round" "$1" "$2" >>"$ROUNDS_TSV"
    printf '%-3s %-9s %-10s %s\n' "$round" "$1" "$2" failed
}

measure() { # measure SCENARIO PEER: warm-up, measured wrk run, one line in rounds.tsv
    local scenario=$1 peer=$2 out="$OUT/wrk/$1-$2-r$round.txt"
    if ! scenario_check "$scenario"; then
        record_failed "$scenario" "$peer"
        return 0
    fi
    if [[ "$WARMUP" -gt 0 ]]; then
        run_wrk "$WARMUP" "$OUT/wrk/$scenario-$peer-r$round-warmup.txt" "$scenario" || true
    fi
    local s0_busy s0_total c0_busy c0_total s1_busy s1_total c1_busy c1_total p0 p1
    read -r s0_busy s0_total < <(cpu_ticks "$SERVER_CPU")
    read -r c0_busy c0_total < <(cpu_ticks "$CLIENT_CPU")
    p0=$(proc_ticks "$PEER_PID")
    local ok=1 result
    run_wrk "$DURATION" "$out" "$scenario" || ok=0
    p1=$(proc_ticks "$PEER_PID")
    read -r s1_busy s1_total < <(cpu_ticks "$SERVER_CPU")
    read -r c1_busy c1_total < <(cpu_ticks "$CLIENT_CPU")
    kill -0 "$PEER_PID" 2>/dev/null || {
        echo "run.sh: $peer died during $scenario, round $round (log: $PEER_LOG)" >&2
        ok=0
    }
    if [[ $ok == 1 ]] && result=$(parse_wrk "$out"); then
        local rps p50 p99 errors non2xx status=ok
        read -r rps p50 p99 errors non2xx <<<"$result"
        if [[ "$errors" != 0 || "$non2xx" != 0 ]]; then status=errors; fi
        local srv cs cc
        srv=$(pct $((p1 - p0)) $((s1_total - s0_total)))
        cs=$(pct $((s1_busy - s0_busy)) $((s1_total - s0_total)))
        cc=$(pct $((c1_busy - c0_busy)) $((c1_total - c0_total)))
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$scenario" "$peer" "$status" \
            "$rps" "$p50" "$p99" "$errors" "$non2xx" "$srv" "$cs" "$cc" >>"$ROUNDS_TSV"
        printf '%-3s %-9s %-10s %9.0f req/s  p50 %8.3f ms  p99 %8.3f ms  srv %3s%%  cpu%s %3s%%  cpu%s %3s%%%s\n' \
            "$round" "$scenario" "$peer" "$rps" "$p50" "$p99" "$srv" "$SERVER_CPU" "$cs" "$CLIENT_CPU" "$cc" \
            "$([[ $status == ok ]] || echo "  ERRORS: $errors socket errors, $non2xx non-2xx")"
    else
        echo "run.sh: wrk failed against $peer ($scenario, round $round); output in $out" >&2
        tail -n 5 "$out" >&2 || true
        record_failed "$scenario" "$peer"
    fi
}

measure_idle() { # measure_idle PEER: RSS before and after IDLE_CONNECTIONS keep-alive connections
    local peer=$1 line
    if line=$(taskset -c "$CLIENT_CPU" "$PYTHON" "$BENCH/client.py" idle "$URL/1k" --pid "$PEER_PID" \
        --connections "$IDLE_CONNECTIONS" --timeout 60 2>>"$PEER_LOG"); then
        local idle_kb loaded_kb held failed
        read -r idle_kb loaded_kb held failed <<<"$line"
        printf '%s\t%s\tok\t%s\t%s\t%s\t%s\n' "$round" "$peer" "$idle_kb" "$loaded_kb" "$held" "$failed" >>"$RSS_TSV"
        awk -v r="$round" -v p="$peer" -v i="$idle_kb" -v l="$loaded_kb" -v h="$held" -v f="$failed" 'BEGIN {
            printf "%-3s %-9s %-10s RSS idle %6.1f MB, with %d connections %6.1f MB (%d failed)\n",
                r, "idle", p, i / 1024, h, l / 1024, f }'
    else
        echo "run.sh: idle test failed against $peer, round $round (see $PEER_LOG)" >&2
        printf '%s\t%s\tfailed\t\t\t\t\n' "$round" "$peer" >>"$RSS_TSV"
        printf '%-3s %-9s %-10s %s\n' "$round" idle "$peer" failed
    fi
}

# --- go ----------------------------------------------------------------------------------------

exec > >(tee "$OUT/run.log") 2> >(tee -a "$OUT/run.log" >&2)

n_plain=0
for s in get1k post16k get64k; do
    if wants "$s"; then n_plain=$((n_plain + 1)); fi
done
n_peers=$(wc -w <<<"$PEERS")
n_fastgw=$(tr ' ' '\n' <<<"$PEERS" | grep -c '^fastgw' || true)
if ! wants pipeline; then n_fastgw=0; fi
# Seconds per round: wrk time, plus ~2 s per peer for starting, checking and stopping, ~2 s for
# the idle test, ~2 s per pipeline restart (measured on the 2-core machine).
per_round=$((n_peers * (n_plain * (WARMUP + DURATION) + 2) + n_fastgw * (WARMUP + DURATION + 2)))
if wants idle; then per_round=$((per_round + n_peers * 2)); fi

MACHINE="$(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo),\
 $(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
VERSIONS="$("$PYTHON" -c 'import importlib.metadata as m, sys
def v(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return "not installed"
print("Python", sys.version.split()[0], "| tornado", v("tornado"), "| uvloop", v("uvloop"), "| aiohttp", v("aiohttp"))
' || echo "Python ?"), $(nginx -v 2>&1 | sed 's/^nginx version: //'),\
 $({ wrk -v 2>&1 || true; } | head -1 | awk '{ print "wrk", $2 }')"
TREE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')\
 ($(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l) uncommitted changes)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ " $PEERS " == *" aiohttp "* ]] && ! "$PYTHON" -c 'import aiohttp' 2>/dev/null; then
    echo "run.sh: aiohttp is not installed for $PYTHON (pip install -e '.[bench]'); its rows will say failed" >&2
fi
{
    printf 'key\tvalue\n'
    printf 'stamp\t%s\nrounds\t%s\nduration\t%s\nwarmup\t%s\nconnections\t%s\n' \
        "$STAMP" "$ROUNDS" "$DURATION" "$WARMUP" "$CONNECTIONS"
    printf 'peers\t%s\nscenarios\t%s\nidle_connections\t%s\n' "$PEERS" "$SCENARIOS" "$IDLE_CONNECTIONS"
    printf 'server_cpu\t%s\nclient_cpu\t%s\n' "$SERVER_CPU" "$CLIENT_CPU"
    printf 'machine\t%s\nversions\t%s\ntree\t%s\nload_before\t%s\n' "$MACHINE" "$VERSIONS" "$TREE" "$LOAD_BEFORE"
} >"$OUT/meta.tsv"

echo "fastgw bench $STAMP: rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s connections=$CONNECTIONS"
echo "peers: $PEERS | scenarios: $SCENARIOS | idle connections: $IDLE_CONNECTIONS"
echo "expected time: about $(((ROUNDS * per_round + 30) / 60)) min ($((ROUNDS * per_round)) s)"
echo "machine: $MACHINE"
echo "versions: $VERSIONS"
echo "fastgw tree: $TREE"
echo "pinning: peer CPU $SERVER_CPU; wrk and client.py CPU $CLIENT_CPU; upstream NGINX CPU $UPSTREAM_CPU"
echo "load average before the run: $LOAD_BEFORE"
echo "raw results: $OUT"
echo

taskset -c "$UPSTREAM_CPU" nginx -p "$TMP/upstream" -e "$TMP/upstream/error.log" -c "$OUT/conf/upstream.conf" \
    >"$OUT/logs/upstream.log" 2>&1 &
UPSTREAM_PID=$!
wait_port "$UPSTREAM_PORT" "$UPSTREAM_PID" || die "the upstream NGINX did not start; see $OUT/logs/upstream.log"
PEER_LOG="$OUT/logs/upstream.log"
UP="http://127.0.0.1:$UPSTREAM_PORT"
# /post must really read the 16 KiB bodies: three POSTs on one keep-alive connection only get three
# "ok" answers if each body was consumed (otherwise its bytes would be parsed as the next request).
check "$UP/1k" --size 1024 && check "$UP/64k" --size 65536 &&
    check "$UP/post" --method POST --body-size 16384 --size 3 ||
    die "the upstream does not serve what the scenarios need"

BENCH_JWT=$("$PYTHON" -c 'import sys, time, jwt
claims = {"sub": "bench-jwt", "role": "user", "scope": "bench", "plan": "pro", "app": "bench",
          "exp": int(time.time()) + 86400}
print(jwt.encode(claims, sys.argv[1], algorithm="HS256"))' "$JWT_SECRET") || die "cannot make a JWT (PyJWT missing?)"
export BENCH_STATIC_TOKEN=$STATIC_TOKEN BENCH_JWT

echo "rnd scenario  peer"
for ((round = 1; round <= ROUNDS; round++)); do
    for peer in $PEERS; do
        if ! start_peer "$peer"; then
            for s in get1k post16k get64k; do
                if wants "$s"; then record_failed "$s" "$peer"; fi
            done
            if wants idle; then printf '%s\t%s\tfailed\t\t\t\t\n' "$round" "$peer" >>"$RSS_TSV"; fi
        else
            if wants idle; then
                check "$URL/1k" --size 1024 --repeat 1 || true # "idle" = started and has served once
                sleep 0.5
                measure_idle "$peer"
            fi
            for s in get1k post16k get64k; do
                if wants "$s"; then measure "$s" "$peer"; fi
            done
            stop_peer
        fi
        if [[ "$peer" == fastgw* ]] && wants pipeline; then
            if start_peer "$peer" full; then
                measure pipeline "$peer"
                stop_peer
            else
                record_failed pipeline "$peer"
            fi
        fi
    done
done

stop_pid "$UPSTREAM_PID"
UPSTREAM_PID=""
for peer in fastgw fastgw-py; do
    if [[ -s "$OUT/logs/$peer.impl" ]]; then echo "$peer speedups: $(cat "$OUT/logs/$peer.impl")"; fi
done
# Gateway trouble that wrk cannot see: tracebacks and errors in the logs.
for log in "$OUT"/logs/fastgw*.log "$OUT"/logs/aiohttp*.log "$OUT"/logs/floor*.log; do
    [[ -e "$log" ]] || continue
    if grep -qE 'Traceback|ERROR|CRITICAL' "$log"; then
        echo "note: $(basename "$log") contains errors or tracebacks" >&2
    fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
printf 'load_after\t%s\n' "$LOAD_AFTER" >>"$OUT/meta.tsv"
echo "load average after the run: $LOAD_AFTER"
echo
"$PYTHON" "$BENCH/summarize.py" "$OUT" | tee "$OUT/summary.md"
