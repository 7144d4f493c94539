#!/usr/bin/env bash
# The ailb benchmark suite: every scenario runs three paths on the same fake upstream, in one run,
# on loopback — direct to the upstream, through nginx proxy_pass, and through ailb — and prints a
# table with ratios and added latencies (absolute numbers drift on shared machines).
#
#   bench/run.sh            full run (about 10 minutes on 2 cores)
#   bench/run.sh quick      short pass (about 4 minutes): shorter runs, 500 streams, 10k chunks
#   bench/run.sh full 1 2   only some scenarios (numbers 1..6), in the given mode
#
# Environment (all optional):
#   AILB_BIN=path          ailb binary to test (default build/ailb; built with scripts/build.sh
#                          when missing). It is copied first, so a rebuild during the run does
#                          not change what is measured.
#   BENCH_OUT=dir          where binaries, logs, results.jsonl and table.md go (build/bench)
#   BENCH_STREAMS=N        scenario 3 streams (default 10000 in full mode, 500 in quick mode;
#                          capped to (descriptor hard limit - 200) / 2, as a proxy holds two
#                          descriptors per stream: `ulimit -Hn` is raised first when root may)
#   BENCH_NGINX_WORKERS=n  nginx worker_processes (default auto = one per core)
#   BENCH_MAX_LOAD=x       wait (up to BENCH_WAIT_LOAD seconds, default 300) until the 1-minute
#                          load average is below x before starting (default 1.5; 0 = don't wait)
#   BENCH_RAG_CHUNKS=n     scenario 5/6 collection size (default 100000; quick 10000)
#
# Needs: g++ (C++20), nginx, curl, python3 — installed with apt-get when missing and run as root.
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-full}
shift || true
case "$MODE" in
  full | quick) ;;
  *) echo "usage: bench/run.sh [full|quick] [scenario numbers...]" >&2; exit 2 ;;
esac
SCENARIOS=${*:-1 2 3 4 5 6}
OUT=${BENCH_OUT:-$ROOT/build/bench}
BIN=$OUT/bin
LOGS=$OUT/logs
RESULTS=$OUT/results.jsonl
mkdir -p "$BIN" "$LOGS" "$OUT/data"
: > "$RESULTS"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# Tools

need_pkgs=()
command -v g++ > /dev/null || need_pkgs+=(g++)
command -v nginx > /dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v curl > /dev/null || need_pkgs+=(curl)
command -v python3 > /dev/null || need_pkgs+=(python3)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    die "missing ${need_pkgs[*]}: run 'sudo apt-get install -y ${need_pkgs[*]}' first"
  fi
  log "installing ${need_pkgs[*]}"
  apt-get update -qq > /dev/null
  # The package starts no daemon here (no init system), and if it does we never talk to it.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" > /dev/null ||
    die "apt-get install ${need_pkgs[*]} failed"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# Descriptors: scenario 3 holds N client sockets, and a proxy holds 2N.
if [ "$(id -u)" -eq 0 ]; then
  ulimit -Hn 1048576 2> /dev/null || true
fi
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
FD_LIMIT=$(ulimit -n)

# ---------------------------------------------------------------------------------------------
# Build

build_tool() {  # name
  local src=$ROOT/bench/$1.cc bin=$BIN/$1
  if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
    log "building $1"
    g++ -std=c++20 -O2 -Wall -Wextra -o "$bin.tmp" "$src" -lpthread || die "g++ $1 failed"
    mv "$bin.tmp" "$bin"
  fi
}
build_tool loadgen
build_tool fast_upstream
LOADGEN=$BIN/loadgen

AILB_BIN_GIVEN=${AILB_BIN:+yes}
AILB_BIN=${AILB_BIN:-$ROOT/build/ailb}
if [ ! -x "$AILB_BIN" ]; then
  log "no $AILB_BIN: building ailb (Release) with scripts/install-deps.sh and scripts/build.sh"
  [ "$AILB_BIN" = "$ROOT/build/ailb" ] || die "AILB_BIN=$AILB_BIN does not exist"
  { "$ROOT/scripts/install-deps.sh" && "$ROOT/scripts/build.sh"; } > "$LOGS/build.log" 2>&1 ||
    die "building ailb failed: see $LOGS/build.log"
fi
cp "$AILB_BIN" "$BIN/ailb.tmp" && mv "$BIN/ailb.tmp" "$BIN/ailb"
AILB=$BIN/ailb

# ---------------------------------------------------------------------------------------------
# Processes

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2> /dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2> /dev/null || break
      sleep 0.05
    done
    kill -KILL "$pid" 2> /dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$LOADGEN" freeport 1; }

# Waits until GET url answers 200; $2 = timeout in seconds.
wait_http() {
  local url=$1 timeout=${2:-20} i
  for i in $(seq 1 $((timeout * 100))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url")" = 200 ] && return 0
    sleep 0.01
  done
  return 1
}

# Starts the fake upstream; sets UP_PORT, UP_PID.
start_upstream() {
  "$BIN/fast_upstream" --port 0 > "$LOGS/upstream.out" 2> "$LOGS/upstream.err" &
  UP_PID=$!
  PIDS+=("$UP_PID")
  for _ in $(seq 1 200); do
    UP_PORT=$(awk '/listening on/ {print $3}' "$LOGS/upstream.out")
    [ -n "$UP_PORT" ] && return 0
    sleep 0.01
  done
  die "fast_upstream did not start"
}

# Starts nginx; sets NGINX_PORT, NGINX_FAILOVER_PORT, NGINX_PID.
start_nginx() {
  local dir=$OUT/nginx
  rm -rf "$dir" && mkdir -p "$dir/nginx-tmp"
  NGINX_PORT=$(free_port)
  NGINX_FAILOVER_PORT=$(free_port)
  sed -e "s#@DIR@#$dir#g" -e "s/@PORT@/$NGINX_PORT/g" -e "s/@UP@/$UP_PORT/g" \
    -e "s/@DEAD@/$DEAD_PORT/g" -e "s/@FAILOVER_PORT@/$NGINX_FAILOVER_PORT/g" \
    -e "s/@WORKERS@/${BENCH_NGINX_WORKERS:-auto}/g" \
    "$ROOT/bench/nginx.conf.template" > "$dir/nginx.conf"
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log" > "$LOGS/nginx.out" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_http "http://127.0.0.1:$NGINX_PORT/v1/models" 10 || die "nginx did not start: $(cat "$LOGS/nginx.out")"
}

nginx_workers() { pgrep -P "$NGINX_PID" | paste -sd, -; }

# The environment ailb gets: nothing inherited but PATH/HOME, so a developer's OPENAI_* or
# AILB_* variables cannot leak into the measurement.
ailb_env() {  # name port [data dir to use as it is]
  local data=${3:-$OUT/data/$1}
  if [ -z "${3:-}" ]; then rm -rf "$data" && mkdir -p "$data"; fi
  echo env -i PATH=/usr/bin:/bin HOME="${HOME:-/root}" HOST=127.0.0.1 HTTP_PORT="$2" GRPC_PORT=0 \
    AILB_DATA_DIR="$data" LOG_LEVEL="${BENCH_AILB_LOG_LEVEL:-warn}" OPENAI_API_KEY=sk-bench
}

# Starts ailb; $1 = name, then extra VAR=value settings. Sets AILB_PORT, AILB_PID. A fresh data
# directory unless AILB_DATA is set (then that one is used as it is).
start_ailb() {
  local name=$1
  shift
  AILB_PORT=$(free_port)
  # shellcheck disable=SC2046
  $(ailb_env "$name" "$AILB_PORT" ${AILB_DATA:-}) "$@" "$AILB" > "$LOGS/ailb-$name.log" 2>&1 &
  AILB_PID=$!
  PIDS+=("$AILB_PID")
  wait_http "http://127.0.0.1:$AILB_PORT/healthz" 30 ||
    die "ailb ($name) did not become healthy: $(tail -5 "$LOGS/ailb-$name.log")"
}

stop_pid() {
  kill -TERM "$1" 2> /dev/null || return 0
  for _ in $(seq 1 200); do
    kill -0 "$1" 2> /dev/null || return 0
    sleep 0.05
  done
  kill -KILL "$1" 2> /dev/null || true
}

# Runs the load generator; appends its JSON line (with scenario and path) to results.jsonl.
lg() {  # scenario path loadgen-mode loadgen-args...
  local scenario=$1 path=$2 mode=$3
  shift 3
  local line
  line=$("$LOADGEN" "$mode" --label "$scenario/$path" "$@" 2>> "$LOGS/loadgen.err")
  if [ -z "$line" ]; then
    line="{\"mode\":\"failed\",\"label\":\"$scenario/$path\"}"
  fi
  echo "$line" >> "$RESULTS"
  log "$scenario/$path: $(echo "$line" | cut -c1-220)"
}

url() { echo "http://127.0.0.1:$1/v1/chat/completions"; }

# ---------------------------------------------------------------------------------------------
# Settings per mode

if [ "$MODE" = quick ]; then
  MAX_D=3 MAX_W=1 RATE_D=5 RATE_W=1 STREAMS=20 HOLD_CHUNKS=5 FAIL_D=4 STARTUP_RUNS=5 IDLE_MS=500
  HOLD_N=${BENCH_STREAMS:-500}
  RAG_CHUNKS=${BENCH_RAG_CHUNKS:-10000}
else
  MAX_D=10 MAX_W=2 RATE_D=15 RATE_W=2 STREAMS=50 HOLD_CHUNKS=30 FAIL_D=10 STARTUP_RUNS=10 IDLE_MS=1000
  # The goal is 10,000; a proxy needs two descriptors per stream (client and upstream sides),
  # so a per-process limit below ~20,200 caps N just under it.
  HOLD_N=${BENCH_STREAMS:-10000}
  RAG_CHUNKS=${BENCH_RAG_CHUNKS:-100000}
fi
if [ "$FD_LIMIT" -lt $((2 * HOLD_N + 200)) ]; then
  log "descriptor limit $FD_LIMIT (hard) is too low for $HOLD_N streams through a proxy; using $(((FD_LIMIT - 200) / 2))"
  HOLD_N=$(((FD_LIMIT - 200) / 2))
fi

# ---------------------------------------------------------------------------------------------
# Wait for a quiet machine

MAX_LOAD=${BENCH_MAX_LOAD:-1.5}
WAIT_LOAD=${BENCH_WAIT_LOAD:-300}
load1() { cut -d' ' -f1 /proc/loadavg; }
if [ "$MAX_LOAD" != 0 ]; then
  waited=0
  while awk -v l="$(load1)" -v m="$MAX_LOAD" 'BEGIN { exit !(l >= m) }'; do
    if [ "$waited" -ge "$WAIT_LOAD" ]; then
      log "load average still $(load1) after ${WAIT_LOAD}s: running anyway (expect noise)"
      break
    fi
    [ "$waited" -eq 0 ] && log "load average $(load1) >= $MAX_LOAD: waiting for a quieter machine"
    sleep 10
    waited=$((waited + 10))
  done
fi

# Metadata for the report.
git_rev=$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- src include 2> /dev/null || git_rev="$git_rev+dirty"
# What was measured: the tree's revision and the binary's own checksum (AILB_BIN may be any build).
bin_sum=$(sha256sum "$AILB" | cut -c1-12)
if [ -n "$AILB_BIN_GIVEN" ]; then
  git_rev="binary $AILB_BIN (sha256 $bin_sum; the tree is at $git_rev)"
else
  git_rev="build/ailb (sha256 $bin_sum; the tree is at $git_rev)"
fi
python3 - "$RESULTS" << EOF
import json, os, platform, sys
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
mem = next((int(l.split()[1]) for l in open('/proc/meminfo') if l.startswith('MemTotal')), 0)
meta = {"mode": "meta", "label": "meta", "bench_mode": "$MODE", "nproc": os.cpu_count(), "cpu": cpu,
        "mem_gb": round(mem / 1048576, 1), "kernel": platform.release(), "ailb_rev": "$git_rev",
        "load_start": float(open('/proc/loadavg').read().split()[0]), "hold_n": $HOLD_N,
        "fd_limit": $FD_LIMIT, "nginx": "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')",
        "nginx_workers": "${BENCH_NGINX_WORKERS:-auto}"}
open(sys.argv[1], 'a').write(json.dumps(meta) + "\n")
EOF

# ---------------------------------------------------------------------------------------------
# Start the shared processes

DEAD_PORT=$(free_port)  # nothing listens here: connections are refused
start_upstream
start_nginx
log "upstream :$UP_PORT  nginx :$NGINX_PORT (failover :$NGINX_FAILOVER_PORT)  dead :$DEAD_PORT  fd limit $FD_LIMIT"

UP_ENV=(OPENAI_BASE_URL="http://127.0.0.1:$UP_PORT/v1" OPENAI_MODELS=bench)

# Does ailb answer a second request on a kept-alive connection correctly? (It did not when this
# suite was written: every request after the first on a connection got a 500 and then the
# previous reply.) Recorded so the report can say why keep-alive rows show errors.
start_ailb probe "${UP_ENV[@]}"
body='{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
one=(-s -o /dev/null -w '%{http_code} ' -H 'Content-Type: application/json' -d "$body" "$(url "$AILB_PORT")")
codes=$(curl "${one[@]}" --next "${one[@]}" --next "${one[@]}")
echo "{\"mode\":\"probe\",\"label\":\"keepalive\",\"codes\":\"$codes\"}" >> "$RESULTS"
[ "$codes" = "200 200 200 " ] || log "WARNING: ailb keep-alive probe answered '$codes' (expected 200 200 200)"
stop_pid "$AILB_PID"

# ---------------------------------------------------------------------------------------------
# Scenario 1: non-streaming chat, ~1 KB request and reply, 0 ms upstream

if want 1; then
  log "scenario 1: non-streaming throughput and latency"
  for conn in ka close; do
    flag=""
    [ "$conn" = close ] && flag=--close
    start_ailb "s1-$conn" "${UP_ENV[@]}"  # a fresh ailb for each connection mode
    for p in direct nginx ailb; do
      case $p in direct) port=$UP_PORT ;; nginx) port=$NGINX_PORT ;; ailb) port=$AILB_PORT ;; esac
      lg "s1.max.$conn" $p max --url "$(url $port)" --conns 64 --duration $MAX_D --warmup $MAX_W $flag
    done
    for p in direct nginx ailb; do
      case $p in direct) port=$UP_PORT ;; nginx) port=$NGINX_PORT ;; ailb) port=$AILB_PORT ;; esac
      lg "s1.rate.$conn" $p rate --url "$(url $port)" --rate 1000 --duration $RATE_D --warmup $RATE_W $flag
    done
    echo "{\"mode\":\"rss\",\"label\":\"s1.$conn.rss/ailb\",\"rss_kb\":$(awk '/VmRSS/ {print $2}' /proc/$AILB_PID/status)}" >> "$RESULTS"
    stop_pid "$AILB_PID"
  done
fi

# ---------------------------------------------------------------------------------------------
# Scenario 2: streaming, 100 chunks 1 ms apart; one stream at a time, a new connection each

if want 2; then
  log "scenario 2: streaming TTFB and per-chunk delay"
  start_ailb s2 "${UP_ENV[@]}"
  for p in direct nginx ailb; do
    case $p in direct) port=$UP_PORT ;; nginx) port=$NGINX_PORT ;; ailb) port=$AILB_PORT ;; esac
    lg s2.stream $p stream --url "$(url $port)" --streams $((STREAMS + 5)) --warmup-streams 5 \
      --chunks 100 --interval-ms 1 --close
  done
  stop_pid "$AILB_PID"
fi

# ---------------------------------------------------------------------------------------------
# Scenario 3: N simultaneous long streams (a chunk per second)

if want 3; then
  log "scenario 3: $HOLD_N concurrent streams, $HOLD_CHUNKS chunks 1 s apart"
  start_ailb s3 "${UP_ENV[@]}"
  for p in direct nginx ailb; do
    case $p in
      direct) port=$UP_PORT pids=$UP_PID ;;
      nginx) port=$NGINX_PORT pids=$(nginx_workers) ;;
      ailb) port=$AILB_PORT pids=$AILB_PID ;;
    esac
    lg s3.hold $p hold --url "$(url $port)" --streams "$HOLD_N" --ramp 1000 \
      --chunks "$HOLD_CHUNKS" --interval-ms 1000 --rss-pid "$pids"
    sleep 2  # let closed connections drain before the next path
  done
  kill -0 "$AILB_PID" 2> /dev/null || log "WARNING: ailb exited during scenario 3: $(tail -3 "$LOGS/ailb-s3.log")"
  stop_pid "$AILB_PID"
fi

# ---------------------------------------------------------------------------------------------
# Scenario 4: failover cost — the first deployment refuses connections

if want 4; then
  log "scenario 4: failover when the first deployment refuses connections"
  cat > "$OUT/failover.yaml" << EOF
routing_strategy: failover
model_list:
  - model_name: bench
    provider: openai
    model: bench
    api_base: http://127.0.0.1:$DEAD_PORT/v1
    api_key_env: OPENAI_API_KEY
    id: dead
    priority: 0
  - model_name: bench
    provider: openai
    model: bench
    api_base: http://127.0.0.1:$UP_PORT/v1
    api_key_env: OPENAI_API_KEY
    id: live
    priority: 1
EOF
  start_ailb s4 AILB_CONFIG="$OUT/failover.yaml"
  for p in direct nginx ailb; do
    case $p in direct) port=$UP_PORT ;; nginx) port=$NGINX_FAILOVER_PORT ;; ailb) port=$AILB_PORT ;; esac
    lg s4.failover $p rate --url "$(url $port)" --rate 200 --duration $FAIL_D --warmup 0 --close \
      --split-header x-ailb-attempts
  done
  stop_pid "$AILB_PID"
fi

# ---------------------------------------------------------------------------------------------
# Scenario 6: start-up time and idle memory (no RAG data)

if want 6; then
  log "scenario 6: start-up and idle memory"
  port=$(free_port)
  # shellcheck disable=SC2046
  lg s6.startup ailb startup --port "$port" --runs $STARTUP_RUNS --idle-ms $IDLE_MS \
    --log "$LOGS/ailb-s6.log" -- $(ailb_env s6 "$port") "${UP_ENV[@]}" "$AILB"
fi

# ---------------------------------------------------------------------------------------------
# Scenario 5 (and the RAG half of 6): memory and RAG — see bench/rag.sh

if want 5; then
  # shellcheck source=bench/rag.sh
  source "$ROOT/bench/rag.sh"
fi

echo "{\"mode\":\"meta_end\",\"label\":\"meta_end\",\"load_end\":$(load1)}" >> "$RESULTS"
cleanup
PIDS=()
python3 "$ROOT/bench/report.py" "$RESULTS" | tee "$OUT/table.md"
log "results: $RESULTS  table: $OUT/table.md  logs: $LOGS"
