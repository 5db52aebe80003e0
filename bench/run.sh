#!/usr/bin/env bash
# Load-test fastgw against NGINX proxy_pass and a naive Tornado proxy, same upstream, same load.
#
#   bash bench/run.sh                      # or: make bench
#   DURATION=30 ROUNDS=5 bash bench/run.sh
#   SCENARIO=post16k bash bench/run.sh     # POST a 16 KiB body instead of GET
#   SERVERS="fastgw fastgw-py" bash bench/run.sh   # compiled hot path vs the pure-Python twin
#
# Layout (2 cores): the server under test on CPU 0 (taskset -c 0); wrk and the upstream NGINX
# on CPU 1. Every server listens on 127.0.0.1:8080 in turn, the upstream on 127.0.0.1:8081.
# Nothing leaves 127.0.0.1. See bench/README.md for what the numbers mean and what they don't.
#
# Environment:
#   DURATION     seconds per measured wrk run (10)
#   WARMUP       seconds of the unmeasured wrk run before each measured one (2)
#   ROUNDS       rounds of A B C ... (3); the table reports the median of the rounds
#   CONNECTIONS  wrk connections (50); wrk always runs one thread
#   SCENARIO     get1k (default): GET /, 1 KiB response | post16k: POST / with a 16 KiB body
#   SERVERS      which servers, in round order (default "nginx fastgw naive");
#                also "fastgw-py": fastgw with FASTGW_NO_EXTENSIONS=1
#   PYTHON       interpreter for fastgw and the naive proxy (.venv/bin/python if it exists,
#                else python3)
#   SERVER_CPU, CLIENT_CPU, UPSTREAM_CPU   CPU pinning (0, 1, 1)
#   KEEP_LOGS    a directory: copy the raw wrk outputs, configs and server logs there
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-50}
SCENARIO=${SCENARIO:-get1k}
SERVERS=${SERVERS:-nginx fastgw naive}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
UPSTREAM_CPU=${UPSTREAM_CPU:-1}
KEEP_LOGS=${KEEP_LOGS:-}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# Measure the checked-out fastgw, whatever else the interpreter has installed.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

LISTEN_PORT=8080
UPSTREAM_PORT=8081
URL="http://127.0.0.1:$LISTEN_PORT/"

die() {
    echo "run.sh: $*" >&2
    exit 1
}

for tool in nginx wrk taskset curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON not found"
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -gt 0 ]] || die "DURATION must be a positive integer"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be an integer"
[[ "$ROUNDS" =~ ^[0-9]+$ && "$ROUNDS" -gt 0 ]] || die "ROUNDS must be a positive integer"
[[ "$CONNECTIONS" =~ ^[0-9]+$ && "$CONNECTIONS" -gt 0 ]] || die "CONNECTIONS must be a positive integer"
for s in $SERVERS; do
    case "$s" in nginx | fastgw | fastgw-py | naive) ;; *) die "unknown server '$s' in SERVERS" ;; esac
done
WRK_SCRIPT=()
case "$SCENARIO" in
    get1k) ;;
    post16k) WRK_SCRIPT=(-s "$BENCH/post16k.lua") ;;
    *) die "unknown SCENARIO '$SCENARIO' (get1k, post16k)" ;;
esac

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fastgw-bench.XXXXXX")
UPSTREAM_PID=""
SERVER_PID=""

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
    stop_pid "$SERVER_PID"
    stop_pid "$UPSTREAM_PID"
    if [[ -n "$KEEP_LOGS" ]]; then
        mkdir -p "$KEEP_LOGS" && cp -r "$TMP"/. "$KEEP_LOGS"/ && echo "logs kept in $KEEP_LOGS" >&2
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # wait_port PORT PID NAME: until PORT accepts, or fail if PID died / 15 s passed
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 150; i++)); do
        port_open "$port" && return 0
        kill -0 "$pid" 2>/dev/null || {
            echo "run.sh: $name exited before listening on $port; its log:" >&2
            cat "$TMP/$name.log" >&2 || true
            exit 1
        }
        sleep 0.1
    done
    die "$name did not listen on $port within 15 s"
}

for port in $LISTEN_PORT $UPSTREAM_PORT; do
    port_open "$port" && die "127.0.0.1:$port is already in use; stop whatever listens there"
done

# nginx as the current user: when that is root, keep the workers root too (default: nobody).
NGINX_USER=""
if [[ $EUID -eq 0 ]]; then NGINX_USER="user $(id -un) $(id -gn);"; fi

nginx_common() { # the parts both NGINX configs share; everything under $TMP/$1
    local dir=$1
    mkdir -p "$dir"
    cat <<EOF
$NGINX_USER
daemon off;
master_process on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_buffer_size 64k;
EOF
}

# The upstream: a fixed 1 KiB body for any method and path (request bodies are read and dropped).
BODY_1K=$(head -c 1024 /dev/zero | tr '\0' 'x')
{
    nginx_common "$TMP/upstream"
    cat <<EOF
    server {
        listen 127.0.0.1:$UPSTREAM_PORT reuseport backlog=4096;
        location / {
            default_type application/octet-stream;
            return 200 "$BODY_1K";
        }
    }
}
EOF
} >"$TMP/upstream.conf"

# (a) NGINX proxy_pass with keep-alive upstream connections.
{
    nginx_common "$TMP/nginx"
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$LISTEN_PORT backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx.conf"

# (b) fastgw: one worker, no access log, no metrics listener, one open route.
cat >"$TMP/fastgw.yaml" <<EOF
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

start_server() { # start_server NAME: start it on CPU $SERVER_CPU, set SERVER_PID, wait for the port
    local name=$1
    case "$name" in
        nginx)
            taskset -c "$SERVER_CPU" nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx.conf" \
                >"$TMP/$name.log" 2>&1 &
            ;;
        fastgw)
            taskset -c "$SERVER_CPU" env -u FASTGW_NO_EXTENSIONS \
                "$PYTHON" -m fastgw run -c "$TMP/fastgw.yaml" >"$TMP/$name.log" 2>&1 &
            ;;
        fastgw-py)
            taskset -c "$SERVER_CPU" env FASTGW_NO_EXTENSIONS=1 \
                "$PYTHON" -m fastgw run -c "$TMP/fastgw.yaml" >"$TMP/$name.log" 2>&1 &
            ;;
        naive)
            taskset -c "$SERVER_CPU" "$PYTHON" "$BENCH/naive_proxy.py" \
                --listen "127.0.0.1:$LISTEN_PORT" --upstream "http://127.0.0.1:$UPSTREAM_PORT" \
                >"$TMP/$name.log" 2>&1 &
            ;;
    esac
    SERVER_PID=$!
    wait_port "$LISTEN_PORT" "$SERVER_PID" "$name"
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
    local i
    for ((i = 0; i < 50; i++)); do
        port_open "$LISTEN_PORT" || return 0
        sleep 0.1
    done
    die "something still listens on $LISTEN_PORT after stopping the server"
}

sanity_check() { # one request through the server: 200 and the upstream's 1 KiB body
    local name=$1 out
    if [[ "$SCENARIO" == post16k ]]; then
        out=$(head -c 16384 /dev/zero | curl -sS -o /dev/null -w '%{http_code} %{size_download}' \
            --max-time 5 -X POST -H 'Content-Type: application/octet-stream' --data-binary @- "$URL")
    else
        out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 "$URL")
    fi
    [[ "$out" == "200 1024" ]] || {
        echo "run.sh: $name answered '$out' (want '200 1024'); its log:" >&2
        cat "$TMP/$name.log" >&2
        exit 1
    }
}

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

pct() { # pct DELTA_BUSY DELTA_TOTAL
    if [[ $2 -gt 0 ]]; then echo $(($1 * 100 / $2)); else echo 0; fi
}

run_wrk() { # run_wrk SECONDS OUTFILE
    timeout $(($1 + 30)) taskset -c "$CLIENT_CPU" \
        wrk -t1 -c"$CONNECTIONS" -d"$1s" --latency "${WRK_SCRIPT[@]}" "$URL" >"$2" 2>&1
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

median() { # median of the arguments
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# --- go ---------------------------------------------------------------------------------------

echo "fastgw bench: scenario=$SCENARIO duration=${DURATION}s warmup=${WARMUP}s rounds=$ROUNDS" \
    "connections=$CONNECTIONS servers='$SERVERS'"
echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "$(uname -sr)"
echo "versions: $("$PYTHON" -c 'import sys, tornado, uvloop
print("Python", sys.version.split()[0], "| tornado", tornado.version, "| uvloop", uvloop.__version__)'),"\
    "$(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -1 | awk '{ print "wrk", $2 }')"
echo "pinning: server CPU $SERVER_CPU, wrk CPU $CLIENT_CPU, upstream nginx CPU $UPSTREAM_CPU"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)" \
    "(anything else running on the machine shows up in the numbers below)"
echo

taskset -c "$UPSTREAM_CPU" nginx -p "$TMP/upstream" -e "$TMP/upstream/error.log" -c "$TMP/upstream.conf" \
    >"$TMP/upstream.log" 2>&1 &
UPSTREAM_PID=$!
wait_port "$UPSTREAM_PORT" "$UPSTREAM_PID" upstream
[[ $(curl -sS -o /dev/null -w '%{size_download}' "http://127.0.0.1:$UPSTREAM_PORT/") == 1024 ]] ||
    die "the upstream does not serve 1 KiB"

declare -A RPS=() P50=() P99=() EFF=() TROUBLE=()
echo "srv% = CPU used by the server's own processes (% of one core); cpu$SERVER_CPU%/cpu$CLIENT_CPU% = all use of"
echo "those cores (kernel, upstream, and anything else running on the machine included)."
echo "req/cpu-s = requests served per second of the server's own CPU time (req/s / srv%)."
printf '%-6s %-10s %10s %9s %9s %6s %6s %5s %6s %6s %10s\n' \
    round server req/s p50_ms p99_ms errors non2xx srv% "cpu$SERVER_CPU%" "cpu$CLIENT_CPU%" req/cpu-s
for ((round = 1; round <= ROUNDS; round++)); do
    for name in $SERVERS; do
        start_server "$name"
        sanity_check "$name"
        if [[ "$WARMUP" -gt 0 ]]; then run_wrk "$WARMUP" "$TMP/wrk-$name-$round-warmup.txt" || true; fi
        read -r s0_busy s0_total < <(cpu_ticks "$SERVER_CPU")
        read -r c0_busy c0_total < <(cpu_ticks "$CLIENT_CPU")
        p0=$(proc_ticks "$SERVER_PID")
        out="$TMP/wrk-$name-$round.txt"
        if ! run_wrk "$DURATION" "$out"; then
            echo "run.sh: wrk failed against $name (round $round):" >&2
            cat "$out" >&2
            exit 1
        fi
        p1=$(proc_ticks "$SERVER_PID")
        read -r s1_busy s1_total < <(cpu_ticks "$SERVER_CPU")
        read -r c1_busy c1_total < <(cpu_ticks "$CLIENT_CPU")
        scpu=$(pct $((s1_busy - s0_busy)) $((s1_total - s0_total)))
        ccpu=$(pct $((c1_busy - c0_busy)) $((c1_total - c0_total)))
        pcpu=$(pct $((p1 - p0)) $((s1_total - s0_total)))
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "run.sh: $name died during the run (round $round); its log:" >&2
            cat "$TMP/$name.log" >&2
            exit 1
        fi
        if ! result=$(parse_wrk "$out"); then
            echo "run.sh: cannot parse wrk output for $name (round $round):" >&2
            cat "$out" >&2
            exit 1
        fi
        read -r rps p50 p99 errors non2xx <<<"$result"
        # req/s scaled to a fully used core: less sensitive to CPU time taken by other processes.
        eff=$(awk -v r="$rps" -v wall=$((s1_total - s0_total)) -v own=$((p1 - p0)) \
            'BEGIN { printf "%.0f", (own > 0 ? r * wall / own : 0) }')
        printf '%-6s %-10s %10.0f %9.3f %9.3f %6s %6s %5s %6s %6s %10s\n' \
            "$round" "$name" "$rps" "$p50" "$p99" "$errors" "$non2xx" "$pcpu" "$scpu" "$ccpu" "$eff"
        RPS[$name]+="$rps "
        EFF[$name]+="$eff "
        P50[$name]+="$p50 "
        P99[$name]+="$p99 "
        if [[ "$errors" != 0 || "$non2xx" != 0 ]]; then
            TROUBLE[$name]+="round $round: $(grep -E 'Socket errors|Non-2xx' "$out" | xargs echo); "
        fi
        stop_server # first, so that errors while shutting down are in the log too
        cp "$TMP/$name.log" "$TMP/$name-$round.log"
        if [[ "$name" == fastgw* ]]; then
            grep -o 'speedups: [a-z]*' "$TMP/$name.log" | head -1 >"$TMP/$name.impl" || true
            if grep -qE 'Traceback|ERROR|CRITICAL' "$TMP/$name.log"; then
                TROUBLE[$name]+="round $round: errors in the gateway log (below); "
                echo "--- $name log, round $round ---" >&2
                cat "$TMP/$name.log" >&2
            fi
        fi
    done
done

echo
echo "median of $ROUNDS round(s), ${DURATION}s each, $CONNECTIONS connections, scenario $SCENARIO:"
printf '%-10s %10s %9s %9s %10s  %s\n' server req/s p50_ms p99_ms req/cpu-s note
declare -A M_RPS=() M_P50=() M_P99=() M_EFF=()
for name in $SERVERS; do
    [[ -n "${M_RPS[$name]:-}" ]] && continue
    # shellcheck disable=SC2086  # the lists are space-separated numbers
    M_RPS[$name]=$(median ${RPS[$name]})
    # shellcheck disable=SC2086
    M_P50[$name]=$(median ${P50[$name]})
    # shellcheck disable=SC2086
    M_P99[$name]=$(median ${P99[$name]})
    # shellcheck disable=SC2086
    M_EFF[$name]=$(median ${EFF[$name]})
    note=""
    [[ -s "$TMP/$name.impl" ]] && note="($(cat "$TMP/$name.impl"))"
    printf '%-10s %10.0f %9.3f %9.3f %10.0f  %s\n' \
        "$name" "${M_RPS[$name]}" "${M_P50[$name]}" "${M_P99[$name]}" "${M_EFF[$name]}" "$note"
done

ratio() { # ratio A B: A/B of the medians, req/s and latencies
    local a=$1 b=$2
    [[ -n "${M_RPS[$a]:-}" && -n "${M_RPS[$b]:-}" ]] || return 0
    awk -v ar="${M_RPS[$a]}" -v br="${M_RPS[$b]}" -v a5="${M_P50[$a]}" -v b5="${M_P50[$b]}" \
        -v a9="${M_P99[$a]}" -v b9="${M_P99[$b]}" -v ae="${M_EFF[$a]}" -v be="${M_EFF[$b]}" \
        -v label="$a/$b" 'BEGIN {
        printf "%-18s req/s %5.2fx   p50 %5.2fx   p99 %5.2fx   req/cpu-s %5.2fx\n",
            label, ar / br, a5 / b5, a9 / b9, (be > 0 ? ae / be : 0) }'
}
echo
echo "ratios (req/s: higher is better for the first; latency: lower is better for the first):"
ratio fastgw nginx
ratio fastgw naive
ratio fastgw-py nginx
ratio fastgw-py naive
ratio fastgw fastgw-py

if [[ ${#TROUBLE[@]} -gt 0 ]]; then
    echo
    echo "PROBLEMS (numbers for these servers include failed requests):"
    for name in "${!TROUBLE[@]}"; do echo "  $name: ${TROUBLE[$name]}"; done
fi
