#!/usr/bin/env bash
# Side-by-side figures: Switchyard, HAProxy, nginx (stream ssl_preread and
# stream TLS termination) and sniproxy, with equivalent configurations, one
# worker thread each, the same load generator (benches/loadgen.rs, one
# thread), all on loopback. Prints one table with the ratio to HAProxy and
# writes every figure to target/bench/compare.json.
#
#   bash benches/compare.sh --install   # apt-get install the peers first
#   DUR=6 HOLD=4000 bash benches/compare.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DUR=${DUR:-6}
HOLD=${HOLD:-4000}
ROUTES=${ROUTES:-100000}
OUT=$ROOT/target/bench
WORK=$OUT/work
mkdir -p "$WORK"

if [ "${1:-}" = "--install" ]; then
  apt-get update -qq && apt-get install -y -qq haproxy nginx-light libnginx-mod-stream sniproxy openssl >/dev/null
fi
for tool in haproxy nginx sniproxy openssl; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run with --install"; exit 1; }
done
ulimit -n 20000 2>/dev/null || true

echo "building switchyard and the load generator (release)…"
cargo build --release --quiet --bin switchyard || exit 1
LOADGEN=$(cargo bench --bench loadgen --no-run --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | grep loadgen | head -1 | cut -d'"' -f4)
[ -x "$LOADGEN" ] || { echo "cannot build benches/loadgen.rs"; exit 1; }
SY=$ROOT/target/release/switchyard

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  [ -f "$WORK/haproxy.pid" ] && kill $(cat "$WORK/haproxy.pid") 2>/dev/null
  for f in nginx-backend.pid nginx-proxy.pid sniproxy.pid; do
    [ -f "$WORK/$f" ] && kill "$(cat "$WORK/$f")" 2>/dev/null
  done
  wait 2>/dev/null
}
trap cleanup EXIT

cd "$WORK"
if [ ! -f srv.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout srv.key -out srv.crt \
    -days 30 -subj "/CN=app.bench.test" -addext "subjectAltName=DNS:*.bench.test,DNS:app.bench.test" 2>/dev/null
  cat srv.crt srv.key > srv.pem
fi

# Backends: echo (9501), byte source (9502), nginx TLS web server (9443).
"$LOADGEN" serve --mode echo --listen 127.0.0.1:9501 & pids+=($!)
"$LOADGEN" serve --mode source --listen 127.0.0.1:9502 & pids+=($!)
cat > nginx-backend.conf <<NGX
worker_processes 1;
pid $WORK/nginx-backend.pid;
error_log $WORK/nginx-backend-error.log warn;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:9443 ssl; ssl_certificate $WORK/srv.crt; ssl_certificate_key $WORK/srv.key;
    ssl_session_cache off; ssl_session_tickets off;
    location / { return 200 "hello-from-backend\n"; } } }
NGX
nginx -c "$WORK/nginx-backend.conf"

# Route maps: the names every proxy serves, plus the scale maps.
q() { printf '%s' "$1" | sed 's/\./\\./g'; }
route() { printf '^%s\\.?(:[0-9]+)?(/.*)?$ %s\n' "$(q "$1")" "$2"; }
{ route echo.bench.test be_tcp:b:echo; route app.bench.test be_tcp:b:app; route bulk.bench.test be_tcp:b:bulk; route hold.bench.test be_tcp:b:echo; } > os_tcp_be.map
awk -v n="$ROUTES" 'BEGIN { for (i = 0; i < n; i++) printf "^r%d\\.bench\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:b:echo\n", i }' > scale.map
awk 'BEGIN { for (i = 0; i < 10; i++) printf "^r%d\\.bench\\.test\\.?(:[0-9]+)?(/.*)?$ be_tcp:b:echo\n", i }' > small.map

# Switchyard: passthrough 13443, edge 13444, scale 13445, small 13446. The maps
# apply to every listener: the edge figures use a name no map lists
# (edge.bench.test), which goes to the edge listener's default backend.
cat > switchyard.toml <<TOML
[[listener]]
name = "passthrough"
bind = "127.0.0.1:13443"
max_connections = 20000
[[listener]]
name = "edge"
bind = "127.0.0.1:13444"
default_backend = "be_edge:b:echo"
[maps]
tcp_be = "os_tcp_be.map"
[tls]
default_certificate = "srv.pem"
[stats]
enabled = false
[[backend]]
name = "be_tcp:b:echo"
servers = [{ name = "echo", address = "127.0.0.1:9501" }]
[[backend]]
name = "be_tcp:b:app"
servers = [{ name = "nginx", address = "127.0.0.1:9443" }]
[[backend]]
name = "be_tcp:b:bulk"
servers = [{ name = "source", address = "127.0.0.1:9502" }]
[[backend]]
name = "be_edge:b:echo"
termination = "edge"
servers = [{ name = "echo", address = "127.0.0.1:9501" }]
TOML
for size in scale small; do
  port=$([ $size = scale ] && echo 13445 || echo 13446)
  cat > switchyard-$size.toml <<TOML
[[listener]]
name = "routes"
bind = "127.0.0.1:$port"
[maps]
tcp_be = "$size.map"
[stats]
enabled = false
[[backend]]
name = "be_tcp:b:echo"
servers = [{ name = "echo", address = "127.0.0.1:9501" }]
TOML
done

# HAProxy: the same on 1044x.
hap_frontend() { # name port map
  printf 'frontend %s\n  mode tcp\n  bind 127.0.0.1:%s\n  tcp-request inspect-delay 5s\n  tcp-request content accept if { req_ssl_hello_type 1 }\n  use_backend %%[req.ssl_sni,lower,map_reg(%s)]\n' "$1" "$2" "$WORK/$3"
}
{
  printf 'global\n  nbthread 1\n  maxconn 9000\n  pidfile %s/haproxy.pid\n  daemon\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n  timeout tunnel 1h\n' "$WORK"
  hap_frontend passthrough 10443 os_tcp_be.map
  hap_frontend scale 10445 scale.map
  hap_frontend small 10446 small.map
  printf 'frontend edge\n  bind 127.0.0.1:10444 ssl crt %s/srv.pem\n  default_backend be_tcp:b:echo\n' "$WORK"
  printf 'backend be_tcp:b:echo\n  server s 127.0.0.1:9501\nbackend be_tcp:b:app\n  server s 127.0.0.1:9443\nbackend be_tcp:b:bulk\n  server s 127.0.0.1:9502\n'
} > haproxy.cfg

# nginx: stream ssl_preread on 11443, stream TLS termination on 11444.
cat > nginx-proxy.conf <<NGX
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy-error.log warn;
events { worker_connections 40000; }
stream {
  map \$ssl_preread_server_name \$be { echo.bench.test 127.0.0.1:9501; hold.bench.test 127.0.0.1:9501;
    app.bench.test 127.0.0.1:9443; bulk.bench.test 127.0.0.1:9502; default 127.0.0.1:1; }
  server { listen 127.0.0.1:11443; ssl_preread on; proxy_pass \$be; }
  server { listen 127.0.0.1:11444 ssl; ssl_certificate $WORK/srv.crt; ssl_certificate_key $WORK/srv.key;
    ssl_session_cache off; ssl_session_tickets off; proxy_pass 127.0.0.1:9501; }
}
NGX

cat > sniproxy.conf <<SNI
user root
pidfile $WORK/sniproxy.pid
error_log { filename $WORK/sniproxy-error.log
 priority notice }
listen 127.0.0.1:12443 { proto tls
 table bench }
table bench {
  ^echo\\.bench\\.test\$ 127.0.0.1:9501
  ^hold\\.bench\\.test\$ 127.0.0.1:9501
  ^app\\.bench\\.test\$ 127.0.0.1:9443
  ^bulk\\.bench\\.test\$ 127.0.0.1:9502
}
SNI

RUST_LOG=error "$SY" --threads 1 run --config "$WORK/switchyard.toml" & SYPID=$!; pids+=($SYPID)
RUST_LOG=error "$SY" --threads 1 run --config "$WORK/switchyard-scale.toml" & SYSCALE=$!; pids+=($SYSCALE)
RUST_LOG=error "$SY" --threads 1 run --config "$WORK/switchyard-small.toml" & pids+=($!)
haproxy -f "$WORK/haproxy.cfg" || exit 1
nginx -c "$WORK/nginx-proxy.conf"
sniproxy -c "$WORK/sniproxy.conf"
sleep 3
HAPID=$(cat "$WORK/haproxy.pid")
NGPID=$(pgrep -P "$(cat "$WORK/nginx-proxy.pid")" | head -1)
SNPID=$(cat "$WORK/sniproxy.pid" 2>/dev/null || pgrep -x sniproxy | head -1)

names=(switchyard haproxy nginx sniproxy)
ports=(13443 10443 11443 12443)
procs=("$SYPID" "$HAPID" "$NGPID" "$SNPID")
JSON=$OUT/compare.json.tmp
: > "$JSON"

run() { # label proxy-name pid loadgen-args… ; prints the JSON line and records it
  local label=$1 name=$2 pid=$3; shift 3
  local line
  line=$("$LOADGEN" "$@" --pid "$pid" 2>/dev/null | tail -1)
  [ -n "$line" ] || line='{"failed":true}'
  printf '{"figure":"%s","proxy":"%s",%s\n' "$label" "$name" "${line#\{}" >> "$JSON"
  printf '%s' "$line"
}
field() { printf '%s' "$1" | grep -o "\"$2\":[^,}]*" | head -1 | cut -d: -f2; }

declare -A T
figure() { # label field mode args… (over the passthrough proxies)
  local label=$1 f=$2; shift 2
  for i in "${!names[@]}"; do
    local line
    line=$(run "$label" "${names[$i]}" "${procs[$i]}" "$@" --target "127.0.0.1:${ports[$i]}")
    T["$label,${names[$i]}"]=$(field "$line" "$f")
  done
}

echo "measuring (${DUR}s per figure, one thread per proxy)…"
figure "passthrough keep-alive 64 B req/s" ops_per_s keepalive --sni echo.bench.test --conns 32 --secs "$DUR" --size 64
figure "passthrough keep-alive p99 us" p99_us keepalive --sni echo.bench.test --conns 32 --secs 2 --size 64
figure "passthrough new TLS connections/s" ops_per_s connect --sni app.bench.test --conns 32 --secs "$DUR" --tls
figure "passthrough new conn (hello+echo)/s" ops_per_s connect --sni echo.bench.test --conns 32 --secs "$DUR"
figure "passthrough bulk MB/s" mb_per_s bulk --sni bulk.bench.test --size 2000
figure "idle passthrough conn, bytes each" per_conn_bytes hold --sni hold.bench.test --conns "$HOLD"

enames=(switchyard haproxy nginx); eports=(13444 10444 11444); eprocs=("$SYPID" "$HAPID" "$NGPID")
efigure() {
  local label=$1 f=$2; shift 2
  for i in "${!enames[@]}"; do
    local line
    line=$(run "$label" "${enames[$i]}" "${eprocs[$i]}" "$@" --target "127.0.0.1:${eports[$i]}" --tls)
    T["$label,${enames[$i]}"]=$(field "$line" "$f")
  done
}
efigure "edge handshakes/s" ops_per_s connect --sni edge.bench.test --conns 32 --secs "$DUR"
efigure "edge keep-alive 64 B req/s" ops_per_s keepalive --sni edge.bench.test --conns 32 --secs "$DUR" --size 64

for pair in "switchyard:13446:small" "switchyard:13445:scale" "haproxy:10446:small" "haproxy:10445:scale"; do
  IFS=: read -r name port size <<<"$pair"
  n=$([ "$size" = scale ] && echo "$ROUTES" || echo 10)
  line=$(run "new-conn latency p50 us, $n routes" "$name" "" routes --routes "$n" --secs 3 --target "127.0.0.1:$port")
  T["new-conn p50 us, $size routes,$name"]=$(field "$line" p50_us)
done

# Connection failures while the routes are rewritten 20 times.
reload_switchyard() {
  for i in $(seq 1 20); do
    cp os_tcp_be.map os_tcp_be.map.new && printf '# edit %s\n' "$i" >> os_tcp_be.map.new && mv os_tcp_be.map.new os_tcp_be.map
    sleep 0.25
  done
}
reload_haproxy() {
  for i in $(seq 1 20); do
    haproxy -f "$WORK/haproxy.cfg" -sf "$(cat "$WORK/haproxy.pid")"
    sleep 0.25
  done
}
for name in switchyard haproxy; do
  port=$([ $name = switchyard ] && echo 13443 || echo 10443)
  "reload_$name" & reloader=$!
  line=$(run "failed connections over 20 reloads" "$name" "" connect --sni echo.bench.test --conns 8 --secs 6 --target "127.0.0.1:$port")
  wait $reloader
  T["failed connections over 20 reloads,$name"]=$(field "$line" failures)
  T["connections during reloads,$name"]=$(field "$line" ops)
done

row() { printf '%-40s' "$1"; shift; for v in "$@"; do printf '%13s' "$v"; done; echo; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }
echo
echo "$(nproc) cores, $(uname -r); one worker thread per proxy; load generator: 1 thread"
row "figure" switchyard haproxy nginx sniproxy "sy/haproxy"
for label in "passthrough keep-alive 64 B req/s" "passthrough keep-alive p99 us" "passthrough new TLS connections/s" \
  "passthrough new conn (hello+echo)/s" "passthrough bulk MB/s" "idle passthrough conn, bytes each" \
  "edge handshakes/s" "edge keep-alive 64 B req/s" "new-conn p50 us, small routes" "new-conn p50 us, scale routes" \
  "failed connections over 20 reloads" "connections during reloads"; do
  s=${T["$label,switchyard"]:-}; h=${T["$label,haproxy"]:-}
  row "$label" "${s:--}" "${h:--}" "${T["$label,nginx"]:--}" "${T["$label,sniproxy"]:--}" "$(ratio "$s" "$h")"
done
echo "(small = 10 routes, scale = $ROUTES routes; latency and bytes: lower is better)"
{ echo "["; sed '$!s/$/,/' "$JSON"; echo "]"; } > "$OUT/compare.json"
rm -f "$JSON"
echo "all figures: $OUT/compare.json"
