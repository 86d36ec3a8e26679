#!/usr/bin/env bash
# Memory under hostile and idle load, against the buffer budget: the
# router's resident memory and the kernel's TCP memory (/proc/net/sockstat)
# with SLOW slow clients announcing 16 KiB ClientHellos and dribbling them,
# then with IDLE idle passthrough connections; a healthy client is served
# during each. All on loopback; one JSON line per phase in
# target/bench/memory.json.
#
#   SLOW=19000 IDLE=9000 BUDGET=64MiB bash benches/memory.sh
#
# Both processes are bound by the open-files hard limit: the router holds one
# descriptor per slow client and two per idle connection.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SLOW=${SLOW:-19000}
IDLE=${IDLE:-9000}
BUDGET=${BUDGET:-64MiB}
SECS=${SECS:-10}
OUT=$ROOT/target/bench
WORK=$OUT/memory
mkdir -p "$WORK"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --quiet --bin switchyard || exit 1
LOADGEN=$(cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | grep loadgen | head -1 | cut -d'"' -f4)
[ -x "$LOADGEN" ] || { echo "cannot build benches/loadgen.rs"; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT

"$LOADGEN" serve --mode echo --listen 127.0.0.1:9601 & pids+=($!)
cat >"$WORK/os_sni_passthrough.map" <<EOF
^echo\.bench\.test$ 1
^hold\.bench\.test$ 1
EOF
cat >"$WORK/os_tcp_be.map" <<EOF
^echo\.bench\.test$ be_tcp:bench:echo
^hold\.bench\.test$ be_tcp:bench:echo
EOF
cat >"$WORK/switchyard.toml" <<EOF
[[listener]]
name = "public_ssl"
bind = "127.0.0.1:13601"
inspect_timeout = "120s"
max_connections = 30000

[maps]
sni_passthrough = "os_sni_passthrough.map"
tcp_be = "os_tcp_be.map"

[limits]
buffer_memory = "$BUDGET"

[stats]
bind = "127.0.0.1:13602"

[[backend]]
name = "be_tcp:bench:echo"
servers = [{ name = "echo", address = "127.0.0.1:9601" }]
EOF
start_router() {
  RUST_LOG=warn "$ROOT/target/release/switchyard" run --config "$WORK/switchyard.toml" 2>>"$WORK/router.log" &
  SYPID=$!; pids+=($SYPID)
  sleep 1
}

metric() { curl -s http://127.0.0.1:13602/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
: >"$OUT/memory.json"
phase() { # name loadgen-mode args… (a fresh router each, the budget's peak sampled)
  local name=$1; shift
  start_router
  local peak=0
  ( while sleep 0.5; do v=$(metric switchyard_buffer_memory_bytes); echo "${v:-0}"; done ) >"$WORK/samples" &
  local sampler=$!
  local line
  line=$("$LOADGEN" "$@" --target 127.0.0.1:13601 --pid "$SYPID")
  kill "$sampler" 2>/dev/null
  peak=$(sort -g "$WORK/samples" | tail -1)
  echo "{\"phase\":\"$name\",\"budget\":\"$BUDGET\",\"buffer_memory_peak_bytes\":${peak:-0},\"buffer_refused\":$(metric switchyard_buffer_memory_refused_total),\"router\":$line}" | tee -a "$OUT/memory.json"
  kill "$SYPID"; wait "$SYPID" 2>/dev/null
  sleep 1
}
phase slowloris slowloris --conns "$SLOW" --secs "$SECS"
phase idle hold --sni hold.bench.test --conns "$IDLE"
