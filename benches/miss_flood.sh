#!/usr/bin/env bash
# A/B of the route-miss path: a keep-alive workload through a passthrough
# route while a second load generator floods the router with new
# connections whose SNI is a different unknown name each time. Runs two
# switchyard binaries alternately (A, B, A, B) on the same config and
# prints, per run, keep-alive messages/s, flood connections/s and both per
# proxy CPU-second. Loopback only.
#
#   bash benches/miss_flood.sh OLD_BINARY NEW_BINARY
set -u
cd "$(dirname "$0")/.."
A=${1:?old binary}; B=${2:?new binary}
DUR=${DUR:-6}; THREADS=${THREADS:-2}
WORK=$(pwd)/target/bench/flood; mkdir -p "$WORK"
LOADGEN=$(cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | grep loadgen | head -1 | cut -d'"' -f4)
[ -x "$LOADGEN" ] || { echo "cannot build benches/loadgen.rs"; exit 1; }
pids=(); trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT
"$LOADGEN" serve --mode echo --listen 127.0.0.1:9601 & pids+=($!)
printf '^echo\\.bench\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:b:echo\n' > "$WORK/os_tcp_be.map"
cat > "$WORK/switchyard.toml" <<TOML
[[listener]]
name = "l"
bind = "127.0.0.1:13543"
[maps]
tcp_be = "os_tcp_be.map"
[stats]
enabled = false
[[backend]]
name = "be_tcp:b:echo"
servers = [{ name = "e", address = "127.0.0.1:9601" }]
TOML
field() { grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }
for bin in "$A" "$B" "$A" "$B"; do
  RUST_LOG=error "$bin" --threads "$THREADS" run --config "$WORK/switchyard.toml" & sy=$!
  sleep 0.5
  "$LOADGEN" flood --target 127.0.0.1:13543 --conns 16 --secs "$DUR" > "$WORK/flood.json" &
  fl=$!
  ka=$("$LOADGEN" keepalive --target 127.0.0.1:13543 --sni echo.bench.test --conns 32 --secs "$DUR" --pid "$sy")
  wait "$fl"
  kill "$sy"; wait "$sy" 2>/dev/null
  kops=$(echo "$ka" | field ops); cpu=$(echo "$ka" | field proxy_cpu_s)
  fops=$(field ops < "$WORK/flood.json")
  awk -v b="$bin" -v k="$kops" -v f="$fops" -v c="$cpu" -v d="$DUR" 'BEGIN {
    printf "%-40s keepalive %8.0f/s  flood %7.0f conn/s  proxy cpu %5.2fs  per cpu-s: %8.0f msgs + %6.0f conns\n",
      b, k/d, f/d, c, k/c, f/c }'
done
